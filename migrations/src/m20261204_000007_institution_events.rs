//! Webhook events institutions sent, kept once each (by the institution's event id)
//! with what finsync did about them, so a repeat is recognised and an operator can
//! replay them.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(InstitutionEvents::Table)
                    .col(string(InstitutionEvents::Id).primary_key())
                    .col(string(InstitutionEvents::InstitutionId))
                    // The institution's id for the event.
                    .col(string(InstitutionEvents::EventId))
                    .col(string_null(InstitutionEvents::EventType))
                    .col(timestamp_with_time_zone(InstitutionEvents::SentAt))
                    .col(timestamp_with_time_zone(InstitutionEvents::ReceivedAt))
                    // The body as received, after its signature was verified.
                    .col(text(InstitutionEvents::Body))
                    // `received`, `queued`, `coalesced`, `unmatched` or `ignored`.
                    .col(string(InstitutionEvents::Status))
                    // JSON array of the connection ids it asked to sync.
                    .col(text(InstitutionEvents::Connections))
                    .col(text_null(InstitutionEvents::Detail))
                    .col(timestamp_with_time_zone_null(
                        InstitutionEvents::ProcessedAt,
                    ))
                    .col(integer(InstitutionEvents::Deliveries))
                    .col(integer(InstitutionEvents::Replays))
                    .to_owned(),
            )
            .await?;
        // The deduplication: one row per event of an institution, whoever receives it.
        manager
            .create_index(
                Index::create()
                    .name("institution_events_event")
                    .table(InstitutionEvents::Table)
                    .col(InstitutionEvents::InstitutionId)
                    .col(InstitutionEvents::EventId)
                    .unique()
                    .to_owned(),
            )
            .await?;
        // What the listing and the replay read: the newest events in a status.
        manager
            .create_index(
                Index::create()
                    .name("institution_events_status")
                    .table(InstitutionEvents::Table)
                    .col(InstitutionEvents::Status)
                    .col(InstitutionEvents::ReceivedAt)
                    .to_owned(),
            )
            .await?;
        // An event names accounts by the institution's ids: find their connections.
        manager
            .create_index(
                Index::create()
                    .name("accounts_external_id")
                    .table(Accounts::Table)
                    .col(Accounts::ExternalId)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name("accounts_external_id")
                    .table(Accounts::Table)
                    .to_owned(),
            )
            .await?;
        manager
            .drop_table(Table::drop().table(InstitutionEvents::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum InstitutionEvents {
    Table,
    Id,
    InstitutionId,
    EventId,
    EventType,
    SentAt,
    ReceivedAt,
    Body,
    Status,
    Connections,
    Detail,
    ProcessedAt,
    Deliveries,
    Replays,
}

#[derive(DeriveIden)]
enum Accounts {
    Table,
    ExternalId,
}
