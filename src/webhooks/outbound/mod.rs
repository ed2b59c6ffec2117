//! Outgoing webhooks: tenants register endpoints for [`WebhookEvent`]s and finsync
//! POSTs each event to them, signed, retried with backoff, and logged.
//!
//! This module owns what an event says and how it is sent: [`register_endpoint`]
//! (the signing secret is generated here, shown once and sealed in the vault),
//! [`emit`] (the payload, queued for every subscribed endpoint), the
//! [`signature`] scheme with the [`verify`] function receivers use, and the
//! [`delivery`] loop that claims due deliveries, sends them and records each
//! attempt, to public addresses only ([`target`]). Rows live in the store; nothing here decides *when* an event happens:
//! the sync pipeline, the token refresh, the scheduler and the OAuth callback call
//! [`announce`] where a connection's state changes.
//!
//! A payload names only what the tenant already knows (its user, the connection,
//! the institution, a status, a stable reason code, counts): never a token or an
//! institution's own error text.

pub mod delivery;
pub mod signature;
pub mod target;

use chrono::{SubsecRound, Utc};
use rand::RngExt;
use secrecy::SecretString;
use serde::Serialize;

pub use delivery::{Deliverer, DeliveryPolicy, run};
pub use signature::{VerifyError, sign, verify};

pub use crate::domain::WebhookEvent;
use crate::domain::{
    ConnectionId, ConnectionStatus, LinkSessionId, TenantId, UserId, WebhookDeliveryId,
    WebhookEndpointId,
};
use crate::store::{
    ConnectionRecord, NewWebhookEndpoint, RunCounts, Store, StoreError, UnreadAccount,
    WebhookEndpoint,
};
use crate::vault::{Vault, VaultError, webhook_secret_context};

/// Header carrying [`sign`]'s value.
pub const SIGNATURE_HEADER: &str = "finsync-signature";
/// Header naming the event type, so a receiver can route before parsing.
pub const EVENT_HEADER: &str = "finsync-event";
/// Header carrying the delivery id: the same on every retry of one delivery.
pub const DELIVERY_HEADER: &str = "finsync-delivery";

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WebhookError {
    #[error("the endpoint URL {0}")]
    InvalidUrl(&'static str),
    #[error("an endpoint must subscribe to at least one event")]
    NoEvents,
    #[error("the event payload cannot be written: {0}")]
    Payload(#[from] serde_json::Error),
    #[error(transparent)]
    Vault(#[from] VaultError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// An endpoint just registered, with its signing secret: the only time the secret
/// is visible; finsync keeps it sealed.
pub struct Registered {
    pub endpoint: WebhookEndpoint,
    pub secret: SecretString,
}

/// Registers `url` to receive `events` for `tenant`. The URL must be http(s),
/// without credentials, and (unless `allow_private`) name a public host.
pub async fn register_endpoint(
    store: &Store,
    vault: &Vault,
    tenant: TenantId,
    url: &str,
    events: &[WebhookEvent],
    allow_private: bool,
) -> Result<Registered, WebhookError> {
    let parsed = url::Url::parse(url).map_err(|_| WebhookError::InvalidUrl("is not a URL"))?;
    if !matches!(parsed.scheme(), "https" | "http") {
        return Err(WebhookError::InvalidUrl("must be http or https"));
    }
    // Credentials in a URL would sit in the database in plain text; receivers
    // authenticate us by the signature instead.
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(WebhookError::InvalidUrl("must not carry credentials"));
    }
    target::check_host(&parsed, allow_private).map_err(WebhookError::InvalidUrl)?;
    if events.is_empty() {
        return Err(WebhookError::NoEvents);
    }
    let id = WebhookEndpointId::new();
    let secret = generate_secret();
    let endpoint = store
        .insert_webhook_endpoint(NewWebhookEndpoint {
            id,
            tenant_id: tenant,
            url: parsed.to_string(),
            sealed_secret: vault.seal(&webhook_secret_context(id), &secret)?,
            events: events.to_vec(),
        })
        .await?;
    tracing::info!(tenant = %tenant, endpoint = %id, "Webhook endpoint registered.");
    Ok(Registered { endpoint, secret })
}

/// `whsec_` and 32 random bytes in hex.
fn generate_secret() -> SecretString {
    let bytes: [u8; 32] = rand::rng().random();
    SecretString::from(format!("whsec_{}", hex::encode(bytes)))
}

/// What an event says about a connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EventData {
    pub user_id: UserId,
    pub connection_id: ConnectionId,
    pub institution: String,
    pub status: ConnectionStatus,
    /// The stable code of why the connection changed (e.g.
    /// `REAUTH_REQUIRED`), without any free text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub counts: Option<SyncCounts>,
    /// `sync.completed`: the accounts whose data the sync could not read (their
    /// stored data stays until a sync reads them).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub accounts_unread: Vec<String>,
    /// `connection.linked` and `connection.repaired`: the app's link session the
    /// user linked through, if one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link_session_id: Option<LinkSessionId>,
}

/// What a sync changed, for `sync.completed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SyncCounts {
    pub added: u32,
    pub modified: u32,
    pub removed: u32,
    pub unchanged: u32,
    pub quarantined: u32,
}

impl From<RunCounts> for SyncCounts {
    fn from(c: RunCounts) -> Self {
        Self {
            added: c.added,
            modified: c.modified,
            removed: c.removed,
            unchanged: c.unchanged,
            quarantined: c.quarantined,
        }
    }
}

impl EventData {
    /// The connection as it is now: `status` is passed in because the record may
    /// have been read before the change being announced.
    pub fn connection(connection: &ConnectionRecord, status: ConnectionStatus) -> Self {
        Self {
            user_id: connection.user_id.clone(),
            connection_id: connection.id,
            institution: connection.institution_id.clone(),
            status,
            reason: None,
            counts: None,
            accounts_unread: Vec::new(),
            link_session_id: None,
        }
    }

    /// Keeps only the code of a public reason (`CODE: message`).
    pub fn with_reason(mut self, public_reason: &str) -> Self {
        let code = public_reason
            .split_once(':')
            .map_or(public_reason, |(code, _)| code);
        self.reason = Some(code.trim().to_owned());
        self
    }

    pub fn with_counts(mut self, counts: RunCounts) -> Self {
        self.counts = Some(counts.into());
        self
    }

    /// The accounts a sync could not read, each named once.
    pub fn with_unread(mut self, unread: &[UnreadAccount]) -> Self {
        let ids: std::collections::BTreeSet<&str> =
            unread.iter().map(|u| u.account_id.as_str()).collect();
        self.accounts_unread = ids.into_iter().map(str::to_owned).collect();
        self
    }
}

/// The JSON body every delivery of one event carries.
#[derive(Debug, Serialize)]
struct Payload<'a> {
    /// The event's id: the same for every endpoint it goes to, so a receiver can
    /// tell a retry or a duplicate from a new event.
    id: uuid::Uuid,
    #[serde(rename = "type")]
    event: WebhookEvent,
    created_at: chrono::DateTime<Utc>,
    data: &'a EventData,
}

