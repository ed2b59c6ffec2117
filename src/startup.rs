//! Wiring: builds a running finsync from settings — database, vault, connectors,
//! cache, queue, and in embedded mode the sandbox institutions — and starts the
//! roles (`serve`, `worker`, `scheduler`) `main.rs` asks for.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use secrecy::ExposeSecret;
use tokio::net::TcpListener;

use crate::api::{self, ApiState, KeyCache, KeyLimiter};
use crate::cache::{Cache, CacheConfig};
use crate::catalog::Catalog;
use crate::config::Settings;
use crate::connectors::{Engine, Registry};
use crate::resilience::Resilience;
use crate::sandbox::{self, Sandbox, SandboxConfig};
use crate::store::Store;
use crate::sync::{Context, Queue, SyncContext};
use crate::tokens::{Linker, TokenService, Vault};
use crate::webhooks::{Deliverer, DeliveryPolicy};

/// One process's finsync: every shared part, built once.
pub struct App {
    pub ctx: Context,
    /// The connectors in service; follows the directory and the database.
    pub catalog: Catalog,
    pub linker: Linker,
    /// Sends queued webhook deliveries; its loop runs where the workers run.
    pub webhooks: Deliverer,
    pub settings: Arc<Settings>,
    /// The in-process sandbox (embedded mode); kept to keep it running.
    pub sandbox: Option<Sandbox>,
    pub public_url: url::Url,
    /// This process's Prometheus recorder.
    pub metrics: metrics_exporter_prometheus::PrometheusHandle,
}

impl App {
    /// Builds the app. `public_url` is where this deployment's API is reachable
    /// (institutions redirect users to `<public_url>/oauth/callback`).
    pub async fn build(mut settings: Settings, public_url: url::Url) -> anyhow::Result<Self> {
        // Configuration problems first: a production process without a vault key
        // must refuse to start before it touches anything.
        let vault = Arc::new(Vault::from_settings(&settings.vault)?);
        let sandbox = if settings.sandbox.in_process {
            let listener = TcpListener::bind("127.0.0.1:0")
                .await
                .context("binding the in-process sandbox")?;
            let sandbox = sandbox::spawn(
                SandboxConfig {
                    seed: settings.sandbox.seed,
                    access_token_ttl: Duration::from_secs(settings.sandbox.token_ttl_secs),
                    ..SandboxConfig::default()
                },
                listener,
            )
            .await
            .context("starting the in-process sandbox")?;
            // The sandbox's Meridian posts its webhooks to this process's API.
            let inbox = public_url.join("webhooks/meridian")?;
            sandbox.set_webhook_url(sandbox::Institution::Meridian, Some(inbox.to_string()))?;
            for id in &settings.sandbox.institutions {
                settings
                    .connectors
                    .base_urls
                    .entry(id.clone())
                    .or_insert_with(|| format!("{}/{id}", sandbox.base_url()));
            }
            Some(sandbox)
        } else {
            None
        };

        let store = Store::connect(&settings.database.url, settings.database.max_connections)
            .await
            .context("connecting to the database")?;
        store.migrate().await.context("migrating the database")?;
        let registry = Arc::new(Registry::new(
            settings.connectors.base_urls.clone(),
            settings.connectors.secrets.clone(),
        ));
        let catalog = Catalog::new(
            store.clone(),
            registry.clone(),
            settings.connectors.dir.clone(),
        );
        catalog.sync().await.context("loading the connectors")?;
        let cache = Cache::new(CacheConfig {
            l1_capacity: settings.cache.l1_capacity,
            l1_ttl: Duration::from_secs(settings.cache.l1_ttl_secs),
            redis_url: settings.redis_url(),
            key_prefix: &settings.redis.key_prefix,
            redis_timeout: settings.redis_timeout(),
            l2_ttl: Duration::from_secs(settings.cache.l2_ttl_secs),
            breaker_cooldown: Duration::from_millis(settings.cache.redis_breaker_ms),
            degraded_l1_ttl: Duration::from_millis(settings.cache.degraded_l1_ttl_ms),
        })?;
        let queue = Queue::setup(&store).await?;
        let policy = settings.resilience.breaker_policy();
        let resilience = match settings.redis_url() {
            Some(url) => Resilience::shared(
                policy,
                url,
                &settings.redis.key_prefix,
                settings.redis_timeout(),
            )?,
            None => Resilience::local(policy),
        };
        let http = crate::http::client();
        let redirect_uri = public_url.join("oauth/callback")?;
        let tokens = TokenService {
            store: store.clone(),
            vault: vault.clone(),
            registry: registry.clone(),
            http: http.clone(),
            redirect_uri: redirect_uri.clone(),
            refresh_at_fraction: settings.tokens.refresh_at_fraction,
        };
        let webhooks = Deliverer {
            store: store.clone(),
            vault: vault.clone(),
            http: http.clone(),
            policy: DeliveryPolicy::from(&settings.webhooks),
        };
        let linker = Linker {
            store: store.clone(),
            vault,
            registry: registry.clone(),
            http: http.clone(),
            redirect_uri,
            refresh_at_fraction: settings.tokens.refresh_at_fraction,
        };
        let ctx = Arc::new(SyncContext {
            store,
            cache,
            registry,
            engine: Engine::with_resilience(http, resilience),
            tokens,
            queue,
            interval: chrono::Duration::seconds(
                i64::try_from(settings.sync.interval_secs).unwrap_or(i64::MAX),
            ),
            recent_transactions: settings.sync.recent_transactions,
            poison_after: settings.sync.poison_after.max(1),
            event_retention: chrono::Duration::days(i64::from(
                settings.institution_webhooks.retain_days,
            )),
            history_retention: chrono::Duration::days(i64::from(settings.sync.history_days)),
        });
        Ok(Self {
            ctx,
            catalog,
            linker,
            webhooks,
            settings: Arc::new(settings),
            sandbox,
            public_url,
            metrics: crate::telemetry::metrics(),
        })
    }

