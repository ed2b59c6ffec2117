//! What a user attaches to a transaction: tags (a JSON array of strings) and a
//! note. The institution never sends them, so syncs leave them alone, and a posted
//! transaction inherits them from the pending one it replaces.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite adds columns one at a time.
        manager
            .alter_table(
                Table::alter()
                    .table(Transactions::Table)
                    .add_column(text(Transactions::Tags).default("[]"))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Transactions::Table)
                    .add_column(text_null(Transactions::Note))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in [Transactions::Note, Transactions::Tags] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Transactions::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden)]
enum Transactions {
    Table,
    Tags,
    Note,
}
