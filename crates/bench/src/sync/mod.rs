//! `finsync-bench sync`: syncs at fleet scale against the sandbox, every figure from
//! one run. Syncs run in a `finsync worker` process of their own (so that its memory
//! is its own) on a scratch PostgreSQL database and the bench's own Redis; the bench
//! process holds the sandbox and the API that links the users through the sandbox's
//! real OAuth redirect.
//!
//! - (a) the first sync of N `bulk-` users (3 accounts, 30 holdings and 1,000
//!   transactions each) with no latency: records committed per second, beside the
//!   raw rate of bulk-upserting the very same rows into the same PostgreSQL (after
//!   (c), into the emptied tables, with as many writers as the worker runs syncs);
//! - (c) a second sync of those connections with nothing changed: rows written and
//!   time, beside (a);
//! - (b) the first sync again, on a fresh database, with 100 ms latency on every
//!   request and an institution budget of 50 requests per second, in the connector
//!   and enforced by the institution too: requests per second achieved over the
//!   budget, and the 429s that provoked;
//! - (d) the same as (b), for `fanned_connections` of the users, at an institution
//!   whose data is asked for per account (Pinecrest, FDX: each connection's accounts,
//!   then each account's details and transactions): fan-out requests share the
//!   budget the same way;
//! - the worker's peak resident memory during (a).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use comfy_table::{Cell, CellAlignment, Table, presets::UTF8_FULL_CONDENSED};
use futures::{StreamExt, TryStreamExt};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ConnectionTrait, EntityTrait, IntoActiveModel, PaginatorTrait, QueryFilter, Statement,
};
use secrecy::SecretString;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::support::{RedisServer, ScratchDatabase};
use finsync::app::config::Settings;
use finsync::app::startup::App;
use finsync::domain::{ConnectionId, UserId};
use finsync::store::entities::{account, holding, security, sync_run, transaction};
use finsync::sync::SyncConnection;
use finsync::vault::Vault;
use finsync_sandbox::{self as sandbox, Faults, Institution, Latency, Sandbox, SandboxConfig};

pub struct SyncBench {
    /// Connections synced in each phase.
    pub connections: usize,
    /// Syncs the worker runs at once.
    pub concurrency: usize,
    /// Latency on every request in (b), in milliseconds.
    pub latency_ms: u64,
    /// The institution's requests per second in (b) and (d).
    pub budget: u32,
    /// Connections synced in (d).
    pub fanned_connections: usize,
    /// A PostgreSQL server where scratch databases may be created.
    pub database_url: String,
    /// The `redis-server` binary the bench starts.
    pub redis_server: String,
    /// The `finsync` binary the worker processes run.
    pub finsync: PathBuf,
}

/// Rows one raw upsert statement carries, as the sync's own inserts do.
const RAW_BATCH: usize = 1000;
/// Users linked at once.
const LINKING: usize = 16;
/// Requests in flight to the institution per worker process (the connector's
/// `concurrency`): enough that 100 ms of latency does not cap the rate below the
/// budget.
const REQUESTS_IN_FLIGHT: u32 = 16;
/// Records per page, the sandbox's largest.
const PAGE_SIZE: u32 = 500;
/// The record tables a sync writes.
const RECORD_TABLES: [&str; 4] = ["accounts", "securities", "holdings", "transactions"];

/// One phase's syncs, as their runs recorded them.
struct Phase {
    runs: u64,
    failed: u64,
    /// Why the failed ones failed, as their runs recorded it.
    errors: Vec<String>,
    /// From the first run's start to the last run's end.
    elapsed: Duration,
    /// Records the runs added, changed and removed, by their own count.
    written: u64,
}

impl Phase {
    fn per_second(&self, count: u64) -> f64 {
        count as f64 / self.elapsed.as_secs_f64().max(f64::EPSILON)
    }
}

