//! An advisory app's user links an institution in a real browser: headless
//! Chromium (Debian's) driven by playwright-core (tests/browser/link.mjs) walks the
//! example app `finsync demo` serves, the hosted link page and the sandbox
//! institution's consent page, on a phone-sized screen and partly by keyboard.
//! This test then checks what the app should have got: the outcome on its return
//! page, the `connection.linked` webhook (verified by the app), and the portfolio
//! through its key. Screenshots of each step are kept in
//! `<target>/tmp/test-artifacts/link-flow/`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use finsync::cli::demo::example_app::ExampleApp;
use finsync::domain::{DeliveryStatus, LinkSessionStatus, WebhookEvent};
use finsync::store::DeliveryQuery;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::process::Command;

use crate::support::{TestApp, eventually};

/// Where scripts/test.sh installs tests/browser's npm packages, unless
/// `FINSYNC_BROWSER_NODE_MODULES` names another place.
fn node_modules() -> PathBuf {
    std::env::var_os("FINSYNC_BROWSER_NODE_MODULES")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var("HOME").unwrap_or_else(|_| "/tmp".into());
            Path::new(&home).join(".cache/finsync-tools/browser/node_modules")
        })
}

#[tokio::test]
async fn a_user_links_an_institution_in_a_browser_and_lands_back_in_the_app() {
    let modules = node_modules();
    assert!(
        modules.join("playwright-core/package.json").exists(),
        "playwright-core not found in {}: run the suite through scripts/test.sh, which installs it and chromium, or set FINSYNC_BROWSER_NODE_MODULES",
        modules.display()
    );
    let chromium = std::env::var("FINSYNC_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let app = TestApp::builder().sqlite().tenant("advisor").build().await;
    let store = app.app.ctx.store.clone();
    let tenant = app.tenant();
    tokio::spawn({
        let app = app.app.clone();
        async move { app.run_webhooks(std::future::pending()).await }
    });

    // The example app, on its own port, set up as `finsync demo` does.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = url::Url::parse(&format!(
        "http://{}/example-app/",
        listener.local_addr().unwrap()
    ))
    .unwrap();
    store
        .set_tenant_redirect_uris(
            tenant.id,
            &[ExampleApp::return_url(&base).unwrap().to_string()],
            crate::support::by_test(),
        )
        .await
        .unwrap();
    let api = url::Url::parse(&format!("{}/", app.address)).unwrap();
    let (example, routes) = ExampleApp::new(api, tenant.key.0.clone(), base.clone());
    tokio::spawn(async move { axum::serve(listener, routes).await });
    example.register_webhooks().await.unwrap();

    let screenshots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("test-artifacts/link-flow");
    let _ = std::fs::remove_dir_all(&screenshots);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/link.mjs");
    let browser = Command::new("node")
        .arg(&script)
        .env("EXAMPLE_URL", base.to_string())
        .env("SCREENSHOTS", &screenshots)
        .env("CHROMIUM", chromium)
        .env("NODE_PATH", &modules)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node runs");
    // The script gives up on its own well before this; a hung browser must not
    // hang the suite.
    let run = tokio::time::timeout(Duration::from_secs(300), browser.wait_with_output())
        .await
        .expect("the browser run ends within 5 minutes")
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "the browser run failed (screenshots in {}):\n{stdout}\n{}",
        screenshots.display(),
        String::from_utf8_lossy(&run.stderr)
    );
    let outcome: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();

    // Back in the app with the outcome, and nothing else in the address.
    assert_eq!(outcome["status"], "linked", "{outcome}");
    assert_eq!(outcome["shown_status"], "linked");
    assert_eq!(
        outcome["query_keys"],
        serde_json::json!(["link_session_id", "status", "connection_id"])
    );
    assert!(outcome["accounts"].as_u64().unwrap() > 0, "{outcome}");
    assert!(
        outcome["webhooks"]
            .as_str()
            .unwrap()
            .contains("connection.linked")
    );

    // finsync agrees: the session, the connection, the delivered webhook.
    let session = store
        .link_session(
            outcome["link_session_id"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap(),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(session.status, LinkSessionStatus::Linked);
    let connection = session.connection_id.unwrap();
    assert_eq!(outcome["connection_id"], connection.to_string());
    eventually(
        "the connection.linked delivery",
        std::time::Duration::from_secs(30),
        || {
            let store = store.clone();
            async move {
                store
                    .webhook_deliveries(DeliveryQuery {
                        tenant: Some(tenant.id),
                        endpoint: None,
                        before: None,
                        limit: 50,
                    })
                    .await
                    .unwrap()
                    .into_iter()
                    .find(|d| {
                        d.event == WebhookEvent::ConnectionLinked
                            && d.status == DeliveryStatus::Delivered
                    })
            }
        },
    )
    .await;
    let portfolio = app
        .get_json("/v1/users/ada/portfolio", tenant.bearer())
        .await;
    assert_eq!(portfolio["connections"][0]["id"], connection.to_string());
    assert!(!portfolio["accounts"].as_array().unwrap().is_empty());

    let kept: Vec<String> = std::fs::read_dir(&screenshots)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(kept.len() >= 7, "a screenshot per step: {kept:?}");
}
