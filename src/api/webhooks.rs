//! Outgoing webhooks over HTTP: tenants register, list and remove their endpoints
//! and read their delivery log (`/v1/webhooks`); admins read every tenant's log
//! (`/admin/webhooks/deliveries`). Signing and delivery live in `crate::webhooks`.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{delete, get};
use chrono::{DateTime, Utc};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::auth::{Admin, Operate, Tenant};
use super::error::ErrorBody;
use super::extract::{Json, Path, Query};
use super::paging::{self, PageQuery};
use super::{ApiError, ApiState};
use crate::domain::{DeliveryStatus, TenantId, WebhookEndpointId, WebhookEvent};
use crate::store::{DeliveryQuery, Scope, WebhookDelivery, WebhookEndpoint};
use crate::webhooks::outbound::{self, WebhookError};

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v1/webhooks", get(list_endpoints).post(create_endpoint))
        .route("/v1/webhooks/{webhook_id}", delete(delete_endpoint))
        .route(
            "/v1/webhooks/{webhook_id}/deliveries",
            get(endpoint_deliveries),
        )
        .route("/admin/webhooks/deliveries", get(admin_deliveries))
}

const DEFAULT_PAGE: u32 = 50;
const MAX_PAGE: u32 = 500;

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct EndpointView {
    id: String,
    url: String,
    events: Vec<WebhookEvent>,
    created_at: DateTime<Utc>,
    disabled_at: Option<DateTime<Utc>>,
}

