//! Outgoing webhooks at rest: tenants' endpoints (with their signing secret as vault
//! ciphertext) and the delivery log, one row per event and endpoint, which is also
//! the delivery queue. Delivery loops in several processes share that queue by
//! leasing rows with conditional updates; when and how often to retry is the
//! caller's decision, recorded here.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    Set,
};

use super::entities::{webhook_delivery, webhook_endpoint};
use super::{Store, StoreError};
use crate::domain::{DeliveryStatus, TenantId, WebhookDeliveryId, WebhookEndpointId, WebhookEvent};
use serde::{Deserialize, Serialize};

/// Why pending deliveries of an endpoint end without being sent.
const DISABLED: &str = "ENDPOINT_DISABLED: the endpoint was disabled before delivery";

/// A registered endpoint. The signing secret stays vault ciphertext here.
#[derive(Clone)]
pub struct WebhookEndpoint {
    pub id: WebhookEndpointId,
    pub tenant_id: TenantId,
    pub url: String,
    pub sealed_secret: Vec<u8>,
    pub events: Vec<WebhookEvent>,
    pub created_at: DateTime<Utc>,
    /// Set once the tenant disables it; nothing is sent to it afterwards.
    pub disabled_at: Option<DateTime<Utc>>,
}

impl std::fmt::Debug for WebhookEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookEndpoint")
            .field("id", &self.id)
            .field("tenant_id", &self.tenant_id)
            .field("url", &self.url)
            .field("sealed_secret", &"sealed")
            .field("events", &self.events)
            .field("created_at", &self.created_at)
            .field("disabled_at", &self.disabled_at)
            .finish()
    }
}

/// What is stored for a new endpoint. The id is chosen by the caller because the
/// secret is sealed for it (the vault binds a ciphertext to its row).
pub struct NewWebhookEndpoint {
    pub id: WebhookEndpointId,
    pub tenant_id: TenantId,
    pub url: String,
    pub sealed_secret: Vec<u8>,
    pub events: Vec<WebhookEvent>,
}

/// One event's delivery to one endpoint, as the delivery log shows it.
#[derive(Debug, Clone)]
pub struct WebhookDelivery {
    pub id: WebhookDeliveryId,
    pub endpoint_id: WebhookEndpointId,
    pub tenant_id: TenantId,
    pub event: WebhookEvent,
    /// The exact body every attempt sends (and signs).
    pub payload: String,
    pub status: DeliveryStatus,
    pub attempts: u32,
    pub last_status_code: Option<u16>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub last_attempt_at: Option<DateTime<Utc>>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub next_attempt_at: DateTime<Utc>,
}

/// A delivery leased to one delivery loop, with the endpoint to send it to.
#[derive(Debug, Clone)]
pub struct ClaimedDelivery {
    pub delivery: WebhookDelivery,
    pub endpoint: WebhookEndpoint,
}

/// The result of one attempt, and what follows from it.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub at: DateTime<Utc>,
    /// The receiver's HTTP status, if it answered at all.
    pub status_code: Option<u16>,
    /// Why the attempt failed, fit for an admin to read (never a secret).
    pub error: Option<String>,
    pub next: NextStep,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextStep {
    Delivered,
    RetryAt(DateTime<Utc>),
    /// No attempts left.
    Failed,
}

/// Which deliveries to list; no filter lists every tenant's (for admins).
#[derive(Debug, Clone)]
pub struct DeliveryQuery {
    pub tenant: Option<TenantId>,
    pub endpoint: Option<WebhookEndpointId>,
    /// Newest first, from just older than this delivery.
    pub before: Option<DeliveryPosition>,
    pub limit: u64,
}

/// Where a page of deliveries (newest first) resumes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryPosition {
    pub created_at: DateTime<Utc>,
    pub id: String,
}

impl WebhookDelivery {
    pub fn position(&self) -> DeliveryPosition {
        DeliveryPosition {
            created_at: self.created_at,
            id: self.id.to_string(),
        }
    }
}

impl Store {
    pub async fn insert_webhook_endpoint(
        &self,
        new: NewWebhookEndpoint,
    ) -> Result<WebhookEndpoint, StoreError> {
        let row = webhook_endpoint::ActiveModel {
            id: Set(new.id.to_string()),
            tenant_id: Set(new.tenant_id.to_string()),
            url: Set(new.url),
            secret: Set(new.sealed_secret),
            events: Set(join_events(&new.events)),
            created_at: Set(Utc::now()),
            disabled_at: Set(None),
        }
        .insert(self.db())
        .await?;
        to_endpoint(row)
    }

