//! The fleet's view of each institution's circuit breaker: every process that
//! calls institutions reports, every few seconds, the state of its breaker and
//! adaptive mode for each institution it has called (`institution_breakers`, one
//! row per process and institution). Readers count only fresh reports, so a
//! process that stopped drops out of the count on its own.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(InstitutionBreakers::Table)
                    .col(string(InstitutionBreakers::ProcessId))
                    .col(string(InstitutionBreakers::InstitutionId))
                    .col(string(InstitutionBreakers::State))
                    .col(boolean(InstitutionBreakers::Degraded))
                    .col(integer(InstitutionBreakers::ConsecutiveFailures))
                    .col(timestamp_with_time_zone_null(InstitutionBreakers::OpenedAt))
                    .col(timestamp_with_time_zone(InstitutionBreakers::UpdatedAt))
                    .primary_key(
                        Index::create()
                            .col(InstitutionBreakers::ProcessId)
                            .col(InstitutionBreakers::InstitutionId),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(InstitutionBreakers::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum InstitutionBreakers {
    Table,
    ProcessId,
    InstitutionId,
    State,
    Degraded,
    ConsecutiveFailures,
    OpenedAt,
    UpdatedAt,
}
