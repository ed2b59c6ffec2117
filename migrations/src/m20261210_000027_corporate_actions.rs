//! Corporate actions recorded against the securities master: a split of an
//! instrument, with its ratio, the day it took effect and where it was learnt,
//! once per instrument and day whichever connections saw it.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(CorporateActions::Table)
                    .col(string(CorporateActions::Id).primary_key())
                    .col(string(CorporateActions::InstrumentId))
                    .col(string(CorporateActions::Kind))
                    .col(integer(CorporateActions::RatioNew))
                    .col(integer(CorporateActions::RatioOld))
                    .col(date(CorporateActions::EffectiveDate))
                    .col(string(CorporateActions::Source))
                    .col(string(CorporateActions::ConnectionId))
                    .col(timestamp_with_time_zone(CorporateActions::RecordedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("corporate_actions_once")
                    .table(CorporateActions::Table)
                    .col(CorporateActions::InstrumentId)
                    .col(CorporateActions::Kind)
                    .col(CorporateActions::EffectiveDate)
                    .unique()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(CorporateActions::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum CorporateActions {
    Table,
    Id,
    InstrumentId,
    Kind,
    RatioNew,
    RatioOld,
    EffectiveDate,
    Source,
    ConnectionId,
    RecordedAt,
}
