//! Waiting for a connection's sync to finish, for those who start one and then
//! want its result (the demo, benchmarks, tests).

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::domain::{ConnectionId, ConnectionStatus};
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WaitError {
    #[error("the sync did not finish within {}s", .0.as_secs())]
    TimedOut(Duration),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Waits up to `timeout` for a sync of `connection` that started after `since` to
/// finish, with its data and the cached view in place. `Ok(Err(reason))` when it
/// failed or the connection left `active`.
pub async fn wait_for_sync(
    store: &Store,
    connection: ConnectionId,
    since: DateTime<Utc>,
    timeout: Duration,
) -> Result<Result<(), String>, WaitError> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let record = store.connection(connection).await?;
        // Done when a run that started since then has finished: only then are its
        // data and the cached view in place.
        let runs = store.runs_since(connection, since).await?;
        if runs.iter().any(|r| r.outcome == "succeeded") {
            return Ok(Ok(()));
        }
        let running = runs.iter().any(|r| r.finished_at.is_none());
        if record.status != ConnectionStatus::Active && !running {
            return Ok(Err(record
                .last_failure_reason
                .unwrap_or_else(|| record.status.to_string())));
        }
        // A failed run whose reason reached the connection; a database failure
        // leaves none and its job is retried.
        if let Some(reason) = record.last_failure_reason
            && runs.iter().any(|r| r.outcome == "failed")
        {
            return Ok(Err(reason));
        }
        if tokio::time::Instant::now() > deadline {
            return Err(WaitError::TimedOut(timeout));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
