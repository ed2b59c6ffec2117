//! Consent history as records: one row per event in the life of a user's consent
//! at an institution (`granted`, `renewed` when a user links again to repair it,
//! `expired`, `revoked`), who caused it (`user`, `admin`, `tenant`, `institution`,
//! `system`), the scopes granted and until when, and the reason's code where there
//! is one. The connection's consent columns keep the current state; these keep how
//! it came to be. Backfilled from those columns: the grant and, where it ended, the
//! revocation or expiry (by `unknown` where the columns do not say who).

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(ConsentEvents::Table)
                    .col(string(ConsentEvents::Id).primary_key())
                    .col(string(ConsentEvents::ConnectionId))
                    .col(string(ConsentEvents::TenantId))
                    .col(string(ConsentEvents::UserId))
                    .col(string(ConsentEvents::InstitutionId))
                    .col(string(ConsentEvents::Kind))
                    .col(string(ConsentEvents::ActedBy))
                    .col(text_null(ConsentEvents::Scopes))
                    .col(timestamp_with_time_zone_null(ConsentEvents::ExpiresAt))
                    .col(string_null(ConsentEvents::Reason))
                    .col(timestamp_with_time_zone(ConsentEvents::At))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_consent_events_user")
                    .table(ConsentEvents::Table)
                    .col(ConsentEvents::TenantId)
                    .col(ConsentEvents::UserId)
                    .col(ConsentEvents::At)
                    .to_owned(),
            )
            .await?;
        let db = manager.get_connection();
        // Ids from the connection and the event, so the backfill is one statement
        // per kind and the same on both databases.
        db.execute_unprepared(
            "INSERT INTO consent_events (id, connection_id, tenant_id, user_id, institution_id, kind, acted_by, scopes, expires_at, reason, at) \
             SELECT id || ':granted', id, tenant_id, user_id, institution_id, 'granted', 'user', scopes, consent_expires_at, NULL, consent_granted_at \
             FROM connections WHERE consent_granted_at IS NOT NULL",
        )
        .await?;
        db.execute_unprepared(
            "INSERT INTO consent_events (id, connection_id, tenant_id, user_id, institution_id, kind, acted_by, scopes, expires_at, reason, at) \
             SELECT id || ':revoked', id, tenant_id, user_id, institution_id, 'revoked', 'unknown', NULL, NULL, NULL, consent_revoked_at \
             FROM connections WHERE consent_revoked_at IS NOT NULL",
        )
        .await?;
        db.execute_unprepared(
            "INSERT INTO consent_events (id, connection_id, tenant_id, user_id, institution_id, kind, acted_by, scopes, expires_at, reason, at) \
             SELECT id || ':expired', id, tenant_id, user_id, institution_id, 'expired', 'system', NULL, consent_expires_at, 'CONSENT_EXPIRED', COALESCE(last_failure_at, consent_expires_at) \
             FROM connections WHERE status = 'reauth_required' AND last_failure_reason LIKE '%consent at the institution has expired%' AND consent_expires_at IS NOT NULL",
        )
        .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(ConsentEvents::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum ConsentEvents {
    Table,
    Id,
    ConnectionId,
    TenantId,
    UserId,
    InstitutionId,
    Kind,
    ActedBy,
    Scopes,
    ExpiresAt,
    Reason,
    At,
}
