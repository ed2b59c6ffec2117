//! The operators' status page: a sign-in that only a live operator or admin
//! credential passes (auditors are turned away, a revoked credential's session
//! ends at once), a session cookie that cannot be forged or stretched, forms that
//! only the page can send, each action in the audit trail, and a page that shows an institution's outage (read in headless Chromium
//! at desktop and phone sizes, with screenshots kept in
//! `<target>/tmp/test-artifacts/status-page/`).

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use finsync::sync::SyncConnection;
use finsync_sandbox::{Faults, Institution, Outage};
use tokio::process::Command;

use finsync::store::{Actor, AdminName, AuditEntry, AuditFilter, Role};
use secrecy::ExposeSecret;

use crate::support::{ADMIN_TOKEN, TestApp, csrf_in, eventually, location, wait_until};

/// A credential with `role`, issued as `finsync admins create` does.
async fn credential(app: &TestApp, name: &str, role: Role) -> String {
    let (_, credential) = app
        .app
        .ctx
        .store
        .create_admin(
            &AdminName::parse(name).unwrap(),
            role,
            "cli",
            AuditEntry::new(Actor::cli(), "admin.create"),
        )
        .await
        .unwrap();
    credential.0.expose_secret().to_owned()
}

/// A browser of the status page: keeps its cookies, follows nothing.
#[derive(Default)]
struct Operator {
    cookies: Vec<(String, String)>,
}

impl Operator {
    async fn send(&mut self, request: reqwest::RequestBuilder) -> reqwest::Response {
        let jar: Vec<String> = self
            .cookies
            .iter()
            .map(|(n, v)| format!("{n}={v}"))
            .collect();
        let request = if jar.is_empty() {
            request
        } else {
            request.header(reqwest::header::COOKIE, jar.join("; "))
        };
        let response = request.send().await.unwrap();
        for set in response.headers().get_all(reqwest::header::SET_COOKIE) {
            let pair = set.to_str().unwrap().split(';').next().unwrap().to_owned();
            let (name, value) = pair.split_once('=').unwrap();
            self.cookies.retain(|(n, _)| n != name);
            if !value.is_empty() {
                self.cookies.push((name.to_owned(), value.to_owned()));
            }
        }
        response
    }

    async fn sign_in(&mut self, address: &str, token: &str) -> reqwest::Response {
        let http = finsync::http::client();
        let form = self
            .send(http.get(format!("{address}/status")))
            .await
            .text()
            .await
            .unwrap();
        self.send(
            http.post(format!("{address}/status/login"))
                .form(&[("csrf", csrf_in(&form).as_str()), ("credential", token)]),
        )
        .await
    }
}

