//! `GET /meridian/v1/transactions/sync`: what changed in the user's transactions since a
//! cursor, in the style of Plaid's `/transactions/sync`.
//!
//! A cursor records where the client stands: everything at a `base` epoch (nothing, without
//! a cursor) plus the first `offset` changes on the way to a `target` epoch. The changes are
//! the added, then the modified, then the removed transactions, paged `count` at a time
//! across the three lists. The last page's cursor is at rest at its target epoch; presented
//! again, it yields the changes since. A cursor in the middle of the changes is only good
//! while its target is still the current epoch: once the world moves on, the client gets
//! 409 `sync_mutation_during_pagination` and restarts from the cursor it began with.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::api::{ApiError, PageQuery, authorize, page_size};
use crate::data::{Portfolio, Transaction};
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
    let seed = app.config.seed;
    let current = app.world.epoch();
    let position = match query.cursor.as_deref().filter(|cursor| !cursor.is_empty()) {
        None => Position {
            base: None,
            target: current,
            offset: 0,
        },
        Some(cursor) => {
            let position = Position::decode(cursor, seed, &user_id)?;
            if position.target > current {
                // Issued by a sandbox further along, not this one.
                return Err(invalid_cursor());
            }
            if position.offset == 0 {
                // At rest: sync towards the current epoch.
                Position {
                    target: current,
                    ..position
                }
            } else if position.target != current {
                return Err(ApiError::SyncMutation);
            } else {
                position
            }
        }
    };
    let base = position.base.map(|epoch| {
        app.world
            .state(Institution::Meridian.seed(app.config.seed), &user_id, epoch)
    });
    let target = app.world.state(
        Institution::Meridian.seed(app.config.seed),
        &user_id,
        position.target,
    );
    let changes = match &base {
        // At rest at the current epoch: nothing can have changed since.
        Some(base) if base.epoch() == target.epoch() => Changes::none(),
        _ => Changes::between(
            base.as_ref().map(|state| state.portfolio()),
            target.portfolio(),
        ),
    };
    let total = changes.len();
    if position.offset > 0 && position.offset >= total {
        return Err(invalid_cursor());
    }
    let end = position.offset.saturating_add(count).min(total);
    let has_more = end < total;
    let next = if has_more {
        Position {
            offset: end,
            ..position
        }
    } else {
        Position::at_rest(position.target)
    };
    let (added, modified, removed) = changes.window(position.offset, end);
    Ok(Json(SyncPage {
        added,
        modified,
        removed: removed
            .iter()
            .map(|&transaction_id| Removed { transaction_id })
            .collect(),
        next_cursor: next.encode(seed, &user_id),
        has_more,
    })
    .into_response())
}

fn invalid_cursor() -> ApiError {
    ApiError::InvalidRequest("cursor is not one this endpoint issued to this user".to_owned())
}

#[derive(Serialize)]
struct SyncPage<'a> {
    added: &'a [&'a Transaction],
    modified: &'a [&'a Transaction],
    removed: Vec<Removed<'a>>,
    next_cursor: String,
    has_more: bool,
}

#[derive(Serialize)]
struct Removed<'a> {
    transaction_id: &'a str,
}

/// Where a client stands; see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Position {
    /// The epoch whose transactions the client holds; `None` before its first sync.
    base: Option<u32>,
    target: u32,
    offset: usize,
}

impl Position {
    fn at_rest(epoch: u32) -> Self {
        Self {
            base: Some(epoch),
            target: epoch,
            offset: 0,
        }
    }

    /// `sync:<base or ->:<target>:<offset>:<check>`, base64url. The check binds the cursor
    /// to the sandbox's seed and the user, so an edited or another user's cursor is refused.
    fn encode(self, seed: u64, user_id: &str) -> String {
        let body = self.body();
        let check = check(seed, user_id, &body);
        URL_SAFE_NO_PAD.encode(format!("{body}:{check}"))
    }

