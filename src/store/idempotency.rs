//! Idempotency keys of the tenant API: a `POST` sent again with the same key gets
//! the answer the first one got, never a second effect (Stripe's semantics). A key
//! is claimed before its request runs, so two requests with one key never both run;
//! the answer is stored when the request ends. Keys live a day.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, Condition, EntityTrait, QueryFilter, Set, TryInsertResult};

use super::entities::idempotency_key;
use super::{Store, StoreError};
use crate::domain::TenantId;

/// How long a key is remembered.
pub const IDEMPOTENCY_KEY_TTL: chrono::Duration = chrono::Duration::hours(24);
/// A claim this old with no answer belongs to a process that stopped: the key may
/// be used again. Longer than any request of the tenant API takes.
const ABANDONED_AFTER: chrono::Duration = chrono::Duration::minutes(2);

/// An answer kept for replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAnswer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    /// The body as vault ciphertext (it may carry a secret shown once).
    pub body: Vec<u8>,
}

/// What claiming a key found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The key is this request's: run it, then store or release the answer.
    Fresh,
    /// Another request with the key is being processed.
    InFlight,
    /// The key was used for another request (method, path or body).
    Mismatch,
    /// The key's request has been answered: this is the answer.
    Answered(StoredAnswer),
}

/// The row id of a tenant's key (the key itself is kept only as its hash).
pub fn key_id(tenant: TenantId, key_hash: &str) -> String {
    format!("{tenant}:{key_hash}")
}

impl Store {
    /// Claims `key` (see [`key_id`]) for a request with `fingerprint`, or says what
    /// holds it. An expired or abandoned claim is taken over.
    pub async fn claim_idempotency_key(
        &self,
        tenant: TenantId,
        key: &str,
        owner: &str,
        fingerprint: &str,
        now: DateTime<Utc>,
    ) -> Result<Claim, StoreError> {
        idempotency_key::Entity::delete_many()
            .filter(idempotency_key::Column::Id.eq(key))
            .filter(
                Condition::any()
                    .add(idempotency_key::Column::CreatedAt.lt(now - IDEMPOTENCY_KEY_TTL))
                    .add(
                        Condition::all()
                            .add(idempotency_key::Column::FinishedAt.is_null())
                            .add(idempotency_key::Column::CreatedAt.lt(now - ABANDONED_AFTER)),
                    ),
            )
            .exec(self.db())
            .await?;
        let row = idempotency_key::ActiveModel {
            id: Set(key.to_owned()),
            tenant_id: Set(tenant.to_string()),
            owner: Set(owner.to_owned()),
            fingerprint: Set(fingerprint.to_owned()),
            created_at: Set(now),
            finished_at: Set(None),
            status: Set(None),
            headers: Set(None),
            body: Set(None),
        };
        let inserted = idempotency_key::Entity::insert(row)
            .on_conflict_do_nothing_on([idempotency_key::Column::Id])
            .exec_without_returning(self.db())
            .await?;
        if matches!(inserted, TryInsertResult::Inserted(n) if n > 0) {
            return Ok(Claim::Fresh);
        }
        let Some(held) = idempotency_key::Entity::find_by_id(key.to_owned())
            .one(self.db())
            .await?
        else {
            // Released between the insert and the read: free again, but not to
            // this request, which would race the next one for it.
            return Ok(Claim::InFlight);
        };
        if held.fingerprint != fingerprint {
            return Ok(Claim::Mismatch);
        }
        let (Some(_), Some(status)) = (held.finished_at, held.status) else {
            return Ok(Claim::InFlight);
        };
        let corrupt = || StoreError::Corrupt(format!("idempotency key {}", held.id));
        Ok(Claim::Answered(StoredAnswer {
            status: u16::try_from(status).map_err(|_| corrupt())?,
            headers: match held.headers.as_deref() {
                Some(text) => serde_json::from_str(text).map_err(|_| corrupt())?,
                None => Vec::new(),
            },
            body: held.body.unwrap_or_default(),
        }))
    }

    /// Stores the answer to the request that claimed `key` as `owner` (a claim taken
    /// over since is left alone).
    pub async fn answer_idempotency_key(
        &self,
        key: &str,
        owner: &str,
        answer: &StoredAnswer,
    ) -> Result<(), StoreError> {
        idempotency_key::Entity::update_many()
            .col_expr(idempotency_key::Column::FinishedAt, Expr::value(Utc::now()))
            .col_expr(
                idempotency_key::Column::Status,
                Expr::value(i32::from(answer.status)),
            )
            .col_expr(
                idempotency_key::Column::Headers,
                Expr::value(serde_json::to_string(&answer.headers).ok()),
            )
            .col_expr(
                idempotency_key::Column::Body,
                Expr::value(answer.body.clone()),
            )
            .filter(idempotency_key::Column::Id.eq(key))
            .filter(idempotency_key::Column::Owner.eq(owner))
            .exec(self.db())
            .await?;
        Ok(())
    }

    /// Frees `key`, claimed as `owner`, without an answer, so the request may be
    /// sent again with it.
    pub async fn release_idempotency_key(&self, key: &str, owner: &str) -> Result<(), StoreError> {
        idempotency_key::Entity::delete_many()
            .filter(idempotency_key::Column::Id.eq(key))
            .filter(idempotency_key::Column::Owner.eq(owner))
            .exec(self.db())
            .await?;
        Ok(())
    }

    /// Answers kept for replay, as (key id, sealed body), for re-sealing under a
    /// new vault key.
    pub async fn sealed_idempotent_answers(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        Ok(idempotency_key::Entity::find()
            .filter(idempotency_key::Column::Body.is_not_null())
            .all(self.db())
            .await?
            .into_iter()
            .filter_map(|row| Some((row.id, row.body?)))
            .collect())
    }

    /// Replaces a kept answer's ciphertext if it is still `old`.
    pub async fn reseal_idempotent_answer(
        &self,
        key: &str,
        old: &[u8],
        new: Vec<u8>,
    ) -> Result<bool, StoreError> {
        let updated = idempotency_key::Entity::update_many()
            .col_expr(idempotency_key::Column::Body, Expr::value(new))
            .filter(idempotency_key::Column::Id.eq(key))
            .filter(idempotency_key::Column::Body.eq(old.to_vec()))
            .exec(self.db())
            .await?;
        Ok(updated.rows_affected == 1)
    }

    /// Deletes keys made before `before`.
    pub async fn purge_idempotency_keys(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        Ok(idempotency_key::Entity::delete_many()
            .filter(idempotency_key::Column::CreatedAt.lt(before))
            .exec(self.db())
            .await?
            .rows_affected)
    }
}
