//! The durable job queue: apalis on SQLite (embedded) or PostgreSQL (fleet), sharing
//! the store's connection pool. Delivery is at least once; the pipeline makes a
//! repeated delivery harmless. A job keeps the `traceparent` of the span that queued
//! it in its metadata, and runs as part of that trace.

use std::time::Duration;

use apalis::prelude::*;
use apalis_postgres::PostgresStorage;
use apalis_sqlite::SqliteStorage;
use chrono::{DateTime, Utc};
use sea_orm::sqlx;
use tracing::Instrument;

use super::job::Job;
use super::{Env, pipeline, refresh};
use crate::domain::ConnectionId;
use crate::store::Store;
use crate::tracecontext;

/// A worker that stops heart-beating for `HEARTBEAT × MISSED_HEARTBEATS` is presumed
/// dead and its jobs go back to pending. Set explicitly: the defaults differ per
/// backend and are minutes long.
const HEARTBEAT: Duration = Duration::from_secs(5);
const MISSED_HEARTBEATS: usize = 3;

/// A job still to be done: waiting, claimed, running, or failed with attempts left.
macro_rules! active_sql {
    () => {
        "(status IN ('Pending','Queued','Running') OR (status = 'Failed' AND attempts < max_attempts))"
    };
}

/// Jobs one purge statement deletes.
const PURGE_BATCH: u64 = 1000;

/// A job that is over: done, killed, or failed with no attempt left.
macro_rules! finished_sql {
    () => {
        "(status IN ('Done','Killed') OR (status = 'Failed' AND attempts >= max_attempts))"
    };
}

/// Jobs a worker may take: not started, or waiting for a retry.
macro_rules! due_sql {
    () => {
        "(status IN ('Pending','Queued') OR (status = 'Failed' AND attempts < max_attempts))"
    };
}

/// A job that has surely not started yet (or will be retried): it will read the
/// connection's state when it runs, so a second one would add nothing. Not a
/// `Queued` one: apalis marks a job `Queued` when a worker takes it into its
/// buffer and records that it started, and that it finished, later and in
/// batches, so a `Queued` job may be running or even done. The indexes below
/// are partial on exactly this text, which is what lets the planners use them.
macro_rules! waiting_sql {
    () => {
        "(status = 'Pending' OR (status = 'Failed' AND attempts < max_attempts))"
    };
}

/// The connection a job (apalis keeps it as JSON bytes) is for, on PostgreSQL: a
/// function of ours, declared immutable so that it can be indexed
/// (`convert_from` is only stable, as it depends on the database's encoding,
/// which is fixed for a database's life).
macro_rules! pg_job_connection {
    () => {
        "finsync_job_connection(job)"
    };
}

/// The connection a job is for, on SQLite (`json_extract` is deterministic).
macro_rules! sqlite_job_connection {
    () => {
        "json_extract(CAST(job AS TEXT), '$.connection_id')"
    };
}

/// Waiting jobs by kind of queue and connection. Before every enqueue the queue
/// asks whether the connection already has a job waiting; without this index that
/// read parses every waiting job, so a scheduler tick over a backlog of n due
/// connections cost O(n²).
const PG_WAITING_INDEX: &str = concat!(
    "CREATE OR REPLACE FUNCTION finsync_job_connection(job bytea) RETURNS text ",
    "LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE ",
    "AS $$ SELECT convert_from(job, 'UTF8')::jsonb ->> 'connection_id' $$; ",
    "CREATE INDEX IF NOT EXISTS finsync_jobs_waiting ON apalis.jobs (job_type, ",
    pg_job_connection!(),
    ") WHERE ",
    waiting_sql!()
);
const SQLITE_WAITING_INDEX: &str = concat!(
    "CREATE INDEX IF NOT EXISTS finsync_jobs_waiting ON Jobs (job_type, ",
    sqlite_job_connection!(),
    ") WHERE ",
    waiting_sql!()
);

