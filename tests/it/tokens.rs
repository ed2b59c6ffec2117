//! The token lifecycle against the sandbox's real OAuth server: one refresh per
//! connection across processes, a crash between rotation and commit (and a
//! refresh killed while the institution answers), refused grants, background refresh, token-response quirks, revocation, key rotation.

use std::time::Duration;

use apalis::prelude::{TaskBuilder, TaskSink};
use finsync::domain::{ConnectionId, ConnectionStatus, TenantId, UserId};
use finsync::store::{Lease, Store};
use finsync::sync::{Job, Queue, SyncConnection, scheduler};
use finsync::tokens::{TokenService, rotate};
use finsync::vault::{Vault, seal_context};
use finsync_sandbox::{Faults, Institution, Sandbox, SandboxConfig, TokenQuirks};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use crate::support::{
    ADMIN_TOKEN, LinkBrowser, TestApp, VAULT_KEY, assert_matches_sandbox, eventually, finsync,
    process_env, spawn, wait_until,
};

fn sandbox_config(ttl_secs: u64) -> SandboxConfig {
    SandboxConfig {
        access_token_ttl: Duration::from_secs(ttl_secs),
        ..SandboxConfig::default()
    }
}

pub(crate) async fn open_token(app: &TestApp, connection: ConnectionId, field: &str) -> String {
    let record = app.app.ctx.store.connection(connection).await.unwrap();
    let sealed = match field {
        "access_token" => record.tokens.access_token,
        _ => record.tokens.refresh_token,
    }
    .unwrap();
    let vault = Vault::single(VAULT_KEY).unwrap();
    vault
        .open(&seal_context(connection, field), &sealed)
        .unwrap()
        .expose_secret()
        .to_owned()
}

async fn link(app: &TestApp, tenant: TenantId, user: &str) -> ConnectionId {
    let user = UserId::parse(user).unwrap();
    app.app
        .linker
        .link_test_user(&finsync::http::client(), tenant, &user, "meridian")
        .await
        .unwrap()
}

/// Waits until the connection's access token has expired. Expiry is the passing of
/// time, so this polls the clock against the expiry finsync stored.
async fn access_token_expired(app: &TestApp, connection: ConnectionId) {
    let record = app.app.ctx.store.connection(connection).await.unwrap();
    let expires_at = record.tokens.access_token_expires_at.unwrap();
    wait_until(
        "the access token to expire",
        Duration::from_secs(30),
        || async { chrono::Utc::now() > expires_at },
    )
    .await;
}

/// Waits until the connection's status or last failure says the sync is over.
async fn wait_for<F: Fn(&finsync::store::ConnectionRecord) -> bool>(
    app: &TestApp,
    id: ConnectionId,
    done: F,
) {
    wait_until(
        &format!("connection {id}"),
        Duration::from_secs(30),
        || async { done(&app.app.ctx.store.connection(id).await.unwrap()) },
    )
    .await;
}

