//! Interop with a third-party OAuth2 implementation: a connector whose
//! authorization server is the npm package `oauth2-mock-server` (pinned in
//! tests/interop, installed by scripts/test.sh) links, syncs, refreshes ahead of
//! expiry and revokes on disconnect. `tests/interop/institution.js` runs it, holds
//! clients to single-use codes, PKCE, Basic client authentication and rotating
//! refresh tokens through the library's hooks, and serves an account API that
//! accepts only the tokens it issued.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{ChildStdout, Command, Stdio};
use std::time::Duration;

use finsync::domain::{ConnectionStatus, UserId};
use secrecy::SecretString;
use serde_json::Value;

use crate::support::{ADMIN_TOKEN, Proc, TestApp, eventually, unique, wait_until};
use crate::tokens::open_token;

const CLIENT_ID: &str = "finsync-interop";
/// Characters that RFC 6749 §2.3.1 has form-encoded before Basic encoding.
const CLIENT_SECRET: &str = "interop secret/with+odd:chars";
/// Access tokens from the code exchange live this long, so the test can see one
/// come due; refreshed ones live an hour.
const CODE_TOKEN_LIFETIME_SECS: u64 = 6;

/// Where scripts/test.sh installs tests/interop's npm packages, unless
/// `FINSYNC_INTEROP_NODE_MODULES` names another place.
fn node_modules() -> PathBuf {
    std::env::var_os("FINSYNC_INTEROP_NODE_MODULES")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var("HOME").unwrap_or_else(|_| "/tmp".into());
            Path::new(&home).join(".cache/finsync-tools/interop/node_modules")
        })
}

/// The node process serving the authorization server and the account API, and a
/// connectors directory holding its connector file; both go when dropped.
struct Institution {
    /// The authorization server's origin.
    issuer: String,
    /// The account API's origin.
    api: String,
    connectors: PathBuf,
    _process: Proc,
}

impl Drop for Institution {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.connectors);
    }
}

impl Institution {
    fn start() -> Self {
        let modules = node_modules();
        assert!(
            modules.join("oauth2-mock-server/package.json").exists(),
            "oauth2-mock-server not found in {}: run the suite through scripts/test.sh, which installs it, or set FINSYNC_INTEROP_NODE_MODULES",
            modules.display()
        );
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/institution.js");
        let log = std::env::temp_dir().join(unique("finsync-interop-institution"));
        let mut child = Command::new("node")
            .arg(&script)
            .args(["--client-id", CLIENT_ID, "--client-secret", CLIENT_SECRET])
            .args([
                "--code-token-lifetime",
                &CODE_TOKEN_LIFETIME_SECS.to_string(),
            ])
            .args(["--refresh-token-lifetime", "3600"])
            .env("NODE_PATH", &modules)
            // The script exits when its standard input closes, even if this process
            // dies before it can kill it.
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run `node`: {e}; run the suite through scripts/test.sh, which installs Node.js")
            });
        let stdout = child.stdout.take().unwrap();
        let process = Proc {
            name: "oauth2-mock-server institution",
            child,
            log,
        };
        let ready = first_line(stdout);
        let addresses: Value = serde_json::from_str(&ready)
            .unwrap_or_else(|_| panic!("the institution did not start (it printed {ready:?})"));
        let institution = Self {
            issuer: addresses["issuer"].as_str().unwrap().to_owned(),
            api: addresses["api"].as_str().unwrap().to_owned(),
            connectors: std::env::temp_dir().join(unique("finsync-interop-connectors")),
            _process: process,
        };
        std::fs::create_dir_all(&institution.connectors).unwrap();
        let file = institution.connectors.join("lighthouse.toml");
        std::fs::write(&file, institution.connector()).unwrap();
        finsync::connectors::validate_file(&file, None)
            .unwrap_or_else(|problems| panic!("the connector file is invalid: {problems}"));
        institution
    }

    /// What the institution saw: grants issued, refusals, API calls, revocations.
    async fn stats(&self) -> Value {
        finsync::http::client()
            .get(format!("{}/stats", self.api))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// The connector file an admin would write for this institution.
    fn connector(&self) -> String {
        format!(
            r#"name = "Harbor Credit Union"
country = "DE"
products = ["accounts", "transactions"]
base_url = "{api}"

[auth]
type = "oauth2"
authorize_url = "{issuer}/authorize"
token_url = "{issuer}/token"
revocation_url = "{issuer}/revoke"
client_id = "{CLIENT_ID}"
client_secret = {{ env = "HARBOR_CLIENT_SECRET" }}
client_auth = "basic"
scopes = ["openid", "accounts", "transactions"]
pkce = true
rotating_refresh_tokens = true

[endpoints.accounts]
path = "v1/accounts"
records = "$.data[*]"

[endpoints.accounts.fields]
external_id = {{ path = "$.id" }}
account_type = {{ path = "$.kind", map = {{ current = "depository", savings = "depository" }} }}
subtype = {{ path = "$.kind", map = {{ current = "checking", savings = "savings" }} }}
name = {{ path = "$.label" }}
official_name = {{ path = "$.product" }}
mask = {{ path = "$.iban_last4" }}
currency = {{ path = "$.currency" }}
balance_current = {{ path = "$.balance.booked" }}
balance_available = {{ path = "$.balance.available" }}

[endpoints.transactions]
path = "v1/transactions"
records = "$.data[*]"

[endpoints.transactions.fields]
external_id = {{ path = "$.id" }}
account_external_id = {{ path = "$.account" }}
amount = {{ path = "$.amount" }}
currency = {{ path = "$.currency" }}
date = {{ path = "$.booking_date" }}
description = {{ path = "$.text" }}
"#,
            api = self.api,
            issuer = self.issuer,
        )
    }
}

