//! Replaces the index of transactions by connection and date with one that also
//! holds the external id, newest first as a portfolio view lists them (date
//! descending, then external id ascending). The view's newest transactions then
//! come straight from the index: before, the tie at the oldest date it kept made
//! the database read and sort every transaction of that date, so a connection
//! with a long, busy history read more rows per rebuild than a short one. Every
//! query the old index served still finds the date second in this one.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // The new index first: no moment without one.
        manager
            .create_index(
                Index::create()
                    .name(NEWEST)
                    .table(Transactions::Table)
                    .col(Transactions::ConnectionId)
                    .col(Transactions::Date)
                    // Read backwards, the index gives date descending and external
                    // id ascending: the view's order.
                    .col((Transactions::ExternalId, IndexOrder::Desc))
                    .to_owned(),
            )
            .await?;
        manager
            .drop_index(
                Index::drop()
                    .name(BY_DATE)
                    .table(Transactions::Table)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_index(
                Index::create()
                    .name(BY_DATE)
                    .table(Transactions::Table)
                    .col(Transactions::ConnectionId)
                    .col(Transactions::Date)
                    .to_owned(),
            )
            .await?;
        manager
            .drop_index(
                Index::drop()
                    .name(NEWEST)
                    .table(Transactions::Table)
                    .to_owned(),
            )
            .await
    }
}

/// The index this migration makes.
const NEWEST: &str = "transactions_connection_newest";
/// The index it replaces, made with the table.
const BY_DATE: &str = "transactions_connection_date";

#[derive(DeriveIden)]
enum Transactions {
    Table,
    ConnectionId,
    Date,
    ExternalId,
}
