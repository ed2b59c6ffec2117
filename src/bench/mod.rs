//! Benchmarks, run by `finsync bench …` and printed as tables with ratios measured
//! side by side in one run: [`api`] (cached portfolio reads) and [`sync`] (syncs
//! at fleet scale against the sandbox). What they share is here: a scratch
//! PostgreSQL database and a Redis server of their own.

pub mod api;
pub mod sync;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use sea_orm::{ConnectionTrait, Database};

pub use api::{ApiBench, run_api};
pub use sync::{SyncBench, run_sync};

/// Serves `app`'s API on `listener` in the background until the returned sender
/// says stop (or is dropped).
pub(crate) fn serve(
    app: &std::sync::Arc<crate::startup::App>,
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

/// A database created for one run on the given server and dropped after it.
pub(crate) struct ScratchDatabase {
    admin_url: String,
    name: String,
    pub(crate) url: String,
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
        })
    }

    pub(crate) async fn drop_database(self) -> anyhow::Result<()> {
        let admin = Database::connect(&self.admin_url).await?;
        admin
            .execute_unprepared(&format!(
                "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                self.name
            ))
            .await?;
        admin.close().await?;
        Ok(())
    }
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
