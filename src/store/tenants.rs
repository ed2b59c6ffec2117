//! Tenants and their API keys. A key is `fsk_<prefix>_<secret>`: the prefix finds
//! the key and is safe to show; only a SHA-256 of the whole key is stored, so the
//! key itself is visible once, when it is issued. Keys carry scopes and can be
//! revoked one by one.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use rand::RngExt;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, Set,
};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use super::audit::{self, Actor, AuditEntry};
use super::entities::{api_key, tenant};
use super::{Store, StoreError};
use crate::domain::TenantId;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TenantRecord {
    pub id: TenantId,
    pub name: String,
    pub created_at: DateTime<Utc>,
}

/// What a key may do: `read` portfolios, or also request `sync`s.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Read,
    Sync,
}

impl Scope {
    pub const ALL: [Scope; 2] = [Scope::Read, Scope::Sync];
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Read => "read",
            Self::Sync => "sync",
        })
    }
}

impl FromStr for Scope {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "read" => Ok(Self::Read),
            "sync" => Ok(Self::Sync),
            other => Err(format!("unknown scope `{other}` (expected read or sync)")),
        }
    }
}

/// An API key as listings show it: never the key itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApiKeyRecord {
    pub id: String,
    pub tenant_id: TenantId,
    pub prefix: String,
    pub scopes: Vec<Scope>,
    pub label: Option<String>,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl ApiKeyRecord {
    pub fn allows(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
    }
}

/// A freshly issued API key, visible only now.
pub struct ApiKey(pub SecretString);

const KEY_TAG: &str = "fsk_";
const PREFIX_LEN: usize = 8;
const SECRET_LEN: usize = 32;

impl ApiKey {
    fn generate() -> (Self, String) {
        let prefix = random_text(PREFIX_LEN);
        let key = format!("{KEY_TAG}{prefix}_{}", random_text(SECRET_LEN));
        (Self(SecretString::from(key)), prefix)
    }
}

pub(super) fn random_text(len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..len)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect()
}

/// The prefix of a presented key, if it has the shape of one.
/// What an API process keeps of a key it authenticated, to recognise the key while
/// the database cannot be asked: the hash the database holds, never the key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RememberedKey {
    hash: String,
    pub tenant: TenantRecord,
    pub key: ApiKeyRecord,
}

impl RememberedKey {
    pub fn new(presented: &str, tenant: TenantRecord, key: ApiKeyRecord) -> Self {
        Self {
            hash: hash_api_key(presented),
            tenant,
            key,
        }
    }

    /// Whether `presented` is the key this was made from.
    pub fn matches(&self, presented: &str) -> bool {
        crate::fingerprint::same(&self.hash, &hash_api_key(presented))
    }
}

/// The public part of a presented key (`fsk_<prefix>_…`), if it has the shape of one.
pub fn api_key_prefix(key: &str) -> Option<&str> {
    prefix_of(key)
}

fn prefix_of(key: &str) -> Option<&str> {
    let (prefix, secret) = key.strip_prefix(KEY_TAG)?.split_once('_')?;
    (prefix.len() == PREFIX_LEN && secret.len() == SECRET_LEN).then_some(prefix)
}

fn hash_api_key(key: &str) -> String {
    crate::fingerprint::sha256_hex(key.as_bytes())
}

impl Store {
    /// Creates a tenant with a first key scoped `read` and `sync`, as a command run
    /// on the host does (audited as `cli`).
    pub async fn create_tenant(&self, name: &str) -> Result<(TenantRecord, ApiKey), StoreError> {
        let audit = AuditEntry::new(Actor::cli(), "tenant.create");
        let (tenant, _, key) = self.create_tenant_with_key(name, audit).await?;
        Ok((tenant, key))
    }

