//! finsync keeps an up-to-date, normalized copy of people's accounts, holdings and
//! transactions at many financial institutions, and serves it to advisory apps.
//!
//! The crate is laid out by responsibility; dependencies point down this list, and
//! `domain` uses nothing of ours:
//!
//! - [`domain`]: the canonical model (money, accounts, securities, holdings,
//!   transactions, connection status).
//! - [`fingerprint`]: SHA-256 fingerprints and MACs; [`http`]: the one outbound
//!   HTTP client.
//! - [`store`]: SeaORM entities and repositories on SQLite or PostgreSQL.
//! - [`cache`]: moka in front of Redis, behind one interface, with fallback.
//! - [`resilience`]: per-institution rate budgets (fleet-wide through Redis), pauses
//!   an institution asked for, concurrency caps and circuit breakers.
//! - [`connectors`]: connector files, their validation, the registry and the generic
//!   engine that fetches and maps an institution's data, redacting what does not map.
//! - [`catalog`]: which version of each connector is in service, following the
//!   connectors directory and the admin API across the fleet.
//! - [`tokens`]: the vault and OAuth2 (linking, code exchange, refresh).
//! - [`sync`]: the sync job, the queue it runs on, the pipeline, the scheduler,
//!   the replay of quarantined records and `connectors check`.
//! - [`webhooks`]: outgoing webhooks to tenants: events, signatures, and the
//!   delivery loop that sends, retries and logs them.
//! - [`portfolio`]: the read model advisory apps receive, built from the store and
//!   kept in the cache.
//! - [`api`]: the HTTP API (read API, admin API, OAuth callback, health).
//! - [`app`]: settings, telemetry, the parts one process shares, and the roles
//!   (which loops each process runs).
//! - [`cli`]: the `finsync` command line, one module per subcommand.
//!
//! The sandbox institutions are a crate of their own (`finsync-sandbox`, under
//! `crates/sandbox`) that depends on nothing of finsync's; the benchmarks are the
//! `finsync-bench` binary under `crates/bench`.

pub mod api;
pub mod app;
pub mod cache;
pub mod catalog;
pub mod cli;
pub mod connectors;
pub mod domain;
pub mod fingerprint;
pub mod http;
pub mod portfolio;
pub mod resilience;
pub mod store;
pub mod sync;
pub mod tokens;
pub mod webhooks;
