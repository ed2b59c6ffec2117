//! Applying a fetched snapshot as a diff: what changed is written, in batches,
//! each account whole in one database transaction (small accounts several to one);
//! what the institution no longer lists is removed where the fetch covered it.

use std::collections::BTreeMap;

use foldhash::{HashMap, HashMapExt as _, HashSet, HashSetExt as _};

use chrono::Utc;
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter};

use crate::domain::{
    Account, ConnectionId, ConnectionStatus, Coverage, Holding, Identifiers, Security, Snapshot,
    Transaction,
};
use crate::store::annotations::{annotations_from_row, carry_to_posted, write_annotations};
use crate::store::entities::{account, holding, instrument_conflict, security, transaction};
use crate::store::instruments::{ToMatch, match_securities, normal_ticker};
use crate::store::{Store, StoreError};

use super::bulk::{self, Bulk};
use super::rows::*;
use super::{ApplyCounts, Removals};

/// Rows one statement deletes.
const DELETE_BATCH: usize = 1000;

/// The rows the writes of several accounts gather before they are written, in one
/// transaction: each transaction costs a round trip to begin it, one to move the
/// records version, one to commit (a flush of the database's log), and each table
/// a statement, which for a connection of a few small accounts was a good part of
/// its first sync. An account that would take a group past this starts the next
/// one, and a group that reaches it is written at once: an account larger than
/// this is written alone, as before.
const GROUP_ROWS: usize = 5 * bulk::BATCH;

impl Store {
    /// Makes the stored records of `connection` equal `snapshot`: inserts new
    /// records, updates changed ones, deletes the ones the institution no longer
    /// returns (where `removals` allows), and leaves identical ones untouched.
    /// Applying the same snapshot twice changes nothing the second time. What users
    /// attached to transactions is never written here, except that it passes on
    /// with the transaction: a pending transaction's annotations to the posted one
    /// that replaces it, and a moved transaction's to its new row in the account
    /// the institution moved it to.
    ///
    /// Each account is written whole with its holdings and transactions, in one
    /// transaction (accounts in order, as many to one as stay within 5,000 rows),
    /// and each such transaction moves the connection's records version;
    /// [`StoreError::Disconnected`] if the connection was disconnected, before
    /// anything more is written. Securities are upserted first and unused
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
        // Holdings and transactions are stored only with their account, written in
        // its transaction and deleted with it: with no account stored, as on a
        // connection's first sync, there are none to read.
        let nothing_stored = stored_accounts.is_empty();
        let mut stored_holdings: HashMap<String, HashMap<String, holding::Model>> = HashMap::new();
        if !nothing_stored {
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
        }

