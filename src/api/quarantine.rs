//! The admin view of quarantine: records connectors refused, redacted, with why.

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::auth::{Admin, Operate};
use super::error::ErrorBody;
use super::extract::{Json, Query};
use super::{ApiError, ApiState, paging};
use crate::store::{QuarantineEntry, QuarantineFilter};

pub fn routes() -> Router<ApiState> {
    Router::new().route("/admin/quarantine", get(list_quarantine))
}

#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(super) enum QuarantineStatus {
    Open,
    Resolved,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct QuarantineQuery {
    /// Only records this connector (institution id) refused.
    connector: Option<String>,
    /// Only open or only resolved entries; both by default.
    status: Option<QuarantineStatus>,
    /// Entries per page, newest seen first; 1 to 500, 100 by default.
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// A page of quarantined records, newest seen first.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct QuarantinePage {
    records: Vec<QuarantineView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_cursor: Option<String>,
}

/// One refused record.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct QuarantineView {
    id: String,
    connection_id: String,
    institution: String,
    /// `accounts`, `holdings` or `transactions`.
    endpoint: String,
    /// The institution's id for the record, or a SHA-256 of it when unreadable.
    record_key: String,
    reason: String,
    /// The record with identifiers in clear and every personal value masked.
    record: serde_json::Value,
    /// The connector version that last refused it.
    connector_hash: String,
    first_seen_at: DateTime<Utc>,
    last_seen_at: DateTime<Utc>,
    times_seen: i32,
    resolved_at: Option<DateTime<Utc>>,
    /// `mapped` (a later sync stored it) or `gone` (no longer sent); null while open.
    resolution: Option<String>,
}

impl From<QuarantineEntry> for QuarantineView {
    fn from(e: QuarantineEntry) -> Self {
        Self {
            id: e.id,
            connection_id: e.connection_id,
            institution: e.institution_id,
            endpoint: e.endpoint,
            record_key: e.record_key,
            reason: e.reason,
            record: e.record,
            connector_hash: e.connector_hash,
            first_seen_at: e.first_seen_at,
            last_seen_at: e.last_seen_at,
            times_seen: e.times_seen,
            resolved_at: e.resolved_at,
            resolution: e.resolution,
        }
    }
}

/// Records connectors refused, newest seen first, paged. `finsync sync
/// replay --quarantined` syncs their connections again after a connector fix.
#[utoipa::path(
    get, path = "/admin/quarantine", tag = "admin",
    params(QuarantineQuery),
    responses(
        (status = 200, body = QuarantinePage), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
    ),
    security(("admin" = ["admin", "operator"]))
)]
pub(super) async fn list_quarantine(
    State(state): State<ApiState>,
    _: Admin<Operate>,
    Query(query): Query<QuarantineQuery>,
) -> Result<Json<QuarantinePage>, ApiError> {
    let limit = paging::limit(query.limit, 100, 500)?;
    let filter = QuarantineFilter {
        institution: query.connector,
        open: query.status.map(|s| matches!(s, QuarantineStatus::Open)),
        after: query.cursor.as_deref().map(paging::position).transpose()?,
        limit: Some(u64::from(limit) + 1),
    };
    let entries = state.env.store.quarantine(&filter).await?;
    let (entries, next_cursor) = paging::page(entries, limit, QuarantineEntry::position);
    Ok(Json(QuarantinePage {
        records: entries.into_iter().map(Into::into).collect(),
        next_cursor,
    }))
}
