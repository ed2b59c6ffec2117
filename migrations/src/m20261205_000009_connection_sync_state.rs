//! Two columns that let a sync with nothing new stay cheap and correct:
//!
//! - `records_version` moves in the same transaction as every write to the
//!   connection's records, so a cached portfolio can tell whether the records it
//!   was built from are still current and only its freshness needs updating;
//! - `sync_cursor` is where the next incremental sync resumes, read with the
//!   connection instead of from its runs, and cleared when the connection is
//!   disconnected (its records are deleted, so a relink must start from nothing).

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
                    .add_column(big_integer(Connections::RecordsVersion).default(0))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Connections::Table)
                    .add_column(text_null(Connections::SyncCursor))
                    .to_owned(),
            )
            .await?;
        // Until now the cursor was read from the last successful run. A revoked
        // connection's records are gone, so its old cursor is not carried over; nor
        // is one from before the connection's latest link (a relink after a
        // disconnect that has not synced since).
        manager
            .get_connection()
            .execute_unprepared(
                "UPDATE connections SET sync_cursor = (\
                   SELECT r.cursor FROM sync_runs r \
                   WHERE r.connection_id = connections.id AND r.outcome = 'succeeded' \
                     AND r.started_at >= connections.consent_granted_at \
                   ORDER BY r.finished_at DESC LIMIT 1) \
                 WHERE status <> 'revoked'",
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in [Connections::SyncCursor, Connections::RecordsVersion] {
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
    RecordsVersion,
    SyncCursor,
}