/// How many jobs of a kind wait for a connection: `$1`/`?1` the queue, `$2`/`?2`
/// the connection, `$3`/`?3` the kind of job.
const WAITING_PG: &str = concat!(
    "SELECT COUNT(*) FROM apalis.jobs WHERE job_type = $1 AND ",
    waiting_sql!(),
    " AND ",
    pg_job_connection!(),
    " = $2 AND convert_from(job, 'UTF8')::jsonb ->> 'job' = $3"
);
const WAITING_SQLITE: &str = concat!(
    "SELECT COUNT(*) FROM Jobs WHERE job_type = ?1 AND ",
    waiting_sql!(),
    " AND ",
    sqlite_job_connection!(),
    " = ?2 AND json_extract(CAST(job AS TEXT), '$.job') = ?3"
);

/// Held while the waiting index is made: processes starting together would
/// otherwise race to create it.
const WAITING_INDEX_LOCK: i64 = 0x6673_6a6f_6277_6169;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QueueError {
    #[error("job queue: {0}")]
    Backend(String),
    #[error("job queue: {0}")]
    Sql(#[from] sqlx::Error),
}

#[derive(Clone)]
pub enum Queue {
    Sqlite(SqliteStorage<Job>),
    Postgres(PostgresStorage<Job>),
}

impl Queue {
    /// Creates the queue's tables and our index on them (idempotent) on the store's
    /// own database.
    pub async fn setup(store: &Store) -> Result<Self, QueueError> {
        let db = store.db();
        if store.is_postgres() {
            let pool = db.get_postgres_connection_pool();
            PostgresStorage::<()>::setup(pool)
                .await
                .map_err(|e| QueueError::Backend(e.to_string()))?;
            let mut txn = pool.begin().await?;
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(WAITING_INDEX_LOCK)
                .execute(&mut *txn)
                .await?;
            sqlx::raw_sql(PG_WAITING_INDEX).execute(&mut *txn).await?;
            txn.commit().await?;
            let config = apalis_postgres::Config::default()
                .queue(Job::QUEUE)
                .heartbeat_interval(HEARTBEAT)
                .missed_heartbeats(MISSED_HEARTBEATS);
            Ok(Self::Postgres(
                PostgresStorage::new(pool).with_config(config),
            ))
        } else {
            let pool = db.get_sqlite_connection_pool();
            // Only the migrations: `setup()` would also turn `synchronous` off on
            // one pooled connection, trading durability we want to keep.
            SqliteStorage::<()>::migrations()
                .run(pool)
                .await
                .map_err(|e| QueueError::Backend(e.to_string()))?;
            sqlx::raw_sql(SQLITE_WAITING_INDEX).execute(pool).await?;
            let config = apalis_sqlite::Config::default()
                .queue(Job::QUEUE)
                .heartbeat_interval(HEARTBEAT)
                .missed_heartbeats(MISSED_HEARTBEATS);
            Ok(Self::Sqlite(SqliteStorage::new(pool).with_config(config)))
        }
    }

    /// Enqueues a job unless one of the same kind for the connection is surely
    /// still waiting to start, or this idempotency key was used before. A job that
    /// may have started does not stop a new one being queued: it may have read the
    /// connection before the change that asks for this one (a relink, new tokens,
    /// new data at the institution). Returns whether a job was added.
    pub async fn enqueue(&self, job: impl Into<Job>) -> Result<bool, QueueError> {
        self.push(job.into(), None).await
    }

    /// Enqueues a job to start after `delay`, on the same terms as [`Self::enqueue`].
    pub async fn enqueue_after(
        &self,
        job: impl Into<Job>,
        delay: Duration,
    ) -> Result<bool, QueueError> {
        self.push(job.into(), Some(delay)).await
    }

    async fn push(&self, job: Job, delay: Option<Duration>) -> Result<bool, QueueError> {
        let (connection, kind) = (job.connection_id(), job.kind());
        if self.waiting_for(connection, kind).await? > 0 {
            return Ok(false);
        }
        let mut metadata = MetadataStore::new();
        if let Some(traceparent) = tracecontext::traceparent(&tracing::Span::current()) {
            // A new store has no key yet, so this cannot be refused.
            let _ = metadata.insert(tracecontext::TRACEPARENT, traceparent);
        }
        let mut task = TaskBuilder::new(job.clone())
            .idempotency_key(job.idempotency_key())
            .max_attempts(Job::MAX_ATTEMPTS)
            .with_metadata(metadata);
        if let Some(delay) = delay {
            task = task.run_after(delay);
        }
        let task = task.build();
        match self.clone() {
            Self::Sqlite(mut storage) => {
                storage
                    .push_task(task)
                    .await
                    .map_err(|e| QueueError::Backend(e.to_string()))?;
                // SQLite ignores a duplicate key silently: the job is new only if
                // it is there now.
                Ok(self.waiting_for(connection, kind).await? > 0)
            }
            Self::Postgres(mut storage) => match storage.push_task(task).await {
                Ok(()) => Ok(true),
                Err(TaskSinkError::PushError(apalis_postgres::Error::Database(
                    sqlx::Error::Database(e),
                ))) if e.is_unique_violation() => Ok(false),
                Err(e) => Err(QueueError::Backend(e.to_string())),
            },
        }
    }

    /// Jobs of one kind (see [`Job::kind`]) for the connection that have not
    /// started yet or will be retried.
    pub async fn waiting_for(
        &self,
        connection: ConnectionId,
        kind: &str,
    ) -> Result<i64, QueueError> {
        let count = match self {
            Self::Sqlite(storage) => {
                sqlx::query_scalar(WAITING_SQLITE)
                    .bind(Job::QUEUE)
                    .bind(connection.to_string())
                    .bind(kind)
                    .fetch_one(storage.pool())
                    .await?
            }
            Self::Postgres(storage) => {
                sqlx::query_scalar(WAITING_PG)
                    .bind(Job::QUEUE)
                    .bind(connection.to_string())
                    .bind(kind)
                    .fetch_one(storage.pool())
                    .await?
            }
        };
        Ok(count)
    }

    /// Jobs of every connection still to be done (pending, running or retrying).
    pub async fn depth(&self) -> Result<i64, QueueError> {
        let count = match self {
            Self::Sqlite(storage) => {
                sqlx::query_scalar(concat!(
                    "SELECT COUNT(*) FROM Jobs WHERE job_type = ?1 AND ",
                    active_sql!()
                ))
                .bind(Job::QUEUE)
                .fetch_one(storage.pool())
                .await?
            }
            Self::Postgres(storage) => {
                sqlx::query_scalar(concat!(
                    "SELECT COUNT(*) FROM apalis.jobs WHERE job_type = $1 AND ",
                    active_sql!()
                ))
                .bind(Job::QUEUE)
                .fetch_one(storage.pool())
                .await?
            }
        };
        Ok(count)
    }

    /// How long the oldest job that is due (not one scheduled for later) has been
    /// waiting for a worker; zero when none waits.
    pub async fn oldest_due_age(&self, now: DateTime<Utc>) -> Result<Duration, QueueError> {
        let seconds: Option<i64> = match self {
            Self::Sqlite(storage) => {
                sqlx::query_scalar(
                    // apalis keeps SQLite's times as Unix seconds.
                    concat!(
                        "SELECT ?2 - MIN(run_at) FROM Jobs WHERE job_type = ?1 AND run_at <= ?2 AND ",
                        due_sql!()
                    ),
                )
                .bind(Job::QUEUE)
                .bind(now.timestamp())
                .fetch_one(storage.pool())
                .await?
            }
            Self::Postgres(storage) => {
                sqlx::query_scalar(
                    concat!(
                        "SELECT EXTRACT(EPOCH FROM ($2 - MIN(run_at)))::bigint FROM apalis.jobs WHERE job_type = $1 AND run_at <= $2 AND ",
                        due_sql!()
                    ),
                )
                .bind(Job::QUEUE)
                .bind(now)
                .fetch_one(storage.pool())
                .await?
            }
        };
        Ok(Duration::from_secs(
            seconds.and_then(|s| u64::try_from(s).ok()).unwrap_or(0),
        ))
    }

    /// Deletes this queue's jobs that finished before `before`, in batches; returns
    /// how many. Their idempotency keys go with them: every key names a schedule
    /// slot, a request or a webhook window that is long past by then.
    pub async fn purge_finished(&self, before: DateTime<Utc>) -> Result<u64, QueueError> {
        let mut deleted = 0;
        loop {
            let batch = self.purge_batch(before).await?;
            deleted += batch;
            if batch < PURGE_BATCH {
                return Ok(deleted);
            }
        }
    }

    async fn purge_batch(&self, before: DateTime<Utc>) -> Result<u64, QueueError> {
        let deleted = match self {
            Self::Sqlite(storage) => {
                sqlx::query(concat!(
                    "DELETE FROM Jobs WHERE id IN (SELECT id FROM Jobs WHERE job_type = ?1 AND ",
                    finished_sql!(),
                    " AND done_at < ?2 LIMIT ?3)"
                ))
                .bind(Job::QUEUE)
                // apalis keeps SQLite's times as Unix seconds.
                .bind(before.timestamp())
                .bind(PURGE_BATCH as i64)
                .execute(storage.pool())
                .await?
                .rows_affected()
            }
            Self::Postgres(storage) => sqlx::query(concat!(
                "DELETE FROM apalis.jobs WHERE id IN (SELECT id FROM apalis.jobs WHERE job_type = $1 AND ",
                finished_sql!(),
                " AND done_at < $2 LIMIT $3)"
            ))
            .bind(Job::QUEUE)
            .bind(before)
            .bind(PURGE_BATCH as i64)
            .execute(storage.pool())
            .await?
            .rows_affected(),
        };
        Ok(deleted)
    }

    /// A monitor running `concurrency` syncs at a time, restarting its worker after
    /// a backend error. Worker names are unique per host, process and restart, so a
    /// dead process's jobs are recognised as orphans and recovered.
    pub fn monitor(&self, ctx: Env, concurrency: usize) -> Monitor {
        let base = format!("{}-{}", hostname(), std::process::id());
        let monitor = match self.clone() {
            Self::Sqlite(storage) => Monitor::new().register(move |restarts| {
                WorkerBuilder::new(format!("jobs-{base}-{restarts}"))
                    .backend(
                        storage
                            .clone()
                            .poll_with_interval(Duration::from_millis(200)),
                    )
                    .data(ctx.clone())
                    .concurrency(concurrency)
                    .catch_panic()
                    .build(run_job)
            }),
            Self::Postgres(storage) => Monitor::new().register(move |restarts| {
                WorkerBuilder::new(format!("jobs-{base}-{restarts}"))
                    // LISTEN/NOTIFY wakes a worker at once; the poll picks up retries.
                    .backend(
                        storage
                            .clone()
                            .with_pubsub()
                            .poll_with_interval(Duration::from_secs(1)),
                    )
                    .data(ctx.clone())
                    .concurrency(concurrency)
                    .catch_panic()
                    .build(run_job)
            }),
        };
        monitor
            .should_restart(|ctx, error| {
                tracing::error!(worker = %ctx.name(), error = %error, restarts = ctx.restarts(), "Worker stopped; restarting.");
                true
            })
            .shutdown_timeout(Duration::from_secs(30))
    }
}

/// The job body: runs the job; errors that deserve a retry go back to apalis.
///
/// A worker drives its jobs as futures of its own task, so on their own they
/// would share one thread however many cores there are; each job runs as a task
/// of its own instead, and the worker waits for it. A panic in it is raised
/// again here, where the worker's panic guard turns it into a failed attempt.
async fn run_job(
    job: Job,
    ctx: Data<Env>,
    attempt: Attempt,
    metadata: MetadataStore,
) -> Result<(), BoxDynError> {
    let ctx = Env::clone(&ctx);
    let attempt = attempt.current();
    // A root span (not the worker's), continuing the trace of whoever queued it.
    let span =
        tracing::info_span!(parent: None, "job", otel.name = %format_args!("job {}", job.kind()));
    tracecontext::continue_from_value(&span, metadata.get(tracecontext::TRACEPARENT));
    let task = tokio::spawn(
        async move {
            match job {
                Job::Sync(job) => pipeline::run(ctx, job, attempt)
                    .await
                    .map(|_| ())
                    .map_err(|e| Box::new(e) as BoxDynError),
                Job::RefreshToken(job) => refresh::run(ctx, job)
                    .await
                    .map_err(|e| Box::new(e) as BoxDynError),
            }
        }
        .instrument(span),
    );
    match task.await {
        Ok(done) => done,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(Box::new(e)),
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".into())
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Sqlite(_) => "Queue::Sqlite",
            Self::Postgres(_) => "Queue::Postgres",
        })
    }
}