#[tokio::test]
async fn fifty_syncs_and_fifty_token_requests_across_processes_refresh_once() {
    // This process links the user and asks for tokens; two worker processes sync.
    let app = TestApp::builder()
        .postgres()
        .workers(false)
        .tenant("advisor")
        .build()
        .await;
    let (sandbox, db) = (app.sandbox(), app.db());
    let ctx = app.app.ctx.clone();
    let tenant = app.tenant();
    let connection = link(&app, tenant.id, "demo-alice").await;
    // The stored access token has expired (as far as finsync knows).
    use sea_orm::{ConnectionTrait, Statement};
    ctx.store
        .db()
        .execute_raw(Statement::from_sql_and_values(
            sea_orm::DbBackend::Postgres,
            "UPDATE connections SET access_token_expires_at = now() - interval '1 minute', \
             refresh_due_at = now() - interval '2 minutes' WHERE id = $1",
            [connection.to_string().into()],
        ))
        .await
        .unwrap();
    let stale = ctx.store.connection(connection).await.unwrap();
    assert!(stale.tokens.access_token_expires_at.unwrap() < chrono::Utc::now());
    let before = sandbox.stats().refreshes;

    let env = process_env(&db.url, &sandbox.base_url());
    let _w1 = spawn(
        "worker-1",
        finsync(&env).args(["worker", "--concurrency", "4"]),
    );
    let _w2 = spawn(
        "worker-2",
        finsync(&env).args(["worker", "--concurrency", "4"]),
    );
    let Queue::Postgres(storage) = &ctx.queue else {
        panic!("a PostgreSQL queue")
    };
    for n in 0..50 {
        let job = Job::Sync(SyncConnection {
            connection_id: connection,
            idempotency_key: format!("test:burst:{n}"),
        });
        storage
            .clone()
            .push_task(
                TaskBuilder::new(job)
                    .idempotency_key(format!("test:burst:{n}"))
                    .build(),
            )
            .await
            .unwrap();
    }
    let requests = (0..50).map(|_| {
        let (ctx, stale) = (ctx.clone(), stale.clone());
        tokio::spawn(async move {
            ctx.tokens
                .access_token(&stale)
                .await
                .map(|t| t.expose_secret().to_owned())
        })
    });
    let tokens: Vec<String> = futures::future::join_all(requests)
        .await
        .into_iter()
        .map(|r| r.unwrap().unwrap())
        .collect();
    assert!(
        tokens.iter().all(|t| t == &tokens[0]),
        "every caller got the one refreshed token"
    );

    // Every job ends done, none failed.
    wait_until("all jobs to finish", Duration::from_secs(60), || async {
        ctx.queue.depth().await.unwrap() == 0
    })
    .await;
    let failed = ctx
        .store
        .db()
        .query_one_raw(Statement::from_string(
            sea_orm::DbBackend::Postgres,
            "SELECT COUNT(*) AS n FROM apalis.jobs WHERE status IN ('Failed', 'Killed')",
        ))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(failed.try_get::<i64>("", "n").unwrap(), 0, "no job failed");
    // Every sync that ran succeeded (the others found the connection busy and
    // deferred to it).
    let runs = ctx.store.runs(connection).await.unwrap();
    assert!(!runs.is_empty());
    assert!(
        runs.iter().all(|r| r.outcome == "succeeded"),
        "{:?}",
        runs.iter()
            .map(|r| (&r.outcome, &r.error))
            .collect::<Vec<_>>()
    );
    let record = ctx.store.connection(connection).await.unwrap();
    assert_eq!(record.status, ConnectionStatus::Active);
    assert!(
        record.last_synced_at.is_some() && record.last_failure_reason.is_none(),
        "{:?}",
        record.last_failure_reason
    );
    let stats = sandbox.stats();
    assert_eq!(
        stats.refreshes - before,
        1,
        "the institution saw exactly one refresh"
    );
    assert_eq!(stats.refreshes_rejected, 0);

    // None of the tokens the institution issued reached a log, here or in the workers.
    let mut logs = crate::support::captured_logs();
    for worker in [&_w1, &_w2] {
        logs.push_str(&std::fs::read_to_string(&worker.log).unwrap());
    }
    assert!(
        logs.contains("Access token refreshed."),
        "the logs were captured"
    );
    for token in sandbox.issued_tokens() {
        assert!(!logs.contains(&token), "an issued token was logged");
    }
}

