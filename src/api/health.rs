//! `/healthz` (the process is up), `/readyz` (it can reach its database) and
//! `/metrics` (Prometheus), with fleet-wide gauges read from the database when
//! scraped; and the middleware that times every API request for it.

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use secrecy::{ExposeSecret, SecretString};

use super::ApiState;

/// How long `/readyz` waits for the database.
const READY_WITHIN: std::time::Duration = std::time::Duration::from_millis(800);

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(ready))
        .route("/metrics", get(render_metrics))
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, body = String, content_type = "text/plain")))]
pub(super) async fn healthz() -> &'static str {
    "ok"
}

/// The process can reach its database (asked with a deadline, so the answer comes
/// within a second either way).
#[utoipa::path(
    get, path = "/readyz", tag = "health",
    responses(
        (status = 200, body = String, content_type = "text/plain"),
        (status = 503, body = String, content_type = "text/plain"),
    )
)]
pub(super) async fn ready(State(state): State<ApiState>) -> (StatusCode, &'static str) {
    if state.env.store.probe(READY_WITHIN).await {
        (StatusCode::OK, "ready")
    } else {
        tracing::warn!("Not ready: database unreachable.");
        (StatusCode::SERVICE_UNAVAILABLE, "database unreachable")
    }
}

/// The answer to a `/metrics` request without the expected bearer token, if one is
/// expected: every process's `/metrics` asks for the same one.
pub fn metrics_refusal(expected: Option<&SecretString>, headers: &HeaderMap) -> Option<Response> {
    let expected = expected?;
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    (!crate::fingerprint::same_secret(expected.expose_secret(), presented)).then(|| {
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "metrics token required",
        )
            .into_response()
    })
}

/// This process's counters plus gauges that describe the whole fleet: seconds until
/// the soonest live access token expires per institution, queue depth and how long
/// the oldest due job has waited, and open quarantine.
async fn render_metrics(State(state): State<ApiState>, headers: HeaderMap) -> Response {
    if let Some(refusal) = metrics_refusal(state.metrics_token.as_deref(), &headers) {
        return refusal;
    }
    match state.env.store.soonest_token_expiry().await {
        Ok(rows) => {
            let now = chrono::Utc::now();
            for (institution, expires_at) in rows {
                let seconds = (expires_at - now).num_milliseconds() as f64 / 1000.0;
                metrics::gauge!("finsync_token_min_expires_in_seconds", "institution" => institution).set(seconds);
            }
        }
        Err(e) => tracing::warn!(error = %e, "Token expiry gauge not updated."),
    }
    match state.env.queue.depth().await {
        Ok(depth) => metrics::gauge!("finsync_queue_depth").set(depth as f64),
        Err(e) => tracing::warn!(error = %e, "Queue depth gauge not updated."),
    }
    match state.env.queue.oldest_due_age(chrono::Utc::now()).await {
        Ok(age) => metrics::gauge!("finsync_queue_oldest_job_age_seconds").set(age.as_secs_f64()),
        Err(e) => tracing::warn!(error = %e, "Oldest job gauge not updated."),
    }
    match state.env.store.open_quarantine_count().await {
        Ok(open) => metrics::gauge!("finsync_quarantine_open").set(open as f64),
        Err(e) => tracing::warn!(error = %e, "Quarantine gauge not updated."),
    }
    state.metrics.render().into_response()
}

/// Times every request and counts it by method, route template (never the path
/// itself: ids would make the label set unbounded) and status.
pub(super) async fn observe(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    // Methods as sent are any token a client makes up: a bounded set, and `other`.
    let method = match *request.method() {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    };
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    metrics::histogram!(
        "finsync_http_request_duration_seconds",
        "method" => method.to_owned(),
        "route" => route,
        "status" => response.status().as_str().to_owned()
    )
    .record(started.elapsed().as_secs_f64());
    response
}
