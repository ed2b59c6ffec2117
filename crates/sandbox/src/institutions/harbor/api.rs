//! Harbor Savings Bank's data API: a retail bank's checking and savings accounts and
//! their card and cash activity, paged by `offset` and `limit`.
//!
//! Its wire habits, each one a test for a connector: money as strings of integer cents,
//! a positive transaction amount meaning money out (a debit), dates as `MM/DD/YYYY`, the
//! bank's own product codes (`CHK`, `SAV`), and `status` `PENDING`/`POSTED` with the
//! posted record naming the pending one it replaces.

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};

use crate::bearer::{self, Denied};
use crate::data::Portfolio;
use crate::grants::Scope;
use crate::{AppState, Institution, Stats};

pub(super) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/harbor/api/accounts", get(accounts))
        .route("/harbor/api/transactions", get(transactions))
}

const DEFAULT_LIMIT: usize = 25;
const MAX_LIMIT: usize = 100;
const DATE_FORMAT: &str = "%m/%d/%Y";

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(super) struct Account {
    pub(super) account_number: String,
    /// `CHK` or `SAV`.
    pub(super) product_code: &'static str,
    pub(super) nickname: String,
    pub(super) title: String,
    pub(super) last_four: String,
    pub(super) currency: String,
    /// Cents, as text.
    pub(super) ledger_balance: String,
    pub(super) available_balance: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(super) struct Transaction {
    pub(super) transaction_id: String,
    pub(super) account_number: String,
    /// Cents, as text; positive is money out of the account.
    pub(super) amount: String,
    pub(super) currency: String,
    /// `MM/DD/YYYY`.
    pub(super) posted_date: String,
    /// `PENDING` or `POSTED`.
    pub(super) status: &'static str,
    pub(super) replaces_pending_id: Option<String>,
    pub(super) memo: String,
    pub(super) category: Option<String>,
}

/// Decimal text as a whole number of cents, rounded half away from zero: the bank keeps
/// no fractions of a cent (interest accrues in them, and posts rounded).
fn cents(text: &str) -> String {
    let value = Decimal::from_str_exact(text).expect("the generator writes plain decimals");
    let mut rounded = value.round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero);
    rounded.rescale(2);
    rounded.mantissa().to_string()
}

/// What Harbor holds of a portfolio: its depository accounts and their cash activity.
pub(super) fn view(portfolio: &Portfolio) -> (Vec<Account>, Vec<Transaction>) {
    let accounts: Vec<Account> = portfolio
        .accounts
        .iter()
        .filter(|account| account.account_type == "depository")
        .map(|account| Account {
            account_number: account.account_id.clone(),
            product_code: if account.subtype == "savings" {
                "SAV"
            } else {
                "CHK"
            },
            nickname: account.name.clone(),
            title: account.official_name.clone(),
            last_four: account.mask.clone(),
            currency: account.balances.iso_currency_code.clone(),
            ledger_balance: cents(&account.balances.current),
            available_balance: account.balances.available.as_deref().map(cents),
        })
        .collect();
    let transactions = portfolio
        .transactions
        .iter()
        .filter(|t| {
            t.investment_type.is_none() && accounts.iter().any(|a| a.account_number == t.account_id)
        })
        .map(|t| Transaction {
            transaction_id: t.transaction_id.clone(),
            account_number: t.account_id.clone(),
            // The generator's convention is already money out positive.
            amount: cents(&t.amount),
            currency: t.iso_currency_code.clone(),
            posted_date: t.date.format(DATE_FORMAT).to_string(),
            status: if t.pending { "PENDING" } else { "POSTED" },
            replaces_pending_id: t.pending_transaction_id.clone(),
            memo: t.name.clone(),
            category: t.category.clone(),
        })
        .collect();
    (accounts, transactions)
}

#[derive(Debug, Deserialize)]
struct PageQuery {
    /// Kept as text so a bad value gets Harbor's error, not the extractor's.
    offset: Option<String>,
    limit: Option<String>,
}

/// `{"data": [...], "total": N}`.
#[derive(Serialize)]
struct Page<'a, T> {
    data: &'a [T],
    total: usize,
}

/// A refused request, answered with Harbor's error body: `{"code": "...", "message": "..."}`.
#[derive(Debug)]
struct Refusal {
    status: StatusCode,
    code: &'static str,
    message: String,
}

