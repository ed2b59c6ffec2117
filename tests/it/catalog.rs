//! The connector catalog through the admin API: versions published by PUT and by files
//! dropped into the connectors directory, every process serving the latest valid one,
//! a bad text or file never replacing it, and `connectors check` against the sandbox.

use std::path::{Path, PathBuf};
use std::time::Duration;

use finsync_sandbox::{Drift, Faults, Institution};
use serde_json::Value;

use crate::support::{ADMIN_TOKEN, TestApp, eventually, unique};

fn fixture(name: &str) -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/connectors/{name}")),
    )
    .unwrap()
}

/// A connectors directory of this test's own, removed when dropped.
struct ConnectorDir(PathBuf);

impl ConnectorDir {
    fn with_shipped() -> Self {
        let dir = std::env::temp_dir().join(unique("finsync-catalog"));
        std::fs::create_dir_all(&dir).unwrap();
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("connectors");
        for file in finsync::connectors::registry::connector_files(&shipped).unwrap() {
            std::fs::copy(&file, dir.join(file.file_name().unwrap())).unwrap();
        }
        Self(dir)
    }
}

impl Drop for ConnectorDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn admin(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    body: Option<String>,
) -> (u16, Value) {
    let mut request = finsync::http::client()
        .request(method, format!("{}{path}", app.address))
        .bearer_auth(ADMIN_TOKEN);
    if let Some(body) = body {
        request = request
            .header("content-type", "application/toml")
            .body(body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn ids(list: &Value) -> Vec<&str> {
    list["connectors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn connectors_are_published_through_the_api_versioned_and_audited() {
    let app = TestApp::builder().postgres().build().await;
    let store = &app.app.ctx.store;
    use reqwest::Method;

    let (status, list) = admin(&app, Method::GET, "/admin/connectors", None).await;
    assert_eq!(status, 200);
    assert_eq!(
        ids(&list),
        [
            "albion",
            "harbor",
            "keystone",
            "larkspur",
            "meridian",
            "pinecrest"
        ]
    );
    assert_eq!(list["connectors"][4]["version"], 1);
    assert_eq!(list["connectors"][4]["health"]["status"], "unused");
    assert_eq!(list["connectors"][4]["profile"], serde_json::Value::Null);
    assert_eq!(
        list["connectors"][0]["profile"], "uk-open-banking",
        "{list}"
    );
    assert_eq!(list["connectors"][3]["profile"], "plaid", "{list}");
    assert_eq!(list["connectors"][5]["profile"], "fdx", "{list}");
    // Paged like every list: the pages together are the list.
    let (_, first) = admin(&app, Method::GET, "/admin/connectors?limit=4", None).await;
    let cursor = first["next_cursor"].as_str().expect("a second page");
    let (_, second) = admin(
        &app,
        Method::GET,
        &format!("/admin/connectors?limit=4&cursor={cursor}"),
        None,
    )
    .await;
    assert!(second.get("next_cursor").is_none(), "{second}");
    assert_eq!([ids(&first), ids(&second)].concat(), ids(&list));

    // Without the admin token: refused.
    let anonymous = finsync::http::client()
        .put(format!("{}/admin/connectors/northwind", app.address))
        .body(fixture("northwind.toml"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);

    let text = fixture("northwind.toml");
    let (status, published) = admin(
        &app,
        Method::PUT,
        "/admin/connectors/northwind",
        Some(text.clone()),
    )
    .await;
    assert_eq!(status, 201, "{published}");
    assert_eq!(
        (published["version"].clone(), published["created"].clone()),
        (1.into(), true.into())
    );
    assert_eq!(published["source"], "api");
    // Who published it, as the audit trail names them.
    assert_eq!(published["actor"], "break-glass");

    // The same text again adds nothing.
    let (status, again) = admin(
        &app,
        Method::PUT,
        "/admin/connectors/northwind",
        Some(text.clone()),
    )
    .await;
    assert_eq!((status, again["created"].clone()), (200, false.into()));

    // A bad text is refused with every problem, and changes nothing.
    let broken = text
        .replace(r#"records = "$.items[*]""#, r#"records = "$.items[""#)
        .replace("page_size = ", "page_sise = ");
    let (status, refused) = admin(
        &app,
        Method::PUT,
        "/admin/connectors/northwind",
        Some(broken),
    )
    .await;
    assert_eq!(status, 422, "{refused}");
    assert_eq!(refused["error"]["code"], "INVALID_CONNECTOR");
    let message = refused["error"]["message"].as_str().unwrap();
    assert!(message.contains("page_sise"), "{message}");
    assert_eq!(
        store.connector_versions("northwind").await.unwrap().len(),
        1
    );

    // A user links at the institution published a moment ago, and syncs.
    let (tenant, _) = store.create_tenant("advisor").await.unwrap();
    let connection = app
        .link_and_sync_at(tenant.id, "demo-erin", "northwind")
        .await;
    let stored = store.full_snapshot(connection).await.unwrap();
    assert!(!stored.accounts.is_empty());

    // A second version replaces the first; the history keeps both.
    let renamed = text.replace(
        "name = \"Northwind Credit Union\"",
        "name = \"Northwind Credit Union (new API)\"",
    );
    assert_ne!(renamed, text);
    let (status, second) = admin(
        &app,
        Method::PUT,
        "/admin/connectors/northwind",
        Some(renamed.clone()),
    )
    .await;
    assert_eq!((status, second["version"].clone()), (201, 2.into()));
    let (status, detail) = admin(&app, Method::GET, "/admin/connectors/northwind", None).await;
    assert_eq!(status, 200);
    assert_eq!(detail["version"], 2);
    assert_eq!(detail["name"], "Northwind Credit Union (new API)");
    assert_eq!(detail["content"], renamed.as_str());
    let versions: Vec<i64> = detail["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_i64().unwrap())
        .collect();
    assert_eq!(versions, [2, 1]);
    assert_eq!(detail["health"]["connections"], 1);
    assert_eq!(detail["health"]["status"], "ok");

    let (status, _) = admin(&app, Method::GET, "/admin/connectors/nowhere", None).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn a_file_dropped_in_is_served_and_a_bad_edit_never_replaces_it() {
    let dir = ConnectorDir::with_shipped();
    let app = TestApp::builder()
        .postgres()
        .with(|settings| {
            settings.connectors.dir = dir.0.clone();
            settings.connectors.reload_ms = 100;
        })
        .build()
        .await;
    use reqwest::Method;

    let wait_for = |predicate: fn(&Value) -> bool| {
        let app = &app;
        async move {
            eventually(
                "the catalog to get there",
                Duration::from_secs(10),
                || async {
                    let detail = admin(app, Method::GET, "/admin/connectors/northwind", None)
                        .await
                        .1;
                    predicate(&detail).then_some(detail)
                },
            )
            .await
        }
    };

    let text = fixture("northwind.toml");
    std::fs::write(dir.0.join("northwind.toml"), &text).unwrap();
    let detail = wait_for(|d| d["version"] == 1).await;
    assert_eq!(detail["versions"][0]["source"], "file");

    // A broken edit is reported on the connector and the version in service stays.
    std::fs::write(
        dir.0.join("northwind.toml"),
        text.replace(
            "[endpoints.transactions.fields]",
            "[endpoints.transactions.fieldz]",
        ),
    )
    .unwrap();
    let detail = wait_for(|d| !d["file_problems"].as_array().unwrap().is_empty()).await;
    assert_eq!(detail["version"], 1);
    assert!(
        detail["file_problems"][0]
            .as_str()
            .unwrap()
            .contains("fieldz"),
        "{detail}"
    );
    let (tenant, _) = app.app.ctx.store.create_tenant("advisor").await.unwrap();
    app.link_and_sync_at(tenant.id, "demo-frank", "northwind")
        .await;

    // Fixed, and changed: a new version, the problems gone.
    std::fs::write(
        dir.0.join("northwind.toml"),
        text.replace("page_size = ", "timeout_secs = 20\npage_size = "),
    )
    .unwrap();
    let detail = wait_for(|d| d["version"] == 2).await;
    assert!(detail["file_problems"].as_array().unwrap().is_empty());
}

/// `connectors check` links the test user, runs every endpoint once and says what
/// mapped; a renamed field at the institution shows up as that field missing.
#[tokio::test]
async fn a_check_reports_every_endpoint_and_names_the_fields_that_do_not_map() {
    let app = TestApp::builder().sqlite().workers(false).build().await;
    let sandbox = app.sandbox();
    let registry = app.app.catalog.registry();
    let redirect = url::Url::parse(&format!("{}/oauth/callback", app.address)).unwrap();
    let check = |id: &'static str| {
        let connector = registry.get(id).unwrap();
        let secret = registry.client_secret(&connector).unwrap();
        let redirect = redirect.clone();
        async move {
            let secrets: finsync::connectors::engine::Secrets = {
                let registry = registry.clone();
                std::sync::Arc::new(
                    move |connector: &finsync::connectors::Connector, env: &str| {
                        registry.secret(connector, env).ok()
                    },
                )
            };
            finsync::sync::check::check(
                &connector,
                secret,
                secrets,
                &redirect,
                "test-check",
                finsync::http::client(),
            )
            .await
            .unwrap()
        }
    };

    let reports = check("meridian").await;
    let endpoints: Vec<_> = reports.iter().map(|r| r.endpoint.as_str()).collect();
    assert_eq!(endpoints, ["accounts", "holdings", "transactions"]);
    for report in &reports {
        assert!(report.is_clean(), "{report:?}");
        assert!(
            report.fetched > 0 && report.requests.is_some_and(|n| n > 0),
            "{report:?}"
        );
    }

    sandbox
        .set_faults(
            Institution::Harbor,
            Faults {
                drift: Some(Drift {
                    from: "amount".into(),
                    to: "amt".into(),
                }),
                ..Faults::default()
            },
        )
        .unwrap();
    let reports = check("harbor").await;
    let transactions = reports
        .iter()
        .find(|r| r.endpoint == "transactions")
        .unwrap();
    assert!(transactions.fetched > 0);
    assert_eq!(transactions.mapped, 0, "{transactions:?}");
    let (count, examples) = &transactions.unparsable["amount"];
    assert_eq!(*count, transactions.fetched);
    assert_eq!(examples, &["missing".to_owned()]);
    assert!(
        reports
            .iter()
            .find(|r| r.endpoint == "accounts")
            .unwrap()
            .is_clean()
    );

    // A standard's institution: its per-account endpoints get a row per account, and
    // one account the institution cannot serve fails its own row only.
    let portfolio = sandbox.portfolio(Institution::Pinecrest, "test-check");
    let broken = portfolio.accounts[0].account_id.clone();
    sandbox
        .set_faults(
            Institution::Pinecrest,
            Faults {
                failing_paths: vec![format!("{broken}/transactions")],
                ..Faults::default()
            },
        )
        .unwrap();
    let reports = check("pinecrest").await;
    let rows = |endpoint: &str| reports.iter().filter(|r| r.endpoint == endpoint).count();
    let investment = portfolio
        .accounts
        .iter()
        .filter(|a| a.account_type == "investment")
        .count();
    assert_eq!(rows("accounts"), 1);
    assert_eq!(rows("details.balances"), portfolio.accounts.len());
    assert_eq!(rows("holdings"), investment);
    assert_eq!(rows("transactions"), portfolio.accounts.len());
    for report in &reports {
        let is_broken =
            report.endpoint == "transactions" && report.account.as_deref() == Some(broken.as_str());
        if is_broken {
            assert!(
                report
                    .failure
                    .as_deref()
                    .is_some_and(|f| f.contains("/transactions"))
            );
            assert_eq!(report.requests, None, "{report:?}");
        } else {
            assert!(report.is_clean(), "{report:?}");
        }
    }
    // A field mapped but empty in every record is flagged on the endpoint's first row:
    // Pinecrest, a US institution, sends no SEDOLs.
    let holdings = reports.iter().find(|r| r.endpoint == "holdings").unwrap();
    assert_eq!(holdings.never_filled, ["sedol"], "{holdings:?}");
    // The check left no grant behind at the institution.
    assert!(sandbox.stats().revocations >= 3);
}

#[tokio::test]
async fn a_sync_at_a_connector_this_process_has_not_loaded_yet_follows_later_instead_of_failing() {
    use finsync::domain::UserId;
    use finsync::store::{TokenColumns, VersionSource};
    use finsync::sync::{SyncConnection, SyncOutcome, pipeline};

    let app = TestApp::builder()
        .expect_failed_jobs()
        .postgres()
        .workers(false)
        // This process will not pick up new versions during the test.
        .with(|settings| settings.connectors.reload_ms = 3_600_000)
        .tenant("advisor")
        .build()
        .await;
    let ctx = &app.app.ctx;
    let tenant = app.tenant();
    let connection_at = |institution: &'static str| async move {
        let user = UserId::parse(&format!("user-{institution}")).unwrap();
        let connection = ctx
            .store
            .upsert_connection(tenant.id, &user, institution)
            .await
            .unwrap();
        ctx.store
            .save_grant(
                connection.id,
                TokenColumns::default(),
                None,
                None,
                crate::support::by_test(),
            )
            .await
            .unwrap();
        connection.id
    };

    // Another process published Northwind a moment ago; this one has not loaded it.
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/connectors/northwind.toml"),
    )
    .unwrap();
    ctx.store
        .publish_connector(
            "northwind",
            &text,
            &finsync::fingerprint::sha256_hex(text.as_bytes()),
            VersionSource::Api,
            "another process",
            finsync::store::AuditEntry::new(
                finsync::store::Actor::admin("another-process"),
                "test",
            ),
        )
        .await
        .unwrap();
    assert!(ctx.registry.get("northwind").is_err());
    let northwind = connection_at("northwind").await;
    let job = |connection| SyncConnection {
        connection_id: connection,
        idempotency_key: format!("test:{connection}"),
    };
    let outcome = pipeline::run(ctx.clone(), job(northwind), 1).await.unwrap();
    assert_eq!(outcome, SyncOutcome::Skipped);
    assert!(
        ctx.store.runs(northwind).await.unwrap().is_empty(),
        "no failed run"
    );
    assert_eq!(ctx.queue.waiting_for(northwind, "sync").await.unwrap(), 1);
    assert!(
        ctx.store
            .connection(northwind)
            .await
            .unwrap()
            .last_failure_reason
            .is_none()
    );

    // A connector stored nowhere still fails the sync, with the reason recorded.
    let nowhere = connection_at("atlantis").await;
    let outcome = pipeline::run(ctx.clone(), job(nowhere), 1).await.unwrap();
    assert_eq!(outcome, SyncOutcome::Failed);
    assert_eq!(ctx.queue.waiting_for(nowhere, "sync").await.unwrap(), 0);
}
