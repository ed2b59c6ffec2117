//! This process's circuit breakers and adaptive mode, reported to the fleet's view
//! ([`crate::store::FleetBreaker`]) every few seconds by every process that calls
//! institutions, so the API, the status page and `/admin/connectors` show how many
//! workers see an institution down, not the answering process's own (which may
//! never call it).

use std::time::Duration;

use chrono::Utc;

use super::Env;
use crate::resilience::BreakerState;
use crate::store::{BreakerReport, StoreError};

/// A report older than this many intervals is no longer counted: its process
/// stopped, or cannot reach the database.
pub const FRESH_INTERVALS: i32 = 3;

/// Reports are forgotten an hour after their process last reported.
const FORGET_AFTER: chrono::Duration = chrono::Duration::hours(1);

/// A name for this process in the fleet's view: its host and process id, and a
/// random part so two processes never share one.
pub fn process_name() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "finsync".to_owned());
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}:{}:{}", std::process::id(), &random[..8])
}

/// Reports this process's breakers once.
pub async fn report(ctx: &Env, process: &str) -> Result<(), StoreError> {
    let reports: Vec<BreakerReport> = ctx
        .engine
        .resilience()
        .snapshot()
        .into_iter()
        .map(|(institution, view, degraded)| BreakerReport {
            institution,
            state: match view.state {
                BreakerState::Closed => "closed",
                BreakerState::HalfOpen => "half_open",
                BreakerState::Open => "open",
            }
            .to_owned(),
            degraded,
            consecutive_failures: view.consecutive_failures,
            opened_at: view.opened_at,
        })
        .collect();
    ctx.store
        .report_breakers(process, &reports, Utc::now() - FORGET_AFTER)
        .await
}

/// Reports every `every` until the task is dropped; a failed report is logged and
/// the next one tries again.
pub async fn run(ctx: Env, process: String, every: Duration) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if let Err(e) = report(&ctx, &process).await {
            ctx.store.note(&e);
            tracing::warn!(error = %e, "Could not report this process's breakers.");
        }
    }
}
