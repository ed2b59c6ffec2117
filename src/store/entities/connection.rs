//! The `connections` table.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "connections")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub tenant_id: String,
    pub user_id: String,
    pub institution_id: String,
    pub status: String,
    pub scopes: Option<String>,
    pub consent_granted_at: Option<DateTimeUtc>,
    pub consent_expires_at: Option<DateTimeUtc>,
    pub consent_revoked_at: Option<DateTimeUtc>,
    /// Vault ciphertext, never the token.
    pub access_token: Option<Vec<u8>>,
    /// Vault ciphertext, never the token.
    pub refresh_token: Option<Vec<u8>>,
    pub access_token_expires_at: Option<DateTimeUtc>,
    pub refresh_due_at: Option<DateTimeUtc>,
    /// Vault ciphertext of the values kept from the token response.
    pub grant_values: Option<Vec<u8>>,
    pub token_lease_owner: Option<String>,
    pub token_lease_until: Option<DateTimeUtc>,
    /// Set while a refresh's outcome is unknown (see the migration that added it).
    pub refresh_started_at: Option<DateTimeUtc>,
    pub deep_sync_due_at: Option<DateTimeUtc>,
    pub last_synced_at: Option<DateTimeUtc>,
    pub last_failure_at: Option<DateTimeUtc>,
    pub last_failure_reason: Option<String>,
    pub next_sync_at: Option<DateTimeUtc>,
    pub sync_interval_secs: Option<i64>,
    pub sync_lease_owner: Option<String>,
    pub sync_lease_until: Option<DateTimeUtc>,
    /// Moves in the same transaction as every write to the connection's records.
    pub records_version: i64,
    /// Where the next incremental sync resumes (the connector's encoded cursor).
    pub sync_cursor: Option<String>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
