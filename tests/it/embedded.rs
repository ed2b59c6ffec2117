//! The embedded mode end to end: SQLite, the in-process cache, the sandbox; users
//! linked over real OAuth redirects, synced on the apalis SQLite queue, read back
//! through the API.

use std::time::Duration;

use finsync::domain::UserId;
use finsync::sync::SyncConnection;
use finsync_sandbox::SandboxConfig;
use serde_json::Value;

use crate::support::{TestApp, assert_matches_sandbox, finsync, process_env, settings, wait_until};

const USERS: [&str; 3] = ["demo-alice", "demo-bob", "demo-carol"];

#[tokio::test]
async fn synced_data_equals_the_sandbox_value_for_value_and_a_resync_changes_nothing() {
    let app = TestApp::builder().sqlite().tenant("advisor").build().await;
    let store = &app.app.ctx.store;
    let tenant = app.tenant();

    let mut connections = Vec::new();
    for user in USERS {
        let connection = app.link_and_sync(tenant.id, user).await;
        let stored = store.full_snapshot(connection).await.unwrap();
        let expected =
            finsync_sandbox::data::portfolio(42, SandboxConfig::default().anchor_date, user);
        assert_matches_sandbox(&stored, &expected);
        connections.push(connection);
    }

    // A second sync of unchanged data writes nothing and leaves the same rows.
    let before = store.full_snapshot(connections[0]).await.unwrap();
    let since = chrono::Utc::now();
    let job = SyncConnection {
        connection_id: connections[0],
        idempotency_key: "test:resync".into(),
    };
    crate::support::request_sync(&app.app.ctx.queue, job).await;
    app.wait_synced(connections[0], since).await;
    let runs = store.runs(connections[0]).await.unwrap();
    let last = &runs[0];
    assert_eq!(last.outcome, "succeeded");
    assert_eq!(
        (last.added, last.modified, last.removed),
        (0, 0, 0),
        "a resync of unchanged data writes nothing"
    );
    assert!(last.unchanged > 0);
    assert_eq!(store.full_snapshot(connections[0]).await.unwrap(), before);
}

#[tokio::test]
async fn the_api_serves_a_tenant_its_own_users_only() {
    let app = TestApp::builder()
        .sqlite()
        .tenant("advisor-a")
        .build()
        .await;
    let store = &app.app.ctx.store;
    let tenant = app.tenant();
    let key = &tenant.key;
    let (_, other_key) = store.create_tenant("advisor-b").await.unwrap();
    app.link_and_sync(tenant.id, "demo-bob").await;

    let http = finsync::http::client();
    let url = format!("{}/v1/users/demo-bob/portfolio", app.address);
    let response = http
        .get(&url)
        .bearer_auth(secrecy::ExposeSecret::expose_secret(&key.0))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["user_id"], "demo-bob");
    assert_eq!(body["freshness"]["stale"], false);
    assert!(body["freshness"]["as_of"].is_string());
    let expected =
        finsync_sandbox::data::portfolio(42, SandboxConfig::default().anchor_date, "demo-bob");
    assert_eq!(
        body["accounts"].as_array().unwrap().len(),
        expected.accounts.len()
    );
    assert_eq!(
        body["holdings"].as_array().unwrap().len(),
        expected.holdings.len()
    );
    // Amounts travel as exact strings, never floats.
    let first = &expected.accounts[0];
    let account = body["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == first.account_id.as_str())
        .unwrap();
    assert_eq!(
        account["balances"]["current"]["amount"],
        first.balances.current.as_str()
    );
    assert!(body["holdings"][0]["security"]["name"].is_string());
    assert!(!body["totals"].as_array().unwrap().is_empty());
    let recent = body["transactions"].as_array().unwrap();
    assert!(!recent.is_empty() && recent.len() <= 25);

    // Another tenant's key does not see this user at all.
    let response = http
        .get(&url)
        .bearer_auth(secrecy::ExposeSecret::expose_secret(&other_key.0))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "NOT_FOUND");
    assert!(
        body["request_id"].is_string(),
        "errors carry the request id: {body}"
    );

    let response = http.get(&url).send().await.unwrap();
    assert_eq!(response.status(), 401);
    let response = http
        .get(&url)
        .bearer_auth("fsk_not-a-key")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let response = http
        .get(format!("{}/v1/users/a%20b/portfolio", app.address))
        .bearer_auth(secrecy::ExposeSecret::expose_secret(&key.0))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
}

