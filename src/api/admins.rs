//! The admins themselves: issuing a named credential with a role (shown once),
//! listing them, revoking one. `admin` role only; `finsync admins create` issues
//! the first one from a host with the database's credentials.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{delete, get};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::Admin;
use super::error::ErrorBody;
use super::extract::{Json, Path, Query};
use super::paging::{self, PageQuery};
use super::{ApiError, ApiState, ErrorCode};
use crate::store::{AdminName, AdminRecord, Role, StoreError};

pub(super) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/admin/admins", get(list_admins).post(create_admin))
        .route("/admin/admins/{admin_name}", delete(revoke_admin))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct NewAdmin {
    /// 1 to 64 of `a-z 0-9 . _ -`, starting with a letter or digit; never reused.
    name: String,
    role: Role,
}

/// A new admin and its credential, shown this once.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct CreatedAdmin {
    admin: AdminRecord,
    /// `fsa_…`: send as `Authorization: Bearer`. Only its hash is kept.
    credential: String,
}

/// Issues a named admin credential with a role.
#[utoipa::path(
    post, path = "/admin/admins", tag = "admin", request_body = NewAdmin,
    responses(
        (status = 201, body = CreatedAdmin), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 409, body = ErrorBody),
    ),
    security(("admin" = ["admin"]))
)]
pub(super) async fn create_admin(
    State(state): State<ApiState>,
    admin: Admin,
    Json(body): Json<NewAdmin>,
) -> Result<(StatusCode, Json<CreatedAdmin>), ApiError> {
    let name = AdminName::parse(&body.name).map_err(ApiError::invalid)?;
    let (record, credential) = state
        .env
        .store
        .create_admin(&name, body.role, admin.actor.as_str(), admin.audit())
        .await
        .map_err(|e| match e {
            StoreError::Conflict(message) => ApiError::new(ErrorCode::Conflict, message),
            other => ApiError::from(other),
        })?;
    tracing::info!(admin = %record.name, role = %record.role, by = %admin.actor, "Admin credential issued.");
    Ok((
        StatusCode::CREATED,
        Json(CreatedAdmin {
            admin: record,
            credential: credential.0.expose_secret().to_owned(),
        }),
    ))
}

/// A page of admin credentials, by name.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct AdminsPage {
    admins: Vec<AdminRecord>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_cursor: Option<String>,
}

/// Every admin credential, revoked ones included; never a credential itself.
#[utoipa::path(
    get, path = "/admin/admins", tag = "admin", params(PageQuery),
    responses(
        (status = 200, body = AdminsPage), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
    ),
    security(("admin" = ["admin"]))
)]
pub(super) async fn list_admins(
    State(state): State<ApiState>,
    _: Admin,
    Query(query): Query<PageQuery>,
) -> Result<Json<AdminsPage>, ApiError> {
    let admins = state.env.store.admins().await?;
    let (admins, next_cursor) = paging::page_of(admins, &query, |a| a.name.clone())?;
    Ok(Json(AdminsPage {
        admins,
        next_cursor,
    }))
}

/// Revokes an admin credential at once, everywhere. The name stays taken.
#[utoipa::path(
    delete, path = "/admin/admins/{admin_name}", tag = "admin",
    params(("admin_name" = String, Path)),
    responses(
        (status = 200, body = AdminRecord), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
    ),
    security(("admin" = ["admin"]))
)]
pub(super) async fn revoke_admin(
    State(state): State<ApiState>,
    admin: Admin,
    Path(name): Path<String>,
) -> Result<Json<AdminRecord>, ApiError> {
    let revoked = state
        .env
        .store
        .revoke_admin(&name, admin.audit())
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no live admin `{name}`")))?;
    tracing::info!(admin = %revoked.name, by = %admin.actor, "Admin credential revoked.");
    Ok(Json(revoked))
}
