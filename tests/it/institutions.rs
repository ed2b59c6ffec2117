//! The sandbox's other institutions through finsync, end to end: a user linked at Harbor
//! (a shipped connector) and at Northwind (a connector file added from the test fixtures)
//! is synced, and what finsync stored equals what the institution holds, value for value,
//! through each one's own units, sign convention and date format.

use std::path::PathBuf;
use std::str::FromStr;

use finsync::domain::Snapshot;
use finsync_sandbox::Institution;
use finsync_sandbox::data::Portfolio;
use rust_decimal::{Decimal, RoundingStrategy};

use finsync::sync::SyncConnection;
use finsync::tokens::{GRANT_VALUES, rotate};
use finsync::vault::{Vault, seal_context};
use sea_orm::ConnectionTrait;
use secrecy::ExposeSecret;

use crate::support::{TestApp, VAULT_KEY, unique};

fn dec(text: &str) -> Decimal {
    Decimal::from_str(text).unwrap()
}

/// How an institution presents the generated portfolio.
struct View {
    /// Only depository accounts and their cash activity (a bank), or everything.
    depository_only: bool,
    /// Money in whole cents (rounded half away from zero), or every digit.
    cents: bool,
    /// Whether the institution sends official names and masks.
    names_and_masks: bool,
}

/// Money as the institution sends it, as finsync should store it.
fn money(view: &View, text: &str) -> String {
    if view.cents {
        let mut cents = dec(text).round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero);
        cents.rescale(2);
        cents.to_string()
    } else {
        text.to_owned()
    }
}

/// Money with the other sign, digits kept.
fn negated(text: &str) -> String {
    match text.strip_prefix('-') {
        Some(magnitude) => magnitude.to_owned(),
        None => format!("-{text}"),
    }
}

fn assert_matches_view(stored: &Snapshot, portfolio: &Portfolio, view: &View) {
    let accounts: Vec<_> = portfolio
        .accounts
        .iter()
        .filter(|a| !view.depository_only || a.account_type == "depository")
        .collect();
    assert!(!accounts.is_empty());
    assert_eq!(stored.accounts.len(), accounts.len(), "accounts");
    for e in &accounts {
        let a = stored
            .accounts
            .iter()
            .find(|a| a.external_id == e.account_id)
            .expect("account stored");
        assert_eq!(a.name, e.name);
        assert_eq!(a.account_type.as_str(), e.account_type);
        assert_eq!(a.subtype.as_deref(), Some(e.subtype.as_str()));
        if view.names_and_masks {
            assert_eq!(a.official_name.as_deref(), Some(e.official_name.as_str()));
            assert_eq!(a.mask.as_deref(), Some(e.mask.as_str()));
        }
        assert_eq!(a.currency.as_str(), e.balances.iso_currency_code);
        assert_eq!(
            a.balances.current.amount.to_string(),
            money(view, &e.balances.current)
        );
        assert_eq!(
            a.balances.available.map(|m| m.amount.to_string()),
            e.balances.available.as_deref().map(|t| money(view, t))
        );
    }
    assert!(stored.holdings.is_empty() && stored.securities.is_empty());

    let transactions: Vec<_> = portfolio
        .transactions
        .iter()
        .filter(|t| {
            !view.depository_only
                || (t.investment_type.is_none()
                    && accounts.iter().any(|a| a.account_id == t.account_id))
        })
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
            .expect("transaction stored");
        // The generator's amounts are money out positive; finsync's money in positive.
        assert_eq!(
            t.amount.amount.to_string(),
            money(view, &negated(&e.amount)),
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
        assert_eq!(t.pending_external_id, e.pending_transaction_id);
        assert_eq!(t.description, e.name);
        assert_eq!(t.category, e.category);
        assert_eq!(t.investment_type, None);
        assert_eq!(t.quantity, None);
    }
}

