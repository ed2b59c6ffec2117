//! Erasures of a tenant's users: the request (kept with a pseudonym of the user,
//! the user id itself only while the work is under way), a lease so one process at
//! a time carries it out, and the last step, which deletes what is left of the
//! user and closes the request in one transaction with its audit entry.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, ConnectionTrait, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect, Set,
};
use serde::{Deserialize, Serialize};

use super::audit::{self, AuditEntry};
use super::entities::{
    connection, consent_event, erasure, household_member, link_session, oauth_state, sync_request,
    sync_run, webhook_delivery,
};
use super::{Store, StoreError};
use crate::domain::{ConnectionStatus, ErasureId, TenantId, UserId};

/// Where an erasure stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ErasureStatus {
    /// Accepted, or under way (again, after a crash or a failed step).
    Pending,
    /// Nothing of the user is left but this record and the audit trail.
    Done,
}

impl ErasureStatus {
    fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Done => "done",
        }
    }
}

impl FromStr for ErasureStatus {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "pending" => Ok(Self::Pending),
            "done" => Ok(Self::Done),
            other => Err(format!("unknown erasure status `{other}`")),
        }
    }
}

/// What an erasure did, once done.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErasureResult {
    /// Connections deleted.
    pub connections: u64,
    /// Of them, those already disconnected when this run came to them (before the
    /// request, or by an earlier run cut short): their institutions' answers to
    /// the revocation are not known here.
    pub already_disconnected: u64,
    /// Institutions that confirmed the revocation of the user's grant.
    pub revoked_at: Vec<String>,
    /// Institutions that did not (no revocation endpoint, or unreachable): the
    /// grant may live on there, though finsync holds no token for it any more.
    pub not_confirmed: Vec<String>,
}

/// An erasure as its requester sees it: never the user id.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErasureRecord {
    #[schema(value_type = String)]
    pub id: ErasureId,
    #[schema(value_type = String)]
    pub tenant_id: TenantId,
    /// The keyed hash the audit trail names the user by.
    pub user_pseudonym: String,
    pub status: ErasureStatus,
    /// Who asked, as the audit trail names them.
    pub requested_by: String,
    pub requested_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<DateTime<Utc>>,
    /// Runs so far, the one under way included.
    pub attempts: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<ErasureResult>,
    /// Why the last run stopped short; it is run again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

impl Store {
    /// Records a request to erase `user` of `tenant`, with `audit`; an erasure of
    /// the same user still under way is returned instead (`false`: not new), and a
    /// user the tenant has nothing of is not found.
    pub async fn request_erasure(
        &self,
        tenant: TenantId,
        user: &UserId,
        pseudonym: &str,
        audit: AuditEntry,
    ) -> Result<(ErasureRecord, bool), StoreError> {
        let txn = self.begin_write().await?;
        let open = erasure::Entity::find()
            .filter(erasure::Column::TenantId.eq(tenant.to_string()))
            .filter(erasure::Column::Pseudonym.eq(pseudonym))
            .filter(erasure::Column::Status.eq(ErasureStatus::Pending.as_str()))
            .one(&txn)
            .await?;
        if open.is_none() && !user_known(&txn, tenant, user).await? {
            return Err(StoreError::NotFound("user"));
        }
        if let Some(open) = open {
            let audit = audit
                .target(format!("tenant:{tenant}/user:{pseudonym}"))
                .detail(serde_json::json!({ "erasure": open.id, "already_pending": true }));
            audit::append(&txn, audit).await?;
            txn.commit().await?;
            return Ok((to_record(open)?, false));
        }
        let id = ErasureId::new();
        let row = erasure::ActiveModel {
            id: Set(id.to_string()),
            tenant_id: Set(tenant.to_string()),
            user_id: Set(Some(user.to_string())),
            pseudonym: Set(pseudonym.to_owned()),
            status: Set(ErasureStatus::Pending.as_str().to_owned()),
            requested_by: Set(audit.actor().to_string()),
            requested_at: Set(Utc::now()),
            completed_at: Set(None),
            lease_until: Set(None),
            lease_owner: Set(None),
            attempts: Set(0),
            result: Set(None),
            last_error: Set(None),
        }
        .insert(&txn)
        .await
        .map_err(|e| match e.sql_err() {
            // Another request for the same user got there first: ask again.
            Some(sea_orm::SqlErr::UniqueConstraintViolation(_)) => StoreError::Conflict(
                "an erasure of this user was requested at the same moment".into(),
            ),
            _ => e.into(),
        })?;
        let audit = audit
            .target(format!("tenant:{tenant}/user:{pseudonym}"))
            .detail(serde_json::json!({ "erasure": id }));
        audit::append(&txn, audit).await?;
        txn.commit().await?;
        Ok((to_record(row)?, true))
    }

