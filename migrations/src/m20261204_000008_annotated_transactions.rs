//! A partial index of the transactions users annotated. Every rebuild of a cached
//! portfolio looked them up per connection then; they are few, and without this
//! index the lookup read every transaction of the connection.

use sea_orm_migration::prelude::*;

/// The predicate, as the query that used the index spelled it: a partial index is
/// used only for a query whose condition implies it. Dropped again by
/// `m20261211_000028_unannotated_rebuilds`.
const ANNOTATED: &str = "(tags <> '[]' OR note IS NOT NULL)";

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_index(
                Index::create()
                    .name("transactions_annotated")
                    .table(Transactions::Table)
                    .col(Transactions::ConnectionId)
                    .and_where(Expr::cust(ANNOTATED))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name("transactions_annotated")
                    .table(Transactions::Table)
                    .to_owned(),
            )
            .await
    }
}

#[derive(DeriveIden)]
enum Transactions {
    Table,
    ConnectionId,
}
