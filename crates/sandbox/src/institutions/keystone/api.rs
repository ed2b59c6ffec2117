//! Keystone Trust & Custody's data API: a legacy custodian's investment accounts, positions
//! and activity, every list paged by RFC 8288 `Link: <…>; rel="next"` headers carrying an
//! opaque `page_token`, and activity only by date window (`from`, `to`, at most 31 days).
//!
//! Its wire habits: money as strings with exactly 4 decimals, a positive amount meaning
//! money in, trade dates as `YYYY-MM-DD` and settlement times as epoch seconds, securities
//! identified by CUSIP (else ISIN, else a cash code) with tickers only for listed ones,
//! and errors as `{"fault": {"code": …, "message": …}}`.
//!
//! Keystone is also the institution that is hard to be polite to: a daily request quota
//! (429 until UTC midnight), a per-second limit (429, `Retry-After: 1`), and slowness once
//! more requests are in flight than it copes with ([`KeystoneLimits`]).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};

use super::KeystoneLimits;
use crate::bearer::{self, Denied};
use crate::data::Portfolio;
use crate::grants::Scope;
use crate::{AppState, Institution, Stats};

const DEFAULT_PAGE_SIZE: usize = 50;
const MAX_PAGE_SIZE: usize = 200;
/// The longest `to - from` a transactions request may ask for.
const MAX_WINDOW_DAYS: i64 = 31;
const DATE_FORMAT: &str = "%Y-%m-%d";

/// Keystone's state: the sandbox's, and the counters its limits keep.
struct Keystone {
    app: Arc<AppState>,
    limits: KeystoneLimits,
    /// Requests counted today, and which day that is.
    today: Mutex<(NaiveDate, u32)>,
    /// Requests counted in the current second, and which second (epoch) that is.
    this_second: Mutex<(i64, u32)>,
    in_flight: AtomicUsize,
}

