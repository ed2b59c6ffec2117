//! Reads while the database is away: cached portfolios are still answered (saying
//! `STORE_UNAVAILABLE`), with API keys recognised from memory; what needs the
//! database answers 503 with `Retry-After` at once; `/readyz` says so within a
//! second; everything recovers when the database is back. The outage is a cut
//! TCP link between the app and PostgreSQL, so no shared server is stopped. A
//! pooled connection the server ended while it sat idle is replaced before a
//! caller gets it.

use std::time::{Duration, Instant};

use finsync_sandbox::link::CuttableLink;
use reqwest::StatusCode;
use secrecy::{ExposeSecret, SecretString};

use crate::support::{Backend, TestApp, TestDb, eventually, postgres_url, store_with_connection};

/// Far below the 10 s a request used to wait for the pool, and far above what a
/// fast failure takes on a loaded machine.
const PROMPTLY: Duration = Duration::from_secs(5);

async fn get(app: &TestApp, path: &str, key: &str) -> reqwest::Response {
    finsync::http::client()
        .get(format!("{}{path}", app.address))
        .bearer_auth(key)
        .timeout(PROMPTLY)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{path} did not answer promptly: {e}"))
}

#[tokio::test]
async fn with_the_database_away_cached_reads_are_served_and_the_rest_fails_fast() {
    // Between the app and the test's PostgreSQL server, wherever it is.
    let server = url::Url::parse(&postgres_url()).unwrap();
    let upstream =
        tokio::net::lookup_host((server.host_str().unwrap(), server.port().unwrap_or(5432)))
            .await
            .unwrap()
            .next()
            .unwrap();
    let link = CuttableLink::start(upstream).await.unwrap();
    let port = link.address().port();
    let app = TestApp::builder()
        .postgres()
        .redis()
        .with(move |settings| {
            let mut through_link = url::Url::parse(settings.database.url.expose_secret()).unwrap();
            through_link.set_port(Some(port)).unwrap();
            settings.database.url = SecretString::from(through_link.to_string());
            // A key is trusted without the database for a second only: the reads
            // below outlive that, so they are recognised from what was remembered.
            settings.server.api_key_cache_secs = 1;
        })
        .tenant("advisor")
        .build()
        .await;
    let tenant = app.tenant();
    let key = tenant.bearer().to_owned();
    app.link_and_sync(tenant.id, "demo-alice").await;
    let before = get(&app, "/v1/users/demo-alice/portfolio", &key).await;
    assert_eq!(before.status(), StatusCode::OK);
    let before: serde_json::Value = before.json().await.unwrap();

    link.cut();
    let cut_at = Instant::now();

    // The cached portfolio is answered, and says where it came from, for longer
    // than the key cache trusts a key on its own.
    let answered = std::cell::Cell::new(0);
    eventually(
        "cached answers marked STORE_UNAVAILABLE past the key cache's second",
        Duration::from_secs(30),
        || async {
            let response = get(&app, "/v1/users/demo-alice/portfolio", &key).await;
            assert_eq!(response.status(), StatusCode::OK);
            let body: serde_json::Value = response.json().await.unwrap();
            if body["freshness"]["reason"] == "STORE_UNAVAILABLE" {
                answered.set(answered.get() + 1);
                assert_eq!(body["accounts"], before["accounts"]);
                assert_eq!(body["holdings"], before["holdings"]);
            }
            (answered.get() > 0 && cut_at.elapsed() >= Duration::from_secs(3)).then_some(())
        },
    )
    .await;

    // What needs the database fails fast, with a code and a time to come back.
    for path in [
        "/v1/users/demo-alice/transactions",
        "/v1/users/someone-never-read/portfolio",
    ] {
        let response = get(&app, path, &key).await;
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE, "{path}");
        let retry_after: u64 = response.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(retry_after >= 1);
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "STORE_UNAVAILABLE", "{path}: {body}");
    }
    // A key never seen is refused as unavailable, not as unknown: the database
    // that would know it cannot be asked.
    let stranger = get(
        &app,
        "/v1/users/demo-alice/portfolio",
        "fsk_aaaaaaaa_bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
    )
    .await;
    assert_eq!(stranger.status(), StatusCode::SERVICE_UNAVAILABLE);
    let ready = finsync::http::client()
        .get(format!("{}/readyz", app.address))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .expect("/readyz answers within its second");
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);

    link.restore();
    // Back: the database answers again, and the probe (every second) stops the
    // cached answers from saying otherwise.
    eventually(
        "the app to see its database again",
        Duration::from_secs(30),
        || async {
            let transactions = get(&app, "/v1/users/demo-alice/transactions", &key).await;
            let portfolio: serde_json::Value = get(&app, "/v1/users/demo-alice/portfolio", &key)
                .await
                .json()
                .await
                .unwrap();
            (transactions.status() == StatusCode::OK
                && portfolio["freshness"]["reason"] != "STORE_UNAVAILABLE")
                .then_some(())
        },
    )
    .await;
    let ready = get(&app, "/readyz", &key).await;
    assert_eq!(ready.status(), StatusCode::OK);
}

/// The pool pings a connection only once it has sat idle a while (a connection
/// back from work a moment ago was pinged on its way back). One the server ended
/// while it sat idle must still be replaced, not handed to a caller to fail.
#[tokio::test]
async fn a_pooled_connection_the_server_ended_while_idle_is_replaced_before_use() {
    use sea_orm::ConnectionTrait as _;
    let db = TestDb::new(Backend::Postgres).await;
    let (store, connection) = store_with_connection(&db, 1).await;
    store.connection(connection).await.unwrap();
    // The pool's one connection is back in it (sqlx returns it after pinging it,
    // in a task of its own); its idle time counts from then, so from no later
    // than `returned`.
    let pool = store.db().get_postgres_connection_pool();
    eventually("the connection is back in the pool", PROMPTLY, || {
        let idle = pool.num_idle();
        async move { (idle == 1).then_some(()) }
    })
    .await;
    let returned = Instant::now();

    let name = url::Url::parse(&db.url)
        .unwrap()
        .path()
        .trim_start_matches('/')
        .to_owned();
    let admin = sea_orm::Database::connect(postgres_url()).await.unwrap();
    let others =
        format!("FROM pg_stat_activity WHERE datname = '{name}' AND pid <> pg_backend_pid()");
    let count = |sql: String| {
        let admin = &admin;
        async move {
            admin
                .query_one_raw(sea_orm::Statement::from_string(
                    sea_orm::DbBackend::Postgres,
                    sql,
                ))
                .await
                .unwrap()
                .and_then(|row| row.try_get::<i64>("", "n").ok())
        }
    };
    let ended = count(format!(
        "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) AS n {others}"
    ))
    .await;
    assert_eq!(ended, Some(1), "the pool's one connection was ended");
    eventually(
        "the pooled connection's server process ends",
        PROMPTLY,
        || {
            let left = count(format!("SELECT count(*) AS n {others}"));
            async move { (left.await == Some(0)).then_some(()) }
        },
    )
    .await;
    eventually(
        "the connection has sat idle as long as the pool waits before pinging",
        PROMPTLY,
        || {
            let idle = returned.elapsed();
            async move { (idle >= finsync::store::POOL_PING_IDLE).then_some(()) }
        },
    )
    .await;

    let read = store.connection(connection).await;
    assert!(
        read.is_ok(),
        "the first read after the server ended the idle connection failed: {:?}",
        read.err()
    );
}
