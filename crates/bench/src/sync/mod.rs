//! `finsync-bench sync`: syncs at fleet scale against the sandbox, every figure from
//! one run. Syncs run in a `finsync worker` process of their own (so that its memory
//! and CPU are its own) on a scratch PostgreSQL database and the bench's own Redis;
//! the bench process holds the sandbox and the API that links the users through the
//! sandbox's real OAuth redirect. The parts, each chosen with `--parts`:
//!
//! - (a) the first sync of N `bulk-` users (3 accounts, 30 holdings and 1,000
//!   transactions each) with no latency: records committed per second, beside the
//!   raw rate of bulk-upserting the very same rows into the same PostgreSQL (after
//!   (c), into the emptied tables, with as many writers as the worker runs syncs);
//!   the worker's peak resident memory, and its resident memory after a tenth of
//!   the connections and after all of them;
//! - (c) a second sync of those connections with nothing changed: rows written and
//!   time, beside (a), and the CPU a sync costs;
//! - (f) the API serving those users' cached portfolios closed-loop, beside a
//!   trivial route of the same server ([`reads`]);
//! - (b) the first sync again, on a fresh database, with 100 ms latency on every
//!   request and an institution budget of 50 requests per second, in the connector
//!   and enforced by the institution too: requests per second achieved over the
//!   budget, and the 429s that provoked;
//! - (d) the same as (b), for `fanned_connections` of the users, at an institution
//!   whose data is asked for per account (Pinecrest, FDX: each connection's accounts,
//!   then each account's details and transactions): fan-out requests share the
//!   budget the same way;
//! - (e) incremental syncs of 10 new transactions at connections with 1,000 and with
//!   10,000 transactions of history: time, CPU and database rows read per sync, side
//!   by side ([`incremental`]).
//!
//! From the CPU an incremental sync costs, it derives how many connections a core
//! keeps fresh at four syncs a day.

mod incremental;
mod reads;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use comfy_table::{Cell, Table, presets::UTF8_FULL_CONDENSED};
use futures::{StreamExt, TryStreamExt};
use indicatif::MultiProgress;
use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ConnectionTrait, EntityTrait, IntoActiveModel, PaginatorTrait, QueryFilter, Statement,
};
use secrecy::SecretString;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::support::{self, RedisServer, ScratchDatabase, bar, right};
use finsync::app::config::Settings;
use finsync::app::startup::App;
use finsync::domain::{ConnectionId, UserId};
use finsync::store::entities::{account, holding, security, sync_run, transaction};
use finsync::sync::SyncConnection;
use finsync::vault::Vault;
use finsync_sandbox::{self as sandbox, Faults, Institution, Latency, Sandbox, SandboxConfig};

/// A part of the bench, as `--parts` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Part {
    /// First syncs beside a raw bulk upsert, and the worker's memory.
    A,
    /// First syncs under latency and the institution's budget.
    B,
    /// Second syncs with nothing changed (runs (a) first).
    C,
    /// First syncs per account (FDX) under the budget.
    D,
    /// Incremental syncs at 1,000 and 10,000 transactions of history.
    E,
    /// Cached portfolios read closed-loop beside a trivial route (runs (a) first).
    F,
}

pub struct SyncBench {
    /// Connections synced in (a), (b) and (c).
    pub connections: usize,
    /// Syncs the worker runs at once.
    pub concurrency: usize,
    /// Latency on every request in (b), in milliseconds.
    pub latency_ms: u64,
    /// The institution's requests per second in (b) and (d).
    pub budget: u32,
    /// Connections synced in (d).
    pub fanned_connections: usize,
    /// Connections of each history length in (e).
    pub incremental_connections: usize,
    /// Clients reading at once in (f).
    pub readers: usize,
    /// Seconds each endpoint is read in (f), in half-second slices taking turns.
    pub read_seconds: u64,
    /// The parts to run.
    pub parts: BTreeSet<Part>,
    /// A PostgreSQL server where scratch databases may be created.
    pub database_url: String,
    /// The `redis-server` binary the bench starts.
    pub redis_server: String,
    /// The `finsync` binary the worker processes run.
    pub finsync: PathBuf,
}

