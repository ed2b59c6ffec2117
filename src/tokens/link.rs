//! Linking a user to an institution: the authorization code flow with PKCE and a
//! single-use, expiring `state`. Only a hash of the state is stored, and the PKCE
//! verifier is sealed in the vault, so the database alone cannot complete a link.

use std::sync::Arc;

use chrono::Utc;
use secrecy::ExposeSecret;

use super::oauth::{OAuthClient, OAuthError};
use super::seal_tokens;
use super::sessions::BrowserKeys;
use crate::connectors::{Registry, RegistryError};
use crate::domain::{
    ConnectionId, ConnectionStatus, LinkSessionId, LinkSessionStatus, TenantId, UserId,
};
use crate::store::{
    Actor, AuditEntry, ConnectionRecord, LinkSessionRecord, NewState, Store, StoreError,
};
use crate::vault::{Vault, VaultError, seal_context};

/// How long a user has to finish at the institution.
const STATE_LIFETIME: chrono::Duration = chrono::Duration::minutes(10);

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LinkError {
    #[error("unknown, expired or already used link state")]
    InvalidState,
    #[error("the user did not grant access at the institution ({0})")]
    Denied(String),
    #[error("the institution refused the authorization code: {0}")]
    Exchange(#[from] OAuthError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Vault(#[from] VaultError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The tenant is limited to other institutions.
    #[error("institution `{0}` is not one this tenant offers its users")]
    NotOffered(String),
    /// The app's link session ended, or another attempt began, before this
    /// authorization came back: it is not kept.
    #[error("the link session this authorization belongs to is over")]
    SessionOver,
    /// The authorization came back to another browser than the one that opened
    /// its link session.
    #[error("the authorization came back to another browser than its link session's")]
    OtherBrowser,
    /// The grant lacks a value the connector's requests carry: the deployment's to
    /// fix (`keep`, `nested_under`), not the user's.
    #[error(
        "the institution's token response has no `{0}`, which the connector's requests carry; check `keep` and `nested_under` under [auth.token_response]"
    )]
    Incomplete(String),
    /// The institution did not approve a test user without a login page.
    #[error("linking the test user: {0}")]
    TestUser(String),
}

/// A completed link.
pub struct Linked {
    pub connection_id: ConnectionId,
    /// The connection as it was before: what the link changed it from (a
    /// `reauth_required` connection has just been repaired).
    pub previous: ConnectionRecord,
    /// The app's link session the link ended, as it ended.
    pub session: Option<LinkSessionRecord>,
}

/// A link that did not complete, and the app's session it belonged to (none when
/// the state was unknown, or an admin started the link).
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct LinkFailure {
    pub session: Option<LinkSessionId>,
    #[source]
    pub error: LinkError,
}

impl From<LinkError> for LinkFailure {
    fn from(error: LinkError) -> Self {
        Self {
            session: None,
            error,
        }
    }
}

pub struct LinkStart {
    pub connection_id: ConnectionId,
    pub authorize_url: url::Url,
    /// Until when the user may come back from the institution.
    pub expires_at: chrono::DateTime<Utc>,
    /// The hash of the authorization's state: which attempt of a session it is.
    pub attempt: String,
}

#[derive(Clone)]
pub struct Linker {
    pub store: Store,
    pub vault: Arc<Vault>,
    pub registry: Arc<Registry>,
    pub http: reqwest::Client,
    /// `<public_url>/oauth/callback`.
    pub redirect_uri: url::Url,
    /// `<public_url>/link/`: where link sessions' pages are.
    pub link_base: url::Url,
    /// How long an app's link session lasts.
    pub session_lifetime: chrono::Duration,
    pub refresh_at_fraction: f64,
}

