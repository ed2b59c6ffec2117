//! `finsync-bench`: finsync's benchmarks, printed as tables with ratios measured
//! side by side in one run: [`api`] (cached portfolio reads), [`sync`] (syncs at
//! fleet scale against the sandbox, in `finsync worker` processes) and [`queue`]
//! (enqueueing over a growing backlog). A workspace
//! binary of its own, so the product binary carries none of it:
//!
//! ```text
//! cargo build --release --workspace
//! target/release/finsync-bench sync
//! ```

mod api;
mod queue;
mod support;
mod sync;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use finsync::app::{self, Logging};

/// The allocator the `finsync` binary runs on by default. The raw upsert that the
/// sync bench measures syncs against is built here: on glibc's malloc it spent more
/// than three times the CPU, which flattered the sync.
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Debug, Parser)]
#[command(
    name = "finsync-bench",
    version,
    about = "finsync's benchmarks, printed as tables with ratios measured side by side."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
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
        servers: Servers,
    },
    /// Syncs at fleet scale against the sandbox, in a worker process of their own:
    /// (a) first syncs beside a raw bulk upsert of the same rows, and the worker's
    /// memory, (b) the same under latency and an institution's rate limit, (c) a
    /// second sync with nothing changed, (d) (b) per account, (e) incremental syncs
    /// at 1,000 and 10,000 transactions of history, (f) the API's cached
    /// portfolios closed-loop beside a trivial route, and the capacity a core has
    /// at four syncs a day. Needs PostgreSQL, redis-server and the `finsync` binary.
    Sync {
        /// Connections synced in (a), (b) and (c).
        #[arg(long, default_value_t = 1000)]
        connections: usize,
        /// Syncs the worker runs at once.
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
        /// Latency of every request in (b) and (d), in milliseconds.
        #[arg(long, default_value_t = 100)]
        latency_ms: u64,
        /// The institution's requests per second in (b) and (d).
        #[arg(long, default_value_t = 50)]
        budget: u32,
        /// Connections synced in (d), at most `--connections`: an institution asked
        /// per account takes about four times the requests per connection.
        #[arg(long, default_value_t = 200)]
        fanned_connections: usize,
        /// Connections of each history length in (e).
        #[arg(long, default_value_t = 100)]
        incremental_connections: usize,
        /// Clients reading at once in (f).
        #[arg(long, default_value_t = 32)]
        readers: usize,
        /// Seconds each endpoint is read in (f), in half-second slices taking
        /// turns: the trivial route, the portfolios twice, the trivial route.
        #[arg(long, default_value_t = 10)]
        read_seconds: u64,
        /// The parts to run, comma-separated; (c) and (f) run (a) too.
        #[arg(long, value_enum, value_delimiter = ',', default_value = "a,b,c,d,e,f")]
        parts: Vec<sync::Part>,
        /// The `finsync` binary the workers run (default: the one built beside
        /// this benchmark).
        #[arg(long)]
        finsync: Option<PathBuf>,
        #[command(flatten)]
        servers: Servers,
    },
    /// Enqueueing one scheduler tick's syncs over a small and a large backlog of
    /// waiting jobs, on PostgreSQL and on SQLite. Needs PostgreSQL.
    Queue {
        /// Waiting jobs before the first timed tick.
        #[arg(long, default_value_t = 1000)]
        small: usize,
        /// Waiting jobs before the second timed tick.
        #[arg(long, default_value_t = 10000)]
        large: usize,
        /// Jobs one tick enqueues (the scheduler's batch).
        #[arg(long, default_value_t = 500)]
        tick: usize,
        /// A PostgreSQL server where a scratch database may be created and dropped.
        #[arg(
            long,
            env = "FINSYNC_BENCH_DATABASE_URL",
            default_value = "postgres://postgres@127.0.0.1:5432/postgres"
        )]
        database_url: String,
    },
}

/// The servers a benchmark uses.
#[derive(Debug, Args)]
struct Servers {
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    app::run_to_exit(async move {
        run(cli).await?;
        Ok(ExitCode::SUCCESS)
    })
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    // Progress and the tables go to the terminal; only problems are logged.
    app::boot(None, Logging::Quiet, "bench")?;
    match cli.command {
        Command::Api {
            rate,
            seconds,
            concurrency,
            servers,
        } => {
            api::run_api(api::ApiBench {
                rate,
                seconds,
                concurrency,
                database_url: servers.database_url,
                redis_server: servers.redis_server,
            })
            .await
        }
        Command::Sync {
            connections,
            concurrency,
            latency_ms,
            budget,
            fanned_connections,
            incremental_connections,
            readers,
            read_seconds,
            parts,
            finsync,
            servers,
        } => {
            let mut parts: std::collections::BTreeSet<_> = parts.into_iter().collect();
            if parts.contains(&sync::Part::C) || parts.contains(&sync::Part::F) {
                parts.insert(sync::Part::A);
            }
            let finsync = match finsync {
                Some(path) => path,
                None => beside_this_binary("finsync")?,
            };
            sync::run_sync(sync::SyncBench {
                connections,
                concurrency: concurrency.max(1),
                latency_ms,
                budget: budget.max(1),
                fanned_connections: fanned_connections.clamp(1, connections.max(1)),
                incremental_connections: incremental_connections.max(1),
                readers: readers.max(1),
                read_seconds,
                parts,
                database_url: servers.database_url,
                redis_server: servers.redis_server,
                finsync,
            })
            .await
        }
        Command::Queue {
            small,
            large,
            tick,
            database_url,
        } => {
            queue::run_queue(queue::QueueBench {
                small,
                large,
                tick: tick.max(1),
                database_url,
            })
            .await
        }
    }
}

/// `name` in this binary's directory, where cargo builds every binary of the
/// workspace.
fn beside_this_binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("finding this binary")?;
    let path = exe.with_file_name(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    if !path.exists() {
        anyhow::bail!(
            "{} not found: build it with `cargo build --release --workspace`, or pass --finsync",
            path.display()
        );
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        super::Cli::command().debug_assert();
    }
}
