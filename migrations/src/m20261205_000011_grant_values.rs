//! `connections.grant_values`: values the institution granted with the user's
//! tokens that the connector keeps (`[auth.token_response] keep`, e.g. a consent id
//! every request must carry), as vault ciphertext of a JSON object of text, like the
//! tokens beside it. NULL when the connector keeps none or the grant brought none.

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
                    .add_column(blob_null(Connections::GrantValues))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Connections::Table)
                    .drop_column(Connections::GrantValues)
                    .to_owned(),
            )
            .await
    }
}

#[derive(DeriveIden)]
enum Connections {
    Table,
    GrantValues,
}