#[cfg(test)]
mod tests {
    use sea_orm::sqlx::{AssertSqlSafe, Row as _};

    use super::*;
    use crate::store::scratch;
    use crate::sync::SyncConnection;

    fn sync(connection: ConnectionId) -> SyncConnection {
        SyncConnection {
            connection_id: connection,
            idempotency_key: format!("test:{connection}"),
        }
    }

    /// What the planner does with the waiting check, as text.
    async fn plan(queue: &Queue, connection: ConnectionId) -> String {
        let lines: Vec<String> = match queue {
            Queue::Sqlite(storage) => sqlx::query(AssertSqlSafe(format!(
                "EXPLAIN QUERY PLAN {WAITING_SQLITE}"
            )))
            .bind(Job::QUEUE)
            .bind(connection.to_string())
            .bind("sync")
            .fetch_all(storage.pool())
            .await
            .unwrap()
            .iter()
            .map(|row| row.get("detail"))
            .collect(),
            Queue::Postgres(storage) => {
                sqlx::query_scalar::<_, String>(AssertSqlSafe(format!("EXPLAIN {WAITING_PG}")))
                    .bind(Job::QUEUE)
                    .bind(connection.to_string())
                    .bind("sync")
                    .fetch_all(storage.pool())
                    .await
                    .unwrap()
            }
        };
        lines.join("\n")
    }

