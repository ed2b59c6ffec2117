//! Disconnecting a connection: its grant revoked at the institution when the
//! connector can, then its tokens and synced records deleted, all under the token
//! lease so that no refresh rotates the token being revoked or stores new tokens
//! after they are gone. The connection row stays, `revoked`, as consent history.

use std::time::Duration;

use chrono::Utc;

use super::{TokenError, TokenService};
use crate::domain::ConnectionId;
use crate::store::{AuditEntry, ConnectionRecord, Lease};

/// How long a disconnect waits for a refresh in flight to let go of the tokens.
const DISCONNECT_WAIT: Duration = Duration::from_secs(60);
/// How long a disconnect may hold the token lease.
const DISCONNECT_LEASE: chrono::Duration = chrono::Duration::minutes(5);

/// What a disconnect did.
#[derive(Debug)]
pub struct Disconnected {
    /// The connection as it was before.
    pub previous: ConnectionRecord,
    /// Whether the institution confirmed the revocation (RFC 7009).
    pub revoked_at_institution: bool,
    /// Why it did not, when it did not.
    pub institution_note: Option<&'static str>,
}

impl TokenService {
    /// Disconnects `id`, recording `audit` with the local deletion. A revocation
    /// the institution does not confirm is reported in the result (and the entry),
    /// and the local deletion still happens.
    pub async fn disconnect(
        &self,
        id: ConnectionId,
        audit: AuditEntry,
    ) -> Result<Disconnected, TokenError> {
        let owner = uuid::Uuid::new_v4().to_string();
        self.hold_token_lease(id, &owner, DISCONNECT_LEASE, DISCONNECT_WAIT)
            .await?;
        let result = self.disconnect_holding_lease(id, audit).await;
        self.store.release_lease(Lease::Token, id, &owner).await?;
        result
    }

    async fn disconnect_holding_lease(
        &self,
        id: ConnectionId,
        audit: AuditEntry,
    ) -> Result<Disconnected, TokenError> {
        let previous = self.store.connection(id).await?;
        let (revoked, note) = match self.revoke_at_institution(&previous).await {
            Ok(true) => (true, None),
            Ok(false) => (
                false,
                Some("the institution offers no revocation, or no token was held"),
            ),
            Err(e) => {
                tracing::warn!(connection = %id, error = %e, "Revocation at the institution failed; deleting locally.");
                (
                    false,
                    Some("the institution could not be reached to revoke the grant"),
                )
            }
        };
        let audit = audit
            .target(format!("connection:{id}"))
            .detail(serde_json::json!({
                "institution": previous.institution_id,
                "revoked_at_institution": revoked,
            }));
        self.store.revoke_connection(id, audit).await?;
        tracing::info!(connection = %id, from = %previous.status, status = "revoked", revoked_at_institution = revoked, "Connection disconnected.");
        Ok(Disconnected {
            previous,
            revoked_at_institution: revoked,
            institution_note: note,
        })
    }

    /// Takes the connection's token lease for `ttl` as `owner`, waiting up to `wait`
    /// for whoever holds it: the one way to the tokens for refreshes and
    /// disconnects alike. `Busy` when it stayed held.
    pub(super) async fn hold_token_lease(
        &self,
        id: ConnectionId,
        owner: &str,
        ttl: chrono::Duration,
        wait: Duration,
    ) -> Result<(), TokenError> {
        let deadline = tokio::time::Instant::now() + wait;
        while !self
            .store
            .acquire_lease(Lease::Token, id, owner, Utc::now() + ttl)
            .await?
        {
            if tokio::time::Instant::now() >= deadline {
                return Err(TokenError::Busy);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }
}
