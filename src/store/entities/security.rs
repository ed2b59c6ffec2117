//! The `securities` table.
use crate::store::DbDecimal;
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "securities")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub connection_id: String,
    pub external_id: String,
    pub ticker: Option<String>,
    pub cusip: Option<String>,
    pub isin: Option<String>,
    pub sedol: Option<String>,
    pub figi: Option<String>,
    pub name: String,
    pub security_type: String,
    pub currency: String,
    pub price: Option<DbDecimal>,
    pub price_as_of: Option<Date>,
    pub updated_at: DateTimeUtc,
    /// The securities master's row; none when nothing could match it.
    pub instrument_id: Option<String>,
    /// `figi`, `isin`, `cusip`, `sedol`, `ticker` (weak) or `none`; empty until
    /// matched.
    pub matched_by: Option<String>,
    /// JSON list of identifiers that failed their check: `[{identifier, value, problem}]`.
    pub identifier_issues: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
