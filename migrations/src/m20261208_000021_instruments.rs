//! One securities master across connections and tenants. `instruments` holds one
//! row per instrument, keyed by its valid strong identifiers (FIGI, ISIN, CUSIP,
//! SEDOL, each unique) or, for one known by ticker only, by `weak_key` (ticker and
//! currency). Each connection's `securities` row stays its institution's view
//! (name, price, as-of, identifiers as sent) and now names its instrument, how it
//! was matched, and which identifiers failed their check digits.
//! `instrument_conflicts` records where an institution's identifier disagrees with
//! the instrument it matched. Existing rows are matched by the application right
//! after this migration (`matched_by` empty means "not yet").

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Instruments::Table)
                    .col(string(Instruments::Id).primary_key())
                    .col(string_null(Instruments::Figi))
                    .col(string_null(Instruments::Isin))
                    .col(string_null(Instruments::Cusip))
                    .col(string_null(Instruments::Sedol))
                    .col(string_null(Instruments::WeakKey))
                    .col(string_null(Instruments::Ticker))
                    .col(string(Instruments::Name))
                    .col(string(Instruments::SecurityType))
                    .col(string(Instruments::Currency))
                    .col(timestamp_with_time_zone(Instruments::CreatedAt))
                    .col(timestamp_with_time_zone(Instruments::UpdatedAt))
                    .to_owned(),
            )
            .await?;
        // NULLs are distinct in both databases: many instruments may lack an identifier.
        for (name, column) in [
            ("instruments_figi", Instruments::Figi),
            ("instruments_isin", Instruments::Isin),
            ("instruments_cusip", Instruments::Cusip),
            ("instruments_sedol", Instruments::Sedol),
            ("instruments_weak_key", Instruments::WeakKey),
        ] {
            manager
                .create_index(
                    Index::create()
                        .name(name)
                        .table(Instruments::Table)
                        .col(column)
                        .unique()
                        .to_owned(),
                )
                .await?;
        }
        manager
            .create_index(
                Index::create()
                    .name("instruments_ticker")
                    .table(Instruments::Table)
                    .col(Instruments::Ticker)
                    .col(Instruments::Currency)
                    .to_owned(),
            )
            .await?;
        // One column per statement: SQLite alters one thing at a time.
        for column in [
            string_null(Securities::InstrumentId),
            string_null(Securities::MatchedBy),
            text_null(Securities::IdentifierIssues),
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Securities::Table)
                        .add_column(column)
                        .to_owned(),
                )
                .await?;
        }
        manager
            .create_index(
                Index::create()
                    .name("securities_instrument")
                    .table(Securities::Table)
                    .col(Securities::InstrumentId)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("securities_unmatched")
                    .table(Securities::Table)
                    .col(Securities::MatchedBy)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(InstrumentConflicts::Table)
                    .col(string(InstrumentConflicts::SecurityId))
                    .col(string(InstrumentConflicts::Identifier))
                    .col(string(InstrumentConflicts::ConnectionId))
                    .col(string(InstrumentConflicts::InstrumentId))
                    .col(string_null(InstrumentConflicts::InstrumentValue))
                    .col(string(InstrumentConflicts::InstitutionValue))
                    .col(string_null(InstrumentConflicts::HeldBy))
                    .col(timestamp_with_time_zone(InstrumentConflicts::DetectedAt))
                    .primary_key(
                        Index::create()
                            .col(InstrumentConflicts::SecurityId)
                            .col(InstrumentConflicts::Identifier),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("instrument_conflicts_connection")
                    .table(InstrumentConflicts::Table)
                    .col(InstrumentConflicts::ConnectionId)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(InstrumentConflicts::Table).to_owned())
            .await?;
        for index in ["securities_instrument", "securities_unmatched"] {
            manager
                .drop_index(
                    Index::drop()
                        .name(index)
                        .table(Securities::Table)
                        .to_owned(),
                )
                .await?;
        }
        for column in [
            Securities::InstrumentId,
            Securities::MatchedBy,
            Securities::IdentifierIssues,
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Securities::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        manager
            .drop_table(Table::drop().table(Instruments::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum Instruments {
    Table,
    Id,
    Figi,
    Isin,
    Cusip,
    Sedol,
    WeakKey,
    Ticker,
    Name,
    SecurityType,
    Currency,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Securities {
    Table,
    InstrumentId,
    MatchedBy,
    IdentifierIssues,
}

#[derive(DeriveIden)]
enum InstrumentConflicts {
    Table,
    SecurityId,
    Identifier,
    ConnectionId,
    InstrumentId,
    InstrumentValue,
    InstitutionValue,
    HeldBy,
    DetectedAt,
}
