//! The store: SeaORM entities and repositories over SQLite (embedded) or PostgreSQL
//! (fleet). Repositories translate between rows and the canonical model and keep
//! the invariants that belong to storage (a record's identity is (connection,
//! institution's id); writes of one account are atomic); they hold no business
//! rules about when to sync or whom to show what.

mod admins;
mod annotations;
mod audit;
mod connections;
mod consents;
mod corporate_actions;
mod decimal;
pub mod entities;
mod erasures;
mod findings;
mod fleet;
mod fx_rates;
mod households;
mod idempotency;
mod institution_events;
mod institutions;
mod instruments;
mod link_sessions;
mod quarantine;
mod records;
mod runs;
#[cfg(test)]
pub(crate) mod scratch;
mod status_sessions;
mod sync_requests;
mod tenants;
mod webhooks;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use migrations::{Migrator, MigratorTrait};
use sea_orm::{
    AccessMode, ColumnTrait, Condition, ConnectOptions, ConnectionTrait, Database,
    DatabaseConnection, DatabaseTransaction, DbBackend, DbErr, EntityTrait, IsolationLevel,
    QueryFilter, QuerySelect, SqliteTransactionMode, TransactionOptions, TransactionTrait,
};
use secrecy::{ExposeSecret, SecretString};

pub use admins::{AdminCredential, AdminName, AdminRecord, Role, is_admin_credential};
pub use annotations::{AnnotatedTransaction, AnnotationChange, Annotations};
pub use audit::{
    Actor, AuditEntry, AuditFilter, AuditRecord, GENESIS as AUDIT_GENESIS, Outcome, Verification,
};
pub use connections::{
    AccountFetchFailure, CONSENT_EXPIRED, ConnectionRecord, Consent, Lease, NewState,
    RecentOutcome, SyncSuccess, TokenColumns,
};
pub use consents::{ActedBy, ConsentEvent, ConsentKind};
pub use corporate_actions::RecordedSplit;
pub use decimal::DbDecimal;
pub use erasures::{ErasureRecord, ErasureResult, ErasureStatus};
pub use findings::{ReportedFinding, StoredFinding};
pub use fleet::{BreakerReport, ConnectionStanding, FinishedRun, FleetBreaker};
pub use households::{Household, HouseholdError};
pub use idempotency::{Claim, IDEMPOTENCY_KEY_TTL, StoredAnswer, key_id};
pub use institution_events::{EventFilter, EventPosition, EventStatus, InstitutionEvent, NewEvent};
pub use institutions::{ConnectorVersion, InstitutionHealth, Published, VersionSource};
pub use instruments::{Instrument, InstrumentConflict, SecurityMatch};
pub use link_sessions::{LinkSessionRecord, NewLinkSession};
pub use quarantine::{QuarantineEntry, QuarantineFilter, QuarantinePosition, Refusal, Resolution};
pub use records::{
    ApplyCounts, PagedTransaction, PortfolioRecords, Removals, TransactionFilter,
    TransactionPosition,
};
pub use runs::{ABANDONED, RunCounts, UnreadAccount, unread_accounts};
pub use status_sessions::StatusSession;
pub use sync_requests::SyncRequestRecord;
pub use tenants::{ApiKey, ApiKeyRecord, RememberedKey, Scope, TenantRecord, api_key_prefix};
pub use webhooks::{
    Attempt, ClaimedDelivery, DeliveryPosition, DeliveryQuery, NewWebhookEndpoint, NextStep,
    WebhookDelivery, WebhookEndpoint,
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
    /// finsync asked the database for something its own code cannot express (a
    /// row missing a column, a value of a type no table has): a bug to report,
    /// not damaged data.
    #[error("a defect in finsync: {0}")]
    Defect(String),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    Conflict(String),
    /// Records were about to be written for a connection that was disconnected
    /// meanwhile: its records were deleted and stay so; nothing was written.
    #[error("the connection was disconnected")]
    Disconnected,
}

