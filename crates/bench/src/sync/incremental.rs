//! (e) Whether an incremental sync costs what changed or what is stored: `n`
//! connections whose users have 1,000 transactions of history and `n` with 10,000,
//! first synced in full, then each given 10 new transactions (one epoch of the
//! sandbox's world; prices move and one transaction changes and one goes too) and
//! synced again. Two rounds, the groups in turn first (1,000 then 10,000, then the
//! other way round), so neither always meets a warmer or busier machine. Each
//! group's time, CPU and rows read from the record tables (PostgreSQL's own
//! statistics) are summed over the rounds.

use std::time::Duration;

use anyhow::bail;
use comfy_table::{Cell, Table, presets::UTF8_FULL_CONDENSED};
use indicatif::MultiProgress;

use finsync::domain::ConnectionId;
use finsync_sandbox::{self as sandbox, Institution, Sandbox};

use super::{Cpu, Fleet, Runs, SyncBench, Worker, right, secs, verdict};
use crate::support::RedisServer;

/// Rounds of 10 new transactions and a sync of each connection.
const ROUNDS: usize = 2;

/// One history length's incremental syncs, over every round.
pub(super) struct Group {
    label: &'static str,
    /// Transactions each user had before the rounds.
    history: usize,
    connections: Vec<ConnectionId>,
    syncs: u64,
    failed: u64,
    errors: Vec<String>,
    written: u64,
    /// The rounds' elapsed times, added.
    elapsed: Duration,
    cpu: Cpu,
    rows_read: u64,
}

impl Group {
    fn new(label: &'static str, history: usize, connections: Vec<ConnectionId>) -> Self {
        Self {
            label,
            history,
            connections,
            syncs: 0,
            failed: 0,
            errors: Vec::new(),
            written: 0,
            elapsed: Duration::ZERO,
            cpu: Cpu::default(),
            rows_read: 0,
        }
    }

    /// Syncs every connection of the group once and adds what it cost; `read_before`
    /// is the rows read so far, and the count after is returned.
    async fn measure(
        &mut self,
        fleet: &Fleet,
        worker: &Worker,
        round: usize,
        progress: &MultiProgress,
        read_before: u64,
    ) -> anyhow::Result<u64> {
        let prefix = format!("bench:incremental:{round}:{}:", self.history);
        let cpu_before = Cpu::sample(worker);
        fleet.enqueue(&self.connections, &prefix).await?;
        let runs: Runs = fleet
            .wait(
                progress,
                &format!("(e) round {}: 10 new at {}", round + 1, self.label),
                &prefix,
                self.connections.len(),
                |_| {},
            )
            .await?;
        self.cpu = self.cpu.add(Cpu::sample(worker).since(cpu_before));
        let read_after = fleet.rows_read().await?;
        self.rows_read += read_after.saturating_sub(read_before);
        self.syncs += runs.runs;
        self.failed += runs.failed;
        self.errors.extend(runs.errors);
        self.written += runs.written;
        self.elapsed += runs.elapsed;
        Ok(read_after)
    }

    fn per_sync(&self, total: f64) -> f64 {
        total / self.syncs.max(1) as f64
    }
}

/// (e)'s two groups.
pub(super) struct Incremental {
    shallow: Group,
    deep: Group,
}

impl Incremental {
    /// The CPU the 1,000-transaction group's syncs cost, and how many they were.
    pub(super) fn shallow_cost(&self) -> (Cpu, u64) {
        (self.shallow.cpu, self.shallow.syncs)
    }
}

