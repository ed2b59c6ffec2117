//! The securities master: one instrument per security across connections, matched
//! by valid identifiers strongest first, with each institution's view kept beside
//! it; positions summed per instrument; identifiers that fail their check digits
//! flagged and never merged; disagreements recorded; and rows stored before the
//! master existed matched by the migration.

use std::collections::BTreeSet;
use std::str::FromStr;

use chrono::NaiveDate;
use finsync::domain::{
    Account, AccountType, BalanceMeaning, Balances, Currency, Holding, Money, Security,
    SecurityType, Snapshot, UserId,
};
use finsync::store::{Removals, Store};
use finsync_sandbox::{Institution, SandboxConfig, institution_portfolio};
use migrations::{Migrator, MigratorTrait};
use rust_decimal::Decimal;
use serde_json::Value;

use crate::support::{Backend, TestApp, migrated_store};

/// A demo user holding at both Meridian and Keystone (a custodian; Harbor, a
/// savings bank, serves no holdings) a security with the same ISIN, and those ISINs.
fn user_holding_one_isin_at_two_institutions() -> (&'static str, BTreeSet<String>) {
    let config = SandboxConfig::default();
    let isins = |institution, user: &str| -> BTreeSet<String> {
        institution_portfolio(config.seed, config.anchor_date, institution, user, 0)
            .holdings
            .iter()
            .filter_map(|h| h.security.isin.clone())
            .collect()
    };
    ["demo-alice", "demo-bob", "demo-carol"]
        .into_iter()
        .map(|user| {
            let shared: BTreeSet<String> = isins(Institution::Meridian, user)
                .intersection(&isins(Institution::Keystone, user))
                .cloned()
                .collect();
            (user, shared)
        })
        .find(|(_, shared)| !shared.is_empty())
        .expect("a demo user holds one ISIN at Meridian and at Keystone")
}

fn decimal(value: &Value) -> Decimal {
    Decimal::from_str(value.as_str().unwrap()).unwrap()
}

#[tokio::test]
async fn the_same_isin_at_meridian_and_keystone_is_one_position_summed_exactly() {
    let (user, shared) = user_holding_one_isin_at_two_institutions();
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let builder = TestApp::builder().tenant("advisor");
        let app = match backend {
            Backend::Sqlite => builder.sqlite(),
            Backend::Postgres => builder.postgres(),
        }
        .build()
        .await;
        let tenant = app.tenant();
        app.link_and_sync_at(tenant.id, user, "meridian").await;
        app.link_and_sync_at(tenant.id, user, "keystone").await;

        let holdings = app
            .get_json(&format!("/v1/users/{user}/holdings"), tenant.bearer())
            .await;
        let body = app
            .get_json(&format!("/v1/users/{user}/positions"), tenant.bearer())
            .await;
        let positions = body["positions"].as_array().expect("positions");

        // Every holding is in exactly one position.
        let counted: usize = positions
            .iter()
            .map(|p| p["holdings"].as_array().unwrap().len())
            .sum();
        assert_eq!(counted, holdings["holdings"].as_array().unwrap().len());

        for isin in &shared {
            let with_isin: Vec<&Value> = positions
                .iter()
                .filter(|p| p["instrument"]["isin"] == isin.as_str())
                .collect();
            assert_eq!(with_isin.len(), 1, "{isin} is one position: {body}");
            let position = with_isin[0];
            let parts = position["holdings"].as_array().unwrap();
            let institutions: BTreeSet<&str> = parts
                .iter()
                .map(|h| h["institution"].as_str().unwrap())
                .collect();
            assert_eq!(
                institutions,
                BTreeSet::from(["keystone", "meridian"]),
                "{position}"
            );
            let sum: Decimal = parts.iter().map(|h| decimal(&h["quantity"])).sum();
            assert_eq!(decimal(&position["quantity"]), sum, "{backend:?}");
            // Each part names its account, so a security held twice says where.
            assert!(
                parts
                    .iter()
                    .all(|h| !h["account_name"].as_str().unwrap().is_empty())
            );
            assert_eq!(position["instrument"]["weak"], false);
        }
        // Each institution's view of a shared security is kept in its holdings.
        for h in holdings["holdings"].as_array().unwrap() {
            if let Some(isin) = h["security"]["isin"]
                .as_str()
                .filter(|i| shared.contains(*i))
            {
                assert_eq!(h["security"]["instrument"]["isin"], isin);
                assert_eq!(h["security"]["identifier_issues"], serde_json::json!([]));
            }
        }
    }
}

