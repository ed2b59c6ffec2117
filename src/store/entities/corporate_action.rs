//! The `corporate_actions` table: splits recorded against the securities master.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "corporate_actions")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub instrument_id: String,
    /// `split`.
    pub kind: String,
    /// `ratio_new` shares for every `ratio_old`.
    pub ratio_new: i32,
    pub ratio_old: i32,
    pub effective_date: Date,
    /// `institution` (a split transaction) or `detected` (a quantity jump).
    pub source: String,
    /// The connection that first saw it.
    pub connection_id: String,
    pub recorded_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
