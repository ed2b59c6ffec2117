//! Synced records survive a round trip through either database exactly (every
//! character of their text, every absent value, however many rows), and an
//! account whose rows the database refuses, or whose write is dropped part-way,
//! is written not at all, leaving the store fit for the next write; a transaction
//! moved from one account to another moves, keeping what users attached to it,
//! and one listed under two changes nothing. On PostgreSQL new rows arrive through
//! `COPY` in the transaction the account is written in (small accounts share
//! one), so this is also that path's test: that it is the path taken, its binary
//! encoding of every kind of value, its batches, its failure and its cancellation.

use std::future::Future as _;
use std::task::Poll;

use chrono::{NaiveDate, Utc};
use finsync::domain::ConnectionId;
use finsync::domain::{
    Account, AccountType, BalanceMeaning, Balances, InvestmentType, Money, Snapshot, Transaction,
    TransactionStatus,
};
use finsync::store::{AnnotationChange, Removals, Store};
use sea_orm::{ConnectionTrait, Statement};

use crate::support::{Backend, TestDb, store_with_connection};

/// Texts that would end a field or a line in `COPY`'s text format, or look like
/// its NULL, and some that are merely not ASCII: each arrives as it was sent.
const AWKWARD: [&str; 8] = [
    "tab\there",
    "two\nlines",
    "carriage\rreturn",
    r"back\slash and \N and \t written out",
    r"\N",
    "",
    "Café ☕ «quoted» \"double\" 'single'",
    "trailing backslash\\",
];

fn account(id: &str) -> Account {
    let usd = "USD".parse().unwrap();
    Account {
        external_id: id.into(),
        account_type: AccountType::Depository,
        subtype: None,
        name: "Checking\twith a tab".into(),
        official_name: Some(r"Official \N name".into()),
        mask: None,
        currency: usd,
        balances: Balances {
            current: Money::new("10.00".parse().unwrap(), usd),
            available: None,
            cash: None,
            meaning: BalanceMeaning::Total,
            as_of: chrono::SubsecRound::trunc_subsecs(Utc::now(), 6),
        },
    }
}

/// `count` transactions of `account`, cycling through the awkward texts and
/// through set and absent optional fields.
fn transactions(account: &str, count: usize) -> Vec<Transaction> {
    let usd = "USD".parse().unwrap();
    (0..count)
        .map(|i| Transaction {
            external_id: format!("{account}-t{i}"),
            account_external_id: account.into(),
            amount: Money::new(format!("-{i}.0{}", i % 10).parse().unwrap(), usd),
            // Some before PostgreSQL's epoch (2000-01-01), which `COPY`'s binary
            // format counts days from.
            date: NaiveDate::from_ymd_opt(1999, 11, 1).unwrap() + chrono::Days::new(i as u64 % 300),
            status: if i % 2 == 0 {
                TransactionStatus::Posted
            } else {
                TransactionStatus::Pending
            },
            pending_external_id: (i % 3 == 0).then(|| format!("p\t{i}")),
            description: AWKWARD[i % AWKWARD.len()].to_owned(),
            category: (i % 4 == 0).then(|| AWKWARD[(i + 1) % AWKWARD.len()].to_owned()),
            investment_type: (i % 5 == 0).then_some(InvestmentType::Fee),
            security_external_id: None,
            quantity: (i % 7 == 0).then(|| "0.000000001".parse().unwrap()),
            price: None,
        })
        .collect()
}

fn sorted(mut snapshot: Snapshot) -> Snapshot {
    snapshot
        .transactions
        .sort_by(|a, b| a.external_id.cmp(&b.external_id));
    snapshot
}

async fn text_round_trips(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (store, connection) = store_with_connection(&db, 2).await;
    // More rows than one statement or one message of a copy carries.
    let mut transactions = transactions("acc-1", 2_345);
    transactions.extend(self::transactions("acc-2", 3));
    let written = Snapshot {
        accounts: vec![account("acc-1"), account("acc-2")],
        transactions,
        ..Snapshot::default()
    };
    let counts = store
        .apply_snapshot(connection, &written, Removals::all())
        .await
        .unwrap();
    assert_eq!(counts.added, 2 + 2_348);
    let read = store.full_snapshot(connection).await.unwrap();
    assert_eq!(sorted(read), sorted(written.clone()), "{backend:?}");

    // What was written reads back equal, so applying it again writes nothing.
    let again = store
        .apply_snapshot(connection, &written, Removals::all())
        .await
        .unwrap();
    assert_eq!((again.added, again.modified, again.removed), (0, 0, 0));
}

