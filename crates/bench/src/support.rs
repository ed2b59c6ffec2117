//! What the benchmarks share: an API served in the background, a scratch
//! PostgreSQL database and a Redis server of their own, progress bars and
//! figures' cells.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use comfy_table::{Cell, CellAlignment};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use sea_orm::{ConnectionTrait, Database};

/// The app `settings` build, with a listener on a free loopback port for [`serve`]
/// and its address (`http://127.0.0.1:PORT`), which is also its public URL.
pub(crate) async fn app_on_free_port(
    mut settings: finsync::app::config::Settings,
) -> anyhow::Result<(
    std::sync::Arc<finsync::app::App>,
    tokio::net::TcpListener,
    String,
)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = format!("http://{}", listener.local_addr()?);
    settings.server.public_url = url::Url::parse(&format!("{address}/"))?;
    let app = std::sync::Arc::new(finsync::app::App::build(settings).await?);
    Ok((app, listener, address))
}

/// Serves `app`'s API on `listener` in the background until the returned sender
/// says stop (or is dropped).
pub(crate) fn serve(
    app: &std::sync::Arc<finsync::app::App>,
    listener: tokio::net::TcpListener,
) -> tokio::sync::watch::Sender<bool> {
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let app = app.clone();
    tokio::spawn(async move {
        let shutdown = async move {
            let _ = stopped.wait_for(|s| *s).await;
        };
        if let Err(e) = app.serve(listener, shutdown).await {
            tracing::error!(error = %e, "Bench API failed.");
        }
    });
    stop
}

/// A database created for one run on the given server and dropped after it, also
/// when the run stops on an error partway.
pub(crate) struct ScratchDatabase {
    admin_url: String,
    name: String,
    pub(crate) url: String,
    dropped: bool,
}

impl ScratchDatabase {
    pub(crate) async fn create(admin_url: &str) -> anyhow::Result<Self> {
        let name = format!("finsync_bench_{}", uuid::Uuid::new_v4().simple());
        let admin = Database::connect(admin_url)
            .await
            .with_context(|| "connecting to PostgreSQL (set --database-url)".to_owned())?;
        admin
            .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
            .await?;
        admin.close().await?;
        let mut url = url::Url::parse(admin_url)?;
        url.set_path(&format!("/{name}"));
        Ok(Self {
            admin_url: admin_url.to_owned(),
            name,
            url: url.to_string(),
            dropped: false,
        })
    }

    pub(crate) async fn drop_database(mut self) -> anyhow::Result<()> {
        drop_named(&self.admin_url, &self.name).await?;
        self.dropped = true;
        Ok(())
    }
}

impl Drop for ScratchDatabase {
    fn drop(&mut self) {
        if self.dropped {
            return;
        }
        // The run stopped on an error. This may run inside the runtime, which
        // cannot be blocked on: drop the database from a thread of its own.
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        let dropped = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
                .block_on(drop_named(&admin_url, &name))
        })
        .join();
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("Could not drop the scratch database {}: {e:#}", self.name),
            Err(_) => eprintln!("Could not drop the scratch database {}.", self.name),
        }
    }
}

async fn drop_named(admin_url: &str, name: &str) -> anyhow::Result<()> {
    let admin = Database::connect(admin_url).await?;
    admin
        .execute_unprepared(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
        .await?;
    admin.close().await?;
    Ok(())
}

/// A `redis-server` of the bench's own, on a free port, stopped on demand.
pub(crate) struct RedisServer {
    child: Option<Child>,
    pub(crate) url: String,
}

impl RedisServer {
    pub(crate) fn start(binary: &str) -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let child = Command::new(binary)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| {
                format!("starting {binary} (install redis-server or pass --redis-server)")
            })?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                bail!("{binary} did not listen on port {port}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Self {
            child: Some(child),
            url: format!("redis://127.0.0.1:{port}"),
        })
    }

    /// The CPU seconds the server has used so far.
    pub(crate) fn cpu_secs(&self) -> Option<f64> {
        process_cpu_secs(self.child.as_ref()?.id())
    }

    pub(crate) fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Clock ticks per second in `/proc`'s CPU times: Linux reports them in `USER_HZ`,
