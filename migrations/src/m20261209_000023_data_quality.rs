//! Data-quality findings: what reconciliation after each sync found that does not
//! add up, one row per finding still open (by connection, code and record), with
//! the run that first and last saw it; the number each run found; and an
//! account's cash held outside its holdings, which reconciliation adds to them.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(DataQualityFindings::Table)
                    .col(string(DataQualityFindings::Id).primary_key())
                    .col(string(DataQualityFindings::ConnectionId))
                    .col(string(DataQualityFindings::AccountExternalId))
                    .col(string(DataQualityFindings::Scope))
                    .col(string(DataQualityFindings::Code))
                    .col(string(DataQualityFindings::Subject))
                    .col(text(DataQualityFindings::Detail))
                    .col(string(DataQualityFindings::FirstRunId))
                    .col(string(DataQualityFindings::LastRunId))
                    .col(timestamp_with_time_zone(DataQualityFindings::FirstSeenAt))
                    .col(timestamp_with_time_zone(DataQualityFindings::LastSeenAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("data_quality_findings_record")
                    .table(DataQualityFindings::Table)
                    .col(DataQualityFindings::ConnectionId)
                    .col(DataQualityFindings::Code)
                    .col(DataQualityFindings::Subject)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(SyncRuns::Table)
                    .add_column(integer(SyncRuns::Findings).default(0))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Accounts::Table)
                    .add_column(string_null(Accounts::BalanceCash))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Accounts::Table)
                    .drop_column(Accounts::BalanceCash)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(SyncRuns::Table)
                    .drop_column(SyncRuns::Findings)
                    .to_owned(),
            )
            .await?;
        manager
            .drop_table(Table::drop().table(DataQualityFindings::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum DataQualityFindings {
    Table,
    Id,
    ConnectionId,
    AccountExternalId,
    Scope,
    Code,
    Subject,
    Detail,
    FirstRunId,
    LastRunId,
    FirstSeenAt,
    LastSeenAt,
}

#[derive(DeriveIden)]
enum Accounts {
    Table,
    BalanceCash,
}

#[derive(DeriveIden)]
enum SyncRuns {
    Table,
    Findings,
}