#[tokio::test]
async fn text_and_absent_values_round_trip_exactly_on_sqlite() {
    text_round_trips(Backend::Sqlite).await;
}

#[tokio::test]
async fn text_and_absent_values_round_trip_exactly_on_postgres() {
    text_round_trips(Backend::Postgres).await;
}

/// On PostgreSQL a first sync's rows arrive by `COPY`, one per table and
/// transaction however many batches it sends, and nothing else inserts them. A
/// statement-level trigger in the test's own database notes the text of each
/// statement that inserts into a record table.
#[tokio::test]
async fn new_records_arrive_by_copy_on_postgres() {
    let db = TestDb::new(Backend::Postgres).await;
    let (store, connection) = store_with_connection(&db, 2).await;
    store
        .db()
        .execute_unprepared(
            "CREATE TABLE inserted_by (record_table text, statement text);
             CREATE FUNCTION note_insert() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
                 INSERT INTO inserted_by VALUES (TG_TABLE_NAME, current_query());
                 RETURN NULL;
             END $$;
             CREATE TRIGGER note_insert AFTER INSERT ON accounts
                 FOR EACH STATEMENT EXECUTE FUNCTION note_insert();
             CREATE TRIGGER note_insert AFTER INSERT ON transactions
                 FOR EACH STATEMENT EXECUTE FUNCTION note_insert();",
        )
        .await
        .unwrap();
    // More rows than one message of a copy carries.
    let mut transactions = transactions("acc-1", 2_345);
    transactions.extend(self::transactions("acc-3", 3_000));
    let snapshot = Snapshot {
        accounts: vec![account("acc-1"), account("acc-2"), account("acc-3")],
        transactions,
        ..Snapshot::default()
    };
    store
        .apply_snapshot(connection, &snapshot, Removals::all())
        .await
        .unwrap();
    let noted: Vec<(String, String)> = store
        .db()
        .query_all_raw(Statement::from_string(
            store.db().get_database_backend(),
            "SELECT record_table, statement FROM inserted_by ORDER BY record_table",
        ))
        .await
        .unwrap()
        .into_iter()
        .map(|row| {
            (
                row.try_get("", "record_table").unwrap(),
                row.try_get("", "statement").unwrap(),
            )
        })
        .collect();
    let tables: Vec<&str> = noted.iter().map(|(table, _)| table.as_str()).collect();
    // The first two accounts, 2,347 rows together, share one transaction; the
    // third, 3,001 rows, would take it past 5,000 and has its own. One statement
    // per table and transaction, however many batches it sends.
    assert_eq!(
        tables,
        ["accounts", "accounts", "transactions", "transactions"],
        "{noted:?}"
    );
    for (table, statement) in &noted {
        assert!(
            statement.starts_with(&format!("COPY \"{table}\"")),
            "{table} was inserted into by: {statement}"
        );
    }
    let stored = store.full_snapshot(connection).await.unwrap();
    assert_eq!(sorted(stored), sorted(snapshot));
}

async fn refused_account(backend: Backend) {
    let db = TestDb::new(backend).await;
    // One pooled connection: the write after the failed one gets that connection,
    // or the one that replaced it.
    let (store, connection) = store_with_connection(&db, 1).await;
    let mut transactions = transactions("acc-1", 1_500);
    // The same institution id twice: the database's uniqueness refuses the second.
    transactions.push(transactions[1_234].clone());
    let refused = Snapshot {
        accounts: vec![account("acc-1")],
        transactions,
        ..Snapshot::default()
    };
    let error = store
        .apply_snapshot(connection, &refused, Removals::all())
        .await
        .unwrap_err();
    assert!(
        !error.is_unavailable(),
        "a refused row is not an outage: {error}"
    );
    let read = store.full_snapshot(connection).await.unwrap();
    assert_eq!(
        read,
        Snapshot::default(),
        "{backend:?}: nothing of the account"
    );

    let good = Snapshot {
        accounts: vec![account("acc-1")],
        transactions: self::transactions("acc-1", 10),
        ..Snapshot::default()
    };
    store
        .apply_snapshot(connection, &good, Removals::all())
        .await
        .unwrap();
    let read = store.full_snapshot(connection).await.unwrap();
    assert_eq!(sorted(read), sorted(good), "{backend:?}");
}

