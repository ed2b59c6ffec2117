//! Logging and metrics. Logging: one `tracing` subscriber per process,
//! human-readable on a terminal and JSON in production; `RUST_LOG` overrides the
//! configured filter. Metrics: one Prometheus recorder per process, rendered at
//! `/metrics` by `serve` and, when `metrics.bind` is set, by `worker` and
//! `scheduler` on an address of their own.

use std::sync::OnceLock;

use axum::Router;
use axum::routing::get;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

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

/// The process's Prometheus recorder, installed on first use.
pub fn metrics() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
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
