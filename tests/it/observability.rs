//! What operators watch: the metrics a sync and an API request leave, and the alert
//! rules and dashboard under `deploy/`, which must name only metrics the code
//! exports and must pass `promtool` (their own unit tests included).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::TestApp;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn rust_files(dir: &Path, into: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, into);
        } else if path.extension().is_some_and(|e| e == "rs") {
            into.push(path);
        }
    }
}

/// Every series name the code can export: the names given to `counter!`,
/// `gauge!` and `histogram!` (a histogram's `_bucket`, `_count` and `_sum` too).
fn exported() -> BTreeSet<String> {
    let mut files = Vec::new();
    rust_files(&root().join("src"), &mut files);
    let mut names = BTreeSet::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for kind in ["counter!(", "gauge!(", "histogram!("] {
            for (at, _) in text.match_indices(kind) {
                let rest = text[at + kind.len()..].trim_start();
                let Some(rest) = rest.strip_prefix('"') else {
                    continue;
                };
                let name = &rest[..rest.find('"').unwrap()];
                names.insert(name.to_owned());
                if kind == "histogram!(" {
                    for suffix in ["_bucket", "_count", "_sum"] {
                        names.insert(format!("{name}{suffix}"));
                    }
                }
            }
        }
    }
    names
}

/// The `finsync_…` names a text mentions.
fn mentioned(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (at, _) in text.match_indices("finsync_") {
        let name: String = text[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        names.insert(name);
    }
    names
}

#[test]
fn the_alerts_and_the_dashboard_name_only_metrics_the_code_exports() {
    let exported = exported();
    assert!(exported.contains("finsync_syncs_total"), "{exported:?}");
    for file in [
        "deploy/prometheus/alerts.yml",
        "deploy/prometheus/prometheus.yml",
        "deploy/prometheus/alerts.test.yml",
        "deploy/grafana/finsync.json",
    ] {
        let text = std::fs::read_to_string(root().join(file)).unwrap();
        let unknown: Vec<String> = mentioned(&text)
            .into_iter()
            .filter(|name| !exported.contains(name))
            .collect();
        assert!(
            unknown.is_empty(),
            "{file} names metrics finsync does not export: {unknown:?}"
        );
    }
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("deploy/grafana/finsync.json")).unwrap(),
    )
    .unwrap();
    let panels = dashboard["panels"].as_array().unwrap();
    assert!(panels.len() >= 10);
    for panel in panels {
        assert!(
            !panel["targets"].as_array().unwrap().is_empty(),
            "panel {} queries nothing",
            panel["title"]
        );
    }
}

#[test]
fn the_alert_rules_and_the_scrape_config_pass_promtool() {
    let promtool = std::env::var("FINSYNC_PROMTOOL").unwrap_or_else(|_| "promtool".into());
    let dir = root().join("deploy/prometheus");
    for args in [
        ["check", "rules", "alerts.yml"],
        ["test", "rules", "alerts.test.yml"],
        ["check", "config", "prometheus.yml"],
    ] {
        let run = Command::new(&promtool)
            .args(args)
            .current_dir(&dir)
            .output()
            .unwrap_or_else(|e| {
                panic!("{promtool} did not run ({e}): run the suite through scripts/test.sh, which installs Debian's prometheus package, or set FINSYNC_PROMTOOL")
            });
        assert!(
            run.status.success(),
            "promtool {}:\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&run.stdout),
            String::from_utf8_lossy(&run.stderr)
        );
    }
}

/// Whether the exposition has a series `name` carrying every one of `labels`.
fn has_series(text: &str, name: &str, labels: &[(&str, &str)]) -> bool {
    text.lines().any(|line| {
        line.strip_prefix(name).is_some_and(|rest| {
            rest.starts_with('{')
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
        })
    })
}

#[tokio::test]
async fn a_sync_and_api_requests_leave_their_metrics() {
    let app = TestApp::builder().sqlite().tenant("advisor").build().await;
    let tenant = app.tenant();
    app.link_and_sync(tenant.id, "demo-alice").await;
    app.get_json("/v1/users/demo-alice/portfolio", tenant.bearer())
        .await;
    let refreshed = app.app.ctx.fx.refresh(&app.app.ctx.store).await.unwrap();
    let published = refreshed
        .newest
        .unwrap()
        .and_time(chrono::NaiveTime::MIN)
        .and_utc()
        .timestamp();
    // A method made up by a client makes no series of its own.
    let made_up = reqwest::Method::from_bytes(b"FOO123").unwrap();
    finsync::http::client()
        .request(made_up, format!("{}/healthz", app.address))
        .send()
        .await
        .unwrap();
    let text = finsync::http::client()
        .get(format!("{}/metrics", app.address))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let meridian_ok = [("institution", "meridian"), ("outcome", "succeeded")];
    assert!(
        has_series(&text, "finsync_syncs_total", &meridian_ok),
        "{text}"
    );
    assert!(
        has_series(
            &text,
            "finsync_sync_duration_seconds_bucket",
            &[("institution", "meridian"), ("le", "0.5")]
        ),
        "durations are histograms with the documented buckets: {text}"
    );
    assert!(has_series(
        &text,
        "finsync_institution_request_duration_seconds_count",
        &[("institution", "meridian"), ("outcome", "ok")]
    ));
    assert!(
        has_series(
            &text,
            "finsync_http_request_duration_seconds_count",
            &[
                ("method", "GET"),
                ("route", "/v1/users/{user_id}/portfolio"),
                ("status", "200")
            ]
        ),
        "{text}"
    );
    assert!(!text.contains("FOO123"), "{text}");
    // What the exchange-rate age alert reads: the newest rate's publication day.
    let age_line = text
        .lines()
        .find(|l| l.starts_with("finsync_fx_rates_published_timestamp_seconds{"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(age_line.contains("source=\"ecb\""), "{age_line}");
    let value: f64 = age_line.rsplit(' ').next().unwrap().parse().unwrap();
    assert_eq!(value, published as f64, "{age_line}");
    assert!(has_series(
        &text,
        "finsync_http_request_duration_seconds_count",
        &[("method", "other"), ("route", "/healthz")]
    ));
    assert!(
        !text.contains("demo-alice"),
        "no user id in a label: the label sets stay bounded"
    );
    for gauge in [
        "finsync_queue_depth",
        "finsync_queue_oldest_job_age_seconds",
        "finsync_quarantine_open",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(&format!("{gauge} "))),
            "{gauge}: {text}"
        );
    }
}

#[tokio::test]
async fn with_a_metrics_token_the_api_s_metrics_ask_for_it() {
    let app = TestApp::builder()
        .sqlite()
        .workers(false)
        .with(|settings| settings.server.metrics_token = secrecy::SecretString::from("scrape-me"))
        .build()
        .await;
    let http = finsync::http::client();
    let url = format!("{}/metrics", app.address);
    let open = http.get(&url).send().await.unwrap();
    assert_eq!(open.status(), 401);
    assert_eq!(open.headers()["www-authenticate"], "Bearer");
    let wrong = http.get(&url).bearer_auth("scrape-m").send().await.unwrap();
    assert_eq!(wrong.status(), 401);
    let scraped = http
        .get(&url)
        .bearer_auth("scrape-me")
        .send()
        .await
        .unwrap();
    assert_eq!(scraped.status(), 200);
    assert!(
        scraped
            .text()
            .await
            .unwrap()
            .contains("finsync_queue_depth")
    );
}
