//! `GET /meridian/v1/transactions/sync`: what changed in the user's transactions since a
//! cursor, in the style of Plaid's `/transactions/sync` (the feed itself is
//! [`crate::changes`]); a cursor whose data moved while the client paged is answered 409
//! `sync_mutation_during_pagination`.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::api::{ApiError, PageQuery, authorize, page_size};
use crate::changes::{self, FeedError};
use crate::data::Transaction;
use crate::grants::Scope;
use crate::{AppState, Institution, Stats};

pub(super) async fn transactions_sync(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Response {
    Stats::bump(&app.stats.api_requests);
    sync(&app, &headers, query).unwrap_or_else(IntoResponse::into_response)
}

fn sync(
    app: &AppState,
    headers: &HeaderMap,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let user_id = authorize(app, headers, Scope::Transactions)?;
    let Query(query) =
        query.map_err(|rejection| ApiError::InvalidRequest(rejection.body_text()))?;
    let count = page_size(query.count.as_deref())?;
    let page = changes::page(
        app,
        Institution::Meridian,
        &user_id,
        query.cursor.as_deref(),
        count,
    )
    .map_err(|error| match error {
        FeedError::InvalidCursor => invalid_cursor(),
        FeedError::Mutation => ApiError::SyncMutation,
    })?;
    Ok(Json(SyncPage {
        removed: page
            .removed
            .iter()
            .map(|transaction_id| Removed { transaction_id })
            .collect(),
        added: &page.added,
        modified: &page.modified,
        next_cursor: page.next_cursor,
        has_more: page.has_more,
    })
    .into_response())
}

fn invalid_cursor() -> ApiError {
    ApiError::InvalidRequest("cursor is not one this endpoint issued to this user".to_owned())
}

#[derive(Serialize)]
struct SyncPage<'a> {
    added: &'a [Transaction],
    modified: &'a [Transaction],
    removed: Vec<Removed<'a>>,
    next_cursor: String,
    has_more: bool,
}