pub(super) async fn run(
    bench: &SyncBench,
    sandbox: &Sandbox,
    redis: &RedisServer,
    progress: &MultiProgress,
) -> anyhow::Result<Incremental> {
    let n = bench.incremental_connections;
    // Ids of their own: the sandbox may still hold (a)'s users at an older epoch.
    let shallow: Vec<String> = (0..n)
        .map(|i| format!("{}e{i:05}", sandbox::data::BULK_PREFIX))
        .collect();
    let deep: Vec<String> = (0..n)
        .map(|i| format!("{}{i:05}", sandbox::data::DEEP_BULK_PREFIX))
        .collect();
    let users: Vec<String> = shallow.iter().chain(&deep).cloned().collect();

    let fleet = Fleet::start(bench, sandbox, redis, Institution::Meridian, None).await?;
    fleet.link(&users, progress, "(e) linking").await?;
    let worker = fleet.worker(&bench.finsync, bench.concurrency)?;
    let first = fleet
        .wait(
            progress,
            "(e) first sync, 1,000 and 10,000 transactions",
            "link:",
            users.len(),
            |_| {},
        )
        .await?;
    if first.failed > 0 {
        bail!(
            "(e): {} first syncs failed, first: {}",
            first.failed,
            first.errors.first().map_or("", String::as_str)
        );
    }
    // Each reading waits until the worker's last reads are counted, so none of the
    // first syncs' reads is counted as the first round's.
    let mut read = fleet.rows_read().await?;
    let connections = fleet.connections_of_users().await?;
    let of = |prefix: &str| -> Vec<ConnectionId> {
        connections
            .iter()
            .filter(|(_, user)| user.as_str().starts_with(prefix))
            .map(|(id, _)| *id)
            .collect()
    };
    let mut groups = [
        Group::new(
            "1,000 transactions",
            sandbox::data::BULK_TRANSACTIONS,
            of(sandbox::data::BULK_PREFIX),
        ),
        Group::new(
            "10,000 transactions",
            sandbox::data::DEEP_BULK_TRANSACTIONS,
            of(sandbox::data::DEEP_BULK_PREFIX),
        ),
    ];
    for round in 0..ROUNDS {
        sandbox.advance();
        // The institution computes each user's next data once, before the clock
        // starts: what it costs a real institution is not ours to measure.
        for user in &users {
            sandbox.portfolio(Institution::Meridian, user);
        }
        let order: [usize; 2] = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for index in order {
            read = groups[index]
                .measure(&fleet, &worker, round, progress, read)
                .await?;
        }
    }
    worker.stop();
    fleet.stop().await?;
    let [shallow, deep] = groups;
    Ok(Incremental { shallow, deep })
}

pub(super) fn print(bench: &SyncBench, r: &Incremental) {
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED).set_header([
        "(e) incremental sync, 10 new transactions",
        "syncs",
        "failed",
        "written/sync",
        "seconds",
        "worker CPU ms/sync",
        "institution CPU ms/sync",
        "worker, PostgreSQL, Redis CPU ms/sync",
        "rows read/sync",
    ]);
    for group in [&r.shallow, &r.deep] {
        table.add_row([
            Cell::new(format!("history of {}", group.label)),
            right(group.syncs.to_string()),
            right(group.failed.to_string()),
            right(format!("{:.1}", group.per_sync(group.written as f64))),
            right(secs(group.elapsed)),
            right(format!("{:.1}", group.per_sync(group.cpu.worker) * 1000.0)),
            right(format!("{:.1}", group.per_sync(group.cpu.bench) * 1000.0)),
            right(format!("{:.1}", group.per_sync(group.cpu.ours()) * 1000.0)),
            right(format!("{:.0}", group.per_sync(group.rows_read as f64))),
        ]);
    }
    println!(
        "(e): {} connections of each history, {ROUNDS} rounds of 10 new transactions each, \
         {} syncs at once\n{table}\n",
        bench.incremental_connections, bench.concurrency
    );
    for group in [&r.shallow, &r.deep] {
        for error in &group.errors {
            println!("(e) a sync failed at {}: {error}", group.label);
        }
    }
    let time = r.deep.elapsed.as_secs_f64() / r.shallow.elapsed.as_secs_f64().max(f64::EPSILON);
    let cpu = r.deep.cpu.worker / r.shallow.cpu.worker.max(f64::EPSILON);
    let read = r.deep.rows_read as f64 / r.shallow.rows_read.max(1) as f64;
    println!(
        "(e) incremental sync time, 10,000 / 1,000 history = {time:.2} (target at most 1.2: {})",
        verdict(time <= 1.2)
    );
    println!("(e) worker CPU,              10,000 / 1,000 history = {cpu:.2}");
    println!("(e) rows read,               10,000 / 1,000 history = {read:.2}\n");
}