/// A worker that rotated the refresh token at the institution and died before
/// committing leaves the old refresh token in the database.
pub(crate) async fn rotate_behind_our_back(sandbox: &Sandbox, refresh_token: &str) {
    let response = finsync::http::client()
        .post(format!("{}/meridian/oauth/token", sandbox.base_url()))
        .basic_auth("finsync-sandbox", Some("meridian-sandbox-secret"))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn a_crash_between_rotation_and_commit_is_survived_within_the_grace_period() {
    let config = SandboxConfig {
        refresh_grace: Some(Duration::from_secs(120)),
        ..sandbox_config(1)
    };
    let app = TestApp::builder()
        .sandbox(config)
        .sqlite()
        .tenant("advisor")
        .build()
        .await;
    let sandbox = app.sandbox();
    let tenant = app.tenant();
    let connection = app.link_and_sync(tenant.id, "demo-bob").await;
    rotate_behind_our_back(
        sandbox,
        &open_token(&app, connection, "refresh_token").await,
    )
    .await;
    access_token_expired(&app, connection).await;

    let since = chrono::Utc::now();
    let job = SyncConnection {
        connection_id: connection,
        idempotency_key: "test:after-crash".into(),
    };
    crate::support::request_sync(&app.app.ctx.queue, job).await;
    app.wait_synced(connection, since).await;
    assert_eq!(
        app.app
            .ctx
            .store
            .connection(connection)
            .await
            .unwrap()
            .status,
        ConnectionStatus::Active
    );
}

#[tokio::test]
async fn without_a_grace_period_the_connection_asks_for_relinking_once_and_a_relink_repairs_it() {
    let app = TestApp::builder()
        .expect_failed_jobs()
        .sandbox(sandbox_config(1))
        .sqlite()
        .tenant("advisor")
        .build()
        .await;
    let sandbox = app.sandbox();
    let store = app.app.ctx.store.clone();
    let tenant = app.tenant();
    let key = &tenant.key;
    let connection = app.link_and_sync(tenant.id, "demo-bob").await;
    // Where a repair link brings the user back to.
    store
        .set_tenant_redirect_uris(
            tenant.id,
            &["https://advisor.example.com/back".to_owned()],
            crate::support::by_test(),
        )
        .await
        .unwrap();
    rotate_behind_our_back(
        sandbox,
        &open_token(&app, connection, "refresh_token").await,
    )
    .await;
    access_token_expired(&app, connection).await;

    let job = SyncConnection {
        connection_id: connection,
        idempotency_key: "test:after-crash".into(),
    };
    let since = chrono::Utc::now();
    crate::support::request_sync(&app.app.ctx.queue, job).await;
    let outcome = crate::support::wait_for_sync(&app.app, connection, since)
        .await
        .unwrap();
    assert!(outcome.is_err(), "the sync fails");
    let record = store.connection(connection).await.unwrap();
    assert_eq!(record.status, ConnectionStatus::ReauthRequired);
    assert!(
        record
            .last_failure_reason
            .as_deref()
            .unwrap()
            .starts_with("REAUTH_REQUIRED")
    );
    assert!(record.last_failure_at.is_some());
    // No retry storm: the refused grant is tried once, and nothing schedules more.
    // Once the queue holds nothing still to do (no retry waiting), no more can come.
    wait_until("the queue to settle", Duration::from_secs(60), || async {
        app.app.ctx.queue.depth().await.unwrap() == 0
    })
    .await;
    assert_eq!(sandbox.stats().refreshes_rejected, 1);
    assert_eq!(scheduler::tick(&app.app.ctx).await.unwrap(), 0);

    // The tenant sees why; the admin sees it with a relink URL.
    let portfolio = app
        .get_json("/v1/users/demo-bob/portfolio", key.0.expose_secret())
        .await;
    assert_eq!(portfolio["freshness"]["stale"], true);
    assert!(
        portfolio["freshness"]["reason"]
            .as_str()
            .unwrap()
            .starts_with("REAUTH_REQUIRED")
    );
    assert!(
        !portfolio["accounts"].as_array().unwrap().is_empty(),
        "the last good data is still served"
    );
    let admin = app
        .get_json(&format!("/admin/connections/{connection}"), ADMIN_TOKEN)
        .await;
    assert_eq!(admin["status"], "reauth_required");
    assert_eq!(admin["consent"]["expiring_soon"], false);
    assert!(
        admin["consent"]["expires_at"].is_string(),
        "the connector declares a consent lifetime: {admin}"
    );
    let relink = admin["relink_url"].as_str().expect("a relink URL");

    // Following it repairs the same connection.
    let since = chrono::Utc::now();
    let returned = LinkBrowser::default()
        .link(&app.address, relink, "meridian")
        .await;
    assert!(returned.as_str().contains("status=repaired"), "{returned}");
    app.wait_synced(connection, since).await;
    assert_eq!(
        store.connection(connection).await.unwrap().status,
        ConnectionStatus::Active
    );
}

#[tokio::test]
async fn tokens_are_refreshed_in_the_background_before_they_expire() {
    let app = TestApp::builder()
        .sandbox(sandbox_config(4))
        .sqlite()
        .with(|settings| settings.tokens.refresh_at_fraction = 0.25) // due after one second
        .tenant("advisor")
        .build()
        .await;
    let sandbox = app.sandbox();
    let tenant = app.tenant();
    let connection = app.link_and_sync(tenant.id, "demo-carol").await;
    let first = app
        .app
        .ctx
        .store
        .connection(connection)
        .await
        .unwrap()
        .tokens;
    assert_eq!(
        scheduler::tick(&app.app.ctx).await.unwrap(),
        0,
        "nothing is due yet"
    );
    // Due one second in: tick until the scheduler finds it.
    let due = eventually("the refresh to be due", Duration::from_secs(30), || async {
        let due = scheduler::tick(&app.app.ctx).await.unwrap();
        (due > 0).then_some(due)
    })
    .await;
    assert_eq!(due, 1, "the refresh is due");
    wait_for(&app, connection, |c| {
        c.tokens.access_token_expires_at > first.access_token_expires_at
    })
    .await;
    let after = app.app.ctx.store.connection(connection).await.unwrap();
    // Renewed while the old token was still valid, with a rotated refresh token.
    assert!(after.tokens.access_token_expires_at.unwrap() > first.access_token_expires_at.unwrap());
    assert_ne!(after.tokens.refresh_token, first.refresh_token);
    assert_eq!(sandbox.stats().refreshes, 1);
    assert_eq!(after.status, ConnectionStatus::Active);

    let metrics = finsync::http::client()
        .get(format!("{}/metrics", app.address))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("finsync_token_refresh_total"), "{metrics}");
    assert!(
        metrics.contains("finsync_token_min_expires_in_seconds{institution=\"meridian\"}"),
        "{metrics}"
    );
}

