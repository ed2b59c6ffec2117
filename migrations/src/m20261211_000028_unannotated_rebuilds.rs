//! Drops the partial index of annotated transactions: a portfolio rebuild now
//! takes its transactions' annotations from the rows it reads for the view, and
//! nothing else looked them up per connection.

use sea_orm_migration::prelude::*;

use crate::m20261204_000008_annotated_transactions::ANNOTATED;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name("transactions_annotated")
                    .table(Transactions::Table)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
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
}

#[derive(DeriveIden)]
enum Transactions {
    Table,
    ConnectionId,
}
