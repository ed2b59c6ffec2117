//! Albion's data API, in UK Open Banking's Account and Transaction API (v3.1) shapes.
//!
//! Its wire habits, each one a test for a connector: current and savings accounts
//! listed without balances; balances per account as a list picked by `Type`, each an
//! unsigned amount in text with a `CreditDebitIndicator`; transactions per account
//! between `fromBookingDateTime` and `toBookingDateTime` (the time zone ignored, as
//! the standard says), 25 a page, the next page's absolute URL in `Links.Next`;
//! `Booked` and `Pending`; errors in the standard's `OBErrorResponse1` shape.

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{NaiveDate, NaiveDateTime};
use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::bearer::{self, Denied};
use crate::data::Portfolio;
use crate::fapi;
use crate::grants::Scope;
use crate::{AppState, Institution, Stats};

const BASE: &str = "/albion/open-banking/v3.1/aisp";
const PAGE_SIZE: usize = 25;
/// Albion keeps sterling accounts only.
const CURRENCY: &str = "GBP";

pub(super) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route(&format!("{BASE}/accounts"), get(accounts))
        .route(
            &format!("{BASE}/accounts/{{account_id}}/balances"),
            get(balances),
        )
        .route(
            &format!("{BASE}/accounts/{{account_id}}/transactions"),
            get(transactions),
        )
}

