//! Tags and notes users attach to transactions: set through the API with a key that
//! may write, shown by `/transactions` and the portfolio, kept by every sync, and
//! carried over when a pending transaction posts under a new id. An id two of a
//! tenant's connections share needs the connection named.

use finsync::domain::ConnectionId;
use finsync::store::{Removals, Scope};
use reqwest::{Method, StatusCode};
use secrecy::ExposeSecret;
use serde_json::{Value, json};

use crate::support::TestApp;

async fn patch(app: &TestApp, id: &str, key: &str, body: Value) -> (StatusCode, Value) {
    let response = finsync::http::client()
        .request(
            Method::PATCH,
            format!("{}/v1/transactions/{id}", app.address),
        )
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Every transaction of demo-alice, as `/transactions` shows them.
async fn transactions(app: &TestApp, key: &str) -> Vec<Value> {
    let page = app
        .get_json("/v1/users/demo-alice/transactions?limit=500", key)
        .await;
    assert!(page["next_cursor"].is_null(), "more than one page: {page}");
    page["transactions"].as_array().unwrap().clone()
}

fn find<'a>(transactions: &'a [Value], id: &str) -> Option<&'a Value> {
    transactions.iter().find(|t| t["id"] == id)
}

/// Syncs the connection again and returns the run's counts.
async fn resync(app: &TestApp, connection: ConnectionId, name: &str) -> (i32, i32, i32) {
    app.resync(connection, name).await;
    let run = &app.app.ctx.store.runs(connection).await.unwrap()[0];
    assert_eq!(run.outcome, "succeeded");
    (run.added, run.modified, run.removed)
}

#[tokio::test]
async fn a_posted_transaction_keeps_the_tags_and_note_set_on_its_pending_one() {
    let app = TestApp::builder()
        .postgres()
        .tenant("advisor")
        .build()
        .await;
    let sandbox = app.sandbox();
    let _store = &app.app.ctx.store;
    let tenant = app.tenant();
    let key = &tenant.key;
    let key = key.0.expose_secret().to_owned();
    let connection = app.link_and_sync(tenant.id, "demo-alice").await;

    let before = transactions(&app, &key).await;
    let pending = before
        .iter()
        .find(|t| t["status"] == "pending")
        .expect("the sandbox starts with a pending transaction");
    let pending_id = pending["id"].as_str().unwrap().to_owned();
    assert_eq!(pending["tags"], json!([]));
    assert!(pending["note"].is_null());

    // Trimmed and deduplicated; the answer is the transaction as the API shows it.
    let (status, view) = patch(
        &app,
        &pending_id,
        &key,
        json!({"tags": [" groceries ", "family", "groceries"], "note": "split with Sam"}),
    )
    .await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["id"], pending_id.as_str());
    assert_eq!(view["connection_id"], connection.to_string());
    assert_eq!(view["tags"], json!(["groceries", "family"]));
    assert_eq!(view["note"], "split with Sam");
    let portfolio = app.get_json("/v1/users/demo-alice/portfolio", &key).await;
    let shown = find(portfolio["transactions"].as_array().unwrap(), &pending_id)
        .expect("the pending transaction is among the recent ones");
    assert_eq!(
        shown["tags"],
        json!(["groceries", "family"]),
        "stale cached portfolio"
    );
    assert_eq!(shown["note"], "split with Sam");

    // The world moves until the pending transaction posts under a new id.
    let mut posted = None;
    for epoch in 1..=4 {
        assert_eq!(sandbox.advance(), epoch);
        resync(&app, connection, &format!("epoch-{epoch}")).await;
        let now = transactions(&app, &key).await;
        if let Some(t) = now
            .iter()
            .find(|t| t["pending_transaction_id"] == pending_id.as_str())
        {
            assert!(
                find(&now, &pending_id).is_none(),
                "pending one still listed"
            );
            posted = Some(t.clone());
            break;
        }
        // Until it posts, syncs leave what the user set.
        let still = find(&now, &pending_id).expect("the pending transaction is kept");
        assert_eq!(still["tags"], json!(["groceries", "family"]));
    }
    let posted = posted.expect("the pending transaction posted within four epochs");
    let posted_id = posted["id"].as_str().unwrap().to_owned();
    assert_ne!(posted_id, pending_id);
    assert_eq!(posted["status"], "posted");
    assert_eq!(posted["tags"], json!(["groceries", "family"]));
    assert_eq!(posted["note"], "split with Sam");
    let portfolio = app.get_json("/v1/users/demo-alice/portfolio", &key).await;
    let recent = portfolio["transactions"].as_array().unwrap();
    assert!(find(recent, &pending_id).is_none());
    let shown = find(recent, &posted_id).expect("the posted transaction is recent");
    assert_eq!(shown["tags"], json!(["groceries", "family"]));
    assert_eq!(shown["note"], "split with Sam");

    // Nothing changed at the institution: nothing is written, and nothing is lost.
    assert_eq!(resync(&app, connection, "unchanged").await, (0, 0, 0));
    let after = transactions(&app, &key).await;
    let kept = find(&after, &posted_id).unwrap();
    assert_eq!(kept["tags"], json!(["groceries", "family"]));
    assert_eq!(kept["note"], "split with Sam");

    // The posted transaction takes changes of its own; `null` clears the note.
    let (status, view) = patch(&app, &posted_id, &key, json!({"note": null})).await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["tags"], json!(["groceries", "family"]));
    assert!(view["note"].is_null());
    let (status, gone) = patch(&app, &pending_id, &key, json!({"tags": []})).await;
    assert_eq!(status, 404, "{gone}");
}

