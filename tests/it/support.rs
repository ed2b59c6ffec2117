//! Test helpers: fresh databases (dropped when the guard drops), a sandbox, a
//! running app with API and workers, and comparison against the sandbox's data.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use finsync::app::config::Settings;
use finsync::app::startup::App;
use finsync::domain::{ConnectionId, Snapshot, TenantId, UserId};
use finsync::store::ApiKey;
use finsync_sandbox::{self as sandbox, Sandbox, SandboxConfig};
use rust_decimal::Decimal;
use sea_orm::{ConnectionTrait, Database};
use secrecy::{ExposeSecret, SecretString};
use tokio::net::TcpListener;
use tokio::sync::watch;

pub const VAULT_KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="; // 32 bytes, base64
pub const ADMIN_TOKEN: &str = "test-admin-token";

/// Waits for a sync of `connection` that started after `since` to finish:
/// `Err(reason)` when it failed.
pub async fn wait_for_sync(
    app: &App,
    connection: ConnectionId,
    since: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<Result<(), String>> {
    Ok(finsync::sync::wait_for_sync(&app.ctx.store, connection, since, SYNC_TIMEOUT).await?)
}

/// How long a test waits for one sync.
const SYNC_TIMEOUT: Duration = Duration::from_secs(120);

pub fn postgres_url() -> String {
    std::env::var("FINSYNC_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

pub fn redis_url() -> String {
    std::env::var("FINSYNC_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

pub fn unique(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A database of its own for one test; dropped (PostgreSQL) or deleted (SQLite)
/// when this guard goes out of scope, even if the test panicked.
pub struct TestDb {
    pub url: String,
    cleanup: Cleanup,
}

enum Cleanup {
    Postgres { admin_url: String, name: String },
    Sqlite { dir: std::path::PathBuf },
}

impl TestDb {
    pub async fn new(backend: Backend) -> Self {
        match backend {
            Backend::Sqlite => {
                let dir = std::env::temp_dir().join(unique("finsync-test"));
                std::fs::create_dir_all(&dir).unwrap();
                let url = format!("sqlite://{}?mode=rwc", dir.join("finsync.db").display());
                Self {
                    url,
                    cleanup: Cleanup::Sqlite { dir },
                }
            }
            Backend::Postgres => {
                let admin_url = postgres_url();
                let name = unique("finsync_test");
                let admin = Database::connect(&admin_url)
                    .await
                    .expect("PostgreSQL is reachable (see scripts/test.sh)");
                admin
                    .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
                    .await
                    .unwrap();
                admin.close().await.unwrap();
                let mut url = url::Url::parse(&admin_url).unwrap();
                url.set_path(&format!("/{name}"));
                Self {
                    url: url.to_string(),
                    cleanup: Cleanup::Postgres { admin_url, name },
                }
            }
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        match &self.cleanup {
            Cleanup::Sqlite { dir } => {
                let _ = std::fs::remove_dir_all(dir);
            }
            Cleanup::Postgres { admin_url, name } => {
                let (admin_url, name) = (admin_url.clone(), name.clone());
                // Drop runs inside the test's runtime: do the async work on a thread
                // with a runtime of its own.
                let _ = std::thread::spawn(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .unwrap();
                    runtime.block_on(async {
                        if let Ok(admin) = Database::connect(&admin_url).await {
                            let _ = admin
                                .execute_unprepared(&format!(
                                    "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                                ))
                                .await;
                            let _ = admin.close().await;
                        }
                    });
                })
                .join();
            }
        }
    }
}

/// Deletes every Redis key under a test's prefix when dropped.
pub struct RedisPrefix(pub String);

impl Drop for RedisPrefix {
    fn drop(&mut self) {
        let pattern = format!("{}:*", self.0);
        if let Ok(client) = redis::Client::open(redis_url())
            && let Ok(mut connection) = client.get_connection()
        {
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(&pattern)
                .query(&mut connection)
                .unwrap_or_default();
            for key in keys {
                let _: Result<(), _> = redis::cmd("DEL").arg(key).query(&mut connection);
            }
        }
    }
}

/// A migrated store on `db` with `pool` connections, and one connection of tenant
/// `t`'s user `u` to Meridian, for tests of the store alone.
pub async fn store_with_connection(
    db: &TestDb,
    pool: u32,
) -> (finsync::store::Store, ConnectionId) {
    let store = finsync::store::Store::connect(&SecretString::from(db.url.clone()), pool)
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let (tenant, _) = store.create_tenant("t").await.unwrap();
    let connection = store
        .upsert_connection(tenant.id, &UserId::parse("u").unwrap(), "meridian")
        .await
        .unwrap();
    (store, connection.id)
}

pub async fn spawn_sandbox(config: SandboxConfig) -> Sandbox {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    sandbox::spawn(config, listener).await.unwrap()
}

/// Settings for a test: the test environment with this test's database, Redis
/// prefix (or no Redis) and sandbox.
pub fn settings(db: &TestDb, redis_prefix: Option<&str>, sandbox: &Sandbox) -> Settings {
    let mut settings = base_settings(db, redis_prefix);
    for institution in sandbox::Institution::ALL {
        settings
            .connectors
            .base_urls
            .insert(institution.id().into(), sandbox.api_base(institution));
    }
    settings.fx.url = Some(sandbox.fx_url());
    settings
}

/// Settings for a test that brings its own institutions: the test environment with
/// this test's database and Redis prefix (or no Redis), and no sandbox.
pub fn base_settings(db: &TestDb, redis_prefix: Option<&str>) -> Settings {
    let mut settings =
        Settings::load_from(&finsync::app::config::config_dir(), Some("test")).unwrap();
    settings.database.url = SecretString::from(db.url.clone());
    settings.database.max_connections = 5;
    match redis_prefix {
        Some(prefix) => {
            settings.redis.url = SecretString::from(redis_url());
            settings.redis.key_prefix = prefix.to_owned();
        }
        None => settings.redis.url = SecretString::from(""),
    }
    settings.sandbox.in_process = false;
    settings.vault.key = SecretString::from(VAULT_KEY);
    settings.server.admin_token = SecretString::from(ADMIN_TOKEN);
    settings
}

/// How often [`eventually`] looks again.
const POLL: Duration = Duration::from_millis(50);

/// Polls `check` until it returns `Some(value)` and returns that value; fails the
/// test, naming `what`, if `deadline` passes first.
pub async fn eventually<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    eventually_explained(what, deadline, || {
        let checked = check();
        async move { checked.await.ok_or_else(String::new) }
    })
    .await
}

/// [`eventually`] for a check that says why it is not there yet (`Err(why)`):
/// the failure names the last reason. The one place tests wait.
pub async fn eventually_explained<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let until = tokio::time::Instant::now() + deadline;
    loop {
        let why = match check().await {
            Ok(value) => return value,
            Err(why) => why,
        };
        assert!(
            tokio::time::Instant::now() < until,
            "timed out after {deadline:?} waiting for {what}\n{why}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// [`eventually`] for a condition with nothing to return.
pub async fn wait_until<F, Fut>(what: &str, deadline: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    eventually(what, deadline, || {
        let done = check();
        async move { done.await.then_some(()) }
    })
    .await
}

/// The tenant a [`TestAppBuilder`] created, with its API key.
pub struct TestTenant {
    pub id: TenantId,
    pub key: ApiKey,
}

impl TestTenant {
    /// The API key as a bearer token.
    pub fn bearer(&self) -> &str {
        self.key.0.expose_secret()
    }
}

/// A change to a test's settings.
type Tweak<'a> = Box<dyn FnOnce(&mut Settings) + 'a>;

/// Builds a [`TestApp`] with everything a test needs: its own database, a sandbox,
/// settings pointing at them, and optionally a tenant with its key.
#[must_use]
pub struct TestAppBuilder<'a> {
    sandbox: Option<SandboxConfig>,
    backend: Backend,
    workers: bool,
    redis: bool,
    tweaks: Vec<Tweak<'a>>,
    tenant: Option<String>,
    expect_failed_jobs: bool,
}

impl<'a> TestAppBuilder<'a> {
    /// The sandbox's configuration (default: [`SandboxConfig::default`]).
    pub fn sandbox(mut self, config: SandboxConfig) -> Self {
        self.sandbox = Some(config);
        self
    }

    /// No sandbox: the test brings its own institutions.
    pub fn without_sandbox(mut self) -> Self {
        self.sandbox = None;
        self
    }

    /// A PostgreSQL database of its own (the fleet's deployment).
    pub fn postgres(mut self) -> Self {
        self.backend = Backend::Postgres;
        self
    }

    /// An SQLite file of its own (the embedded deployment; the default).
    pub fn sqlite(mut self) -> Self {
        self.backend = Backend::Sqlite;
        self
    }

    /// [`Self::sqlite`] or [`Self::postgres`], for a test that runs on both.
    pub fn backend(mut self, backend: Backend) -> Self {
        self.backend = backend;
        self
    }

    /// Whether the app runs its sync workers (default: yes).
    pub fn workers(mut self, workers: bool) -> Self {
        self.workers = workers;
        self
    }

    /// Redis under a key prefix of this test's own, deleted when the app drops
    /// (default: no Redis).
    pub fn redis(mut self) -> Self {
        self.redis = true;
        self
    }

    /// Changes the settings after the builder has filled them in.
    pub fn with(mut self, tweak: impl FnOnce(&mut Settings) + 'a) -> Self {
        self.tweaks.push(Box::new(tweak));
        self
    }

    /// Creates a tenant named `name` with an API key.
    pub fn tenant(mut self, name: &str) -> Self {
        self.tenant = Some(name.to_owned());
        self
    }

    /// The test makes syncs fail on purpose: dropping the app does not check for
    /// failed runs.
    pub fn expect_failed_jobs(mut self) -> Self {
        self.expect_failed_jobs = true;
        self
    }

    pub async fn build(self) -> TestApp {
        let sandbox = match self.sandbox {
            Some(config) => Some(spawn_sandbox(config).await),
            None => None,
        };
        let db = TestDb::new(self.backend).await;
        let redis = self.redis.then(|| RedisPrefix(unique("finsync_test")));
        let prefix = redis.as_ref().map(|r| r.0.as_str());
        let mut settings = match &sandbox {
            Some(sandbox) => settings(&db, prefix, sandbox),
            None => base_settings(&db, prefix),
        };
        for tweak in self.tweaks {
            tweak(&mut settings);
        }
        let mut app = TestApp::spawn(settings, self.workers).await;
        if let Some(name) = self.tenant {
            let (record, key) = app.app.ctx.store.create_tenant(&name).await.unwrap();
            app.tenant = Some(TestTenant { id: record.id, key });
        }
        app.expect_failed_jobs = self.expect_failed_jobs;
        // The check on drop reads the test's database directly, not through
        // whatever the settings route the app's connections through.
        app.database_url = db.url.clone();
        app.sandbox = sandbox;
        app.db = Some(db);
        app.redis = redis;
        app
    }
}

/// An app serving its API on 127.0.0.1:0 with workers running, stopped on drop.
/// Dropping it fails the test if a sync failed that the test did not expect
/// (see [`TestAppBuilder::expect_failed_jobs`]).
pub struct TestApp {
    pub app: Arc<App>,
    pub address: String,
    /// Set by the builder.
    pub tenant: Option<TestTenant>,
    stop: watch::Sender<bool>,
    database_url: String,
    expect_failed_jobs: bool,
    // Dropped after the check in `Drop`, in this order.
    db: Option<TestDb>,
    redis: Option<RedisPrefix>,
    sandbox: Option<Sandbox>,
}

impl TestApp {
    pub fn builder<'a>() -> TestAppBuilder<'a> {
        TestAppBuilder {
            sandbox: Some(SandboxConfig::default()),
            backend: Backend::Sqlite,
            workers: true,
            redis: false,
            tweaks: Vec::new(),
            tenant: None,
            expect_failed_jobs: false,
        }
    }

    /// The builder's tenant.
    pub fn tenant(&self) -> &TestTenant {
        self.tenant.as_ref().expect("built with .tenant(name)")
    }

    /// The builder's sandbox.
    pub fn sandbox(&self) -> &Sandbox {
        self.sandbox.as_ref().expect("built with a sandbox")
    }

    /// The builder's database.
    pub fn db(&self) -> &TestDb {
        self.db.as_ref().expect("built by the builder")
    }

    /// Stops the builder's sandbox, as an institution going away would.
    pub async fn shutdown_sandbox(&mut self) {
        self.sandbox
            .take()
            .expect("built with a sandbox")
            .shutdown()
            .await;
    }

    /// Stops the app and hands back its database and sandbox, for a test that
    /// starts the same deployment again.
    pub fn into_parts(mut self) -> (TestDb, Sandbox) {
        let db = self.db.take().expect("built by the builder");
        let sandbox = self.sandbox.take().expect("built with a sandbox");
        (db, sandbox)
    }

    /// For an app from [`Self::spawn`] whose test makes syncs fail on purpose.
    pub fn expecting_failed_jobs(mut self) -> Self {
        self.expect_failed_jobs = true;
        self
    }

    /// An app on settings the test made itself, sharing a database with others;
    /// prefer [`Self::builder`].
    pub async fn spawn(mut settings: Settings, workers: bool) -> Self {
        capture_logs();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = format!("http://{}", listener.local_addr().unwrap());
        settings.server.public_url = url::Url::parse(&format!("{address}/")).unwrap();
        let database_url = settings.database.url.expose_secret().to_owned();
        let app = Arc::new(App::build(settings).await.unwrap());
        let (stop, stopped) = watch::channel(false);
        let until = move || {
            let mut rx = stopped.clone();
            async move {
                let _ = rx.wait_for(|s| *s).await;
            }
        };
        tokio::spawn({
            let (app, shutdown) = (app.clone(), until());
            async move { app.serve(listener, shutdown).await }
        });
        if workers {
            tokio::spawn({
                let (app, shutdown) = (app.clone(), until());
                async move { app.run_workers(2, shutdown).await }
            });
        }
        Self {
            app,
            address,
            tenant: None,
            stop,
            database_url,
            expect_failed_jobs: false,
            db: None,
            redis: None,
            sandbox: None,
        }
    }

    /// Links a user at Meridian over HTTP (authorize → redirect → callback) and waits
    /// for the first sync to finish.
    pub async fn link_and_sync(&self, tenant: TenantId, user: &str) -> ConnectionId {
        self.link_and_sync_at(tenant, user, "meridian").await
    }

    /// Links a user at `institution` over HTTP and waits for the first sync to finish.
    pub async fn link_and_sync_at(
        &self,
        tenant: TenantId,
        user: &str,
        institution: &str,
    ) -> ConnectionId {
        let user = UserId::parse(user).unwrap();
        let since = chrono::Utc::now();
        let connection = self
            .app
            .linker
            .link_test_user(&finsync::http::client(), tenant, &user, institution)
            .await
            .unwrap();
        self.wait_synced(connection, since).await;
        connection
    }

    /// `GET <path>` on this app's API with a bearer token; the body as JSON.
    pub async fn get_json(&self, path: &str, bearer: &str) -> serde_json::Value {
        finsync::http::client()
            .get(format!("{}{path}", self.address))
            .bearer_auth(bearer)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Asks the queue for one more sync of `connection` (idempotency key
    /// `test:<key>`) and waits for it to succeed.
    pub async fn resync(&self, connection: ConnectionId, key: &str) {
        let since = chrono::Utc::now();
        let job = finsync::sync::SyncConnection {
            connection_id: connection,
            idempotency_key: format!("test:{key}"),
        };
        request_sync(&self.app.ctx.queue, job).await;
        self.wait_synced(connection, since).await;
    }

    pub async fn wait_synced(
        &self,
        connection: ConnectionId,
        since: chrono::DateTime<chrono::Utc>,
    ) {
        let outcome = crate::support::wait_for_sync(&self.app, connection, since)
            .await
            .unwrap();
        assert_eq!(outcome, Ok(()), "the sync failed");
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if self.expect_failed_jobs || std::thread::panicking() {
            return;
        }
        let failed = failed_runs(self.database_url.clone());
        assert!(
            failed.is_empty(),
            "syncs or jobs failed that the test did not expect (build the app with \
             .expect_failed_jobs() if it makes them fail on purpose):\n{}",
            failed.join("\n")
        );
    }
}

/// The runs in `sync_runs` that failed, and the jobs apalis holds as failed, one
/// line each. Every sync, whoever asked for it, records its run there when it ends,
/// while apalis records a job's end late and in batches: the runs are the reliable
/// record, the jobs a second look.
fn failed_runs(database_url: String) -> Vec<String> {
    // Drop runs inside the test's runtime: query on a thread with a runtime of its own.
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let db = Database::connect(&database_url)
                .await
                .expect("the test database is reachable");
            let rows = db
                .query_all_raw(sea_orm::Statement::from_string(
                    db.get_database_backend(),
                    "SELECT connection_id, idempotency_key, error FROM sync_runs \
                     WHERE outcome = 'failed' ORDER BY started_at",
                ))
                .await
                .expect("sync_runs is readable");
            let mut failed: Vec<String> = rows
                .iter()
                .map(|row| {
                    let connection: String = row.try_get("", "connection_id").unwrap();
                    let key: String = row.try_get("", "idempotency_key").unwrap();
                    let error: Option<String> = row.try_get("", "error").unwrap();
                    format!("run {connection} {key}: {}", error.unwrap_or_default())
                })
                .collect();
            // A job can also fail without a failed run: a panic before its run is
            // closed, or a token refresh (which has no run). apalis may not have
            // recorded the latest attempts yet, so this can miss one, never invent one.
            let jobs = match db.get_database_backend() {
                sea_orm::DbBackend::Postgres => "apalis.jobs",
                _ => "Jobs",
            };
            let rows = db
                .query_all_raw(sea_orm::Statement::from_string(
                    db.get_database_backend(),
                    format!(
                        "SELECT CAST(id AS TEXT) AS id, status, CAST(last_result AS TEXT) AS result \
                         FROM {jobs} \
                         WHERE status IN ('Failed', 'Killed') ORDER BY id"
                    ),
                ))
                .await
                .expect("the job table is readable");
            failed.extend(rows.iter().map(|row| {
                let id: String = row.try_get("", "id").unwrap();
                let status: String = row.try_get("", "status").unwrap();
                let result: Option<String> = row.try_get("", "result").unwrap();
                format!("job {id} {status}: {}", result.unwrap_or_default())
            }));
            let _ = db.close().await;
            failed
        })
    })
    .join()
    .expect("the check of failed runs ran")
}

/// Decimal text with the other sign, every digit kept; zero stays unsigned.
fn flipped(text: &str) -> String {
    match text.strip_prefix('-') {
        Some(positive) => positive.to_owned(),
        None if dec(text).is_zero() => text.to_owned(),
        None => format!("-{text}"),
    }
}

fn dec(text: &str) -> Decimal {
    Decimal::from_str(text).unwrap()
}

/// Asserts that what finsync stored equals the sandbox's data, value for value
/// and digit for digit (scale included).
pub fn assert_matches_sandbox(stored: &Snapshot, expected: &sandbox::data::Portfolio) {
    assert_eq!(stored.accounts.len(), expected.accounts.len(), "accounts");
    for e in &expected.accounts {
        let a = stored
            .accounts
            .iter()
            .find(|a| a.external_id == e.account_id)
            .expect("account stored");
        assert_eq!(a.name, e.name);
        assert_eq!(a.official_name.as_deref(), Some(e.official_name.as_str()));
        assert_eq!(a.account_type.as_str(), e.account_type);
        assert_eq!(a.subtype.as_deref(), Some(e.subtype.as_str()));
        assert_eq!(a.mask.as_deref(), Some(e.mask.as_str()));
        assert_eq!(a.currency.as_str(), e.balances.iso_currency_code);
        assert_eq!(
            a.balances.current.amount.to_string(),
            e.balances.current,
            "balance of {}",
            e.account_id
        );
        assert_eq!(
            a.balances.available.map(|m| m.amount.to_string()),
            e.balances.available
        );
    }
    assert_eq!(stored.holdings.len(), expected.holdings.len(), "holdings");
    for e in &expected.holdings {
        let h = stored
            .holdings
            .iter()
            .find(|h| {
                h.account_external_id == e.account_id
                    && h.security_external_id == e.security.security_id
            })
            .expect("holding stored");
        assert_eq!(h.quantity.to_string(), e.quantity);
        assert_eq!(
            h.cost_basis.map(|m| m.amount.to_string()).as_deref(),
            Some(e.cost_basis.as_str())
        );
        assert_eq!(
            h.price.map(|m| m.amount.to_string()).as_deref(),
            Some(e.institution_price.as_str())
        );
        assert_eq!(
            h.value.map(|m| m.amount.to_string()).as_deref(),
            Some(e.institution_value.as_str())
        );
        assert_eq!(
            h.value.map(|m| m.currency.to_string()).as_deref(),
            Some(e.iso_currency_code.as_str())
        );
        assert_eq!(h.as_of, Some(e.institution_price_as_of));
        let s = stored
            .securities
            .iter()
            .find(|s| s.external_id == e.security.security_id)
            .expect("security stored");
        assert_eq!(s.name, e.security.name);
        assert_eq!(s.ticker.as_deref(), Some(e.security.ticker_symbol.as_str()));
        assert_eq!(s.cusip, e.security.cusip);
        assert_eq!(s.isin, e.security.isin);
        assert_eq!(
            s.security_type.as_str(),
            e.security.security_type.replace(' ', "_")
        );
        assert_eq!(
            s.price.map(|p| p.to_string()).as_deref(),
            Some(e.security.close_price.as_str())
        );
        assert_eq!(s.price_as_of, Some(e.security.close_price_as_of));
    }
    assert_eq!(
        stored.transactions.len(),
        expected.transactions.len(),
        "transactions"
    );
    for e in &expected.transactions {
        let t = stored
            .transactions
            .iter()
            .find(|t| t.external_id == e.transaction_id)
            .expect("transaction stored");
        // Meridian sends money out as positive; finsync stores money in as positive.
        assert_eq!(
            t.amount.amount,
            -dec(&e.amount),
            "amount of {}",
            e.transaction_id
        );
        assert_eq!(
            t.amount.amount.to_string(),
            flipped(&e.amount),
            "digits of {}",
            e.transaction_id
        );
        assert_eq!(t.amount.currency.as_str(), e.iso_currency_code);
        assert_eq!(t.account_external_id, e.account_id);
        assert_eq!(t.date, e.date);
        assert_eq!(
            t.status.as_str(),
            if e.pending { "pending" } else { "posted" }
        );
        assert_eq!(t.pending_external_id, e.pending_transaction_id);
        assert_eq!(t.description, e.name);
        assert_eq!(t.category, e.category);
        assert_eq!(t.investment_type.map(|i| i.to_string()), e.investment_type);
        assert_eq!(t.security_external_id, e.security_id);
        assert_eq!(t.quantity.map(|q| q.to_string()), e.quantity);
        assert_eq!(t.price.map(|p| p.to_string()), e.price);
    }
}

/// Every row of every table in the test database, as text.
pub async fn dump_database(store: &finsync::store::Store) -> String {
    use sea_orm::{ConnectionTrait, Statement};
    let backend = sea_orm::DbBackend::Postgres;
    let tables = store
        .db()
        .query_all_raw(Statement::from_string(
            backend,
            "SELECT table_schema || '.' || table_name AS name FROM information_schema.tables \
             WHERE table_schema IN ('public', 'apalis') AND table_type = 'BASE TABLE'",
        ))
        .await
        .unwrap();
    let mut dump = String::new();
    for table in tables {
        let name: String = table.try_get("", "name").unwrap();
        let rows = store
            .db()
            .query_all_raw(Statement::from_string(
                backend,
                format!("SELECT t::text AS row FROM {name} t"),
            ))
            .await
            .unwrap();
        for row in rows {
            let text: String = row.try_get("", "row").unwrap();
            // bytea columns print as hex: decode them too, in case a token hides there.
            dump.push_str(&text);
            dump.push('\n');
            for hex in text.split("\\x").skip(1) {
                let digits: String = hex.chars().take_while(char::is_ascii_hexdigit).collect();
                let bytes: Vec<u8> = (0..digits.len() / 2)
                    .filter_map(|i| u8::from_str_radix(&digits[2 * i..2 * i + 2], 16).ok())
                    .collect();
                dump.push_str(&String::from_utf8_lossy(&bytes));
                dump.push('\n');
            }
        }
    }
    dump
}

/// A child process killed when dropped; its output is kept in a file and printed
/// if the test fails.
pub struct Proc {
    pub name: &'static str,
    pub child: Child,
    pub log: PathBuf,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            eprintln!("----- {} -----\n{log}", self.name);
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

pub fn finsync(env: &[(&str, String)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_finsync"));
    command.env_clear_finsync();
    // The data's "today" is this process's, which the tests' expectations use: a
    // child started after midnight would otherwise serve the next day's data.
    command.env(
        "FINSYNC__SANDBOX__ANCHOR_DATE",
        SandboxConfig::default().anchor_date.to_string(),
    );
    for (key, value) in env {
        command.env(key, value);
    }
    command
}

trait ClearFinsyncEnv {
    fn env_clear_finsync(&mut self) -> &mut Self;
}

impl ClearFinsyncEnv for Command {
    /// The test's own environment may carry FINSYNC__ settings; the fleet gets
    /// exactly the ones the test gives it.
    fn env_clear_finsync(&mut self) -> &mut Self {
        for (key, _) in std::env::vars() {
            if key.starts_with("FINSYNC") {
                self.env_remove(key);
            }
        }
        self
    }
}

pub fn spawn(name: &'static str, command: &mut Command) -> Proc {
    let log = std::env::temp_dir().join(unique(&format!("finsync-{name}")));
    let file = std::fs::File::create(&log).unwrap();
    let child = command.stdout(Stdio::null()).stderr(file).spawn().unwrap();
    Proc { name, child, log }
}

/// The sandbox as its own process; returns it and its base URL.
pub fn spawn_sandbox_process() -> (Proc, String) {
    spawn_sandbox_process_with(&[], &[])
}

/// [`spawn_sandbox_process`] with settings `env` and `args` after `--port 0`.
pub fn spawn_sandbox_process_with(env: &[(&str, String)], args: &[&str]) -> (Proc, String) {
    let mut child = finsync(env)
        .args(["sandbox", "--port", "0"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    // Keep reading what it prints after, so it never writes into a closed pipe.
    std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .expect("sandbox address")
        .to_owned();
    let proc = Proc {
        name: "sandbox",
        child,
        log: std::env::temp_dir().join(unique("none")),
    };
    (proc, url)
}

/// Links `user` at `institution` through a running API's admin endpoint and the
/// institution's real redirect, as an admin and then the user's browser would;
/// returns the admin API's answer (`connection_id`, `authorize_url`).
pub async fn link_through_api(
    api: &str,
    tenant: &str,
    user: &str,
    institution: &str,
) -> serde_json::Value {
    let http = finsync::http::client();
    let link: serde_json::Value = http
        .post(format!("{api}/admin/connections"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&serde_json::json!({ "tenant": tenant, "user": user, "institution": institution }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let authorize = link["authorize_url"].as_str().expect("authorize_url");
    let consent = http.get(authorize).send().await.unwrap();
    assert_eq!(consent.status(), 302);
    let callback = consent.headers()[reqwest::header::LOCATION]
        .to_str()
        .unwrap()
        .to_owned();
    let done = http.get(&callback).send().await.unwrap();
    assert_eq!(
        done.status(),
        200,
        "{}",
        done.text().await.unwrap_or_default()
    );
    link
}

/// Creates a tenant with `finsync tenants create NAME` in `env`, as an admin
/// would; returns the API key it printed.
pub fn tenant_via_cli(env: &[(&str, String)], name: &str) -> String {
    let output = finsync(env)
        .args(["tenants", "create", name])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("api key: "))
        .expect("api key printed")
        .trim()
        .to_owned()
}

/// Asks a running API for a user's sync (with `headers`) and waits until it is
/// neither queued nor running; returns its last status.
pub async fn requested_sync(
    api: &str,
    api_key: &str,
    user: &str,
    headers: reqwest::header::HeaderMap,
) -> serde_json::Value {
    let http = finsync::http::client();
    let requested: serde_json::Value = http
        .post(format!("{api}/v1/users/{user}/sync"))
        .bearer_auth(api_key)
        .headers(headers)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let sync_url = format!("{api}/v1/syncs/{}", requested["id"].as_str().unwrap());
    eventually("the sync to end", Duration::from_secs(60), || async {
        let status: serde_json::Value = http
            .get(&sync_url)
            .bearer_auth(api_key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        (status["status"] != "queued" && status["status"] != "running").then_some(status)
    })
    .await
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub async fn wait_ready(url: &str) {
    let http = finsync::http::client();
    wait_until(
        &format!("{url} to be ready"),
        Duration::from_secs(30),
        || async {
            http.get(url)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        },
    )
    .await;
}

/// Environment for a separate `finsync` process of this test's deployment.
pub fn process_env(database_url: &str, sandbox_url: &str) -> Vec<(&'static str, String)> {
    use sandbox::Institution::*;
    let base =
        |institution: sandbox::Institution| format!("{sandbox_url}{}", institution.api_root());
    vec![
        ("FINSYNC_ENV", "test".to_owned()),
        ("FINSYNC__DATABASE__URL", database_url.to_owned()),
        ("FINSYNC__REDIS__URL", String::new()),
        ("FINSYNC__VAULT__KEY", VAULT_KEY.to_owned()),
        // Workers and schedulers serve metrics on a port of their own each.
        ("FINSYNC__METRICS__BIND", "127.0.0.1:0".to_owned()),
        ("FINSYNC__CONNECTORS__BASE_URLS__MERIDIAN", base(Meridian)),
        ("FINSYNC__CONNECTORS__BASE_URLS__HARBOR", base(Harbor)),
        ("FINSYNC__CONNECTORS__BASE_URLS__KEYSTONE", base(Keystone)),
        ("FINSYNC__CONNECTORS__BASE_URLS__NORTHWIND", base(Northwind)),
        ("FINSYNC__CONNECTORS__BASE_URLS__PINECREST", base(Pinecrest)),
        ("FINSYNC__CONNECTORS__BASE_URLS__ALBION", base(Albion)),
        ("FINSYNC__CONNECTORS__BASE_URLS__LARKSPUR", base(Larkspur)),
    ]
}

/// Everything finsync logged in this test process, captured by a subscriber that
/// every test app installs (the first one wins), for leak checks. Set
/// `FINSYNC_TEST_LOG=FILE` to also get it in a file while debugging.
pub fn captured_logs() -> String {
    String::from_utf8_lossy(&LOGS.lock().unwrap()).into_owned()
}

static LOGS: std::sync::Mutex<Vec<u8>> = std::sync::Mutex::new(Vec::new());

struct Capture;

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOGS.lock().unwrap().extend_from_slice(buf);
        if let Ok(path) = std::env::var("FINSYNC_TEST_LOG") {
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)?;
            file.write_all(buf)?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("debug,apalis=info,apalis_core=info,apalis_sql=info,apalis_postgres=info,apalis_sqlite=info,sqlx=warn,sea_orm=warn,hyper=warn,hyper_util=warn,reqwest=warn,h2=warn,rustls=warn")
        .with_writer(|| Capture)
        .with_ansi(false)
        .try_init();
}

/// Asks for a sync as an app would. The queue may refuse the job because one for
/// the connection is still waiting to start (apalis records starts in batches, so
/// the last sync's job can look waiting for a moment after it ended); that one
/// reads the connection when it runs, so a sync starts after this call either way,
/// and a refusal with nothing waiting shows up as the caller's wait timing out.
pub async fn request_sync(queue: &finsync::sync::Queue, job: finsync::sync::SyncConnection) {
    queue.enqueue(job).await.unwrap();
}

/// A browser as the hosted link page sees one: it follows no redirect by itself
/// and keeps the link page's cookie, so a test walks the flow a step at a time.
pub struct LinkBrowser {
    http: reqwest::Client,
    cookies: Vec<(String, String)>,
}

impl Default for LinkBrowser {
    fn default() -> Self {
        Self {
            http: finsync::http::client(),
            cookies: Vec::new(),
        }
    }
}

impl LinkBrowser {
    pub async fn get(&mut self, url: &str) -> reqwest::Response {
        let request = self.http.get(url);
        self.send(url, request).await
    }

    pub async fn post_form(&mut self, url: &str, form: &[(&str, &str)]) -> reqwest::Response {
        let request = self.http.post(url).form(form);
        self.send(url, request).await
    }

    async fn send(&mut self, url: &str, request: reqwest::RequestBuilder) -> reqwest::Response {
        let path = url::Url::parse(url).unwrap().path().to_owned();
        let cookie: Vec<String> = self
            .cookies
            .iter()
            .filter(|(scope, _)| path.starts_with(scope.as_str()))
            .map(|(_, pair)| pair.clone())
            .collect();
        let request = if cookie.is_empty() {
            request
        } else {
            request.header(reqwest::header::COOKIE, cookie.join("; "))
        };
        let response = request.send().await.unwrap();
        for set in response.headers().get_all(reqwest::header::SET_COOKIE) {
            let set = set.to_str().unwrap();
            let pair = set.split(';').next().unwrap().trim().to_owned();
            let scope = set
                .split(';')
                .find_map(|part| part.trim().strip_prefix("Path="))
                .unwrap_or("/")
                .to_owned();
            self.cookies.push((scope, pair));
        }
        response
    }

    /// Opens a link URL as a user does: its page, then Continue. Returns the
    /// answer to Continue (a 303 to the session's page when it opened).
    pub async fn open(&mut self, link_url: &str) -> reqwest::Response {
        let greeted = self.get(link_url).await;
        assert_eq!(greeted.status(), 200, "the link's welcome page");
        let url = url::Url::parse(link_url).unwrap();
        let token = url
            .query_pairs()
            .find(|(k, _)| k == "token")
            .unwrap()
            .1
            .into_owned();
        let mut open = url.clone();
        open.set_query(None);
        open.set_path(&format!("{}/open", url.path()));
        self.post_form(open.as_str(), &[("token", &token)]).await
    }

    /// Walks a link URL for a user the sandbox approves without a page (`demo-…`):
    /// opens it, picks `institution` when the session did not name one, consents,
    /// and follows the institution back to the callback. Returns where the callback
    /// sends the browser (the app's redirect URI, or the link page).
    pub async fn link(&mut self, address: &str, link_url: &str, institution: &str) -> url::Url {
        let opened = self.open(link_url).await;
        assert_eq!(opened.status(), 303, "opening the link");
        let page = format!("{address}{}", location(&opened));
        let consent = self.get(&format!("{page}?institution={institution}")).await;
        assert_eq!(consent.status(), 200);
        let html = consent.text().await.unwrap();
        let authorized = self
            .post_form(
                &format!("{page}/authorize"),
                &[("csrf", &csrf_in(&html)), ("institution", institution)],
            )
            .await;
        assert_eq!(authorized.status(), 303, "continuing to the institution");
        let at_institution = self.get(&location(&authorized)).await;
        assert_eq!(
            at_institution.status(),
            302,
            "the sandbox approves demo users"
        );
        let callback = self.get(&location(&at_institution)).await;
        assert_eq!(callback.status(), 303, "the callback sends the user on");
        url::Url::parse(address)
            .unwrap()
            .join(&location(&callback))
            .unwrap()
    }
}

pub fn location(response: &reqwest::Response) -> String {
    response.headers()[reqwest::header::LOCATION]
        .to_str()
        .unwrap()
        .to_owned()
}

/// The form token of a link page.
pub fn csrf_in(html: &str) -> String {
    let start = html.find(r#"name="csrf" value=""#).expect("a form token") + 19;
    html[start..start + 64].to_owned()
}

/// An audit entry for a change a test makes directly through the store or a use
/// case, as a command on the host would.
pub fn by_test() -> finsync::store::AuditEntry {
    finsync::store::AuditEntry::new(finsync::store::Actor::cli(), "test")
}

/// Checks an `audit.purged` entry's seal with the tests' vault key, as
/// `finsync audit verify` does with the configured one.
pub fn audit_seals(value: &str, seal: &str) -> bool {
    finsync::vault::Vault::single(VAULT_KEY)
        .unwrap()
        .keyed_hash_matches(finsync::sync::scheduler::AUDIT_SEAL, value, seal)
}

/// Seals an `audit.purged` entry with the tests' vault key.
pub fn audit_seal(value: &str) -> Option<String> {
    finsync::vault::Vault::single(VAULT_KEY)
        .unwrap()
        .keyed_hash(finsync::sync::scheduler::AUDIT_SEAL, value)
        .ok()
}

/// A database of its own, migrated, and a store on it with `connections` pooled.
pub async fn migrated_store(backend: Backend, connections: u32) -> (TestDb, finsync::store::Store) {
    let db = TestDb::new(backend).await;
    let store = finsync::store::Store::connect(&SecretString::from(db.url.clone()), connections)
        .await
        .unwrap();
    store.migrate().await.unwrap();
    (db, store)
}
