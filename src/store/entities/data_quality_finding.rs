//! The `data_quality_findings` table: one open finding of reconciliation per
//! connection, code and record.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "data_quality_findings")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub connection_id: String,
    pub account_external_id: String,
    /// `account`, `holdings` or `transactions`: which read resolves it.
    pub scope: String,
    pub code: String,
    /// The record it is about, by the institution's id.
    pub subject: String,
    pub detail: String,
    pub first_run_id: String,
    pub last_run_id: String,
    pub first_seen_at: DateTimeUtc,
    pub last_seen_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
