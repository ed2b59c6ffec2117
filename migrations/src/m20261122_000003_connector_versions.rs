//! Every version of every connector file ever served, whether it came from the
//! connectors directory or the admin API: the latest version of a connector is the
//! one in service across the fleet, and the rows are its audit trail.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(ConnectorVersions::Table)
                    .col(string(ConnectorVersions::ConnectorId))
                    .col(big_integer(ConnectorVersions::Version))
                    .col(text(ConnectorVersions::Content))
                    .col(string(ConnectorVersions::Hash))
                    // `file` or `api`.
                    .col(string(ConnectorVersions::Source))
                    // Who published it: the admin API's caller, or the file's path.
                    .col(string(ConnectorVersions::Actor))
                    .col(timestamp_with_time_zone(ConnectorVersions::CreatedAt))
                    // Two processes publishing at once cannot both take a number.
                    .primary_key(
                        Index::create()
                            .col(ConnectorVersions::ConnectorId)
                            .col(ConnectorVersions::Version),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(ConnectorVersions::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum ConnectorVersions {
    Table,
    ConnectorId,
    Version,
    Content,
    Hash,
    Source,
    Actor,
    CreatedAt,
}
