//! Meridian's data API: accounts, holdings and transactions of the token's user at the
//! world's current epoch, behind Bearer authentication (RFC 6750) with one scope per
//! endpoint, paged by opaque cursors; and `/v1/transactions/sync`, which answers what
//! changed since a cursor, in the style of Plaid's `/transactions/sync`.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};

use crate::bearer::bearer_token;
use crate::data::Portfolio;
use crate::grants::Scope;
use crate::{AppState, Institution, Stats};

pub(super) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/meridian/v1/accounts", get(accounts))
        .route("/meridian/v1/holdings", get(holdings))
        .route("/meridian/v1/transactions", get(transactions))
        .route(
            "/meridian/v1/transactions/sync",
            get(super::sync::transactions_sync),
        )
}

const DEFAULT_PAGE_SIZE: usize = 50;
const MAX_PAGE_SIZE: usize = 500;

#[derive(Debug, Deserialize)]
pub(super) struct PageQuery {
    pub(super) cursor: Option<String>,
    /// Kept as text so a bad value gets our error, not the extractor's.
    pub(super) count: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub(super) enum ApiError {
    #[error("the access token is missing, unknown, expired or revoked")]
    InvalidToken,
    #[error("the access token lacks the {0} scope")]
    InsufficientScope(Scope),
    #[error("{0}")]
    InvalidRequest(String),
    #[error("the data changed while a sync was paging through it")]
    SyncMutation,
}

#[derive(Serialize)]
struct ErrorBody {
    error: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    error_description: Option<String>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        // Token errors keep the exact RFC 6750 shape clients match on; request errors explain.
        let (status, error, challenge, description) = match &self {
            Self::InvalidToken => (
                StatusCode::UNAUTHORIZED,
                "invalid_token",
                Some("Bearer error=\"invalid_token\"".to_owned()),
                None,
            ),
            Self::InsufficientScope(scope) => (
                StatusCode::FORBIDDEN,
                "insufficient_scope",
                Some(format!(
                    "Bearer error=\"insufficient_scope\", scope=\"{scope}\""
                )),
                None,
            ),
            Self::InvalidRequest(message) => (
                StatusCode::BAD_REQUEST,
                "invalid_request",
                None,
                Some(message.clone()),
            ),
            Self::SyncMutation => (
                StatusCode::CONFLICT,
                "sync_mutation_during_pagination",
                None,
                Some(
                    "the data changed while paging; restart from the cursor this sync began with"
                        .to_owned(),
                ),
            ),
        };
        tracing::debug!(%status, reason = %self, "Sandbox API request refused.");
        let mut response = (
            status,
            Json(ErrorBody {
                error,
                error_description: description,
            }),
        )
            .into_response();
        if let Some(value) = challenge.and_then(|text| HeaderValue::from_str(&text).ok()) {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, value);
        }
        response
    }
}

/// One page, serialized as `{"<key>": [...], "next_cursor": ...}`.
struct Page<'a, T> {
    key: &'static str,
    items: &'a [T],
    next_cursor: Option<String>,
}

impl<T: Serialize> Serialize for Page<'_, T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(2))?;
        map.serialize_entry(self.key, self.items)?;
        map.serialize_entry("next_cursor", &self.next_cursor)?;
        map.end()
    }
}

