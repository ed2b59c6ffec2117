//! The background token refresh: renews a connection's access token once most of
//! its lifetime has passed, so syncs find a valid token waiting, and takes up a
//! refresh that a stopped process cut short as soon as its lease lapses. A refused grant
//! puts the connection in `reauth_required`, visible to the admin and the tenant;
//! a transient failure leaves it active and is tried again at the next slot.

use tracing::Instrument;

use super::Env;
use super::job::RefreshToken;
use super::pipeline::SyncError;
use crate::domain::ConnectionStatus;
use crate::store::StoreError;
use crate::tokens::{OAuthError, ROTATION_LOST, TokenError};

pub async fn run(ctx: Env, job: RefreshToken) -> Result<(), SyncError> {
    let span = tracing::info_span!("refresh", connection = %job.connection_id, key = %job.idempotency_key, trace_id = tracing::field::Empty);
    crate::tracecontext::record_trace_id(&span);
    refresh(&ctx, &job).instrument(span).await
}

async fn refresh(ctx: &Env, job: &RefreshToken) -> Result<(), SyncError> {
    let connection = match ctx.store.connection(job.connection_id).await {
        Ok(c) => c,
        Err(StoreError::NotFound(_)) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    // Not active, or someone renewed the token since the job was enqueued.
    let renewed = connection.tokens.access_token_expires_at != job.expires_at;
    if connection.status != ConnectionStatus::Active
        || connection.tokens.refresh_token.is_none()
        || renewed
    {
        return Ok(());
    }
    let (status, reason, institution_ended_consent) = match ctx
        .tokens
        .refreshed_token(&connection)
        .await
    {
        Ok(_) => return Ok(()),
        Err(TokenError::Store(e)) => return Err(e.into()),
        Err(TokenError::ReauthRequired(detail)) => {
            tracing::warn!(detail, "The institution refused the grant.");
            (
                ConnectionStatus::ReauthRequired,
                "REAUTH_REQUIRED: the institution needs the user to link again",
                true,
            )
        }
        Err(e @ TokenError::RotationLost { .. }) => {
            tracing::warn!(error = %e, "A refresh cut short cost the grant.");
            (ConnectionStatus::ReauthRequired, ROTATION_LOST, false)
        }
        // Transient: tried again at the next slot.
        Err(e @ (TokenError::Busy | TokenError::Refresh(OAuthError::Unavailable(_)))) => {
            tracing::warn!(error = %e, "Token refresh failed; trying again at the next slot.");
            return Ok(());
        }
        // Anything else will not get better by retrying (a rejected client, an
        // unreadable response, a token sealed with a key no longer configured).
        Err(e) => {
            tracing::error!(error = %e, "Token refresh failed for good.");
            (
                ConnectionStatus::Error,
                "TOKEN_REFRESH_FAILED: the connection's tokens could not be renewed; an admin must look",
                false,
            )
        }
    };
    if ctx
        .store
        .leave_active(connection.id, status, reason, institution_ended_consent)
        .await?
    {
        tracing::warn!(from = %connection.status, status = %status, "Connection left active.");
        ctx.refresh_portfolio(&connection).await?;
        if status == ConnectionStatus::ReauthRequired {
            ctx.announce_reauth_required(&connection, reason).await;
        }
    }
    Ok(())
}