/// `{"Amount": "12.30", "Currency": "GBP"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct Amount {
    pub(crate) amount: String,
    pub(crate) currency: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct Identification {
    pub(crate) scheme_name: &'static str,
    pub(crate) identification: String,
    pub(crate) name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct Account {
    pub(crate) account_id: String,
    pub(crate) status: &'static str,
    pub(crate) currency: &'static str,
    pub(crate) account_type: &'static str,
    /// `CurrentAccount` or `Savings`.
    pub(crate) account_sub_type: &'static str,
    pub(crate) nickname: String,
    pub(crate) account: Vec<Identification>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct Balance {
    pub(crate) account_id: String,
    /// `Credit` (in the customer's favour) or `Debit` (overdrawn).
    pub(crate) credit_debit_indicator: &'static str,
    /// `InterimBooked` or `InterimAvailable`.
    #[serde(rename = "Type")]
    pub(crate) kind: &'static str,
    pub(crate) date_time: String,
    pub(crate) amount: Amount,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct Transaction {
    pub(crate) account_id: String,
    pub(crate) transaction_id: String,
    /// `Credit` (money in) or `Debit` (money out).
    pub(crate) credit_debit_indicator: &'static str,
    /// `Booked` or `Pending`.
    pub(crate) status: &'static str,
    pub(crate) booking_date_time: String,
    pub(crate) transaction_information: String,
    pub(crate) amount: Amount,
    /// Not part of the wire format: the day it was booked, for date ranges.
    #[serde(skip)]
    pub(crate) date: NaiveDate,
}

/// The largest whole amount UK Open Banking's `Amount` can say is 13 digits long.
const AMOUNT_MODULUS: i64 = 10_000_000_000_000;

/// A decimal the generator wrote, as Albion sends it: pence, without a sign, and
/// within the standard's 13 whole digits (the generator's stress amounts, which run
/// to 17, keep their last 13).
pub(crate) fn pence(value: Decimal) -> String {
    let mut rounded = (value.abs() % Decimal::from(AMOUNT_MODULUS))
        .round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero);
    rounded.rescale(2);
    rounded.to_string()
}

fn decimal(text: &str) -> Decimal {
    Decimal::from_str_exact(text).expect("the generator writes plain decimals")
}

/// A sort code and account number that stay the same for the account.
fn sort_code_and_number(account_id: &str) -> String {
    let digest = Sha256::digest(account_id.as_bytes());
    digest
        .iter()
        .take(14)
        .map(|b| char::from(b'0' + b % 10))
        .collect()
}

/// What Albion holds of a portfolio: its current and savings accounts, their
/// balances and their cash activity.
pub(crate) fn view(portfolio: &Portfolio) -> (Vec<Account>, Vec<Transaction>) {
    let accounts: Vec<Account> = portfolio
        .accounts
        .iter()
        .filter(|a| a.account_type == "depository")
        .map(|a| Account {
            account_id: a.account_id.clone(),
            status: "Enabled",
            currency: CURRENCY,
            account_type: "Personal",
            account_sub_type: if a.subtype == "savings" {
                "Savings"
            } else {
                "CurrentAccount"
            },
            nickname: a.name.clone(),
            account: vec![Identification {
                scheme_name: "UK.OBIE.SortCodeAccountNumber",
                identification: sort_code_and_number(&a.account_id),
                name: a.official_name.clone(),
            }],
        })
        .collect();
    let transactions = portfolio
        .transactions
        .iter()
        .filter(|t| {
            t.investment_type.is_none() && accounts.iter().any(|a| a.account_id == t.account_id)
        })
        .map(|t| {
            // The generator's amounts are money out positive.
            let amount = decimal(&t.amount);
            Transaction {
                account_id: t.account_id.clone(),
                transaction_id: t.transaction_id.clone(),
                credit_debit_indicator: if amount.is_sign_negative() {
                    "Credit"
                } else {
                    "Debit"
                },
                status: if t.pending { "Pending" } else { "Booked" },
                booking_date_time: format!("{}T00:00:00+00:00", t.date),
                transaction_information: t.name.clone(),
                amount: Amount {
                    amount: pence(amount),
                    currency: CURRENCY,
                },
                date: t.date,
            }
        })
        .collect();
    (accounts, transactions)
}

/// The balances Albion reports for one account of `portfolio`.
pub(crate) fn balances_of(portfolio: &Portfolio, account_id: &str, at: &str) -> Vec<Balance> {
    let Some(account) = portfolio
        .accounts
        .iter()
        .find(|a| a.account_id == account_id && a.account_type == "depository")
    else {
        return Vec::new();
    };
    let balance = |kind: &'static str, text: &str| {
        let value = decimal(text);
        Balance {
            account_id: account_id.to_owned(),
            credit_debit_indicator: if value.is_sign_negative() {
                "Debit"
            } else {
                "Credit"
            },
            kind,
            date_time: at.to_owned(),
            amount: Amount {
                amount: pence(value),
                currency: CURRENCY,
            },
        }
    };
    let mut out = vec![balance("InterimBooked", &account.balances.current)];
    if let Some(available) = &account.balances.available {
        out.push(balance("InterimAvailable", available));
    }
    out
}

#[derive(Debug, Deserialize)]
struct TransactionsQuery {
    #[serde(rename = "fromBookingDateTime")]
    from: Option<String>,
    #[serde(rename = "toBookingDateTime")]
    to: Option<String>,
    page: Option<String>,
}

/// An `OBErrorResponse1`.
#[derive(Debug)]
struct Refusal {
    status: StatusCode,
    error_code: &'static str,
    message: String,
    path: Option<&'static str>,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let mut error = serde_json::json!({
            "ErrorCode": self.error_code,
            "Message": self.message,
        });
        if let Some(path) = self.path {
            error["Path"] = Value::from(path);
        }
        let body = serde_json::json!({
            "Code": format!("{} {}", self.status.as_u16(), self.status.canonical_reason().unwrap_or("")),
            "Id": uuid::Uuid::new_v4().to_string(),
            "Message": self.message,
            "Errors": [error],
        });
        (self.status, Json(body)).into_response()
    }
}

fn portfolio_for(app: &AppState, headers: &HeaderMap, scope: Scope) -> Result<Portfolio, Refusal> {
    Stats::bump(&app.stats.api_requests);
    let bearer =
        bearer::authorize(app.grants(Institution::Albion), headers, scope).map_err(|denied| {
            match denied {
                Denied::InvalidToken => Refusal {
                    status: StatusCode::UNAUTHORIZED,
                    error_code: "UK.OBIE.Header.Invalid",
                    message: "the access token is missing, unknown, expired or revoked".into(),
                    path: Some("Authorization"),
                },
                Denied::InsufficientScope(scope) => Refusal {
                    status: StatusCode::FORBIDDEN,
                    error_code: "UK.OBIE.Resource.ConsentMismatch",
                    message: format!("the consent does not cover {scope}"),
                    path: None,
                },
            }
        })?;
    Ok(app.portfolio(Institution::Albion, &bearer.user_id))
}

/// A document `{"Data", "Links": {"Self", "Next"?}, "Meta": {"TotalPages"}}`.
fn document(data: Value, self_url: String, next: Option<String>, pages: usize) -> Value {
    let mut links = serde_json::json!({ "Self": self_url });
    if let Some(next) = next {
        links["Next"] = Value::from(next);
    }
    serde_json::json!({ "Data": data, "Links": links, "Meta": { "TotalPages": pages } })
}

