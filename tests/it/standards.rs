//! Institutions that speak an open-banking standard, through the shipped profile of
//! that standard: Pinecrest (FDX 6) and Albion (UK Open Banking) are each described
//! by a file that only `extends` its standard's profile and sets its own values, and
//! what finsync stores equals what the institution serves, value for value, across
//! epochs: balances chosen by account category or by type, signs from
//! `debitCreditMemo` or `CreditDebitIndicator`, holdings with identifiers picked from
//! `securityIds` by type, transactions asked per account and paged by `Links.Next`.
//! One account whose data the institution cannot serve leaves the others synced and
//! its own stored data as it was.

use std::collections::BTreeMap;
use std::time::Duration;

use finsync::domain::{ConnectionId, Snapshot};
use finsync_sandbox::data::Portfolio;
use finsync_sandbox::{Faults, Institution};
use rust_decimal::{Decimal, RoundingStrategy};

use crate::support::TestApp;

/// Money with the other sign, digits kept.
fn negated(text: &str) -> String {
    match text.strip_prefix('-') {
        Some(magnitude) => magnitude.to_owned(),
        None if text.chars().all(|c| c == '0' || c == '.') => text.to_owned(),
        None => format!("-{text}"),
    }
}

/// The security type finsync stores for the generator's, through FDX's `holdingType`
/// (which has no ETF: an ETF is a STOCK).
fn fdx_security_type(generated: &str) -> &'static str {
    match generated {
        "mutual fund" => "mutual_fund",
        "fixed income" => "fixed_income",
        _ => "equity",
    }
}

/// How far back an incremental sync of the `fdx` profile reads transactions again.
const LOOKBACK_DAYS: u64 = 10;

