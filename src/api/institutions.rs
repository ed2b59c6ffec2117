//! `GET /v1/institutions`: the institutions an app may offer its users, with their
//! health as the fleet sees it ([`crate::directory`]), searched and paged.

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::auth::Tenant;
use super::error::ErrorBody;
use super::extract::{Json, Query};
use super::{ApiError, ApiState, ErrorCode, paging};
use crate::directory::{self, After, Health};
use crate::store::Scope;
use crate::tokens::sessions::PRODUCTS;

/// The largest page.
const MAX_PAGE: u32 = 200;

pub fn routes() -> Router<ApiState> {
    Router::new().route("/v1/institutions", get(list))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct InstitutionQuery {
    /// Part of the name or id, any case.
    q: Option<String>,
    /// Only institutions that serve all of these, comma-separated (`accounts`,
    /// `holdings`, `transactions`).
    products: Option<String>,
    /// Institutions per page, 1 to 200 (default 50).
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct InstitutionView {
    /// What a link names the institution by.
    id: String,
    name: String,
    /// ISO 3166-1 alpha-2.
    country: String,
    /// What can be read there: `accounts`, `holdings`, `transactions`.
    products: Vec<String>,
    /// Up to two letters, for a badge in an institution picker.
    initials: String,
    /// `ok`, `degraded` or `down`, as the whole fleet sees it over the last 30
    /// minutes.
    health: Health,
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct InstitutionsResponse {
    /// By name.
    institutions: Vec<InstitutionView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_cursor: Option<String>,
}

/// The institutions the calling tenant may offer its users (all in service, unless
/// an admin limited the tenant to a list), by name.
#[utoipa::path(
    get, path = "/v1/institutions", tag = "institutions",
    params(InstitutionQuery),
    responses(
        (status = 200, body = InstitutionsResponse),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 429, body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub(super) async fn list(
    State(state): State<ApiState>,
    tenant: Tenant,
    Query(query): Query<InstitutionQuery>,
) -> Result<Json<InstitutionsResponse>, ApiError> {
    tenant.require(Scope::Read)?;
    let limit = paging::limit(query.limit, 50, MAX_PAGE)?;
    let after: Option<After> = query.cursor.as_deref().map(paging::position).transpose()?;
    let products = products(query.products.as_deref())?;
    let listed = directory::list(
        &state.env.store,
        state.catalog.registry(),
        tenant.tenant.id,
        directory::Wanted {
            search: query.q.as_deref(),
            products: &products,
            after: after.as_ref(),
            limit: limit as usize + 1,
        },
        state.breaker_window,
    )
    .await?;
    let (listed, next_cursor) = paging::page(listed, limit, |i| After {
        name: i.name.clone(),
        id: i.id.clone(),
    });
    Ok(Json(InstitutionsResponse {
        institutions: listed
            .into_iter()
            .map(|i| InstitutionView {
                id: i.id,
                name: i.name,
                country: i.country,
                products: i.products,
                initials: i.initials,
                health: i.health,
            })
            .collect(),
        next_cursor,
    }))
}

/// `accounts,holdings` → the products named, each one checked.
pub(super) fn products(list: Option<&str>) -> Result<Vec<String>, ApiError> {
    let mut products = Vec::new();
    for product in list.unwrap_or_default().split(',').map(str::trim) {
        if product.is_empty() {
            continue;
        }
        if !PRODUCTS.contains(&product) {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                format!("unknown product `{product}`: use accounts, holdings or transactions"),
            ));
        }
        products.push(product.to_owned());
    }
    Ok(products)
}
