//! A tenant managing its users' connections itself: disconnecting one
//! (`DELETE /v1/users/{user_id}/connections/{connection_id}`), which revokes the
//! grant at the institution and deletes its data, as the admin API does
//! ([`crate::sync::Env::disconnect`]). A connection of another user or tenant is
//! simply not found.

use axum::Router;
use axum::extract::State;
use axum::routing::delete;

use super::admin::{Disconnected, connection_id, disconnect_error};
use super::auth::Tenant;
use super::error::ErrorBody;
use super::extract::{Json, Path};
use super::read::user_id;
use super::{ApiError, ApiState};
use crate::store::Scope;

pub fn routes() -> Router<ApiState> {
    Router::new().route(
        "/v1/users/{user_id}/connections/{connection_id}",
        delete(disconnect),
    )
}

/// Disconnects one of the user's connections: the grant is revoked at the
/// institution when it supports it (the answer says whether it confirmed), then
/// the tokens and every synced record are deleted and the connection is `revoked`.
/// Reads show it revoked at once. Disconnecting it again changes nothing (and says
/// nothing was revoked at the institution).
#[utoipa::path(
    delete, path = "/v1/users/{user_id}/connections/{connection_id}", tag = "connections",
    params(
        ("user_id" = String, Path, description = "The tenant's own id for the user"),
        ("connection_id" = String, Path, description = "The connection's `id`"),
    ),
    responses(
        (status = 200, body = Disconnected), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 429, body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub(super) async fn disconnect(
    State(state): State<ApiState>,
    tenant: Tenant,
    Path((raw_user, raw_connection)): Path<(String, String)>,
) -> Result<Json<Disconnected>, ApiError> {
    tenant.require(Scope::Sync)?;
    let user = user_id(&raw_user)?;
    let id = connection_id(&raw_connection)?;
    let theirs = state
        .env
        .store
        .user_connections(tenant.tenant.id, &user)
        .await?
        .iter()
        .any(|c| c.id == id);
    if !theirs {
        return Err(ApiError::not_found(format!(
            "no connection `{id}` of user `{user}`"
        )));
    }
    let audit = tenant
        .audit("connection.disconnect")
        .detail(serde_json::json!({ "tenant": tenant.tenant.id }));
    let done = state
        .env
        .disconnect(id, audit)
        .await
        .map_err(disconnect_error)?;
    Ok(Json(done.into()))
}