pub(super) fn routes<S>(app: Arc<AppState>) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    let keystone = Arc::new(Keystone {
        limits: app.config.keystone.clone(),
        app,
        today: Mutex::new((NaiveDate::MIN, 0)),
        this_second: Mutex::new((i64::MIN, 0)),
        in_flight: AtomicUsize::new(0),
    });
    Router::new()
        .route("/keystone/v2/accounts", get(accounts))
        .route("/keystone/v2/positions", get(positions))
        .route("/keystone/v2/transactions", get(transactions))
        .layer(middleware::from_fn_with_state(Arc::clone(&keystone), limit))
        .with_state(keystone)
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(super) struct Account {
    pub(super) account_no: String,
    pub(super) account_title: String,
    /// `INDIVIDUAL`, `TRADITIONAL IRA` or `ROTH IRA`.
    pub(super) registration: &'static str,
    pub(super) base_currency: String,
    pub(super) market_value: String,
    pub(super) cash_available: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(super) struct Position {
    pub(super) account_no: String,
    /// The CUSIP, else the ISIN, else `CASH-<currency>`.
    pub(super) security_no: String,
    pub(super) cusip: Option<String>,
    pub(super) isin: Option<String>,
    /// Only for exchange-listed equities and ETFs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) ticker: Option<String>,
    pub(super) description: String,
    /// `EQ`, `ETF`, `MF`, `FI` or `CASH`.
    pub(super) asset_class: &'static str,
    pub(super) currency: String,
    pub(super) units: String,
    pub(super) unit_price: String,
    pub(super) price_date: String,
    pub(super) market_value: String,
    pub(super) book_cost: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(super) struct Transaction {
    pub(super) txn_ref: String,
    pub(super) account_no: String,
    pub(super) trade_date: String,
    /// The day after the trade at 21:00 UTC, in epoch seconds.
    pub(super) settle_time: i64,
    /// `BUY`, `SELL`, `DIV`, `FEE`, `DEP`, `WDL` or `SPLIT`.
    pub(super) activity: &'static str,
    pub(super) security_no: Option<String>,
    pub(super) units: Option<String>,
    pub(super) unit_price: Option<String>,
    /// Positive is money into the account.
    pub(super) net_amount: String,
    pub(super) currency: String,
    pub(super) description: String,
}

fn decimal(text: &str) -> Decimal {
    Decimal::from_str_exact(text).expect("the generator writes plain decimals")
}

/// A decimal with exactly 4 decimals, rounded half away from zero.
fn four_decimals(value: Decimal) -> String {
    let mut rounded = value.round_dp_with_strategy(4, RoundingStrategy::MidpointAwayFromZero);
    rounded.rescale(4);
    rounded.to_string()
}

fn money(text: &str) -> String {
    four_decimals(decimal(text))
}

fn security_no(cusip: Option<&str>, isin: Option<&str>, currency: &str) -> String {
    cusip
        .or(isin)
        .map_or_else(|| format!("CASH-{currency}"), str::to_owned)
}

/// What Keystone holds of a portfolio: the investment accounts, their positions and
/// their investment activity.
pub(super) fn view(portfolio: &Portfolio) -> (Vec<Account>, Vec<Position>, Vec<Transaction>) {
    let accounts: Vec<Account> = portfolio
        .accounts
        .iter()
        .filter(|account| account.account_type == "investment")
        .map(|account| Account {
            account_no: account.account_id.clone(),
            account_title: account.official_name.clone(),
            registration: match account.subtype.as_str() {
                "ira" => "TRADITIONAL IRA",
                "roth" => "ROTH IRA",
                _ => "INDIVIDUAL",
            },
            base_currency: account.balances.iso_currency_code.clone(),
            market_value: money(&account.balances.current),
            cash_available: account.balances.available.as_deref().map(money),
        })
        .collect();
    let positions = portfolio
        .holdings
        .iter()
        .map(|holding| {
            let security = &holding.security;
            let listed = matches!(security.security_type.as_str(), "equity" | "etf");
            Position {
                account_no: holding.account_id.clone(),
                security_no: security_no(
                    security.cusip.as_deref(),
                    security.isin.as_deref(),
                    &security.iso_currency_code,
                ),
                cusip: security.cusip.clone(),
                isin: security.isin.clone(),
                ticker: listed.then(|| security.ticker_symbol.clone()),
                description: security.name.to_uppercase(),
                asset_class: match security.security_type.as_str() {
                    "equity" => "EQ",
                    "etf" => "ETF",
                    "mutual fund" => "MF",
                    "fixed income" => "FI",
                    _ => "CASH",
                },
                currency: holding.iso_currency_code.clone(),
                units: holding.quantity.clone(),
                unit_price: money(&holding.institution_price),
                price_date: holding
                    .institution_price_as_of
                    .format(DATE_FORMAT)
                    .to_string(),
                market_value: money(&holding.institution_value),
                book_cost: money(&holding.cost_basis),
            }
        })
        .collect();
    let transactions = portfolio
        .transactions
        .iter()
        .filter(|t| accounts.iter().any(|a| a.account_no == t.account_id))
        .filter_map(|t| {
            let activity = match t.investment_type.as_deref()? {
                "buy" => "BUY",
                "sell" => "SELL",
                "dividend" => "DIV",
                "fee" => "FEE",
                "deposit" => "DEP",
                "split" => "SPLIT",
                _ => "WDL",
            };
            let security = t.security_id.as_ref().and_then(|id| {
                portfolio
                    .holdings
                    .iter()
                    .find(|h| &h.security.security_id == id)
                    .map(|h| &h.security)
            });
            let settle = t.date.succ_opt().unwrap_or(t.date);
            Some(Transaction {
                txn_ref: t.transaction_id.clone(),
                account_no: t.account_id.clone(),
                trade_date: t.date.format(DATE_FORMAT).to_string(),
                settle_time: settle
                    .and_time(NaiveTime::from_hms_opt(21, 0, 0).unwrap_or(NaiveTime::MIN))
                    .and_utc()
                    .timestamp(),
                activity,
                security_no: security.map(|s| {
                    security_no(s.cusip.as_deref(), s.isin.as_deref(), &s.iso_currency_code)
                }),
                units: t.quantity.clone(),
                unit_price: t.price.as_deref().map(money),
                // The generator's convention is money out positive; Keystone's the reverse.
                net_amount: four_decimals(-decimal(&t.amount)),
                currency: t.iso_currency_code.clone(),
                description: t.name.clone(),
            })
        })
        .collect();
    (accounts, positions, transactions)
}

/// A refused request, answered with Keystone's error body:
/// `{"fault": {"code": "...", "message": "..."}}`.
#[derive(Debug)]
struct Fault {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// Seconds for `Retry-After`, on a 429.
    retry_after: Option<i64>,
}

fn fault(status: StatusCode, code: &'static str, message: String) -> Fault {
    Fault {
        status,
        code,
        message,
        retry_after: None,
    }
}

fn too_many(code: &'static str, message: String, retry_after: i64) -> Fault {
    Fault {
        retry_after: Some(retry_after.max(1)),
        ..fault(StatusCode::TOO_MANY_REQUESTS, code, message)
    }
}

impl IntoResponse for Fault {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "fault": { "code": self.code, "message": self.message } });
        let mut response = (self.status, Json(body)).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

impl Keystone {
    /// Counts a request against the daily quota, then the per-second limit.
    fn admit(&self, now: DateTime<Utc>) -> Result<(), Fault> {
        {
            let mut today = self.today.lock().unwrap_or_else(PoisonError::into_inner);
            if today.0 != now.date_naive() {
                *today = (now.date_naive(), 0);
            }
            if today.1 >= self.limits.daily_quota {
                let midnight = now
                    .date_naive()
                    .succ_opt()
                    .map(|day| day.and_time(NaiveTime::MIN).and_utc())
                    .unwrap_or(now);
                return Err(too_many(
                    "QUOTA-DAILY",
                    format!(
                        "the daily quota of {} requests is used up until 00:00 UTC",
                        self.limits.daily_quota
                    ),
                    (midnight - now).num_seconds() + 1,
                ));
            }
            today.1 += 1;
        }
        let mut second = self
            .this_second
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if second.0 != now.timestamp() {
            *second = (now.timestamp(), 0);
        }
        if second.1 >= self.limits.per_second {
            return Err(too_many(
                "RATE-SECOND",
                format!(
                    "more than {} requests in one second",
                    self.limits.per_second
                ),
                1,
            ));
        }
        second.1 += 1;
        Ok(())
    }
}

/// One request in flight, for as long as this lives.
struct InFlight<'a>(&'a AtomicUsize);