    /// One erasure, of `tenant` when given (another tenant's is not found).
    pub async fn erasure(
        &self,
        tenant: Option<TenantId>,
        id: ErasureId,
    ) -> Result<Option<ErasureRecord>, StoreError> {
        let mut query = erasure::Entity::find_by_id(id.to_string());
        if let Some(tenant) = tenant {
            query = query.filter(erasure::Column::TenantId.eq(tenant.to_string()));
        }
        query.one(self.db()).await?.map(to_record).transpose()
    }

    /// Erasures to run now: pending and not leased by a live run.
    pub async fn due_erasures(&self, now: DateTime<Utc>) -> Result<Vec<ErasureId>, StoreError> {
        let ids: Vec<String> = erasure::Entity::find()
            .select_only()
            .column(erasure::Column::Id)
            .filter(erasure::Column::Status.eq(ErasureStatus::Pending.as_str()))
            .filter(
                Condition::any()
                    .add(erasure::Column::LeaseUntil.is_null())
                    .add(erasure::Column::LeaseUntil.lt(now)),
            )
            .order_by_asc(erasure::Column::RequestedAt)
            .into_tuple()
            .all(self.db())
            .await?;
        ids.iter()
            .map(|id| {
                id.parse()
                    .map_err(|_| StoreError::Corrupt(format!("erasure id `{id}`")))
            })
            .collect()
    }

    /// Takes the erasure for a run by `owner` until `until`, if it is pending and
    /// nobody's lease is live; returns the user to erase.
    pub async fn claim_erasure(
        &self,
        id: ErasureId,
        owner: &str,
        until: DateTime<Utc>,
    ) -> Result<Option<(ErasureRecord, UserId)>, StoreError> {
        let now = Utc::now();
        let claimed = erasure::Entity::update_many()
            .col_expr(erasure::Column::LeaseUntil, Expr::value(until))
            .col_expr(erasure::Column::LeaseOwner, Expr::value(owner))
            .col_expr(
                erasure::Column::Attempts,
                Expr::col(erasure::Column::Attempts).add(1),
            )
            .filter(erasure::Column::Id.eq(id.to_string()))
            .filter(erasure::Column::Status.eq(ErasureStatus::Pending.as_str()))
            .filter(
                Condition::any()
                    .add(erasure::Column::LeaseUntil.is_null())
                    .add(erasure::Column::LeaseUntil.lt(now)),
            )
            .exec(self.db())
            .await?;
        if claimed.rows_affected != 1 {
            return Ok(None);
        }
        let row = erasure::Entity::find_by_id(id.to_string())
            .one(self.db())
            .await?
            .ok_or(StoreError::NotFound("erasure"))?;
        let user = row
            .user_id
            .as_deref()
            .map(UserId::parse)
            .transpose()
            .map_err(|_| StoreError::Corrupt(format!("erasure {id}: user id")))?
            .ok_or_else(|| StoreError::Corrupt(format!("erasure {id}: pending without a user")))?;
        Ok(Some((to_record(row)?, user)))
    }