#[tokio::test]
async fn unusual_token_responses_work_through_connector_settings() {
    let quirks = [
        TokenQuirks {
            expires_in_as_string: true,
            ..TokenQuirks::default()
        },
        TokenQuirks {
            omit_expires_in: true,
            ..TokenQuirks::default()
        },
        TokenQuirks {
            omit_token_type: true,
            ..TokenQuirks::default()
        },
        TokenQuirks {
            extra_fields: true,
            ..TokenQuirks::default()
        },
    ];
    for quirk in quirks {
        let app = TestApp::builder()
            .sandbox(SandboxConfig {
                token_quirks: quirk,
                ..sandbox_config(1800)
            })
            .sqlite()
            .tenant("advisor")
            .build()
            .await;
        let tenant = app.tenant();
        let connection = app.link_and_sync(tenant.id, "demo-alice").await;
        let record = app.app.ctx.store.connection(connection).await.unwrap();
        let lifetime = record.tokens.access_token_expires_at.unwrap() - chrono::Utc::now();
        // Without expires_in the connector's default (3600 s) applies; else the 1800 s sent.
        let expected = if quirk.omit_expires_in { 3600 } else { 1800 };
        assert!(
            (expected - 60..=expected).contains(&lifetime.num_seconds()),
            "{quirk:?}: {lifetime}"
        );
        // And a refresh through the same quirks works too.
        let token = app.app.ctx.tokens.refreshed_token(&record).await.unwrap();
        assert!(!token.expose_secret().is_empty(), "{quirk:?}");
    }
}

#[tokio::test]
async fn disconnecting_revokes_at_the_institution_and_deletes_tokens_and_data() {
    let app = TestApp::builder()
        .postgres()
        .tenant("advisor")
        .build()
        .await;
    let sandbox = app.sandbox();
    let store = app.app.ctx.store.clone();
    let tenant = app.tenant();
    let key = &tenant.key;
    let connection = app.link_and_sync(tenant.id, "demo-alice").await;
    let refresh = open_token(&app, connection, "refresh_token").await;

    let http = finsync::http::client();
    let url = format!("{}/admin/connections/{connection}", app.address);
    assert_eq!(
        http.delete(&url).send().await.unwrap().status(),
        401,
        "admins only"
    );
    let body: Value = http
        .delete(&url)
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["status"], "revoked");
    assert_eq!(body["revoked_at_institution"], true, "{body}");
    assert_eq!(sandbox.stats().revocations, 1);
    // The institution no longer honours the grant.
    let response = http
        .post(format!("{}/meridian/oauth/token", sandbox.base_url()))
        .basic_auth("finsync-sandbox", Some("meridian-sandbox-secret"))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);

    let record = store.connection(connection).await.unwrap();
    assert_eq!(record.status, ConnectionStatus::Revoked);
    assert!(record.tokens.access_token.is_none() && record.tokens.refresh_token.is_none());
    assert!(
        record.consent.granted_at.is_some() && record.consent.revoked_at.is_some(),
        "the consent history stays"
    );
    assert!(
        store
            .full_snapshot(connection)
            .await
            .unwrap()
            .accounts
            .is_empty()
    );
    let dump = crate::support::dump_database(&store).await;
    let logs = crate::support::captured_logs();
    assert!(
        logs.contains("Connection disconnected."),
        "the logs were captured"
    );
    for token in sandbox.issued_tokens() {
        assert!(
            !dump.contains(&token),
            "an issued token is still in the database"
        );
        assert!(!logs.contains(&token), "an issued token was logged");
    }
    let portfolio = app
        .get_json("/v1/users/demo-alice/portfolio", key.0.expose_secret())
        .await;
    assert!(
        portfolio["freshness"]["reason"]
            .as_str()
            .unwrap()
            .starts_with("CONNECTION_REVOKED"),
        "{portfolio}"
    );
    assert!(portfolio["accounts"].as_array().unwrap().is_empty());

    // Linking again repairs the same connection, and its first sync fetches
    // everything again: the records were deleted, so the incremental cursor of
    // the syncs before the disconnect must not be resumed from.
    assert_eq!(app.link_and_sync(tenant.id, "demo-alice").await, connection);
    let expected = finsync_sandbox::data::portfolio_at(
        42,
        SandboxConfig::default().anchor_date,
        "demo-alice",
        0,
    );
    assert_matches_sandbox(&store.full_snapshot(connection).await.unwrap(), &expected);
}