    /// A backlog of waiting jobs, then the checks an enqueue makes: answered right,
    /// and through the index, whatever the backlog.
    async fn waiting_is_looked_up_not_scanned(store: &Store) {
        store.migrate().await.unwrap();
        // Every process sets the queue up at start.
        Queue::setup(store).await.unwrap();
        let queue = Queue::setup(store).await.unwrap();
        let backlog: Vec<ConnectionId> = (0..300).map(|_| ConnectionId::new()).collect();
        for connection in &backlog {
            assert!(queue.enqueue(sync(*connection)).await.unwrap());
        }
        let first = backlog[0];
        assert!(
            !queue.enqueue(sync(first)).await.unwrap(),
            "a second sync while one waits is not queued"
        );
        assert_eq!(queue.waiting_for(first, "sync").await.unwrap(), 1);
        assert_eq!(queue.waiting_for(first, "refresh_token").await.unwrap(), 0);
        assert_eq!(
            queue
                .waiting_for(ConnectionId::new(), "sync")
                .await
                .unwrap(),
            0
        );
        let plan = plan(&queue, first).await;
        assert!(
            plan.contains("finsync_jobs_waiting"),
            "the waiting check reads the backlog:\n{plan}"
        );
    }

    #[tokio::test]
    async fn on_sqlite_a_waiting_job_is_looked_up_not_scanned() {
        waiting_is_looked_up_not_scanned(&scratch::sqlite().await).await;
    }

    #[tokio::test]
    async fn on_postgres_a_waiting_job_is_looked_up_not_scanned() {
        scratch::on_postgres(|store| async move { waiting_is_looked_up_not_scanned(&store).await })
            .await;
    }
}