pub async fn run_sync(bench: SyncBench) -> anyhow::Result<()> {
    let progress = MultiProgress::new();
    let users: Vec<String> = (0..bench.connections)
        .map(|i| format!("{}{i:05}", sandbox::data::BULK_PREFIX))
        .collect();
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    // The institution keeps every user's data, as a real one serves it from
    // storage: the sandbox generating it again would be charged to the syncs.
    let config = SandboxConfig {
        // Each user at Meridian and at Pinecrest.
        cached_records: 2 * bench.connections * sandbox::data::BULK_RECORDS
            + SandboxConfig::default().cached_records,
        ..SandboxConfig::default()
    };
    let sandbox = sandbox::spawn(config, listener).await?;
    let mut redis = RedisServer::start(&bench.redis_server)?;
    let exe = bench.finsync.clone();

    // (a) and (c), then the raw upsert, on one database.
    let fleet = Fleet::start(&bench, &sandbox, &redis, Institution::Meridian, None).await?;
    fleet.link(&users, &progress, "(a) linking").await?;
    let mut worker = fleet.worker(&exe, bench.concurrency)?;
    let initial = fleet
        .wait(&progress, "(a) first sync", "link:", bench.connections)
        .await?;
    let peak_rss = worker.peak_rss();
    worker.stop();
    let rows = fleet.record_rows().await?;

    let written_before = fleet.rows_written().await?;
    let queue = &fleet.app.ctx.queue;
    for connection in fleet.connections().await? {
        queue
            .enqueue(SyncConnection {
                connection_id: connection,
                idempotency_key: format!("bench:resync:{connection}"),
            })
            .await?;
    }
    let mut worker = fleet.worker(&exe, bench.concurrency)?;
    let resync = fleet
        .wait(
            &progress,
            "(c) second sync, nothing changed",
            "bench:resync:",
            bench.connections,
        )
        .await?;
    worker.stop();
    let pg_written = fleet.rows_written().await? - written_before;

    let raw = fleet.raw_upsert(&progress, bench.concurrency).await?;
    fleet.stop().await?;

    // (b) on a fresh database, through the latency and the institution's limit; (d)
    // the same at an institution asked per account.
    let meridian = budgeted(
        &bench,
        &sandbox,
        &redis,
        &users,
        &progress,
        Institution::Meridian,
        "(b)",
    )
    .await?;
    let fanned = budgeted(
        &bench,
        &sandbox,
        &redis,
        &users[..bench.fanned_connections.min(users.len())],
        &progress,
        Institution::Pinecrest,
        "(d)",
    )
    .await?;
    redis.stop();
    sandbox.shutdown().await;
    progress.clear().ok();

    print(
        &bench,
        &Results {
            rows,
            initial,
            raw,
            resync,
            pg_written,
            budgeted: meridian,
            fanned,
            peak_rss,
        },
    );
    Ok(())
}

/// The first sync of every user at `institution` on a fresh database, with
/// `bench.latency_ms` on every request and `bench.budget` requests per second in the
/// connector and enforced by the institution.
async fn budgeted(
    bench: &SyncBench,
    sandbox: &Sandbox,
    redis: &RedisServer,
    users: &[String],
    progress: &MultiProgress,
    institution: Institution,
    phase: &str,
) -> anyhow::Result<Budgeted> {
    sandbox.set_faults(
        institution,
        Faults {
            latency: Some(Latency {
                min_ms: bench.latency_ms,
                max_ms: bench.latency_ms,
            }),
            requests_per_second: Some(bench.budget),
            ..Faults::default()
        },
    )?;
    let fleet = Fleet::start(bench, sandbox, redis, institution, Some(bench.budget)).await?;
    fleet
        .link(users, progress, &format!("{phase} linking"))
        .await?;
    let (answered_before, throttled_before) =
        (sandbox.stats().api_requests, sandbox.throttled(institution));
    let started = std::time::Instant::now();
    let mut worker = fleet.worker(&bench.finsync, bench.concurrency)?;
    let phase = fleet
        .wait(
            progress,
            &format!(
                "{phase} first sync at {institution}, {} ms latency, {} req/s",
                bench.latency_ms, bench.budget
            ),
            "link:",
            users.len(),
        )
        .await?;
    worker.stop();
    let throttled = sandbox.throttled(institution) - throttled_before;
    let requests = sandbox.stats().api_requests - answered_before + throttled;
    let arrivals: Vec<_> = sandbox
        .arrivals(institution)
        .into_iter()
        .filter(|a| a.at >= started)
        .collect();
    fleet.stop().await?;
    Ok(Budgeted {
        phase,
        requests,
        throttled,
        busiest: busiest_second(&arrivals),
    })
}

/// A first sync under the institution's budget.
struct Budgeted {
    phase: Phase,
    /// Requests that reached the institution, refused ones included.
    requests: u64,
    throttled: u64,
    /// The most requests the institution saw within any one second.
    busiest: usize,
}