impl StoreError {
    /// The database could not be reached (down, restarting, or every connection
    /// busy past the acquire timeout): nothing about the request was wrong, and
    /// the same call may work later.
    pub fn is_unavailable(&self) -> bool {
        use sea_orm::RuntimeErr;
        use sea_orm::sqlx::Error as Sqlx;
        let Self::Db(error) = self else {
            return false;
        };
        match error {
            // Every failure to get or open a connection, whatever the driver saw
            // (refused, reset, a half-open port answering garbage).
            DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => true,
            DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e)) => {
                match &**e {
                    Sqlx::Io(_)
                    | Sqlx::Tls(_)
                    | Sqlx::PoolTimedOut
                    | Sqlx::PoolClosed
                    | Sqlx::WorkerCrashed => true,
                    // SQLSTATE class 08 (connection exception) and 57P (operator
                    // intervention: the server shutting down or starting).
                    Sqlx::Database(e) => e
                        .code()
                        .is_some_and(|code| code.starts_with("08") || code.starts_with("57P")),
                    _ => false,
                }
            }
            _ => false,
        }
    }
}

/// The database, shared by every part of one process.
#[derive(Clone, Debug)]
pub struct Store {
    db: DatabaseConnection,
    /// Whether the database answered lately, as this process saw it. The API's
    /// probe ([`Store::watch`]) and failed calls keep it current, so an answer
    /// served from the cache can say the database is away without waiting on it.
    /// Bit 0: unreachable; the rest: failures noted so far, so that a probe that
    /// started before the latest failure does not get to say the database is back.
    reachability: Arc<AtomicU64>,
}

/// Rows one purge statement deletes, so that a long history is not deleted in one
/// statement holding the database.
const PURGE_BATCH: u64 = 1000;

/// A pooled connection idle at least this long is pinged before it is handed out,
/// so one the server ended meanwhile is replaced rather than failing a caller.
/// One back from work more recently was pinged on its way back and is handed out
/// as it is (HikariCP's "alive bypass window" is the same length): if the server
/// ended it in between, that one caller gets an error the store reports as the
/// database being unavailable, and a sync so failed is tried again by the queue.
pub const POOL_PING_IDLE: Duration = Duration::from_millis(500);

