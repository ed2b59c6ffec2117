//! Webhook events from institutions: each kept once, by (institution, the
//! institution's event id), however often it is delivered, with what was done about
//! it; and the lookup of the connections an event's accounts belong to.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait, EntityTrait, ExprTrait, QueryFilter, QueryOrder, QuerySelect, Set, TryInsertResult,
};

use super::entities::{account, connection, institution_event};
use super::{ConnectionRecord, Store, StoreError};
use crate::domain::ConnectionId;

/// How long a process that claimed a `received` event may take to act on it before
/// another (a repeat delivery, a replay) may claim it: the first must have stopped.
const CLAIM_LEASE: chrono::Duration = chrono::Duration::seconds(60);

/// What became of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventStatus {
    /// Stored, not yet acted on (the process stopped, or the queue failed, in
    /// between); a repeated delivery or a replay acts on it.
    Received,
    /// A sync of each of its connections was queued for it.
    Queued,
    /// Its connections' syncs were already queued by an earlier event.
    Coalesced,
    /// No connection holds the accounts it names (yet).
    Unmatched,
    /// Its type asks for no sync, or none of its connections is active.
    Ignored,
}

impl EventStatus {
    pub const ALL: [Self; 5] = [
        Self::Received,
        Self::Queued,
        Self::Coalesced,
        Self::Unmatched,
        Self::Ignored,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Received => "received",
            Self::Queued => "queued",
            Self::Coalesced => "coalesced",
            Self::Unmatched => "unmatched",
            Self::Ignored => "ignored",
        }
    }
}

impl std::fmt::Display for EventStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EventStatus {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|s| s.as_str() == text)
            .ok_or_else(|| {
                format!("`{text}` is not an event status: received, queued, coalesced, unmatched or ignored")
            })
    }
}

/// An event as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstitutionEvent {
    pub id: String,
    pub institution_id: String,
    pub event_id: String,
    pub event_type: Option<String>,
    pub sent_at: DateTime<Utc>,
    pub received_at: DateTime<Utc>,
    /// The body as received; its signature was verified.
    pub body: String,
    pub status: EventStatus,
    /// The connections it asked to sync.
    pub connections: Vec<ConnectionId>,
    /// Why it synced nothing, when it did not.
    pub detail: Option<String>,
    pub processed_at: Option<DateTime<Utc>>,
    /// How many times the institution delivered it.
    pub deliveries: i32,
    /// How many times an operator replayed it.
    pub replays: i32,
}

/// An event about to be stored.
#[derive(Debug, Clone, Copy)]
pub struct NewEvent<'a> {
    pub institution_id: &'a str,
    pub event_id: &'a str,
    pub event_type: Option<&'a str>,
    pub sent_at: DateTime<Utc>,
    pub body: &'a str,
}

/// Where a page of events (newest first) resumes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EventPosition {
    pub received_at: DateTime<Utc>,
    pub id: String,
}

impl InstitutionEvent {
    pub fn position(&self) -> EventPosition {
        EventPosition {
            received_at: self.received_at,
            id: self.id.clone(),
        }
    }
}

/// Which events a listing or a replay wants; every field narrows it.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub institution: Option<String>,
    pub statuses: Vec<EventStatus>,
    pub since: Option<DateTime<Utc>>,
    /// One event, by finsync's id or the institution's.
    pub event: Option<String>,
}

