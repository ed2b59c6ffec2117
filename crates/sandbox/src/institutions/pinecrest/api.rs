//! Pinecrest's data API, in FDX 6's shapes (as Plaid's Core Exchange publishes them).
//!
//! Its wire habits, each one a test for a connector: accounts listed without balances,
//! which come from `GET /accounts/{accountId}` by `accountCategory` (`currentBalance`
//! for a deposit account, `currentValue` and `availableCashBalance` for an investment
//! account, whose `holdings` are in the same document with `securityIds` typed by
//! `idType`); transactions asked per account within `startTime`/`endTime`; amounts as
//! JSON numbers without a sign, the direction in `debitCreditMemo`; `page.nextOffset`
//! paging; errors as `{"code", "message", "debugMessage"}`; and cash in an investment
//! account reported as its available cash, not as a holding.

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::bearer::{self, Denied};
use crate::data::{Portfolio, json_number as number};
use crate::fapi;
use crate::grants::Scope;
use crate::{AppState, Institution, Stats};

pub(super) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/pinecrest/accounts", get(accounts))
        .route("/pinecrest/accounts/{account_id}", get(account))
        .route(
            "/pinecrest/accounts/{account_id}/transactions",
            get(transactions),
        )
}

const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 500;
/// The longest `startTime`..`endTime` one request may ask for.
const MAX_RANGE_DAYS: i64 = 365;

/// `{"currencyCode": "USD"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Currency {
    pub(crate) currency_code: String,
}

/// One entry of `GET /accounts`: what the account is, not what it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct AccountDescriptor {
    /// `DEPOSIT_ACCOUNT` or `INVESTMENT_ACCOUNT`.
    pub(crate) account_category: &'static str,
    pub(crate) account_id: String,
    pub(crate) account_number_display: String,
    pub(crate) product_name: String,
    pub(crate) nickname: String,
    pub(crate) status: &'static str,
    pub(crate) currency: Currency,
    /// `CHECKING`, `SAVINGS`, `BROKERAGE`, …
    pub(crate) account_type: String,
}

/// `GET /accounts/{accountId}`: the descriptor with the balances its category has.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Account {
    #[serde(flatten)]
    pub(crate) descriptor: AccountDescriptor,
    /// When the balances were read: the moment of the request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) balance_as_of: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) current_balance: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) available_balance: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) current_value: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) available_cash_balance: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) holdings: Option<Vec<Holding>>,
}

/// `{"id": "037833100", "idType": "CUSIP"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SecurityId {
    pub(crate) id: String,
    pub(crate) id_type: &'static str,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Holding {
    pub(crate) security_ids: Vec<SecurityId>,
    pub(crate) security_name: String,
    pub(crate) symbol: String,
    /// `STOCK`, `MUTUALFUND`, `BOND` (FDX has no ETF type: an ETF is a `STOCK`).
    pub(crate) holding_type: &'static str,
    pub(crate) units: Value,
    pub(crate) current_unit_price: Value,
    pub(crate) current_unit_price_date: NaiveDate,
    pub(crate) market_value: Value,
    pub(crate) cost_basis: Value,
    pub(crate) currency: Currency,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Transaction {
    pub(crate) account_category: &'static str,
    pub(crate) transaction_id: String,
    /// When it posted; absent while pending.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) posted_timestamp: Option<String>,
    pub(crate) transaction_timestamp: String,
    pub(crate) description: String,
    /// `DEBIT` (money out), `CREDIT` (money in), or `MEMO` (a pending debit).
    pub(crate) debit_credit_memo: &'static str,
    /// `PENDING` or `POSTED`.
    pub(crate) status: &'static str,
    /// Never negative: the direction is `debit_credit_memo`'s.
    pub(crate) amount: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) category: Option<String>,
    /// Investment transactions: `PURCHASED`, `SOLD`, `DIVIDEND`, `FEE`, `DEPOSIT`,
    /// `WITHDRAWAL`, `INTEREST`, `TRANSFER`, `SPLIT`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) transaction_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) symbol: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) units: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) unit_price: Option<Value>,
    /// Not part of the wire format: the day it counts for, for date ranges.
    #[serde(skip)]
    pub(crate) date: NaiveDate,
    #[serde(skip)]
    pub(crate) account_id: String,
}

