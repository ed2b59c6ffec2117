//! The `connector_versions` table.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "connector_versions")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub connector_id: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub version: i64,
    pub content: String,
    pub hash: String,
    pub source: String,
    pub actor: String,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
