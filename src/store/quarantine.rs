//! Quarantine: records a connector refused, kept redacted with the reason, one entry
//! per (connection, endpoint, record). A record refused again is seen again; an
//! open entry whose record a successful sync no longer refuses is resolved.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder,
    QuerySelect, Set,
};
use serde_json::Value;

use super::entities::quarantined_record;
use super::records::lock_connected;
use super::{ConnectionRecord, Store, StoreError};
use crate::domain::ConnectionId;

/// Most entries one listing returns, newest seen first.
const LIST_LIMIT: u64 = 1000;

/// How an entry stopped being open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    /// A later sync mapped and stored the record.
    Mapped,
    /// The institution no longer sends the record.
    Gone,
}

impl Resolution {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Mapped => "mapped",
            Self::Gone => "gone",
        }
    }
}

/// One record refused by this run, already redacted.
#[derive(Debug, Clone, Copy)]
pub struct Refusal<'a> {
    pub endpoint: &'a str,
    pub key: &'a str,
    pub reason: &'a str,
    pub record: &'a Value,
}

/// One quarantine entry, as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct QuarantineEntry {
    pub id: String,
    pub connection_id: String,
    pub institution_id: String,
    pub endpoint: String,
    pub record_key: String,
    pub reason: String,
    pub record: Value,
    pub connector_hash: String,
    pub first_seen_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    pub times_seen: i32,
    pub resolved_at: Option<DateTime<Utc>>,
    pub resolution: Option<String>,
}

/// Which entries a listing wants.
#[derive(Debug, Clone, Default)]
pub struct QuarantineFilter {
    pub institution: Option<String>,
    /// `Some(true)`: open only; `Some(false)`: resolved only.
    pub open: Option<bool>,
    /// Newest seen first, from after this entry.
    pub after: Option<QuarantinePosition>,
    /// At most this many (a thousand without).
    pub limit: Option<u64>,
}

/// Where a page of entries (newest seen first) resumes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct QuarantinePosition {
    pub last_seen_at: DateTime<Utc>,
    pub id: String,
}

impl QuarantineEntry {
    pub fn position(&self) -> QuarantinePosition {
        QuarantinePosition {
            last_seen_at: self.last_seen_at,
            id: self.id.clone(),
        }
    }
}

