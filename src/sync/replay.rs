//! Replaying quarantine: after a connector fix, one sync for every connection with
//! records still in quarantine. The workers fetch and map again with the connector
//! now in service; entries that map now are resolved by that sync.

use chrono::Utc;

use super::job::SyncConnection;
use super::{Queue, QueueError};
use crate::domain::ConnectionId;
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReplayError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Queue(#[from] QueueError),
}

/// One connection the replay asked to sync again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replayed {
    pub connection_id: ConnectionId,
    pub institution: String,
    /// Its entries still open.
    pub open: u64,
    /// Whether a sync was enqueued; `false` when one was already waiting.
    pub queued: bool,
}

/// Enqueues one sync for every connection with open quarantine entries (of the
/// connector `connector`, when given).
pub async fn replay_quarantined(
    store: &Store,
    queue: &Queue,
    connector: Option<&str>,
) -> Result<Vec<Replayed>, ReplayError> {
    let at = Utc::now().timestamp_millis();
    let mut out = Vec::new();
    for (connection_id, institution, open) in store.open_quarantine_by_connection(connector).await?
    {
        let job = SyncConnection {
            connection_id,
            idempotency_key: format!("replay:{connection_id}:{at}"),
        };
        let queued = queue.enqueue(job).await?;
        out.push(Replayed {
            connection_id,
            institution,
            open,
            queued,
        });
    }
    if !out.is_empty() {
        tracing::info!(connections = out.len(), "Replaying quarantined records.");
    }
    Ok(out)
}
