//! The `holdings` table.
use crate::store::DbDecimal;
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "holdings")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub connection_id: String,
    pub external_id: String,
    pub account_external_id: String,
    pub security_external_id: String,
    pub quantity: DbDecimal,
    pub cost_basis: Option<DbDecimal>,
    pub price: Option<DbDecimal>,
    pub value: Option<DbDecimal>,
    pub currency: String,
    pub as_of: Option<Date>,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