/// Queues `event` for every live endpoint of `tenant` subscribed to it; returns
/// the deliveries queued (none when nobody listens).
pub async fn emit(
    store: &Store,
    tenant: TenantId,
    event: WebhookEvent,
    data: &EventData,
) -> Result<Vec<WebhookDeliveryId>, WebhookError> {
    let body = serde_json::to_string(&Payload {
        id: uuid::Uuid::new_v4(),
        event,
        created_at: Utc::now().trunc_subsecs(3),
        data,
    })?;
    let queued = store
        .insert_webhook_deliveries(tenant, event, &body)
        .await?;
    if !queued.is_empty() {
        tracing::debug!(event = %event, connection = %data.connection_id, deliveries = queued.len(), "Webhook event queued.");
    }
    Ok(queued)
}

/// [`emit`] for callers whose own work must not fail because of a webhook: a
/// failure is logged and goes no further.
pub async fn announce(store: &Store, tenant: TenantId, event: WebhookEvent, data: &EventData) {
    if let Err(e) = emit(store, tenant, event, data).await {
        tracing::error!(event = %event, connection = %data.connection_id, error = %e, "Webhook event not queued; the change it announces stands.");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_names_are_the_wire_names() {
        assert_eq!(WebhookEvent::SyncCompleted.as_str(), "sync.completed");
        assert_eq!(
            "connection.reauth_required".parse::<WebhookEvent>(),
            Ok(WebhookEvent::ConnectionReauthRequired)
        );
        assert_eq!(
            serde_json::to_value(WebhookEvent::ConnectionRepaired).unwrap(),
            "connection.repaired"
        );
    }

    #[test]
    fn a_sync_names_each_unread_account_once_and_only_when_there_is_one() {
        let data = EventData {
            user_id: UserId::parse("u").unwrap(),
            connection_id: ConnectionId::new(),
            institution: "pinecrest".into(),
            status: ConnectionStatus::Active,
            reason: None,
            counts: None,
            accounts_unread: Vec::new(),
            link_session_id: None,
        };
        let json = serde_json::to_value(&data).unwrap();
        assert!(json.get("accounts_unread").is_none(), "{json}");
        let unread = |account: &str, endpoint: &str| UnreadAccount {
            account_id: account.into(),
            endpoint: endpoint.into(),
            reason: "INSTITUTION_UNAVAILABLE: …".into(),
        };
        let with = data.with_unread(&[
            unread("b", "transactions"),
            unread("a", "details.account"),
            unread("b", "holdings"),
        ]);
        let json = serde_json::to_value(&with).unwrap();
        assert_eq!(json["accounts_unread"], serde_json::json!(["a", "b"]));
    }

    #[test]
    fn a_reason_keeps_only_its_code() {
        let data = EventData {
            user_id: UserId::parse("u").unwrap(),
            connection_id: ConnectionId::new(),
            institution: "meridian".into(),
            status: ConnectionStatus::ReauthRequired,
            reason: None,
            counts: None,
            accounts_unread: Vec::new(),
            link_session_id: None,
        };
        let with = data
            .clone()
            .with_reason("REAUTH_REQUIRED: the institution needs the user to link again");
        assert_eq!(with.reason.as_deref(), Some("REAUTH_REQUIRED"));
        let json = serde_json::to_value(&with).unwrap();
        assert!(json.get("counts").is_none(), "{json}");
        assert_eq!(json["status"], "reauth_required");
    }

    #[test]
    fn secrets_are_long_and_different() {
        use secrecy::ExposeSecret;
        let (a, b) = (generate_secret(), generate_secret());
        assert_eq!(a.expose_secret().len(), "whsec_".len() + 64);
        assert_ne!(a.expose_secret(), b.expose_secret());
    }
}