    /// Extends `owner`'s lease to `until`; `false` when it is no longer theirs (it
    /// ran out and another run took over: this one must stop).
    pub async fn renew_erasure(
        &self,
        id: ErasureId,
        owner: &str,
        until: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let renewed = erasure::Entity::update_many()
            .col_expr(erasure::Column::LeaseUntil, Expr::value(until))
            .filter(erasure::Column::Id.eq(id.to_string()))
            .filter(erasure::Column::Status.eq(ErasureStatus::Pending.as_str()))
            .filter(erasure::Column::LeaseOwner.eq(owner))
            .exec(self.db())
            .await?;
        Ok(renewed.rows_affected == 1)
    }

    /// `owner`'s run stopped short: the erasure stays pending, leased until
    /// `retry_at` so the next run waits a little. Another run's lease is left alone.
    pub async fn erasure_failed(
        &self,
        id: ErasureId,
        owner: &str,
        error: &str,
        retry_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        erasure::Entity::update_many()
            .col_expr(erasure::Column::LastError, Expr::value(error))
            .col_expr(erasure::Column::LeaseUntil, Expr::value(retry_at))
            .filter(erasure::Column::Id.eq(id.to_string()))
            .filter(erasure::Column::Status.eq(ErasureStatus::Pending.as_str()))
            .filter(erasure::Column::LeaseOwner.eq(owner))
            .exec(self.db())
            .await?;
        Ok(())
    }

    /// Deletes what is left of `user` once every connection is revoked (or fails,
    /// and the erasure runs again): the connection rows, their runs and pending
    /// links, the user's consent history, sync requests, link sessions, household
    /// membership and the webhook deliveries that name them, in one transaction.
    /// Repeating it finds nothing more to delete.
    pub async fn erase_user_rows(&self, tenant: TenantId, user: &UserId) -> Result<(), StoreError> {
        let txn = self.begin_write().await?;
        let of_user = || {
            Condition::all()
                .add(connection::Column::TenantId.eq(tenant.to_string()))
                .add(connection::Column::UserId.eq(user.as_str()))
        };
        let connections = connection::Entity::find()
            .filter(of_user())
            .all(&txn)
            .await?;
        if let Some(live) = connections
            .iter()
            .find(|c| c.status != ConnectionStatus::Revoked.to_string())
        {
            return Err(StoreError::Conflict(format!(
                "connection {} was linked while the user was being erased",
                live.id
            )));
        }
        let ids: Vec<String> = connections.into_iter().map(|c| c.id).collect();
        sync_run::Entity::delete_many()
            .filter(sync_run::Column::ConnectionId.is_in(ids.clone()))
            .exec(&txn)
            .await?;
        oauth_state::Entity::delete_many()
            .filter(oauth_state::Column::ConnectionId.is_in(ids.clone()))
            .exec(&txn)
            .await?;
        // Only revoked ones: one linked since the look above stays, and is found
        // next time.
        let deleted = connection::Entity::delete_many()
            .filter(of_user())
            .filter(connection::Column::Status.eq(ConnectionStatus::Revoked.to_string()))
            .exec(&txn)
            .await?;
        if deleted.rows_affected != ids.len() as u64 {
            return Err(StoreError::Conflict(
                "the user's connections changed while they were being erased".into(),
            ));
        }
        consent_event::Entity::delete_many()
            .filter(consent_event::Column::TenantId.eq(tenant.to_string()))
            .filter(consent_event::Column::UserId.eq(user.as_str()))
            .exec(&txn)
            .await?;
        sync_request::Entity::delete_many()
            .filter(sync_request::Column::TenantId.eq(tenant.to_string()))
            .filter(sync_request::Column::UserId.eq(user.as_str()))
            .exec(&txn)
            .await?;
        link_session::Entity::delete_many()
            .filter(link_session::Column::TenantId.eq(tenant.to_string()))
            .filter(link_session::Column::UserId.eq(user.as_str()))
            .exec(&txn)
            .await?;
        household_member::Entity::delete_many()
            .filter(household_member::Column::TenantId.eq(tenant.to_string()))
            .filter(household_member::Column::UserId.eq(user.as_str()))
            .exec(&txn)
            .await?;
        // Payloads are JSON written by finsync with the user at `data.user_id`. A
        // LIKE narrows the search (its `_` and `%` and SQLite's case folding may
        // match more), the parsed payload decides.
        let candidates = webhook_delivery::Entity::find()
            .filter(webhook_delivery::Column::TenantId.eq(tenant.to_string()))
            .filter(webhook_delivery::Column::Payload.contains(user.as_str()))
            .all(&txn)
            .await?;
        let named: Vec<String> = candidates
            .into_iter()
            .filter(|d| {
                serde_json::from_str::<serde_json::Value>(&d.payload)
                    .is_ok_and(|p| p["data"]["user_id"] == user.as_str())
            })
            .map(|d| d.id)
            .collect();
        webhook_delivery::Entity::delete_many()
            .filter(webhook_delivery::Column::Id.is_in(named))
            .exec(&txn)
            .await?;
        txn.commit().await?;
        Ok(())
    }

