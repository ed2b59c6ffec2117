//! Erasures: a tenant's (or an admin's) request to erase one of its users, carried
//! out in steps that can be resumed after a crash. `user_id` is kept only while
//! the work is under way (it is how the steps find the user's rows) and cleared
//! when it is done; `pseudonym` (a keyed hash of the user id) is what remains, as
//! in the audit trail. `lease_owner` and `lease_until` keep one run at a time on
//! an erasure; at most one erasure per user is `pending`.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Erasures::Table)
                    .col(string(Erasures::Id).primary_key())
                    .col(string(Erasures::TenantId))
                    .col(string_null(Erasures::UserId))
                    .col(string(Erasures::Pseudonym))
                    .col(string(Erasures::Status))
                    .col(string(Erasures::RequestedBy))
                    .col(timestamp_with_time_zone(Erasures::RequestedAt))
                    .col(timestamp_with_time_zone_null(Erasures::CompletedAt))
                    .col(timestamp_with_time_zone_null(Erasures::LeaseUntil))
                    .col(string_null(Erasures::LeaseOwner))
                    .col(integer(Erasures::Attempts).default(0))
                    .col(text_null(Erasures::Result))
                    .col(text_null(Erasures::LastError))
                    .to_owned(),
            )
            .await?;
        // One erasure under way per user: two requests at once find the same one.
        manager
            .create_index(
                Index::create()
                    .name("idx_erasures_pending_user")
                    .table(Erasures::Table)
                    .col(Erasures::TenantId)
                    .col(Erasures::Pseudonym)
                    .unique()
                    .and_where(Expr::col(Erasures::Status).eq("pending"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_erasures_status")
                    .table(Erasures::Table)
                    .col(Erasures::Status)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Erasures::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum Erasures {
    Table,
    Id,
    TenantId,
    UserId,
    Pseudonym,
    Status,
    RequestedBy,
    RequestedAt,
    CompletedAt,
    LeaseUntil,
    LeaseOwner,
    Attempts,
    Result,
    LastError,
}
