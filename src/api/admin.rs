//! The admin API: linking users to institutions, a connection's health (status,
//! reason, consent, token expiry, a relink URL when the user must link again),
//! and disconnecting ([`crate::sync::Environment::disconnect`]).

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::{Admin, Operate};
use super::error::ErrorBody;
use super::extract::{Json, Path};
use super::{ApiError, ApiState, ErrorCode};
use chrono::{DateTime, Utc};

use crate::connectors::validate::SYNC_INTERVAL_SECS;
use crate::domain::{ConnectionId, ConnectionStatus, UserId};
use crate::store::{ConnectionRecord, StoreError};
use crate::tokens::{LinkError, TokenError};

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/admin/connections", post(create_connection))
        .route(
            "/admin/connections/{connection_id}",
            get(get_connection)
                .patch(update_connection)
                .delete(delete_connection),
        )
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct NewConnection {
    /// Tenant name.
    tenant: String,
    user: String,
    institution: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct LinkResponse {
    connection_id: String,
    /// Send the user here; the institution redirects back to `/oauth/callback`.
    authorize_url: String,
}

/// Starts linking a tenant's user to an institution.
#[utoipa::path(
    post, path = "/admin/connections", tag = "admin", request_body = NewConnection,
    responses(
        (status = 201, body = LinkResponse), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
    ),
    security(("admin" = ["admin", "operator"]))
)]
pub(super) async fn create_connection(
    State(state): State<ApiState>,
    admin: Admin<Operate>,
    Json(body): Json<NewConnection>,
) -> Result<(StatusCode, Json<LinkResponse>), ApiError> {
    let user = UserId::parse(&body.user)
        .map_err(|e| ApiError::new(ErrorCode::InvalidRequest, e.to_string()))?;
    let tenant = state
        .env
        .store
        .tenant_by_name(&body.tenant)
        .await?
        .ok_or_else(|| {
            ApiError::new(ErrorCode::NotFound, format!("no tenant `{}`", body.tenant))
        })?;
    let start = state
        .linker
        .start(tenant.id, &user, &body.institution, admin.audit())
        .await
        .map_err(|e| match e {
            LinkError::Registry(crate::connectors::RegistryError::Unknown(id)) => ApiError::new(
                ErrorCode::UnknownInstitution,
                format!("no institution `{id}`"),
            ),
            LinkError::NotOffered(id) => ApiError::new(
                ErrorCode::Forbidden,
                format!("institution `{id}` is not one this tenant offers its users"),
            ),
            other => ApiError::internal(other),
        })?;
    Ok((
        StatusCode::CREATED,
        Json(LinkResponse {
            connection_id: start.connection_id.to_string(),
            authorize_url: start.authorize_url.to_string(),
        }),
    ))
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct ConnectionHealth {
    id: String,
    tenant_id: String,
    user_id: String,
    institution: String,
    status: ConnectionStatus,
    /// Why the connection is not healthy, as a stable code and a message.
    reason: Option<String>,
    last_failure_at: Option<DateTime<Utc>>,
    last_synced_at: Option<DateTime<Utc>>,
    next_sync_at: Option<DateTime<Utc>>,
    /// Seconds between scheduled syncs, as in force for this connection.
    sync_interval_secs: i64,
    /// Where that interval comes from: `connection`, `connector` or `default`.
    sync_interval_source: &'static str,
    access_token_expires_at: Option<DateTime<Utc>>,
    refresh_due_at: Option<DateTime<Utc>>,
    scopes: Option<String>,
    consent: ConsentView,
    /// Where to send the user to link again; present when re-authentication is needed.
    relink_url: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct ConsentView {
    granted_at: Option<DateTime<Utc>>,
    expires_at: Option<DateTime<Utc>>,
    revoked_at: Option<DateTime<Utc>>,
    /// The consent ends within `tokens.consent_warning_days`.
    expiring_soon: bool,
}

pub(super) fn connection_id(raw: &str) -> Result<ConnectionId, ApiError> {
    raw.parse().map_err(|_| {
        ApiError::new(
            ErrorCode::InvalidRequest,
            format!("`{raw}` is not a connection id"),
        )
    })
}

async fn load(state: &ApiState, id: ConnectionId) -> Result<ConnectionRecord, ApiError> {
    match state.env.store.connection(id).await {
        Ok(c) => Ok(c),
        Err(StoreError::NotFound(_)) => Err(ApiError::new(
            ErrorCode::NotFound,
            format!("no connection {id}"),
        )),
        Err(e) => Err(ApiError::internal(e)),
    }
}

/// A connection's health, for admins.
#[utoipa::path(
    get, path = "/admin/connections/{connection_id}", tag = "admin",
    params(("connection_id" = String, Path)),
    responses(
        (status = 200, body = ConnectionHealth), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
    ),
    security(("admin" = ["admin", "operator"]))
)]
pub(super) async fn get_connection(
    State(state): State<ApiState>,
    _: Admin<Operate>,
    Path(id): Path<String>,
) -> Result<Json<ConnectionHealth>, ApiError> {
    let c = load(&state, connection_id(&id)?).await?;
    Ok(Json(health(&state, c).await?))
}