fn account() -> Account {
    Account {
        external_id: "acc".into(),
        name: "Brokerage".into(),
        official_name: None,
        account_type: AccountType::Investment,
        subtype: None,
        mask: None,
        currency: "USD".parse::<Currency>().unwrap(),
        balances: Balances {
            current: Money::new(Decimal::new(100, 0), "USD".parse::<Currency>().unwrap()),
            available: None,
            cash: None,
            meaning: BalanceMeaning::Total,
            as_of: chrono::Utc::now(),
        },
    }
}

fn security(id: &str, ticker: Option<&str>, isin: Option<&str>, cusip: Option<&str>) -> Security {
    Security {
        external_id: id.into(),
        ticker: ticker.map(str::to_owned),
        cusip: cusip.map(str::to_owned),
        isin: isin.map(str::to_owned),
        sedol: None,
        figi: None,
        name: format!("{id} as the institution names it"),
        security_type: SecurityType::Equity,
        currency: "USD".parse::<Currency>().unwrap(),
        price: None,
        price_as_of: None,
    }
}

fn holding(security: &str, quantity: i64) -> Holding {
    Holding {
        account_external_id: "acc".into(),
        security_external_id: security.into(),
        quantity: Decimal::new(quantity, 0),
        cost_basis: None,
        price: None,
        value: None,
        as_of: NaiveDate::from_ymd_opt(2026, 12, 1),
    }
}

async fn connection_with(
    store: &Store,
    tenant: finsync::domain::TenantId,
    user: &str,
    securities: Vec<Security>,
) -> finsync::domain::ConnectionId {
    let connection = store
        .upsert_connection(tenant, &UserId::parse(user).unwrap(), "meridian")
        .await
        .unwrap();
    store
        .apply_snapshot(connection.id, &holding_each(securities), Removals::all())
        .await
        .unwrap();
    connection.id
}

/// One account holding one of each of `securities`.
fn holding_each(securities: Vec<Security>) -> Snapshot {
    Snapshot {
        accounts: vec![account()],
        holdings: securities
            .iter()
            .map(|s| holding(&s.external_id, 1))
            .collect(),
        securities,
        transactions: Vec::new(),
    }
}

/// The recorded conflicts of one connection's securities.
async fn conflicts_of(
    store: &Store,
    connection: finsync::domain::ConnectionId,
) -> Vec<finsync::store::InstrumentConflict> {
    let mut all = store.instrument_conflict_page(None, 1000).await.unwrap();
    all.retain(|c| c.connection_id == connection.to_string());
    all
}

/// `instrument_id` of a connection's security.
async fn instrument_of(
    store: &Store,
    connection: finsync::domain::ConnectionId,
    security: &str,
) -> Option<String> {
    store.security_matches(connection).await.unwrap()[security]
        .instrument
        .as_ref()
        .map(|i| i.id.clone())
}

