//! Erasure on request: a tenant (`DELETE /v1/users/{user_id}`) or an admin
//! (`DELETE /admin/tenants/{tenant_id}/users/{user_id}`) asks for one of the
//! tenant's users to be erased, and is answered `202` with the erasure, whose
//! status they then read. The work is [`crate::sync::erasure`]'s.

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};

use super::auth::{Admin, Tenant};
use super::error::ErrorBody;
use super::extract::{Json, Path};
use super::read::user_id;
use super::tenants::tenant;
use super::{ApiError, ApiState};
use crate::domain::ErasureId;
use crate::store::{ErasureRecord, Scope};
use crate::sync::erasure::{self, ErasureError};

pub(super) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v1/users/{user_id}", delete(erase_user))
        .route("/v1/erasures/{erasure_id}", get(show))
        .route(
            "/admin/tenants/{tenant_id}/users/{user_id}",
            delete(admin_erase_user),
        )
        .route("/admin/erasures/{erasure_id}", get(admin_show))
}

fn accepted(record: ErasureRecord, location: String) -> Response {
    let mut response = (StatusCode::ACCEPTED, Json(record)).into_response();
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

fn erasure_error(error: ErasureError) -> ApiError {
    match error {
        ErasureError::Store(crate::store::StoreError::NotFound(_)) => {
            ApiError::not_found("no such user: nothing of theirs is kept (or it was erased)")
        }
        ErasureError::Store(e) => e.into(),
        other => ApiError::internal(other),
    }
}

fn erasure_id(raw: &str) -> Result<ErasureId, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::not_found(format!("no erasure `{raw}`")))
}

/// Erases one of your users: every grant revoked at its institution, every
/// record of the user deleted (accounts, holdings, transactions and their notes,
/// quarantined records, institutions' events, runs, sync requests, link sessions,
/// webhook payloads, cached views). Answers `202` at once with the erasure (also at
/// `Location`); read its `status` until `done`. Asking again while it runs returns
/// the same erasure; once it is done, the user is not found. Only a keyed
/// pseudonym of the user id is kept, in the audit trail.
#[utoipa::path(
    delete, path = "/v1/users/{user_id}", tag = "connections",
    params(("user_id" = String, Path, description = "The tenant's own id for the user")),
    responses(
        (status = 202, body = ErasureRecord), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 429, body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub(super) async fn erase_user(
    State(state): State<ApiState>,
    tenant: Tenant,
    Path(raw_user): Path<String>,
) -> Result<Response, ApiError> {
    tenant.require(Scope::Sync)?;
    let user = user_id(&raw_user)?;
    let record = erasure::request(
        &state.env,
        tenant.tenant.id,
        &user,
        tenant.audit("user.erasure_requested"),
    )
    .await
    .map_err(erasure_error)?;
    let location = format!("/v1/erasures/{}", record.id);
    Ok(accepted(record, location))
}

/// One of your erasures.
#[utoipa::path(
    get, path = "/v1/erasures/{erasure_id}", tag = "connections",
    params(("erasure_id" = String, Path)),
    responses(
        (status = 200, body = ErasureRecord), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 429, body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub(super) async fn show(
    State(state): State<ApiState>,
    tenant: Tenant,
    Path(raw): Path<String>,
) -> Result<Json<ErasureRecord>, ApiError> {
    tenant.require(Scope::Read)?;
    let id = erasure_id(&raw)?;
    state
        .env
        .store
        .erasure(Some(tenant.tenant.id), id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no erasure `{raw}`")))
}

/// Erases a tenant's user, as `DELETE /v1/users/{user_id}` does for the tenant.
#[utoipa::path(
    delete, path = "/admin/tenants/{tenant_id}/users/{user_id}", tag = "admin",
    params(("tenant_id" = String, Path), ("user_id" = String, Path)),
    responses(
        (status = 202, body = ErasureRecord), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
    ),
    security(("admin" = ["admin"]))
)]
pub(super) async fn admin_erase_user(
    State(state): State<ApiState>,
    admin: Admin,
    Path((tenant_id, raw_user)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let tenant = tenant(&state, &tenant_id).await?;
    let user = user_id(&raw_user)?;
    let record = erasure::request(&state.env, tenant.id, &user, admin.audit())
        .await
        .map_err(erasure_error)?;
    let location = format!("/admin/erasures/{}", record.id);
    Ok(accepted(record, location))
}

/// One erasure, of any tenant.
#[utoipa::path(
    get, path = "/admin/erasures/{erasure_id}", tag = "admin",
    params(("erasure_id" = String, Path)),
    responses(
        (status = 200, body = ErasureRecord), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
    ),
    security(("admin" = ["admin"]))
)]
pub(super) async fn admin_show(
    State(state): State<ApiState>,
    _: Admin,
    Path(raw): Path<String>,
) -> Result<Json<ErasureRecord>, ApiError> {
    let id = erasure_id(&raw)?;
    state
        .env
        .store
        .erasure(None, id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no erasure `{raw}`")))
}
