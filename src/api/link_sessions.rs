//! Link sessions for apps: `POST /v1/link-sessions` opens one for a user (to link
//! an institution, or to repair a connection), `GET /v1/link-sessions/{id}` tells
//! how it stands. The use cases are [`crate::tokens::sessions`]'; the page the user
//! goes through is [`super::link_page`].

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::admin::connection_id;
use super::auth::Tenant;
use super::error::ErrorBody;
use super::extract::{Json, Path};
use super::read::user_id;
use super::{ApiError, ApiState, ErrorCode};
use crate::connectors::RegistryError;
use crate::domain::{LinkSessionId, LinkSessionStatus};
use crate::store::{LinkSessionRecord, Scope};
use crate::tokens::{LinkError, SessionError, SessionRequest};

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v1/link-sessions", post(create))
        .route("/v1/link-sessions/{link_session_id}", get(show))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct NewLinkSession {
    /// The tenant's own id for the user.
    user_id: String,
    /// The institution to link, skipping the picker; absent: the user picks.
    institution: Option<String>,
    /// Where the user returns: exactly one of the tenant's registered redirect URIs.
    redirect_uri: String,
    /// Offer only institutions that serve all of these (`accounts`, `holdings`,
    /// `transactions`).
    #[serde(default)]
    products: Vec<String>,
    /// A connection of this user to repair (link again in place, keeping its data).
    connection_id: Option<String>,
}

/// A link session as the app sees it.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct LinkSessionView {
    id: String,
    user_id: String,
    /// Named at creation, or chosen by the user once they went to the institution.
    institution: Option<String>,
    products: Vec<String>,
    redirect_uri: String,
    status: LinkSessionStatus,
    /// The connection linked or repaired (when `linked` or `repaired`), being
    /// linked (while `open`), or to repair.
    connection_id: Option<String>,
    /// Whether the session was opened to repair `connection_id`.
    repair: bool,
    /// What stopped the last attempt: `CONSENT_DENIED`, `INSTITUTION_ERROR`,
    /// `NOT_OFFERED`, `SESSION_EXPIRED` or `INTERNAL`.
    error: Option<String>,
    created_at: DateTime<Utc>,
    /// The session must be finished by then.
    expires_at: DateTime<Utc>,
    /// When the user opened the link.
    opened_at: Option<DateTime<Utc>>,
    completed_at: Option<DateTime<Utc>>,
}

impl LinkSessionView {
    fn of(session: &LinkSessionRecord, now: DateTime<Utc>) -> Self {
        let status = session.status_at(now);
        Self {
            id: session.id.to_string(),
            user_id: session.user_id.to_string(),
            institution: session.institution_id.clone(),
            products: session.products.clone(),
            redirect_uri: session.redirect_uri.clone(),
            connection_id: session
                .connection_id
                .or(session.repair_connection_id)
                .map(|c| c.to_string()),
            repair: session.repair_connection_id.is_some(),
            error: match status {
                LinkSessionStatus::Expired => {
                    Some(crate::tokens::sessions::codes::SESSION_EXPIRED.into())
                }
                _ => session.error.clone(),
            },
            status,
            created_at: session.created_at,
            expires_at: session.expires_at,
            opened_at: session.opened_at,
            completed_at: session.completed_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct CreatedLinkSession {
    #[serde(flatten)]
    session: LinkSessionView,
    /// Send the user's browser here. It works once, in one browser, until
    /// `expires_at`; treat it as a secret until then.
    link_url: String,
}

/// Opens a link session for one of the tenant's users. Send the user to
/// `link_url`; they pick an institution (unless `institution` names one), consent,
/// authorize at the institution and come back to `redirect_uri` with
/// `link_session_id`, `status` and, on success, `connection_id`. A
/// `connection.linked` webhook follows. Honours `Idempotency-Key`.
#[utoipa::path(
    post, path = "/v1/link-sessions", tag = "link sessions", request_body = NewLinkSession,
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes a retry safe: the same key and body get the first answer again")),
    responses(
        (status = 201, body = CreatedLinkSession), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 422, body = ErrorBody), (status = 429, body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub(super) async fn create(
    State(state): State<ApiState>,
    tenant: Tenant,
    Json(body): Json<NewLinkSession>,
) -> Result<(StatusCode, Json<CreatedLinkSession>), ApiError> {
    tenant.require(Scope::Sync)?;
    let request = SessionRequest {
        user: user_id(&body.user_id)?,
        institution: body.institution,
        redirect_uri: body.redirect_uri,
        products: body.products,
        repair: body
            .connection_id
            .as_deref()
            .map(connection_id)
            .transpose()?,
    };
    let created = state
        .linker
        .create_session(tenant.tenant.id, request)
        .await
        .map_err(session_error)?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedLinkSession {
            session: LinkSessionView::of(&created.session, Utc::now()),
            link_url: created.link_url.to_string(),
        }),
    ))
}

/// How a session of the calling tenant stands: `pending` (link not opened yet),
/// `open` (the user is at it), or how it ended: `linked`, `repaired`, `denied`,
/// `failed`, `expired`.
#[utoipa::path(
    get, path = "/v1/link-sessions/{link_session_id}", tag = "link sessions",
    params(("link_session_id" = String, Path, description = "The session's `id`")),
    responses(
        (status = 200, body = LinkSessionView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 429, body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub(super) async fn show(
    State(state): State<ApiState>,
    tenant: Tenant,
    Path(raw): Path<String>,
) -> Result<Json<LinkSessionView>, ApiError> {
    tenant.require(Scope::Read)?;
    let not_found = || ApiError::not_found(format!("no link session `{raw}`"));
    let id: LinkSessionId = raw.parse().map_err(|_| not_found())?;
    let session = state
        .env
        .store
        .link_session(id)
        .await?
        .filter(|s| s.tenant_id == tenant.tenant.id)
        .ok_or_else(not_found)?;
    Ok(Json(LinkSessionView::of(&session, Utc::now())))
}

fn session_error(error: SessionError) -> ApiError {
    match error {
        SessionError::RedirectNotRegistered(_)
        | SessionError::UnknownProduct(_)
        | SessionError::ProductNotOffered { .. }
        | SessionError::OtherInstitution { .. }
        | SessionError::Revoked(_) => ApiError::invalid(error.to_string()),
        SessionError::NoSuchConnection(_) => ApiError::not_found(error.to_string()),
        SessionError::Link(LinkError::Registry(RegistryError::Unknown(id))) => ApiError::new(
            ErrorCode::UnknownInstitution,
            format!("no institution `{id}` is in service"),
        ),
        SessionError::Link(LinkError::NotOffered(_)) => {
            ApiError::new(ErrorCode::Forbidden, error.to_string())
        }
        other => ApiError::internal(other),
    }
}