#[tokio::test]
async fn identifiers_match_strongest_first_bad_check_digits_never_merge_and_disagreements_are_kept()
{
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let (_db, store) = migrated_store(backend, 2).await;
        let (tenant, _) = store.create_tenant("t").await.unwrap();
        let apple = security("aapl", Some("AAPL"), Some("US0378331005"), None);
        let first = connection_with(&store, tenant.id, "u1", vec![apple]).await;
        let master = instrument_of(&store, first, "aapl").await.expect("matched");

        // Another user at another connection: CUSIP only, and it is Apple's: the
        // instrument gains it.
        let by_cusip = security("AAPL-US", None, None, Some("037833100"));
        let second = connection_with(&store, tenant.id, "u2", vec![by_cusip]).await;
        assert_eq!(
            instrument_of(&store, second, "AAPL-US").await.as_deref(),
            Some(master.as_str())
        );

        // The ISIN with a wrong check digit matches nothing and is flagged, even
        // with Apple's ticker beside it.
        let typo = security("aapl-typo", Some("AAPL"), Some("US0378331006"), None);
        let third = connection_with(&store, tenant.id, "u3", vec![typo]).await;
        let matches = store.security_matches(third).await.unwrap();
        assert_eq!(matches["aapl-typo"].instrument, None);
        assert_eq!(matches["aapl-typo"].matched_by.as_deref(), Some("none"));
        assert_eq!(matches["aapl-typo"].issues.len(), 1);
        assert_eq!(matches["aapl-typo"].issues[0].value, "US0378331006");

        // Apple's ISIN with Microsoft's (valid) CUSIP: matched by the stronger ISIN,
        // the CUSIP's disagreement recorded, not resolved.
        let clash = security("aapl-clash", None, Some("US0378331005"), Some("594918104"));
        let fourth = connection_with(&store, tenant.id, "u4", vec![clash]).await;
        assert_eq!(
            instrument_of(&store, fourth, "aapl-clash").await.as_deref(),
            Some(master.as_str())
        );
        let conflicts = conflicts_of(&store, fourth).await;
        assert_eq!(conflicts.len(), 1, "{conflicts:?}");
        assert_eq!(conflicts[0].identifier, "cusip");
        assert_eq!(conflicts[0].instrument_value.as_deref(), Some("037833100"));
        assert_eq!(conflicts[0].institution_value, "594918104");
        // Operators read them page by page (`GET /admin/instrument-conflicts`).
        let listed = store.instrument_conflict_page(None, 10).await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].instrument_id, master);
        assert_eq!(listed[0].institution_value, "594918104");
        let after = (listed[0].security_id.clone(), listed[0].identifier.clone());
        assert!(
            store
                .instrument_conflict_page(Some(&after), 10)
                .await
                .unwrap()
                .is_empty()
        );
        let apple = store.instrument(&master).await.unwrap().unwrap();
        assert_eq!(
            (apple.isin.as_deref(), apple.cusip.as_deref()),
            (Some("US0378331005"), Some("037833100")),
            "the master keeps what it had"
        );

        // Known first by FIGI alone, then by FIGI and a US ISIN elsewhere: the
        // instrument gains the ISIN and the CUSIP inside it.
        let mut figi_only = security("msft", None, None, None);
        figi_only.figi = Some("BBG000BPH459".into());
        let seventh = connection_with(&store, tenant.id, "u7", vec![figi_only.clone()]).await;
        let microsoft = instrument_of(&store, seventh, "msft")
            .await
            .expect("matched");
        let mut fuller = figi_only;
        fuller.isin = Some("US5949181045".into());
        let eighth = connection_with(&store, tenant.id, "u8", vec![fuller]).await;
        assert_eq!(
            instrument_of(&store, eighth, "msft").await,
            Some(microsoft.clone())
        );
        let gained = store.instrument(&microsoft).await.unwrap().unwrap();
        assert_eq!(
            (gained.isin.as_deref(), gained.cusip.as_deref()),
            (Some("US5949181045"), Some("594918104"))
        );
        assert!(conflicts_of(&store, eighth).await.is_empty());

        // Known by ticker alone: a weak match, flagged, shared by ticker and currency.
        let weak = security("cash", Some("CUR:USD"), None, None);
        let fifth = connection_with(&store, tenant.id, "u5", vec![weak.clone()]).await;
        let sixth = connection_with(&store, tenant.id, "u6", vec![weak]).await;
        let fifth_match = &store.security_matches(fifth).await.unwrap()["cash"];
        assert_eq!(fifth_match.matched_by.as_deref(), Some("ticker"));
        assert!(fifth_match.instrument.as_ref().unwrap().weak);
        assert_eq!(
            instrument_of(&store, fifth, "cash").await,
            instrument_of(&store, sixth, "cash").await
        );
    }
}

