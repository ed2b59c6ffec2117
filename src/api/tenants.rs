//! Tenant management for admins: tenants, their API keys (issued with scopes,
//! listed by prefix, revoked one by one) and their users (listed, or removed with
//! every connection disconnected and its data deleted).

use std::collections::BTreeMap;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{delete, get};
use chrono::{DateTime, Utc};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::Admin;
use super::error::ErrorBody;
use super::extract::{Json, Path, Query};
use super::paging::{self, PageQuery};
use super::{ApiError, ApiState, ErrorCode};
use crate::domain::{ConnectionStatus, TenantId};
use crate::store::{ApiKey, ApiKeyRecord, Scope, TenantRecord};
use crate::tokens::sessions::check_redirect_uri;

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/admin/tenants", get(list_tenants).post(create_tenant))
        .route("/admin/tenants/{tenant_id}", get(get_tenant))
        .route(
            "/admin/tenants/{tenant_id}/keys",
            get(list_keys).post(create_key),
        )
        .route(
            "/admin/tenants/{tenant_id}/keys/{key_id}",
            delete(revoke_key),
        )
        .route(
            "/admin/tenants/{tenant_id}/institutions",
            get(get_institutions).put(set_institutions),
        )
        .route(
            "/admin/tenants/{tenant_id}/redirect-uris",
            get(get_redirect_uris).put(set_redirect_uris),
        )
        .route("/admin/tenants/{tenant_id}/users", get(list_users))
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct TenantView {
    id: String,
    name: String,
    created_at: DateTime<Utc>,
}

impl From<TenantRecord> for TenantView {
    fn from(t: TenantRecord) -> Self {
        Self {
            id: t.id.to_string(),
            name: t.name,
            created_at: t.created_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct KeyView {
    id: String,
    /// Identifies the key (`fsk_<prefix>_…`) without revealing it.
    prefix: String,
    scopes: Vec<Scope>,
    label: Option<String>,
    created_at: DateTime<Utc>,
    revoked_at: Option<DateTime<Utc>>,
}

impl From<ApiKeyRecord> for KeyView {
    fn from(k: ApiKeyRecord) -> Self {
        Self {
            id: k.id,
            prefix: k.prefix,
            scopes: k.scopes,
            label: k.label,
            created_at: k.created_at,
            revoked_at: k.revoked_at,
        }
    }
}

/// A key as issued: the only time the key itself is shown.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct IssuedKey {
    #[serde(flatten)]
    key: KeyView,
    /// The API key. Store it now: finsync keeps only its hash.
    secret: String,
}

fn issued(record: ApiKeyRecord, key: &ApiKey) -> IssuedKey {
    IssuedKey {
        key: record.into(),
        secret: key.0.expose_secret().to_owned(),
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct NewTenant {
    /// 1 to 64 letters, digits, `-`, `_` or `.`; unique.
    name: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct CreatedTenant {
    tenant: TenantView,
    /// A first key, scoped `read` and `sync`.
    api_key: IssuedKey,
}

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// Creates a tenant with a first API key.
#[utoipa::path(
    post, path = "/admin/tenants", tag = "admin", request_body = NewTenant,
    responses(
        (status = 201, body = CreatedTenant), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 409, body = ErrorBody),
    ),
    security(("admin" = ["admin"]))
)]
pub(super) async fn create_tenant(
    State(state): State<ApiState>,
    admin: Admin,
    Json(body): Json<NewTenant>,
) -> Result<(StatusCode, Json<CreatedTenant>), ApiError> {
    if !valid_name(&body.name) {
        return Err(ApiError::invalid(
            "a tenant name is 1 to 64 letters, digits, '-', '_' or '.'",
        ));
    }
    let store = &state.env.store;
    if store.tenant_by_name(&body.name).await?.is_some() {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            format!("a tenant named `{}` exists", body.name),
        ));
    }
    let (tenant, record, key) = store
        .create_tenant_with_key(&body.name, admin.audit())
        .await?;
    tracing::info!(tenant = %tenant.id, name = %tenant.name, "Tenant created.");
    Ok((
        StatusCode::CREATED,
        Json(CreatedTenant {
            tenant: tenant.into(),
            api_key: issued(record, &key),
        }),
    ))
}

