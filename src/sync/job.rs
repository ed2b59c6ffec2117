//! The jobs, all in one list: [`Job`] is what the queue carries. Each variant is a
//! plain serde struct naming the connection it works on and an idempotency key that
//! says why it was enqueued (a schedule slot, a link, a refresh slot), so the same
//! reason never enqueues twice.

use serde::{Deserialize, Serialize};

use crate::domain::ConnectionId;

/// Every job finsync runs. Stored as JSON with a `job` tag beside the fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "job", rename_all = "snake_case")]
pub enum Job {
    Sync(SyncConnection),
    RefreshToken(RefreshToken),
}

/// Syncs one connection: fetch, normalize, diff, store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncConnection {
    pub connection_id: ConnectionId,
    pub idempotency_key: String,
}

/// Refreshes one connection's access token ahead of its expiry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshToken {
    pub connection_id: ConnectionId,
    pub idempotency_key: String,
    /// The expiry of the token this job renews: if the stored token differs when
    /// the job runs, someone already renewed it and the job has nothing to do.
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl Job {
    /// Queue name, fixed so that moving the type does not orphan queued jobs.
    pub const QUEUE: &'static str = "finsync.jobs";
    /// A job that keeps failing is given up after this many attempts.
    pub const MAX_ATTEMPTS: usize = 5;

    pub fn connection_id(&self) -> ConnectionId {
        match self {
            Self::Sync(j) => j.connection_id,
            Self::RefreshToken(j) => j.connection_id,
        }
    }

    pub fn idempotency_key(&self) -> &str {
        match self {
            Self::Sync(j) => &j.idempotency_key,
            Self::RefreshToken(j) => &j.idempotency_key,
        }
    }

    /// The `job` tag as stored, for queries on the queue's tables.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Sync(_) => "sync",
            Self::RefreshToken(_) => "refresh_token",
        }
    }
}

impl From<SyncConnection> for Job {
    fn from(job: SyncConnection) -> Self {
        Self::Sync(job)
    }
}

impl From<RefreshToken> for Job {
    fn from(job: RefreshToken) -> Self {
        Self::RefreshToken(job)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_are_stored_with_their_kind_beside_the_connection() {
        let job = Job::from(RefreshToken {
            connection_id: ConnectionId::new(),
            idempotency_key: "k".into(),
            expires_at: Some(chrono::Utc::now()),
        });
        let json: serde_json::Value = serde_json::to_value(&job).unwrap();
        assert_eq!(json["job"], job.kind());
        assert_eq!(json["connection_id"], job.connection_id().to_string());
        assert_eq!(serde_json::from_value::<Job>(json).unwrap(), job);
    }
}
