//! On-demand syncs: `POST /v1/users/{user_id}/sync` asks for fresh data for every
//! active connection of a user ([`crate::sync::requests`]), and `GET /v1/syncs/{id}`
//! says how it went. Within `server.sync_request_interval_secs` of a user's last
//! request, an unfinished request is returned again and a finished one answers 429.

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
use crate::store::{Scope, StoreError, unread_accounts};
use crate::sync::requests::{self, RequestError, RequestProgress, RequestState};

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
    /// Whether the run re-read the whole history the institution offers (a first
    /// sync, or the periodic deep sync that finds what it deleted long ago).
    deep: Option<bool>,
    /// Accounts whose data the institution could not serve this time, though the
    /// others synced: what is stored of them stays as the last sync that read them
    /// left it, and the next sync tries again.
    accounts_unread: Vec<UnreadAccountView>,
}

/// One account whose data a sync could not read.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct UnreadAccountView {
    /// The account's `id`, as the portfolio shows it.
    account_id: String,
    /// What could not be read: `transactions`, `holdings`, or `details.<name>` (the
    /// account's balances and details).
    endpoint: String,
    /// A stable code (`INSTITUTION_UNAVAILABLE`, `INSTITUTION_ERROR`) and a message.
    reason: String,
}

/// Requests a fresh sync of every active connection of the user. Answers 202 with
/// the sync's id and status; poll `GET /v1/syncs/{id}` (also in `Location`).
#[utoipa::path(
    post, path = "/v1/users/{user_id}/sync", tag = "syncs",
    params(
        ("user_id" = String, Path, description = "The tenant's own id for the user"),
        ("Idempotency-Key" = Option<String>, Header, description = "Makes the request safe to retry: the same key and request get the first answer again for 24 hours (`Idempotent-Replayed: true`); another request with the key is 422 `IDEMPOTENCY_KEY_REUSED`; while the first runs, 409 with `Retry-After`. 1 to 255 visible ASCII characters, e.g. a UUID"),
    ),
    responses(
        (status = 202, body = SyncStatus, headers(("location" = String))),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 422, body = ErrorBody),
        (status = 429, body = ErrorBody, headers(("retry-after" = u64))),
    ),
    security(("api_key" = []))
)]
pub(super) async fn request_sync(
    State(state): State<ApiState>,
    tenant: Tenant,
    Path(user_id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    tenant.require(Scope::Sync)?;
    no_body_fields(&body)?;
    let user = self::user_id(&user_id)?;
    let progress = requests::request(
        &state.env,
        tenant.tenant.id,
        &user,
        state.sync_request_interval,
    )
    .await
    .map_err(|e| match e {
        RequestError::NoUser(_) => ApiError::not_found(e.to_string()),
        RequestError::TooSoon { wait_secs } => ApiError::rate_limited(e.to_string(), wait_secs),
        other => ApiError::internal(other),
    })?;
    Ok(accepted(progress.try_into()?))
}

/// The request takes no body: none, or an empty JSON object. Anything else is a
/// mistake the caller should hear about rather than a sync started regardless.
fn no_body_fields(body: &[u8]) -> Result<(), ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(());
    }
    match serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(body) {
        Ok(fields) if fields.is_empty() => Ok(()),
        Ok(fields) => Err(ApiError::invalid(format!(
            "this request takes no body fields; got {}",
            fields
                .keys()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ))),
        Err(e) => Err(ApiError::invalid(format!(
            "the body is not a JSON object (send none, or {{}}): {e}"
        ))),
    }
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
        .env
        .store
        .sync_request(tenant.tenant.id, &sync_id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no sync `{sync_id}`")))?;
    let progress = requests::progress(&state.env, request, false).await?;
    if progress.state.is_final() {
        // The worker published the new view before finishing; drop this process's
        // copy too, so a read right after this answer cannot see the old one.
        let key =
            crate::portfolio::cache_key(progress.request.tenant_id, &progress.request.user_id);
        state.env.cache.forget_locally(&key).await;
    }
    Ok(Json(progress.try_into()?))
}

impl From<RequestState> for SyncState {
    fn from(state: RequestState) -> Self {
        match state {
            RequestState::Queued => Self::Queued,
            RequestState::Running => Self::Running,
            RequestState::Succeeded => Self::Succeeded,
            RequestState::Partial => Self::Partial,
            RequestState::Failed => Self::Failed,
            RequestState::Skipped => Self::Skipped,
        }
    }
}

impl TryFrom<RequestProgress> for SyncStatus {
    type Error = StoreError;

    fn try_from(progress: RequestProgress) -> Result<Self, StoreError> {
        let connections = progress
            .connections
            .into_iter()
            .map(|c| {
                let run = c.run.as_ref();
                let unread = run.map(unread_accounts).transpose()?.unwrap_or_default();
                Ok(ConnectionSync {
                    connection_id: c.connection_id.to_string(),
                    institution: c.institution,
                    status: c.state.into(),
                    started_at: run.map(|r| r.started_at),
                    finished_at: run.and_then(|r| r.finished_at),
                    added: run.map(|r| r.added),
                    modified: run.map(|r| r.modified),
                    removed: run.map(|r| r.removed),
                    unchanged: run.map(|r| r.unchanged),
                    quarantined: run.map(|r| r.quarantined),
                    deep: run.map(|r| r.deep),
                    accounts_unread: unread
                        .into_iter()
                        .map(|u| UnreadAccountView {
                            account_id: u.account_id,
                            endpoint: u.endpoint,
                            reason: u.reason,
                        })
                        .collect(),
                })
            })
            .collect::<Result<_, StoreError>>()?;
        Ok(Self {
            id: progress.request.id,
            user_id: progress.request.user_id.to_string(),
            status: progress.state.into(),
            requested_at: progress.request.created_at,
            coalesced: progress.coalesced,
            connections,
        })
    }
}
