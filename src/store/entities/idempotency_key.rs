//! The `idempotency_keys` table.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "idempotency_keys")]
pub struct Model {
    /// The tenant's id and the SHA-256 of the key, joined by `:`.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub tenant_id: String,
    /// A random token of the request that claimed the key.
    pub owner: String,
    /// SHA-256 of the request's method, path and body.
    pub fingerprint: String,
    pub created_at: DateTimeUtc,
    /// When the answer was stored; `None` while the request is processed.
    pub finished_at: Option<DateTimeUtc>,
    pub status: Option<i32>,
    /// JSON list of the `[name, value]` headers a replay repeats.
    pub headers: Option<String>,
    pub body: Option<Vec<u8>>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