/// which its ABI fixes at 100 on every architecture it supports today.
const USER_HZ: f64 = 100.0;

/// Seconds of CPU the whole machine has spent busy since boot, on all its cores
/// (everything but idle and waiting on I/O); `None` off Linux.
pub(crate) fn machine_busy_secs() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let cpu = stat.lines().find(|l| l.starts_with("cpu "))?;
    let ticks: Vec<u64> = cpu
        .split_whitespace()
        .skip(1)
        .filter_map(|n| n.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal …
    let busy: u64 = ticks
        .iter()
        .enumerate()
        .filter(|(i, _)| !matches!(i, 3 | 4) && *i < 8)
        .map(|(_, t)| t)
        .sum();
    Some(busy as f64 / USER_HZ)
}

/// Waits until the machine was busy on less than `share` of its cores over a
/// whole second (what ran before, PostgreSQL's autovacuum after a bulk write,
/// has settled), or `deadline` has passed. Returns the last second's busy share,
/// to print; `None` off Linux.
pub(crate) async fn settled(share: f64, deadline: Duration) -> Option<f64> {
    let until = Instant::now() + deadline;
    loop {
        let (before, start) = (machine_busy_secs()?, Instant::now());
        // A one-second measurement window, not a wait standing in for a signal.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let busy = (machine_busy_secs()? - before) / start.elapsed().as_secs_f64() / cores() as f64;
        if busy < share || Instant::now() >= until {
            return Some(busy);
        }
    }
}

/// Cores the machine has, as the kernel counts them.
pub(crate) fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
}

/// Seconds of CPU a process has spent, in user and kernel mode; `None` once it has
/// gone or off Linux.
pub(crate) fn process_cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces; the fields after it are plain numbers.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after `)`.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / USER_HZ)
}

/// A line of `/proc/PID/status` in bytes (`VmRSS`, `VmHWM`, …).
pub(crate) fn process_memory(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| {
        l.strip_prefix(field)
            .is_some_and(|rest| rest.starts_with(':'))
    })?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// A progress bar for `len` steps of `what`, drawn among `progress`'s bars.
pub(crate) fn bar(progress: &MultiProgress, what: &str, len: usize) -> ProgressBar {
    let bar = progress.add(ProgressBar::new(len as u64));
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg:42} [{bar:30}] {pos}/{len} {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message(what.to_owned());
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// A table cell aligned right, as figures are.
pub(crate) fn right(text: String) -> Cell {
    Cell::new(text).set_alignment(CellAlignment::Right)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bench that stops on an error drops its scratch database all the same.
    #[tokio::test]
    async fn a_scratch_database_is_dropped_even_without_drop_database() {
        let admin_url = std::env::var("FINSYNC_TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
        let scratch = ScratchDatabase::create(&admin_url).await.unwrap();
        let name = scratch.name.clone();
        let admin = Database::connect(&admin_url).await.unwrap();
        let exists = |admin: &sea_orm::DatabaseConnection| {
            let sql = format!("SELECT 1 AS one FROM pg_database WHERE datname = '{name}'");
            let admin = admin.clone();
            async move {
                admin
                    .query_one_raw(sea_orm::Statement::from_string(
                        sea_orm::DbBackend::Postgres,
                        sql,
                    ))
                    .await
                    .unwrap()
                    .is_some()
            }
        };
        assert!(exists(&admin).await);
        drop(scratch);
        assert!(!exists(&admin).await);
    }

    #[test]
    fn this_process_has_a_resident_size_a_peak_and_cpu_time() {
        let pid = std::process::id();
        let rss = super::process_memory(pid, "VmRSS").expect("VmRSS");
        let peak = super::process_memory(pid, "VmHWM").expect("VmHWM");
        assert!(rss > 0 && peak >= rss, "{rss} {peak}");
        // Spin until the kernel has charged this process at least one tick.
        let started = std::time::Instant::now();
        while super::process_cpu_secs(pid).expect("CPU time") <= 0.0 {
            assert!(started.elapsed() < std::time::Duration::from_secs(30));
        }
        assert!(super::machine_busy_secs().expect("/proc/stat") > 0.0);
        assert!(super::process_memory(pid, "NoSuchField").is_none());
    }
}
