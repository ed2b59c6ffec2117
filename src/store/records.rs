//! Synced records: applying a fetched snapshot as a diff (only what changed is
//! written, one database transaction per account) and reading a connection's
//! records back as canonical values.

use std::collections::{BTreeMap, HashMap};

use chrono::{NaiveDate, Utc};
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, Set,
};

use super::annotations::{Annotations, annotations_from_row, carry_to_posted};
use super::entities::{account, holding, security, transaction};
use super::{DbDecimal, Store, StoreError};
use crate::domain::{
    Account, Balances, ConnectionId, ConnectionStatus, Coverage, Currency, Holding, InvestmentType,
    Money, Security, Snapshot, Transaction, TransactionStatus,
};

/// Rows one INSERT statement carries: one round trip for a page of new records
/// instead of one per record, well within both databases' limits on bound
/// parameters (SQLite's is 32,766; a transaction row binds 16).
const INSERT_BATCH: usize = 1000;

/// What applying a snapshot changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ApplyCounts {
    pub added: u32,
    pub modified: u32,
    pub removed: u32,
    pub unchanged: u32,
    /// Records that point at an account the institution did not return.
    pub orphaned: u32,
}

/// Which stored records a snapshot may remove. A list is only complete — and its
/// absences only mean "removed at the institution" — when every record in it was
/// read and mapped; otherwise what is stored stays. Transactions may also be only
/// the ones of some dates, or only what changed (see [`Coverage`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removals {
    pub accounts: bool,
    pub holdings: bool,
    pub transactions: Coverage,
}

impl Removals {
    /// The snapshot is everything the institution has.
    pub fn all() -> Self {
        Self {
            accounts: true,
            holdings: true,
            transactions: Coverage::Everything,
        }
    }
}

