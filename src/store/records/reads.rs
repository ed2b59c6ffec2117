//! Reading a connection's records back as canonical values: a portfolio, what a
//! portfolio view shows of a connection, a full snapshot, and transactions a page
//! at a time.

use std::collections::HashMap;

use chrono::NaiveDate;
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Select,
};

use crate::domain::{ConnectionId, InvestmentType, Snapshot, Transaction, TransactionStatus};
use crate::store::annotations::{Annotations, annotations_from_row};
use crate::store::entities::{account, holding, security, transaction};
use crate::store::instruments::{SecurityMatch, matches_of};
use crate::store::{AccountFetchFailure, Store, StoreError};

use super::rows::*;

/// What a portfolio view shows of one connection, read once: its records with
/// the newest transactions, and beside them what the view adds to the records.
#[derive(Debug, Clone)]
pub struct PortfolioRecords {
    pub records: Snapshot,
    /// Each of the newest transactions' annotations, by the institution's id.
    pub annotations: HashMap<String, Annotations>,
    /// How each security stands in the master, by the institution's id.
    pub matches: HashMap<String, SecurityMatch>,
    /// The accounts whose last fetch failed, by the institution's id.
    pub fetch_failures: HashMap<String, AccountFetchFailure>,
}

/// A connection's rows: every account, security and holding, and its
/// `recent_transactions` newest transactions.
struct Rows {
    accounts: Vec<account::Model>,
    securities: Vec<security::Model>,
    holdings: Vec<holding::Model>,
    transactions: Vec<transaction::Model>,
}

impl Rows {
    async fn read<C: ConnectionTrait>(
        db: &C,
        connection: ConnectionId,
        recent_transactions: u64,
    ) -> Result<Self, StoreError> {
        let conn = connection.to_string();
        Ok(Self {
            accounts: account::Entity::find()
                .filter(account::Column::ConnectionId.eq(&conn))
                .order_by_asc(account::Column::ExternalId)
                .all(db)
                .await?,
            securities: security::Entity::find()
                .filter(security::Column::ConnectionId.eq(&conn))
                .order_by_asc(security::Column::ExternalId)
                .all(db)
                .await?,
            holdings: holding::Entity::find()
                .filter(holding::Column::ConnectionId.eq(&conn))
                .order_by_asc(holding::Column::ExternalId)
                .all(db)
                .await?,
            transactions: newest_transactions(&conn, recent_transactions)
                .all(db)
                .await?,
        })
    }

    fn records(&self) -> Result<Snapshot, StoreError> {
        Ok(Snapshot {
            accounts: self
                .accounts
                .iter()
                .map(account_from_row)
                .collect::<Result<_, _>>()?,
            securities: self
                .securities
                .iter()
                .map(security_from_row)
                .collect::<Result<_, _>>()?,
            holdings: self
                .holdings
                .iter()
                .map(holding_from_row)
                .collect::<Result<_, _>>()?,
            transactions: self
                .transactions
                .iter()
                .map(transaction_from_row)
                .collect::<Result<_, _>>()?,
        })
    }
}

impl Store {
    /// A connection's records, with its `recent_transactions` newest transactions.
    pub async fn portfolio(
        &self,
        connection: ConnectionId,
        recent_transactions: u64,
    ) -> Result<Snapshot, StoreError> {
        Rows::read(self.db(), connection, recent_transactions)
            .await?
            .records()
    }

    /// What a portfolio view shows of a connection, with its
    /// `recent_transactions` newest transactions: each table read once, and the
    /// securities' instruments in one more query.
    pub async fn portfolio_records(
        &self,
        connection: ConnectionId,
        recent_transactions: u64,
    ) -> Result<PortfolioRecords, StoreError> {
        let db = self.db();
        let rows = Rows::read(db, connection, recent_transactions).await?;
        Ok(PortfolioRecords {
            records: rows.records()?,
            annotations: rows
                .transactions
                .iter()
                .map(|row| Ok((row.external_id.clone(), annotations_from_row(row)?)))
                .collect::<Result<_, StoreError>>()?,
            matches: matches_of(db, &rows.securities).await?,
            fetch_failures: rows
                .accounts
                .iter()
                .filter_map(|row| Some((row.external_id.clone(), AccountFetchFailure::of(row)?)))
                .collect(),
        })
    }

    /// Every stored record of a connection (all transactions), for checks and exports.
    pub async fn full_snapshot(&self, connection: ConnectionId) -> Result<Snapshot, StoreError> {
        self.portfolio(connection, u64::MAX >> 1).await
    }
}

/// The connection's `n` newest transactions in the order a view lists them: date
/// descending, then the institution's id. The index
/// `transactions_connection_newest` holds them in that order, so the database
/// reads `n` rows however long and busy the history.
fn newest_transactions(connection: &str, n: u64) -> Select<transaction::Entity> {
    transaction::Entity::find()
        .filter(transaction::Column::ConnectionId.eq(connection))
        .order_by_desc(transaction::Column::Date)
        .order_by_asc(transaction::Column::ExternalId)
        .limit(n)
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

#[cfg(test)]
mod tests {
    use sea_orm::{QueryTrait as _, Statement, TransactionTrait as _};

    use super::*;
    use crate::store::scratch;

    /// How the database would read a view's newest transactions, one line a step.
    /// Sorting is made as dear as it can be, so a plan that still sorts has no
    /// index in the view's order to read instead.
    async fn newest_plan(store: &Store) -> String {
        let db = store.db();
        let query = newest_transactions("c-1", 25).build(db.get_database_backend());
        let (explain, column) = if store.is_postgres() {
            ("EXPLAIN", "QUERY PLAN")
        } else {
            ("EXPLAIN QUERY PLAN", "detail")
        };
        let txn = db.begin().await.unwrap();
        if store.is_postgres() {
            txn.execute_unprepared("SET LOCAL enable_sort = off")
                .await
                .unwrap();
        }
        let sql = format!("{explain} {}", query.sql);
        txn.query_all_raw(Statement { sql, ..query })
            .await
            .unwrap()
            .iter()
            .map(|row| row.try_get::<String>("", column).unwrap())
            .collect::<Vec<_>>()
            .join("\n")
    }

    async fn newest_transactions_come_from_the_index(store: &Store) {
        store.migrate().await.unwrap();
        let plan = newest_plan(store).await;
        assert!(
            plan.contains("transactions_connection_newest"),
            "the newest transactions are not read through their index:\n{plan}"
        );
        assert!(
            !plan.contains("Sort") && !plan.contains("TEMP B-TREE"),
            "the newest transactions are sorted after reading, so a tie at the \
             oldest date kept reads every transaction of that date:\n{plan}"
        );
    }

    #[tokio::test]
    async fn on_sqlite_a_views_newest_transactions_are_read_in_order_from_the_index() {
        newest_transactions_come_from_the_index(&scratch::sqlite().await).await;
    }

    #[tokio::test]
    async fn on_postgres_a_views_newest_transactions_are_read_in_order_from_the_index() {
        scratch::on_postgres(|store| async move {
            newest_transactions_come_from_the_index(&store).await
        })
        .await;
    }
}
