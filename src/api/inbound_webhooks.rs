//! Webhooks from institutions: `POST /webhooks/{institution}`, where each
//! connector's `[webhooks]` decides which requests are genuine and
//! `sync::inbound` what an event does; and the admin listing of the events
//! received, `GET /admin/institution-webhooks`.

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::auth::{Admin, Operate};
use super::error::ErrorBody;
use super::extract::{Json, Path, Query};
use super::{ApiError, ApiState, ErrorCode, paging};
use crate::store::{EventFilter, EventPosition, EventStatus, InstitutionEvent};
use crate::webhooks::inbound;

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/webhooks/{institution}", post(receive))
        .route("/admin/institution-webhooks", get(list_events))
}

/// What finsync did with a delivery.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct ReceiptView {
    /// finsync's id for the event.
    id: String,
    /// The institution's id for the event.
    event_id: String,
    /// `queued`, `coalesced` (its syncs were already queued), `unmatched` (no
    /// connection holds its accounts), `ignored` (its type asks for no sync) or
    /// `received` (stored; acted on by a repeat or a replay).
    status: String,
    /// True when this event was delivered before and acted on (or is being acted on
    /// by another delivery): nothing more was done.
    duplicate: bool,
    /// Connections it asked to sync.
    connections: usize,
}

/// Receives an event an institution sent. The request must carry the signature
/// and send time its connector's `[webhooks]` describes; the event is stored once
/// (a repeat answers 200 and does nothing) and the connections holding the
/// accounts it names are synced, one sync per connection for all events of the
/// same coalescing window.
#[utoipa::path(
    post, path = "/webhooks/{institution}", tag = "institution webhooks",
    params(("institution" = String, Path, description = "The connector id, e.g. `meridian`")),
    request_body(content = serde_json::Value, content_type = "application/json",
        description = "The institution's event, as its connector describes it"),
    responses(
        (status = 202, description = "Stored and acted on", body = ReceiptView),
        (status = 200, description = "Delivered before; nothing more was done", body = ReceiptView),
        (status = 400, description = "Signed, but not an event the connector can read", body = ErrorBody),
        (status = 401, description = "Signature or send time missing or wrong", body = ErrorBody),
        (status = 404, description = "No such institution, or it sends no webhooks", body = ErrorBody),
        (status = 413, body = ErrorBody),
        (status = 500, description = "Not acted on; the institution should deliver it again (the repeat acts on it)", body = ErrorBody),
    )
)]
pub(super) async fn receive(
    State(state): State<ApiState>,
    Path(institution): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let registry = &state.env.registry;
    let connector = registry.get(&institution).map_err(|_| {
        ApiError::new(
            ErrorCode::UnknownInstitution,
            format!("no institution `{institution}`"),
        )
    })?;
    let Some(webhooks) = &connector.webhooks else {
        return Err(ApiError::not_found(format!(
            "institution `{institution}` sends no webhooks: its connector declares no [webhooks]"
        )));
    };
    let limit = state.inbound_webhook_max_bytes;
    let body = axum::body::to_bytes(body, limit).await.map_err(|_| {
        ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("the body is larger than {limit} bytes"),
        )
    })?;
    // The error names the variable, never a value; the institution retries a 500.
    let secret = registry
        .secret(&connector, &webhooks.secret_env)
        .map_err(ApiError::internal)?;
    let notice = webhooks
        .verify(&secret, &headers, &body, Utc::now())
        .map_err(|e| {
            tracing::warn!(institution = %institution, error = %e, "Institution webhook refused.");
            metrics::counter!("finsync_institution_webhooks_total", "institution" => institution.clone(), "outcome" => "refused")
                .increment(1);
            if e.is_unauthenticated() {
                ApiError::new(ErrorCode::InvalidSignature, e.to_string())
            } else {
                ApiError::invalid(e.to_string())
            }
        })?;
    // `verify` parsed it as JSON, so it is UTF-8.
    let text = String::from_utf8_lossy(&body);
    let window = state.inbound_webhook_window;
    let receipt = inbound::receive(&state.env, &connector, &notice, &text, window)
        .await
        .map_err(ApiError::internal)?;
    let status = if receipt.acted {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    let view = ReceiptView {
        id: receipt.event.id,
        event_id: receipt.event.event_id,
        status: receipt.event.status.to_string(),
        duplicate: !receipt.acted,
        connections: receipt.event.connections.len(),
    };
    Ok((status, Json(view)).into_response())
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct EventsQuery {
    /// Only this institution's events.
    institution: Option<String>,
    /// Only events in this status: received, queued, coalesced, unmatched or ignored.
    status: Option<String>,
    /// Only events received at or after this time (RFC 3339).
    since: Option<DateTime<Utc>>,
    /// Events per page, newest first; 1 to 500, 100 by default.
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// A page of events, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct EventsPage {
    events: Vec<EventView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_cursor: Option<String>,
}

/// One event an institution sent.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct EventView {
    id: String,
    institution: String,
    event_id: String,
    event_type: Option<String>,
    sent_at: DateTime<Utc>,
    received_at: DateTime<Utc>,
    status: String,
    /// Connections it asked to sync.
    connections: Vec<String>,
    /// Why it synced nothing, when it did not.
    detail: Option<String>,
    processed_at: Option<DateTime<Utc>>,
    /// How many times the institution delivered it.
    deliveries: i32,
    /// How many times an operator replayed it (`finsync webhooks replay`).
    replays: i32,
}

impl From<InstitutionEvent> for EventView {
    fn from(e: InstitutionEvent) -> Self {
        Self {
            id: e.id,
            institution: e.institution_id,
            event_id: e.event_id,
            event_type: e.event_type,
            sent_at: e.sent_at,
            received_at: e.received_at,
            status: e.status.to_string(),
            connections: e.connections.iter().map(ToString::to_string).collect(),
            detail: e.detail,
            processed_at: e.processed_at,
            deliveries: e.deliveries,
            replays: e.replays,
        }
    }
}

/// Events institutions sent, newest first and paged, without their bodies.
#[utoipa::path(
    get, path = "/admin/institution-webhooks", tag = "admin",
    params(EventsQuery),
    responses(
        (status = 200, body = EventsPage), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
    ),
    security(("admin" = ["admin", "operator"]))
)]
pub(super) async fn list_events(
    State(state): State<ApiState>,
    _: Admin<Operate>,
    Query(query): Query<EventsQuery>,
) -> Result<Json<EventsPage>, ApiError> {
    let limit = paging::limit(query.limit, 100, 500)?;
    let after: Option<EventPosition> = query.cursor.as_deref().map(paging::position).transpose()?;
    let statuses = match query.status.as_deref() {
        Some(text) => vec![text.parse::<EventStatus>().map_err(ApiError::invalid)?],
        None => Vec::new(),
    };
    let filter = EventFilter {
        institution: query.institution,
        statuses,
        since: query.since,
        event: None,
    };
    let events = state
        .env
        .store
        .institution_events(&filter, after.as_ref(), u64::from(limit) + 1)
        .await?;
    let (events, next_cursor) = paging::page(events, limit, InstitutionEvent::position);
    Ok(Json(EventsPage {
        events: events.into_iter().map(Into::into).collect(),
        next_cursor,
    }))
}