/// The absolute URL of `path_and_query` (below [`BASE`]) where the client reaches the
/// API: the gateway in front of it if one is configured, else the host the request
/// came to.
fn absolute(app: &AppState, headers: &HeaderMap, path_and_query: &str) -> String {
    if let Some(base) = app.public_base(Institution::Albion) {
        return format!("{}{path_and_query}", base.trim_end_matches('/'));
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    format!("http://{host}{BASE}{path_and_query}")
}

fn unknown_account() -> Refusal {
    Refusal {
        status: StatusCode::BAD_REQUEST,
        error_code: "UK.OBIE.Field.Invalid",
        message: "no such account for this consent".into(),
        path: Some("AccountId"),
    }
}

async fn accounts(State(app): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let outcome = (|| {
        let portfolio = portfolio_for(&app, &headers, Scope::Accounts)?;
        let accounts = view(&portfolio).0;
        Ok(document(
            serde_json::json!({ "Account": accounts }),
            absolute(&app, &headers, "/accounts"),
            None,
            1,
        ))
    })();
    fapi::answered::<Refusal>(&headers, outcome)
}

async fn balances(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(account_id): Path<String>,
) -> Response {
    let outcome = (|| {
        let portfolio = portfolio_for(&app, &headers, Scope::Accounts)?;
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, false);
        let balances = balances_of(&portfolio, &account_id, &now);
        if balances.is_empty() {
            return Err(unknown_account());
        }
        Ok(document(
            serde_json::json!({ "Balance": balances }),
            absolute(&app, &headers, &format!("/accounts/{account_id}/balances")),
            None,
            1,
        ))
    })();
    fapi::answered::<Refusal>(&headers, outcome)
}

/// A booking time as the standard reads it: the time zone, if any, ignored.
fn booking_time(text: &str) -> Option<NaiveDateTime> {
    let local = text.get(..19)?;
    NaiveDateTime::parse_from_str(local, "%Y-%m-%dT%H:%M:%S")
        .ok()
        .or_else(|| {
            NaiveDate::parse_from_str(text, "%Y-%m-%d")
                .ok()
                .and_then(|d| d.and_hms_opt(0, 0, 0))
        })
}