impl Store {
    /// Makes the stored records of `connection` equal `snapshot`: inserts new
    /// records, updates changed ones, deletes the ones the institution no longer
    /// returns (where `removals` allows), and leaves identical ones untouched.
    /// Applying the same snapshot twice changes nothing the second time. What users
    /// attached to transactions is never written here, except that a pending
    /// transaction's annotations pass to the posted one that replaces it.
    ///
    /// Each account is written in its own transaction with its holdings and
    /// transactions, and each such transaction moves the connection's records
    /// version; [`StoreError::Disconnected`] if the connection was disconnected,
    /// before anything more is written. Securities are upserted first and unused
    /// ones deleted last, so a holding never points at a missing security, even if
    /// a later step fails.
    pub async fn apply_snapshot(
        &self,
        connection: ConnectionId,
        snapshot: &Snapshot,
        removals: Removals,
    ) -> Result<ApplyCounts, StoreError> {
        let conn = connection.to_string();
        let mut counts = ApplyCounts::default();
        let now = Utc::now();
        let db = self.db();

        // What is stored is read before anything is written, and only what changed
        // opens a transaction: a resync that finds nothing new writes nothing.
        let mut stored_securities = by_external_id(
            security::Entity::find()
                .filter(security::Column::ConnectionId.eq(&conn))
                .all(db)
                .await?,
            |r| &r.external_id,
        );
        let mut stored_accounts = by_external_id(
            account::Entity::find()
                .filter(account::Column::ConnectionId.eq(&conn))
                .all(db)
                .await?,
            |r| &r.external_id,
        );
        let mut stored_holdings: HashMap<String, HashMap<String, holding::Model>> = HashMap::new();
        for row in holding::Entity::find()
            .filter(holding::Column::ConnectionId.eq(&conn))
            .all(db)
            .await?
        {
            stored_holdings
                .entry(row.account_external_id.clone())
                .or_default()
                .insert(row.external_id.clone(), row);
        }

        let mut securities: Writes<_, security::Model> = Writes::default();
        for sec in &snapshot.securities {
            match stored_securities.remove(&sec.external_id) {
                Some(row) if security_from_row(&row)? == *sec => counts.unchanged += 1,
                Some(row) => {
                    securities
                        .changed
                        .push(security_row(&conn, row.id, sec, now));
                    counts.modified += 1;
                }
                None => {
                    securities
                        .fresh
                        .push(security_row(&conn, new_id(), sec, now));
                    counts.added += 1;
                }
            }
        }
        if !securities.is_empty() {
            let txn = self.begin_write().await?;
            records_changed(&txn, &conn, true).await?;
            securities.write(&txn).await?;
            txn.commit().await?;
        }

        let mut holdings_by_account: BTreeMap<&str, Vec<&Holding>> = BTreeMap::new();
        for h in &snapshot.holdings {
            holdings_by_account
                .entry(h.account_external_id.as_str())
                .or_default()
                .push(h);
        }
        let mut transactions_by_account: BTreeMap<&str, Vec<&Transaction>> = BTreeMap::new();
        for t in &snapshot.transactions {
            transactions_by_account
                .entry(t.account_external_id.as_str())
                .or_default()
                .push(t);
        }

        for acc in &snapshot.accounts {
            let mut account: Writes<_, account::Model> = Writes::default();
            match stored_accounts.remove(&acc.external_id) {
                Some(row) if same_account(&account_from_row(&row)?, acc) => counts.unchanged += 1,
                Some(row) => {
                    account.changed.push(account_row(&conn, row.id, acc, now));
                    counts.modified += 1;
                }
                None => {
                    account.fresh.push(account_row(&conn, new_id(), acc, now));
                    counts.added += 1;
                }
            }
            let holdings = plan_holdings(
                &conn,
                stored_holdings.remove(&acc.external_id).unwrap_or_default(),
                &holdings_by_account
                    .remove(acc.external_id.as_str())
                    .unwrap_or_default(),
                removals.holdings,
                &mut counts,
            )?;
            let fetched = transactions_by_account
                .remove(acc.external_id.as_str())
                .unwrap_or_default();
            let stored = stored_transactions(
                db,
                &conn,
                &acc.external_id,
                &fetched,
                &removals.transactions,
            )
            .await?;
            let transactions =
                plan_transactions(&conn, stored, &fetched, &removals.transactions, &mut counts)?;
            if account.is_empty() && holdings.is_empty() && transactions.is_empty() {
                continue;
            }
            // Each account with its holdings and transactions, whole or not at all.
            let txn = self.begin_write().await?;
            records_changed(&txn, &conn, true).await?;
            account.write(&txn).await?;
            write_holdings(&txn, holdings).await?;
            write_transactions(&txn, transactions).await?;
            txn.commit().await?;
        }

        // Accounts the institution no longer returns go, with their records.
        if removals.accounts {
            for gone in stored_accounts.into_values() {
                let holdings = plan_holdings(
                    &conn,
                    stored_holdings
                        .remove(&gone.external_id)
                        .unwrap_or_default(),
                    &[],
                    true,
                    &mut counts,
                )?;
                let stored =
                    stored_transactions(db, &conn, &gone.external_id, &[], &Coverage::Everything)
                        .await?;
                let transactions =
                    plan_transactions(&conn, stored, &[], &Coverage::Everything, &mut counts)?;
                let txn = self.begin_write().await?;
                records_changed(&txn, &conn, true).await?;
                write_holdings(&txn, holdings).await?;
                write_transactions(&txn, transactions).await?;
                account::Entity::delete_by_id(gone.id).exec(&txn).await?;
                counts.removed += 1;
                txn.commit().await?;
            }
        }

        // Last, securities that no holding or transaction refers to any more. Most
        // syncs find none, and then write nothing: no transaction, no new version.
        if removals.holdings && removals.transactions != Coverage::Partial {
            let mut unused = Vec::new();
            for gone in stored_securities.into_values() {
                if !security_in_use(db, &conn, &gone.external_id).await? {
                    unused.push(gone);
                }
            }
            if !unused.is_empty() {
                let txn = self.begin_write().await?;
                records_changed(&txn, &conn, true).await?;
                for gone in unused {
                    // Checked again under the connection's lock.
                    if !security_in_use(&txn, &conn, &gone.external_id).await? {
                        security::Entity::delete_by_id(gone.id).exec(&txn).await?;
                        counts.removed += 1;
                    }
                }
                txn.commit().await?;
            }
        }

        counts.orphaned = u32::try_from(
            holdings_by_account.values().map(Vec::len).sum::<usize>()
                + transactions_by_account
                    .values()
                    .map(Vec::len)
                    .sum::<usize>(),
        )
        .unwrap_or(u32::MAX);
        Ok(counts)
    }

