//! One trace from an app's request to the institution: `serve` and `worker` run as
//! separate processes exporting spans over OTLP/HTTP to a receiver this test
//! starts. An app asks for a sync with its own `traceparent`; the API's span, the
//! worker's job, sync and institution requests all land in that trace, the
//! institution receives it, and every line the worker logs for the sync carries
//! its trace id.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use finsync_sandbox::{Institution, SandboxConfig};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value;
use prost::Message;
use serde_json::Value;

use crate::support::{
    ADMIN_TOKEN, Backend, TestDb, eventually_explained, finsync, free_port, link_through_api,
    process_env, requested_sync, spawn, spawn_sandbox, tenant_via_cli, wait_ready, wait_until,
};

/// A span as the receiver got it.
#[derive(Debug, Clone)]
struct Received {
    service: String,
    name: String,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    /// OTLP span kind: 2 server, 3 client.
    kind: i32,
}

type Spans = Arc<Mutex<Vec<Received>>>;

/// The smallest OTLP/HTTP receiver: `POST /v1/traces` with a protobuf
/// `ExportTraceServiceRequest`, answered with an empty (successful) response.
async fn receive(State(spans): State<Spans>, body: Bytes) -> Vec<u8> {
    let request = ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf request");
    let mut spans = spans.lock().unwrap();
    for resource in request.resource_spans {
        let service = resource
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|kv| kv.key == "service.name")
            .and_then(|kv| kv.value.as_ref()?.value.as_ref())
            .map(|value| match value {
                any_value::Value::StringValue(s) => s.clone(),
                other => format!("{other:?}"),
            })
            .unwrap_or_default();
        for scope in resource.scope_spans {
            for span in scope.spans {
                spans.push(Received {
                    service: service.clone(),
                    name: span.name,
                    trace_id: hex::encode(span.trace_id),
                    span_id: hex::encode(span.span_id),
                    parent_span_id: hex::encode(span.parent_span_id),
                    kind: span.kind,
                });
            }
        }
    }
    Vec::new()
}

async fn otlp_receiver() -> (String, Spans) {
    let spans = Spans::default();
    let app = axum::Router::new()
        .route("/v1/traces", axum::routing::post(receive))
        .with_state(spans.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, spans)
}

