//! Reading a connection's records back as canonical values: a portfolio, a full
//! snapshot, and transactions a page at a time.

use chrono::NaiveDate;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use crate::domain::{ConnectionId, InvestmentType, Snapshot, Transaction, TransactionStatus};
use crate::store::annotations::{Annotations, annotations_from_row};
use crate::store::entities::{account, holding, security, transaction};
use crate::store::{Store, StoreError};

use super::rows::*;

impl Store {
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