    /// A tenant's endpoints, disabled ones included, oldest first.
    pub async fn webhook_endpoints(
        &self,
        tenant: TenantId,
    ) -> Result<Vec<WebhookEndpoint>, StoreError> {
        webhook_endpoint::Entity::find()
            .filter(webhook_endpoint::Column::TenantId.eq(tenant.to_string()))
            .order_by_asc(webhook_endpoint::Column::CreatedAt)
            .order_by_asc(webhook_endpoint::Column::Id)
            .all(self.db())
            .await?
            .into_iter()
            .map(to_endpoint)
            .collect()
    }

    /// Disables one of the tenant's endpoints and ends its pending deliveries as
    /// failed, in one transaction. Returns whether a live endpoint was disabled
    /// (false: unknown, another tenant's, or already disabled).
    pub async fn disable_webhook_endpoint(
        &self,
        tenant: TenantId,
        id: WebhookEndpointId,
    ) -> Result<bool, StoreError> {
        let now = Utc::now();
        let txn = self.begin_write().await?;
        let disabled = webhook_endpoint::Entity::update_many()
            .col_expr(webhook_endpoint::Column::DisabledAt, Expr::value(now))
            .filter(webhook_endpoint::Column::Id.eq(id.to_string()))
            .filter(webhook_endpoint::Column::TenantId.eq(tenant.to_string()))
            .filter(webhook_endpoint::Column::DisabledAt.is_null())
            .exec(&txn)
            .await?
            .rows_affected
            == 1;
        if disabled {
            webhook_delivery::Entity::update_many()
                .col_expr(
                    webhook_delivery::Column::Status,
                    Expr::value(DeliveryStatus::Failed.as_str()),
                )
                .col_expr(webhook_delivery::Column::LastError, Expr::value(DISABLED))
                .filter(webhook_delivery::Column::EndpointId.eq(id.to_string()))
                .filter(webhook_delivery::Column::Status.eq(DeliveryStatus::Pending.as_str()))
                .exec(&txn)
                .await?;
        }
        txn.commit().await?;
        Ok(disabled)
    }

    /// Queues `payload` for every live endpoint of `tenant` subscribed to `event`,
    /// due at once, in one statement: an event reaches all its endpoints or none.
    /// A tenant with no such endpoint (the common case) costs one read.
    pub async fn insert_webhook_deliveries(
        &self,
        tenant: TenantId,
        event: WebhookEvent,
        payload: &str,
    ) -> Result<Vec<WebhookDeliveryId>, StoreError> {
        let now = Utc::now();
        let endpoints = webhook_endpoint::Entity::find()
            .filter(webhook_endpoint::Column::TenantId.eq(tenant.to_string()))
            .filter(webhook_endpoint::Column::DisabledAt.is_null())
            .all(self.db())
            .await?
            .into_iter()
            .map(to_endpoint)
            .collect::<Result<Vec<_>, _>>()?;
        let queued: Vec<(WebhookDeliveryId, _)> = endpoints
            .iter()
            .filter(|e| e.events.contains(&event))
            .map(|endpoint| (WebhookDeliveryId::new(), endpoint))
            .collect();
        if queued.is_empty() {
            return Ok(Vec::new());
        }
        let rows = queued
            .iter()
            .map(|(id, endpoint)| webhook_delivery::ActiveModel {
                id: Set(id.to_string()),
                endpoint_id: Set(endpoint.id.to_string()),
                tenant_id: Set(tenant.to_string()),
                event: Set(event.to_string()),
                payload: Set(payload.to_owned()),
                status: Set(DeliveryStatus::Pending.to_string()),
                attempts: Set(0),
                last_status_code: Set(None),
                last_error: Set(None),
                created_at: Set(now),
                last_attempt_at: Set(None),
                delivered_at: Set(None),
                next_attempt_at: Set(now),
                lease_owner: Set(None),
                lease_until: Set(None),
            });
        webhook_delivery::Entity::insert_many(rows)
            .exec(self.db())
            .await?;
        Ok(queued.into_iter().map(|(id, _)| id).collect())
    }

    /// Deletes the deliveries created before `before` that are settled (delivered,
    /// or failed for good); pending ones stay whatever their age. Returns how many.
    pub async fn purge_webhook_deliveries(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        self.delete_in_batches::<webhook_delivery::Entity>(
            webhook_delivery::Column::Id,
            Condition::all()
                .add(webhook_delivery::Column::CreatedAt.lt(before))
                .add(webhook_delivery::Column::Status.ne(DeliveryStatus::Pending.to_string())),
        )
        .await
    }

