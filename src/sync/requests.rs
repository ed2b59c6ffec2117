//! On-demand syncs a tenant asks for: one request covers every active connection
//! of a user. Within the deployment's interval of a user's last request, an
//! unfinished request is answered again rather than queued twice, and a finished
//! one is refused as too soon. A job already waiting for a connection serves a new
//! request too (the queue holds one waiting sync per connection). A request's
//! progress is read from the runs that started after it.

use std::time::Duration;

use chrono::Utc;

use super::{Environment, QueueError, SyncConnection};
use crate::domain::{ConnectionId, ConnectionStatus, TenantId, UserId};
use crate::store::entities::sync_run;
use crate::store::{StoreError, SyncRequestRecord};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    #[error("no user `{0}` with a linked institution")]
    NoUser(UserId),
    /// The user's last request finished moments ago.
    #[error(
        "this user was synced moments ago; ask again in {wait_secs} s (the data is in the read endpoints)"
    )]
    TooSoon { wait_secs: u64 },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Queue(#[from] QueueError),
}

/// Where a request, or one of its connections, stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestState {
    /// Waiting for a worker.
    Queued,
    Running,
    /// Every connection synced.
    Succeeded,
    /// Some connections synced, others failed.
    Partial,
    /// No connection synced.
    Failed,
    /// The connection is not active.
    Skipped,
}

impl RequestState {
    pub fn is_final(self) -> bool {
        !matches!(self, Self::Queued | Self::Running)
    }
}

/// One connection of a request.
#[derive(Debug)]
pub struct ConnectionProgress {
    pub connection_id: ConnectionId,
    pub institution: String,
    pub state: RequestState,
    /// The run that state comes from, if any has started.
    pub run: Option<sync_run::Model>,
}

/// A request and how it is going.
#[derive(Debug)]
pub struct RequestProgress {
    pub request: SyncRequestRecord,
    pub state: RequestState,
    /// Whether this is an earlier, still unfinished request of the same user.
    pub coalesced: bool,
    pub connections: Vec<ConnectionProgress>,
}

/// Asks for a sync of every active connection of `user`; `interval` is the
/// shortest time between two finished requests of one user.
pub async fn request(
    ctx: &Environment,
    tenant: TenantId,
    user: &UserId,
    interval: Duration,
) -> Result<RequestProgress, RequestError> {
    let store = &ctx.store;
    let connections = store.user_connections(tenant, user).await?;
    if connections.is_empty() {
        return Err(RequestError::NoUser(user.clone()));
    }
    if let Some(previous) = store.latest_sync_request(tenant, user).await? {
        let age = Utc::now() - previous.created_at;
        let interval = chrono::Duration::from_std(interval).unwrap_or(chrono::Duration::MAX);
        if age < interval {
            let progress = progress(ctx, previous, true).await?;
            if !progress.state.is_final() {
                return Ok(progress);
            }
            let wait = (interval - age).num_seconds().max(1);
            return Err(RequestError::TooSoon {
                wait_secs: u64::try_from(wait).unwrap_or(1),
            });
        }
    }
    let active: Vec<_> = connections
        .iter()
        .filter(|c| c.status == ConnectionStatus::Active)
        .map(|c| c.id)
        .collect();
    let request = store.create_sync_request(tenant, user, &active).await?;
    for &connection_id in &active {
        ctx.queue
            .enqueue(SyncConnection {
                connection_id,
                idempotency_key: format!("api:{}:{connection_id}", request.id),
            })
            .await?;
    }
    tracing::info!(sync = %request.id, user = %user, connections = active.len(), "Sync requested.");
    Ok(progress(ctx, request, false).await?)
}

/// How `request` is going, per connection and overall.
pub async fn progress(
    ctx: &Environment,
    request: SyncRequestRecord,
    coalesced: bool,
) -> Result<RequestProgress, StoreError> {
    let store = &ctx.store;
    let mut connections = Vec::new();
    for &id in &request.connections {
        let record = store.connection(id).await?;
        let mut runs = store.runs_since(id, request.created_at).await?;
        let succeeded = runs.iter().rposition(|r| r.outcome == "succeeded");
        // A run unfinished once the connection's sync lease lapsed was abandoned
        // (its worker died; a live one renews the lease): it is not running.
        let leased = record
            .sync_lease_until
            .is_some_and(|until| until > Utc::now());
        let running = runs.iter().position(|r| r.finished_at.is_none() && leased);
        let (state, run) = if let Some(i) = succeeded {
            (RequestState::Succeeded, Some(runs.swap_remove(i)))
        } else if let Some(i) = running {
            (RequestState::Running, Some(runs.swap_remove(i)))
        } else if record.status != ConnectionStatus::Active {
            (RequestState::Skipped, runs.pop())
        } else if let Some(run) = runs.pop() {
            (RequestState::Failed, Some(run))
        } else {
            (RequestState::Queued, None)
        };
        connections.push(ConnectionProgress {
            connection_id: id,
            institution: record.institution_id,
            state,
            run,
        });
    }
    let count = |s: RequestState| connections.iter().filter(|c| c.state == s).count();
    let state = if connections.is_empty() {
        RequestState::Skipped
    } else if count(RequestState::Queued) == connections.len() {
        RequestState::Queued
    } else if count(RequestState::Queued) + count(RequestState::Running) > 0 {
        RequestState::Running
    } else if count(RequestState::Succeeded) == connections.len() {
        RequestState::Succeeded
    } else if count(RequestState::Succeeded) > 0 {
        RequestState::Partial
    } else if count(RequestState::Failed) > 0 {
        RequestState::Failed
    } else {
        RequestState::Skipped
    };
    Ok(RequestProgress {
        request,
        state,
        coalesced,
        connections,
    })
}