async fn accounts(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Response {
    serve(&app, &headers, query, Scope::Accounts, |portfolio| {
        &portfolio.accounts
    })
}

async fn holdings(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Response {
    serve(&app, &headers, query, Scope::Holdings, |portfolio| {
        &portfolio.holdings
    })
}

async fn transactions(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Response {
    serve(&app, &headers, query, Scope::Transactions, |portfolio| {
        &portfolio.transactions
    })
}

/// Authenticates, checks `scope`, and answers with one page of what `select` picks from the
/// user's portfolio at the current epoch. The response key is the scope's name.
fn serve<T: Serialize>(
    app: &AppState,
    headers: &HeaderMap,
    query: Result<Query<PageQuery>, QueryRejection>,
    scope: Scope,
    select: impl FnOnce(&Portfolio) -> &[T],
) -> Response {
    Stats::bump(&app.stats.api_requests);
    let outcome = (|| -> Result<Response, ApiError> {
        let user_id = authorize(app, headers, scope)?;
        let Query(query) =
            query.map_err(|rejection| ApiError::InvalidRequest(rejection.body_text()))?;
        let count = page_size(query.count.as_deref())?;
        let state = app.world.state(
            Institution::Meridian.seed(app.config.seed),
            &user_id,
            app.world.epoch(),
        );
        let items = select(state.portfolio());
        let start = match query.cursor.as_deref().filter(|cursor| !cursor.is_empty()) {
            Some(cursor) => decode_cursor(cursor, scope, items.len())?,
            None => 0,
        };
        let end = start.saturating_add(count).min(items.len());
        let next_cursor = (end < items.len()).then(|| encode_cursor(scope, end));
        Ok(Json(Page {
            key: scope.as_str(),
            items: &items[start..end],
            next_cursor,
        })
        .into_response())
    })();
    outcome.unwrap_or_else(IntoResponse::into_response)
}

/// The user of the request's access token, if that token is valid and carries `scope`.
pub(super) fn authorize(
    app: &AppState,
    headers: &HeaderMap,
    scope: Scope,
) -> Result<String, ApiError> {
    let token = bearer_token(headers).ok_or(ApiError::InvalidToken)?;
    let bearer = app
        .grants(Institution::Meridian)
        .authenticate(token, Instant::now())
        .ok_or(ApiError::InvalidToken)?;
    if !bearer.scopes.contains(scope) {
        return Err(ApiError::InsufficientScope(scope));
    }
    Ok(bearer.user_id)
}

pub(super) fn page_size(count: Option<&str>) -> Result<usize, ApiError> {
    let Some(text) = count else {
        return Ok(DEFAULT_PAGE_SIZE);
    };
    text.parse::<usize>()
        .ok()
        .filter(|count| (1..=MAX_PAGE_SIZE).contains(count))
        .ok_or_else(|| {
            ApiError::InvalidRequest(format!(
                "count must be an integer from 1 to {MAX_PAGE_SIZE}"
            ))
        })
}

/// Cursors name the endpoint and the next offset. Opaque to clients, and only valid for
/// the endpoint that issued them.
pub(super) fn encode_cursor(scope: Scope, offset: usize) -> String {
    URL_SAFE_NO_PAD.encode(format!("{scope}:{offset}"))
}

fn decode_cursor(cursor: &str, scope: Scope, total: usize) -> Result<usize, ApiError> {
    let invalid = || ApiError::InvalidRequest("cursor is not one this endpoint issued".to_owned());
    let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    let (name, offset) = text.split_once(':').ok_or_else(invalid)?;
    let offset: usize = offset.parse().map_err(|_| invalid())?;
    // Issued cursors always point inside the list, past its first page.
    if name != scope.as_str() || offset == 0 || offset >= total {
        return Err(invalid());
    }
    Ok(offset)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::data;
    use crate::test_support::TestSandbox;

    async fn fetch(
        sandbox: &TestSandbox,
        path: &str,
        token: &str,
        query: &[(&str, &str)],
    ) -> reqwest::Response {
        sandbox
            .get(path)
            .bearer_auth(token)
            .query(query)
            .send()
            .await
            .expect("request")
    }

    /// Walks every page of an endpoint and returns the raw items.
    async fn all_pages(
        sandbox: &TestSandbox,
        endpoint: &str,
        token: &str,
        count: &str,
    ) -> Vec<serde_json::Value> {
        let path = format!("/meridian/v1/{endpoint}");
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..100 {
            let mut query = vec![("count", count)];
            if let Some(cursor) = &cursor {
                query.push(("cursor", cursor.as_str()));
            }
            let response = fetch(sandbox, &path, token, &query).await;
            assert_eq!(response.status(), 200);
            let mut page: serde_json::Value = response.json().await.expect("json");
            let batch = page[endpoint].as_array().cloned().expect("items array");
            assert!(batch.len() <= count.parse().expect("count"));
            items.extend(batch);
            match page["next_cursor"].take() {
                serde_json::Value::String(next) => cursor = Some(next),
                serde_json::Value::Null => return items,
                other => panic!("next_cursor is {other}"),
            }
        }
        panic!("paging did not end");
    }

    #[tokio::test]
    async fn paging_returns_every_record_exactly_once() {
        let sandbox = TestSandbox::start().await;
        let tokens = sandbox
            .link("demo-alice", "accounts holdings transactions")
            .await;
        let token = tokens["access_token"].as_str().expect("token");
        let expected = data::portfolio(42, sandbox.anchor_date, "demo-alice");
        let id_of =
            |item: &serde_json::Value, field: &str| item[field].as_str().expect("id").to_owned();

        let transactions = all_pages(&sandbox, "transactions", token, "7").await;
        let ids: Vec<String> = transactions
            .iter()
            .map(|t| id_of(t, "transaction_id"))
            .collect();
        let wanted: Vec<String> = expected
            .transactions
            .iter()
            .map(|t| t.transaction_id.clone())
            .collect();
        assert_eq!(ids, wanted);

        let accounts = all_pages(&sandbox, "accounts", token, "1").await;
        assert_eq!(accounts.len(), expected.accounts.len());
        let unique: HashSet<String> = accounts.iter().map(|a| id_of(a, "account_id")).collect();
        assert_eq!(unique.len(), accounts.len());

        let holdings = all_pages(&sandbox, "holdings", token, "500").await;
        assert_eq!(
            holdings,
            serde_json::to_value(&expected.holdings)
                .expect("value")
                .as_array()
                .cloned()
                .expect("array")
        );
        sandbox.shutdown().await;
    }

    #[tokio::test]
    async fn numbers_are_served_with_their_exact_digits() {
        let sandbox = TestSandbox::start().await;
        let tokens = sandbox.link("demo-alice", "accounts holdings").await;
        let token = tokens["access_token"].as_str().expect("token");
        let expected = data::portfolio(42, sandbox.anchor_date, "demo-alice");

        let body = fetch(&sandbox, "/meridian/v1/accounts", token, &[])
            .await
            .text()
            .await
            .expect("body");
        for account in &expected.accounts {
            assert!(
                body.contains(&format!("\"current\":{}", account.balances.current)),
                "{body}"
            );
        }
        let body = fetch(&sandbox, "/meridian/v1/holdings", token, &[])
            .await
            .text()
            .await
            .expect("body");
        for holding in &expected.holdings {
            assert!(
                body.contains(&format!("\"quantity\":{}", holding.quantity)),
                "{body}"
            );
            assert!(
                body.contains(&format!(
                    "\"institution_value\":{}",
                    holding.institution_value
                )),
                "{body}"
            );
        }
        sandbox.shutdown().await;
    }

    #[tokio::test]
    async fn tokens_and_scopes_are_enforced() {
        let sandbox = TestSandbox::start().await;
        let missing = sandbox
            .get("/meridian/v1/accounts")
            .send()
            .await
            .expect("request");
        assert_eq!(missing.status(), 401);
        assert_eq!(
            missing
                .headers()
                .get(header::WWW_AUTHENTICATE)
                .map(HeaderValue::as_bytes),
            Some(&b"Bearer error=\"invalid_token\""[..])
        );
        let body: serde_json::Value = missing.json().await.expect("json");
        assert_eq!(body, serde_json::json!({"error": "invalid_token"}));

        let unknown = fetch(&sandbox, "/meridian/v1/accounts", "mer_at_nope", &[]).await;
        assert_eq!(unknown.status(), 401);

        let tokens = sandbox.link("demo-bob", "accounts").await;
        let token = tokens["access_token"].as_str().expect("token");
        let forbidden = fetch(&sandbox, "/meridian/v1/holdings", token, &[]).await;
        assert_eq!(forbidden.status(), 403);
        let body: serde_json::Value = forbidden.json().await.expect("json");
        assert_eq!(body, serde_json::json!({"error": "insufficient_scope"}));
        sandbox.shutdown().await;
    }

    #[tokio::test]
    async fn expired_tokens_are_rejected() {
        let config = crate::SandboxConfig {
            access_token_ttl: std::time::Duration::ZERO,
            ..Default::default()
        };
        let sandbox = TestSandbox::start_with(config).await;
        let tokens = sandbox.link("demo-bob", "accounts").await;
        assert_eq!(tokens["expires_in"], 0);
        let token = tokens["access_token"].as_str().expect("token");
        assert_eq!(
            fetch(&sandbox, "/meridian/v1/accounts", token, &[])
                .await
                .status(),
            401
        );
        sandbox.shutdown().await;
    }

    #[tokio::test]
    async fn bad_count_and_cursor_are_invalid_requests() {
        let sandbox = TestSandbox::start().await;
        let tokens = sandbox.link("demo-carol", "transactions accounts").await;
        let token = tokens["access_token"].as_str().expect("token");
        let other_endpoint = encode_cursor(Scope::Accounts, 1);
        let past_the_end = encode_cursor(Scope::Transactions, 9_999);
        for query in [
            vec![("count", "0")],
            vec![("count", "501")],
            vec![("count", "ten")],
            vec![("cursor", "!!!")],
            vec![("cursor", past_the_end.as_str())],
            vec![("cursor", other_endpoint.as_str())],
        ] {
            let response = fetch(&sandbox, "/meridian/v1/transactions", token, &query).await;
            assert_eq!(response.status(), 400, "{query:?}");
            let body: serde_json::Value = response.json().await.expect("json");
            assert_eq!(body["error"], "invalid_request");
        }
        let valid = encode_cursor(Scope::Transactions, 5);
        let page = fetch(
            &sandbox,
            "/meridian/v1/transactions",
            token,
            &[("cursor", &valid), ("count", "500")],
        )
        .await;
        assert_eq!(page.status(), 200);
        let page: serde_json::Value = page.json().await.expect("json");
        assert!(page["next_cursor"].is_null());
        sandbox.shutdown().await;
    }
}
