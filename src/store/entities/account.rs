//! The `accounts` table.
use crate::store::DbDecimal;
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "accounts")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub connection_id: String,
    pub external_id: String,
    pub account_type: String,
    pub subtype: Option<String>,
    pub name: String,
    pub official_name: Option<String>,
    pub mask: Option<String>,
    pub currency: String,
    pub balance_current: DbDecimal,
    pub balance_available: Option<DbDecimal>,
    /// Cash outside the positions listed as holdings, where reported apart.
    pub balance_cash: Option<DbDecimal>,
    /// What `balance_current` covers: `total`, `account_currency_total` or `cash`.
    pub balance_meaning: String,
    pub balance_as_of: DateTimeUtc,
    pub updated_at: DateTimeUtc,
    /// While its fetch fails: when its data was last read (else: its connection's
    /// last sync).
    pub refreshed_at: Option<DateTimeUtc>,
    /// Since when its fetch fails; none while it is read.
    pub fetch_failed_at: Option<DateTimeUtc>,
    /// `<part>: <reason>` of the failing fetch.
    pub fetch_failure: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