    /// [`Self::create_tenant`], recording `audit` with it and also returning the
    /// key as listings show it.
    pub async fn create_tenant_with_key(
        &self,
        name: &str,
        audit: AuditEntry,
    ) -> Result<(TenantRecord, ApiKeyRecord, ApiKey), StoreError> {
        let record = TenantRecord {
            id: TenantId::new(),
            name: name.to_owned(),
            created_at: Utc::now(),
        };
        let txn = self.begin_write().await?;
        tenant::ActiveModel {
            id: Set(record.id.to_string()),
            name: Set(record.name.clone()),
            created_at: Set(record.created_at),
            institutions: Set(None),
            redirect_uris: Set(None),
        }
        .insert(&txn)
        .await?;
        let (listed, key) = insert_api_key(&txn, record.id, &Scope::ALL, None).await?;
        let detail = serde_json::json!({ "name": record.name, "key_prefix": listed.prefix });
        audit::append(
            &txn,
            audit.target(format!("tenant:{}", record.id)).detail(detail),
        )
        .await?;
        txn.commit().await?;
        Ok((record, listed, key))
    }

    /// Issues a new key for a tenant, recording `audit` with it.
    pub async fn issue_api_key(
        &self,
        tenant: TenantId,
        scopes: &[Scope],
        label: Option<&str>,
        audit: AuditEntry,
    ) -> Result<(ApiKeyRecord, ApiKey), StoreError> {
        let txn = self.begin_write().await?;
        let (listed, key) = insert_api_key(&txn, tenant, scopes, label).await?;
        let detail = serde_json::json!({ "key_prefix": listed.prefix, "scopes": listed.scopes });
        audit::append(
            &txn,
            audit
                .target(format!("tenant:{tenant}/key:{}", listed.id))
                .detail(detail),
        )
        .await?;
        txn.commit().await?;
        Ok((listed, key))
    }

    /// Issues a new key for the named tenant, then revokes every other live one,
    /// in one transaction with `audit`.
    pub async fn rotate_api_key(
        &self,
        name: &str,
        audit: AuditEntry,
    ) -> Result<(TenantRecord, ApiKey), StoreError> {
        let tenant = self
            .tenant_by_name(name)
            .await?
            .ok_or(StoreError::NotFound("tenant"))?;
        let txn = self.begin_write().await?;
        let (issued, key) = insert_api_key(&txn, tenant.id, &Scope::ALL, None).await?;
        let revoked = api_key::Entity::update_many()
            .col_expr(
                api_key::Column::RevokedAt,
                sea_orm::sea_query::Expr::value(Utc::now()),
            )
            .filter(api_key::Column::TenantId.eq(tenant.id.to_string()))
            .filter(api_key::Column::Id.ne(issued.id.clone()))
            .filter(api_key::Column::RevokedAt.is_null())
            .exec(&txn)
            .await?;
        let detail = serde_json::json!({
            "key_prefix": issued.prefix,
            "revoked": revoked.rows_affected,
        });
        audit::append(
            &txn,
            audit.target(format!("tenant:{}", tenant.id)).detail(detail),
        )
        .await?;
        txn.commit().await?;
        Ok((tenant, key))
    }

    /// The tenant's keys, newest first, revoked ones included.
    pub async fn api_keys(&self, tenant: TenantId) -> Result<Vec<ApiKeyRecord>, StoreError> {
        api_key::Entity::find()
            .filter(api_key::Column::TenantId.eq(tenant.to_string()))
            .order_by_desc(api_key::Column::CreatedAt)
            .all(self.db())
            .await?
            .into_iter()
            .map(key_record)
            .collect()
    }

