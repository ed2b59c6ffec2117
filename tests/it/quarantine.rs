//! Bad data: records a connector cannot map wait in quarantine, redacted, while the
//! rest is stored; after the fix, `finsync sync replay --quarantined` syncs their
//! connections again and the entries resolve. (A response that cannot be read at all
//! fails the run and keeps the last good data: see `embedded.rs`.)

use std::collections::HashSet;

use finsync::store::{QuarantineEntry, QuarantineFilter, Refusal, Resolution};
use finsync_sandbox::{Faults, Institution};

use crate::support::{ADMIN_TOKEN, TestApp, dump_database, finsync, process_env};

fn harbor(open: bool) -> QuarantineFilter {
    QuarantineFilter {
        institution: Some("harbor".into()),
        open: Some(open),
        ..QuarantineFilter::default()
    }
}

fn keys(entries: &[QuarantineEntry], endpoint: &str) -> HashSet<String> {
    entries
        .iter()
        .filter(|e| e.endpoint == endpoint)
        .map(|e| e.record_key.clone())
        .collect()
}

#[tokio::test]
async fn records_that_do_not_map_wait_redacted_in_quarantine_until_a_replay_maps_them() {
    let app = TestApp::builder()
        .postgres()
        .tenant("advisor")
        .build()
        .await;
    let (sandbox, db) = (app.sandbox(), app.db());
    sandbox
        .set_faults(
            Institution::Harbor,
            Faults {
                malformed_rate: 0.3,
                ..Faults::default()
            },
        )
        .unwrap();
    let store = &app.app.ctx.store;
    let tenant = app.tenant();
    let connection = app
        .link_and_sync_at(tenant.id, "demo-alice", "harbor")
        .await;

    // The good records are stored; the bad ones are in quarantine instead.
    let open = store.quarantine(&harbor(true)).await.unwrap();
    let bad_transactions = keys(&open, "transactions");
    let bad_accounts = keys(&open, "accounts");
    assert!(!bad_transactions.is_empty(), "{open:?}");
    let stored = store.full_snapshot(connection).await.unwrap();
    assert!(!stored.transactions.is_empty(), "the rest is stored");
    assert!(
        stored
            .transactions
            .iter()
            .all(|t| !bad_transactions.contains(&t.external_id))
    );
    let hash = app
        .app
        .catalog
        .registry()
        .get("harbor")
        .unwrap()
        .hash
        .clone();
    for entry in &open {
        assert_eq!(entry.connection_id, connection.to_string());
        assert_eq!(entry.connector_hash, hash);
        assert_eq!(entry.times_seen, 1);
        assert!(
            entry.reason.contains("amount") || entry.reason.contains("balance"),
            "{entry:?}"
        );
        // What was wrong stays visible, as a shape.
        assert!(entry.reason.contains("00,0.0"), "{entry:?}");
    }

    // The run counts them: the refused records and the transactions of a refused
    // account.
    let portfolio = sandbox.portfolio(Institution::Harbor, "demo-alice");
    let orphans = portfolio
        .transactions
        .iter()
        .filter(|t| {
            bad_accounts.contains(&t.account_id) && !bad_transactions.contains(&t.transaction_id)
        })
        .count();
    let run = store.runs(connection).await.unwrap().remove(0);
    assert_eq!(run.quarantined as usize, open.len() + orphans);

    // Nothing personal of a refused record is kept: not its description, not its
    // account's name or mask.
    let entry_ids: Vec<&str> = open.iter().map(|e| e.id.as_str()).collect();
    let dump = dump_database(store).await;
    let rows: Vec<&str> = dump
        .lines()
        .filter(|line| entry_ids.iter().any(|id| line.contains(id)))
        .collect();
    assert_eq!(rows.len(), open.len());
    let mut secrets: Vec<&str> = Vec::new();
    for t in &portfolio.transactions {
        if bad_transactions.contains(&t.transaction_id) {
            secrets.push(&t.name);
        }
    }
    for a in &portfolio.accounts {
        if bad_accounts.contains(&a.account_id) {
            secrets.extend([a.name.as_str(), a.official_name.as_str(), a.mask.as_str()]);
        }
    }
    assert!(!secrets.is_empty());
    for secret in secrets {
        for row in &rows {
            assert!(!row.contains(secret), "`{secret}` kept in {row}");
        }
    }

    // The admin API lists them.
    let listed = app
        .get_json(
            "/admin/quarantine?connector=harbor&status=open",
            ADMIN_TOKEN,
        )
        .await;
    let listed = listed["records"].as_array().expect("a list");
    assert_eq!(listed.len(), open.len());
    assert!(listed.iter().all(|e| e["resolution"].is_null()));
    // Page by page, newest seen first, each entry once.
    let mut paged = Vec::new();
    let mut path = "/admin/quarantine?connector=harbor&status=open&limit=1".to_owned();
    loop {
        let page = app.get_json(&path, ADMIN_TOKEN).await;
        paged.extend(
            page["records"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["id"].clone()),
        );
        match page["next_cursor"].as_str() {
            Some(cursor) => {
                path = format!(
                    "/admin/quarantine?connector=harbor&status=open&limit=1&cursor={cursor}"
                )
            }
            None => break,
        }
    }
    let ids: Vec<_> = listed.iter().map(|e| e["id"].clone()).collect();
    assert_eq!(paged, ids);

    // The institution fixes its data; the replay syncs the connection again from the
    // command line, and every entry maps.
    sandbox
        .set_faults(Institution::Harbor, Faults::default())
        .unwrap();
    let since = chrono::Utc::now();
    let output = finsync(&process_env(&db.url, &sandbox.base_url()))
        .args(["sync", "replay", "--quarantined", "--connector", "harbor"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains(&connection.to_string()), "{stdout}");
    app.wait_synced(connection, since).await;

    assert!(store.quarantine(&harbor(true)).await.unwrap().is_empty());
    let resolved = store.quarantine(&harbor(false)).await.unwrap();
    assert_eq!(resolved.len(), open.len());
    assert!(
        resolved
            .iter()
            .all(|e| e.resolution.as_deref() == Some("mapped") && e.resolved_at.is_some())
    );
    let stored = store.full_snapshot(connection).await.unwrap();
    for key in &bad_transactions {
        assert!(stored.transactions.iter().any(|t| &t.external_id == key));
    }
    let run = store.runs(connection).await.unwrap().remove(0);
    assert_eq!(run.quarantined, 0);
    let listed = app
        .get_json(
            "/admin/quarantine?connector=harbor&status=resolved",
            ADMIN_TOKEN,
        )
        .await;
    assert_eq!(listed["records"].as_array().map(Vec::len), Some(open.len()));

    // Nothing is left to replay.
    let again = finsync::sync::replay::replay_quarantined(store, &app.app.ctx.queue, None)
        .await
        .unwrap();
    assert!(again.is_empty(), "{again:?}");

    // Refused again, a record is seen again rather than duplicated; no longer sent,
    // it is gone.
    let record = store.connection(connection).await.unwrap();
    let first = &resolved[0];
    let refusal = Refusal {
        endpoint: &first.endpoint,
        key: &first.record_key,
        reason: &first.reason,
        record: &first.record,
    };
    store
        .record_quarantine(&record, &hash, &[refusal, refusal], |_, _| {
            Some(Resolution::Gone)
        })
        .await
        .unwrap();
    let open = store.quarantine(&harbor(true)).await.unwrap();
    assert_eq!(open.len(), 1);
    assert_eq!(
        (open[0].id.as_str(), open[0].times_seen),
        (first.id.as_str(), 2)
    );
    store
        .record_quarantine(&record, &hash, &[], |_, _| Some(Resolution::Gone))
        .await
        .unwrap();
    let entries = store
        .quarantine(&QuarantineFilter::default())
        .await
        .unwrap();
    assert_eq!(entries.len(), resolved.len());
    let gone = entries.iter().find(|e| e.id == first.id).unwrap();
    assert_eq!(gone.resolution.as_deref(), Some("gone"));

    // Past the history's retention resolved entries go; an open one stays.
    use sea_orm::ConnectionTrait;
    let still_open = &entries.iter().find(|e| e.id != first.id).unwrap().id;
    store
        .db()
        .execute_unprepared(&format!(
            "UPDATE quarantined_records SET resolved_at = NULL, resolution = NULL WHERE id = '{still_open}'"
        ))
        .await
        .unwrap();
    let purged = finsync::sync::scheduler::purge_history(
        &app.app.ctx,
        &finsync::sync::scheduler::Cutoffs::all_before(
            chrono::Utc::now() + chrono::Duration::seconds(1),
        ),
    )
    .await
    .unwrap();
    assert_eq!(purged.quarantine, entries.len() as u64 - 1, "{purged:?}");
    let left = store
        .quarantine(&QuarantineFilter::default())
        .await
        .unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(&left[0].id, still_open);
}