impl Linker {
    /// Links `user` the way a browser would, for an institution that approves its
    /// test users without a login page (the sandbox, test authorization servers):
    /// opens the authorization URL, follows its redirect to our callback, and so
    /// completes the link and enqueues the first sync. The demo, benchmarks and
    /// tests link this way.
    pub async fn link_test_user(
        &self,
        http: &reqwest::Client,
        tenant: TenantId,
        user: &UserId,
        institution: &str,
    ) -> Result<ConnectionId, LinkError> {
        use reqwest::StatusCode;
        use reqwest::header::LOCATION;
        let audit = AuditEntry::new(Actor::cli(), "link.started");
        let start = self.start(tenant, user, institution, audit).await?;
        let consent = http
            .get(start.authorize_url.clone())
            .send()
            .await
            .map_err(|e| {
                LinkError::TestUser(format!(
                    "opening the authorization URL: {}",
                    e.without_url()
                ))
            })?;
        if consent.status() != StatusCode::FOUND && consent.status() != StatusCode::SEE_OTHER {
            return Err(LinkError::TestUser(format!(
                "the institution answered {} instead of redirecting back",
                consent.status()
            )));
        }
        let callback = consent
            .headers()
            .get(LOCATION)
            .and_then(|l| l.to_str().ok())
            .ok_or_else(|| {
                LinkError::TestUser("the institution's redirect has no Location".into())
            })?
            .to_owned();
        let done = http.get(&callback).send().await.map_err(|e| {
            LinkError::TestUser(format!(
                "following the redirect to the callback: {}",
                e.without_url()
            ))
        })?;
        if !done.status().is_success() {
            return Err(LinkError::TestUser(format!(
                "the callback answered {}: {}",
                done.status(),
                done.text().await.unwrap_or_default()
            )));
        }
        Ok(start.connection_id)
    }

    /// Starts (or restarts) linking `user` of `tenant` to `institution`, recording
    /// `audit` with it: returns the URL to send the user to.
    pub async fn start(
        &self,
        tenant: TenantId,
        user: &UserId,
        institution: &str,
        audit: AuditEntry,
    ) -> Result<LinkStart, LinkError> {
        self.begin(tenant, user, institution, None, audit).await
    }

    /// [`Self::start`] for an app's link session, whose outcome the callback records.
    pub(super) async fn begin(
        &self,
        tenant: TenantId,
        user: &UserId,
        institution: &str,
        session: Option<LinkSessionId>,
        audit: AuditEntry,
    ) -> Result<LinkStart, LinkError> {
        let connector = self.registry.get(institution)?;
        self.offered(tenant, &connector.id).await?;
        let client = self.client(institution, &self.redirect_uri)?;
        let connection = self
            .store
            .upsert_connection(tenant, user, &connector.id)
            .await?;
        let authorization = client.authorize(Some(user.as_str()));
        let verifier = match &authorization.pkce_verifier {
            Some(v) => self
                .vault
                .seal(&seal_context(connection.id, "pkce_verifier"), v)?,
            None => Vec::new(),
        };
        let state_hash = hash_state(authorization.state.expose_secret());
        let audit = audit
            .target(format!("connection:{}", connection.id))
            .detail(serde_json::json!({
                "tenant": tenant,
                "institution": connector.id,
                "link_session": session,
            }));
        self.store
            .insert_state(
                NewState {
                    state_hash: state_hash.clone(),
                    link_session: session,
                    connection_id: connection.id,
                    sealed_verifier: verifier,
                    redirect_uri: self.redirect_uri.to_string(),
                    expires_at: Utc::now() + STATE_LIFETIME,
                },
                audit,
            )
            .await?;
        tracing::info!(connection = %connection.id, institution, "Link started.");
        Ok(LinkStart {
            connection_id: connection.id,
            authorize_url: authorization.url,
            expires_at: Utc::now() + STATE_LIFETIME,
            attempt: state_hash,
        })
    }

    /// Refuses an institution the tenant does not offer its users.
    pub(super) async fn offered(
        &self,
        tenant: TenantId,
        institution: &str,
    ) -> Result<(), LinkError> {
        match self.store.tenant_institutions(tenant).await? {
            Some(offered) if !offered.iter().any(|id| id == institution) => {
                Err(LinkError::NotOffered(institution.to_owned()))
            }
            _ => Ok(()),
        }
    }

