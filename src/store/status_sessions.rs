//! The status page's sign-ins, kept in the database so that signing out ends a
//! session everywhere, even for a copy of its cookie. The cookie holds a random
//! token; only its SHA-256 is stored.

use chrono::{DateTime, Utc};
use rand::RngExt;
use sea_orm::sea_query::Expr;
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, Set};
use secrecy::{ExposeSecret, SecretString};

use super::entities::status_session;
use super::{Store, StoreError};

/// A live sign-in: who, and with which credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusSession {
    pub actor: String,
    pub binding: String,
    pub expires_at: DateTime<Utc>,
}

fn hash(token: &str) -> String {
    crate::fingerprint::sha256_hex(token.as_bytes())
}

impl Store {
    /// Opens a session for `actor` (signed in with the credential `binding` names)
    /// until `expires_at`; returns the cookie's token.
    pub async fn open_status_session(
        &self,
        actor: &str,
        binding: &str,
        expires_at: DateTime<Utc>,
    ) -> Result<SecretString, StoreError> {
        let bytes: [u8; 32] = rand::rng().random();
        let token = hex::encode(bytes);
        status_session::ActiveModel {
            token_hash: Set(hash(&token)),
            actor: Set(actor.to_owned()),
            binding: Set(binding.to_owned()),
            created_at: Set(Utc::now()),
            expires_at: Set(expires_at),
            ended_at: Set(None),
        }
        .insert(self.db())
        .await?;
        Ok(SecretString::from(token))
    }

    /// The live session `token` opens: not signed out, not expired.
    pub async fn status_session(&self, token: &str) -> Result<Option<StatusSession>, StoreError> {
        Ok(status_session::Entity::find_by_id(hash(token))
            .filter(status_session::Column::EndedAt.is_null())
            .filter(status_session::Column::ExpiresAt.gt(Utc::now()))
            .one(self.db())
            .await?
            .map(|row| StatusSession {
                actor: row.actor,
                binding: row.binding,
                expires_at: row.expires_at,
            }))
    }

    /// Signs the session out, wherever its cookie is.
    pub async fn end_status_session(&self, token: &SecretString) -> Result<(), StoreError> {
        status_session::Entity::update_many()
            .col_expr(status_session::Column::EndedAt, Expr::value(Utc::now()))
            .filter(status_session::Column::TokenHash.eq(hash(token.expose_secret())))
            .exec(self.db())
            .await?;
        Ok(())
    }

    /// Deletes sessions that expired before `before` (signed-out ones included:
    /// they expire too).
    pub async fn purge_status_sessions(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        Ok(status_session::Entity::delete_many()
            .filter(status_session::Column::ExpiresAt.lt(before))
            .exec(self.db())
            .await?
            .rows_affected)
    }
}
