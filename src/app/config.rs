//! Settings, layered: the built-in `config/base.toml`, then `config/<FINSYNC_ENV>.toml`
//! from the configuration directory, then `FINSYNC__SECTION__KEY` environment
//! variables. Secrets become `SecretString` the moment they are read.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use config::{Config, Environment, File, FileFormat};
use secrecy::SecretString;
use serde::Deserialize;

pub use crate::vault::VaultSettings;
use crate::webhooks::outbound::DeliveryPolicy;

/// The defaults compiled into the binary, so an installed `finsync` runs without a
/// checkout; the file on disk is the same text.
const BASE: &str = include_str!("../../config/base.toml");

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The environment these settings were loaded for (`FINSYNC_ENV`), if any.
    #[serde(default)]
    pub environment: Option<String>,
    pub server: ServerSettings,
    pub database: DatabaseSettings,
    pub redis: RedisSettings,
    pub cache: CacheSettings,
    pub connectors: ConnectorSettings,
    pub sandbox: SandboxSettings,
    pub vault: VaultSettings,
    pub sync: SyncSettings,
    pub resilience: ResilienceSettings,
    pub tokens: TokenSettings,
    pub webhooks: WebhookSettings,
    pub institution_webhooks: InstitutionWebhookSettings,
    pub retention: RetentionSettings,
    pub fx: FxSettings,
    pub metrics: MetricsSettings,
    pub tracing: TraceSettings,
    pub log: LogSettings,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenSettings {
    /// Access tokens are refreshed in the background once this fraction of their
    /// lifetime has passed, so a sync almost never waits for a refresh.
    pub refresh_at_fraction: f64,
    /// Consent expiring within this many days is flagged to admins.
    pub consent_warning_days: u32,
    /// How long an app's link session lasts, from creation to the user's return.
    pub link_session_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSettings {
    /// Attempts per delivery, the first included; after the last failed one the
    /// delivery is marked `failed`.
    pub max_attempts: u32,
    /// Each POST gives up after this long; a slow receiver counts as a failure.
    pub timeout_ms: u64,
    /// How often an idle delivery loop looks for due deliveries.
    pub poll_interval_ms: u64,
    /// Wait before the second attempt; it doubles with each further attempt, plus
    /// up to as much again in random jitter so that retries of many deliveries do
    /// not arrive together.
    pub backoff_base_ms: u64,
    /// Ceiling of the doubling (before jitter).
    pub backoff_max_ms: u64,
    /// Deliveries one loop claims and sends at once.
    pub batch_size: u64,
    /// Allow endpoints on loopback and private addresses (development and tests
    /// only: otherwise a tenant could make workers call the internal network).
    pub allow_private_targets: bool,
}

/// Webhooks institutions send to `POST /webhooks/<institution>`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstitutionWebhookSettings {
    /// Events for one connection within a window this long share one sync, which
    /// starts when the window ends.
    pub coalesce_ms: u64,
    /// Bodies larger than this are refused unread (413).
    pub max_body_bytes: usize,
}

/// The longest any history may be kept, in days.
pub const MAX_RETENTION_DAYS: u32 = 36_500;