impl<'a> InFlight<'a> {
    /// Enters and returns the number in flight, this one included.
    fn enter(counter: &'a AtomicUsize) -> (Self, usize) {
        let load = counter.fetch_add(1, Ordering::SeqCst) + 1;
        (Self(counter), load)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Keystone's limits, around its data routes.
async fn limit(State(keystone): State<Arc<Keystone>>, request: Request, next: Next) -> Response {
    if let Err(refused) = keystone.admit(Utc::now()) {
        return refused.into_response();
    }
    let (_in_flight, load) = InFlight::enter(&keystone.in_flight);
    let extra = load.saturating_sub(keystone.limits.slow_after_in_flight);
    if extra > 0 {
        let extra = u32::try_from(extra).unwrap_or(u32::MAX);
        tokio::time::sleep(
            keystone
                .limits
                .latency_per_extra_request
                .saturating_mul(extra),
        )
        .await;
    }
    next.run(request).await
}

#[derive(Debug, Deserialize)]
struct PageQuery {
    /// All kept as text so bad values get Keystone's error, not the extractor's.
    page_size: Option<String>,
    page_token: Option<String>,
    from: Option<String>,
    to: Option<String>,
}

/// `{"records": [...]}`.
#[derive(Serialize)]
struct Page<'a> {
    records: &'a [serde_json::Value],
}

async fn accounts(
    State(keystone): State<Arc<Keystone>>,
    headers: HeaderMap,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Response {
    serve(&keystone.app, &headers, query, Endpoint::Accounts)
}

async fn positions(
    State(keystone): State<Arc<Keystone>>,
    headers: HeaderMap,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Response {
    serve(&keystone.app, &headers, query, Endpoint::Positions)
}

async fn transactions(
    State(keystone): State<Arc<Keystone>>,
    headers: HeaderMap,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Response {
    serve(&keystone.app, &headers, query, Endpoint::Transactions)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Accounts,
    Positions,
    Transactions,
}

impl Endpoint {
    fn name(self) -> &'static str {
        match self {
            Self::Accounts => "accounts",
            Self::Positions => "positions",
            Self::Transactions => "transactions",
        }
    }

    fn scope(self) -> Scope {
        match self {
            Self::Accounts => Scope::Accounts,
            Self::Positions => Scope::Holdings,
            Self::Transactions => Scope::Transactions,
        }
    }
}

fn bad_request(code: &'static str, message: impl Into<String>) -> Fault {
    fault(StatusCode::BAD_REQUEST, code, message.into())
}

/// The inclusive date window of a transactions request.
fn window(query: &PageQuery) -> Result<(NaiveDate, NaiveDate), Fault> {
    let date = |value: &Option<String>, name: &str| {
        let text = value.as_deref().ok_or_else(|| {
            bad_request(
                "WINDOW-REQUIRED",
                format!("`{name}` is required: transactions are read by date window"),
            )
        })?;
        NaiveDate::parse_from_str(text, DATE_FORMAT)
            .map_err(|_| bad_request("REQ-DATE", format!("`{name}` must be YYYY-MM-DD")))
    };
    let (from, to) = (date(&query.from, "from")?, date(&query.to, "to")?);
    if to < from {
        return Err(bad_request("WINDOW-ORDER", "`to` is before `from`"));
    }
    if (to - from).num_days() > MAX_WINDOW_DAYS {
        return Err(bad_request(
            "WINDOW-TOO-LARGE",
            format!("a window spans at most {MAX_WINDOW_DAYS} days after `from`"),
        ));
    }
    Ok((from, to))
}

/// Page tokens name the endpoint and the next offset: opaque, and only valid where issued.
fn encode_token(endpoint: Endpoint, offset: usize) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}:{offset}", endpoint.name()))
}

fn decode_token(token: &str, endpoint: Endpoint, total: usize) -> Result<usize, Fault> {
    let invalid = || bad_request("REQ-TOKEN", "page_token is not one this endpoint issued");
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    let (name, offset) = text.split_once(':').ok_or_else(invalid)?;
    let offset: usize = offset.parse().map_err(|_| invalid())?;
    if name != endpoint.name() || offset == 0 || offset >= total {
        return Err(invalid());
    }
    Ok(offset)
}

/// The `rel="next"` link: absolute, on the host the request came to.
fn next_link(headers: &HeaderMap, endpoint: Endpoint, params: &[(&str, String)]) -> String {
    let query: String = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params)
        .finish();
    let path = format!("/keystone/v2/{}?{query}", endpoint.name());
    match headers
        .get(header::HOST)
        .and_then(|host| host.to_str().ok())
    {
        Some(host) => format!("<http://{host}{path}>; rel=\"next\""),
        None => format!("<{path}>; rel=\"next\""),
    }
}