impl Store {
    /// Stores an event unless the institution delivered it before, and returns it
    /// as stored; a repeat only counts the delivery.
    pub async fn record_event(&self, new: NewEvent<'_>) -> Result<InstitutionEvent, StoreError> {
        let row = institution_event::ActiveModel {
            id: Set(uuid::Uuid::new_v4().to_string()),
            institution_id: Set(new.institution_id.to_owned()),
            event_id: Set(new.event_id.to_owned()),
            event_type: Set(new.event_type.map(str::to_owned)),
            sent_at: Set(new.sent_at),
            received_at: Set(Utc::now()),
            body: Set(new.body.to_owned()),
            status: Set(EventStatus::Received.as_str().to_owned()),
            connections: Set("[]".into()),
            detail: Set(None),
            processed_at: Set(None),
            deliveries: Set(1),
            replays: Set(0),
        };
        // The unique index decides between two receivers of the same event.
        let inserted = institution_event::Entity::insert(row)
            .on_conflict_do_nothing_on([
                institution_event::Column::InstitutionId,
                institution_event::Column::EventId,
            ])
            .exec_without_returning(self.db())
            .await?;
        if !matches!(inserted, TryInsertResult::Inserted(n) if n > 0) {
            institution_event::Entity::update_many()
                .col_expr(
                    institution_event::Column::Deliveries,
                    Expr::col(institution_event::Column::Deliveries).add(1),
                )
                .filter(institution_event::Column::InstitutionId.eq(new.institution_id))
                .filter(institution_event::Column::EventId.eq(new.event_id))
                .exec(self.db())
                .await?;
        }
        let stored = institution_event::Entity::find()
            .filter(institution_event::Column::InstitutionId.eq(new.institution_id))
            .filter(institution_event::Column::EventId.eq(new.event_id))
            .one(self.db())
            .await?
            .ok_or(StoreError::NotFound("institution event"))?;
        to_event(stored)
    }

    /// Claims a `received` event for acting on it, so that of several deliveries or
    /// replays racing (in any process) exactly one acts. A claim older than a minute
    /// is taken over: its process stopped before it settled the event.
    pub async fn claim_event(&self, id: &str) -> Result<bool, StoreError> {
        let now = Utc::now();
        let claimed = institution_event::Entity::update_many()
            .col_expr(institution_event::Column::ProcessedAt, Expr::value(now))
            .filter(institution_event::Column::Id.eq(id))
            .filter(institution_event::Column::Status.eq(EventStatus::Received.as_str()))
            .filter(
                institution_event::Column::ProcessedAt
                    .is_null()
                    .or(institution_event::Column::ProcessedAt.lt(now - CLAIM_LEASE)),
            )
            .exec(self.db())
            .await?;
        Ok(claimed.rows_affected == 1)
    }

    /// Records what was done about an event.
    pub async fn settle_event(
        &self,
        id: &str,
        status: EventStatus,
        connections: &[ConnectionId],
        detail: Option<&str>,
        replayed: bool,
    ) -> Result<(), StoreError> {
        let connections =
            serde_json::to_string(connections).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let mut update = institution_event::Entity::update_many()
            .col_expr(
                institution_event::Column::Status,
                Expr::value(status.as_str()),
            )
            .col_expr(
                institution_event::Column::Connections,
                Expr::value(connections),
            )
            .col_expr(
                institution_event::Column::Detail,
                Expr::value(detail.map(str::to_owned)),
            )
            .col_expr(
                institution_event::Column::ProcessedAt,
                Expr::value(Utc::now()),
            );
        if replayed {
            update = update.col_expr(
                institution_event::Column::Replays,
                Expr::col(institution_event::Column::Replays).add(1),
            );
        }
        update
            .filter(institution_event::Column::Id.eq(id))
            .exec(self.db())
            .await?;
        Ok(())
    }

    /// Up to `limit` events matching `filter`, newest first, from after `after`.
    pub async fn institution_events(
        &self,
        filter: &EventFilter,
        after: Option<&EventPosition>,
        limit: u64,
    ) -> Result<Vec<InstitutionEvent>, StoreError> {
        use sea_orm::sea_query::Condition;
        let mut query = filtered(filter);
        if let Some(after) = after {
            query = query.filter(
                Condition::any()
                    .add(institution_event::Column::ReceivedAt.lt(after.received_at))
                    .add(
                        Condition::all()
                            .add(institution_event::Column::ReceivedAt.eq(after.received_at))
                            .add(institution_event::Column::Id.gt(after.id.clone())),
                    ),
            );
        }
        query
            .order_by_desc(institution_event::Column::ReceivedAt)
            .order_by_asc(institution_event::Column::Id)
            .limit(limit)
            .all(self.db())
            .await?
            .into_iter()
            .map(to_event)
            .collect()
    }

