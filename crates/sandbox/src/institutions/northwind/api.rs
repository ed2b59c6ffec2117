//! Northwind Credit Union's data API: every account of a member and all its activity,
//! paged by page number (`page` from 1, `per_page`), each page saying how many there are.
//!
//! Its wire habits: amounts as JSON numbers with every digit the ledger has (a positive
//! amount is money in), times as epoch milliseconds, the credit union's own account kinds
//! (`SHARE`, `DRAFT`, `INVEST`, `IRA`, `ROTH`), and `status_code` 1 for pending, 2 for posted.

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use crate::bearer::{self, ConsentDenied, Denied};
use crate::data::Portfolio;
use crate::grants::Scope;
use crate::{AppState, Institution, Stats};

pub(super) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/northwind/v1/accounts", get(accounts))
        .route("/northwind/v1/transactions", get(transactions))
}

const DEFAULT_PER_PAGE: usize = 25;
const MAX_PER_PAGE: usize = 100;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(super) struct Account {
    pub(super) id: String,
    /// `SHARE` (savings), `DRAFT` (checking), `INVEST`, `IRA` or `ROTH`.
    pub(super) kind: &'static str,
    pub(super) display_name: String,
    pub(super) currency: String,
    pub(super) balance: serde_json::Number,
    pub(super) available: Option<serde_json::Number>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(super) struct Transaction {
    pub(super) id: String,
    pub(super) account_id: String,
    /// Positive is money into the account.
    pub(super) amount: serde_json::Number,
    pub(super) currency: String,
    /// Midnight UTC of the posting date, in epoch milliseconds.
    pub(super) posted_at: i64,
    /// 1 pending, 2 posted.
    pub(super) status_code: u8,
    pub(super) replaces_id: Option<String>,
    pub(super) description: String,
    pub(super) category: Option<String>,
}

/// Decimal text as a JSON number with exactly those digits (`arbitrary_precision`).
fn number(text: &str) -> serde_json::Number {
    text.parse()
        .expect("the generator writes plain decimals, which are JSON numbers")
}

/// The same decimal text with the other sign.
fn negated(text: &str) -> String {
    match text.strip_prefix('-') {
        Some(magnitude) => magnitude.to_owned(),
        None => format!("-{text}"),
    }
}

/// What Northwind holds of a portfolio: every account and every transaction.
pub(super) fn view(portfolio: &Portfolio) -> (Vec<Account>, Vec<Transaction>) {
    let accounts = portfolio
        .accounts
        .iter()
        .map(|account| Account {
            id: account.account_id.clone(),
            kind: match account.subtype.as_str() {
                "savings" => "SHARE",
                "checking" => "DRAFT",
                "ira" => "IRA",
                "roth" => "ROTH",
                _ => "INVEST",
            },
            display_name: account.name.clone(),
            currency: account.balances.iso_currency_code.clone(),
            balance: number(&account.balances.current),
            available: account.balances.available.as_deref().map(number),
        })
        .collect();
    let transactions = portfolio
        .transactions
        .iter()
        .map(|t| Transaction {
            id: t.transaction_id.clone(),
            account_id: t.account_id.clone(),
            // The generator's convention is money out positive; Northwind's the reverse.
            amount: number(&negated(&t.amount)),
            currency: t.iso_currency_code.clone(),
            posted_at: t
                .date
                .and_time(chrono::NaiveTime::MIN)
                .and_utc()
                .timestamp_millis(),
            status_code: if t.pending { 1 } else { 2 },
            replaces_id: t.pending_transaction_id.clone(),
            description: t.name.clone(),
            category: t.category.clone(),
        })
        .collect();
    (accounts, transactions)
}

#[derive(Debug, Deserialize)]
struct PageQuery {
    /// Kept as text so a bad value gets Northwind's error, not the extractor's.
    page: Option<String>,
    per_page: Option<String>,
}

/// `{"items": [...], "page": 1, "total_pages": 3}`; a page past the last is empty.
#[derive(Serialize)]
struct Page<'a> {
    items: &'a [serde_json::Value],
    page: usize,
    total_pages: usize,
}

/// A refused request, answered with Northwind's error body:
/// `{"error": {"status": 401, "detail": "..."}}`.
#[derive(Debug)]
struct Refusal {
    status: StatusCode,
    detail: String,
}

fn refuse(status: StatusCode, detail: String) -> Refusal {
    Refusal { status, detail }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "error": { "status": self.status.as_u16(), "detail": self.detail }
        });
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer error=\"invalid_token\""),
            );
        }
        response
    }
}

