//! The audit trail: an append-only, hash-chained record of who did what to what.
//!
//! Each entry's hash covers its own fields and the hash of the entry before it,
//! so an entry edited, deleted or moved in the database breaks the chain at that
//! entry, and [`Store::verify_audit`] names it. Entries are appended inside the
//! transaction of the change they record ([`append`]), always as that
//! transaction's last statement: on PostgreSQL the append takes a transaction-scoped
//! advisory lock to number the entry, and holding no row lock after taking it is
//! what keeps two audited transactions from waiting on each other. On SQLite every
//! writing transaction already holds the database's one write lock.
//!
//! What an entry may hold: ids, names of admins, key prefixes, and the change's
//! shape (a role, a count, a reason code); never a token, a credential, nor a
//! user's personal data (a user is named by a keyed hash where an entry must outlive
//! the user).

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, SecondsFormat, SubsecRound, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseTransaction, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect, Set,
};
use serde::{Deserialize, Serialize};

use super::entities::audit_entry;
use super::{Store, StoreError};

/// Advisory lock key that numbers audit entries one at a time ("fsaudit\0").
const AUDIT_LOCK: i64 = 0x6673_6175_6469_7400;

/// The hash the first entry follows.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Entries read per query when walking or exporting the trail, and deleted per
/// transaction by retention.
const AUDIT_BATCH: u64 = 1000;

/// The action of the entry a retention purge leaves.
const PURGED: &str = "audit.purged";

/// Who acted, as the trail names them: `admin:<name>`, `break-glass` (the
/// configured `server.admin_token`), `key:<prefix>` (a tenant's API key), `cli`
/// (a command run on a host with the database's credentials), `system` (finsync
/// itself: expiries, the scheduler), or `user` (a person in the hosted link page).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor(String);

impl Actor {
    pub fn admin(name: &str) -> Self {
        Self(format!("admin:{name}"))
    }
    pub fn break_glass() -> Self {
        Self("break-glass".to_owned())
    }
    pub fn key(prefix: &str) -> Self {
        Self(format!("key:{prefix}"))
    }
    pub fn cli() -> Self {
        Self("cli".to_owned())
    }
    pub fn system() -> Self {
        Self("system".to_owned())
    }
    pub fn user() -> Self {
        Self("user".to_owned())
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How the recorded attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Done.
    Ok,
    /// Refused: the actor's role does not allow it.
    Denied,
    /// Attempted and not done (bad request, not found, an error).
    Failed,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Denied => "denied",
            Self::Failed => "failed",
        }
    }
}

impl FromStr for Outcome {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "ok" => Ok(Self::Ok),
            "denied" => Ok(Self::Denied),
            "failed" => Ok(Self::Failed),
            other => Err(format!("unknown outcome `{other}`")),
        }
    }
}

/// An entry about to be appended.
#[derive(Debug, Clone)]
pub struct AuditEntry {
    actor: Actor,
    action: String,
    target: Option<String>,
    outcome: Outcome,
    request_id: Option<String>,
    detail: Option<serde_json::Value>,
}

impl AuditEntry {
    /// `actor` did `action` (a dotted name such as `tenant.create`, or an admin API
    /// operation's id), successfully unless told otherwise.
    pub fn new(actor: Actor, action: impl Into<String>) -> Self {
        Self {
            actor,
            action: action.into(),
            target: None,
            outcome: Outcome::Ok,
            request_id: None,
            detail: None,
        }
    }

    /// What was acted on, as `kind:id` (`tenant:…`, `connection:…`).
    pub fn target(mut self, target: impl Into<String>) -> Self {
        self.target = Some(target.into());
        self
    }

    pub fn outcome(mut self, outcome: Outcome) -> Self {
        self.outcome = outcome;
        self
    }

    pub fn request_id(mut self, id: Option<String>) -> Self {
        self.request_id = id;
        self
    }

    /// The change's shape: ids, counts, codes; never a secret or personal data.
    /// Objects given one after the other are merged, the later's keys winning.
    pub fn detail(mut self, detail: serde_json::Value) -> Self {
        self.detail = Some(match (self.detail.take(), detail) {
            (Some(serde_json::Value::Object(mut before)), serde_json::Value::Object(after)) => {
                before.extend(after);
                serde_json::Value::Object(before)
            }
            (_, detail) => detail,
        });
        self
    }

    pub fn action(&self) -> &str {
        &self.action
    }

    pub fn actor(&self) -> &Actor {
        &self.actor
    }
}

/// An entry as the trail holds it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditRecord {
    /// Position in the trail, from 1 without gaps.
    pub seq: i64,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub action: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    pub outcome: Outcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<serde_json::Value>,
    /// SHA-256 of this entry and the one before it (hex).
    pub hash: String,
}

