//! A connection's start and end as the rest of the system sees them: a completed
//! link announces a repair and queues the first sync; a disconnect revokes and
//! deletes ([`crate::tokens::disconnect`]) and rebuilds the user's cached view.

use super::{Environment, SyncConnection};
use crate::domain::{ConnectionId, ConnectionStatus};
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

    /// Disconnects `id` and rebuilds its user's cached view without it.
    pub async fn disconnect(&self, id: ConnectionId) -> Result<Disconnected, TokenError> {
        let disconnected = self.tokens.disconnect(id).await?;
        self.refresh_portfolio(&disconnected.previous).await?;
        Ok(disconnected)
    }
}
