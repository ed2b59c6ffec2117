//! The read API for advisory apps: `/v1/…`, scoped to the calling tenant.

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::HeaderName;
use axum::routing::get;

use super::auth::Tenant;
use super::{ApiError, ApiState, ErrorCode};
use crate::cache::Hit;
use crate::domain::UserId;
use crate::portfolio::{self, Portfolio};

pub fn routes() -> Router<ApiState> {
    Router::new().route("/v1/users/{user_id}/portfolio", get(get_portfolio))
}

/// A user's accounts, holdings with securities, recent transactions and totals per
/// currency, with how fresh they are. Another tenant's user is simply not found.
/// `x-cache` says where the answer came from (`l1`, `l2`, `miss`).
async fn get_portfolio(
    State(state): State<ApiState>,
    Tenant(tenant): Tenant,
    Path(user_id): Path<String>,
) -> Result<([(HeaderName, &'static str); 1], Json<Portfolio>), ApiError> {
    let user = UserId::parse(&user_id)
        .map_err(|e| ApiError::new(ErrorCode::InvalidRequest, e.to_string()))?;
    let ctx = &state.sync;
    let (portfolio, hit) = portfolio::read(
        &ctx.store,
        &ctx.cache,
        tenant.id,
        &user,
        ctx.recent_transactions,
    )
    .await
    .map_err(ApiError::internal)?;
    let source = match hit {
        Hit::L1 => "l1",
        Hit::L2 => "l2",
        Hit::Miss => "miss",
    };
    let portfolio = portfolio.ok_or_else(|| {
        ApiError::new(
            ErrorCode::NotFound,
            format!("no user `{user}` with a linked institution"),
        )
    })?;
    Ok(([(X_CACHE, source)], Json(portfolio)))
}

const X_CACHE: HeaderName = HeaderName::from_static("x-cache");