#[tokio::test]
async fn a_refused_account_is_written_not_at_all_on_sqlite() {
    refused_account(Backend::Sqlite).await;
}

#[tokio::test]
async fn a_refused_account_is_written_not_at_all_on_postgres() {
    refused_account(Backend::Postgres).await;
}

async fn dropped_writes(backend: Backend) {
    let db = TestDb::new(backend).await;
    // One pooled connection: each write after a dropped one gets the connection
    // the dropped one used, or the one that replaced it.
    let (store, connection) = store_with_connection(&db, 1).await;
    let snapshot = Snapshot {
        accounts: vec![account("acc-1")],
        transactions: transactions("acc-1", 2_500),
        ..Snapshot::default()
    };
    // The write is dropped at its first wait, then at its second, and so on, until
    // one finishes: every point where a sync can be cancelled (its lease lost, the
    // worker stopping) is met, the middle of a `COPY` among them. Each poll after
    // the first comes when the write is woken, so each is a step of progress.
    let mut dropped = 0;
    for polls in 1.. {
        let mut write = Box::pin(store.apply_snapshot(connection, &snapshot, Removals::all()));
        let mut waits = 0;
        let finished = std::future::poll_fn(|cx| match write.as_mut().poll(cx) {
            Poll::Ready(result) => Poll::Ready(Some(result)),
            Poll::Pending if waits == polls => Poll::Ready(None),
            Poll::Pending => {
                waits += 1;
                Poll::Pending
            }
        })
        .await;
        if let Some(result) = finished {
            result.unwrap_or_else(|e| panic!("{backend:?}: the write failed: {e}"));
            break;
        }
        drop(write);
        dropped += 1;
        let stored = store
            .full_snapshot(connection)
            .await
            .unwrap_or_else(|e| panic!("{backend:?}: after a write dropped at poll {polls}: {e}"));
        assert!(
            stored == Snapshot::default() || sorted(stored) == sorted(snapshot.clone()),
            "{backend:?}: dropped after {polls} polls, the account is stored in part"
        );
        assert!(polls < 10_000, "{backend:?}: the write never finished");
    }
    assert!(dropped > 0, "{backend:?}: no write was dropped");
    let stored = store.full_snapshot(connection).await.unwrap();
    assert_eq!(sorted(stored), sorted(snapshot), "{backend:?}");
}

#[tokio::test]
async fn a_write_dropped_anywhere_leaves_all_or_nothing_on_sqlite() {
    dropped_writes(Backend::Sqlite).await;
}

#[tokio::test]
async fn a_write_dropped_anywhere_leaves_all_or_nothing_on_postgres() {
    dropped_writes(Backend::Postgres).await;
}

/// A store holding two small accounts of one connection (three transactions and
/// two), and the snapshot it holds.
async fn two_accounts_stored(db: &TestDb) -> (Store, ConnectionId, Snapshot) {
    let (store, connection) = store_with_connection(db, 2).await;
    let mut stored = transactions("acc-1", 3);
    stored.extend(transactions("acc-2", 2));
    let snapshot = Snapshot {
        accounts: vec![account("acc-1"), account("acc-2")],
        transactions: stored,
        ..Snapshot::default()
    };
    store
        .apply_snapshot(connection, &snapshot, Removals::all())
        .await
        .unwrap();
    (store, connection, snapshot)
}

/// Tags and a note on stored transaction `id`, as a user attaches them.
async fn annotate(store: &Store, connection: ConnectionId, id: &str) {
    let tenant = store.connection(connection).await.unwrap().tenant_id;
    store
        .annotate_transaction(
            tenant,
            id,
            Some(connection),
            AnnotationChange {
                tags: Some(vec!["reviewed".into(), format!("tag of {id}")]),
                note: Some(Some(format!("note on {id}"))),
            },
        )
        .await
        .unwrap();
}

