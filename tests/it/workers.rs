//! Workers that die: a job whose worker was killed in the middle of a sync runs again
//! and leaves exactly the data of a clean sync; a job that keeps stopping its worker
//! is parked as failed with the reason, not delivered for ever.

use std::time::Duration;

use finsync::store::ABANDONED;
use finsync::sync::SyncConnection;
use finsync_sandbox::SandboxConfig;
use secrecy::SecretString;
use serde_json::json;

use crate::support::{
    ADMIN_TOKEN, Backend, RedisPrefix, TestApp, TestDb, assert_matches_sandbox, eventually,
    finsync, free_port, link_through_api, process_env, redis_url, spawn, spawn_sandbox_process,
    unique, wait_ready, wait_until,
};

#[tokio::test]
async fn a_job_that_keeps_stopping_its_worker_is_parked_with_the_reason() {
    let app = TestApp::builder()
        .expect_failed_jobs()
        .sqlite()
        .tenant("advisor")
        .build()
        .await;
    let sandbox = app.sandbox();
    let store = &app.app.ctx.store;
    let tenant = app.tenant();
    let connection = app.link_and_sync(tenant.id, "demo-alice").await;

    // Two deliveries of a job died with their worker: the third runs, and the two
    // open runs are closed as abandoned.
    for _ in 0..2 {
        store
            .start_run(connection, "test:unlucky", false)
            .await
            .unwrap();
    }
    let since = chrono::Utc::now();
    let job = SyncConnection {
        connection_id: connection,
        idempotency_key: "test:unlucky".into(),
    };
    assert!(app.app.ctx.queue.enqueue(job).await.unwrap());
    app.wait_synced(connection, since).await;
    let runs = store.runs(connection).await.unwrap();
    let of_job: Vec<_> = runs
        .iter()
        .filter(|r| r.idempotency_key == "test:unlucky")
        .collect();
    assert_eq!(of_job.len(), 3);
    assert_eq!(of_job[0].outcome, "succeeded");
    assert!(
        of_job[1..]
            .iter()
            .all(|r| r.outcome == "failed" && r.error.as_deref() == Some(ABANDONED))
    );

    // Three deaths (the configured limit): the next delivery is parked, not run.
    for _ in 0..3 {
        store
            .start_run(connection, "test:poison", false)
            .await
            .unwrap();
    }
    let requests_before = sandbox.stats().api_requests;
    let since = chrono::Utc::now();
    let job = SyncConnection {
        connection_id: connection,
        idempotency_key: "test:poison".into(),
    };
    assert!(app.app.ctx.queue.enqueue(job).await.unwrap());
    let outcome = crate::support::wait_for_sync(&app.app, connection, since)
        .await
        .unwrap();
    let reason = outcome.expect_err("the job is parked");
    assert!(reason.contains("stopped its worker 3 times"), "{reason}");
    assert_eq!(
        sandbox.stats().api_requests,
        requests_before,
        "a parked job does not call the institution"
    );
    let runs = store.runs(connection).await.unwrap();
    let parked = runs
        .iter()
        .find(|r| r.idempotency_key == "test:poison" && r.error.as_deref() != Some(ABANDONED))
        .expect("the parked run");
    assert_eq!(parked.outcome, "failed");
    // The job is done with: it does not come back. A later job runs to the end
    // first, proving the queue has moved past it.
    let since = chrono::Utc::now();
    let later = SyncConnection {
        connection_id: connection,
        idempotency_key: "test:after-poison".into(),
    };
    crate::support::request_sync(&app.app.ctx.queue, later).await;
    app.wait_synced(connection, since).await;
    let poisoned = |runs: &[finsync::store::entities::sync_run::Model]| {
        runs.iter()
            .filter(|r| r.idempotency_key == "test:poison")
            .count()
    };
    assert_eq!(
        poisoned(&store.runs(connection).await.unwrap()),
        poisoned(&runs),
        "the parked job ran again"
    );
    assert_eq!(
        app.app
            .ctx
            .queue
            .waiting_for(connection, "sync")
            .await
            .unwrap(),
        0
    );
}

