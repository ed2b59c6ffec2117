//! `finsync-bench sync` runs end to end on a few connections: every phase syncs
//! every connection, the second sync of unchanged data writes no row, the
//! institution's own limit is never hit, incremental syncs write the changes at
//! either history length, and the API answers every closed-loop read.
//! `finsync-bench queue` enqueues what it says on both databases. (The figures
//! themselves are BENCHMARKS.md's business: no test asserts a time.)

use std::process::Command;

fn postgres_url() -> String {
    std::env::var("FINSYNC_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// The bench run with `args`, with none of the caller's `FINSYNC…` settings (it
/// sets its own); what it printed, once it has succeeded.
fn bench(args: &[&str]) -> String {
    let mut command = Command::new(env!("CARGO_BIN_EXE_finsync-bench"));
    for (key, _) in std::env::vars() {
        if key.starts_with("FINSYNC") {
            command.env_remove(key);
        }
    }
    let output = command.args(args).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    stdout.into_owned()
}

#[test]
fn the_sync_bench_runs_every_phase_and_a_resync_of_unchanged_data_writes_nothing() {
    let stdout = bench(&[
        "sync",
        "--connections",
        "3",
        "--concurrency",
        "2",
        "--latency-ms",
        "20",
        "--incremental-connections",
        "2",
        "--readers",
        "2",
        "--read-seconds",
        "1",
        "--database-url",
        &postgres_url(),
    ]);
    assert!(
        stdout.contains(
            "(c) second sync: rows written         = 0 by the runs' counts, 0 by PostgreSQL's"
        ),
        "{stdout}"
    );
    // What PostgreSQL wrote is shown for (a) and the raw upsert alike.
    for phase in ["(a) PostgreSQL wrote ", "raw upsert: PostgreSQL wrote "] {
        let line = stdout.lines().find(|l| l.starts_with(phase));
        assert!(
            line.is_some_and(|l| l.contains(" MiB of WAL, ") && !l.contains(" 0.0 MiB")),
            "{stdout}"
        );
    }
    // The budget holds for plain requests (b) and per-account fan-out (d) alike.
    assert_eq!(
        stdout.matches("429s: 0 (target 0: met)").count(),
        2,
        "{stdout}"
    );
    // Three syncs in each of the four phases, none failed.
    let rows: Vec<&str> = stdout
        .lines()
        .filter(|l| {
            ["│ (a)", "│ (b)", "│ (c)", "│ (d)"]
                .iter()
                .any(|p| l.starts_with(p))
        })
        .collect();
    assert_eq!(rows.len(), 4, "{stdout}");
    for row in rows {
        let cells: Vec<&str> = row.split('┆').map(str::trim).collect();
        assert_eq!((cells[1], cells[2]), ("3", "0"), "{row}");
    }
    // (a) stored every record of three bulk users: 3 accounts, 30 holdings,
    // 1,000 transactions and the securities they hold, each.
    let first = stdout.lines().find(|l| l.starts_with("│ (a)")).unwrap();
    let records: u64 = first.split('┆').nth(3).unwrap().trim().parse().unwrap();
    assert!(records > 3 * 1033, "{first}");

    // (e): two connections of each history, synced in two rounds, none failed,
    // and each sync wrote what changed (10 new transactions and more).
    let incremental: Vec<Vec<&str>> = stdout
        .lines()
        .filter(|l| l.starts_with("│ history of"))
        .map(|l| l.split('┆').map(str::trim).collect())
        .collect();
    assert_eq!(incremental.len(), 2, "{stdout}");
    for cells in &incremental {
        assert_eq!((cells[1], cells[2]), ("4", "0"), "{cells:?}");
        let written: f64 = cells[3].parse().unwrap();
        assert!(written >= 10.0, "{cells:?}");
    }
    // (f): both endpoints read in two slices a second, every read answered.
    let reads: Vec<Vec<&str>> = stdout
        .lines()
        .filter(|l| l.starts_with("│ /healthz") || l.starts_with("│ portfolio"))
        .map(|l| l.split('┆').map(str::trim).collect())
        .collect();
    assert_eq!(reads.len(), 2, "{stdout}");
    for cells in &reads {
        assert!(cells[1].parse::<u64>().unwrap() >= 2, "{cells:?}");
        assert!(cells[2].parse::<u64>().unwrap() > 0, "{cells:?}");
        assert_eq!(cells[3], "0", "{cells:?}");
    }
    assert!(
        stdout.contains("Capacity: connections one core keeps fresh"),
        "{stdout}"
    );
}

#[test]
fn the_queue_bench_times_a_tick_over_each_backlog_on_both_databases() {
    let stdout = bench(&[
        "queue",
        "--small",
        "5",
        "--large",
        "20",
        "--tick",
        "3",
        "--database-url",
        &postgres_url(),
    ]);
    let rows: Vec<Vec<&str>> = stdout
        .lines()
        .filter(|l| l.starts_with("│ PostgreSQL") || l.starts_with("│ SQLite"))
        .map(|l| l.split('┆').map(str::trim).collect())
        .collect();
    let backlogs: Vec<(&str, &str, &str)> = rows
        .iter()
        .map(|cells| (cells[0].trim_start_matches("│ "), cells[1], cells[2]))
        .collect();
    assert_eq!(
        backlogs,
        [
            ("PostgreSQL", "5", "3"),
            ("PostgreSQL", "20", "3"),
            ("SQLite", "5", "3"),
            ("SQLite", "20", "3"),
        ],
        "{stdout}"
    );
    assert_eq!(
        stdout.matches("ms/enqueue, backlog 20 / 5 = ").count(),
        2,
        "{stdout}"
    );
}
