//! Larkspur's data API, in the shape of Plaid's: `POST` with JSON bodies.
//!
//! Its wire habits, each one a test for a connector: the user's `access_token` in the
//! body, not a header; the client's credentials in the body or in `PLAID-CLIENT-ID` and
//! `PLAID-SECRET` headers; holdings that refer to a `securities` array of the same
//! answer by `security_id`; a `/transactions/sync` change feed ([`crate::changes`]);
//! JSON numbers with money out positive; and every refusal an HTTP 400 with an
//! `error_code` saying what happened.

use std::sync::Arc;

use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::bearer::{self, Denied};
use crate::changes::{self, FeedError};
use crate::data::{Portfolio, Transaction, json_number as number};
use crate::grants::Scope;
use crate::{AppState, Institution, Stats};

pub(super) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/larkspur/accounts/get", post(accounts))
        .route("/larkspur/investments/holdings/get", post(holdings))
        .route("/larkspur/transactions/sync", post(transactions_sync))
}

const DEFAULT_COUNT: usize = 100;
const MAX_COUNT: usize = 500;

/// What every call's body may carry.
#[derive(Debug, Deserialize)]
struct Body {
    access_token: Option<String>,
    client_id: Option<String>,
    secret: Option<String>,
    cursor: Option<String>,
    count: Option<Value>,
}

/// A refusal in Plaid's words: HTTP 400, told apart by `error_code`.
#[derive(Debug)]
struct Refusal {
    error_type: &'static str,
    error_code: &'static str,
    message: String,
}

fn refuse(error_type: &'static str, error_code: &'static str, message: String) -> Refusal {
    Refusal {
        error_type,
        error_code,
        message,
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "error_type": self.error_type,
            "error_code": self.error_code,
            "error_message": self.message,
            "display_message": Value::Null,
            "request_id": uuid::Uuid::new_v4().simple().to_string(),
        });
        (StatusCode::BAD_REQUEST, Json(body)).into_response()
    }
}

/// The user behind a call: the client's credentials checked, then the access token.
fn authenticate(
    app: &AppState,
    headers: &HeaderMap,
    body: &Body,
    scope: Scope,
) -> Result<String, Refusal> {
    Stats::bump(&app.stats.api_requests);
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let client_id = body.client_id.as_deref().or(header("plaid-client-id"));
    let secret = body.secret.as_deref().or(header("plaid-secret"));
    let expected = app.config.client(Institution::Larkspur);
    if client_id != Some(expected.client_id.as_str())
        || secret != Some(expected.client_secret.expose_secret())
    {
        return Err(refuse(
            "INVALID_INPUT",
            "INVALID_API_KEYS",
            "invalid client_id or secret provided".into(),
        ));
    }
    let token = body.access_token.as_deref().ok_or_else(|| {
        refuse(
            "INVALID_REQUEST",
            "MISSING_FIELDS",
            "the following required fields are missing: access_token".into(),
        )
    })?;
    bearer::authorize_token(app.grants(Institution::Larkspur), token, scope)
        .map(|bearer| bearer.user_id)
        .map_err(|denied| match denied {
            Denied::InvalidToken => refuse(
                "INVALID_INPUT",
                "INVALID_ACCESS_TOKEN",
                "provided access token is in an invalid format, expired or revoked".into(),
            ),
            Denied::InsufficientScope(scope) => refuse(
                "INVALID_REQUEST",
                "INVALID_PRODUCT",
                format!("the access token was not granted {scope}"),
            ),
        })
}

fn body(payload: Result<Json<Body>, JsonRejection>) -> Result<Body, Refusal> {
    payload
        .map(|Json(body)| body)
        .map_err(|rejection| refuse("INVALID_REQUEST", "INVALID_BODY", rejection.body_text()))
}

fn answer(outcome: Result<Value, Refusal>) -> Response {
    match outcome {
        Ok(mut value) => {
            value["request_id"] = Value::from(uuid::Uuid::new_v4().simple().to_string());
            Json(value).into_response()
        }
        Err(refusal) => refusal.into_response(),
    }
}

