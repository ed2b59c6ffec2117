//! Named admin credentials. A credential is `fsa_<prefix>_<secret>`: the prefix
//! finds it and is safe to show; only a SHA-256 of the whole credential is stored,
//! so it is visible once, when it is issued. Each carries one [`Role`]; revoking
//! one ends it at once in every process (it is looked up on every request).

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, Set};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use super::audit::{self, AuditEntry};
use super::entities::admin;
use super::tenants::random_text;
use super::{Store, StoreError};

/// What an admin credential may do.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything: tenants, keys, connectors, admins, and what operators do.
    Admin,
    /// Runs the fleet: the status page, connections, syncs, quarantine, deliveries.
    Operator,
    /// Reads the audit trail, nothing else.
    Auditor,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Admin, Role::Operator, Role::Auditor];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Operator => "operator",
            Self::Auditor => "auditor",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|role| role.as_str() == s)
            .ok_or_else(|| format!("unknown role `{s}` (expected admin, operator or auditor)"))
    }
}

/// An admin's name: 1 to 64 of `a-z 0-9 . _ -`, starting with a letter or digit,
/// so that it reads the same in the trail, a log line and a shell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminName(String);

impl AdminName {
    pub fn parse(name: &str) -> Result<Self, String> {
        let ok = (1..=64).contains(&name.len())
            && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && name.chars().all(|c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-')
            });
        if ok {
            Ok(Self(name.to_owned()))
        } else {
            Err(format!(
                "`{name}` is not an admin name: use 1 to 64 of a-z, 0-9, `.`, `_` and `-`, starting with a letter or digit"
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An admin credential as listings show it: never the credential.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AdminRecord {
    pub id: String,
    pub name: String,
    pub role: Role,
    /// The credential's public part (`fsa_<prefix>_…`).
    pub prefix: String,
    /// Who issued it, as the audit trail names them.
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A freshly issued admin credential, visible only now.
pub struct AdminCredential(pub SecretString);

const CREDENTIAL_TAG: &str = "fsa_";
const PREFIX_LEN: usize = 8;
const SECRET_LEN: usize = 40;

/// Whether a presented bearer has the shape of an admin credential (rather than
/// the break-glass token).
pub fn is_admin_credential(presented: &str) -> bool {
    prefix_of(presented).is_some()
}

fn prefix_of(credential: &str) -> Option<&str> {
    let (prefix, secret) = credential.strip_prefix(CREDENTIAL_TAG)?.split_once('_')?;
    (prefix.len() == PREFIX_LEN && secret.len() == SECRET_LEN).then_some(prefix)
}

fn hash_credential(credential: &str) -> String {
    crate::fingerprint::sha256_hex(credential.as_bytes())
}

impl Store {
    /// Issues a credential named `name` with `role`, recording `audit` with it.
    /// A name already in use, even by a revoked credential, is a conflict: the
    /// trail names admins, and a name must keep meaning one person.
    pub async fn create_admin(
        &self,
        name: &AdminName,
        role: Role,
        created_by: &str,
        audit: AuditEntry,
    ) -> Result<(AdminRecord, AdminCredential), StoreError> {
        let prefix = random_text(PREFIX_LEN);
        let credential = format!("{CREDENTIAL_TAG}{prefix}_{}", random_text(SECRET_LEN));
        let txn = self.begin_write().await?;
        let taken = admin::Entity::find()
            .filter(admin::Column::Name.eq(name.as_str()))
            .one(&txn)
            .await?
            .is_some();
        if taken {
            return Err(name_taken(name));
        }
        let row = admin::ActiveModel {
            id: Set(uuid::Uuid::new_v4().to_string()),
            name: Set(name.as_str().to_owned()),
            role: Set(role.as_str().to_owned()),
            prefix: Set(prefix),
            key_hash: Set(hash_credential(&credential)),
            created_by: Set(created_by.to_owned()),
            created_at: Set(Utc::now()),
            revoked_at: Set(None),
        }
        .insert(&txn)
        .await
        // Another request took the name since the look above.
        .map_err(|e| match e.sql_err() {
            Some(sea_orm::SqlErr::UniqueConstraintViolation(_)) => name_taken(name),
            _ => StoreError::from(e),
        })?;
        let record = to_record(row)?;
        let audit = audit
            .target(format!("admin:{}", record.name))
            .detail(serde_json::json!({ "role": role, "key_prefix": record.prefix }));
        audit::append(&txn, audit).await?;
        txn.commit().await?;
        Ok((record, AdminCredential(SecretString::from(credential))))
    }

    /// Every admin credential, by name, revoked ones included.
    pub async fn admins(&self) -> Result<Vec<AdminRecord>, StoreError> {
        admin::Entity::find()
            .order_by_asc(admin::Column::Name)
            .all(self.db())
            .await?
            .into_iter()
            .map(to_record)
            .collect()
    }

    /// The admin named `name`, live or revoked.
    pub async fn admin_named(&self, name: &str) -> Result<Option<AdminRecord>, StoreError> {
        admin::Entity::find()
            .filter(admin::Column::Name.eq(name))
            .one(self.db())
            .await?
            .map(to_record)
            .transpose()
    }

    /// Revokes the live credential named `name`, recording `audit` with it; `None`
    /// when there is no such live credential.
    pub async fn revoke_admin(
        &self,
        name: &str,
        audit: AuditEntry,
    ) -> Result<Option<AdminRecord>, StoreError> {
        let txn = self.begin_write().await?;
        let revoked = admin::Entity::update_many()
            .col_expr(admin::Column::RevokedAt, Expr::value(Utc::now()))
            .filter(admin::Column::Name.eq(name))
            .filter(admin::Column::RevokedAt.is_null())
            .exec(&txn)
            .await?;
        if revoked.rows_affected == 0 {
            return Ok(None);
        }
        let row = admin::Entity::find()
            .filter(admin::Column::Name.eq(name))
            .one(&txn)
            .await?
            .ok_or(StoreError::NotFound("admin"))?;
        audit::append(&txn, audit.target(format!("admin:{name}"))).await?;
        txn.commit().await?;
        to_record(row).map(Some)
    }

    /// The live admin a presented credential belongs to.
    pub async fn authenticate_admin(
        &self,
        presented: &SecretString,
    ) -> Result<Option<AdminRecord>, StoreError> {
        let presented = presented.expose_secret();
        let Some(prefix) = prefix_of(presented) else {
            return Ok(None);
        };
        let Some(row) = admin::Entity::find()
            .filter(admin::Column::Prefix.eq(prefix))
            .one(self.db())
            .await?
        else {
            return Ok(None);
        };
        if row.revoked_at.is_some()
            || !crate::fingerprint::same(&row.key_hash, &hash_credential(presented))
        {
            return Ok(None);
        }
        to_record(row).map(Some)
    }
}

fn name_taken(name: &AdminName) -> StoreError {
    StoreError::Conflict(format!(
        "an admin named `{}` exists (names are never reused)",
        name.as_str()
    ))
}

fn to_record(row: admin::Model) -> Result<AdminRecord, StoreError> {
    Ok(AdminRecord {
        role: row
            .role
            .parse()
            .map_err(|_| StoreError::Corrupt(format!("admin {}: role", row.name)))?,
        id: row.id,
        name: row.name,
        prefix: row.prefix,
        created_by: row.created_by,
        created_at: row.created_at,
        revoked_at: row.revoked_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_plain_and_bounded() {
        assert!(AdminName::parse("alice").is_ok());
        assert!(AdminName::parse("ops.bob-2").is_ok());
        for bad in ["", "Alice", "-alice", "a b", "ålice", &"a".repeat(65)] {
            assert!(AdminName::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn roles_read_as_they_are_written() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
        }
        assert!("root".parse::<Role>().is_err());
    }

    #[test]
    fn only_credentials_of_the_right_shape_are_admin_credentials() {
        let credential = format!("fsa_{}_{}", "a".repeat(8), "b".repeat(40));
        assert!(is_admin_credential(&credential));
        assert!(!is_admin_credential("fsa_short_x"));
        assert!(!is_admin_credential("a-long-break-glass-token"));
    }
}