    /// Leases up to `limit` due deliveries to `owner` until `until`, oldest due
    /// first. Safe with many loops at once, on either database: the lease is taken
    /// by an update that re-checks that the row is still pending and unleased (or
    /// its lease expired), so a row another loop took meanwhile is not taken
    /// again. `owner` must be unique to this claim: it is how the taken rows are
    /// found afterwards.
    pub async fn claim_webhook_deliveries(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
        limit: u64,
    ) -> Result<Vec<ClaimedDelivery>, StoreError> {
        use webhook_delivery::Column;
        let claimable = || {
            Condition::all()
                .add(Column::Status.eq(DeliveryStatus::Pending.as_str()))
                .add(Column::NextAttemptAt.lte(now))
                .add(
                    Condition::any()
                        .add(Column::LeaseUntil.is_null())
                        .add(Column::LeaseUntil.lt(now)),
                )
        };
        // A read first: an idle loop polls without taking SQLite's write lock.
        let candidates: Vec<String> = webhook_delivery::Entity::find()
            .select_only()
            .column(Column::Id)
            .filter(claimable())
            .order_by_asc(Column::NextAttemptAt)
            .limit(limit)
            .into_tuple()
            .all(self.db())
            .await?;
        if candidates.is_empty() {
            return Ok(Vec::new());
        }
        let taken = webhook_delivery::Entity::update_many()
            .col_expr(Column::LeaseOwner, Expr::value(owner))
            .col_expr(Column::LeaseUntil, Expr::value(until))
            .filter(Column::Id.is_in(candidates.clone()))
            .filter(claimable())
            .exec(self.db())
            .await?;
        if taken.rows_affected == 0 {
            return Ok(Vec::new());
        }
        let deliveries = webhook_delivery::Entity::find()
            .filter(Column::Id.is_in(candidates))
            .filter(Column::LeaseOwner.eq(owner))
            .order_by_asc(Column::NextAttemptAt)
            .all(self.db())
            .await?
            .into_iter()
            .map(to_delivery)
            .collect::<Result<Vec<_>, _>>()?;
        let endpoints = webhook_endpoint::Entity::find()
            .filter(
                webhook_endpoint::Column::Id
                    .is_in(deliveries.iter().map(|d| d.endpoint_id.to_string())),
            )
            .all(self.db())
            .await?
            .into_iter()
            .map(to_endpoint)
            .collect::<Result<Vec<_>, _>>()?;
        deliveries
            .into_iter()
            .map(|delivery| {
                let endpoint = endpoints
                    .iter()
                    .find(|e| e.id == delivery.endpoint_id)
                    .cloned()
                    .ok_or(StoreError::NotFound("webhook endpoint"))?;
                Ok(ClaimedDelivery { delivery, endpoint })
            })
            .collect()
    }

    /// Records one attempt and gives the lease back. Written only while `owner`
    /// still holds the lease and the delivery is pending (a disabled endpoint's
    /// deliveries stay failed). Returns whether it was recorded.
    pub async fn record_webhook_attempt(
        &self,
        id: WebhookDeliveryId,
        owner: &str,
        attempt: Attempt,
    ) -> Result<bool, StoreError> {
        use webhook_delivery::Column;
        let mut update = webhook_delivery::Entity::update_many()
            .col_expr(Column::Attempts, Expr::col(Column::Attempts).add(1))
            .col_expr(
                Column::LastStatusCode,
                Expr::value(attempt.status_code.map(i32::from)),
            )
            .col_expr(Column::LastError, Expr::value(attempt.error))
            .col_expr(Column::LastAttemptAt, Expr::value(attempt.at))
            .col_expr(Column::LeaseOwner, Expr::value(Option::<String>::None))
            .col_expr(
                Column::LeaseUntil,
                Expr::value(Option::<DateTime<Utc>>::None),
            );
        update = match attempt.next {
            NextStep::Delivered => update
                .col_expr(
                    Column::Status,
                    Expr::value(DeliveryStatus::Delivered.as_str()),
                )
                .col_expr(Column::DeliveredAt, Expr::value(attempt.at)),
            NextStep::RetryAt(at) => update.col_expr(Column::NextAttemptAt, Expr::value(at)),
            NextStep::Failed => {
                update.col_expr(Column::Status, Expr::value(DeliveryStatus::Failed.as_str()))
            }
        };
        let recorded = update
            .filter(Column::Id.eq(id.to_string()))
            .filter(Column::LeaseOwner.eq(owner))
            .filter(Column::Status.eq(DeliveryStatus::Pending.as_str()))
            .exec(self.db())
            .await?;
        Ok(recorded.rows_affected == 1)
    }