/// Asserts that what finsync stored of a Pinecrest user is what Pinecrest serves of
/// `portfolio`, for every account but `except`. With `incremental`, transactions the
/// institution removed before the look-back may still be stored: only a deep sync
/// reads that far again.
fn assert_matches_fdx(
    stored: &Snapshot,
    portfolio: &Portfolio,
    except: Option<&str>,
    incremental: bool,
) {
    let wanted = |account: &str| except != Some(account);
    let accounts: Vec<_> = portfolio
        .accounts
        .iter()
        .filter(|a| wanted(&a.account_id))
        .collect();
    assert!(accounts.iter().any(|a| a.account_type == "investment"));
    for e in &accounts {
        let a = stored
            .accounts
            .iter()
            .find(|a| a.external_id == e.account_id)
            .unwrap_or_else(|| panic!("account {} stored", e.account_id));
        assert_eq!(a.name, e.name);
        assert_eq!(a.official_name.as_deref(), Some(e.official_name.as_str()));
        assert_eq!(a.mask.as_deref(), Some(e.mask.as_str()));
        assert_eq!(a.account_type.as_str(), e.account_type);
        assert_eq!(
            a.subtype.as_deref(),
            Some(e.subtype.to_uppercase().replace(' ', "_").as_str())
        );
        assert_eq!(a.currency.as_str(), e.balances.iso_currency_code);
        // currentBalance for a deposit account, currentValue for an investment one.
        assert_eq!(
            a.balances.current.amount.to_string(),
            e.balances.current,
            "balance of {}",
            e.account_id
        );
        assert_eq!(
            a.balances.available.map(|m| m.amount.to_string()),
            e.balances.available.clone()
        );
    }

    // Cash is an investment account's available cash, not a position.
    let holdings: Vec<_> = portfolio
        .holdings
        .iter()
        .filter(|h| wanted(&h.account_id) && h.security.security_type != "cash")
        .collect();
    assert!(!holdings.is_empty());
    let stored_holdings: Vec<_> = stored
        .holdings
        .iter()
        .filter(|h| wanted(&h.account_external_id))
        .collect();
    assert_eq!(stored_holdings.len(), holdings.len(), "holdings");
    for e in &holdings {
        let ticker = &e.security.ticker_symbol;
        let h = stored_holdings
            .iter()
            .find(|h| h.account_external_id == e.account_id && &h.security_external_id == ticker)
            .unwrap_or_else(|| panic!("holding of {ticker} stored"));
        assert_eq!(h.quantity.to_string(), e.quantity, "units of {ticker}");
        assert_eq!(
            h.price.as_ref().map(|m| m.amount.to_string()),
            Some(e.institution_price.clone())
        );
        assert_eq!(
            h.value.as_ref().map(|m| m.amount.to_string()),
            Some(e.institution_value.clone())
        );
        assert_eq!(
            h.cost_basis.as_ref().map(|m| m.amount.to_string()),
            Some(e.cost_basis.clone())
        );
        assert_eq!(h.as_of, Some(e.institution_price_as_of));
        let s = stored
            .securities
            .iter()
            .find(|s| &s.external_id == ticker)
            .unwrap_or_else(|| panic!("security {ticker} stored"));
        // Picked out of `securityIds` by `idType`.
        assert_eq!(s.cusip, e.security.cusip, "CUSIP of {ticker}");
        assert_eq!(s.isin, e.security.isin, "ISIN of {ticker}");
        assert_eq!(s.ticker.as_deref(), Some(ticker.as_str()));
        assert_eq!(s.name, e.security.name);
        assert_eq!(
            s.security_type.as_str(),
            fdx_security_type(&e.security.security_type)
        );
    }

    let ticker = |security_id: &str| {
        portfolio
            .holdings
            .iter()
            .find(|h| h.security.security_id == security_id)
            .map(|h| h.security.ticker_symbol.clone())
    };
    let transactions: Vec<_> = portfolio
        .transactions
        .iter()
        .filter(|t| wanted(&t.account_id))
        .collect();
    assert!(transactions.iter().any(|t| t.pending));
    assert!(transactions.iter().any(|t| t.investment_type.is_some()));
    let stored_transactions: Vec<_> = stored
        .transactions
        .iter()
        .filter(|t| wanted(&t.account_external_id))
        .collect();
    let lookback = chrono::Utc::now().date_naive() - chrono::Days::new(LOOKBACK_DAYS);
    let extra: Vec<_> = stored_transactions
        .iter()
        .filter(|t| {
            !transactions
                .iter()
                .any(|e| e.transaction_id == t.external_id)
        })
        .filter(|t| !incremental || t.date >= lookback)
        .collect();
    assert!(extra.is_empty(), "stored, not served: {extra:#?}");
    for e in &transactions {
        let t = stored_transactions
            .iter()
            .find(|t| t.external_id == e.transaction_id)
            .unwrap_or_else(|| panic!("transaction {} stored", e.transaction_id));
        if incremental && e.date < lookback {
            // A correction this old waits for the deep sync.
            continue;
        }
        // The generator's amounts are money out positive; FDX sends them unsigned with
        // DEBIT, CREDIT or MEMO beside them; finsync stores money in positive.
        assert_eq!(
            t.amount.amount.to_string(),
            negated(&e.amount),
            "amount of {}",
            e.transaction_id
        );
        assert_eq!(t.amount.currency.as_str(), e.iso_currency_code);
        assert_eq!(t.account_external_id, e.account_id);
        assert_eq!(t.date, e.date);
        assert_eq!(
            t.status.as_str(),
            if e.pending { "pending" } else { "posted" }
        );
        assert_eq!(t.description, e.name);
        assert_eq!(t.category, e.category);
        assert_eq!(
            t.investment_type.map(|i| i.as_str().to_owned()),
            e.investment_type.clone()
        );
        assert_eq!(
            t.security_external_id,
            e.security_id.as_deref().and_then(ticker)
        );
        assert_eq!(t.quantity.map(|q| q.to_string()), e.quantity.clone());
        assert_eq!(t.price.map(|p| p.to_string()), e.price.clone());
    }
}

/// What is stored of one account: the account, its holdings, its transactions.
fn of_account(stored: &Snapshot, account: &str) -> String {
    let mut out = BTreeMap::new();
    out.insert(
        "account",
        format!(
            "{:?}",
            stored
                .accounts
                .iter()
                .find(|a| a.external_id == account)
                .map(|a| (&a.name, &a.balances.current, &a.balances.available))
        ),
    );
    out.insert(
        "holdings",
        format!(
            "{:?}",
            stored
                .holdings
                .iter()
                .filter(|h| h.account_external_id == account)
                .collect::<Vec<_>>()
        ),
    );
    let mut transactions: Vec<_> = stored
        .transactions
        .iter()
        .filter(|t| t.account_external_id == account)
        .collect();
    transactions.sort_by(|a, b| a.external_id.cmp(&b.external_id));
    out.insert("transactions", format!("{transactions:?}"));
    format!("{out:?}")
}

