//! The scheduler: a due connection gets exactly one sync, even with two schedulers
//! ticking at once, and is not due again until its interval has passed.

use finsync::domain::{ConnectionStatus, UserId};
use finsync::store::TokenColumns;
use finsync::sync::{SyncConnection, scheduler};
use serde_json::json;

use crate::support::{ADMIN_TOKEN, Backend, TestApp, wait_until};

#[tokio::test]
async fn two_schedulers_enqueue_a_due_connection_once() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        // No workers: enqueued jobs stay in the queue where the test can count them.
        let app = TestApp::builder()
            .backend(backend)
            .workers(false)
            .tenant("advisor")
            .build()
            .await;
        let ctx = &app.app.ctx;
        let tenant = app.tenant();
        let mut due = Vec::new();
        for user in ["u1", "u2", "u3"] {
            let connection = ctx
                .store
                .upsert_connection(tenant.id, &UserId::parse(user).unwrap(), "meridian")
                .await
                .unwrap();
            ctx.store
                .save_grant(
                    connection.id,
                    TokenColumns::default(),
                    None,
                    None,
                    crate::support::by_test(),
                )
                .await
                .unwrap();
            due.push(connection.id);
        }
        // A connection waiting for its user to link again is never scheduled.
        let parked = ctx
            .store
            .upsert_connection(tenant.id, &UserId::parse("u4").unwrap(), "meridian")
            .await
            .unwrap();
        ctx.store
            .save_grant(
                parked.id,
                TokenColumns::default(),
                None,
                None,
                crate::support::by_test(),
            )
            .await
            .unwrap();
        ctx.store
            .leave_active(parked.id, ConnectionStatus::ReauthRequired, "test", true)
            .await
            .unwrap();

        let (a, b) = tokio::join!(scheduler::tick(ctx), scheduler::tick(ctx));
        assert_eq!(
            a.unwrap() + b.unwrap(),
            3,
            "{backend:?}: each due connection once"
        );
        assert_eq!(ctx.queue.depth().await.unwrap(), 3, "{backend:?}");
        for id in &due {
            assert_eq!(
                ctx.queue.waiting_for(*id, "sync").await.unwrap(),
                1,
                "{backend:?}"
            );
        }
        assert_eq!(
            ctx.queue.waiting_for(parked.id, "sync").await.unwrap(),
            0,
            "{backend:?}"
        );
        // Nothing is due again until the interval has passed.
        assert_eq!(scheduler::tick(ctx).await.unwrap(), 0, "{backend:?}");
    }
}

/// Schedules: the deployment's default, a connector's `[schedule]`, a connection's own
/// interval set through the admin API, in that order of precedence.
#[tokio::test]
async fn a_connection_or_its_connector_can_set_its_own_sync_interval() {
    let app = TestApp::builder().sqlite().tenant("advisor").build().await;
    let store = &app.app.ctx.store;
    let tenant = app.tenant();
    let connection = app.link_and_sync(tenant.id, "demo-alice").await;
    let http = finsync::http::client();
    let url = format!("{}/admin/connections/{connection}", app.address);
    let patch =
        |body: serde_json::Value| http.patch(&url).bearer_auth(ADMIN_TOKEN).json(&body).send();
    let app = &app;
    let resync = |key: &'static str| async move {
        let since = chrono::Utc::now();
        let job = SyncConnection {
            connection_id: connection,
            idempotency_key: key.into(),
        };
        crate::support::request_sync(&app.app.ctx.queue, job).await;
        app.wait_synced(connection, since).await;
        let record = store.connection(connection).await.unwrap();
        (record.next_sync_at.unwrap() - record.last_synced_at.unwrap()).num_seconds()
    };
    assert_eq!(resync("test:default").await, 3600);

    let set = patch(json!({ "sync_interval_secs": 600 })).await.unwrap();
    assert_eq!(set.status(), 200);
    let health: serde_json::Value = set.json().await.unwrap();
    assert_eq!(
        (
            health["sync_interval_secs"].clone(),
            health["sync_interval_source"].clone()
        ),
        (json!(600), json!("connection"))
    );
    assert_eq!(resync("test:own").await, 600);

    // Out of range: refused, and nothing changes.
    let refused = patch(json!({ "sync_interval_secs": 5 })).await.unwrap();
    assert_eq!(refused.status(), 400);
    assert_eq!(
        store
            .connection(connection)
            .await
            .unwrap()
            .sync_interval_secs,
        Some(600)
    );

    // Cleared: the connector's schedule applies, once its file has one.
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("connectors/meridian.toml"),
    )
    .unwrap();
    let scheduled = text.replacen("[auth]", "[schedule]\ninterval_secs = 900\n\n[auth]", 1);
    app.app
        .catalog
        .publish("meridian", &scheduled, crate::support::by_test())
        .await
        .unwrap();
    let cleared: serde_json::Value = patch(json!({ "sync_interval_secs": null }))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(cleared["sync_interval_source"], "connector");
    assert_eq!(resync("test:connector").await, 900);
}

/// Past its retention (here: everything before now), what is over goes: finished
/// runs and jobs. Work still to do stays, and so does where the next sync resumes.
#[tokio::test]
async fn history_past_its_retention_is_deleted_and_what_is_still_to_do_stays() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let app = TestApp::builder()
            .backend(backend)
            .tenant("advisor")
            .build()
            .await;
        let ctx = &app.app.ctx;
        let tenant = app.tenant();
        let connection = app.link_and_sync(tenant.id, "demo-alice").await;
        assert_eq!(ctx.store.runs(connection).await.unwrap().len(), 1);
        let later = SyncConnection {
            connection_id: connection,
            idempotency_key: "test:in-an-hour".into(),
        };
        assert!(
            ctx.queue
                .enqueue_after(later, std::time::Duration::from_secs(3600))
                .await
                .unwrap()
        );

        // The link's job is marked done just after its run ends, and SQLite keeps
        // that time in whole seconds: purge until it is past too.
        let (runs, jobs) = (std::cell::Cell::new(0), std::cell::Cell::new(0));
        let what = format!("{backend:?}: the link's job to be purged");
        wait_until(&what, std::time::Duration::from_secs(10), || async {
            let now =
                scheduler::purge_history(ctx, &scheduler::Cutoffs::all_before(chrono::Utc::now()))
                    .await
                    .unwrap();
            runs.set(runs.get() + now.runs);
            jobs.set(jobs.get() + now.jobs);
            jobs.get() > 0
        })
        .await;
        assert_eq!((runs.get(), jobs.get()), (1, 1), "{backend:?}");
        assert!(ctx.store.runs(connection).await.unwrap().is_empty());
        assert_eq!(
            ctx.queue.waiting_for(connection, "sync").await.unwrap(),
            1,
            "{backend:?}: the job still to run stays"
        );
        assert!(
            ctx.store
                .connection(connection)
                .await
                .unwrap()
                .sync_cursor
                .is_some(),
            "{backend:?}: the next sync still resumes where the last one ended"
        );
    }
}
