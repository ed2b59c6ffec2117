//! Reads for the operators' view of the fleet: every connection's standing in a
//! few columns, the sync runs of the last hour, failed webhook deliveries. Plain
//! rows; what they mean is [`crate::status`]'s.

use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, EntityTrait, FromQueryResult, PaginatorTrait, QueryFilter, QuerySelect,
};

use super::entities::{connection, sync_run, webhook_delivery};
use super::{Store, StoreError};
use crate::domain::DeliveryStatus;

/// One connection, as the status page counts it.
#[derive(Debug, Clone, PartialEq, Eq, FromQueryResult)]
pub struct ConnectionStanding {
    pub id: String,
    pub institution_id: String,
    pub status: String,
    pub last_synced_at: Option<DateTime<Utc>>,
    pub last_failure_at: Option<DateTime<Utc>>,
    pub last_failure_reason: Option<String>,
}

/// One finished sync run.
#[derive(Debug, Clone, PartialEq, Eq, FromQueryResult)]
pub struct FinishedRun {
    pub connection_id: String,
    pub outcome: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub accounts_unread: Option<String>,
}

impl Store {
    /// Every connection's standing.
    pub async fn connection_standings(&self) -> Result<Vec<ConnectionStanding>, StoreError> {
        Ok(connection::Entity::find()
            .select_only()
            .column(connection::Column::Id)
            .column(connection::Column::InstitutionId)
            .column(connection::Column::Status)
            .column(connection::Column::LastSyncedAt)
            .column(connection::Column::LastFailureAt)
            .column(connection::Column::LastFailureReason)
            .into_model::<ConnectionStanding>()
            .all(self.db())
            .await?)
    }

    /// Sync runs that finished since `since`.
    pub async fn runs_finished_since(
        &self,
        since: DateTime<Utc>,
    ) -> Result<Vec<FinishedRun>, StoreError> {
        Ok(sync_run::Entity::find()
            .select_only()
            .column(sync_run::Column::ConnectionId)
            .column(sync_run::Column::Outcome)
            .column(sync_run::Column::StartedAt)
            .column(sync_run::Column::FinishedAt)
            .column(sync_run::Column::AccountsUnread)
            .filter(sync_run::Column::FinishedAt.gte(since))
            .into_model::<FinishedRun>()
            .all(self.db())
            .await?)
    }

    /// Webhook deliveries made since `since` that used up their attempts.
    pub async fn failed_deliveries_since(&self, since: DateTime<Utc>) -> Result<u64, StoreError> {
        Ok(webhook_delivery::Entity::find()
            .filter(webhook_delivery::Column::Status.eq(DeliveryStatus::Failed.to_string()))
            .filter(webhook_delivery::Column::CreatedAt.gte(since))
            .count(self.db())
            .await?)
    }
}