/// Every tenant.
#[utoipa::path(
    get, path = "/admin/tenants", tag = "admin", params(PageQuery),
    responses(
        (status = 200, body = TenantsPage), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
    ),
    security(("admin" = ["admin"]))
)]
pub(super) async fn list_tenants(
    State(state): State<ApiState>,
    _: Admin,
    Query(query): Query<PageQuery>,
) -> Result<Json<TenantsPage>, ApiError> {
    let mut tenants = state.env.store.tenants().await?;
    tenants.sort_by(|a, b| a.name.cmp(&b.name));
    let (tenants, next_cursor) = paging::page_of(tenants, &query, |t| t.name.clone())?;
    Ok(Json(TenantsPage {
        tenants: tenants.into_iter().map(Into::into).collect(),
        next_cursor,
    }))
}

/// A page of tenants, by name.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct TenantsPage {
    tenants: Vec<TenantView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_cursor: Option<String>,
}

pub(super) async fn tenant(state: &ApiState, raw: &str) -> Result<TenantRecord, ApiError> {
    let id: TenantId = raw
        .parse()
        .map_err(|_| ApiError::invalid(format!("`{raw}` is not a tenant id")))?;
    state
        .env
        .store
        .tenant(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no tenant `{raw}`")))
}

/// One tenant.
#[utoipa::path(
    get, path = "/admin/tenants/{tenant_id}", tag = "admin",
    params(("tenant_id" = String, Path)),
    responses(
        (status = 200, body = TenantView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
    ),
    security(("admin" = ["admin"]))
)]
pub(super) async fn get_tenant(
    State(state): State<ApiState>,
    _: Admin,
    Path(tenant_id): Path<String>,
) -> Result<Json<TenantView>, ApiError> {
    Ok(Json(tenant(&state, &tenant_id).await?.into()))
}

/// The institutions a tenant may offer its users.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct OfferedInstitutions {
    /// Institution ids; `null` offers every institution in service (the default).
    /// Required, so that a body without it cannot lift a limit by accident.
    #[serde(deserialize_with = "Option::deserialize")]
    #[schema(required = true)]
    institutions: Option<Vec<String>>,
}

/// The institutions the tenant may offer its users.
#[utoipa::path(
    get, path = "/admin/tenants/{tenant_id}/institutions", tag = "admin",
    params(("tenant_id" = String, Path)),
    responses(
        (status = 200, body = OfferedInstitutions), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
    ),
    security(("admin" = ["admin"]))
)]
pub(super) async fn get_institutions(
    State(state): State<ApiState>,
    _: Admin,
    Path(tenant_id): Path<String>,
) -> Result<Json<OfferedInstitutions>, ApiError> {
    let tenant = tenant(&state, &tenant_id).await?;
    Ok(Json(OfferedInstitutions {
        institutions: state.env.store.tenant_institutions(tenant.id).await?,
    }))
}

/// Limits the institutions the tenant may offer: `GET /v1/institutions` lists only
/// these, and links to others are refused (connections already linked stay).
/// `null` lifts the limit.
#[utoipa::path(
    put, path = "/admin/tenants/{tenant_id}/institutions", tag = "admin",
    params(("tenant_id" = String, Path)), request_body = OfferedInstitutions,
    responses(
        (status = 200, body = OfferedInstitutions), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
    ),
    security(("admin" = ["admin"]))
)]
pub(super) async fn set_institutions(
    State(state): State<ApiState>,
    admin: Admin,
    Path(tenant_id): Path<String>,
    Json(body): Json<OfferedInstitutions>,
) -> Result<Json<OfferedInstitutions>, ApiError> {
    let tenant = tenant(&state, &tenant_id).await?;
    if let Some(ids) = &body.institutions {
        let registry = state.catalog.registry();
        let unknown: Vec<&str> = ids
            .iter()
            .filter(|id| registry.get(id).is_err())
            .map(String::as_str)
            .collect();
        if !unknown.is_empty() {
            return Err(ApiError::invalid(format!(
                "no institution in service is called {}",
                unknown.join(", ")
            )));
        }
    }
    state
        .env
        .store
        .set_tenant_institutions(tenant.id, body.institutions.as_deref(), admin.audit())
        .await?;
    Ok(Json(OfferedInstitutions {
        institutions: state.env.store.tenant_institutions(tenant.id).await?,
    }))
}

