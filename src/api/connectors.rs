//! The admin API for connectors: which version of each connector is in service and
//! how its institution's connections are doing, every stored version with who
//! published it, and publishing a new version (validated first; a bad text changes
//! nothing).

use std::collections::BTreeMap;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::auth::{Admin, Operate};
use super::error::ErrorBody;
use super::extract::{Json, Path, Query};
use super::paging::{self, PageQuery};
use super::{ApiError, ApiState, ErrorCode};
use crate::catalog::CatalogError;
use crate::connectors::registry::Served;
use crate::resilience::BreakerView;
use crate::store::{ConnectorVersion, FleetBreaker, InstitutionHealth, Published};

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/admin/connectors", get(list_connectors))
        .route(
            "/admin/connectors/{connector_id}",
            get(get_connector).put(put_connector),
        )
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct ConnectorSummary {
    id: String,
    /// Absent when no version of this connector is in service (its file was refused).
    name: Option<String>,
    /// The version in service in the process that answered.
    version: Option<i64>,
    /// SHA-256 of the text in service (and of the profile it extends).
    hash: Option<String>,
    /// The shipped profile of a standard the connector extends (`fdx`), if any.
    profile: Option<String>,
    health: HealthView,
    /// The institution's circuit breakers across the fleet: how many workers
    /// reported lately, and how many see it open, half-open, degraded.
    fleet: FleetBreaker,
    /// The institution's circuit breaker in the process that answered; absent
    /// until that process has sent it a request (an API process of a fleet never
    /// does: see `fleet`).
    breaker: Option<BreakerView>,
    /// Whether the institution is in the adaptive mode's degraded state in the
    /// process that answered: half the concurrency, deferrable endpoints waiting.
    degraded: bool,
    /// Problems of the file in the connectors directory, when it was refused; the
    /// version in service stays until a valid one arrives.
    file_problems: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct HealthView {
    /// `ok`, `degraded` (some connections failing or needing the user), `down`
    /// (every connection failing), or `unused` (no connections).
    status: String,
    connections: u64,
    /// Connections by status.
    by_status: BTreeMap<String, u64>,
    /// Connections whose last sync failed.
    failing: u64,
    last_synced_at: Option<DateTime<Utc>>,
    last_failure_at: Option<DateTime<Utc>>,
}

impl From<InstitutionHealth> for HealthView {
    fn from(h: InstitutionHealth) -> Self {
        let needs_user = h.connections - h.by_status.get("active").copied().unwrap_or(0);
        let status = if h.connections == 0 {
            "unused"
        } else if h.failing == h.connections {
            "down"
        } else if h.failing > 0 || needs_user > 0 {
            "degraded"
        } else {
            "ok"
        };
        Self {
            status: status.to_owned(),
            connections: h.connections,
            by_status: h.by_status,
            failing: h.failing,
            last_synced_at: h.last_synced_at,
            last_failure_at: h.last_failure_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct VersionView {
    version: i64,
    hash: String,
    /// `file` or `api`.
    source: String,
    /// The file's path, or the admin who published it through the API
    /// (`admin:<name>`, `break-glass`), as the audit trail names them.
    actor: String,
    created_at: DateTime<Utc>,
}

impl From<&ConnectorVersion> for VersionView {
    fn from(v: &ConnectorVersion) -> Self {
        Self {
            version: v.version,
            hash: v.hash.clone(),
            source: v.source.clone(),
            actor: v.actor.clone(),
            created_at: v.created_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct ConnectorDetail {
    #[serde(flatten)]
    summary: ConnectorSummary,
    /// The connector file in service.
    content: Option<String>,
    /// Every stored version, newest first.
    versions: Vec<VersionView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct PublishResponse {
    id: String,
    /// Whether this text became a new version (false: it already was the latest).
    created: bool,
    #[serde(flatten)]
    version: VersionView,
}

/// Every institution's breakers as the workers that reported lately see them.
async fn fleet_breakers(state: &ApiState) -> Result<BTreeMap<String, FleetBreaker>, ApiError> {
    Ok(state
        .env
        .store
        .fleet_breakers(chrono::Utc::now() - state.breaker_window)
        .await?)
}

async fn summary(
    state: &ApiState,
    id: &str,
    served: Option<Served>,
    refused: Option<&crate::connectors::Problems>,
    fleet: FleetBreaker,
) -> Result<ConnectorSummary, ApiError> {
    let health = state.env.store.institution_health(id).await?;
    Ok(ConnectorSummary {
        id: id.to_owned(),
        name: served.as_ref().map(|s| s.connector.name.clone()),
        version: served.as_ref().map(|s| s.version),
        hash: served.as_ref().map(|s| s.connector.hash.clone()),
        profile: served.as_ref().and_then(|s| s.connector.profile.clone()),
        health: health.into(),
        fleet,
        breaker: state.env.engine.resilience().breaker(id),
        degraded: state.env.engine.resilience().is_degraded(id),
        file_problems: refused
            .map(|p| p.0.iter().map(ToString::to_string).collect())
            .unwrap_or_default(),
    })
}

/// Every connector: the version in service, its health, and refused files.
#[utoipa::path(
    get, path = "/admin/connectors", tag = "admin", params(PageQuery),
    responses(
        (status = 200, body = ConnectorsPage), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
    ),
    security(("admin" = ["admin", "operator"]))
)]
pub(super) async fn list_connectors(
    State(state): State<ApiState>,
    _: Admin<Operate>,
    Query(query): Query<PageQuery>,
) -> Result<Json<ConnectorsPage>, ApiError> {
    let registry = state.catalog.registry();
    let refused = registry.refused();
    let mut served: BTreeMap<String, Served> = registry
        .all()
        .into_iter()
        .map(|s| (s.connector.id.clone(), s))
        .collect();
    let ids: std::collections::BTreeSet<String> =
        served.keys().chain(refused.keys()).cloned().collect();
    let (ids, next_cursor) = paging::page_of(ids.into_iter().collect(), &query, String::clone)?;
    let mut fleet = fleet_breakers(&state).await?;
    let mut connectors = Vec::with_capacity(ids.len());
    for id in ids {
        let this = served.remove(&id);
        let breakers = fleet.remove(&id).unwrap_or_default();
        connectors.push(summary(&state, &id, this, refused.get(&id), breakers).await?);
    }
    Ok(Json(ConnectorsPage {
        connectors,
        next_cursor,
    }))
}

/// A page of connectors, by id.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct ConnectorsPage {
    connectors: Vec<ConnectorSummary>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_cursor: Option<String>,
}

/// One connector: its text in service and every stored version.
#[utoipa::path(
    get, path = "/admin/connectors/{connector_id}", tag = "admin",
    params(("connector_id" = String, Path)),
    responses(
        (status = 200, body = ConnectorDetail),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
    ),
    security(("admin" = ["admin", "operator"]))
)]
pub(super) async fn get_connector(
    State(state): State<ApiState>,
    _: Admin<Operate>,
    Path(id): Path<String>,
) -> Result<Json<ConnectorDetail>, ApiError> {
    let registry = state.catalog.registry();
    let served = registry.served(&id);
    let refused = registry.refused();
    let versions = state.env.store.connector_versions(&id).await?;
    if served.is_none() && versions.is_empty() && !refused.contains_key(&id) {
        return Err(ApiError::not_found(format!("no connector `{id}`")));
    }
    let content = served.as_ref().and_then(|s| {
        versions
            .iter()
            .find(|v| v.version == s.version)
            .map(|v| v.content.clone())
    });
    Ok(Json(ConnectorDetail {
        summary: summary(
            &state,
            &id,
            served,
            refused.get(&id),
            fleet_breakers(&state)
                .await?
                .remove(&id)
                .unwrap_or_default(),
        )
        .await?,
        content,
        versions: versions.iter().map(VersionView::from).collect(),
    }))
}

/// Publishes a connector file (the TOML text is the body). It is validated first:
/// an invalid text gets 422 with every problem and changes nothing. A valid one is
/// stored as the next version and served by every process within
/// `connectors.reload_ms`.
#[utoipa::path(
    put, path = "/admin/connectors/{connector_id}", tag = "admin",
    params(("connector_id" = String, Path)),
    request_body(content = String, content_type = "text/plain", description = "The connector file (TOML); any content type is accepted"),
    responses(
        (status = 201, description = "A new version", body = PublishResponse),
        (status = 200, description = "Already the latest version", body = PublishResponse),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 422, body = ErrorBody),
    ),
    security(("admin" = ["admin"]))
)]
pub(super) async fn put_connector(
    State(state): State<ApiState>,
    admin: Admin,
    Path(id): Path<String>,
    body: String,
) -> Result<(StatusCode, Json<PublishResponse>), ApiError> {
    let published = state
        .catalog
        .publish(&id, &body, admin.audit())
        .await
        .map_err(|e| match e {
            CatalogError::Invalid(problems) => {
                ApiError::new(ErrorCode::InvalidConnector, problems.to_string())
            }
            other => ApiError::internal(other),
        })?;
    let (status, created, version) = match &published {
        Published::New(v) => (StatusCode::CREATED, true, v),
        Published::Unchanged(v) => (StatusCode::OK, false, v),
    };
    Ok((
        status,
        Json(PublishResponse {
            id,
            created,
            version: version.into(),
        }),
    ))
}
