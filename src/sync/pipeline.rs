//! The sync pipeline for one connection: take the connection's sync lease (renewed
//! while the sync runs) and a usable token, fetch every page through the connector
//! engine (from the stored cursor, or the whole history when a deep sync is due),
//! map, diff against what is stored and write only what changed, then record the
//! run and refresh the cached portfolio. A failure at any step leaves the last good
//! data as it was and schedules the next attempt when the institution said, else on
//! a backoff; the first success after the institution's trouble brings its other
//! waiting connections forward.

use std::collections::BTreeSet;
use std::time::Instant;

use chrono::Utc;
use tracing::Instrument;

use super::Env;
use super::job::SyncConnection;
use crate::connectors::engine::Trouble;
use crate::connectors::{Connector, EngineError, Fetched, SyncCursor};
use crate::domain::{self, ConnectionId, ConnectionStatus, Coverage, Prior, SyncRead};
use crate::store::{
    ConnectionRecord, Lease, Refusal, Removals, Resolution, RunCounts, StoreError, SyncSuccess,
    UnreadAccount,
};
use crate::tokens::TokenError;
use crate::webhooks::outbound::{self, EventData, WebhookEvent};

/// After a failed sync, the first retry comes this long later (then twice as long
/// per failure in a row, never later than the connection's own interval), unless
/// the institution said when to come back.
const RETRY_FIRST: chrono::Duration = chrono::Duration::seconds(15);
/// How long a sync holds its connection before renewing the lease: a sync whose
/// worker died frees the connection this soon. A live one renews it every
/// [`LEASE_RENEW_EVERY`], however long it runs.
const LEASE: chrono::Duration = chrono::Duration::seconds(60);
const LEASE_RENEW_EVERY: std::time::Duration = std::time::Duration::from_secs(20);
/// How long a sync that found its connection busy, or its connector not yet in
/// service here, waits before trying again.
const DEFER: std::time::Duration = std::time::Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncOutcome {
    Synced(RunCounts),
    /// Nothing to do: the connection is not active, or another sync holds it.
    Skipped,
    /// The run failed in a way a retry of the job cannot fix; recorded on the
    /// connection and the run.
    Failed,
}

/// Failures that the queue should retry (the database was unreachable, …).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SyncError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Queue(super::QueueError),
    #[error("another sync took the connection over while this one stalled")]
    LeaseLost,
}

/// Runs one sync; every log line of it carries the connection and the job's key.
pub async fn run(ctx: Env, job: SyncConnection, attempt: usize) -> Result<SyncOutcome, SyncError> {
    let span = tracing::info_span!("sync", connection = %job.connection_id, key = %job.idempotency_key, attempt, trace_id = tracing::field::Empty);
    // Every line the sync logs carries its trace id.
    crate::tracecontext::record_trace_id(&span);
    sync_connection(&ctx, &job).instrument(span).await
}

async fn sync_connection(ctx: &Env, job: &SyncConnection) -> Result<SyncOutcome, SyncError> {
    // One sync per connection at a time, fleet-wide: two syncs would race on the
    // rotating refresh token and on the rows. Taking the lease reads the connection.
    let owner = &job.idempotency_key;
    let Some(connection) = ctx
        .store
        .lease_for_sync(job.connection_id, owner, Utc::now() + LEASE)
        .await?
    else {
        return not_leased(ctx, job).await;
    };
    let outcome = tokio::select! {
        outcome = leased(ctx, job, connection) => outcome,
        lost = keep_lease(ctx, job.connection_id, owner) => Err(lost),
    };
    // Given back once the run is closed, so that runs of one connection never
    // overlap; an error included.
    ctx.store
        .release_lease(Lease::Sync, job.connection_id, owner)
        .await?;
    outcome
}