/// `kill -9` of the worker process in the middle of a sync: another worker runs the
/// job again once the dead one's heartbeats are missed, and the stored data equals
/// a clean sync's, row for row.
#[tokio::test]
async fn a_sync_whose_worker_is_killed_runs_again_and_stores_a_clean_sync() {
    let db = TestDb::new(Backend::Postgres).await;
    let prefix = RedisPrefix(unique("finsync_kill"));
    let (_sandbox, sandbox_url) = spawn_sandbox_process();
    let port = free_port();
    let api = format!("http://127.0.0.1:{port}");
    let mut env = process_env(&db.url, &sandbox_url);
    env.retain(|(key, _)| *key != "FINSYNC__REDIS__URL");
    env.extend([
        ("FINSYNC__REDIS__URL", redis_url()),
        ("FINSYNC__REDIS__KEY_PREFIX", prefix.0.clone()),
        ("FINSYNC__SERVER__ADMIN_TOKEN", ADMIN_TOKEN.to_owned()),
        ("FINSYNC__SERVER__BIND", format!("127.0.0.1:{port}")),
        ("FINSYNC__SERVER__PUBLIC_URL", api.clone()),
    ]);
    assert!(finsync(&env).arg("migrate").status().unwrap().success());
    let _serve = spawn("serve", finsync(&env).arg("serve"));
    let mut doomed = spawn(
        "worker-doomed",
        finsync(&env).args(["worker", "--concurrency", "1"]),
    );
    wait_ready(&format!("{api}/readyz")).await;

    // Every Meridian request takes a while, so the sync is surely mid-way when killed.
    let http = finsync::http::client();
    let slow = http
        .put(format!("{sandbox_url}/sandbox/admin/faults/meridian"))
        .json(&json!({ "latency": { "min_ms": 700, "max_ms": 700 } }))
        .send()
        .await
        .unwrap();
    assert_eq!(slow.status(), 200);

    let created = http
        .post(format!("{api}/admin/tenants"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({ "name": "kill-advisor" }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let link = link_through_api(&api, "kill-advisor", "demo-bob", "meridian").await;

    let store = finsync::store::Store::connect(&SecretString::from(db.url.clone()), 2)
        .await
        .unwrap();
    let connection = link["connection_id"].as_str().unwrap().parse().unwrap();
    wait_until(
        "the first sync to start",
        Duration::from_secs(15),
        || async {
            let runs = store.runs(connection).await.unwrap();
            runs.iter().any(|r| r.outcome == "running")
        },
    )
    .await;
    // Mid-sync: at least one slow (700 ms) request is in flight 300 ms after the run
    // started. The sandbox runs as its own process and shows nothing in flight, so
    // this waits on the clock, from the run's recorded start.
    let started_at = store.runs(connection).await.unwrap()[0].started_at;
    wait_until("300 ms into the sync", Duration::from_secs(10), || async {
        chrono::Utc::now() >= started_at + chrono::Duration::milliseconds(300)
    })
    .await;
    doomed.child.kill().unwrap();
    doomed.child.wait().unwrap();
    assert!(
        store.runs(connection).await.unwrap()[0].outcome == "running",
        "the kill came too late to test anything"
    );

    let _survivor = spawn(
        "worker-survivor",
        finsync(&env).args(["worker", "--concurrency", "1"]),
    );
    let runs = eventually("the job to run again", Duration::from_secs(120), || async {
        let runs = store.runs(connection).await.unwrap();
        runs.iter()
            .any(|r| r.outcome == "succeeded")
            .then_some(runs)
    })
    .await;
    assert!(
        runs.iter().any(|r| r.outcome == "succeeded"),
        "the job never ran again: {runs:?}"
    );
    assert!(
        runs.iter()
            .any(|r| r.outcome == "failed" && r.error.as_deref() == Some(ABANDONED)),
        "the killed run is closed as abandoned: {runs:?}"
    );
    let expected =
        finsync_sandbox::data::portfolio(42, SandboxConfig::default().anchor_date, "demo-bob");
    assert_matches_sandbox(&store.full_snapshot(connection).await.unwrap(), &expected);
}
