//! The `finsync` binary: one subcommand per role. Everything here is argument
//! parsing and wiring; the work happens in the library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use secrecy::ExposeSecret;
use tokio::net::TcpListener;

use finsync::config::Settings;
use finsync::sandbox::{self, SandboxConfig};
use finsync::startup::{App, shutdown_signal};
use finsync::store::Store;
use finsync::tokens::Vault;
use finsync::{connectors, demo, render, telemetry};

#[derive(Debug, Parser)]
#[command(
    name = "finsync",
    version,
    about = "Financial data aggregation: connectors, tokens, scheduled syncs, a cached read API."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Everything in one process on embedded defaults: links demo users to the
    /// sandbox, syncs them, prints their portfolios and keeps serving the API.
    Demo {
        /// Exit after printing the portfolios.
        #[arg(long)]
        once: bool,
    },
    /// The HTTP API (read API, admin API, OAuth callback, health). In embedded mode
    /// (SQLite) it also runs the workers, the webhook deliveries and the scheduler.
    Serve,
    /// Sync workers and webhook deliveries; run as many as needed.
    Worker {
        /// Syncs run at the same time by this process.
        #[arg(long)]
        concurrency: Option<usize>,
    },
    /// Enqueues due syncs; safe to run more than one.
    Scheduler {
        /// Run one pass and exit.
        #[arg(long)]
        once: bool,
    },
    /// The sandbox institutions on their own.
    Sandbox {
        #[arg(long, default_value_t = 8091)]
        port: u16,
        #[arg(long, default_value = "127.0.0.1")]
        host: String,
        #[arg(long)]
        seed: Option<u64>,
        /// Access-token lifetime in seconds.
        #[arg(long)]
        token_ttl: Option<u64>,
        /// Where an institution sends its webhooks, as `INSTITUTION=URL` (only
        /// meridian sends any), e.g. `meridian=http://127.0.0.1:8080/webhooks/meridian`.
        #[arg(long = "webhook", value_parser = parse_webhook)]
        webhooks: Vec<(String, String)>,
    },
    /// Runs database migrations and exits.
    Migrate,
    /// Connector files.
    #[command(subcommand)]
    Connectors(ConnectorsCommand),
    /// Tenants (advisory apps) and their API keys.
    #[command(subcommand)]
    Tenants(TenantsCommand),
    /// The token vault.
    #[command(subcommand)]
    Tokens(TokensCommand),
    /// Benchmarks, printed as tables with ratios measured side by side.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Syncs on demand.
    #[command(subcommand)]
    Sync(SyncCommand),
    /// Webhooks institutions sent.
    #[command(subcommand)]
    Webhooks(WebhooksCommand),
}

#[derive(Debug, Subcommand)]
enum WebhooksCommand {
    /// Acts again on stored institution webhooks, with the connectors in service
    /// now: each event's connections get a sync (coalesced as for new events). By
    /// default the events of the last 7 days that were never acted on (`received`)
    /// or named accounts no connection held (`unmatched`).
    Replay {
        /// Only this institution's events.
        #[arg(long)]
        institution: Option<String>,
        /// Only this event (finsync's id or the institution's).
        #[arg(long)]
        event: Option<String>,
        /// Only events in these statuses (received, queued, coalesced, unmatched,
        /// ignored); repeat the flag or separate with commas.
        #[arg(long, value_delimiter = ',', default_values = ["received", "unmatched"])]
        status: Vec<finsync::store::EventStatus>,
        /// Only events received within this long before now (e.g. 30m, 24h, 7d).
        #[arg(long, default_value = "7d")]
        since: humantime::Duration,
    },
}