/// Counts a finished sync and how long it took, by institution and outcome
/// (`succeeded`, `partial`: some accounts unread, `failed`, a parked one
/// included). A sync the database cut short is tried again and counted then.
fn observe(institution: &str, outcome: &'static str, started: Instant) {
    let labels = [
        ("institution", institution.to_owned()),
        ("outcome", outcome.to_owned()),
    ];
    metrics::counter!("finsync_syncs_total", &labels).increment(1);
    metrics::histogram!("finsync_sync_duration_seconds", &labels)
        .record(started.elapsed().as_secs_f64());
}

/// Renews the sync lease while the sync runs; returns only if another sync took
/// it over (this one stalled past the lease), which stops this one: its writes
/// are transactions, so what it leaves is whole, and the job is tried again.
async fn keep_lease(ctx: &Env, connection: ConnectionId, owner: &str) -> SyncError {
    loop {
        tokio::time::sleep(LEASE_RENEW_EVERY).await;
        match ctx
            .store
            .acquire_lease(Lease::Sync, connection, owner, Utc::now() + LEASE)
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!("The sync lease was taken over; stopping this sync.");
                return SyncError::LeaseLost;
            }
            Err(e) => tracing::warn!(error = %e, "Renewing the sync lease failed."),
        }
    }
}

/// What a sync holding the lease does.
async fn leased(
    ctx: &Env,
    job: &SyncConnection,
    connection: ConnectionRecord,
) -> Result<SyncOutcome, SyncError> {
    // A connector published moments ago may not be in service in this process yet
    // (each picks up new versions every `connectors.reload_ms`): run a little later
    // rather than fail. One stored nowhere fails in the sync as before.
    if ctx.registry.get(&connection.institution_id).is_err()
        && ctx
            .store
            .latest_connector_versions()
            .await?
            .iter()
            .any(|(id, _)| *id == connection.institution_id)
    {
        let queued = follow_up(ctx, connection.id).await?;
        tracing::info!(
            queued,
            connector = %connection.institution_id,
            "The connector is not in service in this process yet; the sync follows shortly."
        );
        return Ok(SyncOutcome::Skipped);
    }
    leased_sync(ctx, job, connection).await
}

/// Why the lease was not taken: the connection is gone or not active (nothing to
/// do), or another sync holds it (this one follows it).
async fn not_leased(ctx: &Env, job: &SyncConnection) -> Result<SyncOutcome, SyncError> {
    let connection = match ctx.store.connection(job.connection_id).await {
        Ok(c) => c,
        Err(StoreError::NotFound(_)) => return Ok(SyncOutcome::Skipped),
        Err(e) => return Err(e.into()),
    };
    if connection.status != ConnectionStatus::Active {
        tracing::info!(status = %connection.status, "Sync skipped: connection not active.");
        return Ok(SyncOutcome::Skipped);
    }
    // The running sync may have read the connection before whatever asked for
    // this one; run again once it is done rather than drop the request.
    let queued = follow_up(ctx, connection.id).await?;
    tracing::info!(
        queued,
        "Another sync of this connection is running; this one follows it."
    );
    Ok(SyncOutcome::Skipped)
}

/// Queues a sync of the connection to run `DEFER` from now, unless one is waiting.
async fn follow_up(ctx: &Env, connection: ConnectionId) -> Result<bool, SyncError> {
    let job = SyncConnection {
        connection_id: connection,
        idempotency_key: format!("deferred:{connection}:{}", uuid::Uuid::new_v4()),
    };
    ctx.queue
        .enqueue_after(job, DEFER)
        .await
        .map_err(SyncError::Queue)
}

