//! Money survives a round trip through either database exactly: every digit and
//! the scale the institution sent.

use chrono::{NaiveDate, Utc};
use finsync::domain::{
    Account, AccountType, BalanceMeaning, Balances, Holding, Money, Security, SecurityType,
    Snapshot,
};
use finsync::store::Removals;

use crate::support::{Backend, TestDb, store_with_connection};

fn snapshot() -> Snapshot {
    let usd = "USD".parse().unwrap();
    let big = Money::new("12345678901234567.89".parse().unwrap(), usd);
    Snapshot {
        accounts: vec![Account {
            external_id: "acc-1".into(),
            account_type: AccountType::Investment,
            subtype: Some("brokerage".into()),
            name: "Brokerage".into(),
            official_name: None,
            mask: Some("0001".into()),
            currency: usd,
            balances: Balances {
                current: big,
                available: Some(Money::new("-0.10".parse().unwrap(), usd)),
                cash: None,
                meaning: BalanceMeaning::Total,
                as_of: Utc::now().trunc_subsecs_compat(),
            },
        }],
        securities: vec![Security {
            external_id: "sec-1".into(),
            ticker: Some("XYZ".into()),
            cusip: None,
            isin: Some("US0000000000".into()),
            sedol: None,
            figi: None,
            name: "XYZ Corp".into(),
            security_type: SecurityType::Equity,
            currency: usd,
            price: Some("187.2345000".parse().unwrap()),
            price_as_of: NaiveDate::from_ymd_opt(2026, 11, 19),
        }],
        holdings: vec![Holding {
            account_external_id: "acc-1".into(),
            security_external_id: "sec-1".into(),
            quantity: "0.000000001".parse().unwrap(),
            cost_basis: Some(big),
            price: None,
            value: Some(Money::new("0.00".parse().unwrap(), usd)),
            as_of: None,
        }],
        transactions: vec![],
    }
}

/// `Utc::now()` with microsecond precision, which both databases keep.
trait TruncCompat {
    fn trunc_subsecs_compat(self) -> Self;
}

impl TruncCompat for chrono::DateTime<Utc> {
    fn trunc_subsecs_compat(self) -> Self {
        chrono::SubsecRound::trunc_subsecs(self, 6)
    }
}

async fn round_trip(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (store, connection) = store_with_connection(&db, 2).await;
    let written = snapshot();
    store
        .apply_snapshot(connection, &written, Removals::all())
        .await
        .unwrap();
    let read = store.full_snapshot(connection).await.unwrap();
    assert_eq!(read, written);
    assert_eq!(
        read.accounts[0].balances.current.amount.to_string(),
        "12345678901234567.89"
    );
    assert_eq!(read.holdings[0].quantity.to_string(), "0.000000001");
    // The scale is part of what the institution said.
    assert_eq!(read.securities[0].price.unwrap().to_string(), "187.2345000");
}

#[tokio::test]
async fn money_round_trips_exactly_on_sqlite() {
    round_trip(Backend::Sqlite).await;
}

#[tokio::test]
async fn money_round_trips_exactly_on_postgres() {
    round_trip(Backend::Postgres).await;
}

#[tokio::test]
async fn applying_the_same_snapshot_twice_changes_nothing() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let db = TestDb::new(backend).await;
        let (store, connection) = store_with_connection(&db, 2).await;
        let first = store
            .apply_snapshot(connection, &snapshot(), Removals::all())
            .await
            .unwrap();
        assert_eq!(
            (first.added, first.modified, first.removed),
            (3, 0, 0),
            "{backend:?}"
        );
        let second = store
            .apply_snapshot(connection, &snapshot(), Removals::all())
            .await
            .unwrap();
        assert_eq!(
            (
                second.added,
                second.modified,
                second.removed,
                second.unchanged
            ),
            (0, 0, 0, 3),
            "{backend:?}"
        );

        let mut changed = snapshot();
        changed.holdings.clear();
        changed.securities[0].price = Some("190".parse().unwrap());
        // A holdings list with a record that did not map is incomplete: its gaps
        // are not removals.
        let incomplete = Removals {
            holdings: false,
            ..Removals::all()
        };
        let partial = store
            .apply_snapshot(connection, &changed, incomplete)
            .await
            .unwrap();
        assert_eq!((partial.modified, partial.removed), (1, 0), "{backend:?}");
        assert_eq!(
            store
                .full_snapshot(connection)
                .await
                .unwrap()
                .holdings
                .len(),
            1,
            "{backend:?}"
        );
        let third = store
            .apply_snapshot(connection, &changed, Removals::all())
            .await
            .unwrap();
        assert_eq!(
            (third.added, third.modified, third.removed),
            (0, 0, 1),
            "{backend:?}"
        );
        assert!(
            store
                .full_snapshot(connection)
                .await
                .unwrap()
                .holdings
                .is_empty()
        );
    }
}

/// The tests' extreme persona holds more than 10^15 in cash: every digit reaches the
/// read API as the institution sent it, on both databases.
#[tokio::test]
async fn a_balance_above_ten_to_the_fifteen_arrives_digit_for_digit() {
    use finsync_sandbox::SandboxConfig;
    use finsync_sandbox::data::{EXTREME_BALANCE_USER, portfolio};
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let builder = crate::support::TestApp::builder().tenant("advisor");
        let app = match backend {
            Backend::Sqlite => builder.sqlite(),
            Backend::Postgres => builder.postgres(),
        }
        .build()
        .await;
        let tenant = app.tenant();
        app.link_and_sync(tenant.id, EXTREME_BALANCE_USER).await;
        let served = app
            .get_json(
                &format!("/v1/users/{EXTREME_BALANCE_USER}/accounts"),
                tenant.bearer(),
            )
            .await;
        let expected = portfolio(
            SandboxConfig::default().seed,
            SandboxConfig::default().anchor_date,
            EXTREME_BALANCE_USER,
        );
        let mut largest = 0u32;
        for account in &expected.accounts {
            let shown = served["accounts"]
                .as_array()
                .unwrap()
                .iter()
                .find(|a| a["id"] == account.account_id.as_str())
                .unwrap_or_else(|| panic!("{} not served: {served}", account.account_id));
            let sent = account.balances.current.as_str();
            assert_eq!(shown["balances"]["current"]["amount"], sent, "{backend:?}");
            largest = largest.max(sent.split('.').next().unwrap().len() as u32);
        }
        assert!(largest > 15, "the persona's cash is above 10^15");
    }
}
