//! The `sync_runs` table.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "sync_runs")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub connection_id: String,
    pub idempotency_key: String,
    pub started_at: DateTimeUtc,
    pub finished_at: Option<DateTimeUtc>,
    pub outcome: String,
    pub added: i32,
    pub modified: i32,
    pub removed: i32,
    pub unchanged: i32,
    /// Named `rejected` before quarantine kept the records it counts.
    #[sea_orm(column_name = "rejected")]
    pub quarantined: i32,
    pub cursor: Option<String>,
    /// A deep sync: the whole history re-read, removals found.
    pub deep: bool,
    pub error: Option<String>,
    /// JSON list of the accounts whose data the run could not read.
    pub accounts_unread: Option<String>,
    /// Data-quality findings the run's reconciliation raised.
    pub findings: i32,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