    /// A connection's records, with its `recent_transactions` newest transactions.
    pub async fn portfolio(
        &self,
        connection: ConnectionId,
        recent_transactions: u64,
    ) -> Result<Snapshot, StoreError> {
        let conn = connection.to_string();
        let db = self.db();
        let accounts = account::Entity::find()
            .filter(account::Column::ConnectionId.eq(&conn))
            .order_by_asc(account::Column::ExternalId)
            .all(db)
            .await?;
        let securities = security::Entity::find()
            .filter(security::Column::ConnectionId.eq(&conn))
            .order_by_asc(security::Column::ExternalId)
            .all(db)
            .await?;
        let holdings = holding::Entity::find()
            .filter(holding::Column::ConnectionId.eq(&conn))
            .order_by_asc(holding::Column::ExternalId)
            .all(db)
            .await?;
        let transactions = transaction::Entity::find()
            .filter(transaction::Column::ConnectionId.eq(&conn))
            .order_by_desc(transaction::Column::Date)
            .order_by_asc(transaction::Column::ExternalId)
            .limit(recent_transactions)
            .all(db)
            .await?;
        Ok(Snapshot {
            accounts: accounts
                .iter()
                .map(account_from_row)
                .collect::<Result<_, _>>()?,
            securities: securities
                .iter()
                .map(security_from_row)
                .collect::<Result<_, _>>()?,
            holdings: holdings
                .iter()
                .map(holding_from_row)
                .collect::<Result<_, _>>()?,
            transactions: transactions
                .iter()
                .map(transaction_from_row)
                .collect::<Result<_, _>>()?,
        })
    }

    /// Every stored record of a connection (all transactions), for checks and exports.
    pub async fn full_snapshot(&self, connection: ConnectionId) -> Result<Snapshot, StoreError> {
        self.portfolio(connection, u64::MAX >> 1).await
    }
}

/// Moves the connection's records version. It comes first in every transaction
/// that writes the connection's records: a portfolio view cached at the version
/// before can tell it is out of date, and the row lock it takes orders such
/// transactions with each other and with a disconnect (which takes it first too).
/// With `unless_disconnected`, a disconnected connection is left as it is and the
/// transaction must write nothing: [`StoreError::Disconnected`].
pub(super) async fn records_changed<C: ConnectionTrait>(
    db: &C,
    connection: &str,
    unless_disconnected: bool,
) -> Result<(), StoreError> {
    use super::entities::connection as row;
    let mut update = row::Entity::update_many()
        .col_expr(
            row::Column::RecordsVersion,
            Expr::col(row::Column::RecordsVersion).add(1),
        )
        .col_expr(row::Column::UpdatedAt, Expr::value(Utc::now()))
        .filter(row::Column::Id.eq(connection));
    if unless_disconnected {
        update = update.filter(row::Column::Status.ne(ConnectionStatus::Revoked.to_string()));
    }
    if update.exec(db).await?.rows_affected == 0 {
        return Err(if unless_disconnected {
            StoreError::Disconnected
        } else {
            StoreError::NotFound("connection")
        });
    }
    Ok(())
}

/// Whether a holding or transaction of the connection refers to the security.
async fn security_in_use<C: ConnectionTrait>(
    db: &C,
    connection: &str,
    security: &str,
) -> Result<bool, StoreError> {
    let held = holding::Entity::find()
        .filter(holding::Column::ConnectionId.eq(connection))
        .filter(holding::Column::SecurityExternalId.eq(security))
        .one(db)
        .await?
        .is_some();
    if held {
        return Ok(true);
    }
    Ok(transaction::Entity::find()
        .filter(transaction::Column::ConnectionId.eq(connection))
        .filter(transaction::Column::SecurityExternalId.eq(security))
        .one(db)
        .await?
        .is_some())
}

