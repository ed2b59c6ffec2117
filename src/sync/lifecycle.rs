//! A connection's start and end as the rest of the system sees them: a completed
//! link ends the app's link session, announces the link (and a repair) and queues
//! the first sync; a disconnect revokes and
//! deletes ([`crate::tokens::disconnect`]) and rebuilds the user's cached view.

use super::{Environment, SyncConnection};
use crate::domain::{ConnectionId, ConnectionStatus};
use crate::store::{AuditEntry, LinkSessionRecord};
use crate::tokens::disconnect::Disconnected;
use crate::tokens::sessions::BrowserKeys;
use crate::tokens::{LinkFailure, Linker, TokenError};
use crate::webhooks::outbound::{self, EventData, WebhookEvent};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CompleteLinkError {
    #[error(transparent)]
    Link(#[from] LinkFailure),
}

/// A completed link, and the app's session it ended.
pub struct LinkOutcome {
    pub connection: ConnectionId,
    pub session: Option<LinkSessionRecord>,
}

impl Environment {
    /// Completes a link the institution redirected back with (`outcome` is the
    /// authorization code, or the institution's error): tokens stored, the app's
    /// session ended, `connection.linked` (and for a `reauth_required` connection
    /// `connection.repaired`) announced, the first sync queued. A link that fails
    /// leaves its session open with the reason, for the user to try again.
    /// `browsers` holds the link session keys the browser came back with.
    pub async fn complete_link(
        &self,
        linker: &Linker,
        state: &str,
        outcome: Result<&str, &str>,
        browsers: &BrowserKeys,
    ) -> Result<LinkOutcome, CompleteLinkError> {
        let linked = linker.complete(state, outcome, browsers).await?;
        let connection = linked.connection_id;
        let tenant = linked.previous.tenant_id;
        let mut data = EventData::connection(&linked.previous, ConnectionStatus::Active);
        data.link_session_id = linked.session.as_ref().map(|s| s.id);
        outbound::announce(&self.store, tenant, WebhookEvent::ConnectionLinked, &data).await;
        if linked.previous.status == ConnectionStatus::ReauthRequired {
            outbound::announce(&self.store, tenant, WebhookEvent::ConnectionRepaired, &data).await;
        }
        // The link stands either way: a connection with no sync time yet is due
        // for the scheduler, which queues it on its next tick.
        if let Err(error) = self
            .queue
            .enqueue(SyncConnection {
                connection_id: connection,
                idempotency_key: format!("link:{connection}:{}", uuid::Uuid::new_v4()),
            })
            .await
        {
            tracing::error!(connection = %connection, %error, "The first sync of a new link could not be queued; the scheduler will.");
        }
        Ok(LinkOutcome {
            connection,
            session: linked.session,
        })
    }

    /// Disconnects `id`, recording `audit` with it, and rebuilds its user's cached
    /// view without it.
    pub async fn disconnect(
        &self,
        id: ConnectionId,
        audit: AuditEntry,
    ) -> Result<Disconnected, TokenError> {
        let disconnected = self.tokens.disconnect(id, audit).await?;
        self.refresh_portfolio(&disconnected.previous).await?;
        Ok(disconnected)
    }
}