#[derive(Debug, Subcommand)]
enum SyncCommand {
    /// Enqueues a sync of every connection with records in quarantine, so they are
    /// fetched and mapped again by the connector now in service (run it after a
    /// connector fix). The workers do the syncs; entries that map are resolved.
    Replay {
        /// Replay the records in quarantine (the only kind of replay there is).
        #[arg(long, required = true)]
        quarantined: bool,
        /// Only connections of this connector (institution id).
        #[arg(long)]
        connector: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Cached portfolio reads beside a trivial endpoint: on PostgreSQL + Redis, with
    /// Redis stopped, and on the embedded default. Needs PostgreSQL and redis-server.
    Api {
        /// Requests per second to each endpoint (the two are interleaved).
        #[arg(long, default_value_t = 1000)]
        rate: u32,
        /// Measured seconds per series (after a one-second warm-up).
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Requests in flight at most.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        #[command(flatten)]
        servers: BenchServers,
    },
    /// Syncs at fleet scale against the sandbox, in a worker process of their own:
    /// (a) first syncs beside a raw bulk upsert of the same rows, (b) the same
    /// under latency and an institution's rate limit, (c) a second sync with
    /// nothing changed, and the worker's peak memory. Needs PostgreSQL and
    /// redis-server.
    Sync {
        /// Connections synced in each phase.
        #[arg(long, default_value_t = 1000)]
        connections: usize,
        /// Syncs the worker runs at once.
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
        /// Latency of every request in (b), in milliseconds.
        #[arg(long, default_value_t = 100)]
        latency_ms: u64,
        /// The institution's requests per second in (b).
        #[arg(long, default_value_t = 50)]
        budget: u32,
        #[command(flatten)]
        servers: BenchServers,
    },
}

/// The servers a benchmark uses.
#[derive(Debug, Args)]
struct BenchServers {
    /// A PostgreSQL server where scratch databases may be created and dropped.
    #[arg(
        long,
        env = "FINSYNC_BENCH_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    database_url: String,
    /// The redis-server binary; the bench runs its own on a free port.
    #[arg(long, default_value = "redis-server")]
    redis_server: String,
}

#[derive(Debug, Subcommand)]
enum TokensCommand {
    /// Prints a new random vault key (base64 of 32 bytes) for `vault.key`.
    GenerateKey,
    /// Re-seals every stored token under the current `vault.key`. Run it after
    /// moving the old key to `vault.previous_keys`; it can run while the fleet
    /// serves, and running it twice does nothing the second time.
    RotateKey,
}

#[derive(Debug, Subcommand)]
enum ConnectorsCommand {
    /// Validates connector files and reports every problem in each.
    Validate {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Links the institution's test user and runs every endpoint of connector ID
    /// once: records fetched and mapped, fields missing or unparsable. Stores nothing.
    Check {
        id: String,
        /// The institution's test user (it must approve this user without a login page).
        #[arg(long, default_value = "test-check")]
        user: String,
        /// Check this file as connector ID instead of the version in service.
        #[arg(long)]
        file: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum TenantsCommand {
    /// Creates a tenant and prints its API key (shown only this once).
    Create { name: String },
    /// Issues a new API key for a tenant; the old one stops working.
    RotateKey { name: String },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Connectors(ConnectorsCommand::Validate { files }) => Ok(validate(&files)),
        Command::Connectors(ConnectorsCommand::Check { id, user, file }) => {
            let mut settings = load_settings(None)?;
            settings.log.filter = "warn".into();
            telemetry::init(&settings.log);
            let public_url = url::Url::parse(&settings.server.public_url)?;
            let app = App::build(settings, public_url.clone()).await?;
            let registry = app.catalog.registry();
            let connector = match file {
                Some(path) => {
                    let text = std::fs::read_to_string(&path)
                        .with_context(|| format!("reading {}", path.display()))?;
                    match registry.validate(&path.display().to_string(), &id, &text) {
                        Ok(connector) => std::sync::Arc::new(connector),
                        Err(problems) => {
                            println!("{problems}");
                            return Ok(ExitCode::from(1));
                        }
                    }
                }
                None => registry.get(&id)?,
            };
            let secret = registry.client_secret(&connector)?;
            let redirect = public_url.join("oauth/callback")?;
            println!(
                "Checking {} ({}) as `{user}`…",
                connector.name, connector.id
            );
            let reports = finsync::check::check(
                &connector,
                secret,
                &redirect,
                &user,
                finsync::http::client(),
            )
            .await?;
            println!("{}", render::check(&reports));
            Ok(if reports.iter().all(|r| r.is_clean()) {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Demo { once } => {
            let settings = load_settings(Some("demo"))?;
            telemetry::init(&settings.log);
            demo::run(settings, once).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Sandbox {
            port,
            host,
            seed,
            token_ttl,
            webhooks,
        } => {
            let settings = load_settings(None)?;
            telemetry::init(&settings.log);
            let listener = TcpListener::bind((host.as_str(), port))
                .await
                .with_context(|| format!("binding {host}:{port}"))?;
            let config = SandboxConfig {
                seed: seed.unwrap_or(settings.sandbox.seed),
                access_token_ttl: Duration::from_secs(
                    token_ttl.unwrap_or(settings.sandbox.token_ttl_secs),
                ),
                webhook_urls: webhooks.into_iter().collect(),
                ..SandboxConfig::default()
            };
            let sandbox = sandbox::spawn(config, listener).await?;
            println!("Sandbox institutions at {}", sandbox.base_url());
            for institution in sandbox::Institution::ALL {
                println!(
                    "  {}: {}/{institution}",
                    institution.name(),
                    sandbox.base_url()
                );
            }
            shutdown_signal().await;
            sandbox.shutdown().await;
            Ok(ExitCode::SUCCESS)
        }
        Command::Migrate => {
            let settings = load_settings(None)?;
            telemetry::init(&settings.log);
            let store = Store::connect(&settings.database.url, 2).await?;
            store.migrate().await?;
            println!("Database is up to date.");
            Ok(ExitCode::SUCCESS)
        }
        Command::Tenants(command) => {
            let settings = load_settings(None)?;
            telemetry::init(&settings.log);
            let store = Store::connect(&settings.database.url, 2).await?;
            store.migrate().await?;
            let (tenant, key) = match command {
                TenantsCommand::Create { name } => store.create_tenant(&name).await?,
                TenantsCommand::RotateKey { name } => store.rotate_api_key(&name).await?,
            };
            println!("tenant:  {} ({})", tenant.name, tenant.id);
            println!("api key: {}", key.0.expose_secret());
            println!("Store the key now: finsync keeps only its hash.");
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench(BenchCommand::Api {
            rate,
            seconds,
            concurrency,
            servers,
        }) => {
            let mut settings = load_settings(None)?;
            // Progress and the table go to the terminal; only problems are logged.
            settings.log.filter = "warn".into();
            telemetry::init(&settings.log);
            finsync::bench::run_api(finsync::bench::ApiBench {
                rate,
                seconds,
                concurrency,
                database_url: servers.database_url,
                redis_server: servers.redis_server,
            })
            .await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench(BenchCommand::Sync {
            connections,
            concurrency,
            latency_ms,
            budget,
            servers,
        }) => {
            let mut settings = load_settings(None)?;
            settings.log.filter = "warn".into();
            telemetry::init(&settings.log);
            finsync::bench::run_sync(finsync::bench::SyncBench {
                connections,
                concurrency: concurrency.max(1),
                latency_ms,
                budget: budget.max(1),
                database_url: servers.database_url,
                redis_server: servers.redis_server,
            })
            .await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Sync(SyncCommand::Replay {
            quarantined: _,
            connector,
        }) => {
            let settings = load_settings(None)?;
            telemetry::init(&settings.log);
            let store = Store::connect(&settings.database.url, 2).await?;
            store.migrate().await?;
            let queue = finsync::sync::Queue::setup(&store).await?;
            let replayed =
                finsync::sync::replay::replay_quarantined(&store, &queue, connector.as_deref())
                    .await?;
            println!("{}", render::replayed(&replayed));
            Ok(ExitCode::SUCCESS)
        }
        Command::Webhooks(WebhooksCommand::Replay {
            institution,
            event,
            status,
            since,
        }) => {
            let settings = load_settings(None)?;
            telemetry::init(&settings.log);
            let public_url = url::Url::parse(&settings.server.public_url)?;
            let window = Duration::from_millis(settings.institution_webhooks.coalesce_ms);
            let since = chrono::Duration::from_std(*since)
                .ok()
                .and_then(|ago| chrono::Utc::now().checked_sub_signed(ago));
            let app = App::build(settings, public_url).await?;
            let filter = finsync::store::EventFilter {
                institution,
                statuses: status,
                since,
                event,
            };
            let replayed = finsync::sync::inbound::replay(&app.ctx, &filter, window).await?;
            println!("{}", render::replayed_events(&replayed));
            Ok(ExitCode::SUCCESS)
        }
        Command::Tokens(TokensCommand::GenerateKey) => {
            println!("{}", Vault::generate_key().expose_secret());
            Ok(ExitCode::SUCCESS)
        }
        Command::Tokens(TokensCommand::RotateKey) => {
            let settings = load_settings(None)?;
            telemetry::init(&settings.log);
            let store = Store::connect(&settings.database.url, 2).await?;
            store.migrate().await?;
            let vault = Vault::from_settings(&settings.vault)?;
            let report = finsync::tokens::rotate::reseal_all(&store, &vault).await?;
            println!(
                "Re-sealed {} connection(s), {} pending link(s) and {} webhook secret(s) under key {}; {} already were current.",
                report.connections,
                report.states,
                report.webhook_secrets,
                vault.current_key_id(),
                report.current
            );
            if report.skipped > 0 {
                println!(
                    "{} changed while this ran: run it again until none does.",
                    report.skipped
                );
            }
            if report.unreadable > 0 {
                println!(
                    "{} could not be opened with any configured key (see the log).",
                    report.unreadable
                );
                return Ok(ExitCode::from(1));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve => {
            let settings = load_settings(None)?;
            telemetry::init(&settings.log);
            let listener = TcpListener::bind(settings.server.bind)
                .await
                .with_context(|| format!("binding {}", settings.server.bind))?;
            let public_url = url::Url::parse(&settings.server.public_url)?;
            let embedded = !settings.is_postgres();
            let concurrency = settings.sync.worker_concurrency;
            let app = App::build(settings, public_url).await?;
            tracing::info!(address = %listener.local_addr()?, embedded, "Serving the API.");
            if embedded {
                // SQLite is one machine's database: the API process runs the workers,
                // the webhook deliveries and the scheduler too.
                let (api, workers, (), ()) = tokio::join!(
                    app.serve(listener, shutdown_signal()),
                    app.run_workers(concurrency, shutdown_signal()),
                    app.run_webhooks(shutdown_signal()),
                    app.run_scheduler(shutdown_signal()),
                );
                api.and(workers)?;
            } else {
                app.serve(listener, shutdown_signal()).await?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Worker { concurrency } => {
            let settings = load_settings(None)?;
            telemetry::init(&settings.log);
            separate_role_allowed(&settings, "worker")?;
            let public_url = url::Url::parse(&settings.server.public_url)?;
            let concurrency = concurrency
                .unwrap_or(settings.sync.worker_concurrency)
                .max(1);
            let app = App::build(settings, public_url).await?;
            tracing::info!(concurrency, "Worker started.");
            if !app.settings.metrics.bind.is_empty() {
                let bind = app.settings.metrics.bind.clone();
                tokio::spawn(
                    async move { telemetry::serve_metrics(&bind, shutdown_signal()).await },
                );
            }
            // Workers also send webhooks: both are background work that any
            // number of worker processes share through the database.
            let (workers, ()) = tokio::join!(
                app.run_workers(concurrency, shutdown_signal()),
                app.run_webhooks(shutdown_signal()),
            );
            workers?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Scheduler { once } => {
            let settings = load_settings(None)?;
            telemetry::init(&settings.log);
            separate_role_allowed(&settings, "scheduler")?;
            let public_url = url::Url::parse(&settings.server.public_url)?;
            let app = App::build(settings, public_url).await?;
            if once {
                let enqueued = finsync::sync::scheduler::tick(&app.ctx).await?;
                println!("Enqueued {enqueued} due sync(s).");
            } else {
                tracing::info!("Scheduler started.");
                if !app.settings.metrics.bind.is_empty() {
                    let bind = app.settings.metrics.bind.clone();
                    tokio::spawn(async move {
                        telemetry::serve_metrics(&bind, shutdown_signal()).await
                    });
                }
                app.run_scheduler(shutdown_signal()).await;
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// A worker or scheduler of its own needs the institutions the API process talks
/// to: with the sandbox inside `serve`'s process, it would talk to another one.
fn separate_role_allowed(settings: &Settings, role: &str) -> anyhow::Result<()> {
    if settings.sandbox.in_process {
        anyhow::bail!(
            "`finsync {role}` runs on its own only against shared institutions: with the embedded \
             defaults, `finsync serve` already runs the workers and the scheduler. Run the sandbox \
             with `finsync sandbox` and set FINSYNC__SANDBOX__IN_PROCESS=false (or use FINSYNC_ENV=production)."
        );
    }
    Ok(())
}

/// `INSTITUTION=URL`, for `finsync sandbox --webhook`.
fn parse_webhook(text: &str) -> Result<(String, String), String> {
    let (institution, url) = text
        .split_once('=')
        .ok_or_else(|| format!("`{text}` is not INSTITUTION=URL"))?;
    let institution: sandbox::Institution = institution.parse().map_err(|e| format!("{e}"))?;
    if institution != sandbox::Institution::Meridian {
        return Err(format!(
            "{} sends no webhooks; only meridian does",
            institution.name()
        ));
    }
    url::Url::parse(url).map_err(|e| format!("`{url}` is not a URL: {e}"))?;
    Ok((institution.id().to_owned(), url.to_owned()))
}

fn load_settings(default_env: Option<&str>) -> anyhow::Result<Settings> {
    Ok(Settings::load(default_env)?)
}

fn validate(files: &[PathBuf]) -> ExitCode {
    let mut failed = 0;
    for file in files {
        match connectors::validate_file(file, None) {
            Ok(c) => println!("ok      {}  ({}: {})", file.display(), c.id, c.name),
            Err(problems) => {
                failed += 1;
                println!(
                    "invalid {}  ({} problem{})",
                    file.display(),
                    problems.0.len(),
                    if problems.0.len() == 1 { "" } else { "s" }
                );
                for problem in &problems.0 {
                    println!(
                        "  - {}{}",
                        if problem.path.is_empty() {
                            String::new()
                        } else {
                            format!("{}: ", problem.path)
                        },
                        problem.message
                    );
                }
            }
        }
    }
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        super::Cli::command().debug_assert();
    }
}