struct Results {
    rows: u64,
    initial: Phase,
    raw: Raw,
    resync: Phase,
    /// Rows inserted, updated or deleted in the record tables during (c), as
    /// PostgreSQL counted them.
    pg_written: u64,
    budgeted: Budgeted,
    /// (d): the same at an institution asked per account.
    fanned: Budgeted,
    /// Bytes, when the platform says.
    peak_rss: Option<u64>,
}

/// The raw bulk upsert of the rows (a) committed.
struct Raw {
    rows: u64,
    elapsed: Duration,
}

/// A scratch database with the API that links users to it, and what a worker
/// process needs to join it.
/// Fields drop in order: on an error the API stops and lets go of the database
/// before the scratch database is dropped.
struct Fleet {
    stop: watch::Sender<bool>,
    app: Arc<App>,
    dir: PathBuf,
    env: Vec<(String, String)>,
    scratch: ScratchDatabase,
    /// Where the users are linked.
    institution: Institution,
}

impl Fleet {
    async fn start(
        bench: &SyncBench,
        sandbox: &Sandbox,
        redis: &RedisServer,
        institution: Institution,
        budget: Option<u32>,
    ) -> anyhow::Result<Self> {
        let scratch = ScratchDatabase::create(&bench.database_url).await?;
        let dir = std::env::temp_dir().join(format!("finsync-bench-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir)?;
        let mut settings = Settings::load_from(&finsync::app::config::config_dir(), None)?;
        write_connector(&settings.connectors.dir, &dir, institution, budget)?;
        let vault_key = Vault::generate_key();
        let prefix = format!("finsync-bench-{}", uuid::Uuid::new_v4().simple());
        let base = sandbox.api_base(institution);
        let base_key = format!(
            "FINSYNC__CONNECTORS__BASE_URLS__{}",
            institution.id().to_uppercase()
        );
        let connections = (bench.concurrency + 4).to_string();
        let env: Vec<(String, String)> = [
            ("FINSYNC__DATABASE__URL", scratch.url.as_str()),
            ("FINSYNC__DATABASE__MAX_CONNECTIONS", connections.as_str()),
            ("FINSYNC__REDIS__URL", redis.url.as_str()),
            ("FINSYNC__REDIS__KEY_PREFIX", prefix.as_str()),
            ("FINSYNC__SANDBOX__IN_PROCESS", "false"),
            ("FINSYNC__CONNECTORS__DIR", &dir.display().to_string()),
            (base_key.as_str(), base.as_str()),
            ("FINSYNC__LOG__FILTER", "warn"),
            // Any free port: a worker of an earlier round, or the host's own, may hold the default.
            ("FINSYNC__METRICS__BIND", "127.0.0.1:0"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .chain([(
            "FINSYNC__VAULT__KEY".to_owned(),
            secrecy::ExposeSecret::expose_secret(&vault_key).to_owned(),
        )])
        .collect();

        settings.database.url = SecretString::from(scratch.url.clone());
        settings.database.max_connections = 8;
        settings.redis.url = SecretString::from(redis.url.clone());
        settings.redis.key_prefix = prefix;
        settings.sandbox.in_process = false;
        settings.connectors.dir = dir.clone();
        settings
            .connectors
            .base_urls
            .insert(institution.id().into(), base);
        settings.vault.key = vault_key;
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        settings.server.public_url =
            url::Url::parse(&format!("http://{}/", listener.local_addr()?))?;
        let app = Arc::new(App::build(settings).await?);
        let stop = crate::support::serve(&app, listener);
        Ok(Self {
            scratch,
            app,
            stop,
            dir,
            env,
            institution,
        })
    }

    /// Links every user at the fleet's institution over its OAuth redirect; each link
    /// queues the connection's first sync.
    async fn link(
        &self,
        users: &[String],
        progress: &MultiProgress,
        what: &str,
    ) -> anyhow::Result<()> {
        let bar = bar(progress, what, users.len());
        let (tenant, _) = self.app.ctx.store.create_tenant("bench").await?;
        let http = finsync::http::client();
        futures::stream::iter(users)
            .map(|user| {
                let (http, bar) = (&http, &bar);
                async move {
                    let user = UserId::parse(user)?;
                    self.app
                        .linker
                        .link_test_user(http, tenant.id, &user, self.institution.id())
                        .await?;
                    bar.inc(1);
                    anyhow::Ok(())
                }
            })
            .buffer_unordered(LINKING)
            .try_collect::<()>()
            .await?;
        bar.finish_and_clear();
        Ok(())
    }

    fn worker(&self, exe: &Path, concurrency: usize) -> anyhow::Result<Worker> {
        let log = self
            .dir
            .join(format!("worker-{}.log", uuid::Uuid::new_v4()));
        let mut command = Command::new(exe);
        command
            .args(["worker", "--concurrency", &concurrency.to_string()])
            .env_remove("FINSYNC_ENV")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?);
        for (key, value) in &self.env {
            command.env(key, value);
        }
        let child = command.spawn().context("starting `finsync worker`")?;
        Ok(Worker {
            child: Some(child),
            log,
        })
    }

    /// Waits until `expected` runs whose key starts with `prefix` have finished,
    /// then reads their window and counts.
    async fn wait(
        &self,
        progress: &MultiProgress,
        what: &str,
        prefix: &str,
        expected: usize,
    ) -> anyhow::Result<Phase> {
        let bar = bar(progress, what, expected);
        let db = self.app.ctx.store.db();
        let finished = || {
            sync_run::Entity::find()
                .filter(sea_orm::ColumnTrait::starts_with(
                    &sync_run::Column::IdempotencyKey,
                    prefix,
                ))
                .filter(sea_orm::ColumnTrait::is_not_null(
                    &sync_run::Column::FinishedAt,
                ))
        };
        let mut idle = Instant::now();
        let mut last = 0;
        loop {
            let done = usize::try_from(finished().count(db).await?).unwrap_or(usize::MAX);
            bar.set_position(done as u64);
            if done >= expected {
                break;
            }
            if done != last {
                (last, idle) = (done, Instant::now());
            } else if idle.elapsed() > Duration::from_secs(120) {
                bail!("{what}: no sync finished for two minutes ({done} of {expected})");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        bar.finish_and_clear();
        let runs = finished().all(db).await?;
        let start = runs.iter().map(|r| r.started_at).min();
        let end = runs.iter().filter_map(|r| r.finished_at).max();
        let elapsed = match (start, end) {
            (Some(start), Some(end)) => (end - start).to_std().unwrap_or_default(),
            _ => Duration::ZERO,
        };
        let count = |n: i32| u64::try_from(n).unwrap_or_default();
        Ok(Phase {
            runs: runs.len() as u64,
            failed: runs.iter().filter(|r| r.outcome != "succeeded").count() as u64,
            errors: runs
                .iter()
                .filter(|r| r.outcome != "succeeded")
                .map(|r| r.error.clone().unwrap_or_else(|| r.outcome.clone()))
                .collect(),
            elapsed,
            written: runs
                .iter()
                .map(|r| count(r.added) + count(r.modified) + count(r.removed))
                .sum(),
        })
    }

    async fn connections(&self) -> anyhow::Result<Vec<ConnectionId>> {
        let tenant = self
            .app
            .ctx
            .store
            .tenant_by_name("bench")
            .await?
            .context("the bench tenant")?;
        Ok(self
            .app
            .ctx
            .store
            .tenant_connections(tenant.id)
            .await?
            .into_iter()
            .map(|c| c.id)
            .collect())
    }

    /// Rows in the record tables.
    async fn record_rows(&self) -> anyhow::Result<u64> {
        let db = self.app.ctx.store.db();
        Ok(account::Entity::find().count(db).await?
            + security::Entity::find().count(db).await?
            + holding::Entity::find().count(db).await?
            + transaction::Entity::find().count(db).await?)
    }

    /// Rows PostgreSQL has inserted, updated and deleted in the record tables so
    /// far (its own statistics, not ours).
    async fn rows_written(&self) -> anyhow::Result<u64> {
        let db = self.app.ctx.store.db();
        // Statistics reach the shared counters within a second of a transaction.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let tables = RECORD_TABLES
            .iter()
            .map(|t| format!("'{t}'"))
            .collect::<Vec<_>>()
            .join(",");
        let row = db
            .query_one_raw(Statement::from_string(
                db.get_database_backend(),
                format!(
                    "SELECT COALESCE(SUM(n_tup_ins + n_tup_upd + n_tup_del), 0)::bigint AS n \
                     FROM pg_stat_user_tables WHERE relname IN ({tables})"
                ),
            ))
            .await?
            .context("pg_stat_user_tables")?;
        let n: i64 = row.try_get("", "n")?;
        Ok(u64::try_from(n).unwrap_or_default())
    }

    /// Reads every record (a) committed, empties the record tables, and writes the
    /// same rows back with plain bulk upserts (`INSERT … ON CONFLICT DO UPDATE`,
    /// 1,000 rows a statement), `writers` at a time, each connection's rows by one
    /// writer.
    async fn raw_upsert(&self, progress: &MultiProgress, writers: usize) -> anyhow::Result<Raw> {
        let db = self.app.ctx.store.db().clone();
        let accounts = account::Entity::find().all(&db).await?;
        let securities = security::Entity::find().all(&db).await?;
        let holdings = holding::Entity::find().all(&db).await?;
        let transactions = transaction::Entity::find().all(&db).await?;
        let rows = (accounts.len() + securities.len() + holdings.len() + transactions.len()) as u64;
        db.execute_unprepared(&format!("TRUNCATE {}", RECORD_TABLES.join(", ")))
            .await?;

        let mut by_connection: std::collections::BTreeMap<String, Batch> = Default::default();
        for row in accounts {
            by_connection
                .entry(row.connection_id.clone())
                .or_default()
                .accounts
                .push(row);
        }
        for row in securities {
            by_connection
                .entry(row.connection_id.clone())
                .or_default()
                .securities
                .push(row);
        }
        for row in holdings {
            by_connection
                .entry(row.connection_id.clone())
                .or_default()
                .holdings
                .push(row);
        }
        for row in transactions {
            by_connection
                .entry(row.connection_id.clone())
                .or_default()
                .transactions
                .push(row);
        }
        let bar = bar(
            progress,
            "raw bulk upsert of the same rows",
            by_connection.len(),
        );
        let start = Instant::now();
        futures::stream::iter(by_connection.into_values())
            .map(|batch| {
                let (db, bar) = (&db, &bar);
                async move {
                    batch.upsert(db).await?;
                    bar.inc(1);
                    anyhow::Ok(())
                }
            })
            .buffer_unordered(writers.max(1))
            .try_collect::<()>()
            .await?;
        let elapsed = start.elapsed();
        bar.finish_and_clear();
        let written = self.record_rows().await?;
        if written != rows {
            bail!("the raw upsert wrote {written} rows of {rows}");
        }
        Ok(Raw { rows, elapsed })
    }

    async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        drop(self.app);
        let _ = std::fs::remove_dir_all(&self.dir);
        self.scratch.drop_database().await
    }
}

/// One connection's records, for the raw upsert.
#[derive(Default)]
struct Batch {
    accounts: Vec<account::Model>,
    securities: Vec<security::Model>,
    holdings: Vec<holding::Model>,
    transactions: Vec<transaction::Model>,
}

/// `INSERT … ON CONFLICT (connection_id, external_id) DO UPDATE SET <every other
/// column>`, `RAW_BATCH` rows a statement.
macro_rules! upsert {
    ($db:expr, $rows:expr, $entity:ident, [$($column:ident),* $(,)?]) => {
        for chunk in $rows.chunks(RAW_BATCH) {
            $entity::Entity::insert_many(chunk.iter().cloned().map(IntoActiveModel::into_active_model))
                .on_conflict(
                    OnConflict::columns([$entity::Column::ConnectionId, $entity::Column::ExternalId])
                        .update_columns([$($entity::Column::$column),*])
                        .to_owned(),
                )
                .exec_without_returning($db)
                .await?;
        }
    };
}

impl Batch {
    async fn upsert<C: ConnectionTrait>(&self, db: &C) -> anyhow::Result<()> {
        upsert!(
            db,
            self.accounts,
            account,
            [
                AccountType,
                Subtype,
                Name,
                OfficialName,
                Mask,
                Currency,
                BalanceCurrent,
                BalanceAvailable,
                BalanceAsOf,
                UpdatedAt,
            ]
        );
        upsert!(
            db,
            self.securities,
            security,
            [
                Ticker,
                Cusip,
                Isin,
                Sedol,
                Figi,
                Name,
                SecurityType,
                Currency,
                Price,
                PriceAsOf,
                UpdatedAt,
            ]
        );
        upsert!(
            db,
            self.holdings,
            holding,
            [
                AccountExternalId,
                SecurityExternalId,
                Quantity,
                CostBasis,
                Price,
                Value,
                Currency,
                AsOf,
                UpdatedAt,
            ]
        );
        upsert!(
            db,
            self.transactions,
            transaction,
            [
                AccountExternalId,
                Amount,
                Currency,
                Date,
                Status,
                PendingExternalId,
                Description,
                Category,
                InvestmentType,
                SecurityExternalId,
                Quantity,
                Price,
                Tags,
                Note,
                UpdatedAt,
            ]
        );
        Ok(())
    }
}

/// A `finsync worker` process, stopped when dropped; its log is shown if it fails.
struct Worker {
    child: Option<Child>,
    log: PathBuf,
}

impl Worker {
    /// The process's peak resident set size so far (Linux's `VmHWM`).
    fn peak_rss(&self) -> Option<u64> {
        let pid = self.child.as_ref()?.id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Ok(Some(status)) = child.try_wait() {
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                eprintln!("finsync worker exited early ({status}):\n{log}");
                return;
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `institution`'s connector as shipped, with limits for the bench: the sandbox's
/// largest page, enough requests in flight, and `budget` requests per second.
fn write_connector(
    shipped: &Path,
    dir: &Path,
    institution: Institution,
    budget: Option<u32>,
) -> anyhow::Result<()> {
    let name = format!("{}.toml", institution.id());
    let path = shipped.join(&name);
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let mut file: toml::Table = text.parse()?;
    let limits = file
        .entry("limits")
        .or_insert_with(|| toml::Value::Table(toml::Table::new()))
        .as_table_mut()
        .context("[limits] is a table")?;
    limits.insert("page_size".into(), i64::from(PAGE_SIZE).into());
    limits.insert("concurrency".into(), i64::from(REQUESTS_IN_FLIGHT).into());
    limits.remove("requests_per_minute");
    limits.remove("requests_per_day");
    match budget {
        Some(budget) => limits.insert("requests_per_second".into(), i64::from(budget).into()),
        None => limits.remove("requests_per_second"),
    };
    std::fs::write(dir.join(name), toml::to_string(&file)?)?;
    Ok(())
}

/// The most arrivals within any one second.
fn busiest_second(arrivals: &[sandbox::Arrival]) -> usize {
    let mut busiest = 0;
    let mut first = 0;
    for (last, arrival) in arrivals.iter().enumerate() {
        while arrival.at.duration_since(arrivals[first].at) >= Duration::from_secs(1) {
            first += 1;
        }
        busiest = busiest.max(last + 1 - first);
    }
    busiest
}

fn bar(progress: &MultiProgress, what: &str, len: usize) -> ProgressBar {
    let bar = progress.add(ProgressBar::new(len as u64));
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg:42} [{bar:30}] {pos}/{len} {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message(what.to_owned());
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

fn print(bench: &SyncBench, r: &Results) {
    let secs = |d: Duration| format!("{:.2}", d.as_secs_f64());
    let right = |text: String| Cell::new(text).set_alignment(CellAlignment::Right);
    println!(
        "finsync-bench sync: {} connections of a bulk user (3 accounts, 30 holdings, {} transactions), \
         one worker process running {} syncs at once, PostgreSQL and Redis on this machine\n",
        bench.connections,
        sandbox::data::BULK_TRANSACTIONS,
        bench.concurrency
    );

    let mut rows = Table::new();
    rows.load_preset(UTF8_FULL_CONDENSED).set_header([
        "measured",
        "syncs",
        "failed",
        "records",
        "seconds",
        "records/s",
    ]);
    let raw_rate = r.raw.rows as f64 / r.raw.elapsed.as_secs_f64().max(f64::EPSILON);
    rows.add_row([
        Cell::new("(a) first sync, no latency"),
        right(r.initial.runs.to_string()),
        right(r.initial.failed.to_string()),
        right(r.rows.to_string()),
        right(secs(r.initial.elapsed)),
        right(format!("{:.0}", r.initial.per_second(r.rows))),
    ]);
    rows.add_row([
        Cell::new("raw bulk upsert of the same rows"),
        right("-".into()),
        right("-".into()),
        right(r.raw.rows.to_string()),
        right(secs(r.raw.elapsed)),
        right(format!("{raw_rate:.0}")),
    ]);
    rows.add_row([
        Cell::new("(c) second sync, nothing changed"),
        right(r.resync.runs.to_string()),
        right(r.resync.failed.to_string()),
        right(format!("{} written", r.resync.written)),
        right(secs(r.resync.elapsed)),
        right("-".into()),
    ]);
    println!("{rows}\n");

    let mut budget = Table::new();
    budget.load_preset(UTF8_FULL_CONDENSED).set_header([
        "measured",
        "syncs",
        "failed",
        "requests",
        "seconds",
        "requests/s",
        "busiest second",
        "429s",
    ]);
    for (label, run) in [
        (
            format!(
                "(b) first sync, {} ms latency, budget {}/s",
                bench.latency_ms, bench.budget
            ),
            &r.budgeted,
        ),
        (
            format!(
                "(d) the same, per account (FDX), {} connections",
                bench.fanned_connections
            ),
            &r.fanned,
        ),
    ] {
        budget.add_row([
            Cell::new(label),
            right(run.phase.runs.to_string()),
            right(run.phase.failed.to_string()),
            right(run.requests.to_string()),
            right(secs(run.phase.elapsed)),
            right(format!("{:.1}", run.phase.per_second(run.requests))),
            right(run.busiest.to_string()),
            right(run.throttled.to_string()),
        ]);
    }
    println!("{budget}\n");
    // A failed sync is a finding: say why, so a red run explains itself.
    for (phase, errors) in [
        ("(a)", &r.initial.errors),
        ("(c)", &r.resync.errors),
        ("(b)", &r.budgeted.phase.errors),
        ("(d)", &r.fanned.phase.errors),
    ] {
        for error in errors {
            println!("{phase} a sync failed: {error}");
        }
    }

    let ratio = r.initial.per_second(r.rows) / raw_rate.max(f64::EPSILON);
    let achieved =
        |run: &Budgeted| run.phase.per_second(run.requests) / f64::from(bench.budget.max(1));
    let time = r.resync.elapsed.as_secs_f64() / r.initial.elapsed.as_secs_f64().max(f64::EPSILON);
    let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
    println!(
        "(a) records/s, sync / raw upsert      = {ratio:.2}   (target at least 0.5: {})",
        verdict(ratio >= 0.5)
    );
    for (phase, run) in [("(b)", &r.budgeted), ("(d)", &r.fanned)] {
        println!(
            "{phase} requests/s achieved / budget      = {:.2}   (target at least 0.9: {}); 429s: {} (target 0: {})",
            achieved(run),
            verdict(achieved(run) >= 0.9),
            run.throttled,
            verdict(run.throttled == 0)
        );
    }
    println!(
        "(c) second sync: rows written         = {} by the runs' counts, {} by PostgreSQL's (target 0: {})",
        r.resync.written,
        r.pg_written,
        verdict(r.resync.written == 0 && r.pg_written == 0)
    );
    println!(
        "(c) second sync time / first sync time = {time:.3} (target at most 0.1: {})",
        verdict(time <= 0.1)
    );
    match r.peak_rss {
        Some(bytes) => println!(
            "worker peak RSS during (a)            = {:.1} MiB",
            bytes as f64 / (1024.0 * 1024.0)
        ),
        None => println!("worker peak RSS during (a)            = not available on this platform"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_busiest_second_counts_arrivals_within_any_one_second() {
        let t0 = std::time::Instant::now();
        let at = |ms: u64| sandbox::Arrival {
            at: t0 + Duration::from_millis(ms),
            status: 200,
            traceparent: None,
        };
        let arrivals: Vec<_> = [0, 100, 900, 999, 1000, 1500, 1800, 1950].map(at).into();
        // 900, 999, 1000, 1500, 1800 fall within one second.
        assert_eq!(busiest_second(&arrivals), 5);
        assert_eq!(busiest_second(&[]), 0);
    }

    #[test]
    fn the_bench_connector_has_the_bench_limits_and_stays_valid() {
        let shipped = Settings::load_from(&finsync::app::config::config_dir(), None)
            .unwrap()
            .connectors
            .dir;
        let dir = std::env::temp_dir().join(format!("finsync-bench-test-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        for institution in [Institution::Meridian, Institution::Pinecrest] {
            for budget in [None, Some(50)] {
                write_connector(&shipped, &dir, institution, budget).unwrap();
                let file = dir.join(format!("{}.toml", institution.id()));
                let connector = finsync::connectors::validate_file(&file, None)
                    .unwrap_or_else(|p| panic!("{p}"));
                assert_eq!(connector.limits.page_size, PAGE_SIZE);
                assert_eq!(connector.limits.requests_per_second, budget);
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