#[tokio::test]
async fn an_app_s_traceparent_follows_its_sync_through_the_queue_to_the_institution() {
    let db = TestDb::new(Backend::Postgres).await;
    let sandbox = spawn_sandbox(SandboxConfig::default()).await;
    let (collector, spans) = otlp_receiver().await;

    let port = free_port();
    let api = format!("http://127.0.0.1:{port}");
    let mut env = process_env(&db.url, &sandbox.base_url());
    env.extend([
        ("FINSYNC__SERVER__ADMIN_TOKEN", ADMIN_TOKEN.to_owned()),
        ("FINSYNC__SERVER__BIND", format!("127.0.0.1:{port}")),
        ("FINSYNC__SERVER__PUBLIC_URL", api.clone()),
        ("FINSYNC__TRACING__OTLP_ENDPOINT", collector),
        ("FINSYNC__LOG__FORMAT", "json".to_owned()),
        // Export within a fraction of a second rather than the default 5 s.
        ("OTEL_BSP_SCHEDULE_DELAY", "100".to_owned()),
    ]);
    assert!(finsync(&env).arg("migrate").status().unwrap().success());
    let api_key = tenant_via_cli(&env, "traced-advisor");

    let _serve = spawn("serve", finsync(&env).arg("serve"));
    let worker = spawn("worker", finsync(&env).arg("worker"));
    wait_ready(&format!("{api}/readyz")).await;
    let http = finsync::http::client();
    link_through_api(&api, "traced-advisor", "demo-alice", "meridian").await;
    // The link's own first sync ends first: a request while it still waits in the
    // queue would join it rather than queue a job of its own.
    wait_until("the first sync", Duration::from_secs(60), || async {
        let portfolio: Value = http
            .get(format!("{api}/v1/users/demo-alice/portfolio"))
            .bearer_auth(&api_key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        portfolio["freshness"]["stale"] == false
    })
    .await;

    // The app's own trace: a trace id no process could have made up.
    let trace_id = format!("{:032x}", rand::random::<u128>() | 1);
    let app_span = "00f067aa0ba902b7";
    let mut traceparent = reqwest::header::HeaderMap::new();
    traceparent.insert(
        "traceparent",
        format!("00-{trace_id}-{app_span}-01").parse().unwrap(),
    );
    let status = requested_sync(&api, &api_key, "demo-alice", traceparent).await;
    assert_eq!(status["status"], "succeeded", "{status}");

    // The whole path, in the app's trace: the API's server span under the app's
    // span, the worker's job under a span of the API, its institution requests as
    // client spans under the job.
    let traced = eventually_explained(
        "the worker's spans of the sync to be exported",
        Duration::from_secs(30),
        || {
            let spans = spans.lock().unwrap().clone();
            let trace_id = trace_id.clone();
            async move {
                let ours: Vec<Received> = spans
                    .into_iter()
                    .filter(|s| s.trace_id == trace_id)
                    .collect();
                let has = |service: &str, name: &str| {
                    ours.iter()
                        .any(|s| s.service == service && s.name.starts_with(name))
                };
                if has("finsync-serve", "POST /v1/users/{user_id}/sync")
                    && has("finsync-worker", "sync")
                    && has("finsync-worker", "GET meridian")
                {
                    Ok(ours)
                } else {
                    Err(format!("spans of the trace so far: {ours:#?}"))
                }
            }
        },
    )
    .await;
    let server = traced
        .iter()
        .find(|s| s.service == "finsync-serve" && s.name.starts_with("POST"))
        .unwrap();
    assert_eq!(
        server.parent_span_id, app_span,
        "the API continues the app's span"
    );
    assert_eq!(server.kind, 2, "the API's span is a server span");
    let serve_ids: BTreeSet<&str> = traced
        .iter()
        .filter(|s| s.service == "finsync-serve")
        .map(|s| s.span_id.as_str())
        .collect();
    let job = traced
        .iter()
        .find(|s| s.service == "finsync-worker" && s.name == "job sync")
        .expect("the worker's job span");
    assert!(
        serve_ids.contains(job.parent_span_id.as_str()),
        "the queued job continues the API's span: {traced:#?}"
    );
    let requests: Vec<&Received> = traced
        .iter()
        .filter(|s| s.service == "finsync-worker" && s.kind == 3)
        .collect();
    assert!(
        !requests.is_empty(),
        "institution requests are client spans"
    );

    // The institution received the trace with every data request of the sync.
    let carried: BTreeSet<String> = sandbox
        .arrivals(Institution::Meridian)
        .into_iter()
        .filter_map(|a| a.traceparent)
        .filter(|t| t.contains(&trace_id))
        .collect();
    assert!(
        carried.len() >= requests.len(),
        "each request of the sync told Meridian its own span in the trace: {carried:?}"
    );
    let request_ids: BTreeSet<&str> = requests.iter().map(|s| s.span_id.as_str()).collect();
    for traceparent in &carried {
        let parent = traceparent.split('-').nth(2).unwrap();
        assert!(
            request_ids.contains(parent),
            "{traceparent} names a client span"
        );
    }

    // Every line the worker logged inside a sync names that sync's trace; the
    // requested sync's lines name the app's trace.
    let log = std::fs::read_to_string(&worker.log).unwrap();
    let mut in_sync = 0;
    let mut in_app_trace = 0;
    for line in log.lines() {
        let Ok(line) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let Some(sync) = line["spans"]
            .as_array()
            .and_then(|spans| spans.iter().find(|s| s["name"] == "sync"))
        else {
            continue;
        };
        in_sync += 1;
        let id = sync["trace_id"].as_str().unwrap_or_default();
        assert_eq!(
            id.len(),
            32,
            "a sync's log line without its trace id: {line}"
        );
        if id == trace_id {
            in_app_trace += 1;
        }
    }
    assert!(in_sync > 0 && in_app_trace > 0, "{log}");

    // The worker serves its own metrics, and they count the sync.
    let address = log
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|line| line["message"] == "Serving metrics.")
        .and_then(|line| line["address"].as_str().map(str::to_owned))
        .expect("the worker says where its metrics are");
    let metrics = http
        .get(format!("http://{address}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(
            "finsync_institution_request_duration_seconds_bucket{institution=\"meridian\""
        ),
        "{metrics}"
    );
}
