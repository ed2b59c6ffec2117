//! `finsync-bench queue`: what enqueueing a job costs as the queue's backlog of
//! waiting jobs grows. Before every enqueue the queue asks whether the connection
//! already has a job waiting; a scheduler tick enqueues up to 500 due
//! connections so. One tick's worth of enqueues is timed over a small and a large
//! backlog, on PostgreSQL and on SQLite, side by side: cost that follows the
//! backlog shows as a ratio well above 1.

use std::time::{Duration, Instant};

use comfy_table::{Cell, Table, presets::UTF8_FULL_CONDENSED};
use finsync::domain::ConnectionId;
use finsync::store::Store;
use finsync::sync::{Queue, SyncConnection};
use indicatif::MultiProgress;
use secrecy::SecretString;

use crate::support::{ScratchDatabase, bar, right};

pub(crate) struct QueueBench {
    /// Waiting jobs before the first timed tick.
    pub(crate) small: usize,
    /// Waiting jobs before the second.
    pub(crate) large: usize,
    /// Jobs one tick enqueues.
    pub(crate) tick: usize,
    pub(crate) database_url: String,
}

/// One timed tick: `enqueued` new jobs over a backlog of `backlog` waiting ones.
struct Tick {
    backlog: usize,
    enqueued: usize,
    elapsed: Duration,
}

impl Tick {
    fn ms_per_enqueue(&self) -> f64 {
        self.elapsed.as_secs_f64() * 1000.0 / self.enqueued.max(1) as f64
    }
}

pub(crate) async fn run_queue(bench: QueueBench) -> anyhow::Result<()> {
    anyhow::ensure!(
        bench.small < bench.large,
        "--small must be less than --large"
    );
    let progress = MultiProgress::new();
    let scratch = ScratchDatabase::create(&bench.database_url).await?;
    let postgres = ticks(&bench, &scratch.url, "PostgreSQL", &progress).await;
    scratch.drop_database().await?;
    let dir = std::env::temp_dir().join(format!("finsync-bench-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir)?;
    let sqlite_url = format!("sqlite://{}?mode=rwc", dir.join("queue.db").display());
    let sqlite = ticks(&bench, &sqlite_url, "SQLite", &progress).await;
    let _ = std::fs::remove_dir_all(&dir);
    print(&bench, &[("PostgreSQL", postgres?), ("SQLite", sqlite?)]);
    Ok(())
}

/// A fresh queue on `url`, filled to each backlog in turn, with one tick timed
/// over each.
async fn ticks(
    bench: &QueueBench,
    url: &str,
    backend: &str,
    progress: &MultiProgress,
) -> anyhow::Result<[Tick; 2]> {
    let store = Store::connect(&SecretString::from(url.to_owned()), 4).await?;
    store.migrate().await?;
    let queue = Queue::setup(&store).await?;
    let mut waiting = 0;
    let mut timed = Vec::with_capacity(2);
    for backlog in [bench.small, bench.large] {
        let bar = bar(
            progress,
            &format!("{backend}: {backlog} waiting jobs"),
            backlog - waiting,
        );
        while waiting < backlog {
            enqueue_new(&queue).await?;
            waiting += 1;
            bar.inc(1);
        }
        bar.finish_and_clear();
        let start = Instant::now();
        for _ in 0..bench.tick {
            enqueue_new(&queue).await?;
        }
        timed.push(Tick {
            backlog,
            enqueued: bench.tick,
            elapsed: start.elapsed(),
        });
        waiting += bench.tick;
    }
    store.db().clone().close().await?;
    timed
        .try_into()
        .map_err(|_| anyhow::anyhow!("two ticks were timed"))
}

/// Enqueues a sync for a connection with nothing waiting, as a scheduler tick
/// does for each due connection.
async fn enqueue_new(queue: &Queue) -> anyhow::Result<()> {
    let connection = ConnectionId::new();
    let added = queue
        .enqueue(SyncConnection {
            connection_id: connection,
            idempotency_key: format!("bench:{connection}"),
        })
        .await?;
    anyhow::ensure!(added, "a sync for a new connection was not queued");
    Ok(())
}

fn print(bench: &QueueBench, results: &[(&str, [Tick; 2])]) {
    println!(
        "finsync-bench queue: {} enqueues of new connections (a scheduler tick) over a backlog of {} and of {} waiting jobs\n",
        bench.tick, bench.small, bench.large
    );
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED).set_header([
        "database",
        "waiting jobs",
        "enqueued",
        "seconds",
        "ms/enqueue",
    ]);
    for (backend, ticks) in results {
        for tick in ticks {
            table.add_row([
                Cell::new(*backend),
                right(tick.backlog.to_string()),
                right(tick.enqueued.to_string()),
                right(format!("{:.2}", tick.elapsed.as_secs_f64())),
                right(format!("{:.3}", tick.ms_per_enqueue())),
            ]);
        }
    }
    println!("{table}\n");
    for (backend, [small, large]) in results {
        println!(
            "{backend:<10} ms/enqueue, backlog {} / {} = {:.2} (1 when an enqueue's cost does not follow the backlog)",
            large.backlog,
            small.backlog,
            large.ms_per_enqueue() / small.ms_per_enqueue().max(f64::EPSILON)
        );
    }
}