#[tokio::test]
async fn a_harbor_user_is_stored_in_dollars_and_cents_with_money_in_positive() {
    let app = TestApp::builder()
        .postgres()
        .tenant("advisor")
        .build()
        .await;
    let sandbox = app.sandbox();
    let store = &app.app.ctx.store;
    let tenant = app.tenant();
    let view = View {
        depository_only: true,
        cents: true,
        names_and_masks: true,
    };
    let mut connections = Vec::new();
    for user in ["demo-alice", "demo-bob"] {
        let connection = app.link_and_sync_at(tenant.id, user, "harbor").await;
        let stored = store.full_snapshot(connection).await.unwrap();
        assert_matches_view(
            &stored,
            &sandbox.portfolio(Institution::Harbor, user),
            &view,
        );
        connections.push((user, connection));
    }

    // The bank's data moves on: pending card payments post under new ids, some
    // transactions change or disappear. Each resync leaves exactly what the bank holds.
    for epoch in 1..=3 {
        assert_eq!(sandbox.advance(), epoch);
        for &(user, connection) in &connections {
            let since = chrono::Utc::now();
            let job = finsync::sync::SyncConnection {
                connection_id: connection,
                idempotency_key: format!("test:harbor-{user}-{epoch}"),
            };
            crate::support::request_sync(&app.app.ctx.queue, job).await;
            app.wait_synced(connection, since).await;
            let stored = store.full_snapshot(connection).await.unwrap();
            assert_matches_view(
                &stored,
                &sandbox.portfolio(Institution::Harbor, user),
                &view,
            );
        }
    }
    let runs = store.runs(connections[0].1).await.unwrap();
    assert!(runs.iter().any(|r| r.removed > 0), "{runs:?}");
}

/// A connectors directory of this test's own, removed when dropped.
struct ConnectorDir(PathBuf);

impl Drop for ConnectorDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// An app on PostgreSQL whose connectors directory holds only Northwind's fixture
/// file (the directory lives as long as the guard).
async fn with_northwind() -> (ConnectorDir, TestApp) {
    let dir = ConnectorDir(std::env::temp_dir().join(unique("finsync-connectors")));
    std::fs::create_dir_all(&dir.0).unwrap();
    std::fs::copy(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/connectors/northwind.toml"),
        dir.0.join("northwind.toml"),
    )
    .unwrap();
    let app = TestApp::builder()
        .postgres()
        .with(|settings| settings.connectors.dir = dir.0.clone())
        .tenant("advisor")
        .build()
        .await;
    (dir, app)
}

#[tokio::test]
async fn a_northwind_user_is_stored_with_every_digit_from_the_fixture_connector() {
    let (_dir, app) = with_northwind().await;
    let sandbox = app.sandbox();
    let store = &app.app.ctx.store;
    let tenant = app.tenant();
    let connection = app
        .link_and_sync_at(tenant.id, "demo-alice", "northwind")
        .await;
    let stored = store.full_snapshot(connection).await.unwrap();
    let view = View {
        depository_only: false,
        cents: false,
        names_and_masks: false,
    };
    let portfolio = sandbox.portfolio(Institution::Northwind, "demo-alice");
    assert!(
        portfolio
            .transactions
            .iter()
            .any(|t| t.amount.split_once('.').is_some_and(|(_, d)| d.len() > 2)),
        "some amounts carry more than cents"
    );
    assert_matches_view(&stored, &portfolio, &view);
}