/// Locks the connection's row, as every writer of its records does first, for a
/// write that goes with the records but is not part of a portfolio view (the
/// quarantine): [`StoreError::Disconnected`] if it was disconnected.
pub(super) async fn lock_connected<C: ConnectionTrait>(
    db: &C,
    connection: &str,
) -> Result<(), StoreError> {
    use super::entities::connection as row;
    let locked = row::Entity::update_many()
        .col_expr(row::Column::Status, Expr::col(row::Column::Status))
        .filter(row::Column::Id.eq(connection))
        .filter(row::Column::Status.ne(ConnectionStatus::Revoked.to_string()))
        .exec(db)
        .await?;
    if locked.rows_affected == 0 {
        return Err(StoreError::Disconnected);
    }
    Ok(())
}

/// The writes one list of records needs: rows to insert, rows whose institution
/// columns to update, and stored rows to delete.
struct Writes<A, M> {
    fresh: Vec<A>,
    changed: Vec<A>,
    gone: Vec<M>,
}

impl<A, M> Default for Writes<A, M> {
    fn default() -> Self {
        Self {
            fresh: Vec::new(),
            changed: Vec::new(),
            gone: Vec::new(),
        }
    }
}

impl<A, M> Writes<A, M> {
    fn is_empty(&self) -> bool {
        self.fresh.is_empty() && self.changed.is_empty() && self.gone.is_empty()
    }
}

impl<A: ActiveModelTrait + sea_orm::ActiveModelBehavior + Send, M> Writes<A, M>
where
    <A::Entity as EntityTrait>::Model: sea_orm::IntoActiveModel<A>,
{
    /// Inserts and updates; deleting is the caller's, who knows what goes first.
    async fn write<C: ConnectionTrait>(self, db: &C) -> Result<Vec<M>, StoreError> {
        insert_all(db, self.fresh).await?;
        for row in self.changed {
            row.update(db).await?;
        }
        Ok(self.gone)
    }
}

fn by_external_id<M>(rows: Vec<M>, key: impl Fn(&M) -> &String) -> HashMap<String, M> {
    rows.into_iter().map(|r| (key(&r).clone(), r)).collect()
}

fn plan_holdings(
    conn: &str,
    mut stored: HashMap<String, holding::Model>,
    holdings: &[&Holding],
    remove_missing: bool,
    counts: &mut ApplyCounts,
) -> Result<HoldingWrites, StoreError> {
    let now = Utc::now();
    let mut writes = Writes::default();
    for h in holdings {
        match stored.remove(&h.external_id()) {
            Some(row) if holding_from_row(&row)? == **h => counts.unchanged += 1,
            Some(row) => {
                writes.changed.push(holding_row(conn, row.id, h, now));
                counts.modified += 1;
            }
            None => {
                writes.fresh.push(holding_row(conn, new_id(), h, now));
                counts.added += 1;
            }
        }
    }
    if remove_missing {
        counts.removed += count(stored.len());
        writes.gone = stored.into_values().collect();
    }
    Ok(writes)
}

type HoldingWrites = Writes<holding::ActiveModel, holding::Model>;

/// Holdings' deletions need nothing before them.
async fn write_holdings<C: ConnectionTrait>(
    db: &C,
    writes: HoldingWrites,
) -> Result<(), StoreError> {
    let gone = writes.write(db).await?;
    for rows in gone.chunks(INSERT_BATCH) {
        holding::Entity::delete_many()
            .filter(holding::Column::Id.is_in(rows.iter().map(|r| r.id.as_str())))
            .exec(db)
            .await?;
    }
    Ok(())
}

type TransactionWrites = Writes<transaction::ActiveModel, transaction::Model>;

fn plan_transactions(
    conn: &str,
    mut stored: HashMap<String, transaction::Model>,
    transactions: &[&Transaction],
    coverage: &Coverage,
    counts: &mut ApplyCounts,
) -> Result<TransactionWrites, StoreError> {
    let now = Utc::now();
    let mut writes = Writes::default();
    for t in transactions {
        match stored.remove(&t.external_id) {
            Some(row) if transaction_from_row(&row)? == **t => counts.unchanged += 1,
            Some(row) => {
                writes.changed.push(transaction_row(conn, row.id, t, now));
                counts.modified += 1;
            }
            None => {
                writes.fresh.push(transaction_row(conn, new_id(), t, now));
                counts.added += 1;
            }
        }
    }
    writes.gone = stored
        .into_values()
        .filter(|gone| coverage.removes(&gone.external_id, gone.date))
        .collect();
    counts.removed += count(writes.gone.len());
    Ok(writes)
}

