//! Records a connector could not map, kept redacted with the reason until a later
//! sync maps them (`mapped`) or the institution no longer sends them (`gone`).

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(QuarantinedRecords::Table)
                    .col(string(QuarantinedRecords::Id).primary_key())
                    .col(string(QuarantinedRecords::ConnectionId))
                    .col(string(QuarantinedRecords::InstitutionId))
                    // `accounts`, `holdings` or `transactions`.
                    .col(string(QuarantinedRecords::Endpoint))
                    // The institution's id for the record, or a SHA-256 of it.
                    .col(string(QuarantinedRecords::RecordKey))
                    .col(text(QuarantinedRecords::Reason))
                    // JSON text, redacted: never a name, description or amount in clear.
                    .col(text(QuarantinedRecords::RedactedRecord))
                    // The connector version that refused it, last time.
                    .col(string(QuarantinedRecords::ConnectorHash))
                    .col(timestamp_with_time_zone(QuarantinedRecords::FirstSeenAt))
                    .col(timestamp_with_time_zone(QuarantinedRecords::LastSeenAt))
                    .col(integer(QuarantinedRecords::TimesSeen))
                    .col(timestamp_with_time_zone_null(
                        QuarantinedRecords::ResolvedAt,
                    ))
                    // `mapped` or `gone`; null while open.
                    .col(string_null(QuarantinedRecords::Resolution))
                    .foreign_key(
                        ForeignKey::create()
                            .from(QuarantinedRecords::Table, QuarantinedRecords::ConnectionId)
                            .to(Connections::Table, Connections::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        // One entry per record: refused again, it is seen again, not duplicated.
        manager
            .create_index(
                Index::create()
                    .name("quarantined_records_record")
                    .table(QuarantinedRecords::Table)
                    .col(QuarantinedRecords::ConnectionId)
                    .col(QuarantinedRecords::Endpoint)
                    .col(QuarantinedRecords::RecordKey)
                    .unique()
                    .to_owned(),
            )
            .await?;
        // What the admin listing and the replay read: open entries by institution.
        manager
            .create_index(
                Index::create()
                    .name("quarantined_records_institution_open")
                    .table(QuarantinedRecords::Table)
                    .col(QuarantinedRecords::InstitutionId)
                    .col(QuarantinedRecords::ResolvedAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(QuarantinedRecords::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum QuarantinedRecords {
    Table,
    Id,
    ConnectionId,
    InstitutionId,
    Endpoint,
    RecordKey,
    Reason,
    RedactedRecord,
    ConnectorHash,
    FirstSeenAt,
    LastSeenAt,
    TimesSeen,
    ResolvedAt,
    Resolution,
}

#[derive(DeriveIden)]
enum Connections {
    Table,
    Id,
}