async fn leased_sync(
    ctx: &Env,
    job: &SyncConnection,
    connection: ConnectionRecord,
) -> Result<SyncOutcome, SyncError> {
    // Runs of this job still open were cut short by their worker stopping. A job
    // that stopped its worker this often is parked, not tried again for ever.
    let abandoned = ctx.store.abandon_runs(&job.idempotency_key).await?;
    let deep = deep_sync(ctx, &connection);
    let run = ctx
        .store
        .start_run(connection.id, &job.idempotency_key, deep)
        .await?;
    if abandoned >= u64::from(ctx.poison_after) {
        let reason = format!(
            "SYNC_FAILED: this sync stopped its worker {abandoned} times; it is parked until the next scheduled one"
        );
        tracing::error!(abandoned, "Sync parked: it keeps stopping its worker.");
        ctx.store
            .record_sync_failure(connection.id, &reason)
            .await?;
        // The run is closed last: if anything before fails, the next delivery
        // finds it open, counts it, and parks the job again.
        ctx.refresh_portfolio(&connection).await?;
        ctx.store
            .finish_run(&run, RunCounts::default(), None, Some(&reason), &[])
            .await?;
        observe(&connection.institution_id, "failed", Instant::now());
        return Ok(SyncOutcome::Failed);
    }
    let started = Instant::now();
    match fetch_and_store(ctx, job, &connection, &run, deep).await {
        Ok(Stored {
            counts,
            cursor,
            unread,
        }) => {
            // The run reads as finished only once readers see its data: a read
            // right after a sync reports done must not get the view before it.
            if let Err(e) = ctx.refresh_portfolio(&connection).await {
                // The database failed, not the worker: closed, the run does not
                // count as abandoned when the job is tried again.
                ctx.store
                    .finish_run(&run, counts, None, Some(&e.to_string()), &unread)
                    .await?;
                return Err(e.into());
            }
            ctx.store
                .finish_run(&run, counts, cursor.as_deref(), None, &unread)
                .await?;
            if let Some(reason) = &connection.last_failure_reason
                && INSTITUTION_TROUBLE.iter().any(|t| reason.starts_with(t))
            {
                // The sync is done and recorded; a failure here only leaves the
                // others on their own schedules.
                if let Err(e) = bring_forward(ctx, &connection).await {
                    tracing::warn!(error = %e, "Bringing the institution's waiting connections forward failed.");
                }
            }
            let data = EventData::connection(&connection, ConnectionStatus::Active)
                .with_counts(counts)
                .with_unread(&unread);
            outbound::announce(
                &ctx.store,
                connection.tenant_id,
                WebhookEvent::SyncCompleted,
                &data,
            )
            .await;
            tracing::info!(
                deep,
                added = counts.added,
                modified = counts.modified,
                removed = counts.removed,
                unchanged = counts.unchanged,
                quarantined = counts.quarantined,
                findings = counts.findings,
                "Sync finished."
            );
            // Counted once the run is closed and announced: a sync cut short
            // before is tried again and counted then.
            let outcome = if unread.is_empty() {
                "succeeded"
            } else {
                "partial"
            };
            observe(&connection.institution_id, outcome, started);
            Ok(SyncOutcome::Synced(counts))
        }
        Err(Failure::Store(e)) => {
            // The database, not the institution, failed: hand the job back to the
            // queue. Each account's records were written in one transaction, so
            // what is stored is whole, if older.
            ctx.store
                .finish_run(&run, RunCounts::default(), None, Some(&e.to_string()), &[])
                .await?;
            Err(e.into())
        }
        Err(failure) => {
            // The full detail goes to the run and the log; the connection keeps a
            // stable code and a message fit for a tenant to read.
            let detail = failure.to_string();
            let public = failure.public_reason();
            let no_longer_active = matches!(failure, Failure::NoLongerActive);
            let mut needs_user = false;
            match failure {
                // Whatever made it inactive (a disconnect, a user to ask, another
                // sync) is what the connection shows; this sync adds nothing.
                Failure::NoLongerActive => {}
                _ if failure.needs_reauth() => {
                    // Only an active connection: a disconnect or relink meanwhile wins.
                    if ctx
                        .store
                        .leave_active(
                            connection.id,
                            ConnectionStatus::ReauthRequired,
                            &public,
                            !failure.is_grant_lacking(),
                        )
                        .await?
                    {
                        tracing::warn!(from = %connection.status, status = "reauth_required", "Connection needs the user to link again.");
                        needs_user = true;
                    }
                }
                _ => {
                    let retry_in = retry_in(ctx, &connection, &failure).await?;
                    ctx.store
                        .record_sync_failure(connection.id, &public)
                        .await?;
                    ctx.store
                        .claim_schedule(
                            connection.id,
                            connection.next_sync_at,
                            Utc::now() + retry_in,
                        )
                        .await?;
                    tracing::info!(
                        retry_in_ms = retry_in.num_milliseconds(),
                        "Next attempt scheduled."
                    );
                }
            }
            ctx.refresh_portfolio(&connection).await?;
            ctx.store
                .finish_run(&run, RunCounts::default(), None, Some(&detail), &[])
                .await?;
            // Announced once readers see it, like a finished sync.
            if needs_user {
                ctx.announce_reauth_required(&connection, &public).await;
            }
            // A connection disconnected meanwhile is not the institution failing.
            if !no_longer_active {
                observe(&connection.institution_id, "failed", started);
            }
            tracing::warn!(error = %detail, "Sync failed; the last good data stays.");
            Ok(SyncOutcome::Failed)
        }
    }
}