/// Plaid's account: the generator's, which already speaks Plaid.
#[derive(Serialize)]
struct Account<'a> {
    account_id: &'a str,
    balances: Balances<'a>,
    mask: &'a str,
    name: &'a str,
    official_name: &'a str,
    subtype: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
}

#[derive(Serialize)]
struct Balances<'a> {
    available: Option<Value>,
    current: Value,
    iso_currency_code: &'a str,
    limit: Option<Value>,
    unofficial_currency_code: Option<&'a str>,
}

fn accounts_of(portfolio: &Portfolio) -> Vec<Account<'_>> {
    portfolio
        .accounts
        .iter()
        .map(|a| Account {
            account_id: &a.account_id,
            balances: Balances {
                available: a.balances.available.as_deref().map(number),
                current: number(&a.balances.current),
                iso_currency_code: &a.balances.iso_currency_code,
                limit: None,
                unofficial_currency_code: None,
            },
            mask: &a.mask,
            name: &a.name,
            official_name: &a.official_name,
            subtype: &a.subtype,
            kind: &a.account_type,
        })
        .collect()
}

fn item() -> Value {
    serde_json::json!({ "item_id": "lsp_item", "institution_id": "ins_larkspur" })
}

async fn accounts(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    payload: Result<Json<Body>, JsonRejection>,
) -> Response {
    answer((|| {
        let body = body(payload)?;
        let user = authenticate(&app, &headers, &body, Scope::Accounts)?;
        let portfolio = app.portfolio(Institution::Larkspur, &user);
        Ok(serde_json::json!({ "accounts": accounts_of(&portfolio), "item": item() }))
    })())
}

async fn holdings(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    payload: Result<Json<Body>, JsonRejection>,
) -> Response {
    answer((|| {
        let body = body(payload)?;
        let user = authenticate(&app, &headers, &body, Scope::Holdings)?;
        let portfolio = app.portfolio(Institution::Larkspur, &user);
        let holdings: Vec<Value> = portfolio
            .holdings
            .iter()
            .map(|h| {
                serde_json::json!({
                    "account_id": h.account_id,
                    "security_id": h.security.security_id,
                    "quantity": number(&h.quantity),
                    "cost_basis": number(&h.cost_basis),
                    "institution_price": number(&h.institution_price),
                    "institution_price_as_of": h.institution_price_as_of,
                    "institution_value": number(&h.institution_value),
                    "iso_currency_code": h.iso_currency_code,
                })
            })
            .collect();
        // Each security once, however many accounts hold it.
        let mut securities: Vec<Value> = Vec::new();
        for h in &portfolio.holdings {
            let s = &h.security;
            if securities
                .iter()
                .any(|known| known["security_id"] == s.security_id.as_str())
            {
                continue;
            }
            securities.push(serde_json::json!({
                "security_id": s.security_id,
                "ticker_symbol": s.ticker_symbol,
                "cusip": s.cusip,
                "isin": s.isin,
                "name": s.name,
                "type": s.security_type,
                "close_price": number(&s.close_price),
                "close_price_as_of": s.close_price_as_of,
                "iso_currency_code": s.iso_currency_code,
            }));
        }
        let investment: Vec<Account<'_>> = accounts_of(&portfolio)
            .into_iter()
            .filter(|a| a.kind == "investment")
            .collect();
        Ok(serde_json::json!({
            "accounts": investment,
            "holdings": holdings,
            "securities": securities,
            "item": item(),
        }))
    })())
}

/// A transaction as Larkspur sends it: the generator's cash activity, with Plaid's
/// `personal_finance_category` for its category.
fn transaction(t: &Transaction) -> Value {
    serde_json::json!({
        "transaction_id": t.transaction_id,
        "account_id": t.account_id,
        "amount": number(&t.amount),
        "iso_currency_code": t.iso_currency_code,
        "date": t.date,
        "pending": t.pending,
        "pending_transaction_id": t.pending_transaction_id,
        "name": t.name,
        "personal_finance_category": t.category.as_ref().map(|c| serde_json::json!({ "primary": c })),
    })
}

