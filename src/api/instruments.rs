//! The securities master as operators see it: where an institution's identifier
//! disagrees with the instrument its security matched, recorded by the syncs and
//! never resolved on their own.

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use serde::Serialize;
use utoipa::ToSchema;

use super::auth::{Admin, Operate};
use super::error::ErrorBody;
use super::extract::{Json, Query};
use super::paging::{self, PageQuery};
use super::{ApiError, ApiState};
use crate::store::InstrumentConflict;

pub(super) fn routes() -> Router<ApiState> {
    Router::new().route("/admin/instrument-conflicts", get(list_conflicts))
}

/// A page of identifier disagreements.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct ConflictsPage {
    conflicts: Vec<InstrumentConflict>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_cursor: Option<String>,
}

/// Every institution identifier that disagrees with the instrument its security
/// matched (Apple's ISIN beside another company's CUSIP, say): what the instrument
/// holds, what the institution sent, and which other instrument holds that value.
#[utoipa::path(
    get, path = "/admin/instrument-conflicts", tag = "admin", params(PageQuery),
    responses(
        (status = 200, body = ConflictsPage), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
    ),
    security(("admin" = ["admin", "operator"]))
)]
pub(super) async fn list_conflicts(
    State(state): State<ApiState>,
    _: Admin<Operate>,
    Query(query): Query<PageQuery>,
) -> Result<Json<ConflictsPage>, ApiError> {
    let limit = paging::limit(query.limit, 100, 500)?;
    let after: Option<(String, String)> =
        query.cursor.as_deref().map(paging::position).transpose()?;
    let conflicts = state
        .env
        .store
        .instrument_conflict_page(after.as_ref(), u64::from(limit) + 1)
        .await?;
    let (conflicts, next_cursor) = paging::page(conflicts, limit, |c| {
        (c.security_id.clone(), c.identifier.clone())
    });
    Ok(Json(ConflictsPage {
        conflicts,
        next_cursor,
    }))
}
