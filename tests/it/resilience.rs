//! Resilience per institution: a failing institution's breaker bounds the traffic
//! it gets and recovers by itself, a `Retry-After` pauses every request to the
//! institution, and workers sharing Redis share one rate budget.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Query, State};
use finsync::connectors::Engine;
use finsync::connectors::engine::Grant;
use finsync::domain::ConnectionId;
use finsync::resilience::{BreakerPolicy, Outcome, Quota, Refusal, Resilience};
use finsync::sync::SyncConnection;
use finsync_sandbox::{Faults, Institution};
use secrecy::SecretString;

use crate::support::{
    ADMIN_TOKEN, RedisPrefix, TestApp, eventually, redis_url, unique, wait_until,
};

/// Queues a sync of `connection` and waits for its outcome.
async fn sync(app: &TestApp, connection: ConnectionId) -> Result<(), String> {
    let since = chrono::Utc::now();
    let job = SyncConnection {
        connection_id: connection,
        idempotency_key: unique("test:resilience"),
    };
    crate::support::request_sync(&app.app.ctx.queue, job).await;
    crate::support::wait_for_sync(&app.app, connection, since)
        .await
        .unwrap()
}

/// Data API requests Harbor has received.
fn harbor_requests(sandbox: &finsync_sandbox::Sandbox) -> usize {
    sandbox.arrivals(Institution::Harbor).len()
}