/// One sync's securities are matched against one read of the master, one after
/// another in the order instruments are locked: what an earlier one created is
/// what a later one finds.
#[tokio::test]
async fn securities_of_one_sync_find_the_instruments_the_earlier_ones_created() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let (_db, store) = migrated_store(backend, 2).await;
        let (tenant, _) = store.create_tenant("t").await.unwrap();
        // Matched in identifier order ("figi", "isin", "twin", "both"): "figi"
        // creates its instrument, then "isin" its own, which "twin" finds; "both"
        // matches the first by its stronger FIGI, and its ISIN, taken by the
        // second, is a conflict.
        let figi = |mut s: Security| {
            s.figi = Some("BBG000BPH459".into());
            s
        };
        let securities = |both: Security| {
            vec![
                both,
                security("isin", None, Some("DE0007164600"), None),
                figi(security("figi", None, None, None)),
                security("twin", Some("SAP"), Some("DE0007164600"), None),
            ]
        };
        let connection = connection_with(
            &store,
            tenant.id,
            "u1",
            securities(figi(security("both", None, Some("DE0007164600"), None))),
        )
        .await;
        let by_figi = instrument_of(&store, connection, "figi")
            .await
            .expect("matched");
        let by_isin = instrument_of(&store, connection, "isin")
            .await
            .expect("matched");
        assert_ne!(by_figi, by_isin);
        assert_eq!(
            instrument_of(&store, connection, "twin").await,
            Some(by_isin.clone())
        );
        assert_eq!(
            instrument_of(&store, connection, "both").await,
            Some(by_figi.clone())
        );
        let conflicts = conflicts_of(&store, connection).await;
        assert_eq!(conflicts.len(), 1, "{conflicts:?}");
        assert_eq!(conflicts[0].identifier, "isin");
        assert_eq!(conflicts[0].instrument_id, by_figi);
        assert_eq!(conflicts[0].held_by.as_deref(), Some(by_isin.as_str()));
        assert_eq!(
            store.instrument(&by_figi).await.unwrap().unwrap().isin,
            None,
            "the ISIN stays with the instrument that had it first"
        );

        // Synced again, "both" renamed: what it is matched on is unchanged, so its
        // match and its conflict stand as they were recorded.
        let recorded = conflicts_of(&store, connection).await;
        let mut renamed = figi(security("both", None, Some("DE0007164600"), None));
        renamed.name = "Both, renamed".into();
        store
            .apply_snapshot(
                connection,
                &holding_each(securities(renamed)),
                Removals::all(),
            )
            .await
            .unwrap();
        assert_eq!(conflicts_of(&store, connection).await, recorded);
        let both = &store.security_matches(connection).await.unwrap()["both"];
        assert_eq!(both.matched_by.as_deref(), Some("figi"));
        assert_eq!(
            both.instrument.as_ref().map(|i| i.id.as_str()),
            Some(by_figi.as_str())
        );

        // And again without its ISIN: it is matched afresh and its conflict goes;
        // the others' matches stand.
        let without_isin = holding_each(securities(figi(security("both", None, None, None))));
        store
            .apply_snapshot(connection, &without_isin, Removals::all())
            .await
            .unwrap();
        assert_eq!(conflicts_of(&store, connection).await, Vec::new());
        assert_eq!(
            instrument_of(&store, connection, "both").await,
            Some(by_figi)
        );
        assert_eq!(
            instrument_of(&store, connection, "twin").await,
            Some(by_isin)
        );
    }
}

#[tokio::test]
async fn the_migration_matches_every_security_stored_before_the_master_and_keeps_every_record() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let builder = TestApp::builder().tenant("advisor");
        let app = match backend {
            Backend::Sqlite => builder.sqlite(),
            Backend::Postgres => builder.postgres(),
        }
        .build()
        .await;
        let store = &app.app.ctx.store;
        let tenant = app.tenant();
        let meridian = app
            .link_and_sync_at(tenant.id, "demo-alice", "meridian")
            .await;
        let keystone = app
            .link_and_sync_at(tenant.id, "demo-alice", "keystone")
            .await;
        let before = [
            store.full_snapshot(meridian).await.unwrap(),
            store.full_snapshot(keystone).await.unwrap(),
        ];
        let grouped_before = grouping(store, tenant.id).await;
        assert!(!before[0].holdings.is_empty() && !before[0].transactions.is_empty());

        // Back to the release before the master, and forward again.
        let migrations = Migrator::migrations();
        let master = migrations
            .iter()
            .position(|m| m.name().ends_with("instruments"))
            .unwrap();
        let after = u32::try_from(migrations.len() - master).unwrap();
        Migrator::down(store.db(), Some(after)).await.unwrap();
        store.migrate().await.unwrap();

        let after = [
            store.full_snapshot(meridian).await.unwrap(),
            store.full_snapshot(keystone).await.unwrap(),
        ];
        // That release knew no balance meaning: its accounts read as `total`, as
        // it read them, until the next sync says what the connector declares.
        let mut before = before;
        for account in before.iter_mut().flat_map(|s| s.accounts.iter_mut()) {
            account.balances.meaning = BalanceMeaning::Total;
        }
        assert_eq!(after, before, "every record kept, digit for digit");
        for connection in [meridian, keystone] {
            let matches = store.security_matches(connection).await.unwrap();
            assert!(!matches.is_empty());
            for (id, matched) in &matches {
                assert!(matched.matched_by.is_some(), "{id} left unmatched");
            }
        }
        // Matched across the two institutions as the syncs had matched them.
        assert_eq!(grouping(store, tenant.id).await, grouped_before);
    }
}

/// demo-alice's positions, each as the holdings it gathers (connection, security).
async fn grouping(
    store: &Store,
    tenant: finsync::domain::TenantId,
) -> BTreeSet<Vec<(String, String)>> {
    let user = UserId::parse("demo-alice").unwrap();
    let portfolio = finsync::portfolio::build(store, tenant, &user, 10)
        .await
        .unwrap()
        .unwrap();
    finsync::portfolio::positions(&portfolio)
        .positions
        .into_iter()
        .map(|p| {
            let mut parts: Vec<(String, String)> = p
                .holdings
                .into_iter()
                .map(|h| (h.connection_id, h.security_id))
                .collect();
            parts.sort();
            parts
        })
        .collect()
}

