//! Integration tests, compiled into one binary. They run against real PostgreSQL
//! and Redis (`FINSYNC_TEST_DATABASE_URL`, `FINSYNC_TEST_REDIS_URL`, defaulting to
//! the local servers) and against SQLite files; each test gets its own database and
//! Redis key prefix, and the sandbox institutions on `127.0.0.1:0`.

mod annotations;
mod api;
mod audit;
mod browser;
mod cache;
mod catalog;
mod connectors;
mod consents;
mod contract;
mod docs;
mod embedded;
mod erasure;
mod faults;
mod fleet;
mod institution_webhooks;
mod institutions;
mod interop;
mod layout;
mod link_sessions;
mod linking;
mod money;
mod observability;
mod outage;
mod quality;
mod quarantine;
mod records;
mod reporting;
mod resilience;
mod scheduler;
mod securities;
mod standards;
mod status_page;
mod support;
mod tokens;
mod traces;
mod webhooks;
mod workers;