/// How long PostgreSQL (15 and later) may hold a backend's counters before they
/// reach `pg_stat_user_tables`: a backend flushes them when it goes idle, but at
/// most once a second, and one that went idle sooner after its last flush does so
/// only when its idle timer fires, ten seconds later (`PGSTAT_IDLE_INTERVAL`).
/// Read sooner, a worker's last second of reads is missed and counted in the next
/// measurement instead: (e)'s rows read per sync moved by a quarter from run to
/// run with a wait of 1.5 s.
const STATISTICS_SETTLE: Duration = Duration::from_secs(11);

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
/// Syncs a day that keep a connection fresh, for the capacity figure.
const SYNCS_A_DAY: f64 = 4.0;

/// One phase's syncs, as their runs recorded them.
struct Runs {
    runs: u64,
    failed: u64,
    /// Why the failed ones failed, as their runs recorded it.
    errors: Vec<String>,
    /// From the first run's start to the last run's end.
    elapsed: Duration,
    /// Records the runs added, changed and removed, by their own count.
    written: u64,
}

impl Runs {
    fn per_second(&self, count: u64) -> f64 {
        count as f64 / self.elapsed.as_secs_f64().max(f64::EPSILON)
    }
}

/// CPU seconds spent while a phase ran: by the worker process, by this process
/// (the sandbox institution, and the API the bench reads from), and by the whole
/// machine (those, PostgreSQL and Redis).
#[derive(Debug, Clone, Copy, Default)]
struct Cpu {
    worker: f64,
    bench: f64,
    machine: f64,
}

impl Cpu {
    fn sample(worker: &Worker) -> Self {
        Self {
            worker: worker.cpu_secs().unwrap_or_default(),
            bench: support::process_cpu_secs(std::process::id()).unwrap_or_default(),
            machine: support::machine_busy_secs().unwrap_or_default(),
        }
    }

    /// With no worker: this process and the machine.
    fn of_this_process() -> Self {
        Self {
            worker: 0.0,
            bench: support::process_cpu_secs(std::process::id()).unwrap_or_default(),
            machine: support::machine_busy_secs().unwrap_or_default(),
        }
    }

    fn since(self, before: Self) -> Self {
        Self {
            worker: (self.worker - before.worker).max(0.0),
            bench: (self.bench - before.bench).max(0.0),
            machine: (self.machine - before.machine).max(0.0),
        }
    }

    fn add(self, other: Self) -> Self {
        Self {
            worker: self.worker + other.worker,
            bench: self.bench + other.bench,
            machine: self.machine + other.machine,
        }
    }

    /// The machine's CPU but the institution's: the worker, PostgreSQL and Redis
    /// (and the bench's own polling, a few queries a second).
    fn ours(self) -> f64 {
        (self.machine - self.bench).max(0.0)
    }
}

/// The worker's resident memory over (a).
struct Memory {
    /// `VmHWM` at the end of (a).
    peak: Option<u64>,
    /// `VmRSS` once a tenth of the syncs had finished, and how many had.
    early: Option<(usize, u64)>,
    /// `VmRSS` once every sync had finished.
    last: Option<(usize, u64)>,
}

/// What PostgreSQL wrote and did in the background while a phase ran: the work
/// that moves its CPU from one run to the next for the same rows.
#[derive(Clone, Copy)]
struct PgWork {
    /// From the WAL's insert position, which moves at once (the WAL statistics
    /// views lag by up to seconds).
    wal_bytes: i64,
    checkpoints: i64,
    /// Autovacuum and autoanalyze runs on the scratch database's tables.
    autovacuums: i64,
}

impl PgWork {
    async fn sample(db: &impl ConnectionTrait) -> anyhow::Result<Self> {
        let row = db
            .query_one_raw(Statement::from_string(
                db.get_database_backend(),
                "SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '0/0')::bigint AS wal_bytes, \
                        (SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter) AS checkpoints, \
                        (SELECT COALESCE(SUM(autovacuum_count + autoanalyze_count), 0)::bigint \
                         FROM pg_stat_user_tables) AS autovacuums",
            ))
            .await?
            .context("PostgreSQL's WAL position")?;
        Ok(Self {
            wal_bytes: row.try_get("", "wal_bytes")?,
            checkpoints: row.try_get("", "checkpoints")?,
            autovacuums: row.try_get("", "autovacuums")?,
        })
    }