    /// Completes a link from the institution's redirect. The state is consumed
    /// before anything else happens, so a replay finds it used and changes nothing.
    /// An app's session is checked first: the authorization must be its current
    /// one, from the browser that opened it (`browsers`: the session keys the
    /// browser came back with), and the session still open; a failure is noted on
    /// the session for a retry.
    pub async fn complete(
        &self,
        state: &str,
        outcome: Result<&str, &str>,
        browsers: &BrowserKeys,
    ) -> Result<Linked, LinkFailure> {
        let hash = hash_state(state);
        // The browser is checked before the state is used: an answer that reached
        // the wrong browser leaves the attempt for the right one.
        let session = match self.store.state(&hash).await.map_err(LinkError::from)? {
            Some(stored) => match stored.link_session_id.as_deref() {
                Some(raw) => Some(self.session_of_state(raw, browsers).await?),
                None => None,
            },
            None => None,
        };
        let record = self
            .store
            .consume_state(&hash)
            .await
            .map_err(LinkError::from)?
            .ok_or(LinkError::InvalidState)?;
        let Some(session) = session else {
            return Ok(self.exchange(record, outcome, None).await?);
        };
        let fail = |error| LinkFailure {
            session: Some(session.id),
            error,
        };
        if session.status != LinkSessionStatus::Open
            || session.attempt.as_deref() != Some(record.state_hash.as_str())
        {
            return Err(fail(LinkError::SessionOver));
        }
        let attempt = record.state_hash.clone();
        match self.exchange(record, outcome, Some(&session)).await {
            Ok(linked) => Ok(linked),
            Err(error) => {
                if let Err(e) = self
                    .store
                    .note_link_session_error(
                        session.id,
                        &attempt,
                        super::sessions::failure_code(&error),
                    )
                    .await
                {
                    tracing::error!(session = %session.id, error = %e, "Could not note why a link failed on its session.");
                }
                Err(fail(error))
            }
        }
    }

    /// The session a state belongs to, if the browser is the one that opened it.
    async fn session_of_state(
        &self,
        raw: &str,
        browsers: &BrowserKeys,
    ) -> Result<LinkSessionRecord, LinkFailure> {
        let id: LinkSessionId = raw.parse().map_err(|_| {
            LinkError::Store(StoreError::Corrupt("oauth state link session".into()))
        })?;
        let fail = |error| LinkFailure {
            session: Some(id),
            error,
        };
        let session = self
            .store
            .link_session(id)
            .await
            .map_err(|e| fail(e.into()))?
            .ok_or_else(|| fail(LinkError::SessionOver))?;
        let same_browser = matches!(
            (&session.browser_hash, browsers.for_session(id)),
            (Some(hash), Some(key)) if crate::fingerprint::same(hash, &super::sessions::browser_hash_of(key))
        );
        if !same_browser {
            return Err(fail(LinkError::OtherBrowser));
        }
        Ok(session)
    }