/// Northwind binds every data request to the grant's consent (`Consent-ID`, named in
/// the token response): the connector keeps it, sealed like the tokens, and sends it;
/// a connection that lacks it (linked before the connector kept it) gets it back from
/// a refresh on its next sync, without the user.
#[tokio::test]
async fn a_consent_id_from_the_token_response_is_kept_sealed_and_sent_with_every_request() {
    let (_dir, app) = with_northwind().await;
    let sandbox = app.sandbox();
    let ctx = &app.app.ctx;
    let tenant = app.tenant();
    // Every request of this sync carried the consent: without it Northwind answers 400.
    let connection = app
        .link_and_sync_at(tenant.id, "demo-bob", "northwind")
        .await;
    let record = ctx.store.connection(connection).await.unwrap();
    assert!(record.tokens.grant_values.is_some(), "the consent is kept");
    let grant = ctx.tokens.grant(&record).await.unwrap();
    let consent = grant.values["consent_id"].expose_secret().to_owned();
    assert!(
        consent.starts_with("nwcu_consent_") && sandbox.issued_tokens().contains(&consent),
        "the kept value is the consent Northwind granted"
    );

    // Linked before the connector kept the consent: the next sync refreshes once, and
    // the refresh brings the grant's consent back.
    ctx.store
        .db()
        .execute_unprepared(&format!(
            "UPDATE connections SET grant_values = NULL WHERE id = '{connection}'"
        ))
        .await
        .unwrap();
    let refreshes = sandbox.stats().refreshes;
    let since = chrono::Utc::now();
    let job = SyncConnection {
        connection_id: connection,
        idempotency_key: "test:consent-back".into(),
    };
    crate::support::request_sync(&ctx.queue, job).await;
    app.wait_synced(connection, since).await;
    assert_eq!(sandbox.stats().refreshes - refreshes, 1, "one refresh");
    let record = ctx.store.connection(connection).await.unwrap();
    let grant = ctx.tokens.grant(&record).await.unwrap();
    assert_eq!(grant.values["consent_id"].expose_secret(), consent);

    // Sealed at rest and never logged.
    let dump = crate::support::dump_database(&ctx.store).await;
    let logs = crate::support::captured_logs();
    for secret in sandbox.issued_tokens() {
        assert!(
            !dump.contains(&secret),
            "a token or consent id is in the database in the clear"
        );
        assert!(!logs.contains(&secret), "a token or consent id was logged");
    }

    // A new vault key reseals the kept consent with the tokens.
    let new_key = Vault::generate_key();
    let mut ring = Vault::single(new_key.expose_secret()).unwrap();
    ring.add_key(VAULT_KEY).unwrap();
    let report = rotate::reseal_all(&ctx.store, &ring).await.unwrap();
    assert_eq!(report.connections, 1);
    let sealed = ctx
        .store
        .connection(connection)
        .await
        .unwrap()
        .tokens
        .grant_values
        .unwrap();
    let opened = Vault::single(new_key.expose_secret())
        .unwrap()
        .open(&seal_context(connection, GRANT_VALUES), &sealed)
        .unwrap();
    assert!(opened.expose_secret().contains(&consent));
}

/// Keystone's money: a string with exactly 4 decimals, rounded half away from zero.
fn four_decimals(value: Decimal) -> String {
    let mut rounded = value.round_dp_with_strategy(4, RoundingStrategy::MidpointAwayFromZero);
    rounded.rescale(4);
    rounded.to_string()
}

