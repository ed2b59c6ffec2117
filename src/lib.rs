//! finsync keeps an up-to-date, normalized copy of people's accounts, holdings and
//! transactions at many financial institutions, and serves it to advisory apps.
//!
//! The crate is laid out by responsibility; dependencies point inward, towards
//! `domain`:
//!
//! - [`domain`]: the canonical model (money, accounts, securities, holdings,
//!   transactions, connection status). Depends on nothing of ours.
//! - [`config`]: layered settings (`config/base.toml`, `config/<env>.toml`,
//!   `FINSYNC__…` variables).
//! - [`telemetry`]: logging set-up; [`http`]: the one outbound HTTP client;
//!   [`fingerprint`]: SHA-256 fingerprints.
//! - [`store`]: SeaORM entities and repositories on SQLite or PostgreSQL.
//! - [`cache`]: moka in front of Redis, behind one interface, with fallback.
//! - [`resilience`]: per-institution rate budgets (fleet-wide through Redis), pauses
//!   an institution asked for, concurrency caps and circuit breakers.
//! - [`connectors`]: connector files, their validation, the registry and the generic
//!   engine that fetches and maps an institution's data, redacting what does not map.
//! - [`check`]: `finsync connectors check`, a connector proved against its live
//!   institution.
//! - [`catalog`]: which version of each connector is in service, following the
//!   connectors directory and the admin API across the fleet.
//! - [`tokens`]: the vault and OAuth2 (linking, code exchange, refresh).
//! - [`sync`]: the sync job, the queue it runs on, the pipeline, the scheduler and
//!   the replay of quarantined records.
//! - [`webhooks`]: outgoing webhooks to tenants: events, signatures, and the
//!   delivery loop that sends, retries and logs them.
//! - [`portfolio`]: the read model advisory apps receive, built from the store and
//!   kept in the cache.
//! - [`api`]: the HTTP API (read API, admin API, OAuth callback, health).
//! - [`sandbox`]: the simulated institutions, a product feature of their own.
//! - [`startup`]: wires the pieces into the processes `main.rs` runs; [`demo`] and
//!   [`render`] are the demo and the tables it prints; [`bench`] measures the API
//!   and syncs at fleet scale.

pub mod api;
pub mod bench;
pub mod cache;
pub mod catalog;
pub mod check;
pub mod config;
pub mod connectors;
pub mod demo;
pub mod domain;
pub mod fingerprint;
pub mod http;
pub mod portfolio;
pub mod render;
pub mod resilience;
pub mod sandbox;
pub mod startup;
pub mod store;
pub mod sync;
pub mod telemetry;
pub mod tokens;
pub mod webhooks;