/// The public reasons of failures that are the institution's: once one of its
/// connections syncs again, the others waiting them out need not wait longer.
const INSTITUTION_TROUBLE: [&str; 2] = ["INSTITUTION_UNAVAILABLE", "RATE_LIMITED"];
/// The requests one sync is reckoned to take when spreading the syncs brought forward.
const REQUESTS_PER_SYNC: i64 = 3;
/// Syncs brought forward are spread over at most this long.
const MAX_SPREAD: chrono::Duration = chrono::Duration::minutes(1);

/// This connection's sync worked after its institution failed it: the institution
/// is back, so every connection of it still waiting out a backoff is made due now,
/// spread over as long as the connector's request rate needs for them (at most
/// [`MAX_SPREAD`]) so they do not all arrive at once.
async fn bring_forward(ctx: &Env, connection: &ConnectionRecord) -> Result<(), StoreError> {
    let now = Utc::now();
    let waiting = ctx
        .store
        .waiting_on_institution(&connection.institution_id, &INSTITUTION_TROUBLE, now)
        .await?;
    if waiting.is_empty() {
        return Ok(());
    }
    let per_second = ctx
        .registry
        .get(&connection.institution_id)
        .ok()
        .and_then(|c| c.limits.requests_per_second)
        .map_or(10, i64::from)
        .max(1);
    let count = i64::try_from(waiting.len()).unwrap_or(i64::MAX);
    let spread = chrono::Duration::milliseconds(count * REQUESTS_PER_SYNC * 1000 / per_second)
        .min(MAX_SPREAD);
    let mut moved = 0;
    for (index, other) in (0_i64..).zip(&waiting) {
        let at = now
            + spread * i32::try_from(index).unwrap_or(i32::MAX)
                / i32::try_from(count).unwrap_or(i32::MAX);
        if ctx
            .store
            .claim_schedule(other.id, other.next_sync_at, at)
            .await?
        {
            moved += 1;
        }
    }
    tracing::info!(
        institution = %connection.institution_id,
        moved,
        spread_ms = spread.num_milliseconds(),
        "The institution answers again; connections waiting on it are due now."
    );
    Ok(())
}

/// When to try a failed sync again: when the institution said (its `Retry-After`,
/// plus up to a tenth more so the connections it turned away do not all come back
/// at once), else an exponential backoff with jitter from [`RETRY_FIRST`], doubling
/// per failed run in a row; never later than the connection's own interval.
async fn retry_in(
    ctx: &Env,
    connection: &ConnectionRecord,
    failure: &Failure,
) -> Result<chrono::Duration, StoreError> {
    let interval = ctx.interval_for(connection);
    let asked = match failure {
        Failure::Engine(
            EngineError::UnavailableFor { retry_after, .. }
            | EngineError::CircuitOpen {
                retry_in: retry_after,
            }
            | EngineError::RateLimited {
                retry_after: Some(retry_after),
            },
        ) => chrono::Duration::from_std(*retry_after).ok(),
        _ => None,
    };
    let wait = match asked {
        Some(asked) => asked + asked / 10 * jitter_percent() / 100,
        None => {
            let since = connection
                .last_synced_at
                .unwrap_or(chrono::DateTime::UNIX_EPOCH);
            let failed_before = ctx
                .store
                .runs_since(connection.id, since)
                .await?
                .iter()
                .filter(|r| r.outcome == "failed")
                .count();
            let doublings = u32::try_from(failed_before).unwrap_or(u32::MAX).min(20);
            let backoff = RETRY_FIRST * 2_i32.saturating_pow(doublings);
            // Full jitter over the upper half: between half the backoff and all of it.
            backoff / 2 + backoff / 2 * jitter_percent() / 100
        }
    };
    Ok(wait.min(interval).max(chrono::Duration::seconds(1)))
}

