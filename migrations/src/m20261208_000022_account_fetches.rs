//! Per-account sync status: when an account's data could last be read, and whether
//! its last fetch failed. Written only when an account starts or stops failing, so
//! a steady sync writes nothing here: `refreshed_at` is the connection's last sync
//! at the moment the account began failing (a healthy account is as fresh as its
//! connection); `fetch_failed_at` and `fetch_failure` say since when, and why.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite alters one thing at a time.
        for column in [
            timestamp_with_time_zone_null(Accounts::RefreshedAt),
            timestamp_with_time_zone_null(Accounts::FetchFailedAt),
            text_null(Accounts::FetchFailure),
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Accounts::Table)
                        .add_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in [
            Accounts::RefreshedAt,
            Accounts::FetchFailedAt,
            Accounts::FetchFailure,
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Accounts::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden)]
enum Accounts {
    Table,
    RefreshedAt,
    FetchFailedAt,
    FetchFailure,
}