#[tokio::test]
async fn a_failing_institution_trips_its_breaker_without_touching_the_others_and_recovers() {
    let app = TestApp::builder()
        .sqlite()
        .with(|settings| {
            settings.resilience.breaker_failures = 5;
            // Long enough that the failing syncs below all fall inside it on a slow machine.
            settings.resilience.breaker_cooldown_ms = 4000;
            settings.resilience.breaker_max_cooldown_ms = 4000;
            settings.resilience.fleet_report_ms = 100;
        })
        .tenant("advisor")
        .expect_failed_jobs()
        .build()
        .await;
    let sandbox = app.sandbox();
    let tenant = app.tenant();
    let harbor = app
        .link_and_sync_at(tenant.id, "demo-alice", "harbor")
        .await;
    let meridian = app.link_and_sync(tenant.id, "demo-bob").await;

    sandbox
        .set_faults(
            Institution::Harbor,
            Faults {
                error_rate: 1.0,
                ..Faults::default()
            },
        )
        .unwrap();
    let before = harbor_requests(sandbox);
    let mut per_sync = Vec::new();
    for _ in 0..4 {
        let at_start = harbor_requests(sandbox);
        let reason = sync(&app, harbor).await.unwrap_err();
        assert!(reason.starts_with("INSTITUTION_UNAVAILABLE"), "{reason}");
        per_sync.push(harbor_requests(sandbox) - at_start);
    }
    // Five failures in a row open the breaker (one request and three retries, then
    // one more); later syncs fail fast without asking Harbor. One more request is
    // allowed should the machine be so slow that the cool-down ended meanwhile.
    assert_eq!(per_sync[..2], [4, 1], "{per_sync:?}");
    assert!(
        harbor_requests(sandbox) - before <= 6,
        "requests per sync: {per_sync:?}"
    );
    let connectors = app.get_json("/admin/connectors", ADMIN_TOKEN).await;
    let breaker = connectors["connectors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "harbor")
        .unwrap()["breaker"]
        .clone();
    assert_ne!(breaker["state"], "closed", "{breaker}");
    assert!(
        breaker["consecutive_failures"].as_u64().unwrap() >= 5,
        "{breaker}"
    );
    assert!(breaker["opened_at"].is_string(), "{breaker}");
    // The fleet's view: this process's worker reported it.
    let fleet = |app: &TestApp| {
        let app_address = app.address.clone();
        async move {
            let connectors: serde_json::Value = finsync::http::client()
                .get(format!("{app_address}/admin/connectors"))
                .bearer_auth(ADMIN_TOKEN)
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            connectors["connectors"]
                .as_array()?
                .iter()
                .find(|c| c["id"] == "harbor")
                .map(|c| c["fleet"].clone())
        }
    };
    eventually(
        "the fleet's view of Harbor",
        Duration::from_secs(10),
        || async {
            fleet(&app).await.filter(|f| {
                f["processes"] == 1
                    && f["open"].as_u64().unwrap_or(0) + f["half_open"].as_u64().unwrap_or(0) == 1
            })
        },
    )
    .await;

    // Other institutions sync as usual meanwhile.
    assert_eq!(sync(&app, meridian).await, Ok(()));

    // Harbor is back: after the cool-down a probe finds it and syncs succeed again,
    // with nobody resetting anything.
    sandbox
        .set_faults(Institution::Harbor, Faults::default())
        .unwrap();
    wait_until(
        "Harbor's syncs to recover",
        Duration::from_secs(60),
        || async { sync(&app, harbor).await.is_ok() },
    )
    .await;
    let connectors = app.get_json("/admin/connectors", ADMIN_TOKEN).await;
    let harbor_summary = connectors["connectors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "harbor")
        .unwrap()
        .clone();
    assert_eq!(harbor_summary["breaker"]["state"], "closed");
    assert_eq!(harbor_summary["breaker"]["consecutive_failures"], 0);
    eventually(
        "the fleet to see Harbor closed",
        Duration::from_secs(10),
        || async {
            fleet(&app)
                .await
                .filter(|f| f["processes"] == 1 && f["open"] == 0 && f["half_open"] == 0)
        },
    )
    .await;
}

/// Each process's report counts once; a process that stopped reporting drops out.
#[tokio::test]
async fn the_fleet_view_counts_each_worker_that_reported_lately() {
    use finsync::store::{BreakerReport, FleetBreaker};
    let (_db, store) = crate::support::migrated_store(crate::support::Backend::Postgres, 2).await;
    let report = |state: &str, degraded| BreakerReport {
        institution: "harbor".into(),
        state: state.into(),
        degraded,
        consecutive_failures: 0,
        opened_at: None,
    };
    let long_ago = chrono::Utc::now() - chrono::Duration::days(1);
    store
        .report_breakers("w1", &[report("open", false)], long_ago)
        .await
        .unwrap();
    store
        .report_breakers("w2", &[report("closed", true)], long_ago)
        .await
        .unwrap();
    store
        .report_breakers("w3", &[report("half_open", false)], long_ago)
        .await
        .unwrap();
    // w1 reports again: it replaces its own report, not adds one.
    store
        .report_breakers("w1", &[report("open", false)], long_ago)
        .await
        .unwrap();
    let since = chrono::Utc::now() - chrono::Duration::minutes(1);
    let fleet = store.fleet_breakers(since).await.unwrap();
    assert_eq!(
        fleet["harbor"],
        FleetBreaker {
            processes: 3,
            open: 1,
            half_open: 1,
            degraded: 1
        }
    );
    // Reports older than the window no longer count; a stopping worker withdraws.
    store.forget_breakers("w3").await.unwrap();
    let later = chrono::Utc::now() + chrono::Duration::seconds(1);
    assert!(store.fleet_breakers(later).await.unwrap().is_empty());
    assert_eq!(
        store.fleet_breakers(since).await.unwrap()["harbor"].processes,
        2
    );
}

#[tokio::test]
async fn after_a_429_with_retry_after_no_worker_asks_the_institution_before_it_said() {
    let app = TestApp::builder()
        .postgres()
        .redis()
        .tenant("advisor")
        .build()
        .await;
    let sandbox = app.sandbox();
    let tenant = app.tenant();
    let alice = app
        .link_and_sync_at(tenant.id, "demo-alice", "harbor")
        .await;
    let bob = app.link_and_sync_at(tenant.id, "demo-bob", "harbor").await;

    sandbox
        .set_faults(
            Institution::Harbor,
            Faults {
                rate_limit_rate: 1.0,
                retry_after_secs: 2,
                ..Faults::default()
            },
        )
        .unwrap();
    let alice_sync = tokio::spawn({
        let app = app.app.clone();
        async move {
            let since = chrono::Utc::now();
            let job = SyncConnection {
                connection_id: alice,
                idempotency_key: unique("test:alice"),
            };
            crate::support::request_sync(&app.ctx.queue, job).await;
            crate::support::wait_for_sync(&app, alice, since)
                .await
                .unwrap()
        }
    });
    let limited = eventually("Harbor's 429", Duration::from_secs(60), || async {
        sandbox
            .arrivals(Institution::Harbor)
            .into_iter()
            .find(|a| a.status == 429)
    })
    .await;
    // Harbor takes requests again at once, but it asked for two seconds: neither
    // Alice's retry nor Bob's new sync may reach it before they are up.
    sandbox
        .set_faults(Institution::Harbor, Faults::default())
        .unwrap();
    assert_eq!(sync(&app, bob).await, Ok(()));
    assert_eq!(alice_sync.await.unwrap(), Ok(()));
    let after: Vec<_> = sandbox
        .arrivals(Institution::Harbor)
        .into_iter()
        .filter(|a| a.at > limited.at)
        .collect();
    assert!(after.len() >= 2, "{after:?}");
    for arrival in &after {
        let gap = arrival.at - limited.at;
        assert!(
            gap >= Duration::from_secs(2),
            "a request {gap:?} after the 429"
        );
    }
}

/// A test institution with one page of accounts and `pages` pages of transactions,
/// recording how many requests it received.
async fn paged_institution(pages: u32, requests: Arc<Mutex<usize>>) -> String {
    async fn accounts(State(requests): State<Arc<Mutex<usize>>>) -> axum::Json<serde_json::Value> {
        *requests.lock().unwrap() += 1;
        axum::Json(serde_json::json!({"accounts": [{"id": "a1"}]}))
    }
    async fn transactions(
        State((requests, pages)): State<(Arc<Mutex<usize>>, u32)>,
        Query(query): Query<BTreeMap<String, u32>>,
    ) -> axum::Json<serde_json::Value> {
        *requests.lock().unwrap() += 1;
        let page = query.get("page").copied().unwrap_or(1);
        let records: Vec<_> = (page <= pages)
            .then(|| serde_json::json!({"id": format!("t{page}"), "amount": "1.00", "date": "2026-01-02"}))
            .into_iter()
            .collect();
        axum::Json(serde_json::json!({"transactions": records}))
    }
    let router = axum::Router::new()
        .route(
            "/accounts",
            axum::routing::get(accounts).with_state(requests.clone()),
        )
        .route(
            "/transactions",
            axum::routing::get(transactions).with_state((requests, pages)),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    base
}

#[tokio::test]
async fn workers_sharing_redis_share_one_rate_budget() {
    const PER_SECOND: u64 = 4;
    let requests = Arc::new(Mutex::new(0));
    let base = paged_institution(6, requests.clone()).await;
    let text = format!(
        r#"
name = "Budgeted"
country = "US"
products = ["accounts", "transactions"]
base_url = "{base}"
[auth]
type = "oauth2"
authorize_url = "authorize"
token_url = "token"
client_id = "c"
client_secret = {{ env = "BUDGETED_SECRET" }}
scopes = ["all"]
[limits]
requests_per_second = {PER_SECOND}
concurrency = 4
[endpoints.accounts]
path = "accounts"
records = "$.accounts[*]"
[endpoints.accounts.fields]
external_id = {{ path = "$.id" }}
account_type = {{ value = "depository" }}
name = {{ path = "$.id" }}
currency = {{ value = "USD" }}
balance_current = {{ value = "0" }}
[endpoints.transactions]
path = "transactions"
records = "$.transactions[*]"
paging = {{ type = "page", page_param = "page" }}
[endpoints.transactions.fields]
external_id = {{ path = "$.id" }}
account_external_id = {{ value = "a1" }}
amount = {{ path = "$.amount" }}
currency = {{ value = "USD" }}
date = {{ path = "$.date" }}
description = {{ path = "$.id" }}
"#
    );
    let connector =
        finsync::connectors::validate_str("budgeted.toml", "budgeted", &text, None).unwrap();
    let prefix = RedisPrefix(unique("finsync_test"));
    // Two workers: each its own engine and resilience, one Redis prefix.
    let worker = || {
        Engine::with_resilience(
            finsync::http::client(),
            Resilience::shared(
                BreakerPolicy::default(),
                &redis_url(),
                &prefix.0,
                Duration::from_millis(500),
            )
            .unwrap(),
        )
    };
    let (one, two) = (worker(), worker());
    let token = Grant::bearer(SecretString::from("token"));
    let (a, b) = tokio::join!(
        one.fetch(&connector, &token, None),
        two.fetch(&connector, &token, None)
    );
    let sent = a.unwrap().requests + b.unwrap().requests;
    assert_eq!(sent, *requests.lock().unwrap());

    // The budget's own windows: each second's count within the limit, and every
    // request counted in one of them.
    let mut redis = redis::Client::open(redis_url())
        .unwrap()
        .get_connection()
        .unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:budget:budgeted:second:*", prefix.0))
        .query(&mut redis)
        .unwrap();
    let mut counted = 0;
    for key in &keys {
        let used: u64 = redis::cmd("GET").arg(key).query(&mut redis).unwrap();
        assert!(used <= PER_SECOND, "{key}: {used}");
        counted += used;
    }
    assert_eq!(counted, sent as u64);
    // The two workers together needed more than one second's budget.
    assert!(sent as u64 > 2 * PER_SECOND, "{sent}");
    assert!(keys.len() >= 3, "{keys:?}");
}

#[tokio::test]
async fn without_an_answer_from_redis_each_worker_keeps_the_budget_itself() {
    // Nothing listens on port 1: every Redis call fails at once.
    let resilience = Resilience::shared(
        BreakerPolicy::default(),
        "redis://127.0.0.1:1",
        &unique("finsync_test"),
        Duration::from_millis(100),
    )
    .unwrap();
    let quota = Quota {
        per_second: NonZeroU32::new(2),
        concurrency: 4,
        ..Quota::default()
    };
    let mut passes = Vec::new();
    for _ in 0..2 {
        passes.push(
            resilience
                .admit("bank", quota, Duration::ZERO)
                .await
                .unwrap(),
        );
    }
    let Err(Refusal::Wait(wait)) = resilience.admit("bank", quota, Duration::ZERO).await else {
        panic!("a third request within the second was let through");
    };
    assert!(wait <= Duration::from_secs(1), "{wait:?}");
    for pass in passes {
        resilience.settle(pass, Outcome::Answered).await;
    }
}

/// After a failed sync the next attempt is scheduled on a backoff that starts well
/// under a minute and doubles per failure in a row, or when the institution said
/// (`Retry-After` on its 503), never a fixed five minutes later. Read from the
/// scheduled times, not by waiting for them.
#[tokio::test]
async fn a_failed_sync_is_retried_on_a_backoff_or_when_the_institution_said() {
    let app = TestApp::builder()
        .with(|settings| {
            // The breaker would answer for the institution after a few failures;
            // here every failure must reach it.
            settings.resilience.breaker_failures = 1000;
        })
        .tenant("advisor")
        .expect_failed_jobs()
        .build()
        .await;
    let sandbox = app.sandbox();
    let tenant = app.tenant();
    let harbor = app
        .link_and_sync_at(tenant.id, "demo-alice", "harbor")
        .await;
    let store = &app.app.ctx.store;
    // Fails one sync; how long after the failure the next attempt is scheduled.
    let fail_once = || async {
        let reason = sync(&app, harbor).await.unwrap_err();
        assert!(reason.starts_with("INSTITUTION_UNAVAILABLE"), "{reason}");
        let record = store.connection(harbor).await.unwrap();
        let failed_at = record.last_failure_at.unwrap();
        (record.next_sync_at.unwrap() - failed_at).to_std().unwrap()
    };
    let between = |wait: Duration, low: u64, high: u64| {
        assert!(
            wait >= Duration::from_secs(low) && wait <= Duration::from_secs(high),
            "next attempt {wait:?} after the failure, expected {low} to {high} s"
        );
    };

    sandbox
        .set_faults(
            Institution::Harbor,
            Faults {
                error_rate: 1.0,
                ..Faults::default()
            },
        )
        .unwrap();
    // 15 s with jitter over its upper half, then twice that.
    between(fail_once().await, 7, 16);
    between(fail_once().await, 14, 31);

    // An outage that says how long it lasts: the next attempt comes then (with up
    // to a tenth more, so the turned-away connections do not return at once).
    sandbox
        .set_faults(
            Institution::Harbor,
            Faults {
                outage: Some(finsync_sandbox::Outage::ForSecs(600)),
                ..Faults::default()
            },
        )
        .unwrap();
    between(fail_once().await, 595, 662);
}

#[tokio::test]
async fn when_the_institution_answers_again_the_connections_waiting_on_it_are_due_at_once() {
    let app = TestApp::builder()
        .with(|settings| settings.resilience.breaker_failures = 1000)
        .tenant("advisor")
        .expect_failed_jobs()
        .build()
        .await;
    let sandbox = app.sandbox();
    let tenant = app.tenant();
    let store = &app.app.ctx.store;
    let alice = app
        .link_and_sync_at(tenant.id, "demo-alice", "harbor")
        .await;
    let bob = app.link_and_sync_at(tenant.id, "demo-bob", "harbor").await;
    // Both turned away by an outage that says it lasts ten minutes.
    sandbox
        .set_faults(
            Institution::Harbor,
            Faults {
                outage: Some(finsync_sandbox::Outage::ForSecs(600)),
                ..Faults::default()
            },
        )
        .unwrap();
    for connection in [alice, bob] {
        let reason = sync(&app, connection).await.unwrap_err();
        assert!(reason.starts_with("INSTITUTION_UNAVAILABLE"), "{reason}");
    }
    let waiting = store.connection(bob).await.unwrap().next_sync_at.unwrap();
    assert!(waiting > chrono::Utc::now() + chrono::Duration::minutes(9));

    // It comes back early, and the first connection to sync finds out.
    sandbox
        .set_faults(Institution::Harbor, Faults::default())
        .unwrap();
    sync(&app, alice).await.unwrap();
    let back = store
        .connection(alice)
        .await
        .unwrap()
        .last_synced_at
        .unwrap();
    // Brought forward once alice's run is recorded, so waited for.
    let brought_forward =
        |next: chrono::DateTime<chrono::Utc>| next <= back + chrono::Duration::minutes(1);
    wait_until(
        "bob's next attempt to be brought forward",
        Duration::from_secs(30),
        || async {
            let bob = store.connection(bob).await.unwrap();
            bob.next_sync_at.is_some_and(brought_forward)
        },
    )
    .await;
    let next = store.connection(bob).await.unwrap().next_sync_at.unwrap();
    // And the scheduler picks it up on its next tick once that time has come.
    wait_until("bob to be due", Duration::from_secs(60), || async {
        chrono::Utc::now() >= next
    })
    .await;
    assert_eq!(
        finsync::sync::scheduler::tick(&app.app.ctx).await.unwrap(),
        1,
        "bob's sync is enqueued"
    );
    wait_until("bob to sync", Duration::from_secs(60), || async {
        store
            .connection(bob)
            .await
            .unwrap()
            .last_synced_at
            .is_some_and(|at| at > back)
    })
    .await;
}

#[tokio::test]
async fn a_sync_the_breaker_turns_away_comes_back_when_the_breaker_lets_a_request_through() {
    let app = TestApp::builder()
        .with(|settings| {
            settings.resilience.breaker_failures = 1;
            settings.resilience.breaker_cooldown_ms = 60_000;
            settings.resilience.breaker_max_cooldown_ms = 60_000;
        })
        .tenant("advisor")
        .expect_failed_jobs()
        .build()
        .await;
    let sandbox = app.sandbox();
    let tenant = app.tenant();
    let store = &app.app.ctx.store;
    let harbor = app
        .link_and_sync_at(tenant.id, "demo-alice", "harbor")
        .await;
    sandbox
        .set_faults(
            Institution::Harbor,
            Faults {
                error_rate: 1.0,
                ..Faults::default()
            },
        )
        .unwrap();
    // The first failure opens the breaker for a minute.
    let reason = sync(&app, harbor).await.unwrap_err();
    assert!(reason.starts_with("INSTITUTION_UNAVAILABLE"), "{reason}");
    let requests = harbor_requests(sandbox);
    // The next sync is turned away without asking, and comes back when the
    // breaker lets a request through again (plus up to a tenth), not on the
    // 15 s backoff.
    let reason = sync(&app, harbor).await.unwrap_err();
    assert!(reason.starts_with("INSTITUTION_UNAVAILABLE"), "{reason}");
    assert_eq!(
        harbor_requests(sandbox),
        requests,
        "the open breaker asked nobody"
    );
    let record = store.connection(harbor).await.unwrap();
    let wait = (record.next_sync_at.unwrap() - record.last_failure_at.unwrap())
        .to_std()
        .unwrap();
    assert!(
        wait >= Duration::from_secs(45) && wait <= Duration::from_secs(67),
        "next attempt {wait:?} after the refusal; the breaker reopens within a minute"
    );
}
