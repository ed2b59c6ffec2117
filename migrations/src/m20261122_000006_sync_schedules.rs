//! A connection's own sync interval, overriding its connector's and the default.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Connections::Table)
                    // Seconds; NULL: the connector's interval, else the default.
                    .add_column(big_integer_null(Connections::SyncIntervalSecs))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Connections::Table)
                    .drop_column(Connections::SyncIntervalSecs)
                    .to_owned(),
            )
            .await
    }
}

#[derive(DeriveIden)]
enum Connections {
    Table,
    SyncIntervalSecs,
}