        // (row id, security, the row stored for it if any)
        let mut to_write: Vec<(String, &Security, Option<security::Model>)> = Vec::new();
        for sec in &snapshot.securities {
            match stored_securities.remove(&sec.external_id) {
                Some(row) if security_from_row(&row)? == *sec => counts.unchanged += 1,
                Some(row) => {
                    to_write.push((row.id.clone(), sec, Some(row)));
                    counts.modified += 1;
                }
                None => {
                    to_write.push((new_id(), sec, None));
                    counts.added += 1;
                }
            }
        }
        if !to_write.is_empty() {
            // Instruments are shared: every sync creates and updates them in one
            // order (by identifiers), so two syncs of the same securities wait for
            // each other instead of deadlocking.
            to_write.sort_by_cached_key(|(_, sec, _)| instrument_order(sec));
            let txn = self.begin_write().await?;
            records_changed(&txn, &conn, true).await?;
            // Matched to the securities master in the same transaction, so a
            // security is never stored without its instrument.
            let to_match: Vec<ToMatch> = to_write
                .iter()
                .map(|(id, sec, stored)| ToMatch {
                    connection: &conn,
                    security_id: id,
                    security: sec,
                    stored: stored.as_ref(),
                })
                .collect();
            let matches = match_securities(&txn, &to_match).await?;
            let mut securities: Writes<_, security::Model> = Writes::default();
            for ((id, sec, stored), matched) in to_write.iter().zip(matches) {
                let row = security_row(&conn, id.clone(), sec, &matched, now);
                if stored.is_some() {
                    securities.changed.push(row);
                } else {
                    securities.fresh.push(row);
                }
            }
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

        // With no account stored, no new transaction can be one the institution
        // moved from another account.
        let moves = (!nothing_stored).then(|| Moves::of(snapshot));
        let mut pending = AccountWrites::default();
        for acc in &snapshot.accounts {
            let mut account: Writes<_, account::Model> = Writes::default();
            let stored_account = match stored_accounts.remove(&acc.external_id) {
                Some(row) => {
                    let before = account_from_row(&row)?;
                    counts.prior.balances.insert(
                        acc.external_id.clone(),
                        (
                            before.balances.current.amount,
                            before.balances.current.currency,
                        ),
                    );
                    Some((row, before))
                }
                None => None,
            };
            match stored_account {
                Some((_, before)) if same_account(&before, acc) => counts.unchanged += 1,
                Some((row, _)) => {
                    account.changed.push(account_row(&conn, row.id, acc, now));
                    counts.modified += 1;
                }
                None => {
                    account.fresh.push(account_row(&conn, new_id(), acc, now));
                    counts.added += 1;
                }
            }
            let before = stored_holdings.remove(&acc.external_id).unwrap_or_default();
            for row in before.values() {
                let h = holding_from_row(row)?;
                counts.prior.holdings.insert(
                    row.external_id.clone(),
                    (h.quantity, h.price.map(|p| p.amount)),
                );
            }
            let holdings = plan_holdings(
                &conn,
                before,
                &holdings_by_account
                    .remove(acc.external_id.as_str())
                    .unwrap_or_default(),
                removals.holdings_of(&acc.external_id),
                &mut counts,
            )?;
            let fetched = transactions_by_account
                .remove(acc.external_id.as_str())
                .unwrap_or_default();
            let coverage = removals.transactions_of(&acc.external_id);
            let stored = if nothing_stored {
                HashMap::new()
            } else {
                stored_transactions(db, &conn, &acc.external_id, &fetched, coverage).await?
            };
            counts.prior.known_transactions.extend(
                fetched
                    .iter()
                    .filter(|t| stored.contains_key(&t.external_id))
                    .map(|t| t.external_id.clone()),
            );
            let transactions = plan_transactions(
                &conn,
                stored,
                &fetched,
                coverage,
                moves.as_ref().map(|m| (m, acc.external_id.as_str())),
                &mut counts,
            )?;
            let planned = AccountWrites {
                accounts: account,
                holdings,
                transactions,
            };
            if pending.rows() + planned.rows() > GROUP_ROWS {
                let deleted = std::mem::take(&mut pending)
                    .write(self, &conn, moves.as_ref())
                    .await?;
                counts.removed += count(deleted);
            }
            pending.extend(planned);
            if pending.rows() >= GROUP_ROWS {
                let deleted = std::mem::take(&mut pending)
                    .write(self, &conn, moves.as_ref())
                    .await?;
                counts.removed += count(deleted);
            }
        }
        let deleted = pending.write(self, &conn, moves.as_ref()).await?;
        counts.removed += count(deleted);

        // Accounts the institution no longer returns go, with their records.
        if removals.accounts {
            for gone in stored_accounts
                .into_values()
                .filter(|a| !removals.accounts_kept.contains(&a.external_id))
            {
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
                // Moved ones went already, with the group that wrote them anew.
                let transactions = plan_transactions(
                    &conn,
                    stored,
                    &[],
                    &Coverage::Everything,
                    None,
                    &mut counts,
                )?;
                let txn = self.begin_records_write().await?;
                records_changed(&txn, &conn, true).await?;
                write_holdings(&txn, holdings).await?;
                counts.removed += count(write_transactions(&txn, transactions).await?);
                account::Entity::delete_by_id(gone.id).exec(&txn).await?;
                counts.removed += 1;
                txn.commit().await?;
            }
        }

        // Last, securities that no holding or transaction refers to any more. Most
        // syncs find none, and then write nothing: no transaction, no new version.
        if removals.everything_read() {
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
                        instrument_conflict::Entity::delete_many()
                            .filter(instrument_conflict::Column::SecurityId.eq(&gone.id))
                            .exec(&txn)
                            .await?;
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
}

/// Moves the connection's records version. It comes first in every transaction
/// that writes the connection's records: a portfolio view cached at the version
/// before can tell it is out of date, and the row lock it takes orders such
/// transactions with each other and with a disconnect (which takes it first too).
/// With `unless_disconnected`, a disconnected connection is left as it is and the
/// transaction must write nothing: [`StoreError::Disconnected`].
pub(in crate::store) async fn records_changed<C: ConnectionTrait>(
    db: &C,
    connection: &str,
    unless_disconnected: bool,
) -> Result<(), StoreError> {
    use crate::store::entities::connection as row;
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
pub(in crate::store) async fn lock_connected<C: ConnectionTrait>(
    db: &C,
    connection: &str,
) -> Result<(), StoreError> {
    use crate::store::entities::connection as row;
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
    fn rows(&self) -> usize {
        self.fresh.len() + self.changed.len() + self.gone.len()
    }

    fn extend(&mut self, other: Self) {
        self.fresh.extend(other.fresh);
        self.changed.extend(other.changed);
        self.gone.extend(other.gone);
    }
}

/// Which new transactions of a resync may be moves from another account: all but
/// those the snapshot lists under two accounts or more. Such an id is not a move,
/// and deleting the stored copy would only swap the two copies on every sync; the
/// unique index refuses the second copy instead, as on a first sync.
///
/// A move's old row is deleted by the group that inserts the new one, just before
/// (see [`AccountWrites::write`]), which carries its annotations over; its own
/// account leaves it standing for that.
struct Moves<'s> {
    /// The account each transaction is listed under, of the accounts written.
    account_of: HashMap<&'s str, &'s str>,
    twice: HashSet<&'s str>,
}

impl<'s> Moves<'s> {
    fn of(snapshot: &'s Snapshot) -> Self {
        let written: HashSet<&str> = snapshot
            .accounts
            .iter()
            .map(|a| a.external_id.as_str())
            .collect();
        let mut account_of: HashMap<&str, &str> = HashMap::new();
        let mut twice = HashSet::new();
        for t in &snapshot.transactions {
            let account = t.account_external_id.as_str();
            if *account_of.entry(&t.external_id).or_insert(account) != account {
                twice.insert(t.external_id.as_str());
            }
        }
        account_of.retain(|_, account| written.contains(account));
        Self { account_of, twice }
    }

    fn possible(&self, id: &str) -> bool {
        !self.twice.contains(id)
    }

    /// Whether transaction `id`, stored under `account`, is moving to another
    /// account written in this apply, whose group will delete the old row.
    fn leaves(&self, id: &str, account: &str) -> bool {
        self.possible(id) && self.account_of.get(id).is_some_and(|to| *to != account)
    }
}

/// The writes planned for one account or more, each account's whole, so that
/// writing them in one transaction leaves every account whole or untouched.
#[derive(Default)]
struct AccountWrites {
    accounts: Writes<account::ActiveModel, account::Model>,
    holdings: HoldingWrites,
    transactions: TransactionWrites,
}

impl AccountWrites {
    fn extend(&mut self, other: Self) {
        self.accounts.extend(other.accounts);
        self.holdings.extend(other.holdings);
        self.transactions.extend(other.transactions);
    }

    fn rows(&self) -> usize {
        self.accounts.rows() + self.holdings.rows() + self.transactions.rows()
    }

    /// Writes them in one transaction, which nothing opens when there is nothing
    /// to write: a resync that finds nothing new writes nothing. With `moves` (a
    /// resync), a new transaction may be one the institution moved from another
    /// account (each account's stored rows are read by account, so the move shows
    /// as a delete there and an insert here): the row stored under the other
    /// account goes first, else the insert would break the id's uniqueness
    /// whichever account comes first. Returns how many transactions were deleted,
    /// moved ones among them: a move counts as one removed and one added, whether
    /// its old row goes here or with its own account.
    async fn write(
        self,
        store: &Store,
        conn: &str,
        moves: Option<&Moves<'_>>,
    ) -> Result<u64, StoreError> {
        if self.rows() == 0 {
            return Ok(0);
        }
        let txn = store.begin_records_write().await?;
        records_changed(&txn, conn, true).await?;
        let mut deleted = 0;
        // The new rows of moved transactions, and what users attached to the old.
        let mut carried = Vec::new();
        if let Some(moves) = moves {
            let fresh: HashMap<&str, &str> = self
                .transactions
                .fresh
                .iter()
                .filter_map(|row| {
                    let external_id = row.external_id.try_as_ref()?.as_str();
                    Some((external_id, row.id.try_as_ref()?.as_str()))
                })
                .filter(|(external_id, _)| moves.possible(external_id))
                .collect();
            let ids: Vec<&str> = fresh.keys().copied().collect();
            for ids in ids.chunks(bulk::BATCH) {
                // The rows as deleted: an annotation written meanwhile is waited
                // for, and goes with them.
                let gone = transaction::Entity::delete_many()
                    .filter(transaction::Column::ConnectionId.eq(conn))
                    .filter(bulk::one_of(
                        txn.get_database_backend(),
                        transaction::Column::ExternalId,
                        ids,
                    ))
                    .exec_with_returning(&txn)
                    .await?;
                deleted += gone.len() as u64;
                for row in &gone {
                    let annotations = annotations_from_row(row)?;
                    if let Some(new) = fresh.get(row.external_id.as_str())
                        && !annotations.is_empty()
                    {
                        carried.push(((*new).to_owned(), annotations));
                    }
                }
            }
        }
        self.accounts.write(&txn).await?;
        write_holdings(&txn, self.holdings).await?;
        deleted += write_transactions(&txn, self.transactions).await?;
        for (row, annotations) in carried {
            write_annotations(&txn, row, &annotations).await?;
        }
        txn.commit().await?;
        Ok(deleted)
    }
}

impl<A: ActiveModelTrait + sea_orm::ActiveModelBehavior + Send, M> Writes<A, M>
where
    <A::Entity as EntityTrait>::Model: sea_orm::IntoActiveModel<A>,
{
    /// Inserts and updates; deleting is the caller's, who knows what goes first.
    async fn write<C: Bulk>(self, db: &C) -> Result<Vec<M>, StoreError> {
        bulk::insert_all(db, self.fresh).await?;
        for row in self.changed {
            row.update(db).await?;
        }
        Ok(self.gone)
    }
}

/// The order in which a sync matches its securities: by their valid identifiers,
/// CUSIP first (a US ISIN yields one, so institutions sending either agree), as
/// every sync sees them.
fn instrument_order(sec: &Security) -> Vec<String> {
    let (valid, _) = Identifiers::of(sec);
    let text = |id: Option<String>| id.unwrap_or_default();
    vec![
        text(valid.cusip),
        text(valid.isin),
        text(valid.figi),
        text(valid.sedol),
        text(normal_ticker(sec)),
        sec.currency.to_string(),
    ]
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
async fn write_holdings<C: Bulk>(db: &C, writes: HoldingWrites) -> Result<(), StoreError> {
    let gone = writes.write(db).await?;
    for rows in gone.chunks(DELETE_BATCH) {
        holding::Entity::delete_many()
            .filter(holding::Column::Id.is_in(rows.iter().map(|r| r.id.as_str())))
            .exec(db)
            .await?;
    }
    Ok(())
}

type TransactionWrites = Writes<transaction::ActiveModel, transaction::Model>;

/// With `moves` and the account planned: rows moving to another account are
/// left for that account's group to delete.
fn plan_transactions(
    conn: &str,
    mut stored: HashMap<String, transaction::Model>,
    transactions: &[&Transaction],
    coverage: &Coverage,
    moves: Option<(&Moves<'_>, &str)>,
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
    // Counted as they are deleted (see `write_transactions`): a row planned to go
    // may have gone already as a move, taken by the move pre-delete of its own
    // group or of a group written after this account was read.
    writes.gone = stored
        .into_values()
        .filter(|gone| coverage.removes(&gone.external_id, gone.date))
        .filter(|gone| {
            !moves.is_some_and(|(moves, account)| moves.leaves(&gone.external_id, account))
        })
        .collect();
    Ok(writes)
}

/// Posted transactions are inserted first, so that a pending one they replace can
/// pass its annotations on before it goes. Returns how many rows were deleted.
async fn write_transactions<C: Bulk>(db: &C, writes: TransactionWrites) -> Result<u64, StoreError> {
    let gone = writes.write(db).await?;
    for row in &gone {
        carry_to_posted(db, row).await?;
    }
    let mut deleted = 0;
    for rows in gone.chunks(DELETE_BATCH) {
        deleted += transaction::Entity::delete_many()
            .filter(transaction::Column::Id.is_in(rows.iter().map(|r| r.id.as_str())))
            .exec(db)
            .await?
            .rows_affected;
    }
    Ok(deleted)
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
        for ids in named.chunks(bulk::BATCH) {
            rows.extend(
                of_account()
                    .filter(bulk::one_of(
                        db.get_database_backend(),
                        transaction::Column::ExternalId,
                        ids,
                    ))
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

fn count<N: TryInto<u32>>(n: N) -> u32 {
    n.try_into().unwrap_or(u32::MAX)
}
