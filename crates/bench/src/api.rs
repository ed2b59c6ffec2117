//! `finsync-bench api`: how fast cached portfolios are served, measured side by
//! side with a trivial endpoint of the same server at the same request rate, in
//! four set-ups from one run: the fleet (PostgreSQL + Redis), the fleet with its
//! database cut off (a TCP link between them cut: cached answers only), the fleet
//! with Redis stopped, and the embedded default (SQLite + moka).
//!
//! The load is open-loop: requests are scheduled at a fixed rate and each one's
//! latency counts from when it was due, so a stalled server shows as latency
//! rather than as fewer requests (no coordinated omission). The two endpoints'
//! requests are interleaved in one run, so both meet the same server state. The
//! bench seeds its own data (one user with 3 accounts and 90 holdings) in a scratch
//! database and starts its own Redis, which it can then stop.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use chrono::{NaiveDate, Utc};
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use rust_decimal::Decimal;
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Semaphore;

use finsync_sandbox::link::CuttableLink;

use crate::support::{RedisServer, ScratchDatabase};
use finsync::app::config::Settings;
use finsync::app::startup::App;
use finsync::domain::{
    Account, AccountType, BalanceMeaning, Balances, Currency, Holding, Money, Security,
    SecurityType, Snapshot, Transaction, TransactionStatus, UserId,
};
use finsync::store::{Actor, AuditEntry, Removals, SyncSuccess, TokenColumns};
use finsync::vault::Vault;

pub struct ApiBench {
    /// Requests per second, for every measured endpoint.
    pub rate: u32,
    pub seconds: u64,
    /// Requests in flight at most (the client's connections).
    pub concurrency: usize,
    /// A PostgreSQL server where a scratch database may be created.
    pub database_url: String,
    /// The `redis-server` binary the bench starts (and stops).
    pub redis_server: String,
}

/// One measured series.
struct Series {
    setup: &'static str,
    endpoint: &'static str,
    sent: u64,
    failed: u64,
    elapsed: Duration,
    latency: Histogram<u64>,
}

const USER: &str = "bench-user";

