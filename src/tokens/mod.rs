//! The token lifecycle: the OAuth2 [`oauth`] client for one connector, [`link`]ing a user through the authorization
//! code flow (for an admin, or an app's link [`sessions`]), and [`TokenService`], which hands a sync a usable access token,
//! refreshes tokens ahead of expiry with at most one refresh per connection in
//! flight across the fleet (finishing one that a stopped process cut short), and
//! revokes them; [`disconnect`]ing a connection.
//!
//! Tokens live in `SecretString` in memory, as [`crate::vault`] ciphertext in the
//! database, and
//! nowhere else: no log line, error or response carries one.

pub mod disconnect;
pub mod link;
pub mod oauth;
pub mod rotate;
pub mod sessions;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};

pub use link::{LinkError, LinkFailure, LinkStart, Linked, Linker};
pub use oauth::{OAuthClient, OAuthError, TokenSet};
pub use sessions::{SessionError, SessionRequest};

use crate::connectors::engine::Grant;
use crate::connectors::{Registry, RegistryError};
use crate::domain::ConnectionId;
use crate::store::{ConnectionRecord, Lease, Store, StoreError, TokenColumns};
use crate::vault::{Vault, VaultError, seal_context};

/// An access token this close to expiry is refreshed before use.
const REFRESH_MARGIN: chrono::Duration = chrono::Duration::seconds(60);
/// How long a refresh holds the connection's token lease before renewing it: one
/// token request's timeout and a margin, so a process that dies mid-refresh frees
/// the tokens within seconds. A live refresh renews it every [`LEASE_RENEW_EVERY`].
const TOKEN_LEASE: chrono::Duration = chrono::Duration::seconds(15);
const LEASE_RENEW_EVERY: Duration = Duration::from_secs(5);
/// A refresh (all its attempts and its save) gives up after this, lease or not.
const REFRESH_DEADLINE: Duration = Duration::from_secs(90);
/// How long a caller waits for another process's refresh before giving up: longer
/// than a dead process's lease takes to lapse.
const LEASE_WAIT: Duration = Duration::from_secs(30);
/// After a refresh that failed while its process lived, the background refresh
/// tries again this much later.
const RETRY_AFTER_FAILURE: chrono::Duration = chrono::Duration::minutes(1);

/// The reason a connection is given when a refresh cut short (a process stopped,
/// an answer lost) may have rotated the refresh token and the institution no
/// longer takes the one finsync kept.
pub const ROTATION_LOST: &str = "REAUTH_REQUIRED: a token refresh was cut short before its result was saved, and the institution no longer accepts the refresh token it replaced; the user must link again";

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
    /// A refresh was cut short after presenting the refresh token (`since`), so the
    /// institution may have rotated it, and it refused the token again. `grace` is
    /// the reuse grace the connector declares.
    #[error("a refresh cut short at {since} may have rotated the refresh token, and the institution refused it again ({detail}); {}", grace_note(*grace, *since))]
    RotationLost {
        since: DateTime<Utc>,
        grace: Option<Duration>,
        detail: String,
    },
}

impl TokenError {
    /// Whether only the user can fix it, by linking again.
    pub fn needs_reauth(&self) -> bool {
        matches!(self, Self::ReauthRequired(_) | Self::RotationLost { .. })
    }
}

/// Says whether the retry came inside the institution's declared reuse grace.
fn grace_note(grace: Option<Duration>, since: DateTime<Utc>) -> String {
    let elapsed = (Utc::now() - since).num_seconds();
    match grace {
        None => format!("the connector declares no reuse grace period; {elapsed} s had passed"),
        Some(grace) => format!(
            "the institution's declared reuse grace is {} s and {elapsed} s had passed",
            grace.as_secs()
        ),
    }
}

/// The seal context's field name for a connection's grant values.
pub const GRANT_VALUES: &str = "grant_values";

/// Seals a token set into the columns the store keeps, with the background refresh
/// due once `refresh_at_fraction` of the access token's lifetime has passed. Kept
/// values are sealed as one JSON object; none leaves the column `None`.
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
        grant_values: seal_values(vault, connection, &tokens.kept)?,
    })
}

fn seal_values(
    vault: &Vault,
    connection: ConnectionId,
    values: &BTreeMap<String, SecretString>,
) -> Result<Option<Vec<u8>>, VaultError> {
    if values.is_empty() {
        return Ok(None);
    }
    let object: BTreeMap<&str, &str> = values
        .iter()
        .map(|(name, value)| (name.as_str(), value.expose_secret()))
        .collect();
    let text = SecretString::from(serde_json::to_string(&object).unwrap_or_default());
    vault
        .seal(&seal_context(connection, GRANT_VALUES), &text)
        .map(Some)
}

