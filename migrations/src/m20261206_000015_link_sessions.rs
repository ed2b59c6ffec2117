//! Link sessions: an advisory app's request to link one of its users, played out in
//! the hosted link page. A session belongs to its tenant and user, names where the
//! user returns (`redirect_uri`, one the tenant registered in
//! `tenants.redirect_uris`) and, to repair one, the connection. Its link URL's
//! token is kept sealed (`sealed_token`), the browser that opened it as the hash of
//! the cookie it was given (`browser_hash`), the authorization under way as the
//! hash of its OAuth state (`attempt`: only that one may end the session).
//! `oauth_states.link_session_id` ties an authorization to the session that
//! started it.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(LinkSessions::Table)
                    .col(string(LinkSessions::Id).primary_key())
                    .col(string(LinkSessions::TenantId))
                    .col(string(LinkSessions::UserId))
                    .col(string_null(LinkSessions::InstitutionId))
                    .col(text_null(LinkSessions::Products))
                    .col(text(LinkSessions::RedirectUri))
                    .col(string_null(LinkSessions::RepairConnectionId))
                    .col(string_null(LinkSessions::ConnectionId))
                    .col(blob(LinkSessions::SealedToken))
                    .col(string_null(LinkSessions::BrowserHash))
                    .col(string_null(LinkSessions::Attempt))
                    .col(string(LinkSessions::Status))
                    .col(string_null(LinkSessions::Error))
                    .col(timestamp_with_time_zone(LinkSessions::CreatedAt))
                    .col(timestamp_with_time_zone(LinkSessions::ExpiresAt))
                    .col(timestamp_with_time_zone_null(LinkSessions::OpenedAt))
                    .col(timestamp_with_time_zone_null(LinkSessions::CompletedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_link_sessions_tenant_created")
                    .table(LinkSessions::Table)
                    .col(LinkSessions::TenantId)
                    .col(LinkSessions::CreatedAt)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_link_sessions_repair")
                    .table(LinkSessions::Table)
                    .col(LinkSessions::RepairConnectionId)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(OauthStates::Table)
                    .add_column(string_null(OauthStates::LinkSessionId))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Tenants::Table)
                    .add_column(text_null(Tenants::RedirectUris))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Tenants::Table)
                    .drop_column(Tenants::RedirectUris)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(OauthStates::Table)
                    .drop_column(OauthStates::LinkSessionId)
                    .to_owned(),
            )
            .await?;
        manager
            .drop_table(Table::drop().table(LinkSessions::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum LinkSessions {
    Table,
    Id,
    TenantId,
    UserId,
    InstitutionId,
    Products,
    RedirectUri,
    RepairConnectionId,
    ConnectionId,
    SealedToken,
    BrowserHash,
    Attempt,
    Status,
    Error,
    CreatedAt,
    ExpiresAt,
    OpenedAt,
    CompletedAt,
}

#[derive(DeriveIden)]
enum OauthStates {
    Table,
    LinkSessionId,
}

#[derive(DeriveIden)]
enum Tenants {
    Table,
    RedirectUris,
}
