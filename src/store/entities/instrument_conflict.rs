//! The `instrument_conflicts` table: an institution's identifier that disagrees
//! with the instrument its security matched.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "instrument_conflicts")]
pub struct Model {
    /// The connection's `securities` row.
    #[sea_orm(primary_key, auto_increment = false)]
    pub security_id: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub identifier: String,
    pub connection_id: String,
    pub instrument_id: String,
    /// What the instrument holds for this identifier (none: it holds none, but
    /// another instrument holds the institution's value).
    pub instrument_value: Option<String>,
    pub institution_value: String,
    /// The other instrument that holds the institution's value, if one does.
    pub held_by: Option<String>,
    pub detected_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