/// Where the tenant's link sessions may send users back to.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RedirectUris {
    /// Absolute https URLs (plain http only on 127.0.0.1, [::1] or localhost),
    /// without fragment or credentials, matched exactly; at most 20. The first is
    /// where repair links (`relink_url`) return.
    #[schema(example = json!(["https://app.example.com/finsync/return"]))]
    redirect_uris: Vec<String>,
}

/// At most this many redirect URIs per tenant.
const MAX_REDIRECT_URIS: usize = 20;

/// The URLs the tenant's link sessions may return users to.
#[utoipa::path(
    get, path = "/admin/tenants/{tenant_id}/redirect-uris", tag = "admin",
    params(("tenant_id" = String, Path)),
    responses(
        (status = 200, body = RedirectUris), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
    ),
    security(("admin" = ["admin"]))
)]
pub(super) async fn get_redirect_uris(
    State(state): State<ApiState>,
    _: Admin,
    Path(tenant_id): Path<String>,
) -> Result<Json<RedirectUris>, ApiError> {
    let tenant = tenant(&state, &tenant_id).await?;
    Ok(Json(RedirectUris {
        redirect_uris: state.env.store.tenant_redirect_uris(tenant.id).await?,
    }))
}

/// Replaces the URLs the tenant's link sessions may return users to. A session
/// names one of them exactly, so a user (and nothing else) only ever goes back to
/// an address the tenant registered here. Sessions already made keep theirs.
#[utoipa::path(
    put, path = "/admin/tenants/{tenant_id}/redirect-uris", tag = "admin",
    params(("tenant_id" = String, Path)), request_body = RedirectUris,
    responses(
        (status = 200, body = RedirectUris), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
    ),
    security(("admin" = ["admin"]))
)]
pub(super) async fn set_redirect_uris(
    State(state): State<ApiState>,
    admin: Admin,
    Path(tenant_id): Path<String>,
    Json(body): Json<RedirectUris>,
) -> Result<Json<RedirectUris>, ApiError> {
    let tenant = tenant(&state, &tenant_id).await?;
    if body.redirect_uris.len() > MAX_REDIRECT_URIS {
        return Err(ApiError::invalid(format!(
            "at most {MAX_REDIRECT_URIS} redirect URIs"
        )));
    }
    let mut uris: Vec<String> = Vec::new();
    for uri in body.redirect_uris {
        check_redirect_uri(&uri).map_err(ApiError::invalid)?;
        if !uris.contains(&uri) {
            uris.push(uri);
        }
    }
    state
        .env
        .store
        .set_tenant_redirect_uris(tenant.id, &uris, admin.audit())
        .await?;
    Ok(Json(RedirectUris {
        redirect_uris: state.env.store.tenant_redirect_uris(tenant.id).await?,
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct NewKey {
    /// What the key may do; at least one.
    scopes: Vec<Scope>,
    /// A note for people, e.g. where the key is used.
    label: Option<String>,
}

/// Issues a new API key for the tenant.
#[utoipa::path(
    post, path = "/admin/tenants/{tenant_id}/keys", tag = "admin", request_body = NewKey,
    params(("tenant_id" = String, Path)),
    responses(
        (status = 201, body = IssuedKey), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
    ),
    security(("admin" = ["admin"]))
)]
pub(super) async fn create_key(
    State(state): State<ApiState>,
    admin: Admin,
    Path(tenant_id): Path<String>,
    Json(body): Json<NewKey>,
) -> Result<(StatusCode, Json<IssuedKey>), ApiError> {
    let tenant = tenant(&state, &tenant_id).await?;
    if body.scopes.is_empty() {
        return Err(ApiError::invalid("a key needs at least one scope"));
    }
    if body.label.as_ref().is_some_and(|l| l.chars().count() > 200) {
        return Err(ApiError::invalid("a label is at most 200 characters"));
    }
    let (record, key) = state
        .env
        .store
        .issue_api_key(
            tenant.id,
            &body.scopes,
            body.label.as_deref(),
            admin.audit(),
        )
        .await?;
    tracing::info!(tenant = %tenant.id, key = %record.prefix, "API key issued.");
    Ok((StatusCode::CREATED, Json(issued(record, &key))))
}

/// The tenant's API keys, revoked ones included; never the keys themselves.
#[utoipa::path(
    get, path = "/admin/tenants/{tenant_id}/keys", tag = "admin",
    params(("tenant_id" = String, Path), PageQuery),
    responses(
        (status = 200, body = KeysPage), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
    ),
    security(("admin" = ["admin"]))
)]
pub(super) async fn list_keys(
    State(state): State<ApiState>,
    _: Admin,
    Path(tenant_id): Path<String>,
    Query(query): Query<PageQuery>,
) -> Result<Json<KeysPage>, ApiError> {
    let tenant = tenant(&state, &tenant_id).await?;
    let mut keys = state.env.store.api_keys(tenant.id).await?;
    keys.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
    let (keys, next_cursor) = paging::page_of(keys, &query, |k| (k.created_at, k.id.clone()))?;
    Ok(Json(KeysPage {
        keys: keys.into_iter().map(Into::into).collect(),
        next_cursor,
    }))
}