impl From<WebhookEndpoint> for EndpointView {
    fn from(e: WebhookEndpoint) -> Self {
        Self {
            id: e.id.to_string(),
            url: e.url,
            events: e.events,
            created_at: e.created_at,
            disabled_at: e.disabled_at,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct NewEndpoint {
    /// Where deliveries are POSTed (http or https).
    url: String,
    events: Vec<WebhookEvent>,
}

/// An endpoint as registered: the only time its signing secret is shown.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct RegisteredEndpoint {
    #[serde(flatten)]
    endpoint: EndpointView,
    /// Verifies `finsync-signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "t.body">`.
    secret: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct DeliveryView {
    id: String,
    endpoint_id: String,
    tenant_id: String,
    event: WebhookEvent,
    status: DeliveryStatus,
    attempts: u32,
    last_status_code: Option<u16>,
    last_error: Option<String>,
    created_at: DateTime<Utc>,
    last_attempt_at: Option<DateTime<Utc>>,
    delivered_at: Option<DateTime<Utc>>,
    /// When a pending delivery is tried next.
    next_attempt_at: Option<DateTime<Utc>>,
}

impl From<WebhookDelivery> for DeliveryView {
    fn from(d: WebhookDelivery) -> Self {
        Self {
            next_attempt_at: (d.status == DeliveryStatus::Pending).then_some(d.next_attempt_at),
            id: d.id.to_string(),
            endpoint_id: d.endpoint_id.to_string(),
            tenant_id: d.tenant_id.to_string(),
            event: d.event,
            status: d.status,
            attempts: d.attempts,
            last_status_code: d.last_status_code,
            last_error: d.last_error,
            created_at: d.created_at,
            last_attempt_at: d.last_attempt_at,
            delivered_at: d.delivered_at,
        }
    }
}

fn endpoint_id(raw: &str) -> Result<WebhookEndpointId, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::invalid(format!("`{raw}` is not a webhook id")))
}

/// Registers an endpoint for some events. Deliveries are signed with the returned
/// secret and retried with backoff until the endpoint answers 2xx.
#[utoipa::path(
    post, path = "/v1/webhooks", tag = "webhooks", request_body = NewEndpoint,
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes the request safe to retry: the same key and request get the first answer again for 24 hours (`Idempotent-Replayed: true`); another request with the key is 422 `IDEMPOTENCY_KEY_REUSED`; while the first runs, 409 with `Retry-After`. 1 to 255 visible ASCII characters, e.g. a UUID")),
    responses(
        (status = 201, body = RegisteredEndpoint), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 422, body = ErrorBody),
        (status = 429, body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub(super) async fn create_endpoint(
    State(state): State<ApiState>,
    tenant: Tenant,
    Json(body): Json<NewEndpoint>,
) -> Result<(StatusCode, Json<RegisteredEndpoint>), ApiError> {
    tenant.require(Scope::Sync)?;
    let registered = outbound::register_endpoint(
        &state.env.store,
        &state.linker.vault,
        tenant.tenant.id,
        &body.url,
        &body.events,
        state.allow_private_webhooks,
    )
    .await
    .map_err(|e| match e {
        WebhookError::InvalidUrl(_) | WebhookError::NoEvents => ApiError::invalid(e.to_string()),
        other => ApiError::internal(other),
    })?;
    Ok((
        StatusCode::CREATED,
        Json(RegisteredEndpoint {
            secret: registered.secret.expose_secret().to_owned(),
            endpoint: registered.endpoint.into(),
        }),
    ))
}

/// A page of a tenant's endpoints, oldest first.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct EndpointsResponse {
    webhooks: Vec<EndpointView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_cursor: Option<String>,
}

/// Where a page of endpoints resumes.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
struct EndpointPosition {
    created_at: DateTime<Utc>,
    id: String,
}

impl EndpointPosition {
    fn of(endpoint: &WebhookEndpoint) -> Self {
        Self {
            created_at: endpoint.created_at,
            id: endpoint.id.to_string(),
        }
    }
}

/// The tenant's endpoints, removed ones included, oldest first; never their
/// secrets.
#[utoipa::path(
    get, path = "/v1/webhooks", tag = "webhooks",
    params(PageQuery),
    responses(
        (status = 200, body = EndpointsResponse), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 429, body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub(super) async fn list_endpoints(
    State(state): State<ApiState>,
    tenant: Tenant,
    Query(query): Query<PageQuery>,
) -> Result<Json<EndpointsResponse>, ApiError> {
    tenant.require(Scope::Read)?;
    // A tenant has a handful of endpoints, read in order and paged here.
    let endpoints = state.env.store.webhook_endpoints(tenant.tenant.id).await?;
    let (endpoints, next_cursor) = paging::page_of(endpoints, &query, EndpointPosition::of)?;
    Ok(Json(EndpointsResponse {
        webhooks: endpoints.into_iter().map(Into::into).collect(),
        next_cursor,
    }))
}

/// Removes an endpoint: nothing more is sent to it, and its pending deliveries end
/// as failed.
#[utoipa::path(
    delete, path = "/v1/webhooks/{webhook_id}", tag = "webhooks",
    params(("webhook_id" = String, Path)),
    responses(
        (status = 204), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 429, body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub(super) async fn delete_endpoint(
    State(state): State<ApiState>,
    tenant: Tenant,
    Path(webhook_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    tenant.require(Scope::Sync)?;
    let id = endpoint_id(&webhook_id)?;
    if state
        .env
        .store
        .disable_webhook_endpoint(tenant.tenant.id, id)
        .await?
    {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!(
            "no active webhook `{webhook_id}`"
        )))
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct DeliveryPage {
    /// Newest first; 1 to 500, 50 by default.
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// A page of deliveries, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct DeliveriesResponse {
    deliveries: Vec<DeliveryView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_cursor: Option<String>,
}

/// The page of deliveries `query` asks for, `limit` of them.
async fn deliveries_page(
    state: &ApiState,
    mut query: DeliveryQuery,
    cursor: Option<&str>,
    limit: u32,
) -> Result<DeliveriesResponse, ApiError> {
    query.before = cursor.map(paging::position).transpose()?;
    query.limit = u64::from(limit) + 1;
    let rows = state.env.store.webhook_deliveries(query).await?;
    let (rows, next_cursor) = paging::page(rows, limit, WebhookDelivery::position);
    Ok(DeliveriesResponse {
        deliveries: rows.into_iter().map(Into::into).collect(),
        next_cursor,
    })
}

/// An endpoint's delivery log, newest first.
#[utoipa::path(
    get, path = "/v1/webhooks/{webhook_id}/deliveries", tag = "webhooks",
    params(("webhook_id" = String, Path), DeliveryPage),
    responses(
        (status = 200, body = DeliveriesResponse), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 429, body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub(super) async fn endpoint_deliveries(
    State(state): State<ApiState>,
    tenant: Tenant,
    Path(webhook_id): Path<String>,
    Query(page): Query<DeliveryPage>,
) -> Result<Json<DeliveriesResponse>, ApiError> {
    tenant.require(Scope::Read)?;
    let id = endpoint_id(&webhook_id)?;
    let limit = paging::limit(page.limit, DEFAULT_PAGE, MAX_PAGE)?;
    let store = &state.env.store;
    let owned = store
        .webhook_endpoints(tenant.tenant.id)
        .await?
        .iter()
        .any(|e| e.id == id);
    if !owned {
        return Err(ApiError::not_found(format!("no webhook `{webhook_id}`")));
    }
    let query = DeliveryQuery {
        tenant: Some(tenant.tenant.id),
        endpoint: Some(id),
        before: None,
        limit: 0,
    };
    Ok(Json(
        deliveries_page(&state, query, page.cursor.as_deref(), limit).await?,
    ))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct AdminDeliveryQuery {
    /// Only this tenant's deliveries.
    tenant_id: Option<String>,
    /// Only this endpoint's deliveries.
    webhook_id: Option<String>,
    /// Newest first; 1 to 500, 50 by default.
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// Every tenant's webhook deliveries, newest first: what was sent, how often, and
/// how the receiver answered.
#[utoipa::path(
    get, path = "/admin/webhooks/deliveries", tag = "admin",
    params(AdminDeliveryQuery),
    responses(
        (status = 200, body = DeliveriesResponse), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
    ),
    security(("admin" = ["admin", "operator"]))
)]
pub(super) async fn admin_deliveries(
    State(state): State<ApiState>,
    _: Admin<Operate>,
    Query(query): Query<AdminDeliveryQuery>,
) -> Result<Json<DeliveriesResponse>, ApiError> {
    let tenant = query
        .tenant_id
        .as_deref()
        .map(|raw| {
            raw.parse::<TenantId>()
                .map_err(|_| ApiError::invalid(format!("`{raw}` is not a tenant id")))
        })
        .transpose()?;
    let endpoint = query.webhook_id.as_deref().map(endpoint_id).transpose()?;
    let limit = paging::limit(query.limit, DEFAULT_PAGE, MAX_PAGE)?;
    let filter = DeliveryQuery {
        tenant,
        endpoint,
        before: None,
        limit: 0,
    };
    Ok(Json(
        deliveries_page(&state, filter, query.cursor.as_deref(), limit).await?,
    ))
}