/// The account, tags and note stored for transaction `id`: one row of it.
async fn stored_with_annotations(store: &Store, id: &str) -> Vec<(String, String, Option<String>)> {
    let db = store.db();
    let rows = db
        .query_all_raw(Statement::from_sql_and_values(
            db.get_database_backend(),
            match db.get_database_backend() {
                sea_orm::DbBackend::Postgres => {
                    "SELECT account_external_id, tags, note FROM transactions WHERE external_id = $1"
                }
                _ => "SELECT account_external_id, tags, note FROM transactions WHERE external_id = ?",
            },
            [id.into()],
        ))
        .await
        .unwrap();
    rows.iter()
        .map(|row| {
            (
                row.try_get("", "account_external_id").unwrap(),
                row.try_get("", "tags").unwrap(),
                row.try_get("", "note").unwrap(),
            )
        })
        .collect()
}

/// `id` stored once, under `account`, with the tags and note [`annotate`] gave it.
async fn assert_moved_with_annotations(store: &Store, id: &str, account: &str, backend: Backend) {
    let tags = serde_json::to_string(&["reviewed".to_owned(), format!("tag of {id}")]).unwrap();
    assert_eq!(
        stored_with_annotations(store, id).await,
        [(account.to_owned(), tags, Some(format!("note on {id}")))],
        "{backend:?}: {id} moved to {account} with what the user attached"
    );
}

/// A transaction the institution moves to another account, earlier or later in
/// the list, moves: each account's stored rows are read by account, so the move
/// shows as a delete in one account and an insert in the other, and the insert
/// must not find the old row still holding the id, though small accounts are
/// written together in one transaction. The user's tags and note go with it.
async fn moved_transaction(backend: Backend, id: &str, to: &str) {
    let db = TestDb::new(backend).await;
    let (store, connection, before) = two_accounts_stored(&db).await;
    annotate(&store, connection, id).await;

    let mut after = before.clone();
    let moved = after
        .transactions
        .iter_mut()
        .find(|t| t.external_id == id)
        .unwrap();
    moved.account_external_id = to.into();
    let counts = store
        .apply_snapshot(connection, &after, Removals::all())
        .await
        .unwrap_or_else(|e| panic!("{backend:?}: moving {id} to {to} failed: {e}"));
    assert_eq!((counts.added, counts.removed), (1, 1), "{backend:?}");
    let read = store.full_snapshot(connection).await.unwrap();
    assert_eq!(sorted(read), sorted(after), "{backend:?}");
    assert_moved_with_annotations(&store, id, to, backend).await;
}

#[tokio::test]
async fn a_transaction_moved_to_a_later_account_is_moved_on_sqlite() {
    moved_transaction(Backend::Sqlite, "acc-1-t2", "acc-2").await;
}

#[tokio::test]
async fn a_transaction_moved_to_a_later_account_is_moved_on_postgres() {
    moved_transaction(Backend::Postgres, "acc-1-t2", "acc-2").await;
}

#[tokio::test]
async fn a_transaction_moved_to_an_earlier_account_is_moved_on_sqlite() {
    moved_transaction(Backend::Sqlite, "acc-2-t1", "acc-1").await;
}

#[tokio::test]
async fn a_transaction_moved_to_an_earlier_account_is_moved_on_postgres() {
    moved_transaction(Backend::Postgres, "acc-2-t1", "acc-1").await;
}

/// A transaction moved out of an account the institution no longer lists moves,
/// and the run counts it as one removed and one added, as any move: its old row
/// goes before its account is planned to go, and counts where it goes.
async fn moved_out_of_a_closed_account(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (store, connection, before) = two_accounts_stored(&db).await;
    annotate(&store, connection, "acc-2-t0").await;

    let mut after = Snapshot {
        accounts: before
            .accounts
            .iter()
            .filter(|a| a.external_id == "acc-1")
            .cloned()
            .collect(),
        transactions: before
            .transactions
            .iter()
            .filter(|t| t.account_external_id == "acc-1" || t.external_id == "acc-2-t0")
            .cloned()
            .collect(),
        ..Snapshot::default()
    };
    for t in &mut after.transactions {
        t.account_external_id = "acc-1".into();
    }
    let counts = store
        .apply_snapshot(connection, &after, Removals::all())
        .await
        .unwrap_or_else(|e| panic!("{backend:?}: moving out of a closed account failed: {e}"));
    // Removed: the moved row, acc-2's other transaction, and acc-2 itself.
    assert_eq!((counts.added, counts.removed), (1, 3), "{backend:?}");
    let read = store.full_snapshot(connection).await.unwrap();
    assert_eq!(sorted(read), sorted(after), "{backend:?}");
    assert_moved_with_annotations(&store, "acc-2-t0", "acc-1", backend).await;
}

