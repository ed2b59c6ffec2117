//! Reads for the operators' view of the fleet: every connection's standing in a
//! few columns, the sync runs of the last hour, failed webhook deliveries; and the
//! circuit breakers every process reports, counted across the fleet. Plain rows;
//! what they mean is [`crate::status`]'s.

use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, EntityTrait, FromQueryResult, PaginatorTrait, QueryFilter, QuerySelect,
};

use super::entities::{connection, institution_breaker, sync_run, webhook_delivery};
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

/// One process's breaker and adaptive mode for one institution, as it reports them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakerReport {
    pub institution: String,
    /// `closed`, `half_open` or `open`.
    pub state: String,
    pub degraded: bool,
    pub consecutive_failures: u32,
    pub opened_at: Option<DateTime<Utc>>,
}

/// An institution's breakers across the fleet: how many processes reported lately,
/// and how many of them see it open, half-open, degraded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct FleetBreaker {
    pub processes: u32,
    pub open: u32,
    pub half_open: u32,
    pub degraded: u32,
}

impl Store {
    /// Replaces what `process` reported before with `reports`, and drops every
    /// process's reports older than `forget_before` (processes long gone).
    pub async fn report_breakers(
        &self,
        process: &str,
        reports: &[BreakerReport],
        forget_before: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        use sea_orm::{ActiveModelTrait, Set, TransactionTrait};
        let now = Utc::now();
        let txn = self.db().begin().await?;
        institution_breaker::Entity::delete_many()
            .filter(
                sea_orm::Condition::any()
                    .add(institution_breaker::Column::ProcessId.eq(process))
                    .add(institution_breaker::Column::UpdatedAt.lt(forget_before)),
            )
            .exec(&txn)
            .await?;
        for report in reports {
            institution_breaker::ActiveModel {
                process_id: Set(process.to_owned()),
                institution_id: Set(report.institution.clone()),
                state: Set(report.state.clone()),
                degraded: Set(report.degraded),
                consecutive_failures: Set(
                    i32::try_from(report.consecutive_failures).unwrap_or(i32::MAX)
                ),
                opened_at: Set(report.opened_at),
                updated_at: Set(now),
            }
            .insert(&txn)
            .await?;
        }
        txn.commit().await?;
        Ok(())
    }

    /// Forgets `process`'s reports (it is stopping).
    pub async fn forget_breakers(&self, process: &str) -> Result<(), StoreError> {
        institution_breaker::Entity::delete_many()
            .filter(institution_breaker::Column::ProcessId.eq(process))
            .exec(self.db())
            .await?;
        Ok(())
    }

    /// Each institution's breakers as the processes that reported since `since`
    /// see them.
    pub async fn fleet_breakers(
        &self,
        since: DateTime<Utc>,
    ) -> Result<std::collections::BTreeMap<String, FleetBreaker>, StoreError> {
        let rows = institution_breaker::Entity::find()
            .filter(institution_breaker::Column::UpdatedAt.gte(since))
            .all(self.db())
            .await?;
        let mut fleet = std::collections::BTreeMap::<String, FleetBreaker>::new();
        for row in rows {
            let seen = fleet.entry(row.institution_id).or_default();
            seen.processes += 1;
            match row.state.as_str() {
                "open" => seen.open += 1,
                "half_open" => seen.half_open += 1,
                _ => {}
            }
            seen.degraded += u32::from(row.degraded);
        }
        Ok(fleet)
    }
}
