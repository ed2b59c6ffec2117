//! `idempotency_keys`: what the tenant API answered to a `POST` sent with an
//! `Idempotency-Key`, so the same key and body get the same answer again. The key
//! is stored as its SHA-256 (with the tenant, the row's id) and the request as a
//! fingerprint (method, path and body); the answer is its status, the headers a
//! replay needs and its body. A row without `finished_at` is a request still being
//! processed, by the request whose random `owner` token it holds. Rows are purged a
//! day after they were made.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(IdempotencyKeys::Table)
                    .col(string(IdempotencyKeys::Id).primary_key())
                    .col(string(IdempotencyKeys::TenantId))
                    .col(string(IdempotencyKeys::Owner))
                    .col(string(IdempotencyKeys::Fingerprint))
                    .col(timestamp_with_time_zone(IdempotencyKeys::CreatedAt))
                    .col(timestamp_with_time_zone_null(IdempotencyKeys::FinishedAt))
                    .col(integer_null(IdempotencyKeys::Status))
                    .col(text_null(IdempotencyKeys::Headers))
                    .col(blob_null(IdempotencyKeys::Body))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_idempotency_keys_created_at")
                    .table(IdempotencyKeys::Table)
                    .col(IdempotencyKeys::CreatedAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(IdempotencyKeys::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum IdempotencyKeys {
    Table,
    Id,
    TenantId,
    Owner,
    Fingerprint,
    CreatedAt,
    FinishedAt,
    Status,
    Headers,
    Body,
}