/// Makes the connection's deep sync due now: the clock is moved, not waited for.
async fn deep_sync_due(app: &TestApp, connection: ConnectionId) {
    use sea_orm::ConnectionTrait;
    let db = sea_orm::Database::connect(&app.db().url).await.unwrap();
    db.execute_unprepared(&format!(
        "UPDATE connections SET deep_sync_due_at = now() - interval '1 second' WHERE id = '{connection}'"
    ))
    .await
    .unwrap();
}

/// Asks for a sync of the user's connections as an app does and returns the sync's
/// status once it is final.
async fn sync_through_api(app: &TestApp, user: &str) -> serde_json::Value {
    let bearer = app.tenant().bearer();
    let requested: serde_json::Value = finsync::http::client()
        .post(format!("{}/v1/users/{user}/sync", app.address))
        .bearer_auth(bearer)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let path = format!("/v1/syncs/{}", requested["id"].as_str().expect("a sync id"));
    crate::support::eventually("the sync to finish", Duration::from_secs(60), || async {
        let body = app.get_json(&path, bearer).await;
        (!matches!(body["status"].as_str(), Some("queued" | "running"))).then_some(body)
    })
    .await
}

#[tokio::test]
async fn an_fdx_institution_syncs_through_the_shipped_profile_value_for_value() {
    let app = TestApp::builder()
        .postgres()
        .tenant("advisor")
        .build()
        .await;
    let connector = app.app.ctx.registry.get("pinecrest").unwrap();
    assert_eq!(connector.profile.as_deref(), Some("fdx"));
    let sandbox = app.sandbox();
    let store = &app.app.ctx.store;
    let tenant = app.tenant();
    let user = "demo-alice";
    let connection = app.link_and_sync_at(tenant.id, user, "pinecrest").await;
    let stored = store.full_snapshot(connection).await.unwrap();
    assert_matches_fdx(
        &stored,
        &sandbox.portfolio(Institution::Pinecrest, user),
        None,
        false,
    );
    let cursor = store.connection(connection).await.unwrap().sync_cursor;
    let cursor = finsync::connectors::SyncCursor::decode(&cursor.unwrap(), &connector.hash);
    match cursor.map(|c| c.position) {
        Some(finsync::connectors::Position::PerAccount(by)) => {
            assert_eq!(by.len(), stored.accounts.len(), "{by:?}")
        }
        other => panic!("each account resumes from its own place: {other:?}"),
    }

    // The institution's data moves on: pending debits post under new ids, transactions
    // change or disappear, prices move. Each incremental sync, each account from its
    // own place in the date windows, leaves what the institution serves.
    for epoch in 1..=3 {
        assert_eq!(sandbox.advance(), epoch);
        app.resync(connection, &format!("pinecrest-{epoch}")).await;
        let stored = store.full_snapshot(connection).await.unwrap();
        assert_matches_fdx(
            &stored,
            &sandbox.portfolio(Institution::Pinecrest, user),
            None,
            true,
        );
    }
    // The deep sync (its time moved, not waited for) reads every window again.
    deep_sync_due(&app, connection).await;
    app.resync(connection, "pinecrest-deep").await;
    assert_matches_fdx(
        &store.full_snapshot(connection).await.unwrap(),
        &sandbox.portfolio(Institution::Pinecrest, user),
        None,
        false,
    );
    let runs = store.runs(connection).await.unwrap();
    assert!(runs.iter().any(|r| r.removed > 0), "{runs:?}");
    assert!(runs.iter().all(|r| r.outcome == "succeeded"), "{runs:?}");
}

