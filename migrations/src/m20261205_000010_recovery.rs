//! What recovery without a human needs to know:
//!
//! - `connections.refresh_started_at`: a refresh presented the stored refresh token
//!   at this time and its outcome is not yet recorded. Written before the token
//!   request, cleared in the same update that stores what the refresh returned (or
//!   a new grant), so a process that finds it set knows an earlier refresh was cut
//!   short and the institution may have rotated the token.
//! - `connections.deep_sync_due_at`: when the connection's next deep sync (a re-read
//!   of the whole history the institution offers) is due; NULL until its first sync
//!   picks a time, spread over the deep-sync interval.
//! - `sync_runs.deep`: whether the run was a deep sync.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in [
            timestamp_with_time_zone_null(Connections::RefreshStartedAt),
            timestamp_with_time_zone_null(Connections::DeepSyncDueAt),
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Connections::Table)
                        .add_column(column)
                        .to_owned(),
                )
                .await?;
        }
        manager
            .alter_table(
                Table::alter()
                    .table(SyncRuns::Table)
                    .add_column(boolean(SyncRuns::Deep).default(false))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(SyncRuns::Table)
                    .drop_column(SyncRuns::Deep)
                    .to_owned(),
            )
            .await?;
        for column in [Connections::DeepSyncDueAt, Connections::RefreshStartedAt] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Connections::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden)]
enum Connections {
    Table,
    RefreshStartedAt,
    DeepSyncDueAt,
}

#[derive(DeriveIden)]
enum SyncRuns {
    Table,
    Deep,
}