/// The sandbox's `bad_check_digits` fault at Keystone: each ISIN it sends fails its
/// check. Flagged on the security, it never merges; a valid CUSIP beside it still
/// matches the instrument (by the CUSIP), and one without matches nothing.
#[tokio::test]
async fn an_institution_s_mistyped_isin_is_flagged_and_never_merges() {
    let (user, _) = user_holding_one_isin_at_two_institutions();
    let app = TestApp::builder()
        .postgres()
        .tenant("advisor")
        .build()
        .await;
    app.sandbox()
        .set_faults(
            Institution::Keystone,
            finsync_sandbox::Faults {
                bad_check_digits: true,
                ..Default::default()
            },
        )
        .unwrap();
    let tenant = app.tenant();
    let meridian = app.link_and_sync_at(tenant.id, user, "meridian").await;
    let keystone = app.link_and_sync_at(tenant.id, user, "keystone").await;
    let holdings = app
        .get_json(&format!("/v1/users/{user}/holdings"), tenant.bearer())
        .await;
    let mut checked = 0;
    for h in holdings["holdings"].as_array().unwrap() {
        let security = &h["security"];
        let Some(isin) = security["isin"].as_str() else {
            continue;
        };
        if h["connection_id"] == meridian.to_string().as_str() {
            assert_eq!(security["identifier_issues"], serde_json::json!([]), "{h}");
            continue;
        }
        assert_eq!(h["connection_id"], keystone.to_string().as_str());
        let issues = security["identifier_issues"].as_array().unwrap();
        assert!(
            issues
                .iter()
                .any(|i| i["identifier"] == "isin" && i["value"] == isin),
            "the mistyped ISIN is flagged: {h}"
        );
        let instrument = &security["instrument"];
        assert_ne!(instrument["isin"], isin, "never merged by it: {h}");
        if security["cusip"].is_string() {
            assert_eq!(instrument["matched_by"], "cusip", "{h}");
        } else {
            assert!(instrument.is_null(), "{h}");
        }
        checked += 1;
    }
    assert!(checked > 0, "Keystone sent some ISIN: {holdings}");
}

/// Two syncs meeting the same new securities at once, listed in opposite orders,
/// both succeed and find one instrument per security: whichever creates it, the
/// other waits on its key and uses it. PostgreSQL only: SQLite lets one writer in
/// at a time, so two of its syncs cannot race.
#[tokio::test]
async fn two_syncs_meeting_the_same_new_securities_at_once_share_one_instrument_each() {
    let (_db, store) = migrated_store(Backend::Postgres, 4).await;
    let (tenant, _) = store.create_tenant("t").await.unwrap();
    // Fresh securities each round, so that every round races on creating them.
    for round in 0..5 {
        let mut securities: Vec<Security> = (0..20)
            .map(|i| {
                let isin = isin::build_from_parts("XS", &format!("R{round}{i:07}"))
                    .unwrap()
                    .to_string();
                security(
                    &format!("s{i}"),
                    Some(&format!("T{round}X{i}")),
                    Some(&isin),
                    None,
                )
            })
            .collect();
        // And one known by ticker alone, matched by its weak key.
        securities.push(security("weak", Some(&format!("W{round}")), None, None));
        let reversed: Vec<Security> = securities.iter().rev().cloned().collect();
        let (a, b) = (format!("a{round}"), format!("b{round}"));
        let (first, second) = tokio::join!(
            connection_with(&store, tenant.id, &a, securities.clone()),
            connection_with(&store, tenant.id, &b, reversed),
        );
        let (first, second) = (
            store.security_matches(first).await.unwrap(),
            store.security_matches(second).await.unwrap(),
        );
        for sec in &securities {
            let id = sec.external_id.as_str();
            let by = if sec.isin.is_some() { "isin" } else { "ticker" };
            let (one, other) = (&first[id], &second[id]);
            assert_eq!(one.matched_by.as_deref(), Some(by), "{id}");
            assert_eq!(other.matched_by.as_deref(), Some(by), "{id}");
            let instrument = one.instrument.as_ref().map(|i| &i.id);
            assert!(instrument.is_some(), "{id} unmatched");
            assert_eq!(instrument, other.instrument.as_ref().map(|i| &i.id), "{id}");
        }
    }
}