#[tokio::test]
async fn annotations_are_validated_need_the_sync_scope_and_name_one_transaction_of_the_tenant() {
    let app = TestApp::builder().sqlite().tenant("advisor").build().await;
    let store = &app.app.ctx.store;
    let tenant = app.tenant();
    let key = &tenant.key;
    let key = key.0.expose_secret().to_owned();
    let (_, other) = store.create_tenant("other").await.unwrap();
    let (_, reader) = store
        .issue_api_key(
            tenant.id,
            &[Scope::Read],
            Some("reader"),
            crate::support::by_test(),
        )
        .await
        .unwrap();
    app.link_and_sync(tenant.id, "demo-alice").await;
    let id = transactions(&app, &key).await[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, _) = patch(&app, &id, &key, json!({"tags": ["kept"], "note": "kept"})).await;
    assert_eq!(status, 200);

    let too_many: Vec<String> = (0..21).map(|i| format!("tag-{i}")).collect();
    let long_tag = "x".repeat(65);
    let long_note = "n".repeat(2001);
    for (body, says) in [
        (json!({"tags": too_many}), "at most 20 tags"),
        (json!({"tags": ["ok", "  "]}), "1 to 64 characters"),
        (json!({"tags": [long_tag]}), "1 to 64 characters"),
        (json!({"note": long_note}), "at most 2000 characters"),
        (json!({"tags": ["ok"], "colour": "red"}), "colour"),
        (json!({"tags": null}), "tags"),
    ] {
        let (status, error) = patch(&app, &id, &key, body.clone()).await;
        assert_eq!(status, 400, "{body}: {error}");
        assert_eq!(error["error"]["code"], "INVALID_REQUEST");
        let message = error["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{body}: {message}");
    }
    let (status, error) = patch(&app, &id, reader.0.expose_secret(), json!({"tags": []})).await;
    assert_eq!(status, 403, "{error}");
    assert_eq!(error["error"]["code"], "FORBIDDEN");
    let (status, error) = patch(&app, &id, other.0.expose_secret(), json!({"tags": []})).await;
    assert_eq!(status, 404, "{error}");
    assert_eq!(error["error"]["code"], "NOT_FOUND");
    let (status, error) = patch(&app, "no-such-transaction", &key, json!({})).await;
    assert_eq!(status, 404, "{error}");

    // None of the refused requests changed anything.
    let now = transactions(&app, &key).await;
    let unchanged = find(&now, &id).unwrap();
    assert_eq!(unchanged["tags"], json!(["kept"]));
    assert_eq!(unchanged["note"], "kept");

    // Another connection of the tenant with the same institution ids: the id alone
    // is ambiguous, and `connection_id` picks one.
    let first: ConnectionId = unchanged["connection_id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let user = finsync::domain::UserId::parse("demo-alice").unwrap();
    let second = store
        .upsert_connection(tenant.id, &user, "harbor")
        .await
        .unwrap()
        .id;
    let copy = store.full_snapshot(first).await.unwrap();
    store
        .apply_snapshot(second, &copy, Removals::all())
        .await
        .unwrap();
    let (status, error) = patch(&app, &id, &key, json!({"tags": ["which"]})).await;
    assert_eq!(status, 409, "{error}");
    assert_eq!(error["error"]["code"], "CONFLICT");
    let (status, view) = patch(
        &app,
        &format!("{id}?connection_id={second}"),
        &key,
        json!({"tags": ["second"]}),
    )
    .await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["connection_id"], second.to_string());
    let now = transactions(&app, &key).await;
    let tags: Vec<(&Value, &Value)> = now
        .iter()
        .filter(|t| t["id"] == id.as_str())
        .map(|t| (&t["connection_id"], &t["tags"]))
        .collect();
    assert_eq!(tags.len(), 2);
    for (connection, tags) in tags {
        let expected = if *connection == first.to_string() {
            json!(["kept"])
        } else {
            json!(["second"])
        };
        assert_eq!(*tags, expected);
    }
    for query in [
        format!("connection_id={}", ConnectionId::new()),
        "connection_id=nope".into(),
    ] {
        let (status, error) = patch(&app, &format!("{id}?{query}"), &key, json!({})).await;
        assert_eq!(status, 404, "{query}: {error}");
    }
}