fn category(account_type: &str) -> &'static str {
    if account_type == "investment" {
        "INVESTMENT_ACCOUNT"
    } else {
        "DEPOSIT_ACCOUNT"
    }
}

/// What Pinecrest holds of a portfolio, in FDX's shapes: every account in full (its
/// descriptor is the list entry) and every transaction.
pub(crate) fn view(portfolio: &Portfolio) -> (Vec<Account>, Vec<Transaction>) {
    let accounts: Vec<Account> = portfolio
        .accounts
        .iter()
        .map(|a| {
            let descriptor = AccountDescriptor {
                account_category: category(&a.account_type),
                account_id: a.account_id.clone(),
                account_number_display: a.mask.clone(),
                product_name: a.official_name.clone(),
                nickname: a.name.clone(),
                status: "OPEN",
                currency: Currency {
                    currency_code: a.balances.iso_currency_code.clone(),
                },
                account_type: a.subtype.to_uppercase().replace(' ', "_"),
            };
            let current = Some(number(&a.balances.current));
            let available = a.balances.available.as_deref().map(number);
            if a.account_type == "investment" {
                let holdings = portfolio
                    .holdings
                    .iter()
                    // Cash is the account's available cash, not a position.
                    .filter(|h| h.account_id == a.account_id && h.security.security_type != "cash")
                    .map(holding)
                    .collect();
                Account {
                    descriptor,
                    balance_as_of: None,
                    current_balance: None,
                    available_balance: None,
                    current_value: current,
                    available_cash_balance: available,
                    holdings: Some(holdings),
                }
            } else {
                Account {
                    descriptor,
                    balance_as_of: None,
                    current_balance: current,
                    available_balance: available,
                    current_value: None,
                    available_cash_balance: None,
                    holdings: None,
                }
            }
        })
        .collect();
    let ticker = |security_id: &str| {
        portfolio
            .holdings
            .iter()
            .find(|h| h.security.security_id == security_id)
            .map(|h| h.security.ticker_symbol.clone())
    };
    let transactions = portfolio
        .transactions
        .iter()
        .filter_map(|t| {
            let account = portfolio
                .accounts
                .iter()
                .find(|a| a.account_id == t.account_id)?;
            // The generator's amounts are money out positive.
            let amount = Decimal::from_str_exact(&t.amount).expect("plain decimals");
            let debit_credit_memo = match (amount.is_sign_negative(), t.pending) {
                (true, _) => "CREDIT",
                (false, true) => "MEMO",
                (false, false) => "DEBIT",
            };
            let timestamp = format!("{}T00:00:00.000Z", t.date);
            Some(Transaction {
                account_category: category(&account.account_type),
                transaction_id: t.transaction_id.clone(),
                posted_timestamp: (!t.pending).then(|| timestamp.clone()),
                transaction_timestamp: timestamp,
                description: t.name.clone(),
                debit_credit_memo,
                status: if t.pending { "PENDING" } else { "POSTED" },
                amount: number(&amount.abs().to_string()),
                category: t.category.clone(),
                transaction_type: t.investment_type.as_deref().map(|kind| match kind {
                    "buy" => "PURCHASED",
                    "sell" => "SOLD",
                    "dividend" => "DIVIDEND",
                    "fee" => "FEE",
                    "deposit" => "DEPOSIT",
                    "withdrawal" => "WITHDRAWAL",
                    "interest" => "INTEREST",
                    "transfer" => "TRANSFER",
                    "split" => "SPLIT",
                    _ => "OTHER",
                }),
                symbol: t.security_id.as_deref().and_then(ticker),
                units: t.quantity.as_deref().map(number),
                unit_price: t.price.as_deref().map(number),
                date: t.date,
                account_id: t.account_id.clone(),
            })
        })
        .collect();
    (accounts, transactions)
}

