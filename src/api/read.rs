//! The read API for advisory apps: `/v1/users/{user_id}/…`, scoped to the calling
//! tenant. Portfolio, accounts and holdings come from the cached portfolio view;
//! transactions are paged from the database; connections are read live.
//! A user of another tenant is simply not found.

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{FromRequestParts, State};
use axum::http::header::{ACCEPT_ENCODING, CONTENT_ENCODING, CONTENT_TYPE, VARY};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::auth::Tenant;
use super::error::ErrorBody;
use super::extract::{Json, Path, Query};
use super::paging;
use super::{ApiError, ApiState};
use crate::cache::Hit;
use crate::domain::{ConnectionStatus, Currency, InvestmentType, Money, TransactionStatus, UserId};
use crate::portfolio::{
    self, AccountView, CachedPortfolio, ConnectionView, Freshness, HoldingView, Portfolio,
    Positions, ReadError, TransactionView,
};
use crate::store::{ConnectionRecord, Scope, TransactionFilter, TransactionPosition};

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v1/users/{user_id}/portfolio", get(get_portfolio))
        .route("/v1/users/{user_id}/accounts", get(get_accounts))
        .route("/v1/users/{user_id}/holdings", get(get_holdings))
        .route("/v1/users/{user_id}/positions", get(get_positions))
        .route("/v1/users/{user_id}/transactions", get(get_transactions))
        .route("/v1/users/{user_id}/connections", get(get_connections))
}

const X_CACHE: HeaderName = HeaderName::from_static("x-cache");
const MAX_PAGE: u32 = 500;