/// The values a connection's grant came with, opened.
fn open_values(
    vault: &Vault,
    connection: &ConnectionRecord,
) -> Result<BTreeMap<String, SecretString>, TokenError> {
    let Some(sealed) = &connection.tokens.grant_values else {
        return Ok(BTreeMap::new());
    };
    let text = vault.open(&seal_context(connection.id, GRANT_VALUES), sealed)?;
    Ok(serde_json::from_str(text.expose_secret())
        .map_err(|_| StoreError::Corrupt(format!("connection {}: grant values", connection.id)))?)
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
    /// What the connection's requests carry: a valid access token and the values
    /// its grant came with. An expired or nearly expired token is refreshed first
    /// (see [`Self::refreshed_grant`]). A refused grant is `ReauthRequired`; the
    /// caller records it on the connection.
    pub async fn grant(&self, connection: &ConnectionRecord) -> Result<Grant, TokenError> {
        if fresh(&connection.tokens, Utc::now())
            && let Some(sealed) = &connection.tokens.access_token
        {
            return Ok(Grant {
                access_token: self
                    .vault
                    .open(&seal_context(connection.id, "access_token"), sealed)?,
                values: open_values(&self.vault, connection)?,
            });
        }
        self.refreshed_grant(connection).await
    }

    /// A valid access token for the connection (see [`Self::grant`]).
    pub async fn access_token(
        &self,
        connection: &ConnectionRecord,
    ) -> Result<SecretString, TokenError> {
        Ok(self.grant(connection).await?.access_token)
    }

    /// Refreshes the tokens that `seen` holds (see [`Self::refreshed_grant`]) and
    /// returns the new access token.
    pub async fn refreshed_token(
        &self,
        seen: &ConnectionRecord,
    ) -> Result<SecretString, TokenError> {
        Ok(self.refreshed_grant(seen).await?.access_token)
    }

    /// Refreshes the tokens that `seen` holds and returns the new grant: the access
    /// token and the values stored with it. Of
    /// all the processes that want to, one refreshes: the others wait for its
    /// commit and use what it stored, so a rotating refresh token is never
    /// presented twice by processes that are alive.
    ///
    /// The refresh holds a short token lease that it renews while it lives, and
    /// records that it is presenting the refresh token before it does: a process
    /// that dies meanwhile frees the tokens within seconds, and the next refresh
    /// knows the institution may have rotated the token (see
    /// [`Self::refresh_holding_lease`]).
    pub async fn refreshed_grant(&self, seen: &ConnectionRecord) -> Result<Grant, TokenError> {
        let owner = uuid::Uuid::new_v4().to_string();
        self.hold_token_lease(seen.id, &owner, TOKEN_LEASE, LEASE_WAIT)
            .await?;
        // The refresh and its commit run in a task of their own: if this caller is
        // cancelled (a worker shutting down), the rotated token is still committed.
        let (service, seen, lease) = (self.clone(), seen.clone(), owner.clone());
        let refresh = tokio::spawn(async move {
            let work = tokio::time::timeout(
                REFRESH_DEADLINE,
                service.refresh_holding_lease(&seen, &lease),
            );
            let result = tokio::select! {
                done = work => done.unwrap_or_else(|_| {
                    Err(TokenError::Refresh(OAuthError::Unavailable(
                        "the refresh took too long".into(),
                    )))
                }),
                lost = service.keep_lease(seen.id, &lease) => Err(lost),
            };
            if result.as_ref().is_err_and(|e| !e.needs_reauth()) {
                // Alive and failed: the background refresh comes back later, not
                // the moment the lease is free (that is for a refresh cut short).
                let later = Utc::now() + RETRY_AFTER_FAILURE;
                if let Err(e) = service.store.postpone_refresh(seen.id, &lease, later).await {
                    tracing::warn!(connection = %seen.id, error = %e, "Postponing the background refresh failed.");
                }
            }
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

    /// Renews the token lease while a refresh runs; returns only if another process
    /// took it over (this one stalled past the lease), and the refresh must stop.
    async fn keep_lease(&self, id: ConnectionId, owner: &str) -> TokenError {
        loop {
            tokio::time::sleep(LEASE_RENEW_EVERY).await;
            match self
                .store
                .acquire_lease(Lease::Token, id, owner, Utc::now() + TOKEN_LEASE)
                .await
            {
                Ok(true) => {}
                Ok(false) => {
                    tracing::warn!(connection = %id, "The token lease was taken over; stopping this refresh.");
                    return TokenError::Busy;
                }
                // The save is conditional on the lease: if it is gone by then, the
                // save says so.
                Err(e) => {
                    tracing::warn!(connection = %id, error = %e, "Renewing the token lease failed.")
                }
            }
        }
    }

    /// One refresh under the token lease. Before the token request it records that
    /// the stored refresh token is being presented; the save of what comes back
    /// clears that record. Finding the record already there means an earlier
    /// refresh was cut short after presenting the same token: the institution may
    /// have rotated it. The token is presented again at once (an institution with a
    /// reuse grace period accepts it; one whose request never arrived, too), and
    /// only if refused is the connection handed to the user, with
    /// [`TokenError::RotationLost`] saying why.
    async fn refresh_holding_lease(
        &self,
        seen: &ConnectionRecord,
        lease: &str,
    ) -> Result<Grant, TokenError> {
        let current = self.store.connection(seen.id).await?;
        // Opened before the token request: once the institution has rotated the
        // refresh token, nothing may stop the new one from being saved.
        let mut values = open_values(&self.vault, &current)?;
        // Someone refreshed while we waited: what they committed is ours to use.
        if current.tokens.access_token != seen.tokens.access_token
            && fresh(&current.tokens, Utc::now())
            && let Some(sealed) = &current.tokens.access_token
        {
            return Ok(Grant {
                access_token: self
                    .vault
                    .open(&seal_context(current.id, "access_token"), sealed)?,
                values,
            });
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
        let grace = connector.auth.refresh_token_reuse_grace;
        if let Some(since) = current.refresh_started_at {
            tracing::warn!(connection = %current.id, %since, reuse_grace_secs = grace.map(|g| g.as_secs()), "An earlier refresh was cut short; presenting the same refresh token again.");
        }
        let started = Utc::now();
        let due_by = current
            .tokens
            .refresh_due_at
            .map_or(started + TOKEN_LEASE, |due| due.min(started + TOKEN_LEASE));
        if !self
            .store
            .record_refresh_intent(current.id, lease, started, due_by)
            .await?
        {
            return Err(TokenError::Busy);
        }
        // Transient failures are retried here; a refused grant is final. A failed
        // attempt may still have rotated the token at the institution.
        let uncertain = std::sync::atomic::AtomicBool::new(false);
        let attempt = || client.refresh(&refresh);
        let outcome = attempt
            .retry(
                ExponentialBuilder::default()
                    .with_jitter()
                    .with_min_delay(Duration::from_millis(200))
                    .with_max_times(3),
            )
            .when(|e| matches!(e, OAuthError::Unavailable(_)))
            .notify(|_, _| uncertain.store(true, std::sync::atomic::Ordering::Relaxed))
            .await;
        let mut tokens = match outcome {
            Ok(tokens) => tokens,
            Err(OAuthError::InvalidGrant(reason)) => {
                refreshed(&current.institution_id, "invalid_grant");
                let cut_short = current.refresh_started_at.or(uncertain
                    .load(std::sync::atomic::Ordering::Relaxed)
                    .then_some(started));
                return Err(match cut_short {
                    Some(since) => TokenError::RotationLost {
                        since,
                        grace,
                        detail: reason,
                    },
                    None => TokenError::ReauthRequired(format!("refresh refused: {reason}")),
                });
            }
            Err(e) => {
                refreshed(&current.institution_id, "error");
                return Err(e.into());
            }
        };
        if !tokens.kept.is_empty() {
            // What this response left out is still the grant's.
            values.append(&mut tokens.kept);
            tokens.kept = values.clone();
        }
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
        let outcome = if current.refresh_started_at.is_some() {
            "recovered"
        } else {
            "ok"
        };
        refreshed(&current.institution_id, outcome);
        tracing::info!(connection = %current.id, expires_at = %tokens.expires_at, outcome, "Access token refreshed.");
        Ok(Grant {
            access_token: tokens.access_token,
            values,
        })
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

/// Counts a refresh outcome for metrics: `ok`, `recovered` (after one cut short),
/// `invalid_grant`, `error`, `discarded`, `lost`.
fn refreshed(institution: &str, outcome: &'static str) {
    metrics::counter!("finsync_token_refresh_total", "institution" => institution.to_owned(), "outcome" => outcome)
        .increment(1);
}