    fn since(self, before: Self) -> Self {
        Self {
            wal_bytes: self.wal_bytes - before.wal_bytes,
            checkpoints: self.checkpoints - before.checkpoints,
            autovacuums: self.autovacuums - before.autovacuums,
        }
    }
}

impl std::fmt::Display for PgWork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.1} MiB of WAL, {} checkpoint(s), {} autovacuum/analyze run(s)",
            self.wal_bytes as f64 / (1024.0 * 1024.0),
            self.checkpoints,
            self.autovacuums
        )
    }
}

/// (a), (c) and what depends on them, on one database.
struct Fleetwide {
    rows: u64,
    initial: Runs,
    /// CPU while (a) ran.
    initial_cpu: Cpu,
    /// The bench's Redis server's CPU seconds while (a) ran.
    initial_redis_cpu: f64,
    /// PostgreSQL's WAL and background work while (a) ran.
    initial_pg: PgWork,
    memory: Memory,
    raw: Raw,
    resync: Option<Resync>,
    reads: Option<reads::Reads>,
}

/// (c): a second sync of every connection with nothing changed.
struct Resync {
    runs: Runs,
    /// Rows inserted, updated or deleted in the record tables during (c), as
    /// PostgreSQL counted them.
    pg_written: u64,
    cpu: Cpu,
}

pub async fn run_sync(bench: SyncBench) -> anyhow::Result<()> {
    let progress = MultiProgress::new();
    let users: Vec<String> = (0..bench.connections)
        .map(|i| format!("{}{i:05}", sandbox::data::BULK_PREFIX))
        .collect();
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    // The institution keeps every user's data (made up before (a) starts, see
    // `fleetwide`), as a real one serves it from storage: the sandbox generating
    // it would be charged to the syncs.
    let config = SandboxConfig {
        cached_records: cached_records(&bench),
        ..SandboxConfig::default()
    };
    let sandbox = sandbox::spawn(config, listener).await?;
    let mut redis = RedisServer::start(&bench.redis_server)?;

    let fleetwide = if bench.parts.contains(&Part::A) {
        Some(fleetwide(&bench, &sandbox, &redis, &users, &progress).await?)
    } else {
        None
    };
    // (b) on a fresh database, through the latency and the institution's limit; (d)
    // the same at an institution asked per account.
    let meridian = if bench.parts.contains(&Part::B) {
        Some(
            budgeted(
                &bench,
                &sandbox,
                &redis,
                &users,
                &progress,
                Institution::Meridian,
                "(b)",
            )
            .await?,
        )
    } else {
        None
    };
    let fanned = if bench.parts.contains(&Part::D) {
        Some(
            budgeted(
                &bench,
                &sandbox,
                &redis,
                &users[..bench.fanned_connections.min(users.len())],
                &progress,
                Institution::Pinecrest,
                "(d)",
            )
            .await?,
        )
    } else {
        None
    };
    // Last: it moves the sandbox's world on, for every user.
    let incremental = if bench.parts.contains(&Part::E) {
        Some(incremental::run(&bench, &sandbox, &redis, &progress).await?)
    } else {
        None
    };
    redis.stop();
    sandbox.shutdown().await;
    progress.clear().ok();

    print(
        &bench,
        &Results {
            fleetwide,
            budgeted: meridian,
            fanned,
            incremental,
        },
    );
    Ok(())
}

/// Records the sandbox keeps: every user's data at Meridian and at Pinecrest for
/// (a) to (d), and (e)'s users at the three epochs a change feed compares.
fn cached_records(bench: &SyncBench) -> usize {
    let e = if bench.parts.contains(&Part::E) {
        3 * bench.incremental_connections
            * (sandbox::data::BULK_RECORDS + sandbox::data::DEEP_BULK_RECORDS)
    } else {
        0
    };
    2 * bench.connections * sandbox::data::BULK_RECORDS
        + e
        + SandboxConfig::default().cached_records
}