#[tokio::test]
async fn rotating_the_vault_key_reseals_every_token() {
    let app = TestApp::builder().sqlite().tenant("advisor").build().await;
    let store = app.app.ctx.store.clone();
    let tenant = app.tenant();
    let connection = app.link_and_sync(tenant.id, "demo-carol").await;
    let token = open_token(&app, connection, "access_token").await;

    let new_key = Vault::generate_key();
    let mut ring = Vault::single(new_key.expose_secret()).unwrap();
    ring.add_key(VAULT_KEY).unwrap();
    let report = rotate::reseal_all(&store, &ring).await.unwrap();
    assert_eq!(report.connections, 1);
    assert_eq!(
        rotate::reseal_all(&store, &ring).await.unwrap().connections,
        0,
        "a second run has nothing to do"
    );

    // The new key alone opens everything; the old key alone opens nothing.
    let sealed = store
        .connection(connection)
        .await
        .unwrap()
        .tokens
        .access_token
        .unwrap();
    let only_new = Vault::single(new_key.expose_secret()).unwrap();
    let opened = only_new
        .open(&seal_context(connection, "access_token"), &sealed)
        .unwrap();
    assert_eq!(opened.expose_secret(), token);
    assert!(
        Vault::single(VAULT_KEY)
            .unwrap()
            .open(&seal_context(connection, "access_token"), &sealed)
            .is_err()
    );
}

#[test]
fn production_without_a_vault_key_refuses_to_start() {
    let output = finsync(&[
        ("FINSYNC_ENV", "production".to_owned()),
        (
            "FINSYNC__DATABASE__URL",
            "postgres://nobody@127.0.0.1:1/none".to_owned(),
        ),
    ])
    .arg("worker")
    .output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("vault: no key configured"), "{stderr}");
}