    pub fn router(&self) -> axum::Router {
        let token = self.settings.server.admin_token.expose_secret();
        api::router(ApiState {
            sync: self.ctx.clone(),
            catalog: self.catalog.clone(),
            linker: self.linker.clone(),
            admin_token: (!token.is_empty())
                .then(|| Arc::new(self.settings.server.admin_token.clone())),
            consent_warning_days: self.settings.tokens.consent_warning_days,
            metrics: self.metrics.clone(),
            limiter: KeyLimiter::new(
                NonZeroU32::new(self.settings.server.rate_limit_per_second)
                    .unwrap_or(NonZeroU32::MIN),
                NonZeroU32::new(self.settings.server.rate_limit_burst).unwrap_or(NonZeroU32::MIN),
            ),
            allow_private_webhooks: self.settings.webhooks.allow_private_targets,
            keys: KeyCache::new(Duration::from_secs(self.settings.server.api_key_cache_secs)),
            sync_request_interval: Duration::from_secs(
                self.settings.server.sync_request_interval_secs,
            ),
            institution_webhooks: self.settings.institution_webhooks.clone(),
        })
    }

    /// Serves the API on `listener` until `shutdown` resolves.
    pub async fn serve(
        &self,
        listener: TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        // Other processes' writes reach this process's L1 through Redis pub/sub.
        let invalidations = self.ctx.cache.listen_for_invalidations();
        let catalog = self.follow_connectors();
        let served = axum::serve(listener, self.router())
            .with_graceful_shutdown(shutdown)
            .await;
        if let Some(task) = invalidations {
            task.abort();
        }
        catalog.abort();
        Ok(served?)
    }

    /// Keeps this process's connectors current in the background; abort the task
    /// when the role stops.
    fn follow_connectors(&self) -> tokio::task::JoinHandle<()> {
        let catalog = self.catalog.clone();
        let every = Duration::from_millis(self.settings.connectors.reload_ms.max(100));
        tokio::spawn(async move { catalog.run(every, std::future::pending()).await })
    }

    /// Runs sync workers until `shutdown` resolves; in-flight jobs finish or are
    /// handed back to the queue.
    pub async fn run_workers(
        &self,
        concurrency: usize,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let monitor = self.ctx.queue.monitor(self.ctx.clone(), concurrency);
        let catalog = self.follow_connectors();
        let ran = monitor
            .run_with_signal(async move {
                shutdown.await;
                Ok(())
            })
            .await
            .map_err(|e| anyhow::anyhow!("workers: {e}"));
        catalog.abort();
        ran
    }

    /// Runs the webhook delivery loop until `shutdown` resolves.
    pub async fn run_webhooks(&self, shutdown: impl std::future::Future<Output = ()>) {
        crate::webhooks::run(self.webhooks.clone(), shutdown).await;
    }

    /// Runs the scheduler until `shutdown` resolves.
    pub async fn run_scheduler(&self, shutdown: impl std::future::Future<Output = ()>) {
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