/// (a), then (c) and (f) if asked, then the raw upsert, on one database.
async fn fleetwide(
    bench: &SyncBench,
    sandbox: &Sandbox,
    redis: &RedisServer,
    users: &[String],
    progress: &MultiProgress,
) -> anyhow::Result<Fleetwide> {
    let fleet = Fleet::start(bench, sandbox, redis, Institution::Meridian, None).await?;
    let key = fleet.link(users, progress, "(a) linking").await?;
    sandbox.prepare(Institution::Meridian, users);
    let worker = fleet.worker(&bench.finsync, bench.concurrency)?;
    // Resident memory once a tenth of the syncs have finished, and at the end: a
    // worker whose memory follows the connections synced shows it here.
    let checkpoint = (users.len() / 10).max(1);
    let mut early = None;
    let pg_before = fleet.pg_work().await?;
    let before = Cpu::sample(&worker);
    let redis_before = redis.cpu_secs().unwrap_or_default();
    let initial = fleet
        .wait(progress, "(a) first sync", "link:", users.len(), |done| {
            if early.is_none() && done >= checkpoint {
                early = worker.rss().map(|rss| (done, rss));
            }
        })
        .await?;
    let initial_cpu = Cpu::sample(&worker).since(before);
    let initial_redis_cpu = (redis.cpu_secs().unwrap_or_default() - redis_before).max(0.0);
    let memory = Memory {
        peak: worker.peak_rss(),
        early,
        last: worker.rss().map(|rss| (users.len(), rss)),
    };
    worker.stop();
    let rows = fleet.record_rows().await?;
    let initial_pg = fleet.pg_work().await?.since(pg_before);

    let resync = if bench.parts.contains(&Part::C) {
        Some(fleet.resync(bench, progress).await?)
    } else {
        None
    };
    let reads = if bench.parts.contains(&Part::F) {
        Some(reads::run(bench, &fleet, &key, users, progress).await?)
    } else {
        None
    };
    let raw = fleet.raw_upsert(progress, bench.concurrency).await?;
    fleet.stop().await?;
    Ok(Fleetwide {
        rows,
        initial,
        initial_cpu,
        initial_redis_cpu,
        initial_pg,
        memory,
        raw,
        resync,
        reads,
    })
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
    let worker = fleet.worker(&bench.finsync, bench.concurrency)?;
    let phase = fleet
        .wait(
            progress,
            &format!(
                "{phase} first sync at {institution}, {} ms latency, {} req/s",
                bench.latency_ms, bench.budget
            ),
            "link:",
            users.len(),
            |_| {},
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
    sandbox.set_faults(institution, Faults::default())?;
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
    phase: Runs,
    /// Requests that reached the institution, refused ones included.
    requests: u64,
    throttled: u64,
    /// The most requests the institution saw within any one second.
    busiest: usize,
}

struct Results {
    fleetwide: Option<Fleetwide>,
    budgeted: Option<Budgeted>,
    /// (d): the same at an institution asked per account.
    fanned: Option<Budgeted>,
    incremental: Option<incremental::Incremental>,
}

/// The raw bulk upsert of the rows (a) committed.
struct Raw {
    rows: u64,
    elapsed: Duration,
    /// This process's CPU (building the statements) and the machine's while it
    /// ran.
    cpu: Cpu,
    /// PostgreSQL's WAL and background work while it ran.
    pg: PgWork,
}

/// A scratch database with the API that links users to it, and what a worker
/// process needs to join it.
/// Fields drop in order: on an error the API stops and lets go of the database
/// before the scratch database is dropped.
struct Fleet {
    stop: watch::Sender<bool>,
    app: Arc<App>,
    /// Where the API answers, `http://host:port`.
    address: String,
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
        // (f) measures the API, not its per-client limit.
        settings.server.rate_limit_per_second = u32::MAX;
        settings.server.rate_limit_burst = u32::MAX;
        let (app, listener, address) = crate::support::app_on_free_port(settings).await?;
        let stop = crate::support::serve(&app, listener);
        Ok(Self {
            scratch,
            app,
            address,
            stop,
            dir,
            env,
            institution,
        })
    }

    /// Links every user at the fleet's institution over its OAuth redirect, for the
    /// tenant `bench` it creates; each link queues the connection's first sync.
    /// Returns the tenant's API key.
    async fn link(
        &self,
        users: &[String],
        progress: &MultiProgress,
        what: &str,
    ) -> anyhow::Result<SecretString> {
        let bar = bar(progress, what, users.len());
        let (tenant, key) = self.app.ctx.store.create_tenant("bench").await?;
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
        Ok(key.0)
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

    /// Queues a sync of each connection, keyed `{prefix}{connection}`.
    async fn enqueue(&self, connections: &[ConnectionId], prefix: &str) -> anyhow::Result<()> {
        let queue = &self.app.ctx.queue;
        for &connection in connections {
            queue
                .enqueue(SyncConnection {
                    connection_id: connection,
                    idempotency_key: format!("{prefix}{connection}"),
                })
                .await?;
        }
        Ok(())
    }

    /// (c): every connection synced again, nothing having changed at the
    /// institution, by a worker started for it.
    async fn resync(&self, bench: &SyncBench, progress: &MultiProgress) -> anyhow::Result<Resync> {
        let written_before = self.rows_written().await?;
        let connections = self.connections().await?;
        self.enqueue(&connections, "bench:resync:").await?;
        let worker = self.worker(&bench.finsync, bench.concurrency)?;
        let before = Cpu::sample(&worker);
        let runs = self
            .wait(
                progress,
                "(c) second sync, nothing changed",
                "bench:resync:",
                connections.len(),
                |_| {},
            )
            .await?;
        let cpu = Cpu::sample(&worker).since(before);
        worker.stop();
        let pg_written = self.rows_written().await? - written_before;
        Ok(Resync {
            runs,
            pg_written,
            cpu,
        })
    }

    /// Waits until `expected` runs whose key starts with `prefix` have finished,
    /// then reads their window and counts. `progress` hears how many have, as they
    /// do.
    async fn wait(
        &self,
        progress: &MultiProgress,
        what: &str,
        prefix: &str,
        expected: usize,
        mut finished_so_far: impl FnMut(usize),
    ) -> anyhow::Result<Runs> {
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
            finished_so_far(done);
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
        Ok(Runs {
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
        Ok(self
            .connections_of_users()
            .await?
            .into_iter()
            .map(|(id, _)| id)
            .collect())
    }

    /// The bench tenant's connections and the user of each.
    async fn connections_of_users(&self) -> anyhow::Result<Vec<(ConnectionId, UserId)>> {
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
            .map(|c| (c.id, c.user_id))
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
        self.record_table_statistic("n_tup_ins + n_tup_upd + n_tup_del")
            .await
    }

    /// Rows PostgreSQL has read from the record tables so far, by sequential scans
    /// and by index (its own statistics).
    async fn rows_read(&self) -> anyhow::Result<u64> {
        self.record_table_statistic("COALESCE(seq_tup_read, 0) + COALESCE(idx_tup_fetch, 0)")
            .await
    }

    /// The sum of `expression` over the record tables' rows of
    /// `pg_stat_user_tables`, once everything done before the call is counted
    /// there (after [`STATISTICS_SETTLE`]).
    async fn record_table_statistic(&self, expression: &str) -> anyhow::Result<u64> {
        let db = self.app.ctx.store.db();
        tokio::time::sleep(STATISTICS_SETTLE).await;
        let tables = RECORD_TABLES
            .iter()
            .map(|t| format!("'{t}'"))
            .collect::<Vec<_>>()
            .join(",");
        let row = db
            .query_one_raw(Statement::from_string(
                db.get_database_backend(),
                format!(
                    "SELECT COALESCE(SUM({expression}), 0)::bigint AS n \
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
        let pg_before = self.pg_work().await?;
        let cpu = Cpu::of_this_process();
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
        let cpu = Cpu::of_this_process().since(cpu);
        bar.finish_and_clear();
        let written = self.record_rows().await?;
        if written != rows {
            bail!("the raw upsert wrote {written} rows of {rows}");
        }
        let pg = self.pg_work().await?.since(pg_before);
        Ok(Raw {
            rows,
            elapsed,
            cpu,
            pg,
        })
    }

    async fn pg_work(&self) -> anyhow::Result<PgWork> {
        PgWork::sample(self.app.ctx.store.db()).await
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
    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The process's peak resident set size so far (Linux's `VmHWM`).
    fn peak_rss(&self) -> Option<u64> {
        support::process_memory(self.pid()?, "VmHWM")
    }

    /// The process's resident set size now (Linux's `VmRSS`).
    fn rss(&self) -> Option<u64> {
        support::process_memory(self.pid()?, "VmRSS")
    }

    /// CPU seconds the process has used so far.
    fn cpu_secs(&self) -> Option<f64> {
        support::process_cpu_secs(self.pid()?)
    }

    fn stop(mut self) {
        self.halt();
    }

    /// Asks the worker to stop as an orchestrator would (SIGTERM), so that it
    /// finishes as in production (and a heap profile, when built with one, is
    /// written); kills it if it has not stopped within a minute.
    fn halt(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(Some(status)) = child.try_wait() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            eprintln!("finsync worker exited early ({status}):\n{log}");
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.halt();
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

fn secs(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64())
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "NOT met" }
}

fn print(bench: &SyncBench, r: &Results) {
    println!(
        "finsync-bench sync: {} connections of a bulk user (3 accounts, 30 holdings, {} transactions), \
         one worker process running {} syncs at once, PostgreSQL and Redis on this machine ({} cores)\n",
        bench.connections,
        sandbox::data::BULK_TRANSACTIONS,
        bench.concurrency,
        support::cores(),
    );
    if let Some(fleetwide) = &r.fleetwide {
        print_fleetwide(fleetwide);
    }
    print_budgeted(bench, r);
    if let Some(incremental) = &r.incremental {
        incremental::print(bench, incremental);
    }
    if let Some(reads) = r.fleetwide.as_ref().and_then(|f| f.reads.as_ref()) {
        reads::print(bench, reads);
    }
    let resync = r.fleetwide.as_ref().and_then(|f| f.resync.as_ref());
    print_capacity(
        resync.map(|c| (c.cpu, c.runs.runs)),
        r.incremental
            .as_ref()
            .map(incremental::Incremental::shallow_cost),
    );
}

fn print_fleetwide(r: &Fleetwide) {
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
    if let Some(resync) = &r.resync {
        rows.add_row([
            Cell::new("(c) second sync, nothing changed"),
            right(resync.runs.runs.to_string()),
            right(resync.runs.failed.to_string()),
            right(format!("{} written", resync.runs.written)),
            right(secs(resync.runs.elapsed)),
            right("-".into()),
        ]);
    }
    println!("{rows}\n");
    for error in &r.initial.errors {
        println!("(a) a sync failed: {error}");
    }
    let ratio = r.initial.per_second(r.rows) / raw_rate.max(f64::EPSILON);
    println!(
        "(a) records/s, sync / raw upsert      = {ratio:.2}   (target at least 0.8: {})",
        verdict(ratio >= 0.8)
    );
    if let Some(resync) = &r.resync {
        for error in &resync.runs.errors {
            println!("(c) a sync failed: {error}");
        }
        let time =
            resync.runs.elapsed.as_secs_f64() / r.initial.elapsed.as_secs_f64().max(f64::EPSILON);
        println!(
            "(c) second sync: rows written         = {} by the runs' counts, {} by PostgreSQL's (target 0: {})",
            resync.runs.written,
            resync.pg_written,
            verdict(resync.runs.written == 0 && resync.pg_written == 0)
        );
        println!(
            "(c) second sync time / first sync time = {time:.3} (target at most 0.1: {})",
            verdict(time <= 0.1)
        );
    }
    let cpu = r.initial_cpu;
    println!(
        "(a) CPU seconds: worker {:.1}, institution and API (this process) {:.1}, Redis {:.1}, PostgreSQL {:.1}",
        cpu.worker,
        cpu.bench,
        r.initial_redis_cpu,
        (cpu.machine - cpu.worker - cpu.bench - r.initial_redis_cpu).max(0.0)
    );
    let cpu = r.raw.cpu;
    println!(
        "raw upsert CPU seconds: statements (this process) {:.1}, PostgreSQL {:.1}",
        cpu.bench,
        (cpu.machine - cpu.bench).max(0.0)
    );
    println!("(a) PostgreSQL wrote {}", r.initial_pg);
    println!("raw upsert: PostgreSQL wrote {}", r.raw.pg);
    let memory = &r.memory;
    match memory.peak {
        Some(peak) => println!(
            "worker peak RSS during (a)            = {} (target at most 150 MiB: {})",
            mib(peak),
            verdict(peak <= 150 * 1024 * 1024)
        ),
        None => println!("worker peak RSS during (a)            = not available on this platform"),
    }
    if let (Some((early_n, early)), Some((last_n, last))) = (memory.early, memory.last) {
        let growth = last as f64 / early.max(1) as f64;
        println!(
            "worker RSS after {last_n} syncs / after {early_n} = {} / {} = {growth:.2} (target at most 1.1: {})",
            mib(last),
            mib(early),
            verdict(growth <= 1.1)
        );
    }
    println!();
}

fn print_budgeted(bench: &SyncBench, r: &Results) {
    let runs: Vec<(String, &Budgeted)> = [
        r.budgeted.as_ref().map(|run| {
            (
                format!(
                    "(b) first sync, {} ms latency, budget {}/s",
                    bench.latency_ms, bench.budget
                ),
                run,
            )
        }),
        r.fanned.as_ref().map(|run| {
            (
                format!(
                    "(d) the same, per account (FDX), {} connections",
                    bench.fanned_connections
                ),
                run,
            )
        }),
    ]
    .into_iter()
    .flatten()
    .collect();
    if runs.is_empty() {
        return;
    }
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
    for (label, run) in &runs {
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
    for (label, run) in &runs {
        let phase = &label[..3];
        // A failed sync is a finding: say why, so a red run explains itself.
        for error in &run.phase.errors {
            println!("{phase} a sync failed: {error}");
        }
        let achieved = run.phase.per_second(run.requests) / f64::from(bench.budget.max(1));
        println!(
            "{phase} requests/s achieved / budget      = {achieved:.2}   (target at least 0.9: {}); 429s: {} (target 0: {})",
            verdict(achieved >= 0.9),
            run.throttled,
            verdict(run.throttled == 0)
        );
    }
    println!();
}

/// Connections one core keeps fresh at [`SYNCS_A_DAY`], from the CPU the
/// incremental syncs of (c) and (e) cost: counting the worker's CPU alone, and
/// counting every busy core of the machine (the worker, PostgreSQL, Redis and the
/// sandbox institution, whose share a real institution would not put on us).
fn print_capacity(nothing_changed: Option<(Cpu, u64)>, ten_new: Option<(Cpu, u64)>) {
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED).set_header([
        "incremental sync",
        "syncs",
        "worker CPU ms/sync",
        "machine CPU ms/sync",
        "per core, worker alone",
        "per core, whole machine",
    ]);
    let mut any = false;
    for (label, measured) in [
        ("nothing changed, as in (c)", nothing_changed),
        ("10 new transactions, as in (e)", ten_new),
    ] {
        let Some((cpu, syncs)) = measured else {
            continue;
        };
        any = true;
        let per_sync = |secs: f64| secs / syncs.max(1) as f64;
        let capacity = |secs: f64| {
            let per_sync = per_sync(secs);
            if per_sync > 0.0 {
                format!("{:.0}", 86_400.0 / SYNCS_A_DAY / per_sync)
            } else {
                "-".to_owned()
            }
        };
        table.add_row([
            Cell::new(label),
            right(syncs.to_string()),
            right(format!("{:.1}", per_sync(cpu.worker) * 1000.0)),
            right(format!("{:.1}", per_sync(cpu.machine) * 1000.0)),
            right(capacity(cpu.worker)),
            right(capacity(cpu.machine)),
        ]);
    }
    if any {
        println!(
            "Capacity: connections one core keeps fresh at {SYNCS_A_DAY} syncs a day, from the CPU seconds \
             each sync cost (86,400 / {SYNCS_A_DAY} / CPU seconds per sync)\n{table}\n"
        );
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