#[tokio::test]
async fn the_rotate_key_command_reseals_under_the_new_key() {
    let app = TestApp::builder()
        .postgres()
        .tenant("advisor")
        .build()
        .await;
    let sandbox = app.sandbox();
    let db = app.db();
    let store = app.app.ctx.store.clone();
    let tenant = app.tenant();
    let connection = app.link_and_sync(tenant.id, "demo-bob").await;

    let new_key = Vault::generate_key();
    let mut env = process_env(&db.url, &sandbox.base_url());
    env.retain(|(k, _)| *k != "FINSYNC__VAULT__KEY");
    env.push(("FINSYNC__VAULT__KEY", new_key.expose_secret().to_owned()));
    env.push(("FINSYNC__VAULT__PREVIOUS_KEYS", VAULT_KEY.to_owned()));
    let output = finsync(&env)
        .args(["tokens", "rotate-key"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("Re-sealed 1 connection(s)"), "{stdout}");
    let sealed = store
        .connection(connection)
        .await
        .unwrap()
        .tokens
        .refresh_token
        .unwrap();
    assert_eq!(
        Vault::sealed_with(&sealed),
        Some(
            Vault::single(new_key.expose_secret())
                .unwrap()
                .current_key_id()
        )
    );
}

#[tokio::test]
async fn a_refresh_that_cannot_reach_the_institution_is_transient_and_keeps_the_tokens() {
    let mut app = TestApp::builder().sqlite().tenant("advisor").build().await;
    let store = app.app.ctx.store.clone();
    let connection = app.link_and_sync(app.tenant().id, "demo-carol").await;
    let stale = store.connection(connection).await.unwrap();
    app.shutdown_sandbox().await;

    // The refresh is retried with backoff, then reported as a transient failure.
    let error = app
        .app
        .ctx
        .tokens
        .refreshed_token(&stale)
        .await
        .unwrap_err();
    assert!(
        matches!(error, finsync::tokens::TokenError::Refresh(_)),
        "{error}"
    );
    let after = store.connection(connection).await.unwrap();
    assert_eq!(
        after.status,
        ConnectionStatus::Active,
        "a transient failure is not a refused grant"
    );
    assert_eq!(
        after.tokens.refresh_token, stale.tokens.refresh_token,
        "the stored tokens are untouched"
    );
}

#[tokio::test]
async fn an_expired_consent_asks_the_user_to_link_again() {
    use finsync::store::entities::connection as row;
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, sea_query::Expr};
    let app = TestApp::builder()
        .sqlite()
        .workers(false)
        .tenant("advisor")
        .build()
        .await;
    let _db = app.db();
    let store = app.app.ctx.store.clone();
    let tenant = app.tenant();
    let connection = link(&app, tenant.id, "demo-alice").await;
    let consent = store.connection(connection).await.unwrap().consent;
    let lifetime = consent.expires_at.unwrap() - consent.granted_at.unwrap();
    assert!(
        (lifetime - chrono::Duration::days(90)).num_seconds().abs() < 60,
        "the connector's 90-day consent: {lifetime}"
    );

    row::Entity::update_many()
        .col_expr(
            row::Column::ConsentExpiresAt,
            Expr::value(chrono::Utc::now() - chrono::Duration::minutes(1)),
        )
        .filter(row::Column::Id.eq(connection.to_string()))
        .exec(store.db())
        .await
        .unwrap();
    scheduler::tick(&app.app.ctx).await.unwrap();
    let record = store.connection(connection).await.unwrap();
    assert_eq!(record.status, ConnectionStatus::ReauthRequired);
    assert!(record.last_failure_reason.unwrap().contains("consent"));
}

/// Starts a refresh of `connection` in a process of its own (a thread with its own
/// runtime, database pool and HTTP client) and stops that process, the way
/// `kill -9` does, once the institution has rotated the refresh token and while
/// its answer is held back: nothing of the refresh after that point runs.
async fn refresh_and_die(app: &TestApp, connection: ConnectionId, institution: Institution) {
    let sandbox = app.sandbox();
    sandbox
        .set_faults(
            institution,
            Faults {
                token_delay_ms: 5_000,
                ..Faults::default()
            },
        )
        .unwrap();
    let refreshes = sandbox.stats().refreshes;
    let record = app.app.ctx.store.connection(connection).await.unwrap();
    let tokens = app.app.ctx.tokens.clone();
    let url = SecretString::from(app.db().url.clone());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let process = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let tokens = TokenService {
                store: Store::connect(&url, 2).await.unwrap(),
                http: finsync::http::client(),
                ..tokens
            };
            tokio::select! {
                outcome = tokens.refreshed_token(&record) => {
                    panic!("the refresh was to be cut short, it ended: {:?}", outcome.map(|_| ()));
                }
                _ = stopped => {}
            }
        });
        // Dropping the runtime drops every task of the "process" where it stands.
        drop(runtime);
    });
    eventually(
        "the institution to rotate the refresh token",
        Duration::from_secs(30),
        || async { (sandbox.stats().refreshes > refreshes).then_some(()) },
    )
    .await;
    stop.send(()).unwrap();
    process.join().unwrap();
    sandbox.set_faults(institution, Faults::default()).unwrap();
    let after = app.app.ctx.store.connection(connection).await.unwrap();
    assert!(
        after.refresh_started_at.is_some(),
        "the refresh said what it was doing before it asked"
    );
}

