//! A user's consent history: every grant, renewal, expiry and revocation at each
//! institution, for the tenant (`GET /v1/users/{user_id}/consents`) and for admins
//! and operators (`GET /admin/tenants/{tenant_id}/users/{user_id}/consents`).

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::auth::{Admin, Operate, Tenant};
use super::error::ErrorBody;
use super::extract::{Json, Path, Query};
use super::paging::{self, PageQuery};
use super::read::user_id;
use super::tenants::tenant;
use super::{ApiError, ApiState};
use crate::domain::{TenantId, UserId};
use crate::store::{ConsentEvent, Scope};

pub(super) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v1/users/{user_id}/consents", get(list))
        .route(
            "/admin/tenants/{tenant_id}/users/{user_id}/consents",
            get(admin_list),
        )
}

/// A page of a user's consent history, oldest first.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct ConsentsPage {
    consents: Vec<ConsentEvent>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_cursor: Option<String>,
}

async fn page(
    state: &ApiState,
    tenant: TenantId,
    user: &UserId,
    query: &PageQuery,
) -> Result<ConsentsPage, ApiError> {
    let limit = paging::limit(query.limit, 100, 500)?;
    let after: Option<(DateTime<Utc>, String)> =
        query.cursor.as_deref().map(paging::position).transpose()?;
    let events = state
        .env
        .store
        .consent_history(tenant, user, after, u64::from(limit) + 1)
        .await?;
    if events.is_empty() && query.cursor.is_none() {
        return Err(ApiError::not_found(format!(
            "no user `{user}` with a consent history"
        )));
    }
    let (consents, next_cursor) = paging::page(events, limit, ConsentEvent::position);
    Ok(ConsentsPage {
        consents,
        next_cursor,
    })
}

/// The user's consent history at every institution, oldest first: each grant
/// (with its scopes and expiry), renewal, expiry and revocation, and who caused
/// it (`user`, `tenant`, `admin`, `institution`, `system`). A user never linked
/// (or erased) is not found.
#[utoipa::path(
    get, path = "/v1/users/{user_id}/consents", tag = "connections",
    params(("user_id" = String, Path, description = "The tenant's own id for the user"), PageQuery),
    responses(
        (status = 200, body = ConsentsPage), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 429, body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub(super) async fn list(
    State(state): State<ApiState>,
    tenant: Tenant,
    Path(raw_user): Path<String>,
    Query(query): Query<PageQuery>,
) -> Result<Json<ConsentsPage>, ApiError> {
    tenant.require(Scope::Read)?;
    let user = user_id(&raw_user)?;
    Ok(Json(page(&state, tenant.tenant.id, &user, &query).await?))
}

/// A tenant's user's consent history, as the tenant reads it.
#[utoipa::path(
    get, path = "/admin/tenants/{tenant_id}/users/{user_id}/consents", tag = "admin",
    params(("tenant_id" = String, Path), ("user_id" = String, Path), PageQuery),
    responses(
        (status = 200, body = ConsentsPage), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
    ),
    security(("admin" = ["admin", "operator"]))
)]
pub(super) async fn admin_list(
    State(state): State<ApiState>,
    _: Admin<Operate>,
    Path((tenant_id, raw_user)): Path<(String, String)>,
    Query(query): Query<PageQuery>,
) -> Result<Json<ConsentsPage>, ApiError> {
    let tenant = tenant(&state, &tenant_id).await?;
    let user = user_id(&raw_user)?;
    Ok(Json(page(&state, tenant.id, &user, &query).await?))
}
