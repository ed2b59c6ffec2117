//! The token lifecycle: the OAuth2 [`oauth`] client for one connector, [`link`]ing a user through the authorization
//! code flow, and [`TokenService`], which hands a sync a usable access token,
//! refreshes tokens ahead of expiry with at most one refresh per connection in
//! flight across the fleet, and revokes them; [`disconnect`]ing a connection.
//!
//! Tokens live in `SecretString` in memory, as [`crate::vault`] ciphertext in the
//! database, and
//! nowhere else: no log line, error or response carries one.

pub mod disconnect;
pub mod link;
pub mod oauth;
pub mod rotate;

use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use chrono::{DateTime, Utc};
use secrecy::SecretString;

pub use link::{LinkError, LinkStart, Linked, Linker};
pub use oauth::{OAuthClient, OAuthError, TokenSet};

use crate::connectors::{Registry, RegistryError};
use crate::domain::ConnectionId;
use crate::store::{ConnectionRecord, Lease, Store, StoreError, TokenColumns};
use crate::vault::{Vault, VaultError, seal_context};

/// An access token this close to expiry is refreshed before use.
const REFRESH_MARGIN: chrono::Duration = chrono::Duration::seconds(60);
/// How long one refresh may hold a connection's token lease.
const TOKEN_LEASE: chrono::Duration = chrono::Duration::minutes(5);
/// A refresh (all its attempts and its save) gives up well inside the lease, so a
/// lease never expires under a refresh still in progress.
const REFRESH_DEADLINE: Duration = Duration::from_secs(180);
/// How long a caller waits for another process's refresh before giving up.
const LEASE_WAIT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    #[error("the connection needs the user to link again: {0}")]
    ReauthRequired(String),
    #[error("token refresh failed: {0}")]
    Refresh(#[from] OAuthError),
    #[error(transparent)]
    Vault(#[from] VaultError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("another process kept the connection's tokens locked for too long")]
    Busy,
}

/// Seals a token set into the columns the store keeps, with the background refresh
/// due once `refresh_at_fraction` of the access token's lifetime has passed.
pub fn seal_tokens(
    vault: &Vault,
    connection: ConnectionId,
    tokens: &TokenSet,
    refresh_at_fraction: f64,
) -> Result<TokenColumns, VaultError> {
    let lifetime = tokens.expires_at - tokens.issued_at;
    let due_after = chrono::Duration::milliseconds(
        (lifetime.num_milliseconds() as f64 * refresh_at_fraction) as i64,
    );
    Ok(TokenColumns {
        access_token: Some(vault.seal(
            &seal_context(connection, "access_token"),
            &tokens.access_token,
        )?),
        refresh_token: tokens
            .refresh_token
            .as_ref()
            .map(|t| vault.seal(&seal_context(connection, "refresh_token"), t))
            .transpose()?,
        access_token_expires_at: Some(tokens.expires_at),
        refresh_due_at: Some(tokens.issued_at + due_after),
    })
}

/// Hands out usable access tokens, refreshing them when they are about to expire.
#[derive(Clone)]
pub struct TokenService {
    pub store: Store,
    pub vault: Arc<Vault>,
    pub registry: Arc<Registry>,
    pub http: reqwest::Client,
    pub redirect_uri: url::Url,
    pub refresh_at_fraction: f64,
}

/// Whether the stored access token is good for use now. The safety margin is a
/// minute, or half the time between the planned refresh and expiry for tokens that
/// live only seconds (so a short-lived token is not refreshed on every use).
fn fresh(tokens: &TokenColumns, now: DateTime<Utc>) -> bool {
    let Some(expires_at) = tokens.access_token_expires_at else {
        return false;
    };
    let margin = tokens.refresh_due_at.map_or(REFRESH_MARGIN, |due| {
        ((expires_at - due).max(chrono::Duration::zero()) / 2).min(REFRESH_MARGIN)
    });
    tokens.access_token.is_some() && expires_at - margin > now
}

impl TokenService {
    /// A valid access token for the connection. An expired or nearly expired token
    /// is refreshed first (see [`Self::refreshed_token`]). A refused grant is
    /// `ReauthRequired`; the caller records it on the connection.
    pub async fn access_token(
        &self,
        connection: &ConnectionRecord,
    ) -> Result<SecretString, TokenError> {
        if fresh(&connection.tokens, Utc::now())
            && let Some(sealed) = &connection.tokens.access_token
        {
            return Ok(self
                .vault
                .open(&seal_context(connection.id, "access_token"), sealed)?);
        }
        self.refreshed_token(connection).await
    }

    /// Refreshes the tokens that `seen` holds and returns the new access token. Of
    /// all the processes that want to, one refreshes: the others wait for its
    /// commit and use what it stored, so a rotating refresh token is never
    /// presented twice.
    pub async fn refreshed_token(
        &self,
        seen: &ConnectionRecord,
    ) -> Result<SecretString, TokenError> {
        let owner = uuid::Uuid::new_v4().to_string();
        self.hold_token_lease(seen.id, &owner, TOKEN_LEASE, LEASE_WAIT)
            .await?;
        // The refresh and its commit run in a task of their own: if this caller is
        // cancelled (a worker shutting down), the rotated token is still committed.
        let (service, seen, lease) = (self.clone(), seen.clone(), owner.clone());
        let refresh = tokio::spawn(async move {
            let result = match tokio::time::timeout(
                REFRESH_DEADLINE,
                service.refresh_holding_lease(&seen, &lease),
            )
            .await
            {
                Ok(result) => result,
                Err(_) => Err(TokenError::Refresh(OAuthError::Unavailable(
                    "the refresh took too long".into(),
                ))),
            };
            service
                .store
                .release_lease(Lease::Token, seen.id, &lease)
                .await?;
            result
        });
        refresh
            .await
            .unwrap_or_else(|e| Err(TokenError::Refresh(OAuthError::Unavailable(e.to_string()))))
    }

    async fn refresh_holding_lease(
        &self,
        seen: &ConnectionRecord,
        lease: &str,
    ) -> Result<SecretString, TokenError> {
        let current = self.store.connection(seen.id).await?;
        // Someone refreshed while we waited: what they committed is ours to use.
        if current.tokens.access_token != seen.tokens.access_token
            && fresh(&current.tokens, Utc::now())
            && let Some(sealed) = &current.tokens.access_token
        {
            return Ok(self
                .vault
                .open(&seal_context(current.id, "access_token"), sealed)?);
        }
        let Some(sealed_refresh) = &current.tokens.refresh_token else {
            return Err(TokenError::ReauthRequired(
                "the access token is not accepted and there is no refresh token".into(),
            ));
        };
        let refresh = self
            .vault
            .open(&seal_context(current.id, "refresh_token"), sealed_refresh)?;
        let connector = self.registry.get(&current.institution_id)?;
        let secret = self.registry.client_secret(&connector)?;
        let client = OAuthClient::new(&connector, secret, &self.redirect_uri, self.http.clone());
        // Transient failures are retried here; a refused grant is final.
        let attempt = || client.refresh(&refresh);
        let outcome = attempt
            .retry(
                ExponentialBuilder::default()
                    .with_jitter()
                    .with_min_delay(Duration::from_millis(200))
                    .with_max_times(3),
            )
            .when(|e| matches!(e, OAuthError::Unavailable(_)))
            .await;
        let tokens = match outcome {
            Ok(tokens) => tokens,
            Err(OAuthError::InvalidGrant(reason)) => {
                refreshed(&current.institution_id, "invalid_grant");
                return Err(TokenError::ReauthRequired(format!(
                    "refresh refused: {reason}"
                )));
            }
            Err(e) => {
                refreshed(&current.institution_id, "error");
                return Err(e.into());
            }
        };
        let columns = seal_tokens(&self.vault, current.id, &tokens, self.refresh_at_fraction)?;
        // The institution may already have retired the old refresh token: the new
        // one must reach the database before anything uses the new access token,
        // so a failing write is retried before giving up.
        let save = || {
            self.store
                .save_refreshed_tokens(current.id, lease, columns.clone())
        };
        match save
            .retry(ExponentialBuilder::default().with_jitter().with_max_times(5))
            .notify(|e, wait| {
                tracing::error!(connection = %current.id, error = %e, wait_ms = wait.as_millis() as u64, "Saving refreshed tokens failed; retrying.");
            })
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                // Disconnected or relinked meanwhile: these tokens belong to nothing.
                refreshed(&current.institution_id, "discarded");
                return Err(TokenError::ReauthRequired("the connection changed during the refresh".into()));
            }
            Err(e) => {
                refreshed(&current.institution_id, "lost");
                tracing::error!(connection = %current.id, error = %e, "Refreshed tokens could not be saved; the connection may need relinking.");
                return Err(e.into());
            }
        }
        refreshed(&current.institution_id, "ok");
        tracing::info!(connection = %current.id, expires_at = %tokens.expires_at, "Access token refreshed.");
        Ok(tokens.access_token)
    }

    /// Revokes the connection's grant at the institution (RFC 7009) when the
    /// connector has a revocation endpoint. `Ok(false)`: nothing to revoke there.
    pub async fn revoke_at_institution(
        &self,
        connection: &ConnectionRecord,
    ) -> Result<bool, TokenError> {
        let Some(sealed) = &connection.tokens.refresh_token else {
            return Ok(false);
        };
        let refresh = self
            .vault
            .open(&seal_context(connection.id, "refresh_token"), sealed)?;
        let connector = self.registry.get(&connection.institution_id)?;
        let secret = self.registry.client_secret(&connector)?;
        let client = OAuthClient::new(&connector, secret, &self.redirect_uri, self.http.clone());
        Ok(client.revoke(&refresh).await?)
    }
}

/// Counts a refresh outcome for metrics: `ok`, `invalid_grant`, `error`, `lost`.
fn refreshed(institution: &str, outcome: &'static str) {
    metrics::counter!("finsync_token_refresh_total", "institution" => institution.to_owned(), "outcome" => outcome)
        .increment(1);
}
