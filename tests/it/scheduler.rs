//! The scheduler: a due connection gets exactly one sync, even with two schedulers
//! ticking at once, and is not due again until its interval has passed.

use finsync::domain::{ConnectionStatus, UserId};
use finsync::sandbox::SandboxConfig;
use finsync::store::TokenColumns;
use finsync::sync::scheduler;

use crate::support::{Backend, TestApp, TestDb, settings, spawn_sandbox};

#[tokio::test]
async fn two_schedulers_enqueue_a_due_connection_once() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let sandbox = spawn_sandbox(SandboxConfig::default()).await;
        let db = TestDb::new(backend).await;
        // No workers: enqueued jobs stay in the queue where the test can count them.
        let app = TestApp::spawn(settings(&db, None, &sandbox), false).await;
        let ctx = &app.app.ctx;
        let (tenant, _) = ctx.store.create_tenant("advisor").await.unwrap();
        let mut due = Vec::new();
        for user in ["u1", "u2", "u3"] {
            let connection = ctx
                .store
                .upsert_connection(tenant.id, &UserId::parse(user).unwrap(), "meridian")
                .await
                .unwrap();
            ctx.store
                .save_grant(connection.id, TokenColumns::default(), None, None)
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
            .save_grant(parked.id, TokenColumns::default(), None, None)
            .await
            .unwrap();
        ctx.store
            .leave_active(parked.id, ConnectionStatus::ReauthRequired, "test")
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
