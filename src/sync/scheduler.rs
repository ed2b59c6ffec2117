//! The scheduler, everything it does on its own clock:
//!
//! - each tick ([`tick`]): enqueues one sync for every connection that is due, one
//!   token refresh for every token due for refresh, deletes institutions'
//!   webhook events past their retention;
//! - beside them, on the same clock: runs erasures that are due (one whose run
//!   crashed or failed, [`super::erasure::run_due`]);
//! - once an hour beside the ticks ([`purge_history`]): deletes each class of
//!   history past its `[retention]` (finished runs and jobs, settled webhook
//!   deliveries, expired link sessions, resolved quarantine entries, the oldest
//!   audit entries), idempotency keys and status page sessions over for a day; then
//!   logs the audit trail's head;
//! - on `fx.refresh_secs`: fetches the exchange rates ([`crate::fx::Fx::run`]).
//!
//! Safe to run in several processes: a connection's schedule slot is claimed with a
//! conditional update, so only one scheduler enqueues it, the queue refuses a
//! second job for a connection that already has one queued or running, and every
//! purge is idempotent (and so is storing the same rates twice). Which processes run it: [`crate::app::roles`].

use std::time::Duration;

use chrono::{SubsecRound, Utc};

use super::job::{RefreshToken, SyncConnection};
use super::{Env, QueueError};
use crate::store::{IDEMPOTENCY_KEY_TTL, StoreError};

/// Connections looked at per tick.
const BATCH: u64 = 500;
/// How often a scheduler deletes history past its retention; several schedulers
/// doing it too is harmless.
const PURGE_EVERY: Duration = Duration::from_secs(3600);
/// A claimed refresh slot that did not lead to a refresh is due again after this.
const REFRESH_RETRY: chrono::Duration = chrono::Duration::minutes(1);

#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Queue(#[from] QueueError),
}

/// One pass: enqueues a sync for every due connection and a token refresh for
/// every due token; returns how many jobs were enqueued. The schedule slot is
/// claimed first (atomically, so of several schedulers exactly one proceeds) and
/// handed back if the enqueue fails.
pub async fn tick(ctx: &Env) -> Result<usize, SchedulerError> {
    // Microseconds: what both databases keep, so a claim compares equal.
    let now = Utc::now().trunc_subsecs(6);
    let mut enqueued = 0;
    for connection in ctx.store.due_connections(now, BATCH).await? {
        let next = now + ctx.interval_for(&connection);
        if !ctx
            .store
            .claim_schedule(connection.id, connection.next_sync_at, next)
            .await?
        {
            continue;
        }
        let job = SyncConnection {
            connection_id: connection.id,
            idempotency_key: format!("schedule:{}:{}", connection.id, next.timestamp_millis()),
        };
        match ctx.queue.enqueue(job).await {
            Ok(true) => enqueued += 1,
            // Already queued or running: that sync covers this slot.
            Ok(false) => {}
            Err(e) => {
                ctx.store
                    .claim_schedule(
                        connection.id,
                        Some(next),
                        connection.next_sync_at.unwrap_or(now),
                    )
                    .await?;
                return Err(e.into());
            }
        }
    }
    if enqueued > 0 {
        tracing::info!(enqueued, "Scheduled due syncs.");
    }
    let purged = ctx
        .store
        .purge_events(now - ctx.retention.institution_events)
        .await?;
    if purged > 0 {
        tracing::info!(
            purged,
            "Deleted institution webhook events past their retention."
        );
    }
    for expired in ctx.store.expire_consents(now).await? {
        tracing::warn!(connection = %expired.id, from = "active", status = "reauth_required", "Consent expired.");
        ctx.refresh_portfolio(&expired).await?;
        ctx.announce_reauth_required(&expired, crate::store::CONSENT_EXPIRED)
            .await;
    }
    Ok(enqueued + refresh_tick(ctx, now).await?)
}

/// Enqueues a token refresh for every connection whose refresh is due. The slot is
/// claimed by moving `refresh_due_at` a retry interval on; a successful refresh
/// sets the next real one.
async fn refresh_tick(ctx: &Env, now: chrono::DateTime<Utc>) -> Result<usize, SchedulerError> {
    let mut enqueued = 0;
    for connection in ctx.store.due_refreshes(now, BATCH).await? {
        let Some(due) = connection.tokens.refresh_due_at else {
            continue;
        };
        if !ctx
            .store
            .claim_refresh(connection.id, due, now + REFRESH_RETRY)
            .await?
        {
            continue;
        }
        let job = RefreshToken {
            connection_id: connection.id,
            idempotency_key: format!("refresh:{}:{}", connection.id, due.timestamp_millis()),
            expires_at: connection.tokens.access_token_expires_at,
        };
        match ctx.queue.enqueue(job).await {
            Ok(true) => enqueued += 1,
            Ok(false) => {}
            Err(e) => {
                ctx.store
                    .claim_refresh(connection.id, now + REFRESH_RETRY, due)
                    .await?;
                return Err(e.into());
            }
        }
    }
    if enqueued > 0 {
        tracing::info!(enqueued, "Scheduled token refreshes.");
    }
    Ok(enqueued)
}

/// How long each class of history is kept (from `[retention]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub runs: chrono::Duration,
    pub deliveries: chrono::Duration,
    pub quarantine: chrono::Duration,
    pub link_sessions: chrono::Duration,
    pub institution_events: chrono::Duration,
    pub audit: chrono::Duration,
    /// No audit entry younger than this is deleted, whatever `audit` says.
    pub audit_floor: chrono::Duration,
}