/// Posted transactions are inserted first, so that a pending one they replace can
/// pass its annotations on before it goes.
async fn write_transactions<C: ConnectionTrait>(
    db: &C,
    writes: TransactionWrites,
) -> Result<(), StoreError> {
    let gone = writes.write(db).await?;
    for row in &gone {
        carry_to_posted(db, row).await?;
    }
    for rows in gone.chunks(INSERT_BATCH) {
        transaction::Entity::delete_many()
            .filter(transaction::Column::Id.is_in(rows.iter().map(|r| r.id.as_str())))
            .exec(db)
            .await?;
    }
    Ok(())
}

/// The stored transactions of `account` that applying `transactions` under
/// `coverage` may touch, by external id: all of them when the list is everything
/// the institution has; else the ones it names (fetched or removed) and, for a date
/// range, the ones dated in it. An incremental sync with nothing new reads none.
async fn stored_transactions<C: ConnectionTrait>(
    db: &C,
    conn: &str,
    account: &str,
    transactions: &[&Transaction],
    coverage: &Coverage,
) -> Result<HashMap<String, transaction::Model>, StoreError> {
    let of_account = || {
        transaction::Entity::find()
            .filter(transaction::Column::ConnectionId.eq(conn))
            .filter(transaction::Column::AccountExternalId.eq(account))
    };
    let mut rows = match coverage {
        Coverage::Everything => of_account().all(db).await?,
        Coverage::Dated { from, to } => {
            of_account()
                .filter(transaction::Column::Date.between(*from, *to))
                .all(db)
                .await?
        }
        Coverage::Changes { .. } | Coverage::Partial => Vec::new(),
    };
    if !matches!(coverage, Coverage::Everything) {
        let removed: &[String] = match coverage {
            Coverage::Changes { removed } => removed,
            _ => &[],
        };
        let named: Vec<&str> = transactions
            .iter()
            .map(|t| t.external_id.as_str())
            .chain(removed.iter().map(String::as_str))
            .collect();
        for ids in named.chunks(INSERT_BATCH) {
            rows.extend(
                of_account()
                    .filter(transaction::Column::ExternalId.is_in(ids.iter().copied()))
                    .all(db)
                    .await?,
            );
        }
    }
    Ok(rows
        .into_iter()
        .map(|r| (r.external_id.clone(), r))
        .collect())
}

/// Equal apart from `balances.as_of`: without an institution timestamp, as-of is
/// when the balance was first seen at this value, so an unchanged balance is not
/// rewritten just because it was fetched again.
fn same_account(stored: &Account, fetched: &Account) -> bool {
    let mut fetched = fetched.clone();
    fetched.balances.as_of = stored.balances.as_of;
    *stored == fetched
}

fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Inserts `rows` in statements of at most [`INSERT_BATCH`] rows each.
async fn insert_all<A, C>(db: &C, rows: Vec<A>) -> Result<(), StoreError>
where
    A: sea_orm::ActiveModelTrait + Send,
    C: ConnectionTrait,
{
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        let batch: Vec<A> = rows.by_ref().take(INSERT_BATCH).collect();
        A::Entity::insert_many(batch)
            .exec_without_returning(db)
            .await?;
    }
    Ok(())
}

fn corrupt(what: &str, value: &str) -> StoreError {
    StoreError::Corrupt(format!("{what} `{value}`"))
}

fn currency(value: &str) -> Result<Currency, StoreError> {
    value.parse().map_err(|_| corrupt("currency", value))
}

fn account_row(
    conn: &str,
    id: String,
    a: &Account,
    now: chrono::DateTime<Utc>,
) -> account::ActiveModel {
    account::ActiveModel {
        id: Set(id),
        connection_id: Set(conn.to_owned()),
        external_id: Set(a.external_id.clone()),
        account_type: Set(a.account_type.to_string()),
        subtype: Set(a.subtype.clone()),
        name: Set(a.name.clone()),
        official_name: Set(a.official_name.clone()),
        mask: Set(a.mask.clone()),
        currency: Set(a.currency.to_string()),
        balance_current: Set(a.balances.current.amount.into()),
        balance_available: Set(a.balances.available.map(|m| m.amount.into())),
        balance_as_of: Set(a.balances.as_of),
        updated_at: Set(now),
    }
}

