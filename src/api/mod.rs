//! The HTTP API: the versioned read API for advisory apps ([`read`], [`syncs`], and
//! users' tags and notes on [`transactions`]), the admin API ([`admin`], [`tenants`],
//! [`quarantine`]), tenants' webhooks ([`webhooks`]), webhooks institutions send
//! ([`institution_webhooks`]), its
//! contract ([`docs`]), the OAuth callback
//! institutions redirect to ([`callback`]) and health checks ([`health`]). Handlers read through the store and cache and
//! enqueue work through `sync`; they never call an institution themselves.

mod admin;
mod auth;
mod callback;
mod connectors;
mod docs;
mod error;
mod extract;
mod health;
mod institution_webhooks;
mod quarantine;
mod read;
mod syncs;
mod tenants;
mod transactions;
mod webhooks;

use std::sync::Arc;

use axum::Router;
use axum::http::HeaderName;
use axum::middleware;
use secrecy::SecretString;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

pub use auth::{KeyCache, KeyLimiter};
pub use docs::document;
pub use error::{ApiError, ErrorCode};

use crate::sync::Context;
use crate::tokens::Linker;

/// State shared by every handler.
#[derive(Clone)]
pub struct ApiState {
    pub sync: Context,
    /// Connectors in service, and publishing new versions.
    pub catalog: crate::catalog::Catalog,
    pub linker: Linker,
    /// Bearer token for `/admin/*`; `None` disables the admin API.
    pub admin_token: Option<Arc<SecretString>>,
    /// Consent ending within this many days is flagged.
    pub consent_warning_days: u32,
    /// Renders this process's Prometheus metrics.
    pub metrics: metrics_exporter_prometheus::PrometheusHandle,
    /// Per-API-key request budget.
    pub limiter: Arc<KeyLimiter>,
    /// Recently authenticated keys.
    pub keys: Arc<KeyCache>,
    /// Whether webhook endpoints may be private addresses.
    pub allow_private_webhooks: bool,
    /// A user's on-demand syncs: one finished request per this interval.
    pub sync_request_interval: std::time::Duration,
    /// Limits and coalescing of the webhooks institutions send.
    pub institution_webhooks: crate::config::InstitutionWebhookSettings,
}

pub(crate) const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

pub fn router(state: ApiState) -> Router {
    Router::new()
        .merge(read::routes())
        .merge(syncs::routes())
        .merge(transactions::routes())
        .merge(admin::routes())
        .merge(connectors::routes())
        .merge(quarantine::routes())
        .merge(tenants::routes())
        .merge(webhooks::routes())
        .merge(institution_webhooks::routes())
        .merge(docs::routes())
        .merge(callback::routes())
        .merge(health::routes())
        .fallback(error::not_found)
        .layer(middleware::from_fn(error::attach_request_id))
        // Logged without headers: they carry API keys.
        .layer(TraceLayer::new_for_http().make_span_with(|request: &axum::http::Request<_>| {
            let id = request.headers().get(&REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("-");
            tracing::info_span!("http", method = %request.method(), path = %request.uri().path(), request_id = %id)
        }))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .with_state(state)
}