async fn accounts(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Response {
    serve(&app, &headers, query, Scope::Accounts, |portfolio| {
        serde_json::to_value(view(portfolio).0)
    })
}

async fn transactions(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Response {
    serve(&app, &headers, query, Scope::Transactions, |portfolio| {
        serde_json::to_value(view(portfolio).1)
    })
}

fn positive(text: Option<&str>, name: &str, default: usize, max: usize) -> Result<usize, Refusal> {
    let Some(text) = text else {
        return Ok(default);
    };
    text.parse::<usize>()
        .ok()
        .filter(|value| (1..=max).contains(value))
        .ok_or_else(|| {
            refuse(
                StatusCode::BAD_REQUEST,
                format!("{name} must be an integer from 1 to {max}"),
            )
        })
}

fn serve(
    app: &AppState,
    headers: &HeaderMap,
    query: Result<Query<PageQuery>, QueryRejection>,
    scope: Scope,
    select: impl FnOnce(&Portfolio) -> serde_json::Result<serde_json::Value>,
) -> Response {
    Stats::bump(&app.stats.api_requests);
    let outcome = (|| {
        let bearer = bearer::authorize(app.grants(Institution::Northwind), headers, scope)
            .map_err(|denied| match denied {
                Denied::InvalidToken => refuse(
                    StatusCode::UNAUTHORIZED,
                    "the access token is missing, unknown, expired or revoked".to_owned(),
                ),
                Denied::InsufficientScope(scope) => refuse(
                    StatusCode::FORBIDDEN,
                    format!("the access token lacks the {scope} scope"),
                ),
            })?;
        bearer::consent(&bearer, headers).map_err(|denied| match denied {
            ConsentDenied::Missing => refuse(
                StatusCode::BAD_REQUEST,
                "the Consent-ID header is required: send the consent_id of the token response"
                    .to_owned(),
            ),
            ConsentDenied::Other => refuse(
                StatusCode::UNAUTHORIZED,
                "the Consent-ID is not the consent this access token was granted on".to_owned(),
            ),
        })?;
        let Query(query) =
            query.map_err(|rejection| refuse(StatusCode::BAD_REQUEST, rejection.body_text()))?;
        let page = positive(query.page.as_deref(), "page", 1, usize::MAX)?;
        let per_page = positive(
            query.per_page.as_deref(),
            "per_page",
            DEFAULT_PER_PAGE,
            MAX_PER_PAGE,
        )?;
        let portfolio = app.portfolio(Institution::Northwind, &bearer.user_id);
        let Ok(serde_json::Value::Array(records)) = select(&portfolio) else {
            return Err(refuse(
                StatusCode::INTERNAL_SERVER_ERROR,
                "records could not be serialized".to_owned(),
            ));
        };
        let total_pages = records.len().div_ceil(per_page);
        let start = (page - 1).saturating_mul(per_page).min(records.len());
        let end = start.saturating_add(per_page).min(records.len());
        Ok(Json(Page {
            items: &records[start..end],
            page,
            total_pages,
        })
        .into_response())
    })();
    outcome.unwrap_or_else(IntoResponse::into_response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::TestSandbox;

    #[test]
    fn negation_keeps_every_digit() {
        assert_eq!(negated("12.345600"), "-12.345600");
        assert_eq!(negated("-0.000001"), "0.000001");
    }

    #[tokio::test]
    async fn oauth_is_standard_with_pkce() {
        let sandbox = TestSandbox::start().await;
        let tokens = sandbox
            .link_at(
                Institution::Northwind,
                "demo-carol",
                "accounts transactions",
            )
            .await;
        assert_eq!(tokens["token_type"], "Bearer");
        assert_eq!(tokens["expires_in"], 3600);
        assert_eq!(tokens["scope"], "accounts transactions");
        assert!(
            tokens["access_token"]
                .as_str()
                .is_some_and(|t| t.starts_with("nwcu_at_"))
        );
        // Without a challenge the request is refused: PKCE is required.
        let (client_id, _) = sandbox.client(Institution::Northwind);
        let response = sandbox
            .get("/northwind/oauth/authorize")
            .query(&[
                ("response_type", "code"),
                ("client_id", client_id.as_str()),
                ("redirect_uri", crate::test_support::REDIRECT_URI),
                ("state", "s"),
                ("login_hint", "demo-carol"),
            ])
            .send()
            .await
            .expect("authorize");
        assert_eq!(response.status(), 302);
        let query = crate::test_support::location_query(&response);
        assert_eq!(
            query.get("error").map(String::as_str),
            Some("invalid_request")
        );
        sandbox.shutdown().await;
    }

    #[tokio::test]
    async fn page_numbers_walk_every_record_once_with_exact_numbers() {
        let sandbox = TestSandbox::start().await;
        let tokens = sandbox
            .link_at(
                Institution::Northwind,
                "demo-alice",
                "accounts transactions",
            )
            .await;
        let token = tokens["access_token"].as_str().expect("token");
        let consent = tokens["consent_id"].as_str().expect("consent");
        let (accounts, transactions) =
            view(&sandbox.portfolio(Institution::Northwind, "demo-alice"));

        let mut served = Vec::new();
        let mut bodies = String::new();
        let mut total_pages = None;
        for page in 1..=100 {
            let response = sandbox
                .get("/northwind/v1/transactions")
                .bearer_auth(token)
                .header("Consent-ID", consent)
                .query(&[("page", page.to_string()), ("per_page", "4".to_owned())])
                .send()
                .await
                .expect("request");
            assert_eq!(response.status(), 200);
            let text = response.text().await.expect("body");
            let body: serde_json::Value = serde_json::from_str(&text).expect("json");
            assert_eq!(body["page"], page);
            let items = body["items"].as_array().cloned().expect("items");
            total_pages = body["total_pages"].as_u64();
            bodies.push_str(&text);
            if items.is_empty() {
                // A page past the last is empty, not an error.
                assert_eq!(Some(page as u64 - 1), total_pages);
                break;
            }
            served.extend(items);
        }
        assert_eq!(total_pages, Some(transactions.len().div_ceil(4) as u64));
        assert_eq!(
            served,
            serde_json::to_value(&transactions)
                .expect("json")
                .as_array()
                .cloned()
                .expect("array")
        );
        // Every digit of every amount is on the wire, as a number.
        for transaction in &transactions {
            assert!(
                bodies.contains(&format!("\"amount\":{}", transaction.amount)),
                "{}",
                transaction.amount
            );
        }

        let response = sandbox
            .get("/northwind/v1/accounts")
            .bearer_auth(token)
            .header("Consent-ID", consent)
            .send()
            .await
            .expect("request");
        let body: serde_json::Value = response.json().await.expect("json");
        assert_eq!(body["total_pages"], 1);
        assert_eq!(
            body["items"],
            serde_json::to_value(&accounts).expect("json")
        );
        sandbox.shutdown().await;
    }

    #[tokio::test]
    async fn data_requests_repeat_the_consent_of_their_grant() {
        let sandbox = TestSandbox::start().await;
        let mut granted = Vec::new();
        for user in ["demo-alice", "demo-bob"] {
            granted.push(
                sandbox
                    .link_at(Institution::Northwind, user, "accounts")
                    .await,
            );
        }
        let (alice, bob) = (&granted[0], &granted[1]);
        let consent =
            |tokens: &serde_json::Value| tokens["consent_id"].as_str().expect("consent").to_owned();
        assert!(consent(alice).starts_with("nwcu_consent_"));
        assert_ne!(consent(alice), consent(bob), "a consent per grant");
        let fetch = |consent: Option<String>| {
            let mut request = sandbox
                .get("/northwind/v1/accounts")
                .bearer_auth(alice["access_token"].as_str().expect("token"));
            if let Some(consent) = consent {
                request = request.header("Consent-ID", consent);
            }
            request.send()
        };
        assert_eq!(
            fetch(Some(consent(alice))).await.expect("request").status(),
            200
        );
        let missing = fetch(None).await.expect("request");
        assert_eq!(missing.status(), 400);
        assert!(missing.text().await.expect("body").contains("Consent-ID"));
        assert_eq!(
            fetch(Some(consent(bob))).await.expect("request").status(),
            401
        );
        sandbox.shutdown().await;
    }

    #[tokio::test]
    async fn bad_pages_are_refused() {
        let sandbox = TestSandbox::start().await;
        let tokens = sandbox
            .link_at(Institution::Northwind, "demo-bob", "accounts")
            .await;
        let token = tokens["access_token"].as_str().expect("token");
        let consent = tokens["consent_id"].as_str().expect("consent");
        for query in [[("page", "0")], [("per_page", "101")], [("page", "x")]] {
            let response = sandbox
                .get("/northwind/v1/accounts")
                .bearer_auth(token)
                .header("Consent-ID", consent)
                .query(&query)
                .send()
                .await
                .expect("request");
            assert_eq!(response.status(), 400, "{query:?}");
        }
        let forbidden = sandbox
            .get("/northwind/v1/transactions")
            .bearer_auth(token)
            .header("Consent-ID", consent)
            .send()
            .await
            .expect("request");
        assert_eq!(forbidden.status(), 403);
        sandbox.shutdown().await;
    }
}