#[tokio::test]
async fn one_account_the_institution_cannot_serve_leaves_the_others_synced_and_itself_as_stored() {
    let app = TestApp::builder()
        .postgres()
        .tenant("advisor")
        .build()
        .await;
    let sandbox = app.sandbox();
    let store = &app.app.ctx.store;
    let tenant = app.tenant();
    let user = "demo-alice";
    let connection = app.link_and_sync_at(tenant.id, user, "pinecrest").await;
    let before = store.full_snapshot(connection).await.unwrap();
    let portfolio = sandbox.portfolio(Institution::Pinecrest, user);
    assert_matches_fdx(&before, &portfolio, None, false);
    let broken = portfolio
        .accounts
        .iter()
        .find(|a| a.account_type == "investment")
        .map(|a| a.account_id.clone())
        .expect("an investment account");

    for (round, failing) in [
        // Its transactions answer 500; its balances and holdings still come.
        format!("{broken}/transactions"),
        // Its details answer 500 too: the account itself cannot be read.
        broken.clone(),
    ]
    .into_iter()
    .enumerate()
    {
        sandbox
            .set_faults(
                Institution::Pinecrest,
                Faults {
                    failing_paths: vec![failing.clone()],
                    ..Faults::default()
                },
            )
            .unwrap();
        let kept = store.full_snapshot(connection).await.unwrap();
        sandbox.advance();
        if round == 0 {
            // Asked by the app, which hears which account was not read, and why.
            let done = sync_through_api(&app, user).await;
            assert_eq!(done["status"], "succeeded", "{done}");
            let unread = &done["connections"][0]["accounts_unread"];
            assert_eq!(unread.as_array().map(Vec::len), Some(1), "{done}");
            assert_eq!(unread[0]["account_id"], broken.as_str());
            assert_eq!(unread[0]["endpoint"], "transactions");
            let reason = unread[0]["reason"].as_str().unwrap();
            assert!(reason.starts_with("INSTITUTION_UNAVAILABLE: "), "{reason}");
            // Each account says how fresh it is: the broken one as of the sync
            // before, failing since this one; the others as of this one.
            let synced = store.connection(connection).await.unwrap().last_synced_at;
            let accounts = app
                .get_json(&format!("/v1/users/{user}/accounts"), tenant.bearer())
                .await;
            for account in accounts["accounts"].as_array().unwrap() {
                let sync = &account["sync"];
                if account["id"] == broken.as_str() {
                    assert_eq!(sync["last_fetch_failed"], true, "{account}");
                    assert!(
                        sync["failure"]
                            .as_str()
                            .unwrap()
                            .starts_with("transactions: INSTITUTION_UNAVAILABLE: "),
                        "{account}"
                    );
                    let refreshed: chrono::DateTime<chrono::Utc> =
                        serde_json::from_value(sync["refreshed_at"].clone()).unwrap();
                    assert!(Some(refreshed) < synced, "{account}");
                    assert!(sync["failing_since"].is_string());
                } else {
                    assert_eq!(sync["last_fetch_failed"], false, "{account}");
                    let refreshed: chrono::DateTime<chrono::Utc> =
                        serde_json::from_value(sync["refreshed_at"].clone()).unwrap();
                    assert_eq!(Some(refreshed), synced, "{account}");
                }
            }
        } else {
            app.resync(connection, &format!("pinecrest-broken-{round}"))
                .await;
        }
        let after = store.full_snapshot(connection).await.unwrap();
        let moved = sandbox.portfolio(Institution::Pinecrest, user);
        assert_matches_fdx(&after, &moved, Some(&broken), true);
        if failing.ends_with("/transactions") {
            let old: Vec<_> = kept
                .transactions
                .iter()
                .filter(|t| t.account_external_id == broken)
                .collect();
            let new: Vec<_> = after
                .transactions
                .iter()
                .filter(|t| t.account_external_id == broken)
                .collect();
            assert_eq!(old, new, "{failing}: its transactions stay as stored");
        } else {
            assert_eq!(
                of_account(&after, &broken),
                of_account(&kept, &broken),
                "{failing}: the account stays as stored"
            );
        }
        let runs = store.runs(connection).await.unwrap();
        assert_eq!(runs[0].outcome, "succeeded", "{runs:?}");
        let unread = finsync::store::unread_accounts(&runs[0]).unwrap();
        assert!(
            !unread.is_empty() && unread.iter().all(|u| u.account_id == broken),
            "{unread:?}"
        );
        if round == 1 {
            assert!(
                unread.iter().all(|u| u.endpoint.starts_with("details.")),
                "nothing else of an account whose details failed is asked: {unread:?}"
            );
        }
    }

    // Served again, the account catches up with the rest.
    sandbox
        .set_faults(Institution::Pinecrest, Faults::default())
        .unwrap();
    app.resync(connection, "pinecrest-mended").await;
    let runs = store.runs(connection).await.unwrap();
    assert_eq!(finsync::store::unread_accounts(&runs[0]).unwrap(), []);
    let accounts = app
        .get_json(&format!("/v1/users/{user}/accounts"), tenant.bearer())
        .await;
    assert!(
        accounts["accounts"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["sync"]["last_fetch_failed"] == false && a["sync"]["failure"].is_null()),
        "{accounts}"
    );
    let after = store.full_snapshot(connection).await.unwrap();
    assert_matches_fdx(
        &after,
        &sandbox.portfolio(Institution::Pinecrest, user),
        None,
        true,
    );
}