async fn health(state: &ApiState, c: ConnectionRecord) -> Result<ConnectionHealth, ApiError> {
    let relink_url = super::read::relink_url(state, &c).await?;
    let sync_interval_secs = state.env.interval_for(&c).num_seconds();
    let sync_interval_source = state.env.interval_source(&c);
    let warning = chrono::Duration::days(i64::from(state.consent_warning_days));
    Ok(ConnectionHealth {
        id: c.id.to_string(),
        tenant_id: c.tenant_id.to_string(),
        user_id: c.user_id.to_string(),
        institution: c.institution_id,
        status: c.status,
        reason: c.last_failure_reason,
        last_failure_at: c.last_failure_at,
        last_synced_at: c.last_synced_at,
        next_sync_at: c.next_sync_at,
        sync_interval_secs,
        sync_interval_source,
        access_token_expires_at: c.tokens.access_token_expires_at,
        refresh_due_at: c.tokens.refresh_due_at,
        scopes: c.scopes,
        consent: ConsentView {
            granted_at: c.consent.granted_at,
            expires_at: c.consent.expires_at,
            revoked_at: c.consent.revoked_at,
            expiring_soon: c.consent.ends_within(warning, Utc::now()),
        },
        relink_url,
    })
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ConnectionUpdate {
    /// Seconds between scheduled syncs of this connection (60 to 2 592 000); `null`
    /// goes back to the connector's interval, else the default.
    #[schema(minimum = 60, maximum = 2_592_000)]
    sync_interval_secs: Option<u64>,
}

/// Changes a connection's schedule. The next sync keeps its time; the one after
/// follows the new interval.
#[utoipa::path(
    patch, path = "/admin/connections/{connection_id}", tag = "admin",
    params(("connection_id" = String, Path)), request_body = ConnectionUpdate,
    responses(
        (status = 200, body = ConnectionHealth), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
    ),
    security(("admin" = ["admin", "operator"]))
)]
pub(super) async fn update_connection(
    State(state): State<ApiState>,
    admin: Admin<Operate>,
    Path(id): Path<String>,
    Json(body): Json<ConnectionUpdate>,
) -> Result<Json<ConnectionHealth>, ApiError> {
    let id = connection_id(&id)?;
    if let Some(secs) = body.sync_interval_secs
        && !SYNC_INTERVAL_SECS.contains(&secs)
    {
        return Err(ApiError::invalid(format!(
            "sync_interval_secs must be {} to {} (a minute to 30 days)",
            SYNC_INTERVAL_SECS.start(),
            SYNC_INTERVAL_SECS.end()
        )));
    }
    load(&state, id).await?;
    state
        .env
        .store
        .set_sync_interval(id, body.sync_interval_secs, admin.audit())
        .await?;
    let c = load(&state, id).await?;
    Ok(Json(health(&state, c).await?))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct Disconnected {
    id: String,
    status: ConnectionStatus,
    /// Whether the institution confirmed the revocation (RFC 7009).
    revoked_at_institution: bool,
    /// Why it did not, when it did not.
    institution_note: Option<String>,
}

/// Disconnects: revokes the grant at the institution when it supports it, then
/// deletes the tokens and the synced records and marks the connection revoked (the
/// row stays as the consent history). A failed revocation at the institution is
/// reported, and the local deletion still happens.
#[utoipa::path(
    delete, path = "/admin/connections/{connection_id}", tag = "admin",
    params(("connection_id" = String, Path)),
    responses(
        (status = 200, body = Disconnected), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
    ),
    security(("admin" = ["admin", "operator"]))
)]
pub(super) async fn delete_connection(
    State(state): State<ApiState>,
    admin: Admin<Operate>,
    Path(id): Path<String>,
) -> Result<Json<Disconnected>, ApiError> {
    let id = connection_id(&id)?;
    load(&state, id).await?;
    let done = state
        .env
        .disconnect(id, admin.audit())
        .await
        .map_err(disconnect_error)?;
    Ok(Json(done.into()))
}

/// A disconnect that could not finish.
pub(super) fn disconnect_error(error: TokenError) -> ApiError {
    match error {
        TokenError::Busy => {
            ApiError::internal("the connection's tokens stayed locked by a refresh")
        }
        other => ApiError::internal(other),
    }
}

impl From<crate::tokens::disconnect::Disconnected> for Disconnected {
    fn from(done: crate::tokens::disconnect::Disconnected) -> Self {
        Self {
            id: done.previous.id.to_string(),
            status: ConnectionStatus::Revoked,
            revoked_at_institution: done.revoked_at_institution,
            institution_note: done.institution_note.map(str::to_owned),
        }
    }
}
