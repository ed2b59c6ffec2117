//! The `instruments` table: the securities master.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "instruments")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub figi: Option<String>,
    pub isin: Option<String>,
    pub cusip: Option<String>,
    pub sedol: Option<String>,
    /// `TICKER|CURRENCY` for an instrument known by ticker only.
    pub weak_key: Option<String>,
    pub ticker: Option<String>,
    pub name: String,
    pub security_type: String,
    pub currency: String,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
