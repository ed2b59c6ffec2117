//! finsync keeps an up-to-date, normalized copy of people's accounts, holdings and
//! transactions at many financial institutions, and serves it to advisory apps.
//!
//! The crate is laid out by responsibility, in layers; a module uses only the
//! layers above it in this list (`tests/it/layout.rs` holds the code to it):
//!
//! - [`domain`]: the canonical model (money, accounts, securities, holdings,
//!   transactions, connection status). Uses nothing of ours.
//! - [`fingerprint`]: SHA-256 fingerprints and MACs; [`http`]: the one outbound
//!   HTTP client; [`tracecontext`]: W3C trace context carried across processes.
//! - [`vault`]: tokens and secrets sealed at rest; [`store`]: SeaORM entities and
//!   repositories on SQLite or PostgreSQL; [`cache`]: moka in front of Redis, with
//!   fallback; [`resilience`]: per-institution rate budgets (fleet-wide through
//!   Redis), pauses an institution asked for, concurrency caps and circuit breakers.
//! - [`connectors`]: connector files, their validation, the registry and the generic
//!   engine that fetches and maps an institution's data, redacting what does not map.
//! - [`catalog`]: which version of each connector is in service, following the
//!   connectors directory and the admin API across the fleet; [`directory`]: the
//!   institutions a tenant may offer, and their health as the fleet sees it;
//!   [`fx`]: exchange rates for reporting currencies, from a provider (the ECB's by
//!   default), stored with their date and source;
//!   [`status`]: the operators' view of the fleet, per institution.
//! - [`tokens`]: OAuth2 (linking, code exchange, refresh, revocation) and
//!   disconnecting.
//! - [`portfolio`]: the read model advisory apps receive, built from the store and
//!   kept in the cache.
//! - [`webhooks`]: `outbound`, events sent to tenants (below `sync`, which announces
//!   them), and `inbound`, institutions' events turned into syncs (above it).
//! - [`sync`]: the jobs, the queue they run on, the pipeline, the scheduler,
//!   on-demand requests, the replay of quarantined records and `connectors check`.
//! - [`api`]: the HTTP API, handlers only (read API, admin API, OAuth callback,
//!   webhooks, health).
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
pub mod directory;
pub mod domain;
pub mod fingerprint;
pub mod fx;
pub mod http;
pub mod portfolio;
pub mod resilience;
pub mod status;
pub mod store;
pub mod sync;
pub mod tokens;
pub mod tracecontext;
pub mod vault;
pub mod webhooks;