fn account_from_row(r: &account::Model) -> Result<Account, StoreError> {
    let currency = currency(&r.currency)?;
    Ok(Account {
        external_id: r.external_id.clone(),
        account_type: r
            .account_type
            .parse()
            .map_err(|_| corrupt("account type", &r.account_type))?,
        subtype: r.subtype.clone(),
        name: r.name.clone(),
        official_name: r.official_name.clone(),
        mask: r.mask.clone(),
        currency,
        balances: Balances {
            current: Money::new(r.balance_current.0, currency),
            available: r.balance_available.map(|d| Money::new(d.0, currency)),
            as_of: r.balance_as_of,
        },
    })
}

fn security_row(
    conn: &str,
    id: String,
    s: &Security,
    now: chrono::DateTime<Utc>,
) -> security::ActiveModel {
    security::ActiveModel {
        id: Set(id),
        connection_id: Set(conn.to_owned()),
        external_id: Set(s.external_id.clone()),
        ticker: Set(s.ticker.clone()),
        cusip: Set(s.cusip.clone()),
        isin: Set(s.isin.clone()),
        sedol: Set(s.sedol.clone()),
        figi: Set(s.figi.clone()),
        name: Set(s.name.clone()),
        security_type: Set(s.security_type.to_string()),
        currency: Set(s.currency.to_string()),
        price: Set(s.price.map(DbDecimal)),
        price_as_of: Set(s.price_as_of),
        updated_at: Set(now),
    }
}

fn security_from_row(r: &security::Model) -> Result<Security, StoreError> {
    Ok(Security {
        external_id: r.external_id.clone(),
        ticker: r.ticker.clone(),
        cusip: r.cusip.clone(),
        isin: r.isin.clone(),
        sedol: r.sedol.clone(),
        figi: r.figi.clone(),
        name: r.name.clone(),
        security_type: r
            .security_type
            .parse()
            .map_err(|_| corrupt("security type", &r.security_type))?,
        currency: currency(&r.currency)?,
        price: r.price.map(|d| d.0),
        price_as_of: r.price_as_of,
    })
}

fn holding_row(
    conn: &str,
    id: String,
    h: &Holding,
    now: chrono::DateTime<Utc>,
) -> holding::ActiveModel {
    // A holding's amounts share one currency; the canonical record carries it on each.
    let currency = [&h.price, &h.value, &h.cost_basis]
        .into_iter()
        .flatten()
        .map(|m| m.currency.to_string())
        .next()
        .unwrap_or_default();
    holding::ActiveModel {
        id: Set(id),
        connection_id: Set(conn.to_owned()),
        external_id: Set(h.external_id()),
        account_external_id: Set(h.account_external_id.clone()),
        security_external_id: Set(h.security_external_id.clone()),
        quantity: Set(h.quantity.into()),
        cost_basis: Set(h.cost_basis.map(|m| m.amount.into())),
        price: Set(h.price.map(|m| m.amount.into())),
        value: Set(h.value.map(|m| m.amount.into())),
        currency: Set(currency),
        as_of: Set(h.as_of),
        updated_at: Set(now),
    }
}

fn holding_from_row(r: &holding::Model) -> Result<Holding, StoreError> {
    let money = |d: Option<DbDecimal>| -> Result<Option<Money>, StoreError> {
        d.map(|d| Ok(Money::new(d.0, currency(&r.currency)?)))
            .transpose()
    };
    Ok(Holding {
        account_external_id: r.account_external_id.clone(),
        security_external_id: r.security_external_id.clone(),
        quantity: r.quantity.0,
        cost_basis: money(r.cost_basis)?,
        price: money(r.price)?,
        value: money(r.value)?,
        as_of: r.as_of,
    })
}