    pub async fn webhook_delivery(
        &self,
        id: WebhookDeliveryId,
    ) -> Result<WebhookDelivery, StoreError> {
        webhook_delivery::Entity::find_by_id(id.to_string())
            .one(self.db())
            .await?
            .ok_or(StoreError::NotFound("webhook delivery"))
            .and_then(to_delivery)
    }

    /// The delivery log, newest first.
    pub async fn webhook_deliveries(
        &self,
        query: DeliveryQuery,
    ) -> Result<Vec<WebhookDelivery>, StoreError> {
        use webhook_delivery::Column;
        let mut select = webhook_delivery::Entity::find();
        if let Some(tenant) = query.tenant {
            select = select.filter(Column::TenantId.eq(tenant.to_string()));
        }
        if let Some(endpoint) = query.endpoint {
            select = select.filter(Column::EndpointId.eq(endpoint.to_string()));
        }
        if let Some(before) = query.before {
            select = select.filter(
                Condition::any()
                    .add(Column::CreatedAt.lt(before.created_at))
                    .add(
                        Condition::all()
                            .add(Column::CreatedAt.eq(before.created_at))
                            .add(Column::Id.lt(before.id)),
                    ),
            );
        }
        select
            .order_by_desc(Column::CreatedAt)
            .order_by_desc(Column::Id)
            .limit(query.limit)
            .all(self.db())
            .await?
            .into_iter()
            .map(to_delivery)
            .collect()
    }

    /// Every endpoint, for re-sealing secrets under a new vault key.
    pub async fn all_webhook_endpoints(&self) -> Result<Vec<WebhookEndpoint>, StoreError> {
        webhook_endpoint::Entity::find()
            .all(self.db())
            .await?
            .into_iter()
            .map(to_endpoint)
            .collect()
    }

    /// Replaces an endpoint's sealed secret if it still holds `old`.
    pub async fn reseal_webhook_secret(
        &self,
        id: WebhookEndpointId,
        old: &[u8],
        sealed: Vec<u8>,
    ) -> Result<bool, StoreError> {
        let resealed = webhook_endpoint::Entity::update_many()
            .col_expr(webhook_endpoint::Column::Secret, Expr::value(sealed))
            .filter(webhook_endpoint::Column::Id.eq(id.to_string()))
            .filter(webhook_endpoint::Column::Secret.eq(old.to_vec()))
            .exec(self.db())
            .await?;
        Ok(resealed.rows_affected == 1)
    }
}

/// Events are stored space-separated, in a stable order.
fn join_events(events: &[WebhookEvent]) -> String {
    let mut names: Vec<&str> = events.iter().map(|e| e.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    names.join(" ")
}

fn to_endpoint(row: webhook_endpoint::Model) -> Result<WebhookEndpoint, StoreError> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("webhook endpoint {}: {what}", row.id));
    Ok(WebhookEndpoint {
        id: row.id.parse().map_err(|_| corrupt("id"))?,
        tenant_id: row.tenant_id.parse().map_err(|_| corrupt("tenant id"))?,
        events: row
            .events
            .split_whitespace()
            .map(str::parse)
            .collect::<Result<_, _>>()
            .map_err(|_| corrupt("events"))?,
        url: row.url,
        sealed_secret: row.secret,
        created_at: row.created_at,
        disabled_at: row.disabled_at,
    })
}

fn to_delivery(row: webhook_delivery::Model) -> Result<WebhookDelivery, StoreError> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("webhook delivery {}: {what}", row.id));
    Ok(WebhookDelivery {
        id: row.id.parse().map_err(|_| corrupt("id"))?,
        endpoint_id: row
            .endpoint_id
            .parse()
            .map_err(|_| corrupt("endpoint id"))?,
        tenant_id: row.tenant_id.parse().map_err(|_| corrupt("tenant id"))?,
        event: row.event.parse().map_err(|_| corrupt("event"))?,
        status: row.status.parse().map_err(|_| corrupt("status"))?,
        attempts: u32::try_from(row.attempts).map_err(|_| corrupt("attempts"))?,
        last_status_code: row
            .last_status_code
            .map(u16::try_from)
            .transpose()
            .map_err(|_| corrupt("status code"))?,
        payload: row.payload,
        last_error: row.last_error,
        created_at: row.created_at,
        last_attempt_at: row.last_attempt_at,
        delivered_at: row.delivered_at,
        next_attempt_at: row.next_attempt_at,
    })
}
