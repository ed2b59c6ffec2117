//! Wiring: builds one process's finsync from settings (database, vault, connectors,
//! cache, queue, and in embedded mode the sandbox institutions). What the process
//! then runs is [`super::roles`]'s business.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use secrecy::ExposeSecret;
use tokio::net::TcpListener;

use crate::api::{self, ApiState, KeyCache, KeyLimiter};
use crate::app::config::Settings;
use crate::cache::{Cache, CacheConfig};
use crate::catalog::Catalog;
use crate::connectors::{Engine, Registry};
use crate::fx::{Fx, Provider};
use crate::resilience::Resilience;
use crate::store::Store;
use crate::sync::scheduler::Retention;
use crate::sync::{Env, Environment, Queue};
use crate::tokens::{Linker, TokenService};
use crate::vault::Vault;
use crate::webhooks::outbound::{Deliverer, DeliveryPolicy};
use finsync_sandbox::{self as sandbox, Sandbox};

/// One process's finsync: every shared part, built once.
pub struct App {
    pub ctx: Env,
    /// The connectors in service; follows the directory and the database.
    pub catalog: Catalog,
    pub linker: Linker,
    /// Sends queued webhook deliveries; its loop runs where the workers run.
    pub webhooks: Deliverer,
    pub settings: Arc<Settings>,
    /// The in-process sandbox (embedded mode); kept to keep it running.
    pub sandbox: Option<Sandbox>,
    /// This process's Prometheus recorder.
    pub metrics: metrics_exporter_prometheus::PrometheusHandle,
}

impl App {
    /// Builds the app. `settings.server.public_url` is where this deployment's API
    /// is reachable (institutions redirect users to `<public_url>/oauth/callback`).
    pub async fn build(mut settings: Settings) -> anyhow::Result<Self> {
        let public_url = settings.server.public_url.clone();
        // Configuration problems first: a production process without a vault key
        // must refuse to start before it touches anything.
        let vault = Arc::new(Vault::from_settings(&settings.vault)?);
        let sandbox = if settings.sandbox.in_process {
            let listener = TcpListener::bind("127.0.0.1:0")
                .await
                .context("binding the in-process sandbox")?;
            let sandbox = sandbox::spawn(settings.sandbox.config(), listener)
                .await
                .context("starting the in-process sandbox")?;
            // The sandbox's Meridian posts its webhooks to this process's API.
            let inbox = public_url.join("webhooks/meridian")?;
            sandbox.set_webhook_url(sandbox::Institution::Meridian, Some(inbox.to_string()))?;
            for id in &settings.sandbox.institutions {
                let base = match id.parse::<sandbox::Institution>() {
                    Ok(institution) => sandbox.api_base(institution),
                    Err(_) => format!("{}/{id}", sandbox.base_url()),
                };
                settings
                    .connectors
                    .base_urls
                    .entry(id.clone())
                    .or_insert(base);
            }
            Some(sandbox)
        } else {
            None
        };

        let store = Store::connect_with(
            &settings.database.url,
            settings.database.max_connections,
            Duration::from_millis(settings.database.acquire_timeout_ms),
        )
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
        catalog.reload().await.context("loading the connectors")?;
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
            link_base: public_url.join("link/")?,
            // Checked to be at most a day when the settings were read.
            session_lifetime: chrono::Duration::seconds(
                i64::try_from(settings.tokens.link_session_secs).unwrap_or(86_400),
            ),
            refresh_at_fraction: settings.tokens.refresh_at_fraction,
        };
        // Secrets that connectors' headers name are read where client secrets are.
        let engine = Engine::with_resilience(http.clone(), resilience).with_secrets({
            let registry = registry.clone();
            Arc::new(move |connector: &crate::connectors::Connector, env: &str| {
                registry.secret(connector, env).ok()
            })
        });
        let ctx = Arc::new(Environment {
            store,
            cache,
            registry,
            engine,
            tokens,
            queue,
            interval: chrono::Duration::seconds(
                i64::try_from(settings.sync.interval_secs).unwrap_or(i64::MAX),
            ),
            recent_transactions: settings.sync.recent_transactions,
            poison_after: settings.sync.poison_after.max(1),
            retention: retention(&settings.retention),
            deep_interval: chrono::Duration::days(i64::from(settings.sync.deep_sync_interval_days)),
            stale_pending_days: settings.sync.stale_pending_days,
            fx: Fx::new(
                Provider::Ecb {
                    url: settings.fx.url.clone().unwrap_or_else(|| {
                        sandbox
                            .as_ref()
                            .map_or_else(|| crate::fx::ecb::DEFAULT_URL.to_owned(), Sandbox::fx_url)
                    }),
                },
                http.clone(),
                Duration::from_secs(settings.fx.refresh_secs),
            ),
        });
        Ok(Self {
            ctx,
            catalog,
            linker,
            webhooks,
            settings: Arc::new(settings),
            sandbox,
            metrics: crate::app::telemetry::metrics(),
        })
    }

    pub fn router(&self) -> axum::Router {
        let token = self.settings.server.admin_token.expose_secret();
        let metrics_token = self.settings.server.metrics_token.expose_secret();
        api::router(ApiState::new(api::Shared {
            metrics_token: (!metrics_token.is_empty())
                .then(|| Arc::new(self.settings.server.metrics_token.clone())),
            env: self.ctx.clone(),
            catalog: self.catalog.clone(),
            linker: self.linker.clone(),
            admin_token: (!token.is_empty())
                .then(|| Arc::new(self.settings.server.admin_token.clone())),
            consent_warning_days: self.settings.tokens.consent_warning_days,
            breaker_window: chrono::Duration::milliseconds(
                i64::try_from(self.settings.resilience.fleet_report_ms.max(100))
                    .unwrap_or(i64::MAX),
            ) * crate::sync::breakers::FRESH_INTERVALS,
            metrics: self.metrics.clone(),
            limiter: KeyLimiter::new(
                NonZeroU32::new(self.settings.server.rate_limit_per_second)
                    .unwrap_or(NonZeroU32::MIN),
                NonZeroU32::new(self.settings.server.rate_limit_burst).unwrap_or(NonZeroU32::MIN),
            ),
            allow_private_webhooks: self.settings.webhooks.allow_private_targets,
            keys: KeyCache::new(
                Duration::from_secs(self.settings.server.api_key_cache_secs),
                Duration::from_secs(self.settings.server.api_key_outage_grace_secs),
            ),
            sync_request_interval: Duration::from_secs(
                self.settings.server.sync_request_interval_secs,
            ),
            inbound_webhook_max_bytes: self.settings.institution_webhooks.max_body_bytes,
            inbound_webhook_window: Duration::from_millis(
                self.settings.institution_webhooks.coalesce_ms,
            ),
        }))
    }
}

/// `[retention]` as the scheduler's purge takes it.
fn retention(settings: &crate::app::config::RetentionSettings) -> Retention {
    let days = |d: u32| chrono::Duration::days(i64::from(d));
    Retention {
        runs: days(settings.runs_days),
        deliveries: days(settings.deliveries_days),
        quarantine: days(settings.quarantine_days),
        link_sessions: days(settings.link_sessions_days),
        institution_events: days(settings.institution_events_days),
        audit: days(settings.audit_days),
        audit_floor: days(settings.audit_min_days),
    }
}