    /// Up to `limit` events matching `filter` that were received after `after` (an
    /// event's `(received_at, id)`), oldest first: a replay's pages, however many
    /// events there are.
    pub async fn institution_events_after(
        &self,
        filter: &EventFilter,
        after: Option<(DateTime<Utc>, &str)>,
        limit: u64,
    ) -> Result<Vec<InstitutionEvent>, StoreError> {
        use sea_orm::sea_query::Condition;
        let mut query = filtered(filter);
        if let Some((at, id)) = after {
            query = query.filter(
                Condition::any()
                    .add(institution_event::Column::ReceivedAt.gt(at))
                    .add(
                        Condition::all()
                            .add(institution_event::Column::ReceivedAt.eq(at))
                            .add(institution_event::Column::Id.gt(id)),
                    ),
            );
        }
        query
            .order_by_asc(institution_event::Column::ReceivedAt)
            .order_by_asc(institution_event::Column::Id)
            .limit(limit)
            .all(self.db())
            .await?
            .into_iter()
            .map(to_event)
            .collect()
    }

    /// Deletes events received before `before`; returns how many.
    pub async fn purge_events(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        Ok(institution_event::Entity::delete_many()
            .filter(institution_event::Column::ReceivedAt.lt(before))
            .exec(self.db())
            .await?
            .rows_affected)
    }

    /// The connections at `institution` that hold any of the accounts (by the
    /// institution's ids), whatever their status.
    pub async fn connections_with_accounts(
        &self,
        institution: &str,
        account_ids: &[String],
    ) -> Result<Vec<ConnectionRecord>, StoreError> {
        if account_ids.is_empty() {
            return Ok(Vec::new());
        }
        let holding: Vec<String> = account::Entity::find()
            .select_only()
            .column(account::Column::ConnectionId)
            .distinct()
            .filter(account::Column::ExternalId.is_in(account_ids.iter().map(String::as_str)))
            .into_tuple()
            .all(self.db())
            .await?;
        if holding.is_empty() {
            return Ok(Vec::new());
        }
        let rows = connection::Entity::find()
            .filter(connection::Column::Id.is_in(holding))
            .filter(connection::Column::InstitutionId.eq(institution))
            .order_by_asc(connection::Column::CreatedAt)
            .all(self.db())
            .await?;
        rows.into_iter()
            .map(super::connections::to_record)
            .collect()
    }
}

/// The events `filter` selects, in no order.
fn filtered(filter: &EventFilter) -> sea_orm::Select<institution_event::Entity> {
    let mut query = institution_event::Entity::find();
    if let Some(institution) = &filter.institution {
        query = query.filter(institution_event::Column::InstitutionId.eq(institution));
    }
    if !filter.statuses.is_empty() {
        query = query.filter(
            institution_event::Column::Status.is_in(filter.statuses.iter().map(|s| s.as_str())),
        );
    }
    if let Some(since) = filter.since {
        query = query.filter(institution_event::Column::ReceivedAt.gte(since));
    }
    if let Some(event) = &filter.event {
        query = query.filter(
            institution_event::Column::Id
                .eq(event)
                .or(institution_event::Column::EventId.eq(event)),
        );
    }
    query
}

fn to_event(row: institution_event::Model) -> Result<InstitutionEvent, StoreError> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("institution event {}: {what}", row.id));
    Ok(InstitutionEvent {
        status: row.status.parse().map_err(|_| corrupt("status"))?,
        connections: serde_json::from_str(&row.connections).map_err(|_| corrupt("connections"))?,
        id: row.id,
        institution_id: row.institution_id,
        event_id: row.event_id,
        event_type: row.event_type,
        sent_at: row.sent_at,
        received_at: row.received_at,
        body: row.body,
        detail: row.detail,
        processed_at: row.processed_at,
        deliveries: row.deliveries,
        replays: row.replays,
    })
}
