//! The `institution_events` table.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "institution_events")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub institution_id: String,
    pub event_id: String,
    pub event_type: Option<String>,
    pub sent_at: DateTimeUtc,
    pub received_at: DateTimeUtc,
    pub body: String,
    pub status: String,
    pub connections: String,
    pub detail: Option<String>,
    pub processed_at: Option<DateTimeUtc>,
    pub deliveries: i32,
    pub replays: i32,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
