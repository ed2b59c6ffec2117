//! The API against its own contract: schemathesis (from PyPI, installed by
//! scripts/test.sh) generates requests from `/openapi.json`, valid and invalid,
//! and checks that no answer is a server error or breaks the document.

use std::path::Path;
use std::process::Command;

use finsync::store::Scope;
use secrecy::ExposeSecret;

use crate::support::{ADMIN_TOKEN, TestApp};

/// Checks every answer must pass, by schemathesis's names.
const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,response_headers_conformance";

fn schemathesis() -> String {
    std::env::var("FINSYNC_SCHEMATHESIS").unwrap_or_else(|_| {
        let home = std::env::var("HOME").unwrap_or_else(|_| "/tmp".into());
        format!("{home}/.cache/finsync-tools/venv/bin/schemathesis")
    })
}

/// Runs schemathesis over the operations matching `paths` with `token`, with the
/// path parameters named in `ids` fixed to existing records.
async fn fuzz(app: &TestApp, work: &Path, paths: &str, token: &str, ids: &[(&str, String)]) {
    let binary = schemathesis();
    assert!(
        Path::new(&binary).exists(),
        "schemathesis not found at {binary}: run the suite through scripts/test.sh, which installs it, or set FINSYNC_SCHEMATHESIS"
    );
    // No cache or example database in the working tree; path ids that exist, so
    // requests reach real data while queries and bodies are generated.
    let mut config =
        String::from("[cache]\nenabled = false\n[generation]\ndatabase = \"none\"\n[parameters]\n");
    for (name, value) in ids {
        config.push_str(&format!("\"path.{name}\" = \"{value}\"\n"));
    }
    std::fs::write(work.join("schemathesis.toml"), config).unwrap();
    let url = format!("{}/openapi.json", app.address);
    let (work, token, paths) = (work.to_owned(), token.to_owned(), paths.to_owned());
    let output = tokio::task::spawn_blocking(move || {
        Command::new(binary)
            .current_dir(&work)
            .env("HYPOTHESIS_STORAGE_DIRECTORY", work.join("hypothesis"))
            .env("NO_COLOR", "1")
            .args(["--config-file", "schemathesis.toml", "run", &url])
            .args(["-H", &format!("Authorization: Bearer {token}")])
            .args(["--include-path-regex", &paths])
            .args(["--checks", CHECKS])
            .args(["--phases", "examples,coverage,fuzzing"])
            .args(["--max-examples", "30", "--seed", "20261122"])
            .args(["--request-timeout", "10", "--no-color"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let report = format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    // Shown with `--nocapture`; the harness keeps it for a failing run.
    println!("{report}");
    assert!(
        output.status.success(),
        "schemathesis found problems:\n{report}"
    );
    // e.g. "394 generated, 394 passed": something ran, and all of it passed.
    let counts = report
        .lines()
        .find(|l| l.contains(" generated, "))
        .unwrap_or_else(|| panic!("no test case summary:\n{report}"));
    let numbers: Vec<u64> = counts
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect();
    assert!(
        numbers.len() == 2 && numbers[0] > 50 && numbers[0] == numbers[1],
        "{report}"
    );
}

#[tokio::test]
async fn the_api_keeps_its_contract_under_generated_requests() {
    let app = TestApp::builder()
        .sqlite()
        // The per-key limit is tested elsewhere; here it would only answer 429.
        .with(|settings| {
            settings.server.rate_limit_per_second = 100_000;
            settings.server.rate_limit_burst = 100_000;
        })
        .tenant("advisor")
        .build()
        .await;
    let store = &app.app.ctx.store;
    let (tenant, key) = (app.tenant(), &app.tenant().key);
    let connection = app.link_and_sync(tenant.id, "demo-alice").await;
    let sync = store
        .create_sync_request(
            tenant.id,
            &finsync::domain::UserId::parse("demo-alice").unwrap(),
            &[connection],
        )
        .await
        .unwrap();
    let (spare, _) = store
        .issue_api_key(
            tenant.id,
            &[Scope::Read],
            Some("spare"),
            crate::support::by_test(),
        )
        .await
        .unwrap();

    let hook = finsync::webhooks::outbound::register_endpoint(
        store,
        &app.app.linker.vault,
        tenant.id,
        "http://127.0.0.1:9/hook",
        &[finsync::webhooks::outbound::WebhookEvent::SyncCompleted],
        true,
    )
    .await
    .unwrap();

    let transaction = store.full_snapshot(connection).await.unwrap().transactions[0]
        .external_id
        .clone();

    let work = std::env::temp_dir().join(crate::support::unique("finsync-contract"));
    std::fs::create_dir_all(&work).unwrap();
    let user = ("user_id", "demo-alice".to_owned());
    fuzz(
        &app,
        &work,
        "^/(v1|healthz|readyz)",
        key.0.expose_secret(),
        &[
            user.clone(),
            ("sync_id", sync.id),
            ("webhook_id", hook.endpoint.id.to_string()),
            ("transaction_id", transaction),
        ],
    )
    .await;
    // Last: these may disconnect the user or revoke the spare key.
    fuzz(
        &app,
        &work,
        "^/admin/",
        ADMIN_TOKEN,
        &[
            user,
            ("tenant_id", tenant.id.to_string()),
            ("connection_id", connection.to_string()),
            ("key_id", spare.id),
        ],
    )
    .await;
    std::fs::remove_dir_all(&work).unwrap();
}