/// Albion's money: pence, rounded half away from zero, within UK Open Banking's 13
/// whole digits (the generator's stress amounts keep their last 13), with the
/// generator's sign turned into finsync's (its money out is positive for
/// transactions).
fn pence(text: &str, negate: bool) -> String {
    let value: Decimal = text.parse().unwrap();
    let value = value % Decimal::from(10_000_000_000_000_i64);
    let mut rounded = value.round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero);
    rounded.rescale(2);
    if negate {
        rounded = -rounded;
    }
    if rounded.is_zero() {
        rounded.set_sign_positive(true);
    }
    rounded.to_string()
}

/// Asserts that what finsync stored of an Albion user is what Albion serves of
/// `portfolio`: its current and savings accounts in sterling and their activity.
fn assert_matches_uk(stored: &Snapshot, portfolio: &Portfolio, incremental: bool) {
    let accounts: Vec<_> = portfolio
        .accounts
        .iter()
        .filter(|a| a.account_type == "depository")
        .collect();
    assert!(!accounts.is_empty());
    assert_eq!(stored.accounts.len(), accounts.len(), "accounts");
    for e in &accounts {
        let a = stored
            .accounts
            .iter()
            .find(|a| a.external_id == e.account_id)
            .unwrap_or_else(|| panic!("account {} stored", e.account_id));
        assert_eq!(a.name, e.name);
        assert_eq!(a.official_name.as_deref(), Some(e.official_name.as_str()));
        assert_eq!(a.account_type.as_str(), "depository");
        let subtype = if e.subtype == "savings" {
            "Savings"
        } else {
            "CurrentAccount"
        };
        assert_eq!(a.subtype.as_deref(), Some(subtype));
        assert_eq!(a.currency.as_str(), "GBP");
        // The InterimBooked balance, its sign from its CreditDebitIndicator.
        assert_eq!(
            a.balances.current.amount.to_string(),
            pence(&e.balances.current, false),
            "balance of {}",
            e.account_id
        );
        assert_eq!(
            a.balances.available.map(|m| m.amount.to_string()),
            e.balances.available.as_deref().map(|t| pence(t, false))
        );
    }
    assert!(stored.holdings.is_empty());

    let transactions: Vec<_> = portfolio
        .transactions
        .iter()
        .filter(|t| {
            t.investment_type.is_none() && accounts.iter().any(|a| a.account_id == t.account_id)
        })
        .collect();
    assert!(transactions.iter().any(|t| t.pending));
    let lookback = chrono::Utc::now().date_naive() - chrono::Days::new(LOOKBACK_DAYS);
    let extra: Vec<_> = stored
        .transactions
        .iter()
        .filter(|t| {
            !transactions
                .iter()
                .any(|e| e.transaction_id == t.external_id)
        })
        .filter(|t| !incremental || t.date >= lookback)
        .collect();
    assert!(extra.is_empty(), "stored, not served: {extra:#?}");
    for e in &transactions {
        let t = stored
            .transactions
            .iter()
            .find(|t| t.external_id == e.transaction_id)
            .unwrap_or_else(|| panic!("transaction {} stored", e.transaction_id));
        if incremental && e.date < lookback {
            continue;
        }
        assert_eq!(
            t.amount.amount.to_string(),
            pence(&e.amount, true),
            "amount of {}",
            e.transaction_id
        );
        assert_eq!(t.amount.currency.as_str(), "GBP");
        assert_eq!(t.account_external_id, e.account_id);
        assert_eq!(t.date, e.date);
        assert_eq!(
            t.status.as_str(),
            if e.pending { "pending" } else { "posted" }
        );
        assert_eq!(t.description, e.name);
    }
}

