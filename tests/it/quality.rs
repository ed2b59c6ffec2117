//! Reconciliation after every sync: each data-quality finding is raised by the
//! sandbox fault that provokes it, shown on the read API and by `finsync
//! reconcile`, and absent on clean data, through the world's epochs and a split.

use std::collections::BTreeSet;

use finsync::domain::ConnectionId;
use finsync_sandbox::{Faults, Institution};

use crate::support::{TestApp, finsync, process_env};

/// The open findings of a connection, as (code, subject).
async fn findings(app: &TestApp, connection: ConnectionId) -> BTreeSet<(String, String)> {
    app.app
        .ctx
        .store
        .findings(connection)
        .await
        .unwrap()
        .into_iter()
        .map(|f| (f.code.to_string(), f.subject))
        .collect()
}

fn codes(found: &BTreeSet<(String, String)>) -> BTreeSet<&str> {
    found.iter().map(|(code, _)| code.as_str()).collect()
}

/// Every institution's data as the sandbox serves it adds up: no finding at any
/// of them, nor at Meridian through four epochs of postings, price moves, a
/// removed transaction and a 2-for-1 split recorded by its transaction.
#[tokio::test]
async fn clean_data_raises_no_finding_through_the_epochs_and_a_recorded_split() {
    let app = TestApp::builder()
        .postgres()
        .tenant("advisor")
        .build()
        .await;
    let tenant = app.tenant();
    let mut connections = Vec::new();
    for institution in Institution::ALL {
        // Northwind's connector is not in service by default (see its file).
        if app.app.ctx.registry.get(institution.id()).is_err() {
            continue;
        }
        let connection = app
            .link_and_sync_at(tenant.id, "demo-alice", institution.id())
            .await;
        let found = app.app.ctx.store.findings(connection).await.unwrap();
        assert!(
            found.is_empty(),
            "{institution:?} on clean data: {found:#?}"
        );
        connections.push(connection);
    }
    assert!(connections.len() >= 6, "{connections:?}");
    let meridian = connections[0];
    for epoch in 1..=4 {
        assert_eq!(app.sandbox().advance(), epoch);
        app.resync(meridian, &format!("epoch-{epoch}")).await;
        assert_eq!(
            findings(&app, meridian).await,
            BTreeSet::new(),
            "Meridian at epoch {epoch}"
        );
    }
    // The split did happen, and was recorded: the moment the check speaks of passed.
    let transactions = app
        .get_json(
            "/v1/users/demo-alice/transactions?limit=500",
            tenant.bearer(),
        )
        .await;
    assert!(
        transactions["transactions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["investment_type"] == "split"),
        "a split by epoch 4: {transactions}"
    );
    let accounts = app
        .get_json("/v1/users/demo-alice/accounts", tenant.bearer())
        .await;
    for account in accounts["accounts"].as_array().unwrap() {
        assert_eq!(account["data_quality"], serde_json::json!([]), "{account}");
    }
}

/// Links demo-alice at Meridian with `faults`, syncs, and then `then` more times
/// (moving the world on first where `advance`); returns the app and connection.
async fn with_fault(faults: Faults, resyncs: u32, advance: bool) -> (TestApp, ConnectionId) {
    let app = TestApp::builder().sqlite().tenant("advisor").build().await;
    app.sandbox()
        .set_faults(Institution::Meridian, faults)
        .unwrap();
    let tenant = app.tenant();
    let connection = app.link_and_sync(tenant.id, "demo-alice").await;
    for n in 1..=resyncs {
        if advance {
            app.sandbox().advance();
        }
        app.resync(connection, &format!("again-{n}")).await;
    }
    (app, connection)
}

#[tokio::test]
async fn a_drifting_balance_breaks_continuity_and_the_sum_of_holdings() {
    let (app, connection) = with_fault(
        Faults {
            drifting_balances: true,
            ..Faults::default()
        },
        1,
        false,
    )
    .await;
    let found = findings(&app, connection).await;
    assert_eq!(
        codes(&found),
        BTreeSet::from(["BALANCE_DISCONTINUITY", "HOLDINGS_MISMATCH"]),
        "{found:?}"
    );
    // The finding is on the read API, with its figures, and the balance is the
    // institution's, not corrected.
    let accounts = app
        .get_json("/v1/users/demo-alice/accounts", app.tenant().bearer())
        .await;
    let checking = accounts["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["type"] == "depository")
        .unwrap();
    let finding = &checking["data_quality"][0];
    assert_eq!(finding["code"], "BALANCE_DISCONTINUITY", "{checking}");
    assert_eq!(finding["scope"], "transactions");
    assert_eq!(finding["subject"], checking["id"]);
    assert!(
        finding["detail"]
            .as_str()
            .unwrap()
            .contains(checking["balances"]["current"]["amount"].as_str().unwrap()),
        "{finding}"
    );

    // `finsync reconcile` lays them out; an unknown institution is refused by name.
    let env = process_env(&app.db().url, &app.sandbox().base_url());
    let output = finsync(&env)
        .args(["reconcile", "--institution", "meridian"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("BALANCE_DISCONTINUITY"), "{stdout}");
    assert!(stdout.contains("HOLDINGS_MISMATCH"), "{stdout}");
    assert!(
        stdout.contains(&format!("{} data-quality finding(s)", found.len())),
        "{stdout}"
    );
    let output = finsync(&env)
        .args(["reconcile", "--institution", "nowhere"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("no institution `nowhere`") && stderr.contains("meridian"),
        "{stderr}"
    );

    // Each run counts what it found, and the metric names the code.
    let runs = app.app.ctx.store.runs(connection).await.unwrap();
    assert!(runs[0].findings >= 2, "{:?}", runs[0]);
    let metrics = finsync::http::client()
        .get(format!("{}/metrics", app.address))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("finsync_data_quality_findings_total{")
                && l.contains("code=\"BALANCE_DISCONTINUITY\"")
                && l.contains("institution=\"meridian\"")),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_transaction_sent_twice_under_new_ids_is_a_duplicate() {
    let (app, connection) = with_fault(
        Faults {
            rekeyed_transactions: true,
            ..Faults::default()
        },
        0,
        false,
    )
    .await;
    let found = findings(&app, connection).await;
    assert_eq!(codes(&found), BTreeSet::from(["DUPLICATE_TRANSACTION"]));
    assert!(
        found
            .iter()
            .all(|(_, subject)| subject.ends_with("-rekeyed")),
        "{found:?}"
    );
}

/// The holding whose security the institution did not describe is named, and
/// the finding goes once the institution describes it again.
#[tokio::test]
async fn a_holding_without_its_security_is_named_and_resolved_when_mended() {
    let (app, connection) = with_fault(
        Faults {
            missing_security: true,
            ..Faults::default()
        },
        0,
        false,
    )
    .await;
    let found = findings(&app, connection).await;
    assert_eq!(
        codes(&found),
        BTreeSet::from(["MISSING_SECURITY"]),
        "{found:?}"
    );
    app.sandbox()
        .set_faults(Institution::Meridian, Faults::default())
        .unwrap();
    app.resync(connection, "mended").await;
    assert_eq!(findings(&app, connection).await, BTreeSet::new());
}

#[tokio::test]
async fn a_value_that_is_not_quantity_times_price_is_flagged() {
    let (app, connection) = with_fault(
        Faults {
            misvalued_holdings: true,
            ..Faults::default()
        },
        0,
        false,
    )
    .await;
    let found = findings(&app, connection).await;
    assert!(codes(&found).contains("VALUE_MISMATCH"), "{found:?}");
    assert!(
        codes(&found).is_subset(&BTreeSet::from(["VALUE_MISMATCH", "HOLDINGS_MISMATCH"])),
        "{found:?}"
    );
}

#[tokio::test]
async fn old_pending_future_postings_and_unknown_currencies_are_flagged() {
    let (app, connection) = with_fault(
        Faults {
            stale_pending: true,
            future_dated: true,
            unknown_currency: true,
            ..Faults::default()
        },
        0,
        false,
    )
    .await;
    let found = findings(&app, connection).await;
    assert_eq!(
        codes(&found),
        BTreeSet::from(["FUTURE_DATED", "STALE_PENDING", "UNKNOWN_CURRENCY"]),
        "{found:?}"
    );
    // Stored as the institution sent it: the code is kept, not corrected.
    let transactions = app
        .get_json(
            "/v1/users/demo-alice/transactions?limit=500",
            app.tenant().bearer(),
        )
        .await;
    assert!(
        transactions["transactions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["amount"]["currency"] == "ZZZ"),
        "{transactions}"
    );
}

/// Through the split epoch with the split transaction left out, the quantity jump
/// is flagged; the clean test shows the recorded split is not.
#[tokio::test]
async fn a_split_without_its_transaction_is_flagged() {
    let (app, connection) = with_fault(
        Faults {
            unrecorded_splits: true,
            ..Faults::default()
        },
        3,
        true,
    )
    .await;
    let found = findings(&app, connection).await;
    assert_eq!(
        codes(&found),
        BTreeSet::from(["POSSIBLE_UNRECORDED_SPLIT"]),
        "{found:?}"
    );
}