fn transaction_row(
    conn: &str,
    id: String,
    t: &Transaction,
    now: chrono::DateTime<Utc>,
) -> transaction::ActiveModel {
    transaction::ActiveModel {
        id: Set(id),
        connection_id: Set(conn.to_owned()),
        external_id: Set(t.external_id.clone()),
        account_external_id: Set(t.account_external_id.clone()),
        amount: Set(t.amount.amount.into()),
        currency: Set(t.amount.currency.to_string()),
        date: Set(t.date),
        status: Set(t.status.to_string()),
        pending_external_id: Set(t.pending_external_id.clone()),
        description: Set(t.description.clone()),
        category: Set(t.category.clone()),
        investment_type: Set(t.investment_type.map(|i| i.to_string())),
        security_external_id: Set(t.security_external_id.clone()),
        quantity: Set(t.quantity.map(DbDecimal)),
        price: Set(t.price.map(DbDecimal)),
        updated_at: Set(now),
        // The user's tags and note: never the institution's to write.
        ..Default::default()
    }
}

pub(super) fn transaction_from_row(r: &transaction::Model) -> Result<Transaction, StoreError> {
    Ok(Transaction {
        external_id: r.external_id.clone(),
        account_external_id: r.account_external_id.clone(),
        amount: Money::new(r.amount.0, currency(&r.currency)?),
        date: r.date,
        status: r
            .status
            .parse()
            .map_err(|_| corrupt("transaction status", &r.status))?,
        pending_external_id: r.pending_external_id.clone(),
        description: r.description.clone(),
        category: r.category.clone(),
        investment_type: r
            .investment_type
            .as_deref()
            .map(|i| i.parse().map_err(|_| corrupt("investment type", i)))
            .transpose()?,
        security_external_id: r.security_external_id.clone(),
        quantity: r.quantity.map(|d| d.0),
        price: r.price.map(|d| d.0),
    })
}

/// Which transactions a page holds.
#[derive(Debug, Clone, Default)]
pub struct TransactionFilter {
    pub account: Option<String>,
    pub from: Option<NaiveDate>,
    pub to: Option<NaiveDate>,
    pub status: Option<TransactionStatus>,
    pub investment_type: Option<InvestmentType>,
}

/// Where the previous page ended: transactions come newest first, ties by row id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionPosition {
    pub date: NaiveDate,
    pub row_id: String,
}

/// One transaction with the connection it came from and its position for paging.
#[derive(Debug, Clone)]
pub struct PagedTransaction {
    pub connection: ConnectionId,
    pub position: TransactionPosition,
    pub transaction: Transaction,
    pub annotations: Annotations,
}

impl Store {
    /// Up to `limit` transactions of the given connections after `after`, newest
    /// first, matching `filter`.
    pub async fn transactions_page(
        &self,
        connections: &[ConnectionId],
        filter: &TransactionFilter,
        after: Option<&TransactionPosition>,
        limit: u64,
    ) -> Result<Vec<PagedTransaction>, StoreError> {
        use sea_orm::sea_query::Condition;
        let mut query = transaction::Entity::find().filter(
            transaction::Column::ConnectionId.is_in(connections.iter().map(ToString::to_string)),
        );
        if let Some(account) = &filter.account {
            query = query.filter(transaction::Column::AccountExternalId.eq(account));
        }
        if let Some(from) = filter.from {
            query = query.filter(transaction::Column::Date.gte(from));
        }
        if let Some(to) = filter.to {
            query = query.filter(transaction::Column::Date.lte(to));
        }
        if let Some(status) = filter.status {
            query = query.filter(transaction::Column::Status.eq(status.as_str()));
        }
        if let Some(kind) = filter.investment_type {
            query = query.filter(transaction::Column::InvestmentType.eq(kind.as_str()));
        }
        if let Some(after) = after {
            query = query.filter(
                Condition::any()
                    .add(transaction::Column::Date.lt(after.date))
                    .add(
                        Condition::all()
                            .add(transaction::Column::Date.eq(after.date))
                            .add(transaction::Column::Id.gt(after.row_id.as_str())),
                    ),
            );
        }
        query
            .order_by_desc(transaction::Column::Date)
            .order_by_asc(transaction::Column::Id)
            .limit(limit)
            .all(self.db())
            .await?
            .iter()
            .map(|row| {
                Ok(PagedTransaction {
                    connection: row.connection_id.parse().map_err(|_| {
                        StoreError::Corrupt(format!("transaction {}: connection id", row.id))
                    })?,
                    position: TransactionPosition {
                        date: row.date,
                        row_id: row.id.clone(),
                    },
                    transaction: transaction_from_row(row)?,
                    annotations: annotations_from_row(row)?,
                })
            })
            .collect()
    }
}