/// Keystone walks transactions by 31-day windows paged by Link headers, nests its token
/// response and never rotates refresh tokens; what finsync stores is its custody view of
/// the user: investment accounts, positions known by CUSIP or ISIN, investment activity.
#[tokio::test]
async fn a_keystone_user_is_stored_from_date_windows_and_link_pages() {
    let app = TestApp::builder()
        .postgres()
        .tenant("advisor")
        .build()
        .await;
    let sandbox = app.sandbox();
    let store = &app.app.ctx.store;
    let tenant = app.tenant();
    let user = "demo-carol";
    let connection = app.link_and_sync_at(tenant.id, user, "keystone").await;
    let stored = store.full_snapshot(connection).await.unwrap();
    let portfolio = sandbox.portfolio(Institution::Keystone, user);

    let accounts: Vec<_> = portfolio
        .accounts
        .iter()
        .filter(|a| a.account_type == "investment")
        .collect();
    assert!(!accounts.is_empty());
    assert_eq!(stored.accounts.len(), accounts.len(), "accounts");
    for e in &accounts {
        let a = stored
            .accounts
            .iter()
            .find(|a| a.external_id == e.account_id)
            .expect("account stored");
        assert_eq!(a.name, e.official_name);
        assert_eq!(
            a.balances.current.amount.to_string(),
            four_decimals(dec(&e.balances.current))
        );
    }

    assert_eq!(stored.holdings.len(), portfolio.holdings.len(), "holdings");
    for e in &portfolio.holdings {
        let id = e
            .security
            .cusip
            .clone()
            .or_else(|| e.security.isin.clone())
            .unwrap_or_else(|| format!("CASH-{}", e.security.iso_currency_code));
        let h = stored
            .holdings
            .iter()
            .find(|h| h.account_external_id == e.account_id && h.security_external_id == id)
            .expect("holding stored");
        assert_eq!(h.quantity.to_string(), e.quantity, "units of {id}");
        assert_eq!(
            h.value.as_ref().map(|m| m.amount.to_string()),
            Some(four_decimals(dec(&e.institution_value)))
        );
        let s = stored
            .securities
            .iter()
            .find(|s| s.external_id == id)
            .expect("security stored");
        assert_eq!(s.cusip, e.security.cusip);
        assert_eq!(s.isin, e.security.isin);
        assert_eq!(s.name, e.security.name.to_uppercase());
    }

    let transactions: Vec<_> = portfolio
        .transactions
        .iter()
        .filter(|t| {
            t.investment_type.is_some() && accounts.iter().any(|a| a.account_id == t.account_id)
        })
        .collect();
    assert!(!transactions.is_empty());
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
            .expect("transaction stored");
        assert_eq!(
            t.amount.amount.to_string(),
            four_decimals(-dec(&e.amount)),
            "amount of {}",
            e.transaction_id
        );
        assert_eq!(t.date, e.date);
        assert_eq!(t.quantity.map(|q| q.to_string()), e.quantity);
    }
    // Every 31-day window of the 120-day history was asked for (4 of them), besides
    // accounts and positions.
    assert!(sandbox.stats().api_requests >= 6, "{:?}", sandbox.stats());

    // Past the stock split of epoch 3: positions are read whole, activity only from
    // the look-back before the last day covered (7 days), one window instead of 13.
    for epoch in 1..=3 {
        assert_eq!(sandbox.advance(), epoch);
    }
    let before = store.full_snapshot(connection).await.unwrap();
    let requests_before = sandbox.stats().api_requests;
    let since = chrono::Utc::now();
    let job = finsync::sync::SyncConnection {
        connection_id: connection,
        idempotency_key: "test:keystone-epoch-3".into(),
    };
    crate::support::request_sync(&app.app.ctx.queue, job).await;
    app.wait_synced(connection, since).await;
    assert_eq!(
        sandbox.stats().api_requests - requests_before,
        3,
        "accounts, positions and one window of activity"
    );
    let stored = store.full_snapshot(connection).await.unwrap();
    let portfolio = sandbox.portfolio(Institution::Keystone, user);
    assert_eq!(stored.holdings.len(), portfolio.holdings.len());
    for e in &portfolio.holdings {
        assert!(
            stored
                .holdings
                .iter()
                .any(|h| h.account_external_id == e.account_id
                    && h.quantity.to_string() == e.quantity),
            "units of {} at epoch 3",
            e.security.security_id
        );
    }
    let recent_from = chrono::Utc::now().date_naive() - chrono::Days::new(7);
    let mut recent: Vec<_> = portfolio
        .transactions
        .iter()
        .filter(|t| {
            t.investment_type.is_some()
                && accounts.iter().any(|a| a.account_id == t.account_id)
                && t.date >= recent_from
        })
        .map(|t| t.transaction_id.clone())
        .collect();
    let mut stored_recent: Vec<_> = stored
        .transactions
        .iter()
        .filter(|t| t.date >= recent_from)
        .map(|t| t.external_id.clone())
        .collect();
    recent.sort();
    stored_recent.sort();
    assert_eq!(
        stored_recent, recent,
        "the look-back equals the custodian's"
    );
    // Older activity is left as the last full walk stored it.
    let older = |snapshot: &finsync::domain::Snapshot| {
        let mut older: Vec<_> = snapshot
            .transactions
            .iter()
            .filter(|t| t.date < recent_from)
            .map(|t| (t.external_id.clone(), t.amount.amount))
            .collect();
        older.sort();
        older
    };
    assert_eq!(older(&stored), older(&before));
    let splits: Vec<_> = stored
        .transactions
        .iter()
        .filter(|t| t.investment_type.map(|i| i.as_str()) == Some("split"))
        .collect();
    assert!(!splits.is_empty(), "the split is recorded as a split");
    assert!(splits.iter().all(|t| t.amount.amount.is_zero()));
}

