//! The `transactions` table.
use crate::store::DbDecimal;
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "transactions")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub connection_id: String,
    pub external_id: String,
    pub account_external_id: String,
    pub amount: DbDecimal,
    pub currency: String,
    pub date: Date,
    pub status: String,
    pub pending_external_id: Option<String>,
    pub description: String,
    pub category: Option<String>,
    pub investment_type: Option<String>,
    pub security_external_id: Option<String>,
    pub quantity: Option<DbDecimal>,
    pub price: Option<DbDecimal>,
    /// What the user attached: a JSON array of tags, and a note. Syncs never write them.
    pub tags: String,
    pub note: Option<String>,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
