//! `sync_runs.accounts_unread`: the accounts whose data a run that succeeded could
//! not read (one account the institution could not serve), as a JSON list of
//! `{account_id, endpoint, reason}` with reasons fit for a tenant. NULL when every
//! account was read.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(SyncRuns::Table)
                    .add_column(text_null(SyncRuns::AccountsUnread))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(SyncRuns::Table)
                    .drop_column(SyncRuns::AccountsUnread)
                    .to_owned(),
            )
            .await
    }
}

#[derive(DeriveIden)]
enum SyncRuns {
    Table,
    AccountsUnread,
}
