//! Drops the partial index of annotated transactions: a portfolio rebuild now
//! takes its transactions' annotations from the rows it reads for the view, and
//! nothing else looked them up per connection. The exact inverse of migration 8.

use sea_orm_migration::prelude::*;

use crate::m20261204_000008_annotated_transactions::Migration as AnnotatedIndex;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        AnnotatedIndex.down(manager).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        AnnotatedIndex.up(manager).await
    }
}