type Cached<T> = ([(HeaderName, &'static str); 1], Json<T>);

pub(super) fn user_id(raw: &str) -> Result<UserId, ApiError> {
    UserId::parse(raw).map_err(|e| ApiError::invalid(e.to_string()))
}

fn no_user(user: &UserId) -> ApiError {
    ApiError::not_found(format!("no user `{user}` with a linked institution"))
}

/// The cached portfolio of a user of the calling tenant.
async fn cached(
    state: &ApiState,
    tenant: &Tenant,
    raw_user: &str,
) -> Result<CachedPortfolio, ApiError> {
    tenant.require(Scope::Read)?;
    let user = user_id(raw_user)?;
    let ctx = &state.env;
    portfolio::read(
        &ctx.store,
        &ctx.cache,
        tenant.tenant.id,
        &user,
        ctx.recent_transactions,
    )
    .await
    .map_err(|e| match &*e {
        ReadError::Store(e) if e.is_unavailable() => {
            ctx.store.note(e);
            ApiError::store_unavailable()
        }
        _ => ApiError::internal(e),
    })?
    .ok_or_else(|| no_user(&user))
}

/// Cached bytes handed to the response body without a copy.
struct Shared(std::sync::Arc<Vec<u8>>);

impl AsRef<[u8]> for Shared {
    fn as_ref(&self) -> &[u8] {
        self.0.as_slice()
    }
}

fn parsed(cached: &CachedPortfolio) -> Result<(Portfolio, Hit), ApiError> {
    Ok((cached.parse().map_err(ApiError::internal)?, cached.hit))
}

/// Whether the client accepts a gzip-coded answer, read from the request's
/// headers where they are (the `HeaderMap` extractor would copy them all).
pub(super) struct AcceptsGzip(bool);

impl<S: Sync> FromRequestParts<S> for AcceptsGzip {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(accepts_gzip(&parts.headers)))
    }
}

/// Whether the client accepts a gzip-coded answer (RFC 9110, 12.5.3): `gzip` (or
/// `x-gzip`) listed with a non-zero weight, or `*` with one and gzip not refused.
fn accepts_gzip(headers: &HeaderMap) -> bool {
    let mut star = false;
    for coding in headers
        .get_all(ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
    {
        let mut parts = coding.split(';');
        let name = parts.next().unwrap_or_default().trim();
        let weight = parts
            .filter_map(|p| p.trim().split_once('='))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("q"))
            // A weight outside 0 to 1, or not a number, refuses the coding.
            .map_or(1.0, |(_, q)| {
                q.trim()
                    .parse::<f32>()
                    .ok()
                    .filter(|q| (0.0..=1.0).contains(q))
                    .unwrap_or(0.0)
            });
        if name.eq_ignore_ascii_case("gzip") || name.eq_ignore_ascii_case("x-gzip") {
            return weight > 0.0;
        }
        if name == "*" {
            star = weight > 0.0;
        }
    }
    star
}

/// A user's portfolio: accounts, holdings with securities, recent transactions,
/// totals per currency and allocations, with how fresh each connection's data is.
/// `x-cache` says where the answer came from (`l1`, `l2`, `miss`). A client that
/// accepts gzip gets the cached view as the cache keeps it, compressed.
#[utoipa::path(
    get, path = "/v1/users/{user_id}/portfolio", tag = "read",
    params(("user_id" = String, Path, description = "The tenant's own id for the user")),
    responses(
        (status = 200, body = Portfolio, headers(
            ("x-cache" = String, description = "l1, l2 or miss"),
            ("content-encoding" = String, description = "gzip when the request's accept-encoding allows it"),
        )),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 429, body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub(super) async fn get_portfolio(
    State(state): State<ApiState>,
    tenant: Tenant,
    Path(user_id): Path<String>,
    AcceptsGzip(gzip): AcceptsGzip,
) -> Result<Response, ApiError> {
    let cached = cached(&state, &tenant, &user_id).await?;
    let source = (X_CACHE, cached.hit.as_str());
    let vary = (VARY, "accept-encoding");
    if cached.needs_notice() {
        let (portfolio, _) = parsed(&cached)?;
        return Ok(([source, vary], Json(portfolio)).into_response());
    }
    // The cached bytes are the answer: no parsing, and no compressing, on the hot
    // path.
    if gzip {
        return Ok((
            [
                source,
                vary,
                (CONTENT_TYPE, "application/json"),
                (CONTENT_ENCODING, "gzip"),
            ],
            Body::from(Bytes::from_owner(Shared(cached.gzip))),
        )
            .into_response());
    }
    let json = portfolio::stored::json(&cached.gzip).map_err(ApiError::internal)?;
    Ok((
        [source, vary, (CONTENT_TYPE, "application/json")],
        Body::from(json),
    )
        .into_response())
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct AccountsResponse {
    user_id: String,
    freshness: Freshness,
    connections: Vec<ConnectionView>,
    accounts: Vec<AccountView>,
}

/// A user's accounts with balances.
#[utoipa::path(
    get, path = "/v1/users/{user_id}/accounts", tag = "read",
    params(("user_id" = String, Path, description = "The tenant's own id for the user")),
    responses(
        (status = 200, body = AccountsResponse),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 429, body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub(super) async fn get_accounts(
    State(state): State<ApiState>,
    tenant: Tenant,
    Path(user_id): Path<String>,
) -> Result<Cached<AccountsResponse>, ApiError> {
    let (p, hit) = parsed(&cached(&state, &tenant, &user_id).await?)?;
    Ok((
        [(X_CACHE, hit.as_str())],
        Json(AccountsResponse {
            user_id: p.user_id,
            freshness: p.freshness,
            connections: p.connections,
            accounts: p.accounts,
        }),
    ))
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct HoldingsResponse {
    user_id: String,
    freshness: Freshness,
    connections: Vec<ConnectionView>,
    holdings: Vec<HoldingView>,
}

/// A user's holdings, each with its security.
#[utoipa::path(
    get, path = "/v1/users/{user_id}/holdings", tag = "read",
    params(("user_id" = String, Path, description = "The tenant's own id for the user")),
    responses(
        (status = 200, body = HoldingsResponse),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 429, body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub(super) async fn get_holdings(
    State(state): State<ApiState>,
    tenant: Tenant,
    Path(user_id): Path<String>,
) -> Result<Cached<HoldingsResponse>, ApiError> {
    let (p, hit) = parsed(&cached(&state, &tenant, &user_id).await?)?;
    Ok((
        [(X_CACHE, hit.as_str())],
        Json(HoldingsResponse {
            user_id: p.user_id,
            freshness: p.freshness,
            connections: p.connections,
            holdings: p.holdings,
        }),
    ))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct PositionsQuery {
    /// A reporting currency (ISO 4217, e.g. `EUR`): every value is also given in
    /// it, converted at the latest published rates, each figure naming its rate.
    pub(super) currency: Option<String>,
}

/// The reporting currency asked for, checked before anything is read.
pub(super) fn reporting_currency(raw: Option<&str>) -> Result<Option<Currency>, ApiError> {
    raw.map(|raw| {
        raw.parse::<Currency>()
            .ok()
            .filter(|c| c.is_iso())
            .ok_or_else(|| {
                ApiError::invalid(format!(
                    "currency `{raw}` is not an ISO 4217 currency code (e.g. EUR, GBP, USD)"
                ))
            })
    })
    .transpose()
}

/// `positions` with every figure, and `net_worth`, also in `currency`, at the
/// latest rates.
pub(super) async fn convert(
    state: &ApiState,
    positions: &mut [portfolio::Position],
    (net_worth, complete): (&[Money], bool),
    currency: Currency,
) -> Result<portfolio::Reporting, ApiError> {
    let rates = state.env.fx.latest(&state.env.store).await?;
    Ok(portfolio::in_currency(
        positions,
        net_worth,
        complete,
        rates.as_deref(),
        currency,
    ))
}

/// A user's positions: holdings summed per instrument of the securities master
/// across every account and connection (the same ISIN at two brokerages is one
/// position), each with the holdings it is made of, and the value by asset class,
/// account and currency; with `?currency=`, all of it also in one reporting
/// currency.
#[utoipa::path(
    get, path = "/v1/users/{user_id}/positions", tag = "read",
    params(("user_id" = String, Path, description = "The tenant's own id for the user"), PositionsQuery),
    responses(
        (status = 200, body = Positions),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 429, body = ErrorBody), (status = 503, body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub(super) async fn get_positions(
    State(state): State<ApiState>,
    tenant: Tenant,
    Path(user_id): Path<String>,
    Query(query): Query<PositionsQuery>,
) -> Result<Cached<Positions>, ApiError> {
    let reporting = reporting_currency(query.currency.as_deref())?;
    let (p, hit) = parsed(&cached(&state, &tenant, &user_id).await?)?;
    let mut positions = portfolio::positions(&p);
    if let Some(currency) = reporting {
        let net_worth = (&positions.net_worth[..], positions.net_worth_complete);
        positions.reporting =
            Some(convert(&state, &mut positions.positions, net_worth, currency).await?);
    }
    Ok(([(X_CACHE, hit.as_str())], Json(positions)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct TransactionQuery {
    /// Only this connection (an id from `/connections`).
    connection_id: Option<String>,
    /// Only this account (the institution's account id, as in `/accounts`; give
    /// `connection_id` too when two institutions use the same id).
    account_id: Option<String>,
    /// Earliest date, inclusive (YYYY-MM-DD).
    from: Option<NaiveDate>,
    /// Latest date, inclusive (YYYY-MM-DD).
    to: Option<NaiveDate>,
    status: Option<TransactionStatus>,
    /// Investment transaction type.
    #[serde(rename = "type")]
    #[param(rename = "type")]
    investment_type: Option<InvestmentType>,
    /// Page size, 1 to 500; 100 by default.
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct TransactionsResponse {
    user_id: String,
    freshness: Freshness,
    connections: Vec<ConnectionView>,
    /// Newest first.
    transactions: Vec<TransactionView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    next_cursor: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct Cursor {
    d: NaiveDate,
    r: String,
}

fn cursor_of(position: &TransactionPosition) -> Cursor {
    Cursor {
        d: position.date,
        r: position.row_id.clone(),
    }
}

fn decode_cursor(raw: &str) -> Result<TransactionPosition, ApiError> {
    let cursor: Cursor = paging::position(raw)?;
    Ok(TransactionPosition {
        date: cursor.d,
        row_id: cursor.r,
    })
}

/// A user's transactions, newest first, filtered and paged with an opaque cursor.
#[utoipa::path(
    get, path = "/v1/users/{user_id}/transactions", tag = "read",
    params(("user_id" = String, Path, description = "The tenant's own id for the user"), TransactionQuery),
    responses(
        (status = 200, body = TransactionsResponse),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 429, body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub(super) async fn get_transactions(
    State(state): State<ApiState>,
    tenant: Tenant,
    Path(user_id): Path<String>,
    Query(query): Query<TransactionQuery>,
) -> Result<Json<TransactionsResponse>, ApiError> {
    tenant.require(Scope::Read)?;
    let user = self::user_id(&user_id)?;
    let limit = paging::limit(query.limit, 100, MAX_PAGE)?;
    if let (Some(from), Some(to)) = (query.from, query.to)
        && from > to
    {
        return Err(ApiError::invalid("`from` is after `to`"));
    }
    let after = query.cursor.as_deref().map(decode_cursor).transpose()?;
    let store = &state.env.store;
    let connections = store.user_connections(tenant.tenant.id, &user).await?;
    if connections.is_empty() {
        return Err(no_user(&user));
    }
    let mut ids: Vec<_> = connections.iter().map(|c| c.id).collect();
    if let Some(raw) = &query.connection_id {
        ids.retain(|id| id.to_string() == *raw);
        if ids.is_empty() {
            return Err(ApiError::not_found(format!(
                "user `{user}` has no connection `{raw}`"
            )));
        }
    }
    let filter = TransactionFilter {
        account: query.account_id,
        from: query.from,
        to: query.to,
        status: query.status,
        investment_type: query.investment_type,
    };
    // One extra row says whether there is a next page.
    let rows = store
        .transactions_page(&ids, &filter, after.as_ref(), u64::from(limit) + 1)
        .await?;
    let (page, next_cursor) = paging::page(rows, limit, |t| cursor_of(&t.position));
    let (mut freshness, connections) = portfolio::connection_views(&connections);
    if state.env.cache.degraded() {
        freshness.mark_cache_degraded();
    }
    Ok(Json(TransactionsResponse {
        user_id: user.to_string(),
        freshness,
        connections,
        transactions: page
            .into_iter()
            .map(|t| {
                TransactionView::from_record(t.connection.to_string(), t.transaction, t.annotations)
            })
            .collect(),
        next_cursor,
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct ConnectionsResponse {
    user_id: String,
    freshness: Freshness,
    connections: Vec<ConnectionDetail>,
}

/// One of the user's connections, with what an app needs to show its health.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct ConnectionDetail {
    id: String,
    institution: String,
    status: ConnectionStatus,
    freshness: Freshness,
    last_synced_at: Option<DateTime<Utc>>,
    last_failure_at: Option<DateTime<Utc>>,
    next_sync_at: Option<DateTime<Utc>>,
    consent_expires_at: Option<DateTime<Utc>>,
    /// Where to send the user to link again, when re-authentication is needed: the
    /// link URL of a repair session returning to the tenant's first registered
    /// redirect URI (absent when the tenant registered none). Works once.
    relink_url: Option<String>,
}

/// A user's connections: status, last sync, reason, and a relink URL when the user
/// must link the institution again.
#[utoipa::path(
    get, path = "/v1/users/{user_id}/connections", tag = "read",
    params(("user_id" = String, Path, description = "The tenant's own id for the user")),
    responses(
        (status = 200, body = ConnectionsResponse),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 429, body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub(super) async fn get_connections(
    State(state): State<ApiState>,
    tenant: Tenant,
    Path(user_id): Path<String>,
) -> Result<Json<ConnectionsResponse>, ApiError> {
    tenant.require(Scope::Read)?;
    let user = self::user_id(&user_id)?;
    let records = state
        .env
        .store
        .user_connections(tenant.tenant.id, &user)
        .await?;
    if records.is_empty() {
        return Err(no_user(&user));
    }
    let (freshness, views) = portfolio::connection_views(&records);
    let mut connections = Vec::with_capacity(records.len());
    for (record, view) in records.iter().zip(views) {
        connections.push(ConnectionDetail {
            relink_url: relink_url(&state, record).await?,
            id: view.id,
            institution: view.institution,
            status: view.status,
            freshness: view.freshness,
            last_synced_at: record.last_synced_at,
            last_failure_at: record.last_failure_at,
            next_sync_at: record.next_sync_at,
            consent_expires_at: record.consent.expires_at,
        });
    }
    Ok(Json(ConnectionsResponse {
        user_id: user.to_string(),
        freshness,
        connections,
    }))
}

/// The link URL of a repair session for a connection that needs the user again
/// (one not yet opened is handed out again rather than a new one made per read).
pub(super) async fn relink_url(
    state: &ApiState,
    record: &ConnectionRecord,
) -> Result<Option<String>, ApiError> {
    state
        .linker
        .repair_url(record)
        .await
        .map(|url| url.map(String::from))
        .map_err(ApiError::internal)
}
