//! Households: a tenant's named groups of its users, read as one. A user belongs
//! to at most one household of their tenant.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Households::Table)
                    .col(string(Households::TenantId))
                    .col(string(Households::Id))
                    .col(string(Households::Name))
                    .col(timestamp_with_time_zone(Households::CreatedAt))
                    .col(timestamp_with_time_zone(Households::UpdatedAt))
                    .primary_key(
                        Index::create()
                            .col(Households::TenantId)
                            .col(Households::Id),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(HouseholdMembers::Table)
                    .col(string(HouseholdMembers::TenantId))
                    .col(string(HouseholdMembers::UserId))
                    .col(string(HouseholdMembers::HouseholdId))
                    .primary_key(
                        Index::create()
                            .col(HouseholdMembers::TenantId)
                            .col(HouseholdMembers::UserId),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("household_members_household")
                    .table(HouseholdMembers::Table)
                    .col(HouseholdMembers::TenantId)
                    .col(HouseholdMembers::HouseholdId)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(HouseholdMembers::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(Households::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum Households {
    Table,
    TenantId,
    Id,
    Name,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum HouseholdMembers {
    Table,
    TenantId,
    UserId,
    HouseholdId,
}