#[tokio::test]
async fn a_transaction_moved_out_of_a_closed_account_is_moved_and_counted_on_sqlite() {
    moved_out_of_a_closed_account(Backend::Sqlite).await;
}

#[tokio::test]
async fn a_transaction_moved_out_of_a_closed_account_is_moved_and_counted_on_postgres() {
    moved_out_of_a_closed_account(Backend::Postgres).await;
}

/// Moves between accounts written in different database transactions: an account
/// with more than 5,000 rows to write (here every transaction of it restated) is
/// written alone, before the small one after it. A transaction moved into the
/// large account is inserted there while its old row still stands under the small
/// one, which is written later; one moved out of it is left there for the small
/// account's group to delete before it inserts it. Both are one removed and one
/// added, the stored rows are the snapshot's, and both keep their annotations.
async fn moved_across_groups(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (store, connection) = store_with_connection(&db, 2).await;
    let mut stored = transactions("acc-1", 5_001);
    stored.extend(transactions("acc-2", 2));
    let before = Snapshot {
        accounts: vec![account("acc-1"), account("acc-2")],
        transactions: stored,
        ..Snapshot::default()
    };
    store
        .apply_snapshot(connection, &before, Removals::all())
        .await
        .unwrap();
    annotate(&store, connection, "acc-2-t0").await;
    annotate(&store, connection, "acc-1-t7").await;

    let mut after = before.clone();
    for t in &mut after.transactions {
        match t.external_id.as_str() {
            "acc-2-t0" => t.account_external_id = "acc-1".into(),
            "acc-1-t7" => t.account_external_id = "acc-2".into(),
            id if id.starts_with("acc-1-") => t.description.push_str(" (restated)"),
            _ => {}
        }
    }
    let counts = store
        .apply_snapshot(connection, &after, Removals::all())
        .await
        .unwrap_or_else(|e| panic!("{backend:?}: moving across groups failed: {e}"));
    assert_eq!(
        (counts.added, counts.removed, counts.modified),
        (2, 2, 5_000),
        "{backend:?}"
    );
    let read = store.full_snapshot(connection).await.unwrap();
    assert_eq!(sorted(read), sorted(after), "{backend:?}");
    assert_moved_with_annotations(&store, "acc-2-t0", "acc-1", backend).await;
    assert_moved_with_annotations(&store, "acc-1-t7", "acc-2", backend).await;
}

#[tokio::test]
async fn transactions_moved_between_accounts_written_apart_are_moved_and_counted_on_sqlite() {
    moved_across_groups(Backend::Sqlite).await;
}

#[tokio::test]
async fn transactions_moved_between_accounts_written_apart_are_moved_and_counted_on_postgres() {
    moved_across_groups(Backend::Postgres).await;
}

/// A transaction the institution lists under two accounts at once is not a move:
/// the write is refused, as on a first sync, and what is stored stays as it was,
/// rather than the two copies replacing each other on every sync.
async fn listed_twice(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (store, connection, before) = two_accounts_stored(&db).await;

    let mut twice = before.clone();
    let mut copy = twice
        .transactions
        .iter()
        .find(|t| t.external_id == "acc-2-t1")
        .unwrap()
        .clone();
    copy.account_external_id = "acc-1".into();
    twice.transactions.push(copy);
    let error = store
        .apply_snapshot(connection, &twice, Removals::all())
        .await
        .unwrap_err();
    assert!(!error.is_unavailable(), "{backend:?}: {error}");
    let read = store.full_snapshot(connection).await.unwrap();
    assert_eq!(sorted(read), sorted(before), "{backend:?}");
}

#[tokio::test]
async fn a_transaction_listed_under_two_accounts_changes_nothing_on_sqlite() {
    listed_twice(Backend::Sqlite).await;
}

#[tokio::test]
async fn a_transaction_listed_under_two_accounts_changes_nothing_on_postgres() {
    listed_twice(Backend::Postgres).await;
}