#[tokio::test]
async fn a_uk_open_banking_institution_syncs_through_the_shipped_profile_value_for_value() {
    let app = TestApp::builder()
        .postgres()
        .tenant("advisor")
        .build()
        .await;
    let connector = app.app.ctx.registry.get("albion").unwrap();
    assert_eq!(connector.profile.as_deref(), Some("uk-open-banking"));
    let sandbox = app.sandbox();
    let store = &app.app.ctx.store;
    let tenant = app.tenant();
    let user = "demo-alice";
    let connection = app.link_and_sync_at(tenant.id, user, "albion").await;
    assert_matches_uk(
        &store.full_snapshot(connection).await.unwrap(),
        &sandbox.portfolio(Institution::Albion, user),
        false,
    );
    for epoch in 1..=3 {
        assert_eq!(sandbox.advance(), epoch);
        app.resync(connection, &format!("albion-{epoch}")).await;
        assert_matches_uk(
            &store.full_snapshot(connection).await.unwrap(),
            &sandbox.portfolio(Institution::Albion, user),
            true,
        );
    }
    deep_sync_due(&app, connection).await;
    app.resync(connection, "albion-deep").await;
    assert_matches_uk(
        &store.full_snapshot(connection).await.unwrap(),
        &sandbox.portfolio(Institution::Albion, user),
        false,
    );
    let runs = store.runs(connection).await.unwrap();
    assert!(runs.iter().any(|r| r.removed > 0), "{runs:?}");
    assert!(runs.iter().all(|r| r.outcome == "succeeded"), "{runs:?}");
}

/// Stoplight Prism in validating-proxy mode, run for one test: every request sent to
/// it and every answer it relays is checked against a published OpenAPI document,
/// and a violation is answered as an error instead of being passed on.
struct Prism {
    child: std::process::Child,
    url: String,
}

impl Prism {
    /// Where `scripts/test.sh` installs Prism (`tests/contracts/package-lock.json`), or
    /// where `FINSYNC_CONTRACTS_NODE_MODULES` says.
    fn binary() -> std::path::PathBuf {
        let modules = std::env::var_os("FINSYNC_CONTRACTS_NODE_MODULES")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| {
                let home = std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into());
                std::path::Path::new(&home).join(".cache/finsync-tools/contracts/node_modules")
            });
        let prism = modules.join(".bin/prism");
        assert!(
            prism.exists(),
            "Prism not found at {}: run the suite through scripts/test.sh, which installs it, or set FINSYNC_CONTRACTS_NODE_MODULES",
            prism.display()
        );
        prism
    }

    async fn proxy(spec: &str, upstream: &str) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let spec = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(spec);
        let log = std::env::temp_dir().join(crate::support::unique("prism-log"));
        let child = std::process::Command::new(Self::binary())
            .arg("proxy")
            .arg(&spec)
            .arg(upstream)
            .args([
                "--errors",
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
            ])
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let prism = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let http = finsync::http::client();
        let probe = format!("{}/accounts", prism.url);
        crate::support::wait_until(
            "Prism to listen",
            std::time::Duration::from_secs(60),
            || {
                let http = http.clone();
                let probe = probe.clone();
                async move { http.get(&probe).send().await.is_ok() }
            },
        )
        .await;
        prism
    }
}