/// A random whole percentage, 0 to 100.
fn jitter_percent() -> i32 {
    rand::random_range(0..=100)
}

#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("connector: {0}")]
    Connector(#[from] crate::connectors::RegistryError),
    #[error("the institution returned no accounts while {0} are stored; keeping them")]
    NoAccounts(usize),
    #[error("storing the data failed: {0}")]
    Store(#[from] StoreError),
    #[error("the connection stopped being active during the sync")]
    NoLongerActive,
}

impl Failure {
    /// A disconnected connection is not a database failure to retry: its records
    /// were deleted and must stay so.
    fn from_store(e: StoreError) -> Self {
        match e {
            StoreError::Disconnected => Self::NoLongerActive,
            e => Self::Store(e),
        }
    }

    /// The grant lacks what a new connector version needs, or was lost to our own
    /// cut-short refresh: the user must link again, though the institution ended
    /// nothing.
    fn is_grant_lacking(&self) -> bool {
        matches!(
            self,
            Self::Engine(EngineError::GrantLacks(_)) | Self::Token(TokenError::RotationLost { .. })
        )
    }

    fn needs_reauth(&self) -> bool {
        match self {
            Self::Token(e) => e.needs_reauth(),
            Self::Engine(EngineError::Reauth { .. } | EngineError::GrantLacks(_)) => true,
            _ => false,
        }
    }

    /// What a tenant may read: a stable code and a fixed message, never the
    /// institution's or our own error text.
    fn public_reason(&self) -> String {
        match self {
            Self::Token(TokenError::RotationLost { .. }) => crate::tokens::ROTATION_LOST.into(),
            _ if self.needs_reauth() => {
                "REAUTH_REQUIRED: the institution needs the user to link again".into()
            }
            Self::Engine(EngineError::RateLimited { .. }) => {
                "RATE_LIMITED: the institution asked us to slow down; retrying later".into()
            }
            Self::Engine(
                EngineError::Unavailable(_)
                | EngineError::UnavailableFor { .. }
                | EngineError::CircuitOpen { .. },
            )
            | Self::Token(TokenError::Refresh(_)) => {
                "INSTITUTION_UNAVAILABLE: the institution could not be reached; retrying later"
                    .into()
            }
            Self::Token(TokenError::Busy) => {
                "TOKEN_REFRESH_PENDING: the connection's access token is being renewed; retrying shortly".into()
            }
            Self::NoLongerActive => "SYNC_FAILED: the connection changed during the sync".into(),
            Self::Engine(EngineError::Misconfigured(_)) => {
                "SYNC_FAILED: the sync failed on our side; retrying later".into()
            }
            Self::Engine(EngineError::Rejected { status, .. }) => format!(
                "INSTITUTION_ERROR: the institution refused a request (HTTP {status}); retrying later"
            ),
            Self::Engine(_) | Self::NoAccounts(_) => {
                "INSTITUTION_ERROR: the institution's response could not be used; retrying later"
                    .into()
            }
            _ => "SYNC_FAILED: the sync failed on our side; retrying later".into(),
        }
    }
}

/// Whether this sync is a deep one, re-reading the whole history the institution
/// offers so that removals an incremental sync cannot see are found: when the
/// connection's deep sync is due, and whenever there is no cursor to resume from
/// (a first sync, a new connector version), which reads everything anyway.
fn deep_sync(ctx: &Env, connection: &ConnectionRecord) -> bool {
    let due = connection
        .deep_sync_due_at
        .is_some_and(|due| due <= Utc::now());
    let resumable = ctx
        .registry
        .get(&connection.institution_id)
        .ok()
        .zip(connection.sync_cursor.as_deref())
        .and_then(|(connector, text)| SyncCursor::decode(text, &connector.hash))
        .is_some();
    due || !resumable
}

/// When the connection's next deep sync is due after a successful sync started at
/// `started`: an interval after a deep one; for a connection that has none planned
/// (synced before deep syncs existed), at a random point of the interval, so a
/// fleet's deep syncs do not all fall together.
fn next_deep_sync(
    ctx: &Env,
    connection: &ConnectionRecord,
    deep: bool,
    started: chrono::DateTime<Utc>,
) -> Option<chrono::DateTime<Utc>> {
    let every = ctx.deep_interval_for(connection);
    if deep {
        Some(started + every)
    } else if connection.deep_sync_due_at.is_none() {
        let spread = (every.num_seconds().max(1) as f64 * rand::random::<f64>()) as i64;
        Some(started + chrono::Duration::seconds(spread))
    } else {
        None
    }
}

/// What a sync stored: what changed, where the next one resumes, and the accounts
/// whose data it could not read.
struct Stored {
    counts: RunCounts,
    cursor: Option<String>,
    unread: Vec<UnreadAccount>,
}

/// Fetches, stores, and records the success on the connection (with where the
/// next sync resumes).
async fn fetch_and_store(
    ctx: &Env,
    job: &SyncConnection,
    connection: &ConnectionRecord,
    run: &str,
    deep: bool,
) -> Result<Stored, Failure> {
    let started = Utc::now();
    let connector = ctx.registry.get(&connection.institution_id)?;
    let grant = ctx.tokens.grant(connection).await?;
    let resume = connection
        .sync_cursor
        .as_deref()
        .filter(|_| !deep)
        .and_then(|text| SyncCursor::decode(text, &connector.hash));
    let fetched = match ctx.engine.fetch(&connector, &grant, resume.as_ref()).await {
        // The token may have been revoked or expired early, or the grant may lack a
        // value a new one brings: refresh once and retry before asking the user to
        // link again.
        Err(error @ (EngineError::Reauth { .. } | EngineError::GrantLacks(_)))
            if connection.tokens.refresh_token.is_some() =>
        {
            tracing::info!(%error, "Refreshing the grant once.");
            let current = ctx.store.connection(connection.id).await?;
            let grant = ctx.tokens.refreshed_grant(&current).await?;
            ctx.engine
                .fetch(&connector, &grant, resume.as_ref())
                .await?
        }
        other => other?,
    };
    let (mut counts, prior) = apply(ctx, connection, &fetched).await?;
    quarantine(ctx, connection, &connector.hash, &fetched)
        .await
        .map_err(Failure::from_store)?;
    // Findings describe the data; failing to record them does not undo the sync.
    counts.findings = reconcile(ctx, &connector, connection, run, &fetched, &prior)
        .await
        .unwrap_or_else(|error| {
            tracing::warn!(%error, "Recording data-quality findings failed; the next sync records them.");
            0
        });
    let cursor = fetched.cursor.as_ref().map(SyncCursor::encode);
    let unread: Vec<UnreadAccount> = fetched
        .failures
        .iter()
        .map(|failure| UnreadAccount {
            account_id: failure.account.clone(),
            endpoint: failure.endpoint.clone(),
            reason: trouble_reason(failure.trouble),
        })
        .collect();
    let read: Vec<String> = fetched
        .snapshot
        .accounts
        .iter()
        .map(|a| a.external_id.clone())
        .collect();
    let success = SyncSuccess {
        at: started,
        next_sync_at: started + ctx.interval_for(connection),
        cursor: cursor.as_deref(),
        deep_sync_due_at: next_deep_sync(ctx, connection, deep, started),
        lease_owner: &job.idempotency_key,
        unread: &unread,
        read: &read,
        deferred: &fetched.deferred,
        previous: connection.last_synced_at,
    };
    // A disconnect during the fetch deleted the records; when this sync wrote
    // none, this is where it finds out.
    if !ctx
        .store
        .record_sync_success(connection.id, success)
        .await?
    {
        return Err(Failure::NoLongerActive);
    }
    Ok(Stored {
        counts,
        cursor,
        unread,
    })
}

/// What a tenant may read of why one account's data was not read: a stable code and
/// a fixed message, like a connection's failure reason.
fn trouble_reason(trouble: Trouble) -> String {
    match trouble {
        Trouble::Unavailable => {
            "INSTITUTION_UNAVAILABLE: the institution could not serve this account's data; retrying at the next sync".into()
        }
        Trouble::Refused(status) => format!(
            "INSTITUTION_ERROR: the institution refused a request for this account's data (HTTP {status}); retrying at the next sync"
        ),
        Trouble::Unreadable => {
            "INSTITUTION_ERROR: the institution's answer for this account's data could not be used; retrying at the next sync".into()
        }
    }
}

/// Keeps what this run refused in quarantine and resolves what it no longer
/// refuses: `mapped` when the record is now stored, else `gone`.
async fn quarantine(
    ctx: &Env,
    connection: &ConnectionRecord,
    connector_hash: &str,
    fetched: &Fetched,
) -> Result<(), StoreError> {
    let refused: Vec<Refusal<'_>> = fetched
        .rejected
        .iter()
        .map(|r| Refusal {
            endpoint: r.endpoint,
            key: &r.key,
            reason: &r.reason,
            record: &r.record,
        })
        .collect();
    let snapshot = &fetched.snapshot;
    let stored = |endpoint: &str, key: &str| match endpoint {
        "accounts" => snapshot.accounts.iter().any(|a| a.external_id == key),
        "transactions" => snapshot.transactions.iter().any(|t| t.external_id == key),
        "holdings" => snapshot.holdings.iter().any(|h| h.external_id() == key),
        _ => false,
    };
    // Where some account's data could not be read, a record not seen again may be
    // one of its: it stays open until a sync reads that account.
    // An account whose details could not be read had nothing of it read.
    let details_unread = !fetched.unread("details").is_empty();
    let unread = |endpoint: &str| {
        details_unread || (endpoint != "accounts" && !fetched.unread(endpoint).is_empty())
    };
    ctx.store
        .record_quarantine(connection, connector_hash, &refused, |endpoint, key| {
            if stored(endpoint, key) {
                Some(Resolution::Mapped)
            } else if unread(endpoint) {
                None
            } else {
                Some(Resolution::Gone)
            }
        })
        .await
}

async fn apply(
    ctx: &Env,
    connection: &ConnectionRecord,
    fetched: &Fetched,
) -> Result<(RunCounts, Prior), Failure> {
    for rejected in &fetched.rejected {
        tracing::warn!(endpoint = rejected.endpoint, key = %rejected.key, reason = %rejected.reason, "Record quarantined: it does not map.");
    }
    if fetched.snapshot.accounts.is_empty() {
        let stored = ctx.store.portfolio(connection.id, 0).await?.accounts.len();
        if stored > 0 {
            return Err(Failure::NoAccounts(stored));
        }
    }
    for failure in &fetched.failures {
        tracing::warn!(account = %failure.account, endpoint = %failure.endpoint, reason = %failure.reason, "One account's data could not be read; what is stored of it stays until a later sync reads it.");
    }
    let removals = Removals {
        accounts: fetched.complete("accounts"),
        holdings: fetched.complete("holdings"),
        transactions: fetched.coverage.clone(),
        accounts_kept: fetched.unread("details"),
        holdings_kept: fetched.unread("holdings"),
        transactions_by_account: fetched.coverage_by_account.clone(),
    };
    let applied = ctx
        .store
        .apply_snapshot(connection.id, &fetched.snapshot, removals)
        .await
        .map_err(Failure::from_store)?;
    let counts = RunCounts {
        added: applied.added,
        modified: applied.modified,
        removed: applied.removed,
        unchanged: applied.unchanged,
        quarantined: u32::try_from(fetched.rejected.len())
            .unwrap_or(u32::MAX)
            .saturating_add(applied.orphaned),
        findings: 0,
    };
    Ok((counts, applied.prior))
}

/// Checks what the sync read against itself and against what was stored before,
/// and records the findings, and the splits it saw against the securities master;
/// the records themselves stay as the institution sent them. Returns how many
/// findings the run raised.
async fn reconcile(
    ctx: &Env,
    connector: &Connector,
    connection: &ConnectionRecord,
    run: &str,
    fetched: &Fetched,
    prior: &Prior,
) -> Result<u32, StoreError> {
    let snapshot = &fetched.snapshot;
    let unread_details = fetched.unread("details");
    let read = |endpoint: &'static str, present: bool| -> BTreeSet<&str> {
        if !present || fetched.deferred.contains(&endpoint) {
            return BTreeSet::new();
        }
        let unread = fetched.unread(endpoint);
        snapshot
            .accounts
            .iter()
            .map(|a| a.external_id.as_str())
            .filter(|a| !unread.contains(*a) && !unread_details.contains(*a))
            .collect()
    };
    let holdings_read = read("holdings", connector.holdings.is_some());
    let transactions_read = read("transactions", connector.transactions.is_some())
        .into_iter()
        .map(|account| {
            let coverage = fetched
                .coverage_by_account
                .get(account)
                .unwrap_or(&fetched.coverage);
            // A date range leaves transactions outside it unread.
            let whole = matches!(coverage, Coverage::Everything);
            (account, whole)
        })
        .collect();
    let found = domain::reconcile(&SyncRead {
        snapshot,
        prior,
        holdings_read,
        transactions_read,
        undescribed: &fetched.undescribed,
        holdings_set_aside: fetched.rejected.iter().any(|r| r.endpoint == "holdings"),
        transactions_set_aside: fetched
            .rejected
            .iter()
            .any(|r| r.endpoint == "transactions"),
        today: Utc::now().date_naive(),
        pending_days: ctx.stale_pending_days,
    });
    for finding in &found.findings {
        metrics::counter!(
            "finsync_data_quality_findings_total",
            "institution" => connection.institution_id.clone(),
            "code" => finding.code.as_str(),
        )
        .increment(1);
    }
    if !found.findings.is_empty() {
        tracing::info!(
            findings = found.findings.len(),
            "Reconciliation found data that does not add up."
        );
    }
    ctx.store
        .record_findings(connection.id, run, &found)
        .await?;
    if !found.splits.is_empty() {
        // Recorded against the master, for every connection holding it; a match
        // by ticker alone may be another instrument, so it records nothing.
        let matches = ctx.store.security_matches(connection.id).await?;
        let splits: Vec<(String, domain::Split)> = found
            .splits
            .iter()
            .filter_map(|split| {
                let matched = matches.get(&split.security_external_id)?;
                let instrument = matched.instrument.as_ref()?;
                let strong = !instrument.weak && matched.matched_by.as_deref() != Some("ticker");
                strong.then(|| (instrument.id.clone(), split.clone()))
            })
            .collect();
        let gained = ctx.store.record_splits(connection.id, &splits).await?;
        // Every holder's cached view lists the instrument's splits: theirs are
        // read again from the store (this user's is rebuilt after the sync).
        for (tenant, user) in ctx.store.holders(&gained).await? {
            ctx.cache
                .invalidate(&crate::portfolio::cache_key(tenant, &user))
                .await;
        }
    }
    Ok(u32::try_from(found.findings.len()).unwrap_or(u32::MAX))
}
