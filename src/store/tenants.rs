//! Tenants and their API keys. Only a SHA-256 of each key is stored; the key itself
//! is shown once, when it is created.

use chrono::Utc;
use rand::RngExt;
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, Set};
use secrecy::{ExposeSecret, SecretString};

use super::entities::tenant;
use super::{Store, StoreError};
use crate::domain::TenantId;

#[derive(Debug, Clone)]
pub struct TenantRecord {
    pub id: TenantId,
    pub name: String,
}

/// A freshly minted API key: `fsk_` + 40 random characters.
pub struct ApiKey(pub SecretString);

impl ApiKey {
    fn generate() -> Self {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        let mut rng = rand::rng();
        let key: String = (0..40)
            .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
            .collect();
        Self(SecretString::from(format!("fsk_{key}")))
    }
}

pub fn hash_api_key(key: &str) -> String {
    crate::fingerprint::sha256_hex(key.as_bytes())
}

impl Store {
    /// Creates a tenant and returns its API key (the only time it is visible).
    pub async fn create_tenant(&self, name: &str) -> Result<(TenantRecord, ApiKey), StoreError> {
        let id = TenantId::new();
        let key = ApiKey::generate();
        tenant::ActiveModel {
            id: Set(id.to_string()),
            name: Set(name.to_owned()),
            api_key_hash: Set(hash_api_key(key.0.expose_secret())),
            created_at: Set(Utc::now()),
        }
        .insert(self.db())
        .await?;
        Ok((
            TenantRecord {
                id,
                name: name.to_owned(),
            },
            key,
        ))
    }

    /// Issues a new key for an existing tenant; the old one stops working.
    pub async fn rotate_api_key(&self, name: &str) -> Result<(TenantRecord, ApiKey), StoreError> {
        let row = tenant::Entity::find()
            .filter(tenant::Column::Name.eq(name))
            .one(self.db())
            .await?
            .ok_or(StoreError::NotFound("tenant"))?;
        let key = ApiKey::generate();
        let mut active: tenant::ActiveModel = row.clone().into();
        active.api_key_hash = Set(hash_api_key(key.0.expose_secret()));
        active.update(self.db()).await?;
        Ok((to_record(row)?, key))
    }

    pub async fn tenant_by_api_key(&self, key: &str) -> Result<Option<TenantRecord>, StoreError> {
        tenant::Entity::find()
            .filter(tenant::Column::ApiKeyHash.eq(hash_api_key(key)))
            .one(self.db())
            .await?
            .map(to_record)
            .transpose()
    }

    pub async fn tenant_by_name(&self, name: &str) -> Result<Option<TenantRecord>, StoreError> {
        tenant::Entity::find()
            .filter(tenant::Column::Name.eq(name))
            .one(self.db())
            .await?
            .map(to_record)
            .transpose()
    }
}

fn to_record(row: tenant::Model) -> Result<TenantRecord, StoreError> {
    Ok(TenantRecord {
        id: row
            .id
            .parse()
            .map_err(|_| StoreError::Corrupt(format!("tenant id `{}`", row.id)))?,
        name: row.name,
    })
}