impl Store {
    /// Records what one successful sync refused, and resolves the connection's open
    /// entries it did not refuse again, as `resolution` says for each (endpoint,
    /// key); `None` leaves the entry open. One transaction: a reader sees the run's quarantine whole.
    /// [`StoreError::Disconnected`], writing nothing, if the connection was
    /// disconnected.
    pub async fn record_quarantine(
        &self,
        connection: &ConnectionRecord,
        connector_hash: &str,
        refused: &[Refusal<'_>],
        resolution: impl Fn(&str, &str) -> Option<Resolution>,
    ) -> Result<(), StoreError> {
        let conn = connection.id.to_string();
        let now = Utc::now();
        // The common case, a clean run with nothing open, writes nothing.
        if refused.is_empty()
            && quarantined_record::Entity::find()
                .filter(quarantined_record::Column::ConnectionId.eq(&conn))
                .filter(quarantined_record::Column::ResolvedAt.is_null())
                .one(self.db())
                .await?
                .is_none()
        {
            return Ok(());
        }
        let txn = self.begin_write().await?;
        // A disconnect deleted the connection's quarantine: it stays deleted.
        lock_connected(&txn, &conn).await?;
        let mut stored: BTreeMap<(String, String), quarantined_record::Model> =
            quarantined_record::Entity::find()
                .filter(quarantined_record::Column::ConnectionId.eq(&conn))
                .all(&txn)
                .await?
                .into_iter()
                .map(|row| ((row.endpoint.clone(), row.record_key.clone()), row))
                .collect();
        let mut seen = HashSet::new();
        for refusal in refused {
            let id = (refusal.endpoint.to_owned(), refusal.key.to_owned());
            // The same record twice in one fetch is one refusal.
            if !seen.insert(id.clone()) {
                continue;
            }
            let record = refusal.record.to_string();
            match stored.remove(&id) {
                Some(row) => {
                    let times_seen = row.times_seen.saturating_add(1);
                    let mut row: quarantined_record::ActiveModel = row.into();
                    row.reason = Set(refusal.reason.to_owned());
                    row.redacted_record = Set(record);
                    row.connector_hash = Set(connector_hash.to_owned());
                    row.last_seen_at = Set(now);
                    row.times_seen = Set(times_seen);
                    row.resolved_at = Set(None);
                    row.resolution = Set(None);
                    row.update(&txn).await?;
                }
                None => {
                    quarantined_record::ActiveModel {
                        id: Set(uuid::Uuid::new_v4().to_string()),
                        connection_id: Set(conn.clone()),
                        institution_id: Set(connection.institution_id.clone()),
                        endpoint: Set(id.0),
                        record_key: Set(id.1),
                        reason: Set(refusal.reason.to_owned()),
                        redacted_record: Set(record),
                        connector_hash: Set(connector_hash.to_owned()),
                        first_seen_at: Set(now),
                        last_seen_at: Set(now),
                        times_seen: Set(1),
                        resolved_at: Set(None),
                        resolution: Set(None),
                    }
                    .insert(&txn)
                    .await?;
                }
            }
        }
        for ((endpoint, key), row) in stored {
            if row.resolved_at.is_some() {
                continue;
            }
            let Some(resolved) = resolution(&endpoint, &key) else {
                continue;
            };
            let mut row: quarantined_record::ActiveModel = row.into();
            row.resolved_at = Set(Some(now));
            row.resolution = Set(Some(resolved.as_str().to_owned()));
            row.update(&txn).await?;
        }
        txn.commit().await?;
        Ok(())
    }

    /// Quarantine entries, newest seen first, from after `filter.after`: `filter.limit` of them, or a thousand (`LIST_LIMIT`).
    pub async fn quarantine(
        &self,
        filter: &QuarantineFilter,
    ) -> Result<Vec<QuarantineEntry>, StoreError> {
        let mut query = quarantined_record::Entity::find();
        if let Some(institution) = &filter.institution {
            query = query.filter(quarantined_record::Column::InstitutionId.eq(institution));
        }
        query = match filter.open {
            Some(true) => query.filter(quarantined_record::Column::ResolvedAt.is_null()),
            Some(false) => query.filter(quarantined_record::Column::ResolvedAt.is_not_null()),
            None => query,
        };
        if let Some(after) = &filter.after {
            query = query.filter(
                Condition::any()
                    .add(quarantined_record::Column::LastSeenAt.lt(after.last_seen_at))
                    .add(
                        Condition::all()
                            .add(quarantined_record::Column::LastSeenAt.eq(after.last_seen_at))
                            .add(quarantined_record::Column::Id.gt(after.id.clone())),
                    ),
            );
        }
        query
            .order_by_desc(quarantined_record::Column::LastSeenAt)
            .order_by_asc(quarantined_record::Column::Id)
            .limit(filter.limit.unwrap_or(LIST_LIMIT))
            .all(self.db())
            .await?
            .into_iter()
            .map(entry)
            .collect()
    }

    /// Deletes entries resolved before `before` (a replay mapped them, or the
    /// institution no longer sends them), in batches; open ones stay whatever
    /// their age.
    pub async fn purge_resolved_quarantine(
        &self,
        before: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        self.delete_in_batches::<quarantined_record::Entity>(
            quarantined_record::Column::Id,
            Condition::all().add(quarantined_record::Column::ResolvedAt.lt(before)),
        )
        .await
    }

    /// How many entries are open, across the fleet.
    pub async fn open_quarantine_count(&self) -> Result<u64, StoreError> {
        Ok(quarantined_record::Entity::find()
            .filter(quarantined_record::Column::ResolvedAt.is_null())
            .count(self.db())
            .await?)
    }

    /// Connections with open entries (of one institution's connector, if given),
    /// with how many each has.
    pub async fn open_quarantine_by_connection(
        &self,
        institution: Option<&str>,
    ) -> Result<Vec<(ConnectionId, String, u64)>, StoreError> {
        let mut query = quarantined_record::Entity::find()
            .filter(quarantined_record::Column::ResolvedAt.is_null());
        if let Some(institution) = institution {
            query = query.filter(quarantined_record::Column::InstitutionId.eq(institution));
        }
        let mut counts: BTreeMap<(String, String), u64> = BTreeMap::new();
        for row in query.all(self.db()).await? {
            *counts
                .entry((row.connection_id, row.institution_id))
                .or_default() += 1;
        }
        counts
            .into_iter()
            .map(|((connection, institution), open)| {
                let id = connection
                    .parse()
                    .map_err(|_| StoreError::Corrupt(format!("connection id {connection}")))?;
                Ok((id, institution, open))
            })
            .collect()
    }
}

fn entry(row: quarantined_record::Model) -> Result<QuarantineEntry, StoreError> {
    let record = serde_json::from_str(&row.redacted_record)
        .map_err(|e| StoreError::Corrupt(format!("quarantined record {}: {e}", row.id)))?;
    Ok(QuarantineEntry {
        id: row.id,
        connection_id: row.connection_id,
        institution_id: row.institution_id,
        endpoint: row.endpoint,
        record_key: row.record_key,
        reason: row.reason,
        record,
        connector_hash: row.connector_hash,
        first_seen_at: row.first_seen_at,
        last_seen_at: row.last_seen_at,
        times_seen: row.times_seen,
        resolved_at: row.resolved_at,
        resolution: row.resolution,
    })
}