    /// Revokes a live key of `tenant`, recording `audit` with it; its prefix when
    /// there was one to revoke.
    pub async fn revoke_api_key(
        &self,
        tenant: TenantId,
        id: &str,
        audit: AuditEntry,
    ) -> Result<Option<String>, StoreError> {
        let txn = self.begin_write().await?;
        let Some(live) = api_key::Entity::find_by_id(id.to_owned())
            .filter(api_key::Column::TenantId.eq(tenant.to_string()))
            .filter(api_key::Column::RevokedAt.is_null())
            .one(&txn)
            .await?
        else {
            return Ok(None);
        };
        let result = api_key::Entity::update_many()
            .col_expr(
                api_key::Column::RevokedAt,
                sea_orm::sea_query::Expr::value(Utc::now()),
            )
            .filter(api_key::Column::Id.eq(id))
            .filter(api_key::Column::TenantId.eq(tenant.to_string()))
            .filter(api_key::Column::RevokedAt.is_null())
            .exec(&txn)
            .await?;
        if result.rows_affected != 1 {
            return Ok(None);
        }
        let detail = serde_json::json!({ "key_prefix": live.prefix });
        audit::append(&txn, audit.detail(detail)).await?;
        txn.commit().await?;
        Ok(Some(live.prefix))
    }

    /// The tenant and key a presented key belongs to, if it is live.
    pub async fn authenticate(
        &self,
        key: &str,
    ) -> Result<Option<(TenantRecord, ApiKeyRecord)>, StoreError> {
        let Some(prefix) = prefix_of(key) else {
            return Ok(None);
        };
        let Some(row) = api_key::Entity::find()
            .filter(api_key::Column::Prefix.eq(prefix))
            .one(self.db())
            .await?
        else {
            return Ok(None);
        };
        if row.revoked_at.is_some() || !crate::fingerprint::same(&row.key_hash, &hash_api_key(key))
        {
            return Ok(None);
        }
        let record = key_record(row)?;
        Ok(self
            .tenant(record.tenant_id)
            .await?
            .map(|tenant| (tenant, record)))
    }

    pub async fn tenant(&self, id: TenantId) -> Result<Option<TenantRecord>, StoreError> {
        tenant::Entity::find_by_id(id.to_string())
            .one(self.db())
            .await?
            .map(to_record)
            .transpose()
    }

    /// The institutions the tenant may offer its users; `None`: every one in service.
    pub async fn tenant_institutions(
        &self,
        id: TenantId,
    ) -> Result<Option<Vec<String>>, StoreError> {
        let row = self.tenant_row(id).await?;
        list_column(id, "institutions", row.institutions.as_deref())
    }

    /// Limits the institutions the tenant may offer to `institutions` (`None`: all),
    /// recording `audit` with it.
    pub async fn set_tenant_institutions(
        &self,
        id: TenantId,
        institutions: Option<&[String]>,
        audit: AuditEntry,
    ) -> Result<(), StoreError> {
        let text = institutions.map(|list| {
            let unique: std::collections::BTreeSet<&String> = list.iter().collect();
            serde_json::to_string(&unique).unwrap_or_default()
        });
        let audit = audit.detail(serde_json::json!({ "institutions": institutions }));
        self.set_tenant_column(id, tenant::Column::Institutions, text, audit)
            .await
    }

    /// The URLs the tenant's link sessions may send users back to, in the order
    /// registered (the first is where repair links return).
    pub async fn tenant_redirect_uris(&self, id: TenantId) -> Result<Vec<String>, StoreError> {
        let row = self.tenant_row(id).await?;
        Ok(list_column(id, "redirect URIs", row.redirect_uris.as_deref())?.unwrap_or_default())
    }

    /// Replaces the tenant's redirect URIs (checked by the caller), recording
    /// `audit` with it.
    pub async fn set_tenant_redirect_uris(
        &self,
        id: TenantId,
        uris: &[String],
        audit: AuditEntry,
    ) -> Result<(), StoreError> {
        let text = (!uris.is_empty()).then(|| serde_json::to_string(uris).unwrap_or_default());
        let audit = audit.detail(serde_json::json!({ "redirect_uris": uris }));
        self.set_tenant_column(id, tenant::Column::RedirectUris, text, audit)
            .await
    }

    async fn tenant_row(&self, id: TenantId) -> Result<tenant::Model, StoreError> {
        tenant::Entity::find_by_id(id.to_string())
            .one(self.db())
            .await?
            .ok_or(StoreError::NotFound("tenant"))
    }

