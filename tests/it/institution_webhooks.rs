//! Webhooks from institutions: the sandbox's Meridian posts signed events to
//! `POST /webhooks/meridian`; genuine ones are stored once and sync the connections
//! holding the accounts they name, one sync per connection however many events
//! arrive together; forged, stale or unreadable ones change nothing; and
//! `finsync webhooks replay` acts again on stored events.

use std::time::Duration;

use chrono::Utc;
use finsync::store::{EventFilter, EventStatus, InstitutionEvent};
use finsync_sandbox::{Institution, Sandbox};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::support::{
    ADMIN_TOKEN, TestApp, captured_logs, dump_database, eventually, finsync, process_env,
    wait_until,
};

type Headers = Vec<(&'static str, String)>;

/// The secret the sandbox's Meridian signs with (public, like its client secret).
const SECRET: &str = "meridian-webhook-secret";

/// Headers Meridian would send for `body` at `timestamp`, signed with `secret`.
fn signed(body: &str, timestamp: i64, secret: &str) -> [(&'static str, String); 2] {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{timestamp}.{body}").as_bytes());
    [
        ("Meridian-Timestamp", timestamp.to_string()),
        (
            "Meridian-Signature",
            format!("v1={}", hex::encode(mac.finalize().into_bytes())),
        ),
    ]
}

async fn post(app: &TestApp, path: &str, body: &str, headers: &[(&str, String)]) -> (u16, Value) {
    let mut request = finsync::http::client()
        .post(format!("{}{path}", app.address))
        .header("content-type", "application/json")
        .body(body.to_owned());
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Registers the app's inbox with the sandbox, as an operator would with the
/// institution.
fn point_sandbox_at(sandbox: &Sandbox, app: &TestApp) {
    sandbox
        .set_webhook_url(
            Institution::Meridian,
            Some(format!("{}/webhooks/meridian", app.address)),
        )
        .unwrap();
}

async fn fire(sandbox: &Sandbox, user: &str, repeat: u32) -> Value {
    let response = finsync::http::client()
        .post(format!(
            "{}/sandbox/admin/webhooks/meridian/fire",
            sandbox.base_url()
        ))
        .json(&json!({ "user": user, "repeat": repeat }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

async fn events(app: &TestApp) -> Vec<InstitutionEvent> {
    app.app
        .ctx
        .store
        .institution_events(&EventFilter::default(), None, 1000)
        .await
        .unwrap()
}

/// Waits until `connection` has a finished run whose key starts with `prefix`,
/// and returns every such run.
async fn wait_for_runs(
    app: &TestApp,
    connection: finsync::domain::ConnectionId,
    prefix: &str,
    at_least: usize,
) -> Vec<finsync::store::entities::sync_run::Model> {
    let what = format!("a finished `{prefix}` run of {connection}");
    eventually(&what, Duration::from_secs(30), || async {
        let runs: Vec<_> = app
            .app
            .ctx
            .store
            .runs(connection)
            .await
            .unwrap()
            .into_iter()
            .filter(|r| r.idempotency_key.starts_with(prefix) && r.finished_at.is_some())
            .collect();
        (runs.len() >= at_least).then_some(runs)
    })
    .await
}

#[tokio::test]
async fn a_new_epoch_at_the_institution_reaches_the_store_through_its_webhook() {
    let app = TestApp::builder()
        .postgres()
        .tenant("advisor")
        .build()
        .await;
    let sandbox = app.sandbox();
    let tenant = app.tenant();
    let connection = app.link_and_sync(tenant.id, "demo-alice").await;
    point_sandbox_at(sandbox, &app);

    // Nothing but the webhook asks for a sync: the schedule is an hour away.
    let epoch = sandbox.advance();
    let runs = wait_for_runs(&app, connection, "webhook:", 1).await;
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].outcome, "succeeded", "{:?}", runs[0]);

    let sent = sandbox.webhooks_sent(Institution::Meridian);
    assert_eq!(sent.len(), 1, "one event per linked user");
    assert_eq!((sent[0].epoch, sent[0].status), (epoch, Some(202)));
    let stored = events(&app).await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].event_id, sent[0].webhook_id);
    assert_eq!(stored[0].status, EventStatus::Queued);
    assert_eq!(stored[0].connections, [connection]);

    let data = app.app.ctx.store.full_snapshot(connection).await.unwrap();
    crate::support::assert_matches_sandbox(
        &data,
        &sandbox.portfolio(Institution::Meridian, "demo-alice"),
    );

    // The admin API lists it, without its body.
    let listed = app
        .get_json(
            "/admin/institution-webhooks?institution=meridian",
            ADMIN_TOKEN,
        )
        .await;
    assert!(listed.get("next_cursor").is_none(), "{listed}");
    let listed = &listed["events"];
    assert_eq!(listed[0]["event_id"], sent[0].webhook_id.as_str());
    assert_eq!(listed[0]["status"], "queued");
    assert_eq!(listed[0]["connections"][0], connection.to_string());
    assert!(listed[0].get("body").is_none());
}

#[tokio::test]
async fn repeated_and_simultaneous_events_make_one_sync() {
    let app = TestApp::builder()
        .postgres()
        .with(|settings| settings.institution_webhooks.coalesce_ms = 3000)
        .tenant("advisor")
        .build()
        .await;
    let sandbox = app.sandbox();
    let tenant = app.tenant();
    let connection = app.link_and_sync(tenant.id, "demo-alice").await;
    point_sandbox_at(sandbox, &app);

    // Start at the beginning of a coalescing window so that every event below
    // falls in the same one.
    // Windows are slots of the clock and nothing shows where one starts: poll it.
    wait_until("the start of a window", Duration::from_secs(10), || async {
        Utc::now().timestamp_millis().rem_euclid(3000) <= 1000
    })
    .await;
    // The institution delivers one event three times, then sends two more.
    let repeated = fire(sandbox, "demo-alice", 3).await;
    assert_eq!(repeated["attempts"], 3);
    assert_eq!(repeated["status"], 200, "the last delivery was a duplicate");
    fire(sandbox, "demo-alice", 1).await;
    fire(sandbox, "demo-alice", 1).await;

    let stored = events(&app).await;
    assert_eq!(
        stored.len(),
        3,
        "one row per event, however often delivered"
    );
    let first = stored
        .iter()
        .find(|e| e.event_id == repeated["webhook_id"].as_str().unwrap())
        .unwrap();
    assert_eq!(first.deliveries, 3);
    let mut statuses: Vec<EventStatus> = stored.iter().map(|e| e.status).collect();
    statuses.sort_by_key(|s| s.as_str());
    assert_eq!(
        statuses,
        [
            EventStatus::Coalesced,
            EventStatus::Coalesced,
            EventStatus::Queued
        ]
    );
    assert!(stored.iter().all(|e| e.connections == [connection]));

    let runs = wait_for_runs(&app, connection, "webhook:", 1).await;
    // A second sync, were there one, would be a job in the queue: wait until the
    // queue holds nothing still to do.
    wait_until("the queue to settle", Duration::from_secs(60), || async {
        app.app.ctx.queue.depth().await.unwrap() == 0
    })
    .await;
    let runs_after = wait_for_runs(&app, connection, "webhook:", 1).await;
    assert_eq!(runs.len(), 1);
    assert_eq!(runs_after.len(), 1, "three events, one sync");
}

#[tokio::test]
async fn forged_stale_or_unreadable_events_are_refused_and_change_nothing() {
    let app = TestApp::builder().postgres().workers(false).build().await;
    let now = Utc::now().timestamp();
    let body = json!({
        "webhook_id": "mer_whk_forged",
        "webhook_code": "SYNC_UPDATES_AVAILABLE",
        "account_ids": ["mer_acc_1"],
    })
    .to_string();
    let [timestamp, signature] = signed(&body, now, SECRET);

    // Each request that must be refused: what is wrong with it, its body and headers.
    let unauthenticated: Vec<(&str, String, Headers)> = vec![
        ("no signature", body.clone(), vec![timestamp.clone()]),
        (
            "another secret",
            body.clone(),
            signed(&body, now, "guessed-secret").to_vec(),
        ),
        (
            "a changed body",
            body.replace("mer_acc_1", "mer_acc_2"),
            vec![timestamp.clone(), signature.clone()],
        ),
        (
            "a new time on a captured request",
            body.clone(),
            vec![
                ("Meridian-Timestamp", (now + 5).to_string()),
                signature.clone(),
            ],
        ),
        ("no time", body.clone(), vec![signature.clone()]),
        (
            "sent an hour ago",
            body.clone(),
            signed(&body, now - 3600, SECRET).to_vec(),
        ),
    ];
    for (case, body, headers) in unauthenticated {
        let (got, answer) = post(&app, "/webhooks/meridian", &body, &headers).await;
        assert_eq!(got, 401, "{case}: {answer}");
        assert_eq!(
            answer["error"]["code"], "INVALID_SIGNATURE",
            "{case}: {answer}"
        );
    }
    for unreadable in ["not json", r#"{"webhook_code":"SYNC_UPDATES_AVAILABLE"}"#] {
        let headers = signed(unreadable, now, SECRET);
        let (got, answer) = post(&app, "/webhooks/meridian", unreadable, &headers).await;
        assert_eq!(got, 400, "{unreadable}: {answer}");
        assert_eq!(
            answer["error"]["code"], "INVALID_REQUEST",
            "{unreadable}: {answer}"
        );
    }
    let headers = [timestamp.clone(), signature.clone()];
    let (got, answer) = post(&app, "/webhooks/atlantis", &body, &headers).await;
    assert_eq!(
        (got, &answer["error"]["code"]),
        (404, &json!("UNKNOWN_INSTITUTION"))
    );
    let (got, answer) = post(&app, "/webhooks/harbor", &body, &headers).await;
    assert_eq!(
        (got, &answer["error"]["code"]),
        (404, &json!("NOT_FOUND")),
        "{answer}"
    );
    let huge = format!(r#"{{"pad":"{}"}}"#, "x".repeat(70_000));
    let (got, _) = post(
        &app,
        "/webhooks/meridian",
        &huge,
        &signed(&huge, now, SECRET),
    )
    .await;
    assert_eq!(got, 413);

    assert!(events(&app).await.is_empty(), "nothing refused is stored");
    let queued = app.app.ctx.queue.depth().await.unwrap();
    assert_eq!(queued, 0, "nothing refused asks for a sync");

    // The genuine request is taken once: eight deliveries racing, one acts.
    let headers = [timestamp, signature];
    let answers = futures::future::join_all(
        (0..8).map(|_| post(&app, "/webhooks/meridian", &body, &headers)),
    )
    .await;
    let acted: Vec<&Value> = answers
        .iter()
        .filter(|(status, _)| *status == 202)
        .map(|(_, answer)| answer)
        .collect();
    assert_eq!(acted.len(), 1, "{answers:?}");
    assert_eq!(acted[0]["status"], "unmatched");
    assert_eq!(acted[0]["duplicate"], false);
    for (status, answer) in answers.iter().filter(|(status, _)| *status != 202) {
        assert_eq!(
            (*status, &answer["duplicate"]),
            (200, &json!(true)),
            "{answer}"
        );
    }
    let stored = events(&app).await;
    assert_eq!((stored.len(), stored[0].deliveries), (1, 8));
    let dump = dump_database(&app.app.ctx.store).await;
    assert!(dump.contains("mer_whk_forged"));
    for text in [dump, captured_logs()] {
        assert!(!text.contains(SECRET), "the webhook secret leaked");
    }
}

#[tokio::test]
async fn an_event_for_accounts_not_yet_known_is_replayed_once_they_are() {
    let app = TestApp::builder()
        .postgres()
        .tenant("advisor")
        .build()
        .await;
    let sandbox = app.sandbox();
    let db = app.db();
    let tenant = app.tenant();
    point_sandbox_at(sandbox, &app);

    // demo-bob is not linked yet: nobody holds the accounts the event names.
    let sent = fire(sandbox, "demo-bob", 1).await;
    assert_eq!(sent["status"], 202);
    let stored = events(&app).await;
    assert_eq!(stored[0].status, EventStatus::Unmatched);
    assert!(
        stored[0]
            .detail
            .as_deref()
            .unwrap()
            .contains("no connection holds"),
        "{:?}",
        stored[0].detail
    );

    let connection = app.link_and_sync(tenant.id, "demo-bob").await;
    // An operator replays what did not match, as a process of its own.
    let output = finsync(&process_env(&db.url, &sandbox.base_url()))
        .args(["webhooks", "replay", "--institution", "meridian"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains(sent["webhook_id"].as_str().unwrap()),
        "{stdout}"
    );
    assert!(stdout.contains("queued"), "{stdout}");

    let runs = wait_for_runs(&app, connection, "webhook:", 1).await;
    assert_eq!(runs[0].outcome, "succeeded");
    let replayed = events(&app).await.remove(0);
    assert_eq!(
        (
            replayed.status,
            replayed.replays,
            replayed.connections.clone()
        ),
        (EventStatus::Queued, 1, vec![connection])
    );

    // Replaying again by default finds nothing left to do.
    let output = finsync(&process_env(&db.url, &sandbox.base_url()))
        .args(["webhooks", "replay"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("nothing to replay"),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
}

#[tokio::test]
async fn on_the_embedded_default_a_repeated_event_syncs_once_and_a_missing_secret_stores_nothing() {
    let app = TestApp::builder().sqlite().tenant("advisor").build().await;
    let sandbox = app.sandbox();
    let _db = app.db();
    let tenant = app.tenant();
    let connection = app.link_and_sync(tenant.id, "demo-carol").await;
    point_sandbox_at(sandbox, &app);

    let sent = fire(sandbox, "demo-carol", 2).await;
    assert_eq!(
        (sent["attempts"].as_u64(), sent["status"].as_u64()),
        (Some(2), Some(200))
    );
    let runs = wait_for_runs(&app, connection, "webhook:", 1).await;
    assert_eq!(runs.len(), 1);
    let stored = events(&app).await;
    assert_eq!(
        (stored.len(), stored[0].deliveries, stored[0].status),
        (1, 2, EventStatus::Queued)
    );

    // Without its signing secret, an institution's events cannot be checked: they
    // are refused as our failure (the institution delivers again) and not stored.
    let app = TestApp::builder()
        .sqlite()
        .workers(false)
        .with(|settings| {
            settings
                .connectors
                .secrets
                .remove("MERIDIAN_WEBHOOK_SECRET");
        })
        .build()
        .await;
    let body =
        r#"{"webhook_id":"mer_whk_1","webhook_code":"SYNC_UPDATES_AVAILABLE","account_ids":[]}"#;
    let (got, answer) = post(
        &app,
        "/webhooks/meridian",
        body,
        &signed(body, Utc::now().timestamp(), SECRET),
    )
    .await;
    assert_eq!((got, &answer["error"]["code"]), (500, &json!("INTERNAL")));
    assert!(events(&app).await.is_empty());
    assert!(
        captured_logs().contains("MERIDIAN_WEBHOOK_SECRET"),
        "the log names what is missing"
    );
}
