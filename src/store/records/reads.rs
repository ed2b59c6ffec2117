//! Reading a connection's records back as canonical values: a portfolio, what a
//! portfolio view shows of a connection, a full snapshot, and transactions a page
//! at a time.

use std::collections::HashMap;

use chrono::NaiveDate;
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

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
            transactions: transaction::Entity::find()
                .filter(transaction::Column::ConnectionId.eq(&conn))
                .order_by_desc(transaction::Column::Date)
                .order_by_asc(transaction::Column::ExternalId)
                .limit(recent_transactions)
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