/// Which entries to read; every field narrows, exactly.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub actor: Option<String>,
    pub action: Option<String>,
    pub target: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
}

/// What walking the chain found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verification {
    /// Entries up to this one were deleted by retention, as an `audit.purged` entry
    /// records; the walk starts after it.
    pub purged_through: Option<i64>,
    /// Entries that checked out before the first break (all of them when none).
    pub verified: u64,
    /// The last entry checked, `(seq, hash)`.
    pub head: Option<(i64, String)>,
    pub broken: Option<Break>,
}

/// The first entry where the chain does not hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Break {
    pub seq: i64,
    pub reason: String,
}

/// What an `audit.purged` entry's seal covers.
fn anchor(through: i64, hash: &str) -> String {
    format!("audit-purged:{through}:{hash}")
}

/// The hash of an entry: SHA-256 over its fields, as stored, and the hash before
/// it, serialised as one JSON array (so no field's text can run into another's).
fn entry_hash(row: &audit_entry::Model) -> String {
    let fields = serde_json::json!([
        row.seq,
        row.at.to_rfc3339_opts(SecondsFormat::Micros, true),
        row.actor,
        row.action,
        row.target,
        row.outcome,
        row.request_id,
        row.detail,
        row.prev_hash,
    ]);
    crate::fingerprint::sha256_hex(fields.to_string().as_bytes())
}

/// Appends `entry` inside `txn`: call it as the transaction's last statement, so the
/// entry commits or rolls back with the change it records.
pub async fn append(
    txn: &DatabaseTransaction,
    entry: AuditEntry,
) -> Result<AuditRecord, StoreError> {
    if txn.get_database_backend() == sea_orm::DbBackend::Postgres {
        txn.execute_unprepared(&format!("SELECT pg_advisory_xact_lock({AUDIT_LOCK})"))
            .await?;
    }
    let head = audit_entry::Entity::find()
        .order_by_desc(audit_entry::Column::Seq)
        .one(txn)
        .await?;
    let (seq, prev_hash) = head.map_or((1, GENESIS.to_owned()), |h| (h.seq + 1, h.hash));
    let mut row = audit_entry::Model {
        seq,
        // Microseconds: what both databases keep, so the hash survives the trip.
        at: Utc::now().trunc_subsecs(6),
        actor: entry.actor.0,
        action: entry.action,
        target: entry.target,
        outcome: entry.outcome.as_str().to_owned(),
        request_id: entry.request_id,
        detail: entry.detail.map(|d| d.to_string()),
        prev_hash,
        hash: String::new(),
    };
    row.hash = entry_hash(&row);
    let stored = audit_entry::ActiveModel {
        seq: Set(row.seq),
        at: Set(row.at),
        actor: Set(row.actor),
        action: Set(row.action),
        target: Set(row.target),
        outcome: Set(row.outcome),
        request_id: Set(row.request_id),
        detail: Set(row.detail),
        prev_hash: Set(row.prev_hash),
        hash: Set(row.hash),
    }
    .insert(txn)
    .await?;
    to_record(stored)
}

fn to_record(row: audit_entry::Model) -> Result<AuditRecord, StoreError> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("audit entry {}: {what}", row.seq));
    Ok(AuditRecord {
        seq: row.seq,
        at: row.at,
        outcome: row.outcome.parse().map_err(|_| corrupt("outcome"))?,
        detail: row
            .detail
            .as_deref()
            .map(serde_json::from_str)
            .transpose()
            .map_err(|_| corrupt("detail"))?,
        actor: row.actor,
        action: row.action,
        target: row.target,
        request_id: row.request_id,
        hash: row.hash,
    })
}

impl Store {
    /// Appends one entry in a transaction of its own: for what changes nothing in
    /// the database (a read, a refusal) or what changed elsewhere.
    pub async fn record(&self, entry: AuditEntry) -> Result<AuditRecord, StoreError> {
        let txn = self.begin_write().await?;
        let record = append(&txn, entry).await?;
        txn.commit().await?;
        Ok(record)
    }

