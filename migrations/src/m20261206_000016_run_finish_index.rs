//! An index on `sync_runs.finished_at`: the status page reads the runs of the last
//! hour, which must not scan a month of history.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_index(
                Index::create()
                    .name("idx_sync_runs_finished_at")
                    .table(SyncRuns::Table)
                    .col(SyncRuns::FinishedAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name("idx_sync_runs_finished_at")
                    .table(SyncRuns::Table)
                    .to_owned(),
            )
            .await
    }
}

#[derive(DeriveIden)]
enum SyncRuns {
    Table,
    FinishedAt,
}