fn serve(
    app: &AppState,
    headers: &HeaderMap,
    query: Result<Query<PageQuery>, QueryRejection>,
    endpoint: Endpoint,
) -> Response {
    Stats::bump(&app.stats.api_requests);
    let outcome = (|| {
        let bearer =
            bearer::authorize(app.grants(Institution::Keystone), headers, endpoint.scope())
                .map_err(|denied| match denied {
                    Denied::InvalidToken => fault(
                        StatusCode::UNAUTHORIZED,
                        "AUTH-001",
                        "the access token is missing, unknown, expired or revoked".to_owned(),
                    ),
                    Denied::InsufficientScope(scope) => fault(
                        StatusCode::FORBIDDEN,
                        "AUTH-003",
                        format!("the access token lacks the {scope} scope"),
                    ),
                })?;
        let Query(query) =
            query.map_err(|rejection| bad_request("REQ-400", rejection.body_text()))?;
        let page_size = match query.page_size.as_deref() {
            None => DEFAULT_PAGE_SIZE,
            Some(text) => text
                .parse::<usize>()
                .ok()
                .filter(|size| (1..=MAX_PAGE_SIZE).contains(size))
                .ok_or_else(|| {
                    bad_request(
                        "REQ-400",
                        format!("page_size must be an integer from 1 to {MAX_PAGE_SIZE}"),
                    )
                })?,
        };
        let (accounts, positions, transactions) =
            view(&app.portfolio(Institution::Keystone, &bearer.user_id));
        let records = match endpoint {
            Endpoint::Accounts => serde_json::to_value(accounts),
            Endpoint::Positions => serde_json::to_value(positions),
            Endpoint::Transactions => {
                let (from, to) = window(&query)?;
                let (from, to) = (
                    from.format(DATE_FORMAT).to_string(),
                    to.format(DATE_FORMAT).to_string(),
                );
                // ISO dates order as text.
                serde_json::to_value(
                    transactions
                        .into_iter()
                        .filter(|t| t.trade_date >= from && t.trade_date <= to)
                        .collect::<Vec<_>>(),
                )
            }
        };
        let Ok(serde_json::Value::Array(records)) = records else {
            return Err(fault(
                StatusCode::INTERNAL_SERVER_ERROR,
                "SYS-500",
                "records could not be serialized".to_owned(),
            ));
        };
        let start = match query
            .page_token
            .as_deref()
            .filter(|token| !token.is_empty())
        {
            Some(token) => decode_token(token, endpoint, records.len())?,
            None => 0,
        };
        let end = start.saturating_add(page_size).min(records.len());
        let mut response = Json(Page {
            records: &records[start..end],
        })
        .into_response();
        if end < records.len() {
            let mut params = Vec::new();
            if let (Some(from), Some(to)) = (&query.from, &query.to) {
                params.push(("from", from.clone()));
                params.push(("to", to.clone()));
            }
            params.push(("page_size", page_size.to_string()));
            params.push(("page_token", encode_token(endpoint, end)));
            if let Ok(link) = HeaderValue::from_str(&next_link(headers, endpoint, &params)) {
                response.headers_mut().insert(header::LINK, link);
            }
        }
        Ok(response)
    })();
    outcome.unwrap_or_else(IntoResponse::into_response)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::time::Duration;

    use super::*;
    use crate::SandboxConfig;
    use crate::test_support::{REDIRECT_URI, TestSandbox, VERIFIER};

    async fn token(sandbox: &TestSandbox, user: &str) -> String {
        let tokens = sandbox
            .link_at(
                Institution::Keystone,
                user,
                "accounts holdings transactions",
            )
            .await;
        tokens["result"]["access_token"]
            .as_str()
            .expect("access token")
            .to_owned()
    }

    #[tokio::test]
    async fn oauth_nests_the_response_omits_lifetime_and_keeps_the_refresh_token() {
        let sandbox = TestSandbox::start().await;
        let tokens = sandbox
            .link_at(
                Institution::Keystone,
                "demo-alice",
                "accounts holdings transactions",
            )
            .await;
        let members: Vec<&str> = tokens
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(members, ["result"]);
        let mut inner: Vec<&str> = tokens["result"]
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        inner.sort_unstable();
        assert_eq!(inner, ["access_token", "refresh_token", "scope"]);
        let refresh = tokens["result"]["refresh_token"].as_str().expect("refresh");
        let refreshed = sandbox
            .token_at(
                Institution::Keystone,
                &[("grant_type", "refresh_token"), ("refresh_token", refresh)],
            )
            .await;
        assert_eq!(refreshed.status(), 200);
        let refreshed: serde_json::Value = refreshed.json().await.expect("json");
        assert_eq!(refreshed["result"]["refresh_token"], refresh);
        assert_ne!(
            refreshed["result"]["access_token"],
            tokens["result"]["access_token"]
        );

        // Credentials in the body are refused: Keystone takes HTTP Basic only.
        let (client_id, secret) = sandbox.client(Institution::Keystone);
        let code = sandbox
            .authorize_at(Institution::Keystone, "demo-alice", "accounts")
            .await;
        let posted = sandbox
            .post("/keystone/oauth/token")
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", code.as_str()),
                ("redirect_uri", REDIRECT_URI),
                ("code_verifier", VERIFIER),
                ("client_id", client_id.as_str()),
                ("client_secret", secret.as_str()),
            ])
            .send()
            .await
            .expect("request");
        assert_eq!(posted.status(), 401);
        let body: serde_json::Value = posted.json().await.expect("json");
        assert_eq!(body["error"], "invalid_client");
        sandbox.shutdown().await;
    }

    /// Follows `Link` headers from `first` to the end; returns the records and page count.
    async fn follow(
        sandbox: &TestSandbox,
        token: &str,
        first: String,
    ) -> (Vec<serde_json::Value>, usize) {
        let http = crate::http::client();
        let mut url = first;
        let mut records = Vec::new();
        for page in 1..=200 {
            let response = http
                .get(&url)
                .bearer_auth(token)
                .send()
                .await
                .expect("request");
            assert_eq!(response.status(), 200, "{url}");
            let next = response
                .headers()
                .get(header::LINK)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let body: serde_json::Value = response.json().await.expect("json");
            records.extend(body["records"].as_array().cloned().expect("records"));
            match next {
                Some(link) => {
                    let target = link
                        .strip_prefix('<')
                        .and_then(|rest| rest.split_once(">; rel=\"next\""))
                        .map(|(target, _)| target.to_owned())
                        .expect("a next link");
                    assert!(
                        target.starts_with(&sandbox.sandbox().base_url()),
                        "{target}"
                    );
                    url = target;
                }
                None => return (records, page),
            }
        }
        panic!("paging did not end");
    }

    #[tokio::test]
    async fn windows_and_link_headers_walk_every_record_once() {
        let sandbox = TestSandbox::start().await;
        let token = token(&sandbox, "demo-alice").await;
        let (accounts, positions, transactions) =
            view(&sandbox.portfolio(Institution::Keystone, "demo-alice"));
        let base = sandbox.sandbox().base_url();

        let (served, pages) = follow(
            &sandbox,
            &token,
            format!("{base}/keystone/v2/positions?page_size=2"),
        )
        .await;
        assert_eq!(pages, positions.len().div_ceil(2));
        assert_eq!(
            served,
            serde_json::to_value(&positions)
                .expect("json")
                .as_array()
                .cloned()
                .expect("array")
        );
        assert!(
            served.iter().any(|p| p.get("ticker").is_none()),
            "some securities have no ticker"
        );
        assert!(served.iter().all(|p| {
            p["market_value"]
                .as_str()
                .is_some_and(|v| v.split_once('.').is_some_and(|(_, d)| d.len() == 4))
        }));

        let (served, _) = follow(
            &sandbox,
            &token,
            format!("{base}/keystone/v2/accounts?page_size=1"),
        )
        .await;
        assert_eq!(served.len(), accounts.len());

        // Every window of 31 days from well before the history to the anchor date.
        let anchor = sandbox.anchor_date;
        let mut from = anchor - chrono::Duration::days(124);
        let mut seen = Vec::new();
        while from <= anchor {
            let to = from + chrono::Duration::days(MAX_WINDOW_DAYS - 1);
            let url = format!("{base}/keystone/v2/transactions?from={from}&to={to}&page_size=3");
            let (served, _) = follow(&sandbox, &token, url).await;
            for record in &served {
                let date = NaiveDate::parse_from_str(
                    record["trade_date"].as_str().expect("date"),
                    DATE_FORMAT,
                )
                .expect("date");
                assert!(from <= date && date <= to);
            }
            seen.extend(served);
            from = to + chrono::Duration::days(1);
        }
        let ids: HashSet<&str> = seen.iter().filter_map(|t| t["txn_ref"].as_str()).collect();
        assert_eq!(ids.len(), seen.len(), "no record twice");
        let mut expected = serde_json::to_value(&transactions)
            .expect("json")
            .as_array()
            .cloned()
            .expect("array");
        let key = |t: &serde_json::Value| t["txn_ref"].as_str().map(str::to_owned);
        expected.sort_by_key(key);
        seen.sort_by_key(key);
        assert_eq!(seen, expected);
        sandbox.shutdown().await;
    }

    #[tokio::test]
    async fn windows_are_required_and_at_most_31_days() {
        let sandbox = TestSandbox::start().await;
        let token = token(&sandbox, "demo-bob").await;
        let cases = [
            ("", "WINDOW-REQUIRED"),
            ("from=2026-10-01", "WINDOW-REQUIRED"),
            ("from=2026-10-01&to=2026-11-02", "WINDOW-TOO-LARGE"),
            ("from=2026-10-02&to=2026-10-01", "WINDOW-ORDER"),
            ("from=10/01/2026&to=2026-10-02", "REQ-DATE"),
            (
                "from=2026-10-01&to=2026-10-05&page_token=bm9wZQ",
                "REQ-TOKEN",
            ),
        ];
        for (query, code) in cases {
            let response = sandbox
                .get(&format!("/keystone/v2/transactions?{query}"))
                .bearer_auth(&token)
                .send()
                .await
                .expect("request");
            assert_eq!(response.status(), 400, "{query}");
            let body: serde_json::Value = response.json().await.expect("json");
            assert_eq!(body["fault"]["code"], code, "{query}");
        }
        let widest = sandbox
            .get("/keystone/v2/transactions?from=2026-10-01&to=2026-11-01")
            .bearer_auth(&token)
            .send()
            .await
            .expect("request");
        assert_eq!(widest.status(), 200);
        sandbox.shutdown().await;
    }

    fn limited(limits: KeystoneLimits) -> SandboxConfig {
        SandboxConfig {
            keystone: limits,
            ..SandboxConfig::default()
        }
    }

    #[tokio::test]
    async fn the_daily_quota_answers_429_until_midnight() {
        let sandbox = TestSandbox::start_with(limited(KeystoneLimits {
            daily_quota: 3,
            ..KeystoneLimits::default()
        }))
        .await;
        let token = token(&sandbox, "demo-carol").await;
        let get = || {
            sandbox
                .get("/keystone/v2/accounts")
                .bearer_auth(&token)
                .send()
        };
        for _ in 0..3 {
            assert_eq!(get().await.expect("request").status(), 200);
        }
        let refused = get().await.expect("request");
        assert_eq!(refused.status(), 429);
        let retry_after: i64 = refused.headers()[header::RETRY_AFTER]
            .to_str()
            .expect("text")
            .parse()
            .expect("seconds");
        assert!((1..=86_401).contains(&retry_after), "{retry_after}");
        let body: serde_json::Value = refused.json().await.expect("json");
        assert_eq!(body["fault"]["code"], "QUOTA-DAILY");
        sandbox.shutdown().await;
    }

    #[tokio::test]
    async fn the_per_second_limit_answers_429_with_retry_after_1() {
        let sandbox = TestSandbox::start_with(limited(KeystoneLimits {
            per_second: 1,
            ..KeystoneLimits::default()
        }))
        .await;
        let token = token(&sandbox, "demo-carol").await;
        // Five requests cannot each have a second of their own this quickly.
        let mut refused = Vec::new();
        for _ in 0..5 {
            let response = sandbox
                .get("/keystone/v2/accounts")
                .bearer_auth(&token)
                .send()
                .await
                .expect("request");
            if response.status() == 429 {
                refused.push(response);
            }
        }
        let response = refused.pop().expect("at least one request refused");
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
        let body: serde_json::Value = response.json().await.expect("json");
        assert_eq!(body["fault"]["code"], "RATE-SECOND");
        sandbox.shutdown().await;
    }

    #[tokio::test]
    async fn under_load_a_client_with_a_short_timeout_times_out() {
        let sandbox = TestSandbox::start_with(limited(KeystoneLimits {
            slow_after_in_flight: 0,
            latency_per_extra_request: Duration::from_secs(60),
            ..KeystoneLimits::default()
        }))
        .await;
        let token = token(&sandbox, "demo-carol").await;
        let error = sandbox
            .get("/keystone/v2/accounts")
            .bearer_auth(&token)
            .timeout(Duration::from_millis(300))
            .send()
            .await
            .expect_err("a request slowed by a minute");
        assert!(error.is_timeout(), "{error}");
        // Not shut down gracefully: the slowed request would hold it for a minute.
        drop(sandbox);
    }
}