#[derive(Serialize)]
struct Removed<'a> {
    transaction_id: &'a str,
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use serde_json::Value;

    use super::super::api::encode_cursor;
    use super::*;
    use crate::SandboxConfig;
    use crate::changes::Position;
    use crate::data::portfolio_at;
    use crate::test_support::TestSandbox;

    const PATH: &str = "/meridian/v1/transactions/sync";

    /// Everything a sync from one cursor returned, all pages together.
    #[derive(Debug, Default)]
    struct Synced {
        added: Vec<Value>,
        modified: Vec<Value>,
        removed: Vec<String>,
        cursor: String,
    }

    async fn page(
        sandbox: &TestSandbox,
        token: &str,
        cursor: &str,
        count: usize,
    ) -> reqwest::Response {
        sandbox
            .get(PATH)
            .bearer_auth(token)
            .query(&[("cursor", cursor), ("count", &count.to_string())])
            .send()
            .await
            .expect("request")
    }

    /// Pages from `cursor` until `has_more` is false.
    async fn sync_all(sandbox: &TestSandbox, token: &str, cursor: &str, count: usize) -> Synced {
        let mut synced = Synced {
            cursor: cursor.to_owned(),
            ..Synced::default()
        };
        for _ in 0..1_000 {
            let response = page(sandbox, token, &synced.cursor, count).await;
            assert_eq!(response.status(), 200);
            let body: Value = response.json().await.expect("json");
            let list = |key: &str| body[key].as_array().cloned().expect("a list");
            let (added, modified, removed) = (list("added"), list("modified"), list("removed"));
            assert!(added.len() + modified.len() + removed.len() <= count);
            synced.added.extend(added);
            synced.modified.extend(modified);
            synced.removed.extend(removed.iter().map(|r| {
                assert_eq!(r.as_object().map(|o| o.len()), Some(1));
                r["transaction_id"].as_str().expect("id").to_owned()
            }));
            synced.cursor = body["next_cursor"].as_str().expect("cursor").to_owned();
            if body["has_more"] == Value::Bool(false) {
                return synced;
            }
            assert_eq!(body["has_more"], Value::Bool(true));
        }
        panic!("paging did not end");
    }

    fn id(transaction: &Value) -> String {
        transaction["transaction_id"]
            .as_str()
            .expect("id")
            .to_owned()
    }

    /// The user's transactions at `epoch` as the API serializes them, by id.
    fn expected(sandbox: &TestSandbox, user: &str, epoch: u32) -> BTreeMap<String, Value> {
        portfolio_at(42, sandbox.anchor_date, user, epoch)
            .transactions
            .iter()
            .map(|t| {
                let value = serde_json::to_value(t).expect("json");
                (t.transaction_id.clone(), value)
            })
            .collect()
    }

    /// Applies a sync the way a client must: added are new, modified are known and
    /// different, removed are known.
    fn apply(set: &mut BTreeMap<String, Value>, synced: &Synced) {
        for added in &synced.added {
            assert!(set.insert(id(added), added.clone()).is_none(), "{added}");
        }
        for modified in &synced.modified {
            let old = set.insert(id(modified), modified.clone());
            assert!(old.is_some_and(|old| old != *modified), "{modified}");
        }
        for removed in &synced.removed {
            assert!(set.remove(removed).is_some(), "{removed}");
        }
    }

    async fn token(sandbox: &TestSandbox, user: &str, scope: &str) -> String {
        let tokens = sandbox.link(user, scope).await;
        tokens["access_token"].as_str().expect("token").to_owned()
    }

    #[tokio::test]
    async fn a_first_sync_returns_the_epoch_s_transactions_and_then_nothing() {
        let sandbox = TestSandbox::start_with(SandboxConfig {
            start_epoch: 2,
            ..SandboxConfig::default()
        })
        .await;
        let token = token(&sandbox, "demo-carol", "transactions").await;
        let first = sync_all(&sandbox, &token, "", 7).await;
        let wanted = serde_json::to_value(
            portfolio_at(42, sandbox.anchor_date, "demo-carol", 2).transactions,
        )
        .expect("json");
        assert_eq!(Value::Array(first.added.clone()), wanted);
        assert!(first.modified.is_empty() && first.removed.is_empty());

        let again = sync_all(&sandbox, &token, &first.cursor, 7).await;
        assert!(again.added.is_empty() && again.modified.is_empty() && again.removed.is_empty());
        assert_eq!(again.cursor, first.cursor);
        sandbox.shutdown().await;
    }

    #[tokio::test]
    async fn syncing_after_each_advance_reproduces_every_epoch_exactly() {
        for count in [1, 7, 500] {
            let sandbox = TestSandbox::start().await;
            let mut clients = Vec::new();
            for user in ["demo-alice", "demo-carol"] {
                let token = token(&sandbox, user, "transactions").await;
                let first = sync_all(&sandbox, &token, "", count).await;
                let mut set = BTreeMap::new();
                apply(&mut set, &first);
                assert_eq!(set, expected(&sandbox, user, 0), "{user}");
                clients.push((user, token, set, first.cursor));
            }
            for round in 1..=4 {
                // Sometimes a client misses an epoch and syncs two at once.
                for _ in 0..=(round % 2) {
                    sandbox.advance();
                }
                let epoch = sandbox.epoch();
                for (user, token, set, cursor) in &mut clients {
                    let synced = sync_all(&sandbox, token, cursor, count).await;
                    assert!(!synced.added.is_empty() && !synced.removed.is_empty());
                    apply(set, &synced);
                    assert_eq!(
                        *set,
                        expected(&sandbox, user, epoch),
                        "{user} at {epoch}, count {count}"
                    );
                    *cursor = synced.cursor;
                }
            }
            sandbox.shutdown().await;
        }
    }

    #[tokio::test]
    async fn an_advance_while_paging_is_a_conflict_and_a_restart_recovers() {
        let sandbox = TestSandbox::start().await;
        let token = token(&sandbox, "demo-bob", "transactions").await;

        // Paging through the first sync.
        let response = page(&sandbox, &token, "", 1).await;
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["has_more"], true);
        let mid_first = body["next_cursor"].as_str().expect("cursor").to_owned();
        sandbox.advance();
        let conflict = page(&sandbox, &token, &mid_first, 1).await;
        assert_eq!(conflict.status(), 409);

        let start = sync_all(&sandbox, &token, "", 500).await;
        let mut set = BTreeMap::new();
        apply(&mut set, &start);
        assert_eq!(set, expected(&sandbox, "demo-bob", 1));

        // Paging through changes.
        sandbox.advance();
        let response = page(&sandbox, &token, &start.cursor, 1).await;
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["has_more"], true);
        let mid = body["next_cursor"].as_str().expect("cursor").to_owned();
        sandbox.advance();
        let conflict = page(&sandbox, &token, &mid, 1).await;
        assert_eq!(conflict.status(), 409);
        let body: Value = conflict.json().await.expect("json");
        assert_eq!(body["error"], "sync_mutation_during_pagination");
        assert!(body["error_description"].is_string());

        let restarted = sync_all(&sandbox, &token, &start.cursor, 1).await;
        apply(&mut set, &restarted);
        assert_eq!(set, expected(&sandbox, "demo-bob", 3));
        sandbox.shutdown().await;
    }

    #[tokio::test]
    async fn foreign_edited_and_unknown_cursors_are_invalid_requests() {
        let sandbox = TestSandbox::start_with(SandboxConfig {
            start_epoch: 1,
            ..SandboxConfig::default()
        })
        .await;
        let alice = token(&sandbox, "demo-alice", "transactions").await;
        let bob = token(&sandbox, "demo-bob", "transactions").await;
        let bobs = sync_all(&sandbox, &bob, "", 500).await.cursor;
        let alices = sync_all(&sandbox, &alice, "", 500).await.cursor;

        let text =
            String::from_utf8(URL_SAFE_NO_PAD.decode(&alices).expect("base64")).expect("utf-8");
        let edited = URL_SAFE_NO_PAD.encode(text.replacen(":1:1:", ":0:1:", 1));
        assert_ne!(edited, alices);
        let future = Position::at_rest(9).encode(42, "demo-alice");
        let other_seed = Position::at_rest(1).encode(7, "demo-alice");
        let listing = encode_cursor(Scope::Transactions, 5);
        for cursor in [
            "!!!",
            "c3luYw",
            &bobs,
            &edited,
            &future,
            &other_seed,
            &listing,
        ] {
            let response = page(&sandbox, &alice, cursor, 10).await;
            assert_eq!(response.status(), 400, "{cursor}");
            let body: Value = response.json().await.expect("json");
            assert_eq!(body["error"], "invalid_request");
        }
        assert_eq!(page(&sandbox, &alice, &alices, 10).await.status(), 200);
        assert_eq!(page(&sandbox, &alice, &alices, 0).await.status(), 400);

        let accounts_only = token(&sandbox, "demo-alice", "accounts").await;
        assert_eq!(page(&sandbox, &accounts_only, "", 10).await.status(), 403);
        sandbox.shutdown().await;
    }

    #[test]
    fn cursors_round_trip() {
        for position in [
            Position::at_rest(0),
            Position::at_rest(17),
            Position {
                base: None,
                target: 3,
                offset: 8,
            },
            Position {
                base: Some(2),
                target: 5,
                offset: 1,
            },
        ] {
            let cursor = position.encode(42, "demo-bob");
            assert_eq!(
                Position::decode(&cursor, 42, "demo-bob").ok(),
                Some(position)
            );
        }
    }
}