fn holding(h: &crate::data::Holding) -> Holding {
    let mut security_ids = Vec::new();
    if let Some(cusip) = &h.security.cusip {
        security_ids.push(SecurityId {
            id: cusip.clone(),
            id_type: "CUSIP",
        });
    }
    if let Some(isin) = &h.security.isin {
        security_ids.push(SecurityId {
            id: isin.clone(),
            id_type: "ISIN",
        });
    }
    Holding {
        security_ids,
        security_name: h.security.name.clone(),
        symbol: h.security.ticker_symbol.clone(),
        holding_type: match h.security.security_type.as_str() {
            "mutual fund" => "MUTUALFUND",
            "fixed income" => "BOND",
            _ => "STOCK",
        },
        units: number(&h.quantity),
        current_unit_price: number(&h.institution_price),
        current_unit_price_date: h.institution_price_as_of,
        market_value: number(&h.institution_value),
        cost_basis: number(&h.cost_basis),
        currency: Currency {
            currency_code: h.iso_currency_code.clone(),
        },
    }
}

#[derive(Debug, Deserialize)]
struct PageQuery {
    /// Kept as text so a bad value gets Pinecrest's error, not the extractor's.
    offset: Option<String>,
    limit: Option<String>,
    #[serde(rename = "startTime")]
    start_time: Option<String>,
    #[serde(rename = "endTime")]
    end_time: Option<String>,
}

/// An FDX error: `{"code": "701", "message": "...", "debugMessage": "..."}`.
#[derive(Debug)]
struct Refusal {
    status: StatusCode,
    code: &'static str,
    message: &'static str,
    debug: String,
}

fn refuse(status: StatusCode, code: &'static str, message: &'static str, debug: String) -> Refusal {
    Refusal {
        status,
        code,
        message,
        debug,
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "code": self.code,
            "message": self.message,
            "debugMessage": self.debug,
        });
        (self.status, Json(body)).into_response()
    }
}

/// The bearer's portfolio, if the token is good and carries `scope`.
fn portfolio_for(app: &AppState, headers: &HeaderMap, scope: Scope) -> Result<Portfolio, Refusal> {
    Stats::bump(&app.stats.api_requests);
    let bearer = bearer::authorize(app.grants(Institution::Pinecrest), headers, scope).map_err(
        |denied| match denied {
            Denied::InvalidToken => refuse(
                StatusCode::UNAUTHORIZED,
                "602",
                "Customer not authorized",
                "the access token is missing, unknown, expired or revoked".to_owned(),
            ),
            Denied::InsufficientScope(scope) => refuse(
                StatusCode::FORBIDDEN,
                "602",
                "Customer not authorized",
                format!("the access token lacks the {scope} scope"),
            ),
        },
    )?;
    Ok(app.portfolio(Institution::Pinecrest, &bearer.user_id))
}

fn paging(query: &PageQuery) -> Result<(usize, usize), Refusal> {
    let bad = |what: String| refuse(StatusCode::BAD_REQUEST, "601", "Invalid paging", what);
    let offset = match &query.offset {
        None => 0,
        Some(text) => text
            .parse()
            .map_err(|_| bad(format!("offset `{text}` is not one this API handed out")))?,
    };
    let limit = match &query.limit {
        None => DEFAULT_LIMIT,
        Some(text) => text
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| bad(format!("limit must be 1 to {MAX_LIMIT}")))?,
    };
    Ok((offset, limit))
}

/// One page of `records` under `key`, with `page.nextOffset` when more follow.
fn page<T: Serialize>(key: &str, records: &[T], offset: usize, limit: usize) -> Value {
    let start = offset.min(records.len());
    let end = start.saturating_add(limit).min(records.len());
    let mut page = serde_json::json!({ "total": records.len() });
    if end < records.len() {
        page["nextOffset"] = Value::from(end.to_string());
    }
    serde_json::json!({ "page": page, key: &records[start..end] })
}

fn bad_query(rejection: QueryRejection) -> Refusal {
    refuse(
        StatusCode::BAD_REQUEST,
        "601",
        "Invalid request",
        rejection.body_text(),
    )
}