    /// Closes `owner`'s erasure: done, the user id forgotten, `result` kept, and
    /// `audit` recorded in the same transaction.
    pub async fn close_erasure(
        &self,
        id: ErasureId,
        owner: &str,
        result: &ErasureResult,
        audit: AuditEntry,
    ) -> Result<(), StoreError> {
        let txn = self.begin_write().await?;
        let done = erasure::Entity::update_many()
            .col_expr(
                erasure::Column::Status,
                Expr::value(ErasureStatus::Done.as_str()),
            )
            .col_expr(erasure::Column::UserId, Expr::value(Option::<String>::None))
            .col_expr(erasure::Column::CompletedAt, Expr::value(Utc::now()))
            .col_expr(
                erasure::Column::LeaseUntil,
                Expr::value(Option::<DateTime<Utc>>::None),
            )
            .col_expr(
                erasure::Column::LastError,
                Expr::value(Option::<String>::None),
            )
            .col_expr(
                erasure::Column::Result,
                Expr::value(serde_json::to_string(result).unwrap_or_default()),
            )
            .filter(erasure::Column::Id.eq(id.to_string()))
            .filter(erasure::Column::Status.eq(ErasureStatus::Pending.as_str()))
            .filter(erasure::Column::LeaseOwner.eq(owner))
            .exec(&txn)
            .await?;
        if done.rows_affected != 1 {
            return Err(StoreError::Conflict(format!(
                "erasure {id} is no longer this run's"
            )));
        }
        audit::append(&txn, audit).await?;
        txn.commit().await?;
        Ok(())
    }
}

/// Whether the tenant has anything of `user`: a connection or a link session.
async fn user_known(
    db: &impl ConnectionTrait,
    tenant: TenantId,
    user: &UserId,
) -> Result<bool, StoreError> {
    let connection = connection::Entity::find()
        .filter(connection::Column::TenantId.eq(tenant.to_string()))
        .filter(connection::Column::UserId.eq(user.as_str()))
        .one(db)
        .await?;
    if connection.is_some() {
        return Ok(true);
    }
    Ok(link_session::Entity::find()
        .filter(link_session::Column::TenantId.eq(tenant.to_string()))
        .filter(link_session::Column::UserId.eq(user.as_str()))
        .one(db)
        .await?
        .is_some())
}

fn to_record(row: erasure::Model) -> Result<ErasureRecord, StoreError> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("erasure {}: {what}", row.id));
    Ok(ErasureRecord {
        id: row.id.parse().map_err(|_| corrupt("id"))?,
        tenant_id: row.tenant_id.parse().map_err(|_| corrupt("tenant id"))?,
        status: row.status.parse().map_err(|_| corrupt("status"))?,
        result: row
            .result
            .as_deref()
            .map(serde_json::from_str)
            .transpose()
            .map_err(|_| corrupt("result"))?,
        user_pseudonym: row.pseudonym,
        requested_by: row.requested_by,
        requested_at: row.requested_at,
        completed_at: row.completed_at,
        attempts: row.attempts,
        last_error: row.last_error,
    })
}
