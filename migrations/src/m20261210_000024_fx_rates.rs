//! Exchange rates as their provider published them: one row per source, currency
//! and day, the rate against the source's base currency kept as exact text.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(FxRates::Table)
                    .col(string(FxRates::Source))
                    .col(string(FxRates::Quote))
                    .col(date(FxRates::Date))
                    .col(string(FxRates::Base))
                    .col(string(FxRates::Rate))
                    .col(timestamp_with_time_zone(FxRates::FetchedAt))
                    .primary_key(
                        Index::create()
                            .col(FxRates::Source)
                            .col(FxRates::Quote)
                            .col(FxRates::Date),
                    )
                    .to_owned(),
            )
            .await?;
        // The latest rates are read by source and date.
        manager
            .create_index(
                Index::create()
                    .name("fx_rates_source_date")
                    .table(FxRates::Table)
                    .col(FxRates::Source)
                    .col(FxRates::Date)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(FxRates::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum FxRates {
    Table,
    Source,
    Quote,
    Date,
    Base,
    Rate,
    FetchedAt,
}