/// The moment before which each class of history goes in one purge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cutoffs {
    pub runs: chrono::DateTime<Utc>,
    pub deliveries: chrono::DateTime<Utc>,
    pub quarantine: chrono::DateTime<Utc>,
    pub link_sessions: chrono::DateTime<Utc>,
    /// `None`: the audit trail is left alone.
    pub audit: Option<chrono::DateTime<Utc>>,
}

impl Cutoffs {
    /// What `retention` lets go at `now`; the audit trail never past its floor.
    pub fn of(retention: &Retention, now: chrono::DateTime<Utc>) -> Self {
        Self {
            runs: now - retention.runs,
            deliveries: now - retention.deliveries,
            quarantine: now - retention.quarantine,
            link_sessions: now - retention.link_sessions,
            audit: Some(now - retention.audit.max(retention.audit_floor)),
        }
    }

    /// Everything finished before `before` but the audit trail (for tools and
    /// tests that empty the history).
    pub fn all_before(before: chrono::DateTime<Utc>) -> Self {
        Self {
            runs: before,
            deliveries: before,
            quarantine: before,
            link_sessions: before,
            audit: None,
        }
    }
}

/// The purpose the audit trail's purge records are sealed for.
pub const AUDIT_SEAL: &str = "audit-purged";

/// What [`purge_history`] deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Purged {
    pub runs: u64,
    pub jobs: u64,
    pub deliveries: u64,
    pub idempotency_keys: u64,
    pub link_sessions: u64,
    pub quarantine: u64,
    pub status_sessions: u64,
    pub audit_entries: u64,
}

/// Deletes what is over and older than its class's cutoff: sync runs and
/// requests and jobs, settled webhook deliveries, link sessions that expired,
/// quarantine entries resolved, the oldest audit entries; and idempotency keys and
/// status page sessions a day past their end. Nothing still running, queued or
/// pending goes.
pub async fn purge_history(ctx: &Env, cutoffs: &Cutoffs) -> Result<Purged, SchedulerError> {
    let purged = Purged {
        runs: ctx.store.purge_runs(cutoffs.runs).await?,
        jobs: ctx.queue.purge_finished(cutoffs.runs).await?,
        deliveries: ctx
            .store
            .purge_webhook_deliveries(cutoffs.deliveries)
            .await?,
        idempotency_keys: ctx
            .store
            .purge_idempotency_keys(Utc::now() - IDEMPOTENCY_KEY_TTL)
            .await?,
        link_sessions: ctx.store.purge_link_sessions(cutoffs.link_sessions).await?,
        quarantine: ctx
            .store
            .purge_resolved_quarantine(cutoffs.quarantine)
            .await?,
        // Over once expired: a day is enough to read who signed in when from the
        // audit trail's entries, which stay.
        status_sessions: ctx
            .store
            .purge_status_sessions(Utc::now() - chrono::Duration::days(1))
            .await?,
        audit_entries: match cutoffs.audit {
            Some(before) => {
                let vault = &ctx.tokens.vault;
                let seal = |value: &str| vault.keyed_hash(AUDIT_SEAL, value).ok();
                ctx.store.purge_audit(before, &seal).await?
            }
            None => 0,
        },
    };
    if purged != Purged::default() {
        tracing::info!(
            runs = purged.runs,
            jobs = purged.jobs,
            deliveries = purged.deliveries,
            idempotency_keys = purged.idempotency_keys,
            link_sessions = purged.link_sessions,
            quarantine = purged.quarantine,
            status_sessions = purged.status_sessions,
            audit_entries = purged.audit_entries,
            "Deleted history past its retention."
        );
    }
    Ok(purged)
}

/// Logs the audit trail's newest entry, so that entries later deleted from the
/// end of the trail (which leaves the chain whole) are caught by
/// `finsync audit verify --expect-head SEQ:HASH`.
async fn log_audit_head(ctx: &Env) {
    match ctx.store.audit_head().await {
        Ok(Some((seq, hash))) => {
            tracing::info!(head = %format!("{seq}:{hash}"), "Audit trail head.")
        }
        Ok(None) => {}
        Err(e) => tracing::error!(error = %e, "Reading the audit trail head failed."),
    }
}

/// Ticks every `every`, and purges history once an hour beside it, until
/// `shutdown` resolves.
pub async fn run(ctx: Env, every: Duration, shutdown: impl std::future::Future<Output = ()>) {
    tokio::pin!(shutdown);
    let mut interval = tokio::time::interval(every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // A first purge of a long history takes a while; the ticks do not wait for it.
    let purging = tokio::spawn({
        let ctx = ctx.clone();
        async move {
            let mut hourly = tokio::time::interval(PURGE_EVERY);
            hourly.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                hourly.tick().await;
                let cutoffs = Cutoffs::of(&ctx.retention, Utc::now());
                if let Err(e) = purge_history(&ctx, &cutoffs).await {
                    tracing::error!(error = %e, "Purging history failed.");
                }
                log_audit_head(&ctx).await;
            }
        }
    });
    let erasing = tokio::spawn(super::erasure::run_due(ctx.clone(), every));
    let rates = tokio::spawn({
        let ctx = ctx.clone();
        async move { ctx.fx.run(ctx.store.clone()).await }
    });
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = interval.tick() => {
                if let Err(e) = tick(&ctx).await {
                    tracing::error!(error = %e, "Scheduler tick failed.");
                }
            }
        }
    }
    purging.abort();
    erasing.abort();
    rates.abort();
}