/// Keystone's activity held in finsync and at the custodian, by id.
fn keystone_activity(
    snapshot: &Snapshot,
    portfolio: &Portfolio,
) -> (
    std::collections::BTreeSet<String>,
    std::collections::BTreeSet<String>,
) {
    let stored = snapshot
        .transactions
        .iter()
        .map(|t| t.external_id.clone())
        .collect();
    let served = portfolio
        .transactions
        .iter()
        .filter(|t| {
            t.investment_type.is_some()
                && portfolio
                    .accounts
                    .iter()
                    .any(|a| a.account_id == t.account_id && a.account_type == "investment")
        })
        .map(|t| t.transaction_id.clone())
        .collect();
    (stored, served)
}

#[tokio::test]
async fn a_deep_sync_finds_what_the_institution_deleted_long_ago() {
    let app = TestApp::builder()
        .postgres()
        .tenant("advisor")
        .build()
        .await;
    let sandbox = app.sandbox();
    let store = &app.app.ctx.store;
    let tenant = app.tenant();
    let user = "demo-dave";
    let connection = app.link_and_sync_at(tenant.id, user, "keystone").await;
    let first = store.connection(connection).await.unwrap();
    let every = chrono::Duration::days(7);
    let due = first
        .deep_sync_due_at
        .expect("the first sync plans the next deep one");
    let synced = first.last_synced_at.unwrap();
    assert!(
        due > synced + every - chrono::Duration::minutes(1) && due <= synced + every,
        "a first sync reads everything, so the next deep one is a week later: {due}"
    );

    // Epochs go by, each followed by an incremental sync that walks only the look-back.
    let app = &app;
    let sync = |key: String| async move {
        let since = chrono::Utc::now();
        let job = finsync::sync::SyncConnection {
            connection_id: connection,
            idempotency_key: key,
        };
        crate::support::request_sync(&app.app.ctx.queue, job).await;
        app.wait_synced(connection, since).await;
    };
    for epoch in 1..=8 {
        assert_eq!(sandbox.advance(), epoch);
        sync(unique("test:incremental")).await;
    }
    let (stored, served) = keystone_activity(
        &store.full_snapshot(connection).await.unwrap(),
        &sandbox.portfolio(Institution::Keystone, user),
    );
    let left_behind: Vec<_> = stored.difference(&served).cloned().collect();
    assert!(
        !left_behind.is_empty(),
        "the custodian deleted activity older than the look-back, which incremental syncs cannot see"
    );
    assert_eq!(
        served.difference(&stored).count(),
        0,
        "nothing new is missed"
    );

    // A week later the connection's deep sync is due (the clock is moved, not waited for).
    let db = sea_orm::Database::connect(&app.db().url).await.unwrap();
    use sea_orm::ConnectionTrait;
    db.execute_unprepared(&format!(
        "UPDATE connections SET deep_sync_due_at = now() - interval '1 second' WHERE id = '{connection}'"
    ))
    .await
    .unwrap();
    sync(unique("test:deep")).await;
    let (stored, served) = keystone_activity(
        &store.full_snapshot(connection).await.unwrap(),
        &sandbox.portfolio(Institution::Keystone, user),
    );
    assert_eq!(
        stored, served,
        "after the deep sync finsync holds what the custodian does"
    );
    let runs = store
        .runs_since(connection, chrono::DateTime::UNIX_EPOCH)
        .await
        .unwrap();
    let last = runs.iter().max_by_key(|r| r.started_at).unwrap();
    assert!(last.deep, "the run says it was deep");
    assert_eq!(last.removed as usize, left_behind.len());
    assert_eq!(
        runs.iter().filter(|r| r.deep).count(),
        2,
        "the first and this one"
    );
    let after = store.connection(connection).await.unwrap();
    assert!(
        after.deep_sync_due_at.unwrap() > chrono::Utc::now() + every - chrono::Duration::minutes(1)
    );
}
