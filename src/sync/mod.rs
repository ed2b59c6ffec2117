//! Syncing: the [`job`]s (a sync, a token refresh), the [`queue`] they run on
//! (apalis on SQLite or PostgreSQL), the [`pipeline`] that fetches, normalizes and
//! stores, the background token [`refresh`], the [`scheduler`] that enqueues
//! due syncs and refreshes, the [`replay`] of quarantined records, a connector proved
//! against its live institution ([`check`]), on-demand [`requests`], a connection's
//! [`lifecycle`] (after a link, on disconnect), a user's [`erasure`] on request,
//! this process's circuit [`breakers`] reported to the fleet, and waiting for a
//! sync's end ([`wait`]). [`Environment`] is the one shared, immutable environment every job
//! and handler receives.

pub mod breakers;
pub mod check;
pub mod erasure;
pub mod job;
pub mod lifecycle;
pub mod pipeline;
pub mod queue;
pub mod refresh;
pub mod replay;
pub mod requests;
pub mod scheduler;
pub mod wait;

use std::sync::Arc;

pub use job::{Job, RefreshToken, SyncConnection};
pub use pipeline::{SyncError, SyncOutcome};
pub use queue::{Queue, QueueError};
pub use wait::{WaitError, wait_for_sync};

use crate::cache::Cache;
use crate::connectors::{Engine, Registry};
use crate::domain::ConnectionStatus;
use crate::store::{ConnectionRecord, Store, StoreError};
use crate::tokens::TokenService;
use crate::webhooks::outbound::{self, EventData, WebhookEvent};

/// The environment of one process: everything its jobs, loops and API handlers
/// share (pools, clients, the queue), built once at start and never changed.
pub struct Environment {
    pub store: Store,
    pub cache: Cache,
    pub registry: Arc<Registry>,
    pub engine: Engine,
    pub tokens: TokenService,
    pub queue: Queue,
    /// How often a connection is synced.
    pub interval: chrono::Duration,
    /// Transactions kept in the cached portfolio view.
    pub recent_transactions: u64,
    /// A job whose runs stopped their worker this many times is parked as failed.
    pub poison_after: u32,
    /// How long each class of history is kept.
    pub retention: scheduler::Retention,
    /// How often a connection's sync is a deep one, unless its connector says.
    pub deep_interval: chrono::Duration,
    /// A transaction still pending after this many days is a finding.
    pub stale_pending_days: u32,
    /// Exchange rates for reporting currencies: refreshed by the scheduler, read
    /// by the API.
    pub fx: crate::fx::Fx,
}

impl Environment {
    /// How long after a sync the connection is due again: its own interval, else
    /// its connector's, else the deployment's.
    pub fn interval_for(&self, connection: &ConnectionRecord) -> chrono::Duration {
        let own = connection
            .sync_interval_secs
            .map(std::time::Duration::from_secs);
        let connector = || {
            self.registry
                .get(&connection.institution_id)
                .ok()
                .and_then(|c| c.sync_interval)
        };
        own.or_else(connector)
            .and_then(|d| chrono::Duration::from_std(d).ok())
            .unwrap_or(self.interval)
    }

    /// How long after a deep sync the connection's next one is due: its
    /// connector's interval, else the deployment's.
    pub fn deep_interval_for(&self, connection: &ConnectionRecord) -> chrono::Duration {
        self.registry
            .get(&connection.institution_id)
            .ok()
            .and_then(|c| c.deep_sync_interval)
            .and_then(|d| chrono::Duration::from_std(d).ok())
            .unwrap_or(self.deep_interval)
    }

    /// Where [`Self::interval_for`] takes the connection's interval from:
    /// `connection`, `connector` or `default`.
    pub fn interval_source(&self, connection: &ConnectionRecord) -> &'static str {
        if connection.sync_interval_secs.is_some() {
            "connection"
        } else if self
            .registry
            .get(&connection.institution_id)
            .is_ok_and(|connector| connector.sync_interval.is_some())
        {
            "connector"
        } else {
            "default"
        }
    }

    /// Rebuilds the cached portfolio of the connection's user after anything that
    /// changes what the read API shows (a sync, a status change, a disconnect).
    pub async fn refresh_portfolio(&self, connection: &ConnectionRecord) -> Result<(), StoreError> {
        crate::portfolio::refresh(
            &self.store,
            &self.cache,
            connection.tenant_id,
            &connection.user_id,
            self.recent_transactions,
        )
        .await
    }

    /// Tells the tenant's webhooks that a connection now needs the user to link
    /// again; `reason` is the public reason recorded on it.
    pub async fn announce_reauth_required(&self, connection: &ConnectionRecord, reason: &str) {
        let data =
            EventData::connection(connection, ConnectionStatus::ReauthRequired).with_reason(reason);
        outbound::announce(
            &self.store,
            connection.tenant_id,
            WebhookEvent::ConnectionReauthRequired,
            &data,
        )
        .await;
    }
}

pub type Env = Arc<Environment>;