    /// Entries that `filter` selects, after `after` (a `seq`), oldest first.
    pub async fn audit_entries(
        &self,
        filter: &AuditFilter,
        after: Option<i64>,
        limit: u64,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let mut query = audit_entry::Entity::find().order_by_asc(audit_entry::Column::Seq);
        if let Some(after) = after {
            query = query.filter(audit_entry::Column::Seq.gt(after));
        }
        if let Some(actor) = &filter.actor {
            query = query.filter(audit_entry::Column::Actor.eq(actor));
        }
        if let Some(action) = &filter.action {
            query = query.filter(audit_entry::Column::Action.eq(action));
        }
        if let Some(target) = &filter.target {
            query = query.filter(audit_entry::Column::Target.eq(target));
        }
        if let Some(since) = filter.since {
            query = query.filter(audit_entry::Column::At.gte(since));
        }
        if let Some(until) = filter.until {
            query = query.filter(audit_entry::Column::At.lt(until));
        }
        query
            .limit(limit)
            .all(self.db())
            .await?
            .into_iter()
            .map(to_record)
            .collect()
    }

    /// Whether an `audit.purged` entry says entries up to `through` were deleted, the
    /// last of them with hash `hash`, sealed as `sealed_by` confirms.
    async fn purge_recorded(
        &self,
        through: i64,
        hash: &str,
        sealed_by: &(dyn Fn(&str, &str) -> bool + Sync),
    ) -> Result<bool, StoreError> {
        let purges = audit_entry::Entity::find()
            .filter(audit_entry::Column::Action.eq(PURGED))
            .filter(audit_entry::Column::Actor.eq(Actor::system().as_str()))
            .all(self.db())
            .await?;
        Ok(purges.iter().any(|purge| {
            purge
                .detail
                .as_deref()
                .and_then(|d| serde_json::from_str::<serde_json::Value>(d).ok())
                .is_some_and(|d| {
                    d["through_seq"] == through
                        && d["through_hash"] == hash
                        && d["seal"]
                            .as_str()
                            .is_some_and(|seal| sealed_by(&anchor(through, hash), seal))
                })
        }))
    }

    /// Deletes the oldest entries appended before `before`, from the start of the
    /// trail and in order only, a batch per transaction; each batch appends an
    /// `audit.purged` entry naming the last entry it deleted and its hash, sealed
    /// with `seal` (a keyed hash the database alone cannot make), so the trail still
    /// says where it starts and [`Self::verify_audit`] checks it whole. A batch
    /// whose chain does not hold is not deleted: what is broken stays to be seen.
    pub async fn purge_audit(
        &self,
        before: DateTime<Utc>,
        seal: &(dyn Fn(&str) -> Option<String> + Sync),
    ) -> Result<u64, StoreError> {
        let mut deleted = 0;
        loop {
            let txn = self.begin_write().await?;
            let oldest = audit_entry::Entity::find()
                .filter(audit_entry::Column::Seq.gte(1))
                .order_by_asc(audit_entry::Column::Seq)
                .limit(AUDIT_BATCH)
                .all(&txn)
                .await?;
            let gone: Vec<_> = oldest.iter().take_while(|e| e.at < before).collect();
            let Some(last) = gone.last() else {
                return Ok(deleted);
            };
            // Only a chain that holds is purged.
            let holds = gone
                .windows(2)
                .all(|pair| pair[1].seq == pair[0].seq + 1 && pair[1].prev_hash == pair[0].hash)
                && gone.iter().all(|e| e.hash == entry_hash(e));
            if !holds {
                return Err(StoreError::Corrupt(
                    "the oldest audit entries do not hold together; they are kept for `finsync audit verify`".into(),
                ));
            }
            let (through, hash, count) = (last.seq, last.hash.clone(), gone.len() as u64);
            audit_entry::Entity::delete_many()
                .filter(audit_entry::Column::Seq.gte(1))
                .filter(audit_entry::Column::Seq.lte(through))
                .exec(&txn)
                .await?;
            let sealed = seal(&anchor(through, &hash)).ok_or_else(|| {
                StoreError::Corrupt("no key to seal the audit trail's new start with".into())
            })?;
            let entry = AuditEntry::new(Actor::system(), PURGED).detail(serde_json::json!({
                "through_seq": through,
                "through_hash": hash,
                "entries": count,
                "seal": sealed,
            }));
            append(&txn, entry).await?;
            txn.commit().await?;
            deleted += count;
            if count < AUDIT_BATCH {
                return Ok(deleted);
            }
        }
    }

    /// Whether an entry for `action` under `request_id` was appended since `since`.
    pub async fn audit_recorded(
        &self,
        request_id: &str,
        action: &str,
        since: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        Ok(audit_entry::Entity::find()
            .filter(audit_entry::Column::RequestId.eq(request_id))
            .filter(audit_entry::Column::Action.eq(action))
            .filter(audit_entry::Column::At.gte(since))
            .one(self.db())
            .await?
            .is_some())
    }

