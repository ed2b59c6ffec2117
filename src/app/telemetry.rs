//! Logging and metrics. Logging: one `tracing` subscriber per process,
//! human-readable on a terminal and JSON in production; `RUST_LOG` overrides the
//! configured filter. Metrics: one Prometheus recorder per process, rendered at
//! `/metrics` by `serve` and, when `metrics.bind` is set, by `worker` and
//! `scheduler` on an address of their own.

use std::sync::OnceLock;

use axum::Router;
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use tracing_subscriber::EnvFilter;

use crate::app::config::LogSettings;

pub fn init(settings: &LogSettings) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&settings.filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second init (tests, the demo after `serve`) keeps the first subscriber.
    let _ = if settings.format == "json" {
        builder.json().flatten_event(true).try_init()
    } else {
        builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init()
    };
}

/// Bucket bounds of every `*_duration_seconds` histogram, in seconds.
const DURATION_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// The process's Prometheus recorder, installed on first use.
pub fn metrics() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            // Durations are histograms (summed across a fleet, unlike quantiles)
            // with buckets from a fast API answer to a long first sync.
            // (Refused only for no buckets at all.)
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Suffix("_duration_seconds".into()),
                    &DURATION_BUCKETS,
                )
                .unwrap_or_else(|_| PrometheusBuilder::new())
                .build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder is already global; then ours records
            // nothing, which the rendered output makes plain.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// Serves `/metrics` on `listener` until `shutdown` resolves (for processes without
/// the API).
pub async fn serve_metrics(
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let handle = metrics();
    let router = Router::new().route("/metrics", get(move || std::future::ready(handle.render())));
    tracing::info!(address = %listener.local_addr()?, "Serving metrics.");
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}