/// apalis-sqlite#58 reports jobs no longer picked up on a long-running server: keep
/// a worker polling for many cycles before giving it work.
#[tokio::test]
async fn a_long_running_sqlite_worker_still_picks_up_jobs() {
    let app = TestApp::builder().sqlite().tenant("advisor").build().await;
    let store = &app.app.ctx.store;
    let tenant = app.tenant();
    let connection = app.link_and_sync(tenant.id, "demo-carol").await;
    for round in 0..3 {
        // About 40 polling cycles (200 ms each) with nothing to do. Idling is time
        // passing and the worker shows nothing of its polls: wait on the clock.
        let idle_until = std::time::Instant::now() + Duration::from_secs(8);
        wait_until("8 s of idling", Duration::from_secs(30), || async {
            std::time::Instant::now() >= idle_until
        })
        .await;
        let since = chrono::Utc::now();
        let job = SyncConnection {
            connection_id: connection,
            idempotency_key: format!("test:idle:{round}"),
        };
        crate::support::request_sync(&app.app.ctx.queue, job).await;
        app.wait_synced(connection, since).await;
    }
    let user = UserId::parse("demo-carol").unwrap();
    assert_eq!(
        store
            .user_connections(tenant.id, &user)
            .await
            .unwrap()
            .len(),
        1
    );
}

/// An institution whose responses stop matching its connector file (schema drift):
/// the sync fails, nothing stored is lost, and readers see the data marked stale.
#[tokio::test]
async fn a_response_that_no_longer_matches_keeps_the_last_good_data_and_marks_it_stale() {
    let app = TestApp::builder().sqlite().tenant("advisor").build().await;
    let store = app.app.ctx.store.clone();
    let key = app.tenant().bearer().to_owned();
    let connection = app.link_and_sync(app.tenant().id, "demo-alice").await;
    let before = store.full_snapshot(connection).await.unwrap();
    let (db, sandbox) = app.into_parts();

    // The same deployment, now with a connector whose records path no longer
    // matches what the institution sends.
    let drifted = std::env::temp_dir().join(crate::support::unique("finsync-drift"));
    std::fs::create_dir_all(&drifted).unwrap();
    let good = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("connectors/meridian.toml"),
    )
    .unwrap();
    std::fs::write(
        drifted.join("meridian.toml"),
        good.replace(r#"records = "$.added[*]""#, r#"records = "$.items[*]""#),
    )
    .unwrap();
    let mut drifted_settings = settings(&db, None, &sandbox);
    drifted_settings.connectors.dir = drifted.clone();
    let app = TestApp::spawn(drifted_settings, true)
        .await
        .expecting_failed_jobs();
    let job = SyncConnection {
        connection_id: connection,
        idempotency_key: "test:drift".into(),
    };
    let since = chrono::Utc::now();
    crate::support::request_sync(&app.app.ctx.queue, job).await;
    let failure = crate::support::wait_for_sync(&app.app, connection, since)
        .await
        .unwrap()
        .expect_err("the drifted sync fails");
    assert!(failure.starts_with("INSTITUTION_ERROR"), "{failure}");
    assert_eq!(
        store.full_snapshot(connection).await.unwrap(),
        before,
        "nothing stored was lost"
    );
    let runs = store.runs(connection).await.unwrap();
    assert_eq!(runs[0].outcome, "failed");
    assert!(
        runs[0]
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("no list of records"),
        "{:?}",
        runs[0].error
    );

    let body = app.get_json("/v1/users/demo-alice/portfolio", &key).await;
    assert_eq!(body["freshness"]["stale"], true);
    assert_eq!(body["freshness"]["reason"], "SYNC_FAILED", "{body}");
    assert!(
        body["freshness"]["message"]
            .as_str()
            .unwrap()
            .contains("could not be used"),
        "{body}"
    );
    assert_eq!(
        body["accounts"].as_array().unwrap().len(),
        before.accounts.len()
    );
    std::fs::remove_dir_all(drifted).unwrap();
}

