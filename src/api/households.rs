//! Households: a tenant's named groups of its users, read as one
//! (`/v1/households/…`). Setting one replaces its name and members; a user is in
//! at most one household. A household of another tenant is simply not found.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::Tenant;
use super::error::{ErrorBody, ErrorCode};
use super::extract::{Json, Path, Query};
use super::paging::{self, PageQuery};
use super::read::{PositionsQuery, convert, reporting_currency, user_id};
use super::{ApiError, ApiState};
use crate::domain::HouseholdId;
use crate::portfolio::{self, HouseholdPositions, ReadError};
use crate::store::{Household, HouseholdError, Scope};

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v1/households", get(list))
        .route(
            "/v1/households/{household_id}",
            get(show).put(put).delete(remove),
        )
        .route("/v1/households/{household_id}/positions", get(positions))
}

/// At most this many members in one household.
const MAX_MEMBERS: usize = 100;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct HouseholdBody {
    /// For people, 1 to 200 characters.
    #[schema(example = "The Smiths")]
    name: String,
    /// The tenant's own ids of its users in the household (at most 100); each
    /// may be in one household only.
    #[schema(example = json!(["alice", "bob"]))]
    members: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct HouseholdView {
    id: String,
    name: String,
    members: Vec<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<Household> for HouseholdView {
    fn from(h: Household) -> Self {
        Self {
            id: h.id.to_string(),
            name: h.name,
            members: h.members.into_iter().map(String::from).collect(),
            created_at: h.created_at,
            updated_at: h.updated_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct HouseholdList {
    households: Vec<HouseholdView>,
    /// Absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_cursor: Option<String>,
}

fn household_id(raw: &str) -> Result<HouseholdId, ApiError> {
    HouseholdId::parse(raw).map_err(|e| ApiError::invalid(e.to_string()))
}

fn no_household(id: &HouseholdId) -> ApiError {
    ApiError::not_found(format!("no household `{id}`"))
}

/// Creates the household, or replaces its name and members (201 when created).
/// A user who is in another household of the tenant is refused (409) and
/// nothing changes; members need not have linked an institution yet.
#[utoipa::path(
    put, path = "/v1/households/{household_id}", tag = "households",
    params(("household_id" = String, Path, description = "The tenant's own id for the household")),
    request_body = HouseholdBody,
    responses(
        (status = 200, body = HouseholdView), (status = 201, body = HouseholdView),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 429, body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub(super) async fn put(
    State(state): State<ApiState>,
    tenant: Tenant,
    Path(raw_id): Path<String>,
    Json(body): Json<HouseholdBody>,
) -> Result<(StatusCode, Json<HouseholdView>), ApiError> {
    tenant.require(Scope::Sync)?;
    let id = household_id(&raw_id)?;
    let name = body.name.trim();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(ApiError::invalid("name must be 1 to 200 characters"));
    }
    if body.members.len() > MAX_MEMBERS {
        return Err(ApiError::invalid(format!(
            "a household has at most {MAX_MEMBERS} members"
        )));
    }
    let mut members = body
        .members
        .iter()
        .map(|m| {
            user_id(m).map_err(|e| ApiError::invalid(format!("members: `{m}`: {}", e.message)))
        })
        .collect::<Result<Vec<_>, _>>()?;
    members.sort();
    members.dedup();
    let (household, created) = state
        .env
        .store
        .put_household(tenant.tenant.id, &id, name, &members)
        .await
        .map_err(|e| match e {
            HouseholdError::Store(e) => ApiError::from(e),
            e => ApiError::new(ErrorCode::Conflict, e.to_string()),
        })?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(household.into())))
}

/// The tenant's households in order of id, a page at a time.
#[utoipa::path(
    get, path = "/v1/households", tag = "households", params(PageQuery),
    responses(
        (status = 200, body = HouseholdList), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 429, body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub(super) async fn list(
    State(state): State<ApiState>,
    tenant: Tenant,
    Query(query): Query<PageQuery>,
) -> Result<Json<HouseholdList>, ApiError> {
    tenant.require(Scope::Read)?;
    let limit = paging::limit(query.limit, 100, 500)?;
    let after: Option<String> = query.cursor.as_deref().map(paging::position).transpose()?;
    let households = state
        .env
        .store
        .households(tenant.tenant.id, after.as_deref(), u64::from(limit) + 1)
        .await?;
    let (households, next_cursor) = paging::page(households, limit, |h| h.id.as_str().to_owned());
    Ok(Json(HouseholdList {
        households: households.into_iter().map(Into::into).collect(),
        next_cursor,
    }))
}

/// One household: its name and members.
#[utoipa::path(
    get, path = "/v1/households/{household_id}", tag = "households",
    params(("household_id" = String, Path, description = "The tenant's own id for the household")),
    responses(
        (status = 200, body = HouseholdView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 429, body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub(super) async fn show(
    State(state): State<ApiState>,
    tenant: Tenant,
    Path(raw_id): Path<String>,
) -> Result<Json<HouseholdView>, ApiError> {
    tenant.require(Scope::Read)?;
    let id = household_id(&raw_id)?;
    let household = state.env.store.household(tenant.tenant.id, &id).await?;
    household
        .map(|h| Json(h.into()))
        .ok_or_else(|| no_household(&id))
}

/// Deletes the household; its members and their data stay.
#[utoipa::path(
    delete, path = "/v1/households/{household_id}", tag = "households",
    params(("household_id" = String, Path, description = "The tenant's own id for the household")),
    responses(
        (status = 204), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 429, body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub(super) async fn remove(
    State(state): State<ApiState>,
    tenant: Tenant,
    Path(raw_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    tenant.require(Scope::Sync)?;
    let id = household_id(&raw_id)?;
    if state
        .env
        .store
        .delete_household(tenant.tenant.id, &id)
        .await?
    {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(no_household(&id))
    }
}

/// The household's positions: every member's holdings summed per instrument of
/// the securities master, each holding naming its member, with the allocation;
/// with `?currency=`, all of it also in one reporting currency.
#[utoipa::path(
    get, path = "/v1/households/{household_id}/positions", tag = "households",
    params(
        ("household_id" = String, Path, description = "The tenant's own id for the household"),
        PositionsQuery,
    ),
    responses(
        (status = 200, body = HouseholdPositions), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 429, body = ErrorBody),
        (status = 503, body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub(super) async fn positions(
    State(state): State<ApiState>,
    tenant: Tenant,
    Path(raw_id): Path<String>,
    Query(query): Query<PositionsQuery>,
) -> Result<Json<HouseholdPositions>, ApiError> {
    tenant.require(Scope::Read)?;
    let id = household_id(&raw_id)?;
    let reporting = reporting_currency(query.currency.as_deref())?;
    let env = &state.env;
    let mut positions = portfolio::household(
        &env.store,
        &env.cache,
        tenant.tenant.id,
        &id,
        env.recent_transactions,
    )
    .await
    .map_err(|e| match &*e {
        ReadError::Store(e) if e.is_unavailable() => {
            env.store.note(e);
            ApiError::store_unavailable()
        }
        _ => ApiError::internal(e),
    })?
    .ok_or_else(|| no_household(&id))?;
    if let Some(currency) = reporting {
        let net_worth = (&positions.net_worth[..], positions.net_worth_complete);
        positions.reporting =
            Some(convert(&state, &mut positions.positions, net_worth, currency).await?);
    }
    Ok(Json(positions))
}