#[tokio::test]
async fn only_live_operators_sign_in_and_only_the_page_acts() {
    let app = TestApp::builder().sqlite().tenant("advisor").build().await;
    let connection = app.link_and_sync(app.tenant().id, "demo-alice").await;
    let otto = credential(&app, "otto", Role::Operator).await;
    let audrey = credential(&app, "audrey", Role::Auditor).await;
    let http = finsync::http::client();
    let status = format!("{}/status", app.address);

    // Signed out: the sign-in form, with its own cookie for the form's token.
    let first = http.get(&status).send().await.unwrap();
    assert_eq!(first.status(), 200);
    let cookie = first.headers()["set-cookie"].to_str().unwrap().to_owned();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/status"] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    assert!(first.text().await.unwrap().contains("Credential"));

    // A wrong token, or a form posted from elsewhere (no cookie), signs nobody in.
    let mut intruder = Operator::default();
    let refused = intruder.sign_in(&app.address, "guess").await;
    assert_eq!(refused.status(), 401);
    assert!(
        refused
            .text()
            .await
            .unwrap()
            .contains("not a live admin or operator credential")
    );
    let forged = http
        .post(format!("{}/status/login", app.address))
        .form(&[("csrf", "x"), ("credential", otto.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    assert!(!intruder.cookies.iter().any(|(n, _)| n == "finsync_status"));

    // An auditor reads the audit trail, not this page.
    let mut auditor = Operator::default();
    assert_eq!(auditor.sign_in(&app.address, &audrey).await.status(), 403);
    assert!(!auditor.cookies.iter().any(|(n, _)| n == "finsync_status"));

    // The break-glass token signs in too.
    let mut glass = Operator::default();
    assert_eq!(glass.sign_in(&app.address, ADMIN_TOKEN).await.status(), 303);
    let page = glass.send(http.get(&status)).await.text().await.unwrap();
    assert!(page.contains("signed in as break-glass"), "{page}");

    // An operator: a session cookie, strict and short.
    let mut operator = Operator::default();
    let signed_in = operator.sign_in(&app.address, &otto).await;
    assert_eq!(signed_in.status(), 303);
    let session = signed_in
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|c| c.to_str().unwrap().to_owned())
        .find(|c| c.starts_with("finsync_status="))
        .expect("a session cookie");
    for attribute in [
        "HttpOnly",
        "SameSite=Strict",
        "Path=/status",
        "Max-Age=1800",
    ] {
        assert!(session.contains(attribute), "{session}");
    }
    let page = operator.send(http.get(&status)).await;
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["cache-control"], "no-store");
    let html = page.text().await.unwrap();
    assert!(html.contains("finsync fleet status"), "{html}");
    assert!(html.contains("signed in as admin:otto"), "{html}");
    assert!(html.contains(r#"<tr data-institution="meridian"><th scope="row">Meridian Brokerage</th><td class="ok">ok</td><td class="num">1</td><td class="num">100.0 %</td>"#), "{html}");

    // A session cookie made up, or changed by a character, is no session.
    let (name, value) = operator
        .cookies
        .iter()
        .find(|(n, _)| n == "finsync_status")
        .cloned()
        .unwrap();
    let mut changed = value.clone().into_bytes();
    changed[0] = if changed[0] == b'0' { b'1' } else { b'0' };
    for forged in [String::from_utf8(changed).unwrap(), "0".repeat(64)] {
        let page = http
            .get(&status)
            .header("cookie", format!("{name}={forged}"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(page.contains("Credential"), "back to the sign-in form");
    }

    // Sync now: only with the page's form token.
    let action = format!("{}/status/connections/{connection}/sync", app.address);
    let forged = operator
        .send(http.post(&action).form(&[("csrf", "0")]))
        .await;
    assert_eq!(forged.status(), 403);
    let queued = operator
        .send(
            http.post(&action)
                .form(&[("csrf", csrf_in(&html).as_str())]),
        )
        .await;
    assert_eq!(queued.status(), 303);
    assert_eq!(location(&queued), format!("/status?queued={connection}"));
    // Its run is the connection's second (the link's was the first), finished
    // before the connection is disconnected under it. (A time window could take
    // the link's run for it when the steps above were quick.)
    wait_until("the queued sync", Duration::from_secs(120), || async {
        let runs = app
            .app
            .ctx
            .store
            .runs_since(connection, chrono::DateTime::<chrono::Utc>::MIN_UTC)
            .await
            .unwrap();
        runs.iter().filter(|r| r.outcome == "succeeded").count() >= 2
    })
    .await;

    // A connection that does not sync is not queued.
    app.app
        .ctx
        .disconnect(connection, crate::support::by_test())
        .await
        .unwrap();
    let revoked = operator
        .send(
            http.post(&action)
                .form(&[("csrf", csrf_in(&html).as_str())]),
        )
        .await;
    assert_eq!(revoked.status(), 409);

    // Signing out ends the session.
    let out = operator
        .send(
            http.post(format!("{}/status/logout", app.address))
                .form(&[("csrf", csrf_in(&html).as_str())]),
        )
        .await;
    assert_eq!(out.status(), 303);
    let page = operator.send(http.get(&status)).await.text().await.unwrap();
    assert!(page.contains("Credential"));
    // Even a copy of the cookie kept from before.
    let copied = http
        .get(&status)
        .header("cookie", format!("{name}={value}"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(copied.contains("Credential"), "signed out everywhere");

    // Who signed in and what they did is in the audit trail.
    let trail = app
        .app
        .ctx
        .store
        .audit_entries(
            &AuditFilter {
                actor: Some("admin:otto".into()),
                ..AuditFilter::default()
            },
            None,
            100,
        )
        .await
        .unwrap();
    let actions: Vec<&str> = trail.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(
        actions,
        ["status.sign_in", "status.sync_now", "status.sign_out"]
    );
    assert_eq!(
        trail[1].target.as_deref(),
        Some(format!("connection:{connection}").as_str())
    );

    // Revoking a credential ends its sessions at once.
    let mut again = Operator::default();
    assert_eq!(again.sign_in(&app.address, &otto).await.status(), 303);
    assert!(
        again
            .send(http.get(&status))
            .await
            .text()
            .await
            .unwrap()
            .contains("signed in as admin:otto")
    );
    app.app
        .ctx
        .store
        .revoke_admin("otto", AuditEntry::new(Actor::cli(), "admin.revoke"))
        .await
        .unwrap()
        .unwrap();
    let page = again.send(http.get(&status)).await.text().await.unwrap();
    assert!(page.contains("Credential"), "back to the sign-in form");
}

#[tokio::test]
async fn the_status_page_shows_an_outage_in_a_browser() {
    let modules = std::env::var_os("FINSYNC_BROWSER_NODE_MODULES")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var("HOME").unwrap_or_else(|_| "/tmp".into());
            Path::new(&home).join(".cache/finsync-tools/browser/node_modules")
        });
    assert!(
        modules.join("playwright-core/package.json").exists(),
        "playwright-core not found in {}: run the suite through scripts/test.sh",
        modules.display()
    );
    let app = TestApp::builder()
        .sqlite()
        .tenant("advisor")
        .expect_failed_jobs()
        .build()
        .await;
    let tenant = app.tenant();
    app.link_and_sync_at(tenant.id, "demo-alice", "harbor")
        .await;
    let down = app.link_and_sync(tenant.id, "demo-bob").await;

    // Meridian goes down; the next sync of its connection fails.
    app.sandbox()
        .set_faults(
            Institution::Meridian,
            Faults {
                outage: Some(Outage::ForSecs(600)),
                ..Faults::default()
            },
        )
        .unwrap();
    let since = chrono::Utc::now();
    crate::support::request_sync(
        &app.app.ctx.queue,
        SyncConnection {
            connection_id: down,
            idempotency_key: "test:outage".into(),
        },
    )
    .await;
    let store = app.app.ctx.store.clone();
    eventually("the failed sync", Duration::from_secs(60), || {
        let store = store.clone();
        async move {
            let c = store.connection(down).await.unwrap();
            c.last_failure_at.filter(|at| *at > since)
        }
    })
    .await;

    let operator = credential(&app, "otto", Role::Operator).await;
    let screenshots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("test-artifacts/status-page");
    let _ = std::fs::remove_dir_all(&screenshots);
    let browser = Command::new("node")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/status.mjs"))
        .env("STATUS_URL", format!("{}/status", app.address))
        .env("CREDENTIAL", &operator)
        .env("SCREENSHOTS", &screenshots)
        .env(
            "CHROMIUM",
            std::env::var("FINSYNC_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()),
        )
        .env("NODE_PATH", &modules)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node runs");
    let run = tokio::time::timeout(Duration::from_secs(300), browser.wait_with_output())
        .await
        .expect("the browser run ends within 5 minutes")
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "the browser run failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let seen: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    for view in ["desktop", "mobile"] {
        let institutions = seen[view]["institutions"].as_array().unwrap();
        let health = |id: &str| {
            institutions
                .iter()
                .find(|i| i["id"] == id)
                .map(|i| i["health"].as_str().unwrap().to_owned())
        };
        assert_eq!(
            health("meridian").as_deref(),
            Some("down"),
            "{view}: {seen}"
        );
        assert_eq!(health("harbor").as_deref(), Some("ok"), "{view}: {seen}");
        let failing = seen[view]["failing"].as_array().unwrap();
        assert!(
            failing
                .iter()
                .any(|f| f.as_str().unwrap().contains(&down.to_string())
                    && f.as_str().unwrap().contains("INSTITUTION_UNAVAILABLE")),
            "{view}: {seen}"
        );
        assert_eq!(
            seen[view]["widerThanScreen"], false,
            "{view}: the page fits the screen"
        );
        assert_eq!(
            seen[view]["external"], 0,
            "{view}: nothing loaded from elsewhere"
        );
    }
    let kept = std::fs::read_dir(&screenshots).unwrap().count();
    assert_eq!(kept, 3, "sign-in, desktop and phone screenshots");
}
