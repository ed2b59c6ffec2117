//! Consent history: every grant, renewal, expiry and revocation of a user's
//! consent at an institution, as its own record, written in the transaction of the
//! change that caused it. The connection's consent columns say where it stands;
//! these say how it got there.

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, ConnectionTrait, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect, Set,
};
use serde::{Deserialize, Serialize};

use super::audit::Actor;
use super::entities::{connection, consent_event};
use super::{Store, StoreError};
use crate::domain::{TenantId, UserId};

/// What happened to the consent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ConsentKind {
    /// The user granted it (a first link, or a link after a revocation).
    Granted,
    /// The user granted it again to repair a connection that needed them.
    Renewed,
    /// It reached the end of its lifetime.
    Expired,
    /// It was ended: by the institution (it refused the grant), or through
    /// finsync (a disconnect, an erasure).
    Revoked,
}

/// Who caused it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ActedBy {
    User,
    Tenant,
    Admin,
    Institution,
    System,
    /// Recorded before consent history was kept, from what the connection said.
    Unknown,
}

impl ActedBy {
    /// Who an audit actor is, for the consent's history.
    pub fn of(actor: &Actor) -> Self {
        match actor.as_str() {
            "user" => Self::User,
            "system" => Self::System,
            a if a.starts_with("key:") => Self::Tenant,
            _ => Self::Admin,
        }
    }
}

fn text<T: Serialize>(value: T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// One event in a consent's history.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ConsentEvent {
    pub id: String,
    pub connection_id: String,
    pub institution: String,
    pub kind: ConsentKind,
    pub acted_by: ActedBy,
    /// What was granted, as the institution named it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scopes: Option<String>,
    /// Until when it was granted; absent: until revoked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    /// The reason's code, where there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub at: DateTime<Utc>,
}

impl ConsentEvent {
    /// Where a page of history resumes after this event.
    pub fn position(&self) -> (DateTime<Utc>, String) {
        (self.at, self.id.clone())
    }
}

/// A consent event about to be written for `connection`.
pub(super) struct NewConsentEvent<'a> {
    pub connection: &'a connection::Model,
    pub kind: ConsentKind,
    pub acted_by: ActedBy,
    pub scopes: Option<String>,
    pub expires_at: Option<DateTime<Utc>>,
    pub reason: Option<String>,
}

/// Writes `event` in `db` (the change's transaction).
pub(super) async fn record(
    db: &impl ConnectionTrait,
    event: NewConsentEvent<'_>,
) -> Result<(), StoreError> {
    let c = event.connection;
    consent_event::ActiveModel {
        id: Set(uuid::Uuid::new_v4().to_string()),
        connection_id: Set(c.id.clone()),
        tenant_id: Set(c.tenant_id.clone()),
        user_id: Set(c.user_id.clone()),
        institution_id: Set(c.institution_id.clone()),
        kind: Set(text(event.kind)),
        acted_by: Set(text(event.acted_by)),
        scopes: Set(event.scopes),
        expires_at: Set(event.expires_at),
        reason: Set(event.reason),
        at: Set(Utc::now()),
    }
    .insert(db)
    .await?;
    Ok(())
}

impl Store {
    /// The user's consent history across their connections, oldest first, after
    /// `after` (a position).
    pub async fn consent_history(
        &self,
        tenant: TenantId,
        user: &UserId,
        after: Option<(DateTime<Utc>, String)>,
        limit: u64,
    ) -> Result<Vec<ConsentEvent>, StoreError> {
        let mut query = consent_event::Entity::find()
            .filter(consent_event::Column::TenantId.eq(tenant.to_string()))
            .filter(consent_event::Column::UserId.eq(user.as_str()))
            .order_by_asc(consent_event::Column::At)
            .order_by_asc(consent_event::Column::Id);
        if let Some((at, id)) = after {
            query = query.filter(
                Condition::any().add(consent_event::Column::At.gt(at)).add(
                    Condition::all()
                        .add(consent_event::Column::At.eq(at))
                        .add(consent_event::Column::Id.gt(id)),
                ),
            );
        }
        query
            .limit(limit)
            .all(self.db())
            .await?
            .into_iter()
            .map(to_event)
            .collect()
    }
}

fn to_event(row: consent_event::Model) -> Result<ConsentEvent, StoreError> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("consent event {}: {what}", row.id));
    Ok(ConsentEvent {
        kind: serde_json::from_value(serde_json::Value::String(row.kind.clone()))
            .map_err(|_| corrupt("kind"))?,
        acted_by: serde_json::from_value(serde_json::Value::String(row.acted_by.clone()))
            .map_err(|_| corrupt("acted by"))?,
        id: row.id,
        connection_id: row.connection_id,
        institution: row.institution_id,
        scopes: row.scopes,
        expires_at: row.expires_at,
        reason: row.reason,
        at: row.at,
    })
}