impl Drop for Prism {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// finsync syncs Albion through Prism holding the UK Open Banking Account and
/// Transaction API document (v3.1.11, shipped with attribution): a request finsync
/// sends or an answer the sandbox gives that breaks the published spec fails the
/// sync, and so this test.
#[tokio::test]
async fn the_uk_profile_and_the_sandbox_keep_to_the_published_open_banking_spec() {
    let sandbox = crate::support::spawn_sandbox(finsync_sandbox::SandboxConfig::default()).await;
    let upstream = sandbox.api_base(Institution::Albion);
    let prism = Prism::proxy(
        "tests/contracts/uk-open-banking/account-info-openapi.yaml",
        upstream.trim_end_matches('/'),
    )
    .await;
    // Links in Albion's answers point where finsync reaches it: the proxy.
    sandbox.set_public_base(Institution::Albion, Some(prism.url.clone()));

    // Albion's connector, pointed at the proxy for data and at the sandbox for OAuth.
    let dir = std::env::temp_dir().join(crate::support::unique("finsync-contract-connectors"));
    std::fs::create_dir_all(&dir).unwrap();
    let shipped = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("connectors/albion.toml"),
    )
    .unwrap();
    let oauth = format!("{}/albion/oauth", sandbox.base_url());
    let text = shipped
        .replace(
            "base_url = \"http://127.0.0.1:8091/albion/open-banking/v3.1/aisp/\"",
            &format!("base_url = \"{}/\"", prism.url),
        )
        .replace("\"../../../oauth/", &format!("\"{oauth}/"));
    assert_ne!(text, shipped);
    std::fs::write(dir.join("albion.toml"), &text).unwrap();
    let app = TestApp::builder()
        .postgres()
        .without_sandbox()
        .tenant("advisor")
        .with(|settings| settings.connectors.dir = dir.clone())
        .build()
        .await;
    let store = &app.app.ctx.store;
    let user = "demo-alice";
    let connection = app.link_and_sync_at(app.tenant().id, user, "albion").await;
    assert_matches_uk(
        &store.full_snapshot(connection).await.unwrap(),
        &sandbox.portfolio(Institution::Albion, user),
        false,
    );
    sandbox.advance();
    app.resync(connection, "albion-contract-1").await;
    assert_matches_uk(
        &store.full_snapshot(connection).await.unwrap(),
        &sandbox.portfolio(Institution::Albion, user),
        true,
    );

    // The proxy does check: a request out of spec is refused, and so is an answer.
    let token = app
        .app
        .ctx
        .tokens
        .access_token(&store.connection(connection).await.unwrap())
        .await
        .unwrap();
    let http = finsync::http::client();
    let account = &store.full_snapshot(connection).await.unwrap().accounts[0].external_id;
    let transactions = format!("{}/accounts/{account}/transactions", prism.url);
    let bad_request = http
        .get(&transactions)
        .bearer_auth(secrecy::ExposeSecret::expose_secret(&token))
        .query(&[("fromBookingDateTime", "yesterday")])
        .send()
        .await
        .unwrap();
    assert_eq!(
        bad_request.status(),
        422,
        "{}",
        bad_request.text().await.unwrap()
    );
    sandbox
        .set_faults(
            Institution::Albion,
            Faults {
                drift: Some(finsync_sandbox::Drift {
                    from: "CreditDebitIndicator".into(),
                    to: "Indicator".into(),
                }),
                ..Faults::default()
            },
        )
        .unwrap();
    let bad_answer = http
        .get(&transactions)
        .bearer_auth(secrecy::ExposeSecret::expose_secret(&token))
        .send()
        .await
        .unwrap();
    assert!(
        !bad_answer.status().is_success(),
        "Prism relayed an answer without CreditDebitIndicator: {}",
        bad_answer.text().await.unwrap()
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The security type finsync stores for the generator's (Plaid's words).
fn plaid_security_type(generated: &str) -> &'static str {
    match generated {
        "mutual fund" => "mutual_fund",
        "fixed income" => "fixed_income",
        "etf" => "etf",
        "cash" => "cash",
        _ => "equity",
    }
}

