//! The `tenants` table.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "tenants")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    #[sea_orm(unique)]
    pub name: String,
    pub created_at: DateTimeUtc,
    /// JSON list of the institution ids the tenant may offer; `None` for all.
    pub institutions: Option<String>,
    /// JSON list of the URLs link sessions may send the tenant's users back to.
    pub redirect_uris: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
