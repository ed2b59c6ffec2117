//! The core tables: tenants, institutions, connections and their OAuth states, the
//! synced records (accounts, securities, holdings, transactions) and sync runs.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Tenants::Table)
                    .col(string(Tenants::Id).primary_key())
                    .col(string_uniq(Tenants::Name))
                    .col(timestamp_with_time_zone(Tenants::CreatedAt))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Institutions::Table)
                    .col(string(Institutions::Id).primary_key())
                    .col(string(Institutions::Name))
                    .col(string(Institutions::Country))
                    .col(string(Institutions::ConnectorHash))
                    .col(timestamp_with_time_zone(Institutions::UpdatedAt))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Connections::Table)
                    .col(string(Connections::Id).primary_key())
                    .col(string(Connections::TenantId))
                    .col(string(Connections::UserId))
                    .col(string(Connections::InstitutionId))
                    .col(string(Connections::Status))
                    .col(text_null(Connections::Scopes))
                    .col(timestamp_with_time_zone_null(Connections::ConsentGrantedAt))
                    .col(timestamp_with_time_zone_null(Connections::ConsentExpiresAt))
                    .col(timestamp_with_time_zone_null(Connections::ConsentRevokedAt))
                    .col(blob_null(Connections::AccessToken))
                    .col(blob_null(Connections::RefreshToken))
                    .col(timestamp_with_time_zone_null(
                        Connections::AccessTokenExpiresAt,
                    ))
                    // When the background refresh should renew the access token.
                    .col(timestamp_with_time_zone_null(Connections::RefreshDueAt))
                    // One refresher per connection, fleet-wide, until then.
                    .col(string_null(Connections::TokenLeaseOwner))
                    .col(timestamp_with_time_zone_null(Connections::TokenLeaseUntil))
                    .col(timestamp_with_time_zone_null(Connections::LastSyncedAt))
                    .col(timestamp_with_time_zone_null(Connections::LastFailureAt))
                    .col(text_null(Connections::LastFailureReason))
                    .col(timestamp_with_time_zone_null(Connections::NextSyncAt))
                    // A sync holds the connection until then, so two never overlap.
                    .col(string_null(Connections::SyncLeaseOwner))
                    .col(timestamp_with_time_zone_null(Connections::SyncLeaseUntil))
                    .col(timestamp_with_time_zone(Connections::CreatedAt))
                    .col(timestamp_with_time_zone(Connections::UpdatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from(Connections::Table, Connections::TenantId)
                            .to(Tenants::Table, Tenants::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("connections_tenant_user_institution")
                    .table(Connections::Table)
                    .col(Connections::TenantId)
                    .col(Connections::UserId)
                    .col(Connections::InstitutionId)
                    .unique()
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(OauthStates::Table)
                    // SHA-256 of the state: only the user's browser ever holds the value.
                    .col(string(OauthStates::StateHash).primary_key())
                    .col(string(OauthStates::ConnectionId))
                    .col(blob(OauthStates::PkceVerifier))
                    .col(string(OauthStates::RedirectUri))
                    .col(timestamp_with_time_zone(OauthStates::CreatedAt))
                    .col(timestamp_with_time_zone(OauthStates::ExpiresAt))
                    .col(timestamp_with_time_zone_null(OauthStates::UsedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from(OauthStates::Table, OauthStates::ConnectionId)
                            .to(Connections::Table, Connections::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Accounts::Table)
                    .col(string(Accounts::Id).primary_key())
                    .col(string(Accounts::ConnectionId))
                    .col(string(Accounts::ExternalId))
                    .col(string(Accounts::AccountType))
                    .col(string_null(Accounts::Subtype))
                    .col(string(Accounts::Name))
                    .col(string_null(Accounts::OfficialName))
                    .col(string_null(Accounts::Mask))
                    .col(string(Accounts::Currency))
                    .col(string(Accounts::BalanceCurrent))
                    .col(string_null(Accounts::BalanceAvailable))
                    .col(timestamp_with_time_zone(Accounts::BalanceAsOf))
                    .col(timestamp_with_time_zone(Accounts::UpdatedAt))
                    .foreign_key(&mut connection_fk(Accounts::Table, Accounts::ConnectionId))
                    .to_owned(),
            )
            .await?;
        unique_per_connection(
            manager,
            "accounts_connection_external",
            Accounts::Table,
            Accounts::ConnectionId,
            Accounts::ExternalId,
        )
        .await?;

        manager
            .create_table(
                Table::create()
                    .table(Securities::Table)
                    .col(string(Securities::Id).primary_key())
                    .col(string(Securities::ConnectionId))
                    .col(string(Securities::ExternalId))
                    .col(string_null(Securities::Ticker))
                    .col(string_null(Securities::Cusip))
                    .col(string_null(Securities::Isin))
                    .col(string_null(Securities::Sedol))
                    .col(string_null(Securities::Figi))
                    .col(string(Securities::Name))
                    .col(string(Securities::SecurityType))
                    .col(string(Securities::Currency))
                    .col(string_null(Securities::Price))
                    .col(date_null(Securities::PriceAsOf))
                    .col(timestamp_with_time_zone(Securities::UpdatedAt))
                    .foreign_key(&mut connection_fk(
                        Securities::Table,
                        Securities::ConnectionId,
                    ))
                    .to_owned(),
            )
            .await?;
        unique_per_connection(
            manager,
            "securities_connection_external",
            Securities::Table,
            Securities::ConnectionId,
            Securities::ExternalId,
        )
        .await?;

        manager
            .create_table(
                Table::create()
                    .table(Holdings::Table)
                    .col(string(Holdings::Id).primary_key())
                    .col(string(Holdings::ConnectionId))
                    .col(string(Holdings::ExternalId))
                    .col(string(Holdings::AccountExternalId))
                    .col(string(Holdings::SecurityExternalId))
                    .col(string(Holdings::Quantity))
                    .col(string_null(Holdings::CostBasis))
                    .col(string_null(Holdings::Price))
                    .col(string_null(Holdings::Value))
                    .col(string(Holdings::Currency))
                    .col(date_null(Holdings::AsOf))
                    .col(timestamp_with_time_zone(Holdings::UpdatedAt))
                    .foreign_key(&mut connection_fk(Holdings::Table, Holdings::ConnectionId))
                    .to_owned(),
            )
            .await?;
        unique_per_connection(
            manager,
            "holdings_connection_external",
            Holdings::Table,
            Holdings::ConnectionId,
            Holdings::ExternalId,
        )
        .await?;

        manager
            .create_table(
                Table::create()
                    .table(Transactions::Table)
                    .col(string(Transactions::Id).primary_key())
                    .col(string(Transactions::ConnectionId))
                    .col(string(Transactions::ExternalId))
                    .col(string(Transactions::AccountExternalId))
                    .col(string(Transactions::Amount))
                    .col(string(Transactions::Currency))
                    .col(date(Transactions::Date))
                    .col(string(Transactions::Status))
                    .col(string_null(Transactions::PendingExternalId))
                    .col(text(Transactions::Description))
                    .col(string_null(Transactions::Category))
                    .col(string_null(Transactions::InvestmentType))
                    .col(string_null(Transactions::SecurityExternalId))
                    .col(string_null(Transactions::Quantity))
                    .col(string_null(Transactions::Price))
                    .col(timestamp_with_time_zone(Transactions::UpdatedAt))
                    .foreign_key(&mut connection_fk(
                        Transactions::Table,
                        Transactions::ConnectionId,
                    ))
                    .to_owned(),
            )
            .await?;
        unique_per_connection(
            manager,
            "transactions_connection_external",
            Transactions::Table,
            Transactions::ConnectionId,
            Transactions::ExternalId,
        )
        .await?;
        manager
            .create_index(
                Index::create()
                    // Replaced by `m20261212_000029_newest_transactions`.
                    .name("transactions_connection_date")
                    .table(Transactions::Table)
                    .col(Transactions::ConnectionId)
                    .col(Transactions::Date)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(SyncRuns::Table)
                    .col(string(SyncRuns::Id).primary_key())
                    .col(string(SyncRuns::ConnectionId))
                    .col(string(SyncRuns::IdempotencyKey))
                    .col(timestamp_with_time_zone(SyncRuns::StartedAt))
                    .col(timestamp_with_time_zone_null(SyncRuns::FinishedAt))
                    .col(string(SyncRuns::Outcome))
                    .col(integer(SyncRuns::Added))
                    .col(integer(SyncRuns::Modified))
                    .col(integer(SyncRuns::Removed))
                    .col(integer(SyncRuns::Unchanged))
                    .col(integer(SyncRuns::Rejected))
                    .col(text_null(SyncRuns::Cursor))
                    .col(text_null(SyncRuns::Error))
                    .foreign_key(&mut connection_fk(SyncRuns::Table, SyncRuns::ConnectionId))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("sync_runs_connection_started")
                    .table(SyncRuns::Table)
                    .col(SyncRuns::ConnectionId)
                    .col(SyncRuns::StartedAt)
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            SyncRuns::Table.into_iden(),
            Transactions::Table.into_iden(),
            Holdings::Table.into_iden(),
            Securities::Table.into_iden(),
            Accounts::Table.into_iden(),
            OauthStates::Table.into_iden(),
            Connections::Table.into_iden(),
            Institutions::Table.into_iden(),
            Tenants::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}

/// Synced records belong to their connection: deleting it deletes them.
fn connection_fk<T: IntoIden + 'static, C: IntoIden + 'static>(
    table: T,
    column: C,
) -> ForeignKeyCreateStatement {
    ForeignKey::create()
        .from(table, column)
        .to(Connections::Table, Connections::Id)
        .on_delete(ForeignKeyAction::Cascade)
        .to_owned()
}

/// A record's identity is (connection, institution's id): a re-delivered record
/// can only ever update its row.
async fn unique_per_connection<
    T: IntoIden + 'static,
    A: IntoIden + 'static,
    B: IntoIden + 'static,
>(
    manager: &SchemaManager<'_>,
    name: &str,
    table: T,
    connection: A,
    external: B,
) -> Result<(), DbErr> {
    manager
        .create_index(
            Index::create()
                .name(name)
                .table(table)
                .col(connection)
                .col(external)
                .unique()
                .to_owned(),
        )
        .await
}

#[derive(DeriveIden)]
enum Tenants {
    Table,
    Id,
    Name,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Institutions {
    Table,
    Id,
    Name,
    Country,
    ConnectorHash,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Connections {
    Table,
    Id,
    TenantId,
    UserId,
    InstitutionId,
    Status,
    Scopes,
    ConsentGrantedAt,
    ConsentExpiresAt,
    ConsentRevokedAt,
    AccessToken,
    RefreshToken,
    AccessTokenExpiresAt,
    RefreshDueAt,
    TokenLeaseOwner,
    TokenLeaseUntil,
    LastSyncedAt,
    LastFailureAt,
    LastFailureReason,
    NextSyncAt,
    SyncLeaseOwner,
    SyncLeaseUntil,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum OauthStates {
    Table,
    StateHash,
    ConnectionId,
    PkceVerifier,
    RedirectUri,
    CreatedAt,
    ExpiresAt,
    UsedAt,
}

#[derive(DeriveIden)]
enum Accounts {
    Table,
    Id,
    ConnectionId,
    ExternalId,
    AccountType,
    Subtype,
    Name,
    OfficialName,
    Mask,
    Currency,
    BalanceCurrent,
    BalanceAvailable,
    BalanceAsOf,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Securities {
    Table,
    Id,
    ConnectionId,
    ExternalId,
    Ticker,
    Cusip,
    Isin,
    Sedol,
    Figi,
    Name,
    SecurityType,
    Currency,
    Price,
    PriceAsOf,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Holdings {
    Table,
    Id,
    ConnectionId,
    ExternalId,
    AccountExternalId,
    SecurityExternalId,
    Quantity,
    CostBasis,
    Price,
    Value,
    Currency,
    AsOf,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Transactions {
    Table,
    Id,
    ConnectionId,
    ExternalId,
    AccountExternalId,
    Amount,
    Currency,
    Date,
    Status,
    PendingExternalId,
    Description,
    Category,
    InvestmentType,
    SecurityExternalId,
    Quantity,
    Price,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum SyncRuns {
    Table,
    Id,
    ConnectionId,
    IdempotencyKey,
    StartedAt,
    FinishedAt,
    Outcome,
    Added,
    Modified,
    Removed,
    Unchanged,
    Rejected,
    Cursor,
    Error,
}
