//! The `institution_breakers` table.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "institution_breakers")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub process_id: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub institution_id: String,
    pub state: String,
    pub degraded: bool,
    pub consecutive_failures: i32,
    pub opened_at: Option<DateTimeUtc>,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
