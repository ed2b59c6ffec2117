//! The map of background work: which loops each kind of process runs. Every loop
//! is shared through the database or Redis, so any number of processes may run any
//! role at once.
//!
//! | role | loops |
//! |---|---|
//! | `serve` | the HTTP API; the cache-invalidation listener (other processes' writes reach this process's L1); the connector catalog follower |
//! | `serve`, embedded (SQLite) | all of `serve`, `worker` and `scheduler`: SQLite is one machine's database |
//! | `worker` | the apalis sync and token-lifecycle workers; outgoing webhook deliveries; the catalog follower; `/metrics` on `metrics.bind` |
//! | `scheduler` | ticks that enqueue due syncs and refreshes and purge history past its retention ([`crate::sync::scheduler`]); the catalog follower; `/metrics` on `metrics.bind` |
//! | `demo` | everything in one process ([`crate::cli::demo`]) |

use std::future::Future;
use std::time::Duration;

use anyhow::Context as _;
use secrecy::ExposeSecret;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::startup::App;

/// How often an API process asks whether its database answers.
const STORE_PROBE_EVERY: Duration = Duration::from_secs(1);
use super::telemetry;

/// `finsync serve`: the API until Ctrl-C or SIGTERM; in embedded mode, every loop.
pub async fn serve(app: &App, listener: TcpListener) -> anyhow::Result<()> {
    if app.settings.is_postgres() {
        return app.serve(listener, shutdown_signal()).await;
    }
    let concurrency = app.settings.sync.worker_concurrency;
    let (api, workers, (), ()) = tokio::join!(
        app.serve(listener, shutdown_signal()),
        app.run_workers(concurrency, shutdown_signal()),
        app.run_webhooks(shutdown_signal()),
        app.run_scheduler(shutdown_signal()),
    );
    api.and(workers)
}

/// `finsync worker`: sync workers and webhook deliveries until Ctrl-C or SIGTERM.
pub async fn worker(app: &App, concurrency: usize) -> anyhow::Result<()> {
    let metrics = spawn_metrics(app).await?;
    tracing::info!(concurrency, "Worker started.");
    let (workers, ()) = tokio::join!(
        app.run_workers(concurrency, shutdown_signal()),
        app.run_webhooks(shutdown_signal()),
    );
    if let Some(task) = metrics {
        task.abort();
    }
    workers
}

/// `finsync scheduler`: its ticks until Ctrl-C or SIGTERM.
pub async fn scheduler(app: &App) -> anyhow::Result<()> {
    let metrics = spawn_metrics(app).await?;
    tracing::info!("Scheduler started.");
    app.run_scheduler(shutdown_signal()).await;
    if let Some(task) = metrics {
        task.abort();
    }
    Ok(())
}

/// Serves `/metrics` on `metrics.bind` unless it is empty, asking for
/// `server.metrics_token` when one is set. The address is bound before this
/// returns, so a port already taken stops the process at start instead of going
/// unnoticed.
async fn spawn_metrics(app: &App) -> anyhow::Result<Option<JoinHandle<()>>> {
    let bind = &app.settings.metrics.bind;
    if bind.is_empty() {
        return Ok(None);
    }
    let listener = TcpListener::bind(bind.as_str()).await.with_context(|| {
        format!(
            "binding metrics.bind = {bind} (another worker or scheduler on this host? \
             give each its own port with FINSYNC__METRICS__BIND, or \"\" for none)"
        )
    })?;
    let token = &app.settings.server.metrics_token;
    let token = (!token.expose_secret().is_empty()).then(|| token.clone());
    Ok(Some(tokio::spawn(async move {
        if let Err(e) = telemetry::serve_metrics(listener, token, shutdown_signal()).await {
            tracing::error!(error = %e, "The metrics server stopped.");
        }
    })))
}

/// The loops themselves, each until its `shutdown` resolves; the roles above and
/// the demo compose them.
impl App {
    /// Serves the API on `listener` until `shutdown` resolves.
    pub async fn serve(
        &self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        self.serve_with(listener, axum::Router::new(), shutdown)
            .await
    }

    /// [`Self::serve`], with `beside` served too (the demo's example app).
    pub async fn serve_with(
        &self,
        listener: TcpListener,
        beside: axum::Router,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        // Other processes' writes reach this process's L1 through Redis pub/sub.
        let invalidations = self.ctx.cache.listen_for_invalidations();
        let catalog = self.follow_connectors();
        // Answers from the cache say when the database is away: the probe notices.
        let probe = tokio::spawn({
            let store = self.ctx.store.clone();
            async move { store.watch(STORE_PROBE_EVERY).await }
        });
        let served = axum::serve(listener, self.router().merge(beside))
            .with_graceful_shutdown(shutdown)
            .await;
        if let Some(task) = invalidations {
            task.abort();
        }
        catalog.abort();
        probe.abort();
        Ok(served?)
    }

    /// Keeps this process's connectors current in the background; abort the task
    /// when the role stops.
    fn follow_connectors(&self) -> JoinHandle<()> {
        let catalog = self.catalog.clone();
        let every = Duration::from_millis(self.settings.connectors.reload_ms.max(100));
        tokio::spawn(async move { catalog.run(every, std::future::pending()).await })
    }

    /// Runs sync workers until `shutdown` resolves; in-flight jobs finish or are
    /// handed back to the queue.
    pub async fn run_workers(
        &self,
        concurrency: usize,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let monitor = self.ctx.queue.monitor(self.ctx.clone(), concurrency);
        let catalog = self.follow_connectors();
        // Workers call institutions: the fleet's view counts their breakers.
        let process = crate::sync::breakers::process_name();
        let every = Duration::from_millis(self.settings.resilience.fleet_report_ms.max(100));
        let reporting = tokio::spawn(crate::sync::breakers::run(
            self.ctx.clone(),
            process.clone(),
            every,
        ));
        let ran = monitor
            .run_with_signal(async move {
                shutdown.await;
                Ok(())
            })
            .await
            .map_err(|e| anyhow::anyhow!("workers: {e}"));
        catalog.abort();
        reporting.abort();
        if let Err(e) = self.ctx.store.forget_breakers(&process).await {
            tracing::warn!(error = %e, "Could not withdraw this process's breakers from the fleet's view.");
        }
        ran
    }

    /// Runs the webhook delivery loop until `shutdown` resolves.
    pub async fn run_webhooks(&self, shutdown: impl Future<Output = ()>) {
        crate::webhooks::outbound::run(self.webhooks.clone(), shutdown).await;
    }

    /// Runs the scheduler until `shutdown` resolves.
    pub async fn run_scheduler(&self, shutdown: impl Future<Output = ()>) {
        let every = Duration::from_secs(self.settings.sync.scheduler_tick_secs.max(1));
        let catalog = self.follow_connectors();
        crate::sync::scheduler::run(self.ctx.clone(), every, shutdown).await;
        catalog.abort();
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}
