//! Logging, traces and metrics. Logging: one `tracing` subscriber per process,
//! human-readable on a terminal and JSON in production; `RUST_LOG` overrides the
//! configured filter. Traces: finsync's spans become OpenTelemetry spans (so they
//! carry W3C trace context, see `tracecontext`), exported over OTLP/HTTP when
//! `tracing.otlp_endpoint` or the standard `OTEL_EXPORTER_OTLP_*` variables say
//! where. Metrics: one Prometheus recorder per process, rendered at `/metrics` by
//! `serve` and, on `metrics.bind`, by `worker` and `scheduler`.

use std::sync::OnceLock;

use axum::Router;
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use secrecy::SecretString;
use tracing_subscriber::filter::{FilterExt, Targets, filter_fn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::app::config::{LogSettings, TraceSettings};

/// The process's tracer provider, kept so [`shutdown`] can flush what is buffered.
static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

/// Starts logging and tracing for a process of kind `service` (`serve`, `worker`,
/// …), named `finsync-<service>` in exported traces. Fails only when an exporter
/// was asked for and cannot be built.
pub fn init(log: &LogSettings, traces: &TraceSettings, service: &str) -> anyhow::Result<()> {
    if PROVIDER.get().is_some() {
        // A second init (tests, the demo after `serve`) keeps the first subscriber.
        return Ok(());
    }
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&log.filter));
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = if log.format == "json" {
        fmt.json().flatten_event(true).boxed()
    } else {
        fmt.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .boxed()
    };
    let provider = tracer_provider(traces, service)?;
    // Our own spans only, whatever the log filter: trace context must not depend
    // on how much is logged. Spans, not log events: events may name users, and
    // what leaves for a collector carries ids of connections and routes only.
    //
    // Left out, as they cost every request and say little here: OpenTelemetry
    // context activation on each enter (finsync reads a span's context from the
    // span, see `tracecontext`), the thread a span began on (a request's future
    // moves between the runtime's threads), and busy and idle times (two clock
    // reads per poll; the span's own start and end, and its children, say where
    // the time went).
    let otel = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("finsync"))
        .with_context_activation(false)
        .with_threads(false)
        .with_tracked_inactivity(false)
        .with_filter(
            Targets::new()
                .with_target("finsync", tracing::Level::INFO)
                .and(filter_fn(|metadata| metadata.is_span())),
        );
    let installed = tracing_subscriber::registry()
        .with(fmt.with_filter(filter))
        .with(otel)
        .try_init();
    if installed.is_ok() {
        let _ = PROVIDER.set(provider);
    }
    Ok(())
}

/// Exports the spans still buffered; the last thing a process does.
pub fn shutdown() {
    if let Some(provider) = PROVIDER.get() {
        // Errors here (a collector gone) have nowhere left to be reported.
        let _ = provider.shutdown();
    }
}

/// A tracer provider sampling parent-first, with a batch exporter when one is
/// configured.
fn tracer_provider(traces: &TraceSettings, service: &str) -> anyhow::Result<SdkTracerProvider> {
    let builder = SdkTracerProvider::builder()
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            traces.sample_ratio,
        ))))
        .with_resource(
            Resource::builder()
                .with_service_name(format!("finsync-{service}"))
                .build(),
        );
    let from_env = [
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    ]
    .iter()
    .any(|name| std::env::var_os(name).is_some_and(|v| !v.is_empty()));
    if traces.otlp_endpoint.is_empty() && !from_env {
        return Ok(builder.build());
    }
    let endpoint = (!traces.otlp_endpoint.is_empty())
        .then(|| format!("{}/v1/traces", traces.otlp_endpoint.trim_end_matches('/')));
    // The blocking client runs on the batch processor's own thread; it is built
    // off the async runtime, which it must not be created or dropped on.
    let exporter = std::thread::spawn(move || {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(crate::http::blocking_client());
        match endpoint {
            Some(endpoint) => exporter.with_endpoint(endpoint).build(),
            None => exporter.build(),
        }
    })
    .join()
    .map_err(|_| anyhow::anyhow!("building the OTLP exporter panicked"))?
    .map_err(|e| {
        anyhow::anyhow!(
            "cannot export spans to the OTLP endpoint (tracing.otlp_endpoint or \
             OTEL_EXPORTER_OTLP_ENDPOINT): {e}"
        )
    })?;
    Ok(builder.with_batch_exporter(exporter).build())
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
/// the API), asking for `token` when there is one.
pub async fn serve_metrics(
    listener: tokio::net::TcpListener,
    token: Option<SecretString>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let handle = metrics();
    let render = move |headers: HeaderMap| {
        let answer = crate::api::metrics_refusal(token.as_ref(), &headers)
            .unwrap_or_else(|| handle.render().into_response());
        std::future::ready(answer)
    };
    let router = Router::new().route("/metrics", get(render));
    tracing::info!(address = %listener.local_addr()?, "Serving metrics.");
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}