/// Syncs `connection` through the queue, as a worker would after the crash.
async fn sync_after_crash(app: &TestApp, connection: ConnectionId) -> Result<(), String> {
    let since = chrono::Utc::now();
    let job = SyncConnection {
        connection_id: connection,
        idempotency_key: crate::support::unique("test:after-refresh-crash"),
    };
    crate::support::request_sync(&app.app.ctx.queue, job).await;
    crate::support::wait_for_sync(&app.app, connection, since)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_refresh_killed_mid_rotation_is_finished_by_the_next_worker_inside_the_grace() {
    // Harbor accepts a replaced refresh token for 60 s, and its connector says so.
    let app = TestApp::builder()
        .sandbox(sandbox_config(2))
        .tenant("advisor")
        .build()
        .await;
    let sandbox = app.sandbox();
    let tenant = app.tenant();
    let connection = app
        .link_and_sync_at(tenant.id, "demo-alice", "harbor")
        .await;
    access_token_expired(&app, connection).await;
    refresh_and_die(&app, connection, Institution::Harbor).await;
    let rejected = sandbox.stats().refreshes_rejected;

    // The dead process's lease lapses within seconds; the sync waits for it, then
    // presents the same refresh token again, which the institution still takes.
    sync_after_crash(&app, connection).await.unwrap();
    let after = app.app.ctx.store.connection(connection).await.unwrap();
    assert_eq!(after.status, ConnectionStatus::Active);
    assert_eq!(
        after.refresh_started_at, None,
        "the refresh's outcome is recorded"
    );
    assert_eq!(sandbox.stats().refreshes_rejected, rejected);
    // What was stored is the institution's live pair: it refreshes again.
    access_token_expired(&app, connection).await;
    sync_after_crash(&app, connection).await.unwrap();
}

#[tokio::test]
async fn a_refresh_killed_mid_rotation_without_a_grace_says_why_the_user_must_link_again() {
    // Meridian refuses a replaced refresh token at once.
    let app = TestApp::builder()
        .sandbox(sandbox_config(2))
        .tenant("advisor")
        .expect_failed_jobs()
        .build()
        .await;
    let tenant = app.tenant();
    let connection = app.link_and_sync(tenant.id, "demo-bob").await;
    access_token_expired(&app, connection).await;
    refresh_and_die(&app, connection, Institution::Meridian).await;

    let reason = sync_after_crash(&app, connection).await.unwrap_err();
    assert_eq!(reason, finsync::tokens::ROTATION_LOST);
    let after = app.app.ctx.store.connection(connection).await.unwrap();
    assert_eq!(after.status, ConnectionStatus::ReauthRequired);
    assert_eq!(
        after.last_failure_reason.as_deref(),
        Some(finsync::tokens::ROTATION_LOST)
    );
    let portfolio = app
        .get_json("/v1/users/demo-bob/portfolio", tenant.key.0.expose_secret())
        .await;
    let (code, message) = finsync::tokens::ROTATION_LOST.split_once(": ").unwrap();
    assert_eq!(portfolio["freshness"]["reason"], code);
    assert_eq!(portfolio["freshness"]["message"], message);
}

#[tokio::test]
async fn a_sync_that_finds_a_refresh_in_progress_says_so_and_comes_back_shortly() {
    let app = TestApp::builder()
        .sandbox(sandbox_config(2))
        .tenant("advisor")
        .expect_failed_jobs()
        .build()
        .await;
    let tenant = app.tenant();
    let store = &app.app.ctx.store;
    let connection = app.link_and_sync(tenant.id, "demo-carol").await;
    access_token_expired(&app, connection).await;
    // Another process is renewing the tokens, and keeps at it past the 30 s a sync waits.
    let until = chrono::Utc::now() + chrono::Duration::minutes(10);
    assert!(
        store
            .acquire_lease(Lease::Token, connection, "another-process", until)
            .await
            .unwrap()
    );
    let reason = sync_after_crash(&app, connection).await.unwrap_err();
    assert!(reason.starts_with("TOKEN_REFRESH_PENDING"), "{reason}");
    let record = store.connection(connection).await.unwrap();
    assert_eq!(record.status, ConnectionStatus::Active);
    let wait = record.next_sync_at.unwrap() - record.last_failure_at.unwrap();
    assert!(
        wait <= chrono::Duration::seconds(16),
        "comes back shortly: {wait}"
    );
    let portfolio = app
        .get_json(
            "/v1/users/demo-carol/portfolio",
            tenant.key.0.expose_secret(),
        )
        .await;
    assert_eq!(portfolio["freshness"]["reason"], "TOKEN_REFRESH_PENDING");

    // Once the other process lets go, the next sync refreshes and goes through.
    store
        .release_lease(Lease::Token, connection, "another-process")
        .await
        .unwrap();
    sync_after_crash(&app, connection).await.unwrap();
}