    /// The newest entry's `(seq, hash)`, to be logged and compared later: an
    /// entry appended after a logged head can be deleted without breaking the
    /// chain, but not without the trail falling short of that head.
    pub async fn audit_head(&self) -> Result<Option<(i64, String)>, StoreError> {
        Ok(audit_entry::Entity::find()
            .order_by_desc(audit_entry::Column::Seq)
            .one(self.db())
            .await?
            .map(|row| (row.seq, row.hash)))
    }

    /// Walks the whole trail from the first entry and reports the first one that
    /// does not hold: a gap in the numbering (deleted or moved), a hash that does
    /// not match the entry's fields (edited), or a link to a different previous
    /// hash (replaced or reordered). With `expect`, also checks that the trail
    /// still reaches that `(seq, hash)`, as a logged head said it did. A trail
    /// that starts after entry 1 must say why in an `audit.purged` entry whose seal
    /// `sealed_by(value, seal)` confirms.
    pub async fn verify_audit(
        &self,
        expect: Option<(i64, &str)>,
        sealed_by: &(dyn Fn(&str, &str) -> bool + Sync),
    ) -> Result<Verification, StoreError> {
        let mut verified = 0;
        let break_at = |seq, reason: String| Some(Break { seq, reason });
        // Where the walk starts: entry 1, or after the entries retention deleted,
        // which the trail itself must have recorded.
        let first = audit_entry::Entity::find()
            .filter(audit_entry::Column::Seq.gte(1))
            .order_by_asc(audit_entry::Column::Seq)
            .one(self.db())
            .await?;
        let mut head: Option<(i64, String)> = None;
        let mut purged_through = None;
        if let Some(first) = first.filter(|f| f.seq > 1) {
            let through = first.seq - 1;
            if self
                .purge_recorded(through, &first.prev_hash, sealed_by)
                .await?
            {
                head = Some((through, first.prev_hash.clone()));
                purged_through = Some(through);
            } else {
                return Ok(Verification {
                    purged_through,
                    verified,
                    head,
                    broken: break_at(
                        1,
                        format!(
                            "entries 1 to {through} are missing, and no purge recorded deleting them"
                        ),
                    ),
                });
            }
        }
        loop {
            // From the lowest number there is: a row slipped in below 1 is no entry.
            let after = head.as_ref().map_or(i64::MIN, |(seq, _)| *seq);
            let batch = audit_entry::Entity::find()
                .filter(audit_entry::Column::Seq.gt(after))
                .order_by_asc(audit_entry::Column::Seq)
                .limit(AUDIT_BATCH)
                .all(self.db())
                .await?;
            if batch.is_empty() {
                break;
            }
            for row in batch {
                let (expected_seq, expected_prev) = head
                    .as_ref()
                    .map_or((1, GENESIS), |(seq, hash)| (seq + 1, hash.as_str()));
                let reason = if row.seq < 1 {
                    Some((
                        row.seq,
                        format!(
                            "entry {} is outside the trail's numbering, which starts at 1",
                            row.seq
                        ),
                    ))
                } else if row.seq != expected_seq {
                    Some((
                        expected_seq,
                        format!(
                            "entry {expected_seq} is missing: the next one is {}",
                            row.seq
                        ),
                    ))
                } else if row.hash != entry_hash(&row) {
                    Some((
                        row.seq,
                        format!(
                            "entry {} was altered: its hash does not match its fields",
                            row.seq
                        ),
                    ))
                } else if row.prev_hash != expected_prev {
                    Some((
                        row.seq,
                        format!(
                            "entry {} does not follow entry {}: it names another previous hash",
                            row.seq,
                            row.seq - 1
                        ),
                    ))
                } else {
                    None
                };
                if let Some((seq, reason)) = reason {
                    return Ok(Verification {
                        purged_through,
                        verified,
                        head,
                        broken: break_at(seq, reason),
                    });
                }
                verified += 1;
                head = Some((row.seq, row.hash));
            }
        }
        let broken = match (expect, &head) {
            (None, _) => None,
            (Some((seq, hash)), Some((last, _))) if *last >= seq => {
                let row = audit_entry::Entity::find_by_id(seq).one(self.db()).await?;
                if row.is_some_and(|row| row.hash == hash) {
                    None
                } else {
                    break_at(seq, format!("entry {seq} is not the expected head {hash}"))
                }
            }
            (Some((seq, _)), Some((last, _))) => break_at(
                last + 1,
                format!("the trail ends at entry {last}, short of the expected head {seq}"),
            ),
            (Some((seq, _)), None) => break_at(
                1,
                format!("the trail is empty, short of the expected head {seq}"),
            ),
        };
        Ok(Verification {
            purged_through,
            verified,
            head,
            broken,
        })
    }
}
