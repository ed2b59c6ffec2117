//! The store: SeaORM entities and repositories over SQLite (embedded) or PostgreSQL
//! (fleet). Repositories translate between rows and the canonical model and keep
//! the invariants that belong to storage (a record's identity is (connection,
//! institution's id); writes of one account are atomic); they hold no business
//! rules about when to sync or whom to show what.

mod annotations;
mod connections;
mod decimal;
pub mod entities;
mod institution_events;
mod institutions;
mod quarantine;
mod records;
mod runs;
mod sync_requests;
mod tenants;
mod webhooks;

use std::path::Path;
use std::time::Duration;

use migrations::{Migrator, MigratorTrait};
use sea_orm::{
    ColumnTrait, Condition, ConnectOptions, ConnectionTrait, Database, DatabaseConnection,
    DatabaseTransaction, DbBackend, DbErr, EntityTrait, QueryFilter, QuerySelect,
    SqliteTransactionMode, TransactionOptions, TransactionTrait,
};
use secrecy::{ExposeSecret, SecretString};

pub use annotations::{AnnotatedTransaction, AnnotationChange, Annotations};
pub use connections::{
    CONSENT_EXPIRED, ConnectionRecord, Consent, Lease, NewState, SyncSuccess, TokenColumns,
};
pub use decimal::DbDecimal;
pub use institution_events::{EventFilter, EventStatus, InstitutionEvent, NewEvent};
pub use institutions::{ConnectorVersion, InstitutionHealth, Published, VersionSource};
pub use quarantine::{QuarantineEntry, QuarantineFilter, Refusal, Resolution};
pub use records::{
    ApplyCounts, PagedTransaction, Removals, TransactionFilter, TransactionPosition,
};
pub use runs::{ABANDONED, RunCounts};
pub use sync_requests::SyncRequestRecord;
pub use tenants::{ApiKey, ApiKeyRecord, Scope, TenantRecord};
pub use webhooks::{
    Attempt, ClaimedDelivery, DeliveryQuery, NewWebhookEndpoint, NextStep, WebhookDelivery,
    WebhookEndpoint,
};

/// Advisory lock key that serialises migrations across a fleet ("fsmigrat").
const MIGRATION_LOCK: i64 = 0x6673_6d69_6772_6174;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("database: {0}")]
    Db(#[from] DbErr),
    #[error("cannot create the database directory {path}: {source}")]
    Directory {
        path: String,
        source: std::io::Error,
    },
    #[error("stored data is damaged: {0}")]
    Corrupt(String),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    Conflict(String),
    /// Records were about to be written for a connection that was disconnected
    /// meanwhile: its records were deleted and stay so; nothing was written.
    #[error("the connection was disconnected")]
    Disconnected,
}

/// The database, shared by every part of one process.
#[derive(Clone, Debug)]
pub struct Store {
    db: DatabaseConnection,
}

/// Rows one purge statement deletes, so that a long history is not deleted in one
/// statement holding the database.
const PURGE_BATCH: u64 = 1000;

impl Store {
    /// Deletes the rows of `E` that `condition` selects, [`PURGE_BATCH`] at a time
    /// by their string primary key `id`; returns how many.
    async fn delete_in_batches<E: EntityTrait>(
        &self,
        id: E::Column,
        condition: Condition,
    ) -> Result<u64, StoreError> {
        let mut deleted = 0;
        loop {
            let batch: Vec<String> = E::find()
                .select_only()
                .column(id)
                .filter(condition.clone())
                .limit(PURGE_BATCH)
                .into_tuple()
                .all(self.db())
                .await?;
            if batch.is_empty() {
                return Ok(deleted);
            }
            deleted += E::delete_many()
                .filter(id.is_in(batch))
                .exec(self.db())
                .await?
                .rows_affected;
        }
    }

    /// Connects (creating a SQLite file's directory if needed). Does not migrate.
    pub async fn connect(url: &SecretString, max_connections: u32) -> Result<Self, StoreError> {
        let url = url.expose_secret();
        if let Some(path) = sqlite_path(url)
            && let Some(dir) = Path::new(path)
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
        {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::Directory {
                path: dir.display().to_string(),
                source,
            })?;
        }
        let mut options = ConnectOptions::new(url.to_owned());
        options
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(10))
            .sqlx_logging(false)
            // SQLite is shared by the API, the workers and the job queue of one
            // process: WAL lets readers run during a write, the busy timeout makes
            // writers wait their turn instead of failing.
            .map_sqlx_sqlite_opts(|o| {
                o.journal_mode(sea_orm::sqlx::sqlite::SqliteJournalMode::Wal)
                    .busy_timeout(Duration::from_secs(10))
                    .foreign_keys(true)
            });
        Ok(Self {
            db: Database::connect(options).await?,
        })
    }

    /// Brings the schema up to date. Safe when several processes of a fleet start at
    /// once: on PostgreSQL the migrations run in one transaction holding an
    /// advisory lock, so one process migrates and the others find nothing to do.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        if self.is_postgres() {
            let txn = self.db.begin().await?;
            txn.execute_unprepared(&format!("SELECT pg_advisory_xact_lock({MIGRATION_LOCK})"))
                .await?;
            Migrator::up(&txn, None).await?;
            txn.commit().await?;
        } else {
            Migrator::up(&self.db, None).await?;
        }
        Ok(())
    }

    /// Starts a transaction that will write. On SQLite it takes the write lock at
    /// once (`BEGIN IMMEDIATE`): a deferred transaction that reads and then writes
    /// fails outright if another writer committed in between, instead of waiting.
    pub async fn begin_write(&self) -> Result<DatabaseTransaction, DbErr> {
        self.db
            .begin_with_options(TransactionOptions {
                sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
                ..TransactionOptions::default()
            })
            .await
    }

    pub fn db(&self) -> &DatabaseConnection {
        &self.db
    }

    pub fn is_postgres(&self) -> bool {
        self.db.get_database_backend() == DbBackend::Postgres
    }
}

fn sqlite_path(url: &str) -> Option<&str> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or(rest);
    (!path.is_empty() && path != ":memory:").then_some(path)
}

#[cfg(test)]
mod tests {
    #[test]
    fn sqlite_paths_are_found_in_urls() {
        assert_eq!(
            super::sqlite_path("sqlite://data/finsync.db?mode=rwc"),
            Some("data/finsync.db")
        );
        assert_eq!(super::sqlite_path("sqlite::memory:"), None);
        assert_eq!(super::sqlite_path("postgres://x/y"), None);
    }
}