async fn transactions_sync(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    payload: Result<Json<Body>, JsonRejection>,
) -> Response {
    answer((|| {
        let body = body(payload)?;
        let user = authenticate(&app, &headers, &body, Scope::Transactions)?;
        let count = match &body.count {
            None => DEFAULT_COUNT,
            Some(value) => value
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .filter(|n| (1..=MAX_COUNT).contains(n))
                .ok_or_else(|| {
                    refuse(
                        "INVALID_REQUEST",
                        "INVALID_FIELD",
                        format!("count must be an integer from 1 to {MAX_COUNT}"),
                    )
                })?,
        };
        let page = changes::page(
            &app,
            Institution::Larkspur,
            &user,
            body.cursor.as_deref(),
            count,
        )
        .map_err(|error| match error {
            FeedError::InvalidCursor => refuse(
                "INVALID_INPUT",
                "INVALID_FIELD",
                "cursor is not one this endpoint issued for this access token".into(),
            ),
            FeedError::Mutation => refuse(
                "TRANSACTIONS_ERROR",
                "TRANSACTIONS_SYNC_MUTATION_DURING_PAGINATION",
                "underlying transaction data changed since the last page was fetched; restart from the first cursor".into(),
            ),
        })?;
        // Plaid serves investment activity from another endpoint.
        let cash = |list: &[Transaction]| -> Vec<Value> {
            list.iter()
                .filter(|t| t.investment_type.is_none())
                .map(transaction)
                .collect()
        };
        Ok(serde_json::json!({
            "added": cash(&page.added),
            "modified": cash(&page.modified),
            "removed": page
                .removed
                .iter()
                .map(|id| serde_json::json!({ "transaction_id": id }))
                .collect::<Vec<_>>(),
            "next_cursor": page.next_cursor,
            "has_more": page.has_more,
        }))
    })())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::TestSandbox;

    #[tokio::test]
    async fn calls_take_the_token_and_credentials_in_the_body_or_headers() {
        let sandbox = TestSandbox::start().await;
        let tokens = sandbox
            .link_at(
                Institution::Larkspur,
                "demo-alice",
                "accounts holdings transactions",
            )
            .await;
        let token = tokens["access_token"].as_str().expect("token");
        let (client_id, secret) = sandbox.client(Institution::Larkspur);
        let in_body: Value = sandbox
            .post("/larkspur/accounts/get")
            .json(&serde_json::json!({"client_id": client_id, "secret": secret, "access_token": token}))
            .send()
            .await
            .expect("request")
            .json()
            .await
            .expect("json");
        assert!(!in_body["accounts"].as_array().expect("accounts").is_empty());
        let holdings: Value = sandbox
            .post("/larkspur/investments/holdings/get")
            .header("PLAID-CLIENT-ID", &client_id)
            .header("PLAID-SECRET", &secret)
            .json(&serde_json::json!({"access_token": token}))
            .send()
            .await
            .expect("request")
            .json()
            .await
            .expect("json");
        let securities = holdings["securities"].as_array().expect("securities");
        for holding in holdings["holdings"].as_array().expect("holdings") {
            let listed = securities
                .iter()
                .filter(|s| s["security_id"] == holding["security_id"])
                .count();
            assert_eq!(listed, 1, "{holding}");
        }
        let refused = sandbox
            .post("/larkspur/accounts/get")
            .json(&serde_json::json!({"client_id": client_id, "secret": "wrong", "access_token": token}))
            .send()
            .await
            .expect("request");
        assert_eq!(refused.status(), 400);
        let body: Value = refused.json().await.expect("json");
        assert_eq!(body["error_code"], "INVALID_API_KEYS");
        let expired = sandbox
            .post("/larkspur/transactions/sync")
            .json(&serde_json::json!({"client_id": client_id, "secret": secret, "access_token": "lsp_at_nope"}))
            .send()
            .await
            .expect("request");
        let body: Value = expired.json().await.expect("json");
        assert_eq!(body["error_code"], "INVALID_ACCESS_TOKEN");
        sandbox.shutdown().await;
    }
}