/// How long each class of history is kept, in days; the scheduler deletes what is
/// older once an hour. What is still under way (a running sync, a pending
/// delivery, an open quarantine entry, a live link session) is never deleted.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionSettings {
    /// Finished sync runs, sync requests and finished jobs.
    pub runs_days: u32,
    /// Settled outgoing webhook deliveries (their payloads name users).
    pub deliveries_days: u32,
    /// Resolved quarantine entries.
    pub quarantine_days: u32,
    /// Link sessions, from their expiry.
    pub link_sessions_days: u32,
    /// Institutions' webhook events, from their arrival.
    pub institution_events_days: u32,
    /// Audit trail entries.
    pub audit_days: u32,
    /// The audit trail's floor: `audit_days` below it is refused at start, and no
    /// entry younger than this is ever deleted.
    pub audit_min_days: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSettings {
    /// Where `worker` and `scheduler` processes serve Prometheus metrics (empty:
    /// nowhere). `serve` always serves them at `/metrics` on its own address.
    pub bind: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TraceSettings {
    /// Base URL of an OTLP/HTTP collector; spans go to `<url>/v1/traces`. Empty:
    /// spans are exported only if the standard `OTEL_EXPORTER_OTLP_ENDPOINT` (or
    /// `…_TRACES_ENDPOINT`) variable is set. Trace context is propagated either way.
    pub otlp_endpoint: String,
    /// The share of traces begun here that are exported, 0 to 1; a trace begun by
    /// a caller follows the caller's choice.
    pub sample_ratio: f64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    pub bind: SocketAddr,
    /// The address institutions redirect users back to; the OAuth callback is
    /// `<public_url>/oauth/callback`. Parsed here, once: a value that is not an
    /// absolute URL stops the process at start.
    pub public_url: url::Url,
    /// A break-glass bearer for `/admin/*` and the status page, acting as an
    /// `admin` (audited as `break-glass`); empty: only named admin credentials.
    pub admin_token: SecretString,
    /// Bearer token `/metrics` on the API asks for; empty: open (for a scraper on a
    /// private network).
    pub metrics_token: SecretString,
    /// Requests per second each API key may make (per API process), and the burst
    /// it may spend at once.
    pub rate_limit_per_second: u32,
    pub rate_limit_burst: u32,
    /// How long an API process trusts a key it authenticated; a key revoked through
    /// another process stops working there within this time.
    pub api_key_cache_secs: u64,
    /// While the database is unreachable, keys authenticated within this many
    /// seconds (by any API process, through Redis) are still accepted, so cached
    /// answers keep being served. A key revoked in that window before the outage
    /// may be accepted until the database is back.
    pub api_key_outage_grace_secs: u64,
    /// A user's on-demand syncs: at most one finished request per this many seconds.
    pub sync_request_interval_secs: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    /// `sqlite://…` for the embedded mode, `postgres://…` for a fleet.
    pub url: SecretString,
    pub max_connections: u32,
    /// PostgreSQL: how long a call waits for a pooled connection (or a new one)
    /// before it fails. Short, so an outage answers fast; see README.
    pub acquire_timeout_ms: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSettings {
    /// Empty: no Redis; the in-process cache serves alone.
    pub url: SecretString,
    /// Every Redis call on a request path gives up after this long and falls back.
    pub timeout_ms: u64,
    /// Prefix of every key finsync writes, so several deployments can share a server.
    pub key_prefix: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheSettings {
    pub l1_capacity: u64,
    pub l1_ttl_secs: u64,
    pub l2_ttl_secs: u64,
    /// After a failed Redis call, Redis is skipped for this long.
    pub redis_breaker_ms: u64,
    /// While Redis is unreachable, a value is kept in this process this long at most.
    pub degraded_l1_ttl_ms: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectorSettings {
    /// Directory of connector files; relative paths are taken from the directory
    /// that holds the configuration directory.
    pub dir: PathBuf,
    /// Per-connector base URL overrides (e.g. a sandbox on another port).
    #[serde(default)]
    pub base_urls: BTreeMap<String, String>,
    /// Values for the secret references connector files make, used when the named
    /// environment variable is not set. Only the sandbox's public credentials belong
    /// in a committed file.
    #[serde(default)]
    pub secrets: BTreeMap<String, SecretString>,
    /// How often each process looks for changed connector files and newly stored
    /// versions, in milliseconds.
    pub reload_ms: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxSettings {
    /// Run the sandbox institutions inside this process (embedded mode and demo).
    pub in_process: bool,
    /// Connectors served by the sandbox, each at `<sandbox>/<id>`; their base URLs
    /// point at the in-process sandbox unless `connectors.base_urls` says otherwise.
    pub institutions: Vec<String>,
    pub seed: u64,
    pub token_ttl_secs: u64,
    /// The data's "today"; none: two days before the process started. Processes
    /// that must serve the same data (a fleet's sandbox and whoever checks it) set
    /// the same date.
    #[serde(default)]
    pub anchor_date: Option<chrono::NaiveDate>,
}

impl SandboxSettings {
    /// The sandbox these settings describe.
    pub fn config(&self) -> finsync_sandbox::SandboxConfig {
        let defaults = finsync_sandbox::SandboxConfig::default();
        finsync_sandbox::SandboxConfig {
            seed: self.seed,
            access_token_ttl: std::time::Duration::from_secs(self.token_ttl_secs),
            anchor_date: self.anchor_date.unwrap_or(defaults.anchor_date),
            ..defaults
        }
    }
}

/// `[fx]`: where exchange rates for reporting currencies come from.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FxSettings {
    /// The kind of provider: `ecb` (the European Central Bank's euro reference
    /// rates XML), the only one so far.
    pub provider: String,
    /// Where the provider's document is; none: the in-process sandbox's recorded
    /// copy in embedded mode, the ECB's own address otherwise.
    #[serde(default)]
    pub url: Option<String>,
    /// How often the scheduler fetches the rates (the ECB publishes once per
    /// working day, around 16:00 CET).
    pub refresh_secs: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncSettings {
    /// How often a connection is synced by default.
    pub interval_secs: u64,
    pub worker_concurrency: usize,
    /// How often the scheduler looks for due connections.
    pub scheduler_tick_secs: u64,
    /// Recent transactions shown in a portfolio.
    pub recent_transactions: u64,
    /// A sync job whose runs stopped their worker (killed, crashed) this many times
    /// is parked as failed instead of being delivered again.
    pub poison_after: u32,
    /// How often a connection's sync re-reads the whole history, unless its connector says.
    pub deep_sync_interval_days: u32,
    /// A transaction still pending after this many days is a data-quality finding.
    pub stale_pending_days: u32,
}

/// Every institution's circuit breaker (per process).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResilienceSettings {
    /// Consecutive transient failures (5xx, timeouts) that open the breaker.
    pub breaker_failures: u32,
    /// How long an open breaker fails requests fast before it lets one probe through.
    pub breaker_cooldown_ms: u64,
    /// Each failed probe doubles the cool-down, up to this.
    pub breaker_max_cooldown_ms: u64,
    /// How often each worker reports its breakers to the fleet's view; a report
    /// older than three of these no longer counts.
    pub fleet_report_ms: u64,
}

impl ResilienceSettings {
    pub fn breaker_policy(&self) -> crate::resilience::BreakerPolicy {
        crate::resilience::BreakerPolicy {
            failures: self.breaker_failures.max(1),
            cooldown: Duration::from_millis(self.breaker_cooldown_ms),
            max_cooldown: Duration::from_millis(
                self.breaker_max_cooldown_ms.max(self.breaker_cooldown_ms),
            ),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    /// `pretty` for people, `json` for machines.
    pub format: String,
    /// A `tracing` filter, e.g. `info,finsync=debug`.
    pub filter: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("configuration: {0}")]
    Load(#[from] config::ConfigError),
    #[error("configuration: `{key}` {problem}")]
    Invalid { key: &'static str, problem: String },
}

impl Settings {
    /// Loads settings for `FINSYNC_ENV`, or `default_env` when it is unset (none:
    /// the embedded default).
    pub fn load(default_env: Option<&str>) -> Result<Self, SettingsError> {
        let environment = std::env::var("FINSYNC_ENV").ok().filter(|e| !e.is_empty());
        Self::load_from(&config_dir(), environment.as_deref().or(default_env))
    }

    pub fn load_from(dir: &Path, environment: Option<&str>) -> Result<Self, SettingsError> {
        Self::load_layers(dir, environment, true)
    }

    /// The layers, with or without the process's `FINSYNC__…` variables (tests of
    /// the files themselves must not depend on the shell they run in).
    fn load_layers(
        dir: &Path,
        environment: Option<&str>,
        variables: bool,
    ) -> Result<Self, SettingsError> {
        let mut builder = Config::builder().add_source(File::from_str(BASE, FileFormat::Toml));
        if let Some(env) = environment {
            builder = builder
                .add_source(File::from(dir.join(format!("{env}.toml"))).required(true))
                .set_override("environment", env)?;
        }
        if variables {
            builder = builder.add_source(
                Environment::with_prefix("FINSYNC")
                    .prefix_separator("__")
                    .separator("__"),
            );
        }
        let mut settings: Settings = builder.build()?.try_deserialize()?;
        if settings.connectors.dir.is_relative() {
            let root = dir.parent().unwrap_or(dir);
            settings.connectors.dir = root.join(&settings.connectors.dir);
        }
        settings.check()?;
        Ok(settings)
    }

    fn check(&self) -> Result<(), SettingsError> {
        use secrecy::ExposeSecret;
        let url = self.database.url.expose_secret();
        if !(url.starts_with("sqlite:")
            || url.starts_with("postgres:")
            || url.starts_with("postgresql:"))
        {
            return Err(SettingsError::Invalid {
                key: "database.url",
                problem: "must start with sqlite: or postgres:".into(),
            });
        }
        if !(self.tokens.refresh_at_fraction > 0.0 && self.tokens.refresh_at_fraction < 1.0) {
            return Err(SettingsError::Invalid {
                key: "tokens.refresh_at_fraction",
                problem: "must be between 0 and 1 (e.g. 0.75)".into(),
            });
        }
        if !(60..=86_400).contains(&self.tokens.link_session_secs) {
            return Err(SettingsError::Invalid {
                key: "tokens.link_session_secs",
                problem: "must be 60 (a minute) to 86400 (a day)".into(),
            });
        }
        let webhooks = &self.webhooks;
        for (key, value) in [
            ("webhooks.max_attempts", u64::from(webhooks.max_attempts)),
            ("webhooks.timeout_ms", webhooks.timeout_ms),
            ("webhooks.poll_interval_ms", webhooks.poll_interval_ms),
            ("webhooks.backoff_base_ms", webhooks.backoff_base_ms),
            ("webhooks.batch_size", webhooks.batch_size),
        ] {
            if value == 0 {
                return Err(SettingsError::Invalid {
                    key,
                    problem: "must be at least 1".into(),
                });
            }
        }
        if webhooks.backoff_max_ms < webhooks.backoff_base_ms {
            return Err(SettingsError::Invalid {
                key: "webhooks.backoff_max_ms",
                problem: "must not be below webhooks.backoff_base_ms".into(),
            });
        }
        let retention = &self.retention;
        for (key, days) in [
            // Runs are also how a job that keeps stopping its worker is recognised,
            // and how a sync request reports its outcome: they must outlive both.
            ("retention.runs_days", retention.runs_days),
            ("retention.deliveries_days", retention.deliveries_days),
            ("retention.quarantine_days", retention.quarantine_days),
            ("retention.link_sessions_days", retention.link_sessions_days),
            (
                "retention.institution_events_days",
                retention.institution_events_days,
            ),
            ("retention.audit_days", retention.audit_days),
            ("retention.audit_min_days", retention.audit_min_days),
        ] {
            // At most a century: time arithmetic stays in range, and it means "keep it".
            if !(1..=MAX_RETENTION_DAYS).contains(&days) {
                return Err(SettingsError::Invalid {
                    key,
                    problem: format!("must be 1 to {MAX_RETENTION_DAYS} (a century)"),
                });
            }
        }
        if retention.audit_days < retention.audit_min_days {
            return Err(SettingsError::Invalid {
                key: "retention.audit_days",
                problem: format!(
                    "must be at least retention.audit_min_days ({})",
                    retention.audit_min_days
                ),
            });
        }
        if self.fx.provider != "ecb" {
            return Err(SettingsError::Invalid {
                key: "fx.provider",
                problem: format!("`{}` is not a provider (known: ecb)", self.fx.provider),
            });
        }
        if !(60..=7 * 86_400).contains(&self.fx.refresh_secs) {
            return Err(SettingsError::Invalid {
                key: "fx.refresh_secs",
                problem: "must be 60 (a minute) to 604800 (a week)".into(),
            });
        }
        if !crate::connectors::DEEP_SYNC_INTERVAL_DAYS.contains(&self.sync.deep_sync_interval_days)
        {
            return Err(SettingsError::Invalid {
                key: "sync.deep_sync_interval_days",
                problem: "must be 1 to 365".into(),
            });
        }
        if !(0.0..=1.0).contains(&self.tracing.sample_ratio) {
            return Err(SettingsError::Invalid {
                key: "tracing.sample_ratio",
                problem: "must be 0 to 1 (e.g. 0.1 exports one trace in ten)".into(),
            });
        }
        let endpoint = &self.tracing.otlp_endpoint;
        if !endpoint.is_empty()
            && !url::Url::parse(endpoint).is_ok_and(|u| matches!(u.scheme(), "http" | "https"))
        {
            return Err(SettingsError::Invalid {
                key: "tracing.otlp_endpoint",
                problem: "must be an http(s) URL, e.g. http://collector:4318".into(),
            });
        }
        if !matches!(self.log.format.as_str(), "pretty" | "json") {
            return Err(SettingsError::Invalid {
                key: "log.format",
                problem: "must be `pretty` or `json`".into(),
            });
        }
        Ok(())
    }

    pub fn redis_url(&self) -> Option<&str> {
        use secrecy::ExposeSecret;
        Some(self.redis.url.expose_secret()).filter(|u| !u.is_empty())
    }

    pub fn redis_timeout(&self) -> Duration {
        Duration::from_millis(self.redis.timeout_ms)
    }

    pub fn is_postgres(&self) -> bool {
        use secrecy::ExposeSecret;
        self.database.url.expose_secret().starts_with("postgres")
    }
}

/// `FINSYNC_CONFIG_DIR`, else the `config/` directory of the source tree this binary
/// was built from: never the current directory.
pub fn config_dir() -> PathBuf {
    std::env::var_os("FINSYNC_CONFIG_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("config"))
}

/// `[webhooks]` as the delivery loop uses it.
impl From<&WebhookSettings> for DeliveryPolicy {
    fn from(s: &WebhookSettings) -> Self {
        Self {
            max_attempts: s.max_attempts,
            timeout: Duration::from_millis(s.timeout_ms),
            poll_interval: Duration::from_millis(s.poll_interval_ms),
            backoff_base: Duration::from_millis(s.backoff_base_ms),
            backoff_max: Duration::from_millis(s.backoff_max_ms),
            batch_size: s.batch_size,
            allow_private_targets: s.allow_private_targets,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_needs_no_servers() {
        let settings = Settings::load_layers(&config_dir(), None, false).unwrap();
        assert!(!settings.is_postgres());
        assert!(settings.redis_url().is_none());
        assert!(settings.sandbox.in_process);
        assert!(settings.connectors.dir.ends_with("connectors"));
        assert!(settings.connectors.dir.is_absolute());
    }

    #[test]
    fn every_environment_file_loads() {
        for env in ["demo", "test", "production"] {
            let loaded = Settings::load_layers(&config_dir(), Some(env), false);
            assert!(loaded.is_ok(), "{env}: {:?}", loaded.err());
        }
    }

    #[test]
    fn production_takes_no_secret_from_the_configuration_files() {
        use secrecy::ExposeSecret;
        let embedded = Settings::load_layers(&config_dir(), None, false).unwrap();
        let production = Settings::load_layers(&config_dir(), Some("production"), false).unwrap();
        assert!(!embedded.connectors.secrets.is_empty());
        for name in embedded.connectors.secrets.keys() {
            let value = production
                .connectors
                .secrets
                .get(name)
                .map(|v| v.expose_secret().to_owned());
            assert_eq!(
                value.as_deref(),
                Some(""),
                "production.toml must blank `{name}` from base.toml"
            );
        }
    }

    #[test]
    fn history_kept_for_no_day_is_refused_with_the_key_named() {
        let mut settings = Settings::load_layers(&config_dir(), None, false).unwrap();
        assert!(settings.check().is_ok());
        settings.retention.runs_days = 0;
        let error = settings.check().unwrap_err().to_string();
        assert!(error.contains("retention.runs_days"), "{error}");
    }

    #[test]
    fn the_audit_trail_is_never_kept_less_than_its_floor() {
        let mut settings = Settings::load_layers(&config_dir(), None, false).unwrap();
        settings.retention.audit_days = settings.retention.audit_min_days - 1;
        let error = settings.check().unwrap_err().to_string();
        assert!(error.contains("retention.audit_days"), "{error}");
        assert!(error.contains("audit_min_days"), "{error}");
    }

    #[test]
    fn a_missing_environment_file_is_an_error_not_a_silent_default() {
        assert!(Settings::load_layers(&config_dir(), Some("nope"), false).is_err());
    }
}