    async fn exchange(
        &self,
        record: crate::store::entities::oauth_state::Model,
        outcome: Result<&str, &str>,
        session: Option<&LinkSessionRecord>,
    ) -> Result<Linked, LinkError> {
        let connection_id: ConnectionId = record
            .connection_id
            .parse()
            .map_err(|_| StoreError::Corrupt("oauth state connection".into()))?;
        let code = match outcome {
            Ok(code) => code,
            Err(error) => {
                tracing::info!(connection = %connection_id, error, "Link declined at the institution.");
                return Err(LinkError::Denied(error.to_owned()));
            }
        };
        let connection = self.store.connection(connection_id).await?;
        // An admin may have narrowed the tenant's institutions since the link began.
        self.offered(connection.tenant_id, &connection.institution_id)
            .await?;
        // The exchange must name the redirect URI the authorization used (RFC 6749
        // §4.1.3), even if this deployment's public URL changed in between.
        let redirect = url::Url::parse(&record.redirect_uri)
            .map_err(|_| StoreError::Corrupt("oauth state redirect URI".into()))?;
        let client = self.client(&connection.institution_id, &redirect)?;
        let verifier = if record.pkce_verifier.is_empty() {
            None
        } else {
            Some(self.vault.open(
                &seal_context(connection_id, "pkce_verifier"),
                &record.pkce_verifier,
            )?)
        };
        let tokens = client.exchange_code(code, verifier.as_ref()).await?;
        let connector = self.registry.get(&connection.institution_id)?;
        if let Some(name) = connector
            .grant_values_needed()
            .into_iter()
            .find(|name| !tokens.kept.contains_key(*name))
        {
            // Of no use: handed back rather than kept.
            if let Some(refresh) = &tokens.refresh_token
                && let Err(error) = client.revoke(refresh).await
            {
                tracing::warn!(%error, "Could not revoke a grant that lacks a kept value.");
            }
            return Err(LinkError::Incomplete(name.to_owned()));
        }
        let columns = seal_tokens(
            &self.vault,
            connection_id,
            &tokens,
            self.refresh_at_fraction,
        )?;
        let consent_expires_at = connector
            .auth
            .consent_lifetime_days
            .map(|days| tokens.issued_at + chrono::Duration::days(i64::from(days)));
        // The session ends with this link before the grant is kept: a user who
        // left meanwhile, or began another attempt, must not find one linked.
        let session = match session {
            Some(session) => {
                let status = if session.repair_connection_id.is_some()
                    || connection.status == ConnectionStatus::ReauthRequired
                {
                    LinkSessionStatus::Repaired
                } else {
                    LinkSessionStatus::Linked
                };
                let attempt = &record.state_hash;
                if !self
                    .store
                    .finish_link_attempt(session.id, attempt, status, connection_id, Utc::now())
                    .await?
                {
                    if let Some(refresh) = &tokens.refresh_token
                        && let Err(error) = client.revoke(refresh).await
                    {
                        tracing::warn!(%error, "Could not revoke a grant whose link session had ended.");
                    }
                    return Err(LinkError::SessionOver);
                }
                self.store.link_session(session.id).await?
            }
            None => None,
        };
        let action = if connection.status == ConnectionStatus::ReauthRequired {
            "connection.repaired"
        } else {
            "connection.linked"
        };
        let audit = AuditEntry::new(Actor::user(), action).detail(serde_json::json!({
            "institution": connection.institution_id,
            "link_session": session.as_ref().map(|s| s.id),
        }));
        let saved = self
            .store
            .save_grant(
                connection_id,
                columns,
                tokens.scopes.clone(),
                consent_expires_at,
                audit,
            )
            .await;
        if let Err(error) = saved {
            // The session said linked a moment ago: it must not stay so.
            if let Some(session) = &session {
                if let Err(e) = self
                    .store
                    .unfinish_link_session(session.id, super::sessions::codes::INTERNAL)
                    .await
                {
                    tracing::error!(session = %session.id, error = %e, "A link session says linked though its grant was not kept.");
                }
                if let Some(refresh) = &tokens.refresh_token
                    && let Err(e) = client.revoke(refresh).await
                {
                    tracing::warn!(error = %e, "Could not revoke a grant that was not kept.");
                }
            }
            return Err(error.into());
        }
        tracing::info!(
            connection = %connection_id,
            from = %connection.status,
            status = "active",
            "Connection linked."
        );
        Ok(Linked {
            connection_id,
            previous: connection,
            session,
        })
    }

    fn client(&self, institution: &str, redirect: &url::Url) -> Result<OAuthClient, LinkError> {
        let connector = self.registry.get(institution)?;
        let secret = self.registry.client_secret(&connector)?;
        Ok(OAuthClient::new(
            &connector,
            secret,
            redirect,
            self.http.clone(),
        ))
    }
}

fn hash_state(state: &str) -> String {
    crate::fingerprint::sha256_hex(state.as_bytes())
}