    fn decode(cursor: &str, seed: u64, user_id: &str) -> Result<Self, ApiError> {
        let bytes = URL_SAFE_NO_PAD
            .decode(cursor)
            .map_err(|_| invalid_cursor())?;
        let text = String::from_utf8(bytes).map_err(|_| invalid_cursor())?;
        let (body, given) = text.rsplit_once(':').ok_or_else(invalid_cursor)?;
        if given != check(seed, user_id, body) {
            return Err(invalid_cursor());
        }
        let mut parts = body.split(':');
        let (Some("sync"), Some(base), Some(target), Some(offset), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(invalid_cursor());
        };
        let base = match base {
            "-" => None,
            epoch => Some(epoch.parse().map_err(|_| invalid_cursor())?),
        };
        let position = Self {
            base,
            target: target.parse().map_err(|_| invalid_cursor())?,
            offset: offset.parse().map_err(|_| invalid_cursor())?,
        };
        // Issued cursors are at rest at their target, or part way towards it.
        let consistent = match position.base {
            Some(base) if position.offset == 0 => base == position.target,
            Some(base) => base < position.target,
            None => position.offset > 0,
        };
        if !consistent {
            return Err(invalid_cursor());
        }
        Ok(position)
    }

    fn body(self) -> String {
        let base = self
            .base
            .map_or_else(|| "-".to_owned(), |epoch| epoch.to_string());
        format!("sync:{base}:{}:{}", self.target, self.offset)
    }
}

fn check(seed: u64, user_id: &str, body: &str) -> String {
    let mut hasher = Sha256::new();
    for part in [&seed.to_le_bytes()[..], user_id.as_bytes(), body.as_bytes()] {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    hasher.finalize()[..8]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// The transactions that differ between two epochs, each list in a fixed order: added and
/// modified as the target epoch lists them, removed as the base epoch did.
struct Changes<'a> {
    added: Vec<&'a Transaction>,
    modified: Vec<&'a Transaction>,
    removed: Vec<&'a str>,
}

impl<'a> Changes<'a> {
    /// With no base, every transaction of the target is added.
    fn none() -> Self {
        Self {
            added: Vec::new(),
            modified: Vec::new(),
            removed: Vec::new(),
        }
    }

    fn between(base: Option<&'a Portfolio>, target: &'a Portfolio) -> Self {
        let before: HashMap<&str, &Transaction> = base
            .iter()
            .flat_map(|portfolio| &portfolio.transactions)
            .map(|t| (t.transaction_id.as_str(), t))
            .collect();
        let after: HashMap<&str, &Transaction> = target
            .transactions
            .iter()
            .map(|t| (t.transaction_id.as_str(), t))
            .collect();
        let mut changes = Self::none();
        for transaction in &target.transactions {
            match before.get(transaction.transaction_id.as_str()) {
                None => changes.added.push(transaction),
                Some(old) if *old != transaction => changes.modified.push(transaction),
                Some(_) => {}
            }
        }
        changes.removed = base
            .iter()
            .flat_map(|portfolio| &portfolio.transactions)
            .map(|t| t.transaction_id.as_str())
            .filter(|id| !after.contains_key(id))
            .collect();
        changes
    }

    fn len(&self) -> usize {
        self.added.len() + self.modified.len() + self.removed.len()
    }

    /// Changes `start..end` of the three lists laid end to end.
    fn window(
        &self,
        start: usize,
        end: usize,
    ) -> (&[&'a Transaction], &[&'a Transaction], &[&'a str]) {
        let added = slice(&self.added, 0, start, end);
        let modified = slice(&self.modified, self.added.len(), start, end);
        let removed = slice(
            &self.removed,
            self.added.len() + self.modified.len(),
            start,
            end,
        );
        (added, modified, removed)
    }
}

/// The part of `list`, laid out from `offset`, that falls in `start..end`.
fn slice<T>(list: &[T], offset: usize, start: usize, end: usize) -> &[T] {
    let clamp = |at: usize| at.clamp(offset, offset + list.len()) - offset;
    &list[clamp(start)..clamp(end)]
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::Value;

    use super::super::api::encode_cursor;
    use super::*;
    use crate::SandboxConfig;
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
