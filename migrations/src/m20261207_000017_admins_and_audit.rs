//! Named admin credentials and the audit trail.
//!
//! `admins` holds one row per credential: a name, a role (`admin`, `operator` or
//! `auditor`), the credential's public prefix and the SHA-256 of the whole
//! credential (never the credential), and when and by whom it was revoked.
//!
//! `status_sessions` are the status page's sign-ins, by the SHA-256 of the
//! cookie's token: who (`actor`), with what (`binding`: the credential's prefix, or
//! a hash of the break-glass token), until when, and when they signed out.
//!
//! `audit_log` is append-only: each entry's `hash` is the SHA-256 of its own
//! fields and of `prev_hash`, the hash of the entry before it, so that editing,
//! deleting or reordering an entry breaks the chain at that entry. `seq` numbers
//! the entries without gaps from 1.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Admins::Table)
                    .col(string(Admins::Id).primary_key())
                    .col(string_uniq(Admins::Name))
                    .col(string(Admins::Role))
                    .col(string_uniq(Admins::Prefix))
                    .col(string(Admins::KeyHash))
                    .col(string(Admins::CreatedBy))
                    .col(timestamp_with_time_zone(Admins::CreatedAt))
                    .col(timestamp_with_time_zone_null(Admins::RevokedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(AuditLog::Table)
                    .col(big_integer(AuditLog::Seq).primary_key())
                    .col(timestamp_with_time_zone(AuditLog::At))
                    .col(string(AuditLog::Actor))
                    .col(string(AuditLog::Action))
                    .col(string_null(AuditLog::Target))
                    .col(string(AuditLog::Outcome))
                    .col(string_null(AuditLog::RequestId))
                    .col(text_null(AuditLog::Detail))
                    .col(string(AuditLog::PrevHash))
                    .col(string(AuditLog::Hash))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(StatusSessions::Table)
                    .col(string(StatusSessions::TokenHash).primary_key())
                    .col(string(StatusSessions::Actor))
                    .col(string(StatusSessions::Binding))
                    .col(timestamp_with_time_zone(StatusSessions::CreatedAt))
                    .col(timestamp_with_time_zone(StatusSessions::ExpiresAt))
                    .col(timestamp_with_time_zone_null(StatusSessions::EndedAt))
                    .to_owned(),
            )
            .await?;
        for (name, column) in [
            ("idx_audit_log_at", AuditLog::At),
            ("idx_audit_log_actor", AuditLog::Actor),
            ("idx_audit_log_action", AuditLog::Action),
            ("idx_audit_log_target", AuditLog::Target),
            ("idx_audit_log_request", AuditLog::RequestId),
        ] {
            manager
                .create_index(
                    Index::create()
                        .name(name)
                        .table(AuditLog::Table)
                        .col(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(StatusSessions::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(AuditLog::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(Admins::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum Admins {
    Table,
    Id,
    Name,
    Role,
    Prefix,
    KeyHash,
    CreatedBy,
    CreatedAt,
    RevokedAt,
}

#[derive(DeriveIden)]
enum StatusSessions {
    Table,
    TokenHash,
    Actor,
    Binding,
    CreatedAt,
    ExpiresAt,
    EndedAt,
}

#[derive(DeriveIden)]
enum AuditLog {
    Table,
    Seq,
    At,
    Actor,
    Action,
    Target,
    Outcome,
    RequestId,
    Detail,
    PrevHash,
    Hash,
}