pub async fn run_api(bench: ApiBench) -> anyhow::Result<()> {
    let mut results = Vec::new();

    let scratch = ScratchDatabase::create(&bench.database_url).await?;
    let mut redis = RedisServer::start(&bench.redis_server)?;
    // The fleet reaches its database through a link the bench can cut.
    let link = CuttableLink::start(database_address(&scratch.url).await?).await?;
    let mut through_link = url::Url::parse(&scratch.url)?;
    through_link.set_host(Some("127.0.0.1")).and_then(|()| {
        through_link
            .set_port(Some(link.address().port()))
            .map_err(|()| url::ParseError::InvalidPort)
    })?;
    let fleet = Server::start(through_link.as_str(), Some(&redis.url)).await?;
    // Invalidations must flow before L1 is trusted (see `cache`).
    wait_until("the cache subscribes to Redis", || {
        !fleet.app.ctx.cache.degraded()
    })
    .await?;
    results.extend(measure(&bench, &fleet, "fleet").await?);
    link.cut();
    wait_until("the API notices the database is gone", || {
        !fleet.app.ctx.store.reachable()
    })
    .await?;
    results.extend(measure(&bench, &fleet, "database stopped").await?);
    link.restore();
    wait_until("the API sees its database again", || {
        fleet.app.ctx.store.reachable()
    })
    .await?;
    redis.stop();
    wait_until("the cache notices Redis is gone", || {
        fleet.app.ctx.cache.degraded()
    })
    .await?;
    results.extend(measure(&bench, &fleet, "redis stopped").await?);
    fleet.stop();
    scratch.drop_database().await?;

    let dir = std::env::temp_dir().join(format!("finsync-bench-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir)?;
    let sqlite = format!("sqlite://{}?mode=rwc", dir.join("finsync.db").display());
    let embedded = Server::start(&sqlite, None).await?;
    results.extend(measure(&bench, &embedded, "embedded").await?);
    embedded.stop();
    let _ = std::fs::remove_dir_all(&dir);

    print(&bench, &results);
    Ok(())
}

/// The PostgreSQL server a database URL names, resolved.
async fn database_address(database_url: &str) -> anyhow::Result<std::net::SocketAddr> {
    let url = url::Url::parse(database_url)?;
    let host = url.host_str().context("the database URL has no host")?;
    tokio::net::lookup_host((host, url.port().unwrap_or(5432)))
        .await?
        .next()
        .with_context(|| format!("{host} does not resolve"))
}

async fn wait_until(what: &str, condition: impl Fn() -> bool) -> anyhow::Result<()> {
    for _ in 0..200 {
        if condition() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("timed out waiting until {what}")
}

/// The API served in this process on a seeded database.
struct Server {
    app: Arc<App>,
    address: String,
    key: SecretString,
    /// The path of the seeded user's portfolio.
    portfolio: &'static str,
    stop: tokio::sync::watch::Sender<bool>,
}

impl Server {
    async fn start(database_url: &str, redis_url: Option<&str>) -> anyhow::Result<Self> {
        let mut settings = Settings::load_from(&finsync::app::config::config_dir(), None)?;
        settings.database.url = SecretString::from(database_url.to_owned());
        settings.redis.url = SecretString::from(redis_url.unwrap_or_default().to_owned());
        settings.redis.key_prefix = format!("finsync-bench-{}", uuid::Uuid::new_v4());
        settings.sandbox.in_process = false;
        settings.vault.key = Vault::generate_key();
        // The limiter stays on the request path; only its budget is out of reach.
        settings.server.rate_limit_per_second = u32::MAX;
        settings.server.rate_limit_burst = u32::MAX;
        let (app, listener, address) = crate::support::app_on_free_port(settings).await?;
        let key = seed(&app).await?;
        let stop = crate::support::serve(&app, listener);
        Ok(Self {
            app,
            address,
            key,
            portfolio: "/v1/users/bench-user/portfolio",
            stop,
        })
    }

    fn stop(self) {
        let _ = self.stop.send(true);
    }
}

/// One tenant, one user with 3 accounts of 30 holdings each and 90 transactions,
/// stored as a sync would store them.
async fn seed(app: &App) -> anyhow::Result<SecretString> {
    let store = &app.ctx.store;
    let (tenant, key) = store.create_tenant("bench").await?;
    let user = UserId::parse(USER)?;
    let institution = app
        .ctx
        .registry
        .all()
        .first()
        .context("no connector is configured")?
        .connector
        .id
        .clone();
    let connection = store
        .upsert_connection(tenant.id, &user, &institution)
        .await?;
    store
        .save_grant(
            connection.id,
            TokenColumns::default(),
            None,
            None,
            AuditEntry::new(Actor::cli(), "bench.seed"),
        )
        .await?;
    store
        .apply_snapshot(connection.id, &snapshot(), Removals::all())
        .await?;
    let now = Utc::now();
    store
        .lease_for_sync(connection.id, "bench", now + chrono::Duration::minutes(1))
        .await?
        .context("the seeded connection is active and free")?;
    store
        .record_sync_success(
            connection.id,
            SyncSuccess {
                at: now,
                next_sync_at: now + chrono::Duration::days(1),
                cursor: None,
                deep_sync_due_at: None,
                lease_owner: "bench",
                unread: &[],
                read: &[],
                deferred: &[],
                previous: None,
            },
        )
        .await?;
    Ok(key.0)
}

fn snapshot() -> Snapshot {
    let usd: Currency = "USD".parse().expect("a valid currency code");
    let money = |cents: i64| Money::new(Decimal::new(cents, 2), usd);
    let day = NaiveDate::from_ymd_opt(2026, 11, 1).expect("a valid date");
    let mut snapshot = Snapshot::default();
    for a in 0..3 {
        let account = format!("acct-{a}");
        snapshot.accounts.push(Account {
            external_id: account.clone(),
            account_type: AccountType::Investment,
            subtype: Some("brokerage".into()),
            name: format!("Brokerage {a}"),
            official_name: None,
            mask: Some(format!("00{a}1")),
            currency: usd,
            balances: Balances {
                current: money(12_345_678 + a),
                available: Some(money(100_000)),
                cash: None,
                meaning: BalanceMeaning::Total,
                as_of: Utc::now(),
            },
        });
        for h in 0..30 {
            let security = format!("sec-{a}-{h}");
            snapshot.securities.push(Security {
                external_id: security.clone(),
                ticker: Some(format!("T{a}{h:02}")),
                cusip: None,
                isin: Some(format!("US00000{a}{h:04}")),
                sedol: None,
                figi: None,
                name: format!("Security {a}-{h}"),
                security_type: if h % 3 == 0 {
                    SecurityType::Etf
                } else {
                    SecurityType::Equity
                },
                currency: usd,
                price: Some(Decimal::new(10_000 + h, 2)),
                price_as_of: Some(day),
            });
            snapshot.holdings.push(Holding {
                account_external_id: account.clone(),
                security_external_id: security.clone(),
                quantity: Decimal::new(1_500 + h, 1),
                cost_basis: Some(money(900_000 + h)),
                price: Some(money(10_000 + h)),
                value: Some(money(1_500_000 + h)),
                as_of: Some(day),
            });
            snapshot.transactions.push(Transaction {
                external_id: format!("tx-{a}-{h}"),
                account_external_id: account.clone(),
                amount: money(-(10_000 + h)),
                date: day - chrono::Days::new(u64::try_from(h).unwrap_or_default()),
                status: TransactionStatus::Posted,
                pending_external_id: None,
                description: format!("Buy {security}"),
                category: None,
                investment_type: None,
                security_external_id: Some(security),
                quantity: Some(Decimal::ONE),
                price: Some(Decimal::new(10_000 + h, 2)),
            });
        }
    }
    snapshot
}

/// What one endpoint recorded during a run.
struct Recorder {
    latency: Histogram<u64>,
    failed: u64,
}

/// Sends `rate` requests per second to each endpoint, interleaved (the trivial
/// endpoint, then the portfolio, then the trivial one again…), so both see the
/// same server at the same moments, for the bench's duration after a one-second
/// warm-up that is not recorded.
async fn measure(
    bench: &ApiBench,
    server: &Server,
    setup: &'static str,
) -> anyhow::Result<[Series; 2]> {
    let paths = ["/healthz", server.portfolio];
    let client = finsync::http::client();
    let key = server.key.expose_secret().to_owned();
    let progress = ProgressBar::new(bench.seconds + 1).with_style(
        ProgressStyle::with_template("{spinner} {msg} [{bar:30}] {pos}/{len} s")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    progress.set_message(format!(
        "{setup}: /healthz and portfolio at {} req/s each",
        bench.rate
    ));

    let warm_up = Duration::from_secs(1);
    let total = warm_up + Duration::from_secs(bench.seconds);
    let per_second = u64::from(bench.rate.max(1)) * paths.len() as u64;
    let interval = Duration::from_secs_f64(1.0 / per_second as f64);
    let permits = Arc::new(Semaphore::new(bench.concurrency.max(1)));
    let mut recorders = Vec::new();
    for _ in paths {
        recorders.push(Arc::new(std::sync::Mutex::new(Recorder {
            latency: Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?,
            failed: 0,
        })));
    }
    let start = Instant::now();
    let mut sent = 0u64;
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        let due = start + interval.mul_f64(sent as f64);
        if due.duration_since(start) >= total {
            break;
        }
        tokio::time::sleep_until(due.into()).await;
        if sent.is_multiple_of(per_second) {
            progress.set_position(start.elapsed().as_secs());
        }
        let which = usize::try_from(sent % paths.len() as u64).unwrap_or_default();
        let recorded = due.duration_since(start) >= warm_up;
        let url = format!("{}{}", server.address, paths[which]);
        let (client, key) = (client.clone(), key.clone());
        let (permits, recorder) = (permits.clone(), recorders[which].clone());
        tasks.spawn(async move {
            let Ok(_permit) = permits.acquire_owned().await else {
                return;
            };
            // As HTTP clients do; the portfolio then comes as the cache keeps it.
            let request = client
                .get(&url)
                .bearer_auth(&key)
                .header(reqwest::header::ACCEPT_ENCODING, "gzip");
            let ok = match request.send().await {
                Ok(response) => response.status().is_success() && response.bytes().await.is_ok(),
                Err(_) => false,
            };
            if recorded {
                let micros = u64::try_from(due.elapsed().as_micros()).unwrap_or(u64::MAX);
                if let Ok(mut recorder) = recorder.lock() {
                    recorder.latency.saturating_record(micros.max(1));
                    recorder.failed += u64::from(!ok);
                }
            }
        });
        sent += 1;
        // Reap finished requests as we go so the set stays small.
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    progress.finish_and_clear();
    let elapsed = start.elapsed().saturating_sub(warm_up);
    let series = |index: usize, endpoint: &'static str| -> anyhow::Result<Series> {
        let recorder = recorders[index]
            .lock()
            .map_err(|_| anyhow::anyhow!("latency histogram poisoned"))?;
        Ok(Series {
            setup,
            endpoint,
            sent: recorder.latency.len(),
            failed: recorder.failed,
            elapsed,
            latency: recorder.latency.clone(),
        })
    };
    Ok([
        series(0, "/healthz (trivial)")?,
        series(1, "portfolio (cached)")?,
    ])
}

fn ms(micros: u64) -> String {
    format!("{:.2}", micros as f64 / 1000.0)
}

fn print(bench: &ApiBench, results: &[Series]) {
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED).set_header([
        "set-up",
        "endpoint",
        "requests",
        "answered/s",
        "failed",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "max ms",
    ]);
    for s in results {
        table.add_row([
            s.setup.to_owned(),
            s.endpoint.to_owned(),
            s.sent.to_string(),
            format!(
                "{:.0}",
                s.sent as f64 / s.elapsed.as_secs_f64().max(f64::EPSILON)
            ),
            s.failed.to_string(),
            ms(s.latency.value_at_quantile(0.50)),
            ms(s.latency.value_at_quantile(0.99)),
            ms(s.latency.value_at_quantile(0.999)),
            ms(s.latency.max()),
        ]);
    }
    println!(
        "finsync-bench api: {} req/s to each endpoint, interleaved, for {} s, at most {} in flight; latency from when each request was due\n",
        bench.rate, bench.seconds, bench.concurrency
    );
    println!("{table}\n");
    for pair in results.chunks(2) {
        if let [trivial, portfolio] = pair {
            let ratio = portfolio.latency.value_at_quantile(0.99) as f64
                / trivial.latency.value_at_quantile(0.99).max(1) as f64;
            println!(
                "{:<16} p99 portfolio / p99 trivial = {ratio:.2}×",
                portfolio.setup
            );
        }
    }
}
