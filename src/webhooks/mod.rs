//! Webhooks both ways.
//!
//! - [`inbound`]: events institutions send us (`POST /webhooks/{institution}`),
//!   verified by the connector's `[webhooks]` rules, stored once and turned into
//!   syncs. It sits above `sync`: it queues sync jobs.
//! - [`outbound`]: events we send tenants' endpoints (`sync.completed`,
//!   `connection.reauth_required`, …), signed, retried and logged. It sits below
//!   `sync`: the pipeline announces events through it.

pub mod inbound;
pub mod outbound;