async fn accounts(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Response {
    let outcome = (|| {
        let portfolio = portfolio_for(&app, &headers, Scope::Accounts)?;
        let Query(query) = query.map_err(bad_query)?;
        let (offset, limit) = paging(&query)?;
        let descriptors: Vec<AccountDescriptor> = view(&portfolio)
            .0
            .into_iter()
            .map(|a| a.descriptor)
            .collect();
        Ok(page("accounts", &descriptors, offset, limit))
    })();
    fapi::answered::<Refusal>(&headers, outcome)
}

fn unknown_account(account_id: &str) -> Refusal {
    refuse(
        StatusCode::NOT_FOUND,
        "701",
        "Account not found",
        format!("no account {account_id} for this customer"),
    )
}

async fn account(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(account_id): Path<String>,
) -> Response {
    let outcome = (|| {
        let portfolio = portfolio_for(&app, &headers, Scope::Accounts)?;
        let mut account = view(&portfolio)
            .0
            .into_iter()
            .find(|a| a.descriptor.account_id == account_id)
            .ok_or_else(|| unknown_account(&account_id))?;
        account.balance_as_of =
            Some(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
        // Positions are for a token that may read holdings.
        if account.holdings.is_some()
            && bearer::authorize(
                app.grants(Institution::Pinecrest),
                &headers,
                Scope::Holdings,
            )
            .is_err()
        {
            account.holdings = Some(Vec::new());
        }
        serde_json::to_value(account).map_err(|e| {
            refuse(
                StatusCode::INTERNAL_SERVER_ERROR,
                "500",
                "Internal server error",
                e.to_string(),
            )
        })
    })();
    fapi::answered::<Refusal>(&headers, outcome)
}

async fn transactions(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(account_id): Path<String>,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Response {
    let outcome = (|| {
        let portfolio = portfolio_for(&app, &headers, Scope::Transactions)?;
        let Query(query) = query.map_err(bad_query)?;
        let (offset, limit) = paging(&query)?;
        let bad_dates = |debug: String| {
            refuse(
                StatusCode::BAD_REQUEST,
                "703",
                "Invalid start or end date",
                debug,
            )
        };
        let date = |text: &Option<String>, name: &str| {
            text.as_deref()
                .map(|t| {
                    NaiveDate::parse_from_str(t, "%Y-%m-%d")
                        .map_err(|_| bad_dates(format!("{name} `{t}` is not YYYY-MM-DD")))
                })
                .transpose()
        };
        let start = date(&query.start_time, "startTime")?;
        let end = date(&query.end_time, "endTime")?;
        if let (Some(start), Some(end)) = (start, end)
            && (start > end || (end - start).num_days() > MAX_RANGE_DAYS)
        {
            return Err(bad_dates(format!(
                "startTime must not be after endTime, nor more than {MAX_RANGE_DAYS} days before it"
            )));
        }
        let (accounts, transactions) = view(&portfolio);
        if !accounts
            .iter()
            .any(|a| a.descriptor.account_id == account_id)
        {
            return Err(unknown_account(&account_id));
        }
        let inside: Vec<Transaction> = transactions
            .into_iter()
            .filter(|t| {
                t.account_id == account_id
                    && start.is_none_or(|s| t.date >= s)
                    && end.is_none_or(|e| t.date <= e)
            })
            .collect();
        Ok(page("transactions", &inside, offset, limit))
    })();
    fapi::answered::<Refusal>(&headers, outcome)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::TestSandbox;

    async fn token(sandbox: &TestSandbox, user: &str) -> String {
        let tokens = sandbox
            .link_at(
                Institution::Pinecrest,
                user,
                "accounts holdings transactions",
            )
            .await;
        tokens["access_token"].as_str().expect("token").to_owned()
    }

    #[tokio::test]
    async fn accounts_list_without_balances_and_details_carry_them_by_category() {
        let sandbox = TestSandbox::start().await;
        let token = token(&sandbox, "demo-alice").await;
        let listed: Value = sandbox
            .get("/pinecrest/accounts")
            .bearer_auth(&token)
            .query(&[("limit", "1")])
            .send()
            .await
            .expect("request")
            .json()
            .await
            .expect("json");
        assert_eq!(listed["accounts"].as_array().map(Vec::len), Some(1));
        assert_eq!(listed["page"]["nextOffset"], "1");
        assert!(listed["accounts"][0].get("currentBalance").is_none());

        let (accounts, _) = view(&sandbox.portfolio(Institution::Pinecrest, "demo-alice"));
        let investment = accounts
            .iter()
            .find(|a| a.descriptor.account_category == "INVESTMENT_ACCOUNT")
            .expect("an investment account");
        let response = sandbox
            .get(&format!(
                "/pinecrest/accounts/{}",
                investment.descriptor.account_id
            ))
            .bearer_auth(&token)
            .header(fapi::INTERACTION_ID, "c770aef3-6784-41f7-8e0e-ff5f97bddb3a")
            .send()
            .await
            .expect("request");
        assert_eq!(
            response.headers()[fapi::INTERACTION_ID],
            "c770aef3-6784-41f7-8e0e-ff5f97bddb3a"
        );
        let detail: Value = response.json().await.expect("json");
        assert!(detail["currentValue"].is_number() && detail.get("currentBalance").is_none());
        let holdings = detail["holdings"].as_array().expect("holdings");
        assert!(!holdings.is_empty());
        assert!(
            holdings
                .iter()
                .all(|h| h["securityIds"].as_array().is_some_and(|ids| ids
                    .iter()
                    .all(|id| id["idType"] == "CUSIP" || id["idType"] == "ISIN")))
        );

        let missing = sandbox
            .get("/pinecrest/accounts/pct_acc_nope")
            .bearer_auth(&token)
            .send()
            .await
            .expect("request");
        assert_eq!(missing.status(), 404);
        let body: Value = missing.json().await.expect("json");
        assert_eq!(body["code"], "701");
        sandbox.shutdown().await;
    }

    #[tokio::test]
    async fn transactions_are_unsigned_with_their_direction_beside_them_within_dates() {
        let sandbox = TestSandbox::start().await;
        let token = token(&sandbox, "demo-alice").await;
        let (accounts, transactions) =
            view(&sandbox.portfolio(Institution::Pinecrest, "demo-alice"));
        let account = &accounts[0].descriptor.account_id;
        let mut served = Vec::new();
        let mut offset: Option<String> = None;
        loop {
            let mut query = vec![("limit", "7".to_owned())];
            if let Some(offset) = &offset {
                query.push(("offset", offset.clone()));
            }
            let page: Value = sandbox
                .get(&format!("/pinecrest/accounts/{account}/transactions"))
                .bearer_auth(&token)
                .query(&query)
                .send()
                .await
                .expect("request")
                .json()
                .await
                .expect("json");
            served.extend(page["transactions"].as_array().cloned().expect("list"));
            match page["page"]["nextOffset"].as_str() {
                Some(next) => offset = Some(next.to_owned()),
                None => break,
            }
        }
        let own: Vec<&Transaction> = transactions
            .iter()
            .filter(|t| &t.account_id == account)
            .collect();
        assert_eq!(served.len(), own.len());
        assert!(served.iter().all(|t| {
            t["amount"]
                .as_number()
                .is_some_and(|n| !n.to_string().starts_with('-'))
        }));
        assert!(served.iter().all(|t| matches!(
            t["debitCreditMemo"].as_str(),
            Some("DEBIT" | "CREDIT" | "MEMO")
        )));

        let too_long = sandbox
            .get(&format!("/pinecrest/accounts/{account}/transactions"))
            .bearer_auth(&token)
            .query(&[("startTime", "2024-01-01"), ("endTime", "2026-01-01")])
            .send()
            .await
            .expect("request");
        assert_eq!(too_long.status(), 400);
        let body: Value = too_long.json().await.expect("json");
        assert_eq!(body["code"], "703");
        sandbox.shutdown().await;
    }
}
