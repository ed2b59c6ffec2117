//! A connection's start and end as the rest of the system sees them: a completed
//! link announces a repair and queues the first sync; a disconnect revokes and
//! deletes ([`crate::tokens::disconnect`]) and rebuilds the user's cached view;
//! removing a user disconnects all of theirs.

use super::{Environment, SyncConnection};
use crate::domain::{ConnectionId, ConnectionStatus, TenantId, UserId};
use crate::tokens::disconnect::Disconnected;
use crate::tokens::{LinkError, Linker, TokenError};
use crate::webhooks::outbound::{self, EventData, WebhookEvent};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CompleteLinkError {
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error("queueing the first sync: {0}")]
    Queue(#[from] super::QueueError),
}

impl Environment {
    /// Completes a link the institution redirected back with (`outcome` is the
    /// authorization code, or the institution's error): tokens stored, a
    /// `reauth_required` connection announced as repaired, the first sync queued.
    pub async fn complete_link(
        &self,
        linker: &Linker,
        state: &str,
        outcome: Result<&str, &str>,
    ) -> Result<ConnectionId, CompleteLinkError> {
        let linked = linker.complete(state, outcome).await?;
        let connection = linked.connection_id;
        if linked.previous.status == ConnectionStatus::ReauthRequired {
            let data = EventData::connection(&linked.previous, ConnectionStatus::Active);
            outbound::announce(
                &self.store,
                linked.previous.tenant_id,
                WebhookEvent::ConnectionRepaired,
                &data,
            )
            .await;
        }
        self.queue
            .enqueue(SyncConnection {
                connection_id: connection,
                idempotency_key: format!("link:{connection}:{}", uuid::Uuid::new_v4()),
            })
            .await?;
        Ok(connection)
    }

    /// Removes a tenant's user: disconnects each of the user's connections not
    /// already revoked. `None` when the tenant has no such user.
    pub async fn remove_user(
        &self,
        tenant: TenantId,
        user: &UserId,
    ) -> Result<Option<Vec<Disconnected>>, TokenError> {
        let connections = self.store.user_connections(tenant, user).await?;
        if connections.is_empty() {
            return Ok(None);
        }
        let mut removed = Vec::new();
        for c in connections
            .iter()
            .filter(|c| c.status != ConnectionStatus::Revoked)
        {
            removed.push(self.disconnect(c.id).await?);
        }
        tracing::info!(tenant = %tenant, user = %user, connections = removed.len(), "User removed.");
        Ok(Some(removed))
    }

    /// Disconnects `id` and rebuilds its user's cached view without it.
    pub async fn disconnect(&self, id: ConnectionId) -> Result<Disconnected, TokenError> {
        let disconnected = self.tokens.disconnect(id).await?;
        self.refresh_portfolio(&disconnected.previous).await?;
        Ok(disconnected)
    }
}
