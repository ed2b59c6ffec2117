//! On-demand syncs: `POST /v1/users/{user_id}/sync` asks for fresh data for every
//! active connection of a user, and `GET /v1/syncs/{id}` says how it went.
//! Within `server.sync_request_interval_secs` of a user's last request, an
//! unfinished request is returned again rather than queued twice, and a finished
//! one answers 429. A job already waiting for a connection serves a new request
//! too (the queue holds one waiting sync per connection).

use axum::Router;
use axum::extract::State;
use axum::http::header::LOCATION;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::auth::Tenant;
use super::error::ErrorBody;
use super::extract::{Json, Path};
use super::read::user_id;
use super::{ApiError, ApiState};
use crate::domain::ConnectionStatus;
use crate::store::{Scope, SyncRequestRecord};
use crate::sync::{SYNC_LEASE, SyncConnection};

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v1/users/{user_id}/sync", post(request_sync))
        .route("/v1/syncs/{sync_id}", get(get_sync))
}

/// Where a sync request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(super) enum SyncState {
    /// Waiting for a worker.
    Queued,
    Running,
    /// Every connection synced; reads now return the new data.
    Succeeded,
    /// Some connections synced, others failed.
    Partial,
    /// No connection synced; failed ones are retried by the schedule.
    Failed,
    /// The connection is not active (it needs relinking, or was disconnected).
    Skipped,
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct SyncStatus {
    id: String,
    user_id: String,
    status: SyncState,
    requested_at: DateTime<Utc>,
    /// Whether this answer is an earlier, still unfinished request of the same user.
    coalesced: bool,
    connections: Vec<ConnectionSync>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct ConnectionSync {
    connection_id: String,
    institution: String,
    status: SyncState,
    started_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
    added: Option<i32>,
    modified: Option<i32>,
    removed: Option<i32>,
    unchanged: Option<i32>,
    /// Records set aside: refused by the connector (kept in quarantine, see
    /// `GET /admin/quarantine`) or belonging to an account that was.
    quarantined: Option<i32>,
}

/// Requests a fresh sync of every active connection of the user. Answers 202 with
/// the sync's id and status; poll `GET /v1/syncs/{id}` (also in `Location`).
#[utoipa::path(
    post, path = "/v1/users/{user_id}/sync", tag = "syncs",
    params(("user_id" = String, Path, description = "The tenant's own id for the user")),
    responses(
        (status = 202, body = SyncStatus, headers(("location" = String))),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 429, body = ErrorBody, headers(("retry-after" = u64))),
    ),
    security(("api_key" = []))
)]
pub(super) async fn request_sync(
    State(state): State<ApiState>,
    tenant: Tenant,
    Path(user_id): Path<String>,
) -> Result<Response, ApiError> {
    tenant.require(Scope::Sync)?;
    let user = self::user_id(&user_id)?;
    let store = &state.sync.store;
    let connections = store
        .user_connections(tenant.tenant.id, &user)
        .await
        .map_err(ApiError::internal)?;
    if connections.is_empty() {
        return Err(ApiError::not_found(format!(
            "no user `{user}` with a linked institution"
        )));
    }
    if let Some(previous) = store
        .latest_sync_request(tenant.tenant.id, &user)
        .await
        .map_err(ApiError::internal)?
    {
        let age = Utc::now() - previous.created_at;
        let interval = chrono::Duration::seconds(
            i64::try_from(state.sync_request_interval.as_secs()).unwrap_or(i64::MAX),
        );
        if age < interval {
            let status = status(&state, &previous, true).await?;
            if !status.status.is_final() {
                return Ok(accepted(status));
            }
            let wait = (interval - age).num_seconds().max(1);
            return Err(ApiError::rate_limited(
                format!(
                    "this user was synced moments ago; ask again in {wait} s (the data is in the read endpoints)"
                ),
                u64::try_from(wait).unwrap_or(1),
            ));
        }
    }
    let active: Vec<_> = connections
        .iter()
        .filter(|c| c.status == ConnectionStatus::Active)
        .map(|c| c.id)
        .collect();
    let request = store
        .create_sync_request(tenant.tenant.id, &user, &active)
        .await
        .map_err(ApiError::internal)?;
    for &connection_id in &active {
        // A sync already waiting for this connection serves the request too: the
        // request's progress is read from runs that start after it.
        state
            .sync
            .queue
            .enqueue(SyncConnection {
                connection_id,
                idempotency_key: format!("api:{}:{connection_id}", request.id),
            })
            .await
            .map_err(ApiError::internal)?;
    }
    tracing::info!(sync = %request.id, user = %user, connections = active.len(), "Sync requested.");
    Ok(accepted(status(&state, &request, false).await?))
}

