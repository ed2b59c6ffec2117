//! Sync requests: a tenant asking for fresh data for one user. A request names the
//! connections it asked for; its progress is read from the sync runs that started
//! after it, whichever job ran them (a coalesced or deferred job counts too).

use chrono::{DateTime, Utc};
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, Set};
use serde::{Deserialize, Serialize};

use super::entities::{sync_request, sync_run};
use super::{Store, StoreError};
use crate::domain::{ConnectionId, TenantId, UserId};

#[derive(Debug, Clone)]
pub struct SyncRequestRecord {
    pub id: String,
    pub tenant_id: TenantId,
    pub user_id: UserId,
    pub created_at: DateTime<Utc>,
    pub connections: Vec<ConnectionId>,
}

#[derive(Serialize, Deserialize)]
struct Requested {
    connection_id: ConnectionId,
}

impl Store {
    pub async fn create_sync_request(
        &self,
        tenant: TenantId,
        user: &UserId,
        connections: &[ConnectionId],
    ) -> Result<SyncRequestRecord, StoreError> {
        let record = SyncRequestRecord {
            id: uuid::Uuid::new_v4().to_string(),
            tenant_id: tenant,
            user_id: user.clone(),
            created_at: Utc::now(),
            connections: connections.to_vec(),
        };
        let jobs: Vec<Requested> = connections
            .iter()
            .map(|&connection_id| Requested { connection_id })
            .collect();
        sync_request::ActiveModel {
            id: Set(record.id.clone()),
            tenant_id: Set(tenant.to_string()),
            user_id: Set(user.to_string()),
            jobs: Set(serde_json::to_string(&jobs)
                .map_err(|e| StoreError::Corrupt(e.to_string()))?),
            created_at: Set(record.created_at),
        }
        .insert(self.db())
        .await?;
        Ok(record)
    }

    /// A request of the tenant's; another tenant's is not found.
    pub async fn sync_request(
        &self,
        tenant: TenantId,
        id: &str,
    ) -> Result<Option<SyncRequestRecord>, StoreError> {
        sync_request::Entity::find_by_id(id.to_owned())
            .filter(sync_request::Column::TenantId.eq(tenant.to_string()))
            .one(self.db())
            .await?
            .map(to_record)
            .transpose()
    }

    /// The user's newest request.
    pub async fn latest_sync_request(
        &self,
        tenant: TenantId,
        user: &UserId,
    ) -> Result<Option<SyncRequestRecord>, StoreError> {
        sync_request::Entity::find()
            .filter(sync_request::Column::TenantId.eq(tenant.to_string()))
            .filter(sync_request::Column::UserId.eq(user.as_str()))
            .order_by_desc(sync_request::Column::CreatedAt)
            .one(self.db())
            .await?
            .map(to_record)
            .transpose()
    }

    /// A connection's runs that started at or after `since`, oldest first.
    pub async fn runs_since(
        &self,
        connection: ConnectionId,
        since: DateTime<Utc>,
    ) -> Result<Vec<sync_run::Model>, StoreError> {
        Ok(sync_run::Entity::find()
            .filter(sync_run::Column::ConnectionId.eq(connection.to_string()))
            .filter(sync_run::Column::StartedAt.gte(since))
            .order_by_asc(sync_run::Column::StartedAt)
            .all(self.db())
            .await?)
    }
}

fn to_record(row: sync_request::Model) -> Result<SyncRequestRecord, StoreError> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("sync request {}: {what}", row.id));
    let jobs: Vec<Requested> = serde_json::from_str(&row.jobs).map_err(|_| corrupt("jobs"))?;
    Ok(SyncRequestRecord {
        tenant_id: row.tenant_id.parse().map_err(|_| corrupt("tenant id"))?,
        user_id: UserId::parse(&row.user_id).map_err(|_| corrupt("user id"))?,
        connections: jobs.into_iter().map(|j| j.connection_id).collect(),
        created_at: row.created_at,
        id: row.id,
    })
}