/// [`Store::reachability`]'s unreachable bit, and one noted failure.
const UNREACHABLE: u64 = 1;
const FAILURE: u64 = 2;

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

    /// Connects (creating a SQLite file's directory if needed), waiting up to 10 s
    /// for a pooled connection: for tools and tests. Does not migrate.
    pub async fn connect(url: &SecretString, max_connections: u32) -> Result<Self, StoreError> {
        Self::connect_with(url, max_connections, Duration::from_secs(10)).await
    }

    /// Connects with a pool whose callers give up after `acquire_timeout` on
    /// PostgreSQL, so that a database outage fails requests fast rather than at
    /// the end of a long wait. SQLite is the process's own file: its callers wait
    /// for each other (up to 10 s), as a busy pool there is no outage.
    pub async fn connect_with(
        url: &SecretString,
        max_connections: u32,
        acquire_timeout: Duration,
    ) -> Result<Self, StoreError> {
        let url = url.expose_secret();
        let acquire_timeout = if sqlite_path(url).is_some() {
            Duration::from_secs(10)
        } else {
            acquire_timeout
        };
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
            .acquire_timeout(acquire_timeout)
            // sqlx pings a connection when it goes back to the pool, and by default
            // again when it comes out: two round trips to the server for every
            // statement run outside a transaction, which showed in a first sync's
            // profile. Only a connection that sat idle is pinged again.
            .test_before_acquire_if_idle_for(POOL_PING_IDLE)
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
            reachability: Arc::default(),
        })
    }

    /// Whether the database answered the last time this process asked.
    pub fn reachable(&self) -> bool {
        self.reachability.load(Ordering::SeqCst) & UNREACHABLE == 0
    }

    /// Records what a call's failure says about the database.
    pub fn note(&self, error: &StoreError) {
        if error.is_unavailable() {
            // Never fails: the closure always gives a new state.
            let _ = self
                .reachability
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |state| {
                    Some(failure_noted(state))
                });
        }
    }

    /// Asks the database for a trivial answer, waiting at most `within`; records
    /// and returns whether it came. An answer is not recorded over a failure noted
    /// while the probe was under way: that failure is newer news.
    pub async fn probe(&self, within: Duration) -> bool {
        let before = self.reachability.load(Ordering::SeqCst);
        let answered = matches!(
            tokio::time::timeout(within, self.db.ping()).await,
            Ok(Ok(()))
        );
        // Fails, leaving it as it is, when an answer comes after a failure noted
        // meanwhile.
        let _ = self
            .reachability
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |state| {
                after_probe(state, before, answered)
            });
        answered
    }

    /// Probes the database every `every` until the task is dropped, so that
    /// [`Self::reachable`] follows an outage and its end.
    pub async fn watch(&self, every: Duration) {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let was = self.reachable();
            let now = self.probe(every.min(Duration::from_secs(1))).await;
            if was != now {
                if now {
                    tracing::info!("The database answers again.");
                } else {
                    tracing::warn!("The database does not answer.");
                }
            }
        }
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
        // Securities stored before the securities master existed get their instrument.
        let matched = self.match_unmatched().await?;
        if matched > 0 {
            tracing::info!(
                matched,
                "Matched stored securities to the securities master."
            );
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

    /// Starts a read-only transaction whose statements all read one snapshot: on
    /// PostgreSQL `REPEATABLE READ` (its default, `READ COMMITTED`, takes a new
    /// snapshot per statement); on SQLite any transaction does.
    pub async fn begin_snapshot(&self) -> Result<DatabaseTransaction, DbErr> {
        let options = if self.is_postgres() {
            TransactionOptions {
                isolation_level: Some(IsolationLevel::RepeatableRead),
                access_mode: Some(AccessMode::ReadOnly),
                ..TransactionOptions::default()
            }
        } else {
            TransactionOptions::default()
        };
        self.db.begin_with_options(options).await
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

/// The reachability after a failure: unreachable, one more failure counted.
fn failure_noted(state: u64) -> u64 {
    state.wrapping_add(FAILURE) | UNREACHABLE
}

/// The reachability after a probe that began at `before`. A failed probe is a
/// failure noted like any other, so that an older probe's late answer (its
/// ping answered just before the database went) cannot hide it.
fn after_probe(state: u64, before: u64, answered: bool) -> Option<u64> {
    if answered {
        answered_since(state, before)
    } else {
        Some(failure_noted(state))
    }
}

/// The reachability after an answer to a probe that began at `before`: reachable,
/// unless a failure was noted since (`None`: leave it).
fn answered_since(state: u64, before: u64) -> Option<u64> {
    (state / FAILURE == before / FAILURE).then_some(state & !UNREACHABLE)
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_answer_to_an_older_probe_does_not_hide_a_newer_failure() {
        use super::{answered_since, failure_noted};
        let start = 0;
        let probing = start;
        let failed = failure_noted(start);
        assert_eq!(answered_since(failed, probing), None, "the failure stands");
        let failed_again = failure_noted(failed);
        assert_eq!(failed_again & 1, 1);
        let probing = failed_again;
        assert_eq!(
            answered_since(failed_again, probing).map(|s| s & 1),
            Some(0),
            "a probe begun after the last failure may say it is back"
        );
    }

    #[test]
    fn an_older_probe_answering_late_does_not_hide_a_failed_probe() {
        use super::after_probe;
        let start = 0;
        let older = start;
        let failed = after_probe(start, start, false).unwrap();
        assert_eq!(failed & 1, 1, "a failed probe says unreachable");
        assert_eq!(after_probe(failed, older, true), None, "the failure stands");
        assert_eq!(
            after_probe(failed, failed, true).map(|s| s & 1),
            Some(0),
            "a probe begun after the failure may say it is back"
        );
    }

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