fn first_line(stdout: ChildStdout) -> String {
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    line
}

/// Polls the institution's stats until `done` holds (revocations are recorded once
/// their body has arrived, just after the answer).
async fn wait_stats(institution: &Institution, done: impl Fn(&Value) -> bool) -> Value {
    eventually(
        "the institution to see it",
        Duration::from_secs(5),
        || async {
            let stats = institution.stats().await;
            done(&stats).then_some(stats)
        },
    )
    .await
}

#[tokio::test]
async fn a_third_party_oauth2_server_links_refreshes_and_revokes() {
    let institution = Institution::start();
    let app = TestApp::builder()
        .without_sandbox()
        .postgres()
        .with(|settings| {
            settings.connectors.dir = institution.connectors.clone();
            settings.connectors.secrets.insert(
                "HARBOR_CLIENT_SECRET".into(),
                SecretString::from(CLIENT_SECRET),
            );
        })
        .tenant("advisor")
        .build()
        .await;
    let store = app.app.ctx.store.clone();
    let tenant = app.tenant();
    let key = tenant.bearer().to_owned();

    // Linking follows the server's real redirect back to finsync's callback.
    let linked_at = chrono::Utc::now();
    let user = UserId::parse("lighthouse-user").unwrap();
    let connection = app
        .app
        .linker
        .link_test_user(&finsync::http::client(), tenant.id, &user, "lighthouse")
        .await
        .unwrap();
    app.wait_synced(connection, linked_at).await;
    let record = store.connection(connection).await.unwrap();
    assert_eq!(record.status, ConnectionStatus::Active);
    assert!(
        record.tokens.access_token_expires_at.unwrap()
            <= chrono::Utc::now() + chrono::Duration::seconds(CODE_TOKEN_LIFETIME_SECS as i64),
        "the access token expires when the server's expires_in says"
    );
    let stats = institution.stats().await;
    assert_eq!(stats["grants"]["authorization_code"], 1, "{stats}");
    assert_eq!(stats["refused"], Value::Array(vec![]), "{stats}");

    // The institution's records, stored exactly.
    let snapshot = store.full_snapshot(connection).await.unwrap();
    let mut accounts: Vec<_> = snapshot
        .accounts
        .iter()
        .map(|a| {
            (
                a.external_id.as_str(),
                a.account_type.as_str(),
                a.subtype.as_deref(),
                a.name.as_str(),
                a.mask.as_deref(),
                a.balances.current.to_string(),
                a.balances.available.map(|m| m.to_string()),
            )
        })
        .collect();
    accounts.sort();
    assert_eq!(
        accounts,
        [
            (
                "chk-4821",
                "depository",
                Some("checking"),
                "Everyday Account",
                Some("4821"),
                "2500.10 EUR".to_owned(),
                Some("2450.00 EUR".to_owned()),
            ),
            (
                "sav-0917",
                "depository",
                Some("savings"),
                "Rainy Day Savings",
                Some("0917"),
                "10000.005 EUR".to_owned(),
                None,
            ),
        ]
    );
    let mut transactions: Vec<_> = snapshot
        .transactions
        .iter()
        .map(|t| {
            (
                t.external_id.as_str(),
                t.account_external_id.as_str(),
                t.amount.amount.to_string(),
                t.date.to_string(),
                t.description.as_str(),
            )
        })
        .collect();
    transactions.sort();
    assert_eq!(
        transactions,
        [
            (
                "tx-1001",
                "chk-4821",
                "-42.50".to_owned(),
                "2026-10-30".to_owned(),
                "Groceries"
            ),
            (
                "tx-1002",
                "chk-4821",
                "1850.00".to_owned(),
                "2026-10-31".to_owned(),
                "Salary"
            ),
            (
                "tx-1003",
                "sav-0917",
                "0.005".to_owned(),
                "2026-10-31".to_owned(),
                "Interest"
            ),
        ]
    );

    // The access token comes due; the next sync refreshes it first.
    let first_refresh = open_token(&app, connection, "refresh_token").await;
    let expires_at = record.tokens.access_token_expires_at.unwrap();
    // Expiry is the passing of time: poll the clock against the stored expiry.
    wait_until(
        "the access token to expire",
        Duration::from_secs(30),
        || async { chrono::Utc::now() > expires_at },
    )
    .await;
    let synced_at = chrono::Utc::now();
    let response = finsync::http::client()
        .post(format!("{}/v1/users/{user}/sync", app.address))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    app.wait_synced(connection, synced_at).await;

    let stats = institution.stats().await;
    assert_eq!(stats["grants"]["refresh_token"], 1, "{stats}");
    assert_eq!(stats["refused"], Value::Array(vec![]), "{stats}");
    assert!(
        stats["api"]["accepted"]["refresh_token"].as_u64().unwrap() >= 1,
        "the sync used the refreshed token: {stats}"
    );
    assert_eq!(
        stats["api"]["rejected"], 0,
        "no expired token was presented: {stats}"
    );
    let record = store.connection(connection).await.unwrap();
    assert_eq!(record.status, ConnectionStatus::Active);
    assert!(
        record.tokens.access_token_expires_at.unwrap()
            > chrono::Utc::now() + chrono::Duration::minutes(50),
        "the refreshed token lives as long as the server said"
    );
    let refresh = open_token(&app, connection, "refresh_token").await;
    assert_ne!(refresh, first_refresh, "the rotated refresh token is kept");
    let access = open_token(&app, connection, "access_token").await;

    // Disconnecting revokes the grant at the server.
    let body: Value = finsync::http::client()
        .delete(format!("{}/admin/connections/{connection}", app.address))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["revoked_at_institution"], true, "{body}");
    let stats = wait_stats(&institution, |s| {
        !s["revocations"].as_array().unwrap().is_empty()
    })
    .await;
    assert_eq!(
        stats["revocations"],
        serde_json::json!([{
            "kind": "refresh_token",
            "token_type_hint": "refresh_token",
            "authenticated": true,
        }]),
        "the live refresh token was revoked by the authenticated client"
    );
    let after = finsync::http::client()
        .get(format!("{}/v1/accounts", institution.api))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    assert_eq!(
        after.status(),
        401,
        "the grant has ended at the institution"
    );

    let logs = crate::support::captured_logs();
    for token in [&first_refresh, &refresh, &access] {
        assert!(!logs.contains(token.as_str()), "an issued token was logged");
    }
}