fn accepted(status: SyncStatus) -> Response {
    let location = format!("/v1/syncs/{}", status.id);
    let mut response = (StatusCode::ACCEPTED, Json(status)).into_response();
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(LOCATION, value);
    }
    response
}

/// How a requested sync is going, per connection.
#[utoipa::path(
    get, path = "/v1/syncs/{sync_id}", tag = "syncs",
    params(("sync_id" = String, Path, description = "The id `POST /v1/users/{user_id}/sync` returned")),
    responses(
        (status = 200, body = SyncStatus),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 429, body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub(super) async fn get_sync(
    State(state): State<ApiState>,
    tenant: Tenant,
    Path(sync_id): Path<String>,
) -> Result<Json<SyncStatus>, ApiError> {
    tenant.require(Scope::Read)?;
    let request = state
        .sync
        .store
        .sync_request(tenant.tenant.id, &sync_id)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::not_found(format!("no sync `{sync_id}`")))?;
    let status = status(&state, &request, false).await?;
    if status.status.is_final() {
        // The worker published the new view before finishing; drop this process's
        // copy too, so a read right after this answer cannot see the old one.
        let key = crate::portfolio::cache_key(request.tenant_id, &request.user_id);
        state.sync.cache.forget_locally(&key).await;
    }
    Ok(Json(status))
}

impl SyncState {
    fn is_final(self) -> bool {
        !matches!(self, Self::Queued | Self::Running)
    }
}

async fn status(
    state: &ApiState,
    request: &SyncRequestRecord,
    coalesced: bool,
) -> Result<SyncStatus, ApiError> {
    let store = &state.sync.store;
    let mut connections = Vec::new();
    for &id in &request.connections {
        let record = store.connection(id).await.map_err(ApiError::internal)?;
        let runs = store
            .runs_since(id, request.created_at)
            .await
            .map_err(ApiError::internal)?;
        let succeeded = runs.iter().rev().find(|r| r.outcome == "succeeded");
        // A run unfinished after the sync lease ran out was abandoned (its worker
        // died): it no longer counts as running.
        let running = runs
            .iter()
            .find(|r| r.finished_at.is_none() && r.started_at + SYNC_LEASE > Utc::now());
        let (status, run) = if let Some(run) = succeeded {
            (SyncState::Succeeded, Some(run))
        } else if let Some(run) = running {
            (SyncState::Running, Some(run))
        } else if record.status != ConnectionStatus::Active {
            (SyncState::Skipped, runs.last())
        } else if let Some(run) = runs.last() {
            (SyncState::Failed, Some(run))
        } else {
            (SyncState::Queued, None)
        };
        connections.push(ConnectionSync {
            connection_id: id.to_string(),
            institution: record.institution_id,
            status,
            started_at: run.map(|r| r.started_at),
            finished_at: run.and_then(|r| r.finished_at),
            added: run.map(|r| r.added),
            modified: run.map(|r| r.modified),
            removed: run.map(|r| r.removed),
            unchanged: run.map(|r| r.unchanged),
            quarantined: run.map(|r| r.quarantined),
        });
    }
    let count = |s: SyncState| connections.iter().filter(|c| c.status == s).count();
    let overall = if connections.is_empty() {
        SyncState::Skipped
    } else if count(SyncState::Queued) == connections.len() {
        SyncState::Queued
    } else if count(SyncState::Queued) + count(SyncState::Running) > 0 {
        SyncState::Running
    } else if count(SyncState::Succeeded) == connections.len() {
        SyncState::Succeeded
    } else if count(SyncState::Succeeded) > 0 {
        SyncState::Partial
    } else if count(SyncState::Failed) > 0 {
        SyncState::Failed
    } else {
        SyncState::Skipped
    };
    Ok(SyncStatus {
        id: request.id.clone(),
        user_id: request.user_id.to_string(),
        status: overall,
        requested_at: request.created_at,
        coalesced,
        connections,
    })
}
