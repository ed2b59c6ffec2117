//! Sync runs: one row per attempt to sync one connection, with what it changed.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder,
    Set,
};

use super::entities::{sync_request, sync_run};
use super::{Store, StoreError};
use crate::domain::ConnectionId;

/// The error of a run whose worker stopped before finishing it.
pub const ABANDONED: &str = "abandoned: the worker stopped during this run";

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunCounts {
    pub added: u32,
    pub modified: u32,
    pub removed: u32,
    pub unchanged: u32,
    /// Records set aside: put in quarantine, or pointing at an account that was.
    pub quarantined: u32,
    /// Data-quality findings the run's reconciliation raised.
    pub findings: u32,
}

/// An account whose data a run could not read: what is stored of it stays.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UnreadAccount {
    /// The institution's id of the account, as the read API shows it.
    pub account_id: String,
    /// `details.<name>`, `holdings` or `transactions`.
    pub endpoint: String,
    /// A stable code and a fixed message, fit for a tenant to read.
    pub reason: String,
}

/// The accounts a run could not read, as recorded.
pub fn unread_accounts(run: &sync_run::Model) -> Result<Vec<UnreadAccount>, StoreError> {
    run.accounts_unread
        .as_deref()
        .map_or(Ok(Vec::new()), |text| {
            serde_json::from_str(text)
                .map_err(|_| StoreError::Corrupt(format!("sync run {}: accounts_unread", run.id)))
        })
}

impl Store {
    /// Opens a run; `deep` when it re-reads the whole history.
    pub async fn start_run(
        &self,
        connection: ConnectionId,
        idempotency_key: &str,
        deep: bool,
    ) -> Result<String, StoreError> {
        let id = uuid::Uuid::new_v4().to_string();
        sync_run::ActiveModel {
            id: Set(id.clone()),
            connection_id: Set(connection.to_string()),
            idempotency_key: Set(idempotency_key.to_owned()),
            started_at: Set(Utc::now()),
            finished_at: Set(None),
            outcome: Set("running".into()),
            added: Set(0),
            modified: Set(0),
            removed: Set(0),
            unchanged: Set(0),
            quarantined: Set(0),
            cursor: Set(None),
            deep: Set(deep),
            error: Set(None),
            accounts_unread: Set(None),
            findings: Set(0),
        }
        .insert(self.db())
        .await?;
        Ok(id)
    }

    /// Closes a run: `error` None means it succeeded, and `cursor` is where the
    /// next sync resumes from (written only now, after the data it covers);
    /// `unread` names the accounts whose data it could not read.
    pub async fn finish_run(
        &self,
        run: &str,
        counts: RunCounts,
        cursor: Option<&str>,
        error: Option<&str>,
        unread: &[UnreadAccount],
    ) -> Result<(), StoreError> {
        let clamp = |n: u32| i32::try_from(n).unwrap_or(i32::MAX);
        let outcome = if error.is_some() {
            "failed"
        } else {
            "succeeded"
        };
        let closed = sync_run::Entity::update_many()
            .col_expr(sync_run::Column::FinishedAt, Expr::value(Utc::now()))
            .col_expr(sync_run::Column::Outcome, Expr::value(outcome))
            .col_expr(sync_run::Column::Added, Expr::value(clamp(counts.added)))
            .col_expr(
                sync_run::Column::Modified,
                Expr::value(clamp(counts.modified)),
            )
            .col_expr(
                sync_run::Column::Removed,
                Expr::value(clamp(counts.removed)),
            )
            .col_expr(
                sync_run::Column::Unchanged,
                Expr::value(clamp(counts.unchanged)),
            )
            .col_expr(
                sync_run::Column::Quarantined,
                Expr::value(clamp(counts.quarantined)),
            )
            .col_expr(
                sync_run::Column::Findings,
                Expr::value(clamp(counts.findings)),
            )
            .col_expr(
                sync_run::Column::Cursor,
                Expr::value(cursor.filter(|_| error.is_none()).map(str::to_owned)),
            )
            .col_expr(
                sync_run::Column::Error,
                Expr::value(error.map(str::to_owned)),
            )
            .col_expr(
                sync_run::Column::AccountsUnread,
                // Text fields only: serializing cannot fail.
                Expr::value(
                    (!unread.is_empty())
                        .then(|| serde_json::to_string(unread).ok())
                        .flatten(),
                ),
            )
            .filter(sync_run::Column::Id.eq(run))
            .exec(self.db())
            .await?;
        if closed.rows_affected == 0 {
            return Err(StoreError::NotFound("sync run"));
        }
        Ok(())
    }

    /// Closes every run of this job that is still open — its worker stopped in the
    /// middle (killed, crashed, lost) before the job was delivered again — as failed.
    /// Returns how many of the job's runs ever ended that way if this closed one,
    /// else 0.
    pub async fn abandon_runs(&self, idempotency_key: &str) -> Result<u64, StoreError> {
        let closed = sync_run::Entity::update_many()
            .col_expr(sync_run::Column::Outcome, Expr::value("failed"))
            .col_expr(sync_run::Column::FinishedAt, Expr::value(Utc::now()))
            .col_expr(sync_run::Column::Error, Expr::value(ABANDONED))
            .filter(sync_run::Column::IdempotencyKey.eq(idempotency_key))
            .filter(sync_run::Column::Outcome.eq("running"))
            .exec(self.db())
            .await?;
        // The count only grows when a run is closed here, so a threshold on it is
        // first reached on a delivery that closed one: counting is needed only then.
        if closed.rows_affected == 0 {
            return Ok(0);
        }
        Ok(sync_run::Entity::find()
            .filter(sync_run::Column::IdempotencyKey.eq(idempotency_key))
            .filter(sync_run::Column::Error.eq(ABANDONED))
            .count(self.db())
            .await?)
    }

    /// Deletes the runs that finished before `before` (never one still running),
    /// and the sync requests made before it; returns how many runs.
    pub async fn purge_runs(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        let deleted = self
            .delete_in_batches::<sync_run::Entity>(
                sync_run::Column::Id,
                Condition::all().add(sync_run::Column::FinishedAt.lt(before)),
            )
            .await?;
        sync_request::Entity::delete_many()
            .filter(sync_request::Column::CreatedAt.lt(before))
            .exec(self.db())
            .await?;
        Ok(deleted)
    }

    /// A connection's runs, newest first.
    pub async fn runs(&self, connection: ConnectionId) -> Result<Vec<sync_run::Model>, StoreError> {
        Ok(sync_run::Entity::find()
            .filter(sync_run::Column::ConnectionId.eq(connection.to_string()))
            .order_by_desc(sync_run::Column::StartedAt)
            .all(self.db())
            .await?)
    }
}