/// A page of a tenant's keys, oldest first.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct KeysPage {
    keys: Vec<KeyView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_cursor: Option<String>,
}

/// Revokes one key at once; requests with it are refused from now on.
#[utoipa::path(
    delete, path = "/admin/tenants/{tenant_id}/keys/{key_id}", tag = "admin",
    params(("tenant_id" = String, Path), ("key_id" = String, Path)),
    responses(
        (status = 204), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
    ),
    security(("admin" = ["admin"]))
)]
pub(super) async fn revoke_key(
    State(state): State<ApiState>,
    admin: Admin,
    Path((tenant_id, key_id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let tenant = tenant(&state, &tenant_id).await?;
    if let Some(prefix) = state
        .env
        .store
        .revoke_api_key(tenant.id, &key_id, admin.audit())
        .await?
    {
        state.keys.revoked(&state.env.cache, &prefix).await;
        tracing::info!(tenant = %tenant.id, key = %key_id, "API key revoked.");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!("no live key `{key_id}`")))
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct UserView {
    user_id: String,
    connections: Vec<UserConnection>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct UserConnection {
    id: String,
    institution: String,
    status: ConnectionStatus,
    last_synced_at: Option<DateTime<Utc>>,
}

/// The tenant's users and their connections.
#[utoipa::path(
    get, path = "/admin/tenants/{tenant_id}/users", tag = "admin",
    params(("tenant_id" = String, Path), PageQuery),
    responses(
        (status = 200, body = UsersPage), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
    ),
    security(("admin" = ["admin"]))
)]
pub(super) async fn list_users(
    State(state): State<ApiState>,
    _: Admin,
    Path(tenant_id): Path<String>,
    Query(query): Query<PageQuery>,
) -> Result<Json<UsersPage>, ApiError> {
    let tenant = tenant(&state, &tenant_id).await?;
    let connections = state.env.store.tenant_connections(tenant.id).await?;
    let mut users: BTreeMap<String, Vec<UserConnection>> = BTreeMap::new();
    for c in connections {
        users
            .entry(c.user_id.to_string())
            .or_default()
            .push(UserConnection {
                id: c.id.to_string(),
                institution: c.institution_id,
                status: c.status,
                last_synced_at: c.last_synced_at,
            });
    }
    let users: Vec<UserView> = users
        .into_iter()
        .map(|(user_id, connections)| UserView {
            user_id,
            connections,
        })
        .collect();
    let (users, next_cursor) = paging::page_of(users, &query, |u| u.user_id.clone())?;
    Ok(Json(UsersPage { users, next_cursor }))
}

/// A page of a tenant's users, by id.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct UsersPage {
    users: Vec<UserView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_cursor: Option<String>,
}