/// `finsync demo --once` on embedded defaults, as a new user runs it.
#[test]
fn the_demo_prints_three_synced_portfolios() {
    let dir = std::env::temp_dir().join(crate::support::unique("finsync-demo"));
    std::fs::create_dir_all(&dir).unwrap();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_finsync"));
    for (key, _) in std::env::vars() {
        if key.starts_with("FINSYNC") {
            command.env_remove(key);
        }
    }
    // Port 0: a demo already running on this machine must not make this one fail.
    let output = command
        .args(["demo", "--once"])
        .env("FINSYNC__SERVER__BIND", "127.0.0.1:0")
        .current_dir(&dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for user in USERS {
        assert!(
            stdout.contains(&format!("{user}  —  fresh as of")),
            "{user} not synced:\n{stdout}"
        );
    }
    assert_eq!(stdout.matches("Net worth").count(), 3, "{stdout}");
    assert!(
        stdout.contains("Household net worth: ") && stdout.contains(" EUR   (as held: "),
        "the household's net worth in one currency:\n{stdout}"
    );
    // Amounts grouped for reading, and the sizes of real clients' wealth: no
    // figure of a trillion or more (those belong to the tests' extreme persona).
    assert!(stdout.contains(",") && stdout.contains(" USD"), "{stdout}");
    let groups = |token: &str| {
        let digits = token.trim_matches(|c: char| !c.is_ascii_digit());
        let grouped = !digits.is_empty()
            && digits
                .chars()
                .all(|c| c.is_ascii_digit() || c == ',' || c == '.');
        if grouped {
            digits.matches(',').count()
        } else {
            0
        }
    };
    let largest = stdout.split_whitespace().map(groups).max().unwrap_or(0);
    assert!(
        largest < 4,
        "a demo client with a trillion or more:\n{stdout}"
    );
    assert!(
        stdout.contains("curl -s -H 'Authorization: Bearer fsk_"),
        "{stdout}"
    );
    assert!(
        dir.join("data/demo.db").exists(),
        "the demo keeps its data under ./data/"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

/// The sandbox's world moves on (new, modified and removed transactions, pending
/// ones posting, prices moving, a stock split at epoch 3); every sync through
/// Meridian's sync-token endpoint leaves exactly the institution's data stored.
#[tokio::test]
async fn syncs_follow_the_institution_through_changes_removals_and_postings() {
    let app = TestApp::builder().sqlite().tenant("advisor").build().await;
    let sandbox = app.sandbox();
    let store = &app.app.ctx.store;
    let tenant = app.tenant();
    let user = "demo-alice";
    let connection = app.link_and_sync(tenant.id, user).await;
    let anchor = SandboxConfig::default().anchor_date;

    let first_sync_requests = sandbox.stats().api_requests;
    let (mut removed, mut posted) = (0, 0);
    let mut cursors = vec![store.connection(connection).await.unwrap().sync_cursor];
    for epoch in 1..=4 {
        let before = store.full_snapshot(connection).await.unwrap();
        let requests_before = sandbox.stats().api_requests;
        assert_eq!(sandbox.advance(), epoch);
        let since = chrono::Utc::now();
        let job = SyncConnection {
            connection_id: connection,
            idempotency_key: format!("test:epoch-{epoch}"),
        };
        crate::support::request_sync(&app.app.ctx.queue, job).await;
        app.wait_synced(connection, since).await;

        let stored = store.full_snapshot(connection).await.unwrap();
        let expected = finsync_sandbox::data::portfolio_at(42, anchor, user, epoch);
        assert_matches_sandbox(&stored, &expected);
        let run = &store.runs(connection).await.unwrap()[0];
        assert_eq!(run.outcome, "succeeded");
        // Incremental: only what changed since the stored cursor was asked for.
        let requests = sandbox.stats().api_requests - requests_before;
        assert!(
            requests < first_sync_requests,
            "epoch {epoch}: {requests} requests, the first sync made {first_sync_requests}"
        );
        // The next sync resumes where this one's run ended.
        assert_eq!(
            store.connection(connection).await.unwrap().sync_cursor,
            run.cursor
        );
        cursors.push(run.cursor.clone());
        assert!(run.added > 0 && run.modified > 0, "epoch {epoch}: {run:?}");
        removed += run.removed;
        // A pending transaction that posted is gone, replaced by one naming it.
        for t in &stored.transactions {
            if let Some(pending) = &t.pending_external_id
                && before
                    .transactions
                    .iter()
                    .any(|b| &b.external_id == pending)
            {
                assert!(
                    !stored
                        .transactions
                        .iter()
                        .any(|s| &s.external_id == pending),
                    "pending {pending} still stored beside its posted transaction"
                );
                posted += 1;
            }
        }
    }
    assert!(cursors.iter().all(Option::is_some), "{cursors:?}");
    cursors.dedup();
    assert_eq!(
        cursors.len(),
        5,
        "each sync moved the cursor on: {cursors:?}"
    );
    assert!(removed > 0, "no removal reached the store");
    assert!(posted > 0, "no pending transaction posted");
}

/// A `finsync` command beside a running server shares its SQLite file, and must
/// start while the server holds the write lock (a sync writing) instead of waiting
/// on it and failing once the busy timeout is up: starting a process writes
/// nothing when the schema is current and every security is matched.
#[tokio::test]
async fn a_command_starts_while_the_server_holds_the_write_lock() {
    use sea_orm::{SqliteTransactionMode, TransactionOptions, TransactionTrait};

    let app = TestApp::builder().sqlite().tenant("advisor").build().await;
    let writer = sea_orm::Database::connect(&app.db().url).await.unwrap();
    let lock = writer
        .begin_with_options(TransactionOptions {
            sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
            ..TransactionOptions::default()
        })
        .await
        .unwrap();
    let env = process_env(&app.db().url, &app.sandbox().base_url());
    let output = tokio::task::spawn_blocking(move || {
        finsync(&env)
            .args(["reconcile", "--institution", "meridian"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    lock.rollback().await.unwrap();
    assert!(output.status.success(), "{output:?}");
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("No data-quality findings"),
        "{output:?}"
    );
}