fn refuse(status: StatusCode, code: &'static str, message: String) -> Refusal {
    Refusal {
        status,
        code,
        message,
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        #[derive(Serialize)]
        struct Body {
            code: &'static str,
            message: String,
        }
        let body = Body {
            code: self.code,
            message: self.message,
        };
        (self.status, Json(body)).into_response()
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

fn number(text: Option<&str>, name: &str, default: usize, max: usize) -> Result<usize, Refusal> {
    let Some(text) = text else {
        return Ok(default);
    };
    text.parse::<usize>()
        .ok()
        .filter(|value| *value <= max)
        .ok_or_else(|| {
            refuse(
                StatusCode::BAD_REQUEST,
                "BAD_REQUEST",
                format!("{name} must be an integer from 0 to {max}"),
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
        let bearer = bearer::authorize(app.grants(Institution::Harbor), headers, scope).map_err(
            |denied| match denied {
                Denied::InvalidToken => refuse(
                    StatusCode::UNAUTHORIZED,
                    "TOKEN_INVALID",
                    "the access token is missing, unknown, expired or revoked".to_owned(),
                ),
                Denied::InsufficientScope(scope) => refuse(
                    StatusCode::FORBIDDEN,
                    "SCOPE_MISSING",
                    format!("the access token lacks the {scope} scope"),
                ),
            },
        )?;
        let Query(query) = query.map_err(|rejection| {
            refuse(
                StatusCode::BAD_REQUEST,
                "BAD_REQUEST",
                rejection.body_text(),
            )
        })?;
        let offset = number(query.offset.as_deref(), "offset", 0, usize::MAX)?;
        let limit = number(query.limit.as_deref(), "limit", DEFAULT_LIMIT, MAX_LIMIT)?;
        if limit == 0 {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                "BAD_REQUEST",
                format!("limit must be an integer from 1 to {MAX_LIMIT}"),
            ));
        }
        let portfolio = app.portfolio(Institution::Harbor, &bearer.user_id);
        let records = match select(&portfolio) {
            Ok(serde_json::Value::Array(records)) => records,
            _ => {
                return Err(refuse(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "INTERNAL",
                    "records could not be serialized".to_owned(),
                ));
            }
        };
        let start = offset.min(records.len());
        let end = start.saturating_add(limit).min(records.len());
        Ok(Json(Page {
            data: &records[start..end],
            total: records.len(),
        })
        .into_response())
    })();
    outcome.unwrap_or_else(IntoResponse::into_response)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::test_support::{REDIRECT_URI, TestSandbox, location_query};

    #[test]
    fn cents_round_half_away_from_zero() {
        assert_eq!(cents("12.34"), "1234");
        assert_eq!(cents("-0.105000"), "-11");
        assert_eq!(cents("0.104999"), "10");
        assert_eq!(cents("12345678901234567.89"), "1234567890123456789");
    }

    /// Links `user` at Harbor the way its client must: no PKCE, comma-separated scopes,
    /// credentials in the body. Returns the token response.
    async fn link(sandbox: &TestSandbox, user: &str) -> serde_json::Value {
        let client = sandbox.client(Institution::Harbor);
        let response = sandbox
            .get("/harbor/oauth/authorize")
            .query(&[
                ("response_type", "code"),
                ("client_id", client.0.as_str()),
                ("redirect_uri", REDIRECT_URI),
                ("scope", "accounts,transactions"),
                ("state", "s"),
                ("login_hint", user),
            ])
            .send()
            .await
            .expect("authorize");
        assert_eq!(response.status(), 302);
        let code = location_query(&response).remove("code").expect("code");
        assert!(code.starts_with("hsb_ac_"), "{code}");
        let form = [
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", REDIRECT_URI),
            ("client_id", client.0.as_str()),
            ("client_secret", client.1.as_str()),
        ];
        let response = sandbox
            .post("/harbor/oauth/token")
            .form(&form)
            .send()
            .await
            .expect("token");
        assert_eq!(response.status(), 200);
        response.json().await.expect("json")
    }

    #[tokio::test]
    async fn oauth_takes_body_credentials_only_and_comma_separated_scopes() {
        let sandbox = TestSandbox::start().await;
        let tokens = link(&sandbox, "demo-alice").await;
        assert_eq!(tokens["expires_in"], serde_json::json!("3600"));
        assert_eq!(tokens["scope"], "accounts,transactions");
        assert_eq!(tokens["token_type"], "Bearer");
        let (client_id, secret) = sandbox.client(Institution::Harbor);

        let refresh = tokens["refresh_token"].as_str().expect("refresh token");
        let basic = sandbox
            .post("/harbor/oauth/token")
            .basic_auth(&client_id, Some(&secret))
            .form(&[("grant_type", "refresh_token"), ("refresh_token", refresh)])
            .send()
            .await
            .expect("request");
        assert_eq!(basic.status(), 401);
        let body: serde_json::Value = basic.json().await.expect("json");
        assert_eq!(body["error"], "invalid_client");

        let rotated = sandbox
            .post("/harbor/oauth/token")
            .form(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh),
                ("client_id", &client_id),
                ("client_secret", &secret),
            ])
            .send()
            .await
            .expect("request");
        assert_eq!(rotated.status(), 200);
        let rotated: serde_json::Value = rotated.json().await.expect("json");
        assert_ne!(rotated["refresh_token"], tokens["refresh_token"]);

        // Space-separated scopes are one unknown word to Harbor; holdings it has none of.
        for scope in ["accounts transactions", "accounts,holdings"] {
            let response = sandbox
                .get("/harbor/oauth/authorize")
                .query(&[
                    ("response_type", "code"),
                    ("client_id", client_id.as_str()),
                    ("redirect_uri", REDIRECT_URI),
                    ("scope", scope),
                    ("state", "s"),
                    ("login_hint", "demo-alice"),
                ])
                .send()
                .await
                .expect("authorize");
            assert_eq!(response.status(), 302);
            let query = location_query(&response);
            assert_eq!(
                query.get("error").map(String::as_str),
                Some("invalid_scope"),
                "{scope}"
            );
        }
        sandbox.shutdown().await;
    }

    async fn all_pages(
        sandbox: &TestSandbox,
        endpoint: &str,
        token: &str,
        limit: usize,
    ) -> Vec<serde_json::Value> {
        let mut records = Vec::new();
        let mut offset = 0;
        for _ in 0..100 {
            let response = sandbox
                .get(&format!("/harbor/api/{endpoint}"))
                .bearer_auth(token)
                .query(&[("offset", offset.to_string()), ("limit", limit.to_string())])
                .send()
                .await
                .expect("request");
            assert_eq!(response.status(), 200);
            let page: serde_json::Value = response.json().await.expect("json");
            let batch = page["data"].as_array().cloned().expect("data");
            assert!(batch.len() <= limit);
            let total = page["total"].as_u64().expect("total") as usize;
            offset += batch.len();
            records.extend(batch);
            if offset >= total {
                return records;
            }
        }
        panic!("paging did not end");
    }

    #[tokio::test]
    async fn offset_paging_walks_every_record_once_in_harbors_format() {
        let sandbox = TestSandbox::start().await;
        let tokens = link(&sandbox, "demo-alice").await;
        let token = tokens["access_token"].as_str().expect("token");
        let (accounts, transactions) = view(&sandbox.portfolio(Institution::Harbor, "demo-alice"));
        assert!(transactions.len() > 3);

        let served = all_pages(&sandbox, "transactions", token, 3).await;
        assert_eq!(
            served,
            serde_json::to_value(&transactions)
                .expect("json")
                .as_array()
                .cloned()
                .expect("array")
        );
        let ids: HashSet<&str> = served
            .iter()
            .filter_map(|t| t["transaction_id"].as_str())
            .collect();
        assert_eq!(ids.len(), served.len());
        assert!(served.iter().all(|t| {
            t["transaction_id"]
                .as_str()
                .is_some_and(|id| id.starts_with("hsb_txn_"))
        }));
        assert!(served.iter().any(|t| t["status"] == "PENDING"));
        assert!(served.iter().any(|t| t["replaces_pending_id"].is_string()));
        assert!(served.iter().all(|t| {
            t["amount"]
                .as_str()
                .is_some_and(|a| a.parse::<i128>().is_ok())
        }));
        assert!(served.iter().all(|t| {
            chrono::NaiveDate::parse_from_str(t["posted_date"].as_str().expect("date"), DATE_FORMAT)
                .is_ok()
        }));

        let served = all_pages(&sandbox, "accounts", token, 1).await;
        assert_eq!(served.len(), accounts.len());
        assert!(
            served
                .iter()
                .all(|a| matches!(a["product_code"].as_str(), Some("CHK" | "SAV")))
        );
        sandbox.shutdown().await;
    }

    #[tokio::test]
    async fn bad_paging_and_tokens_are_refused_in_harbors_words() {
        let sandbox = TestSandbox::start().await;
        let tokens = link(&sandbox, "demo-bob").await;
        let token = tokens["access_token"].as_str().expect("token");
        for query in [[("limit", "0")], [("limit", "101")], [("offset", "-1")]] {
            let response = sandbox
                .get("/harbor/api/transactions")
                .bearer_auth(token)
                .query(&query)
                .send()
                .await
                .expect("request");
            assert_eq!(response.status(), 400, "{query:?}");
            let body: serde_json::Value = response.json().await.expect("json");
            assert_eq!(body["code"], "BAD_REQUEST");
        }
        let anonymous = sandbox
            .get("/harbor/api/accounts")
            .send()
            .await
            .expect("request");
        assert_eq!(anonymous.status(), 401);
        let body: serde_json::Value = anonymous.json().await.expect("json");
        assert_eq!(body["code"], "TOKEN_INVALID");
        sandbox.shutdown().await;
    }
}
