//! The `fx_rates` table: exchange rates as their provider published them.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "fx_rates")]
pub struct Model {
    /// The provider (`ecb`).
    #[sea_orm(primary_key, auto_increment = false)]
    pub source: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub quote: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub date: Date,
    /// The currency the rate is against: one `base` buys `rate` of `quote`.
    pub base: String,
    /// Exact decimal text, as published.
    pub rate: String,
    pub fetched_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