    async fn set_tenant_column(
        &self,
        id: TenantId,
        column: tenant::Column,
        text: Option<String>,
        audit: AuditEntry,
    ) -> Result<(), StoreError> {
        let txn = self.begin_write().await?;
        let updated = tenant::Entity::update_many()
            .col_expr(column, Expr::value(text))
            .filter(tenant::Column::Id.eq(id.to_string()))
            .exec(&txn)
            .await?;
        if updated.rows_affected == 0 {
            return Err(StoreError::NotFound("tenant"));
        }
        audit::append(&txn, audit).await?;
        txn.commit().await?;
        Ok(())
    }

    pub async fn tenant_by_name(&self, name: &str) -> Result<Option<TenantRecord>, StoreError> {
        tenant::Entity::find()
            .filter(tenant::Column::Name.eq(name))
            .one(self.db())
            .await?
            .map(to_record)
            .transpose()
    }

    pub async fn tenants(&self) -> Result<Vec<TenantRecord>, StoreError> {
        tenant::Entity::find()
            .order_by_asc(tenant::Column::Name)
            .all(self.db())
            .await?
            .into_iter()
            .map(to_record)
            .collect()
    }
}

async fn insert_api_key(
    db: &impl ConnectionTrait,
    tenant: TenantId,
    scopes: &[Scope],
    label: Option<&str>,
) -> Result<(ApiKeyRecord, ApiKey), StoreError> {
    let (key, prefix) = ApiKey::generate();
    let mut scopes = scopes.to_vec();
    scopes.sort();
    scopes.dedup();
    let row = api_key::ActiveModel {
        id: Set(uuid::Uuid::new_v4().to_string()),
        tenant_id: Set(tenant.to_string()),
        prefix: Set(prefix),
        key_hash: Set(hash_api_key(key.0.expose_secret())),
        scopes: Set(join_scopes(&scopes)),
        label: Set(label.map(str::to_owned)),
        created_at: Set(Utc::now()),
        revoked_at: Set(None),
    }
    .insert(db)
    .await?;
    Ok((key_record(row)?, key))
}

fn join_scopes(scopes: &[Scope]) -> String {
    scopes
        .iter()
        .map(Scope::to_string)
        .collect::<Vec<_>>()
        .join(" ")
}

/// A JSON list kept in one of the tenant's columns.
fn list_column(
    id: TenantId,
    what: &str,
    text: Option<&str>,
) -> Result<Option<Vec<String>>, StoreError> {
    text.map(|text| {
        serde_json::from_str(text).map_err(|_| StoreError::Corrupt(format!("tenant {id}: {what}")))
    })
    .transpose()
}

fn to_record(row: tenant::Model) -> Result<TenantRecord, StoreError> {
    Ok(TenantRecord {
        id: row
            .id
            .parse()
            .map_err(|_| StoreError::Corrupt(format!("tenant id `{}`", row.id)))?,
        name: row.name,
        created_at: row.created_at,
    })
}

fn key_record(row: api_key::Model) -> Result<ApiKeyRecord, StoreError> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("api key {}: {what}", row.id));
    Ok(ApiKeyRecord {
        tenant_id: row.tenant_id.parse().map_err(|_| corrupt("tenant id"))?,
        scopes: row
            .scopes
            .split_whitespace()
            .map(str::parse)
            .collect::<Result<_, _>>()
            .map_err(|_| corrupt("scopes"))?,
        id: row.id,
        prefix: row.prefix,
        label: row.label,
        created_at: row.created_at,
        revoked_at: row.revoked_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_keys_have_the_shape_authentication_expects() {
        let (key, prefix) = ApiKey::generate();
        assert_eq!(prefix_of(key.0.expose_secret()), Some(prefix.as_str()));
        assert_eq!(prefix_of("fsk_short_secret"), None);
        assert_eq!(prefix_of("not a key"), None);
    }

    #[test]
    fn hashes_compare_by_content() {
        assert!(crate::fingerprint::same("abc", "abc"));
        assert!(!crate::fingerprint::same("abc", "abd"));
        assert!(!crate::fingerprint::same("abc", "ab"));
    }
}