async fn transactions(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(account_id): Path<String>,
    query: Result<Query<TransactionsQuery>, QueryRejection>,
) -> Response {
    let outcome = (|| {
        let portfolio = portfolio_for(&app, &headers, Scope::Transactions)?;
        let Query(query) = query.map_err(|rejection| Refusal {
            status: StatusCode::BAD_REQUEST,
            error_code: "UK.OBIE.Field.Invalid",
            message: rejection.body_text(),
            path: None,
        })?;
        let time = |text: &Option<String>, path: &'static str| {
            text.as_deref()
                .map(|t| {
                    booking_time(t).ok_or(Refusal {
                        status: StatusCode::BAD_REQUEST,
                        error_code: "UK.OBIE.Field.InvalidDate",
                        message: format!("`{t}` is not an ISO 8601 date-time"),
                        path: Some(path),
                    })
                })
                .transpose()
        };
        let from = time(&query.from, "fromBookingDateTime")?;
        let to = time(&query.to, "toBookingDateTime")?;
        let page: usize = match query.page.as_deref() {
            None => 1,
            Some(text) => text.parse().ok().filter(|p| *p >= 1).ok_or(Refusal {
                status: StatusCode::BAD_REQUEST,
                error_code: "UK.OBIE.Field.Invalid",
                message: format!("page `{text}` is not one this API handed out"),
                path: Some("page"),
            })?,
        };
        let (accounts, transactions) = view(&portfolio);
        if !accounts.iter().any(|a| a.account_id == account_id) {
            return Err(unknown_account());
        }
        let booked = |t: &Transaction| t.date.and_hms_opt(0, 0, 0).expect("midnight exists");
        let inside: Vec<Transaction> = transactions
            .into_iter()
            .filter(|t| {
                t.account_id == account_id
                    && from.is_none_or(|f| booked(t) >= f)
                    && to.is_none_or(|e| booked(t) <= e)
            })
            .collect();
        let pages = inside.len().div_ceil(PAGE_SIZE).max(1);
        let start = ((page - 1) * PAGE_SIZE).min(inside.len());
        let end = (start + PAGE_SIZE).min(inside.len());
        let url = |page: usize| {
            let mut params = url::form_urlencoded::Serializer::new(String::new());
            if let Some(from) = &query.from {
                params.append_pair("fromBookingDateTime", from);
            }
            if let Some(to) = &query.to {
                params.append_pair("toBookingDateTime", to);
            }
            if page > 1 {
                params.append_pair("page", &page.to_string());
            }
            let params = params.finish();
            let path = format!("/accounts/{account_id}/transactions");
            absolute(
                &app,
                &headers,
                &if params.is_empty() {
                    path
                } else {
                    format!("{path}?{params}")
                },
            )
        };
        Ok(document(
            serde_json::json!({ "Transaction": &inside[start..end] }),
            url(page),
            (page < pages).then(|| url(page + 1)),
            pages,
        ))
    })();
    fapi::answered::<Refusal>(&headers, outcome)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::TestSandbox;

    async fn token(sandbox: &TestSandbox, user: &str) -> String {
        let tokens = sandbox
            .link_at(Institution::Albion, user, "accounts transactions")
            .await;
        tokens["access_token"].as_str().expect("token").to_owned()
    }

    #[test]
    fn money_is_unsigned_pence_within_thirteen_digits() {
        assert_eq!(pence(Decimal::from_str_exact("-12.345").unwrap()), "12.35");
        assert_eq!(pence(Decimal::from_str_exact("0.1").unwrap()), "0.10");
        assert_eq!(
            pence(Decimal::from_str_exact("12345678901234567.891").unwrap()),
            "5678901234567.89"
        );
    }

    #[tokio::test]
    async fn transactions_page_by_links_next_between_booking_times() {
        let sandbox = TestSandbox::start().await;
        let token = token(&sandbox, "demo-alice").await;
        let (accounts, transactions) = view(&sandbox.portfolio(Institution::Albion, "demo-alice"));
        let account = &accounts[0].account_id;
        let own = transactions
            .iter()
            .filter(|t| &t.account_id == account)
            .count();
        let mut next = Some(format!(
            "{}/accounts/{account}/transactions?fromBookingDateTime=2000-01-01T00:00:00Z",
            BASE
        ));
        let mut served = Vec::new();
        while let Some(url) = next.take() {
            let path = url.split_once("://").map_or(url.as_str(), |(_, rest)| {
                rest.split_once('/').map_or(rest, |(_, p)| p)
            });
            let path = if path.starts_with('/') {
                path.to_owned()
            } else {
                format!("/{path}")
            };
            let response = sandbox
                .get(&path)
                .bearer_auth(&token)
                .header(fapi::INTERACTION_ID, "93bac548-d2de-4546-b106-880a5018460d")
                .send()
                .await
                .expect("request");
            assert_eq!(
                response.headers()[fapi::INTERACTION_ID],
                "93bac548-d2de-4546-b106-880a5018460d"
            );
            let page: Value = response.json().await.expect("json");
            served.extend(
                page["Data"]["Transaction"]
                    .as_array()
                    .cloned()
                    .expect("list"),
            );
            next = page["Links"]["Next"].as_str().map(str::to_owned);
        }
        assert_eq!(served.len(), own);
        assert!(served.iter().all(|t| {
            t["Amount"]["Amount"]
                .as_str()
                .is_some_and(|a| !a.starts_with('-'))
        }));
        let body: Value = sandbox
            .get(&format!("{BASE}/accounts/{account}/balances"))
            .bearer_auth(&token)
            .send()
            .await
            .expect("request")
            .json()
            .await
            .expect("json");
        let kinds: Vec<&str> = body["Data"]["Balance"]
            .as_array()
            .expect("balances")
            .iter()
            .filter_map(|b| b["Type"].as_str())
            .collect();
        assert!(kinds.contains(&"InterimBooked"), "{kinds:?}");
        let refused = sandbox
            .get(&format!("{BASE}/accounts/{account}/transactions"))
            .bearer_auth(&token)
            .query(&[("fromBookingDateTime", "yesterday")])
            .send()
            .await
            .expect("request");
        assert_eq!(refused.status(), 400);
        let body: Value = refused.json().await.expect("json");
        assert_eq!(body["Errors"][0]["ErrorCode"], "UK.OBIE.Field.InvalidDate");
        sandbox.shutdown().await;
    }
}