/// Asserts that what finsync stored of a Larkspur user is what Larkspur serves of
/// `portfolio`: every account, holdings with the securities they name, and the cash
/// activity its change feed carries.
fn assert_matches_plaid(stored: &Snapshot, portfolio: &Portfolio) {
    assert_eq!(stored.accounts.len(), portfolio.accounts.len(), "accounts");
    for e in &portfolio.accounts {
        let a = stored
            .accounts
            .iter()
            .find(|a| a.external_id == e.account_id)
            .unwrap_or_else(|| panic!("account {} stored", e.account_id));
        assert_eq!(a.name, e.name);
        assert_eq!(a.mask.as_deref(), Some(e.mask.as_str()));
        assert_eq!(a.account_type.as_str(), e.account_type);
        assert_eq!(a.balances.current.amount.to_string(), e.balances.current);
        assert_eq!(
            a.balances.available.map(|m| m.amount.to_string()),
            e.balances.available.clone()
        );
    }
    assert_eq!(stored.holdings.len(), portfolio.holdings.len(), "holdings");
    for e in &portfolio.holdings {
        let id = &e.security.security_id;
        let h = stored
            .holdings
            .iter()
            .find(|h| h.account_external_id == e.account_id && &h.security_external_id == id)
            .unwrap_or_else(|| panic!("holding of {id} stored"));
        assert_eq!(h.quantity.to_string(), e.quantity);
        assert_eq!(
            h.value.as_ref().map(|m| m.amount.to_string()),
            Some(e.institution_value.clone())
        );
        // Joined from the answer's `securities` by `security_id`.
        let s = stored
            .securities
            .iter()
            .find(|s| &s.external_id == id)
            .unwrap_or_else(|| panic!("security {id} stored"));
        assert_eq!(s.ticker.as_deref(), Some(e.security.ticker_symbol.as_str()));
        assert_eq!(s.cusip, e.security.cusip);
        assert_eq!(s.isin, e.security.isin);
        assert_eq!(s.name, e.security.name);
        assert_eq!(
            s.security_type.as_str(),
            plaid_security_type(&e.security.security_type)
        );
        assert_eq!(
            s.price.map(|p| p.to_string()),
            Some(e.security.close_price.clone())
        );
    }
    let transactions: Vec<_> = portfolio
        .transactions
        .iter()
        .filter(|t| t.investment_type.is_none())
        .collect();
    assert!(transactions.iter().any(|t| t.pending));
    assert_eq!(
        stored.transactions.len(),
        transactions.len(),
        "transactions"
    );
    for e in &transactions {
        let t = stored
            .transactions
            .iter()
            .find(|t| t.external_id == e.transaction_id)
            .unwrap_or_else(|| panic!("transaction {} stored", e.transaction_id));
        assert_eq!(t.amount.amount.to_string(), negated(&e.amount));
        assert_eq!(t.date, e.date);
        assert_eq!(
            t.status.as_str(),
            if e.pending { "pending" } else { "posted" }
        );
        assert_eq!(t.pending_external_id, e.pending_transaction_id);
        assert_eq!(t.description, e.name);
        assert_eq!(t.category, e.category);
    }
}

#[tokio::test]
async fn a_plaid_shaped_aggregator_syncs_through_the_shipped_profile_value_for_value() {
    let app = TestApp::builder()
        .postgres()
        .tenant("advisor")
        .build()
        .await;
    let connector = app.app.ctx.registry.get("larkspur").unwrap();
    assert_eq!(connector.profile.as_deref(), Some("plaid"));
    let sandbox = app.sandbox();
    let store = &app.app.ctx.store;
    let user = "demo-alice";
    let connection = app
        .link_and_sync_at(app.tenant().id, user, "larkspur")
        .await;
    assert_matches_plaid(
        &store.full_snapshot(connection).await.unwrap(),
        &sandbox.portfolio(Institution::Larkspur, user),
    );
    // The change feed says what was added, modified and removed: every sync leaves
    // exactly what the aggregator holds, however old the change.
    for epoch in 1..=3 {
        assert_eq!(sandbox.advance(), epoch);
        app.resync(connection, &format!("larkspur-{epoch}")).await;
        assert_matches_plaid(
            &store.full_snapshot(connection).await.unwrap(),
            &sandbox.portfolio(Institution::Larkspur, user),
        );
    }
    let runs = store.runs(connection).await.unwrap();
    assert!(runs.iter().any(|r| r.removed > 0), "{runs:?}");
    assert!(runs.iter().all(|r| r.outcome == "succeeded"), "{runs:?}");
}
