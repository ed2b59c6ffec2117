//! SeaORM entities, one per table. Plain data: no business rules live here.

pub mod account;
pub mod admin;
pub mod api_key;
pub mod audit_entry;
pub mod connection;
pub mod connector_version;
pub mod consent_event;
pub mod erasure;
pub mod holding;
pub mod idempotency_key;
pub mod institution;
pub mod institution_breaker;
pub mod institution_event;
pub mod instrument;
pub mod instrument_conflict;
pub mod link_session;
pub mod oauth_state;
pub mod quarantined_record;
pub mod security;
pub mod status_session;
pub mod sync_request;
pub mod sync_run;
pub mod tenant;
pub mod transaction;
pub mod webhook_delivery;
pub mod webhook_endpoint;
