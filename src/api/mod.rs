//! The HTTP API, handlers only: each parses its request, calls a use case of
//! `tokens`, `sync` or `portfolio` (or a store read), and maps the outcome and its
//! errors to a response. No handler calls an institution or holds a business rule.
//!
//! - the versioned read API for advisory apps: [`read`], the [`institutions`] they
//!   may offer, [`link_sessions`] for their users (played out in the hosted
//!   [`link_page`]), on-demand [`syncs`],
//!   users' tags and notes on [`transactions`], disconnecting a user's
//!   connection ([`user_connections`]), a user's [`consents`] history and erasing a
//!   user ([`erasures`]), each with the admin's equivalent;
//! - the admin API: [`admin`] (connections), [`tenants`], [`connectors`],
//!   [`quarantine`], the [`admins`] themselves and the [`audit`] trail every admin
//!   request leaves;
//! - tenants' outgoing [`webhooks`], and the webhooks institutions send us
//!   ([`inbound_webhooks`]);
//! - the OAuth [`callback`] institutions redirect to, the operators'
//!   [`status_page`], the contract ([`docs`]) and [`health`] checks; [`auth`], [`error`] and [`extract`] serve them all, and
//!   [`idempotency`] the tenant API's `POST`s.

mod admin;
mod admins;
mod audit;
mod auth;
mod callback;
mod connectors;
mod consents;
mod docs;
mod erasures;
mod error;
mod extract;
mod health;
mod households;
mod idempotency;
mod inbound_webhooks;
mod institutions;
mod instruments;
mod link_page;
mod link_sessions;
mod paging;
mod quarantine;
mod read;
mod schemas;
mod status_page;
mod syncs;
mod tenants;
mod transactions;
mod user_connections;
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
pub use health::metrics_refusal;

use crate::sync::Env;
use crate::tokens::Linker;

/// State shared by every handler, behind one `Arc`: axum clones the state for
/// every extractor and middleware of every request, and one reference count is
/// cheaper than the dozens its parts hold (a profile of cached reads showed the
/// clones and drops among the hottest functions).
#[derive(Clone)]
pub struct ApiState(Arc<Shared>);

impl ApiState {
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }
}

impl std::ops::Deref for ApiState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What [`ApiState`] holds.
pub struct Shared {
    /// The environment every use case shares.
    pub env: Env,
    /// Connectors in service, and publishing new versions.
    pub catalog: crate::catalog::Catalog,
    pub linker: Linker,
    /// The break-glass bearer token for `/admin/*`, acting as an `admin`; `None`:
    /// only named admin credentials.
    pub admin_token: Option<Arc<SecretString>>,
    /// Consent ending within this many days is flagged.
    pub consent_warning_days: u32,
    /// Renders this process's Prometheus metrics.
    pub metrics: metrics_exporter_prometheus::PrometheusHandle,
    /// Bearer token `/metrics` asks for; `None`: open.
    pub metrics_token: Option<Arc<SecretString>>,
    /// Per-API-key request budget.
    pub limiter: Arc<KeyLimiter>,
    /// Recently authenticated keys.
    pub keys: Arc<KeyCache>,
    /// Whether webhook endpoints may be private addresses.
    pub allow_private_webhooks: bool,
    /// A user's on-demand syncs: one finished request per this interval.
    pub sync_request_interval: std::time::Duration,
    /// The largest webhook body an institution may send.
    pub inbound_webhook_max_bytes: usize,
    /// Workers' breaker reports younger than this count in the fleet's view.
    pub breaker_window: chrono::Duration,
    /// Institutions' webhook events for one connection within this window share
    /// one sync.
    pub inbound_webhook_window: std::time::Duration,
}

pub(crate) const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

pub fn router(state: ApiState) -> Router {
    Router::new()
        .merge(read::routes())
        .merge(households::routes())
        .merge(institutions::routes())
        .merge(syncs::routes().route_layer(middleware::from_fn_with_state(
            state.clone(),
            idempotency::honour,
        )))
        .merge(link_sessions::routes().route_layer(middleware::from_fn_with_state(
            state.clone(),
            idempotency::honour,
        )))
        .merge(link_page::routes())
        .merge(status_page::routes())
        .merge(transactions::routes())
        .merge(user_connections::routes())
        .merge(erasures::routes())
        .merge(consents::routes())
        .merge(admin::routes())
        .merge(admins::routes())
        .merge(audit::routes())
        .merge(connectors::routes())
        .merge(quarantine::routes())
        .merge(instruments::routes())
        .merge(tenants::routes())
        .merge(webhooks::routes().route_layer(middleware::from_fn_with_state(
            state.clone(),
            idempotency::honour,
        )))
        .merge(inbound_webhooks::routes())
        .merge(docs::routes())
        .merge(callback::routes())
        .merge(health::routes())
        .fallback(error::not_found)
        .layer(middleware::from_fn_with_state(state.clone(), audit::record))
        .layer(middleware::from_fn(health::observe))
        .layer(middleware::from_fn(error::attach_request_id))
        // Logged without headers (they carry API keys) and by route template, not
        // path (paths name users). A caller's `traceparent` makes the request, and
        // the sync it may queue, part of the caller's trace. Probes get no span: a
        // trace per scrape would drown the real ones.
        .layer(TraceLayer::new_for_http().make_span_with(|request: &axum::http::Request<_>| {
            let id = request.headers().get(&REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("-");
            let route = request.extensions().get::<axum::extract::MatchedPath>().map_or("unmatched", |p| p.as_str());
            if matches!(route, "/healthz" | "/readyz" | "/metrics") {
                return tracing::Span::none();
            }
            let span = tracing::info_span!("http", otel.name = %format_args!("{} {route}", request.method()), otel.kind = "server", method = %request.method(), route = %route, request_id = %id, trace_id = tracing::field::Empty);
            crate::tracecontext::continue_from_headers(&span, request.headers());
            span
        }))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .layer(middleware::from_fn(error::plain_request_id))
        .with_state(state)
}
