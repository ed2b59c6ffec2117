//! The `link_sessions` table.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "link_sessions")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub tenant_id: String,
    pub user_id: String,
    pub institution_id: Option<String>,
    /// JSON list of the products the app asked for; `None` for any.
    pub products: Option<String>,
    pub redirect_uri: String,
    pub repair_connection_id: Option<String>,
    pub connection_id: Option<String>,
    /// Vault ciphertext of the link URL's token.
    pub sealed_token: Vec<u8>,
    /// SHA-256 of the cookie given to the browser that opened the session.
    pub browser_hash: Option<String>,
    /// The state hash of the authorization under way: the only one that may end
    /// the session.
    pub attempt: Option<String>,
    pub status: String,
    pub error: Option<String>,
    pub created_at: DateTimeUtc,
    pub expires_at: DateTimeUtc,
    pub opened_at: Option<DateTimeUtc>,
    pub completed_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
