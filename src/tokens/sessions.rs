//! Link sessions: an advisory app links its own user. The app's backend creates a
//! session (bound to its tenant and user, returning to a redirect URI the tenant
//! registered); the user opens its single-use link URL in a browser, which is then
//! the only browser that may carry on, up to the callback (it holds a cookie whose
//! hash the session keeps); the user picks an institution and consents in the
//! hosted page and goes to the institution through [`Linker::begin`]. Only the
//! latest such attempt may end the session: the callback
//! ([`Linker::complete`]) ends it before keeping the grant, so a user who left, or
//! tried again, never finds an older attempt linked behind their back. The
//! session says how it ended, and [`return_url`] sends the user back with it.
//!
//! The link URL's token is kept sealed, so the URL of a session nobody opened yet
//! can be handed out again (a connection's repair link) without another row.

use chrono::{DateTime, Utc};
use rand::RngExt;
use secrecy::{ExposeSecret, SecretString};

use super::link::{LinkError, Linker};
use crate::connectors::RegistryError;
use crate::domain::{
    ConnectionId, ConnectionStatus, LinkSessionId, LinkSessionStatus, TenantId, UserId,
};
use crate::store::{Actor, AuditEntry, LinkSessionRecord, NewLinkSession, StoreError};
use crate::vault::VaultError;

/// What an app can ask a session to read.
pub const PRODUCTS: [&str; 3] = ["accounts", "holdings", "transactions"];
/// A repair link handed out again is good for at least this long.
const REUSE_MARGIN: chrono::Duration = chrono::Duration::minutes(5);

/// The stable codes a session's error carries (and the return URL, lower-cased).
pub mod codes {
    /// The user declined, in the link page or at the institution.
    pub const CONSENT_DENIED: &str = "CONSENT_DENIED";
    /// The institution failed to complete the authorization.
    pub const INSTITUTION_ERROR: &str = "INSTITUTION_ERROR";
    /// The session ran out before the user finished.
    pub const SESSION_EXPIRED: &str = "SESSION_EXPIRED";
    /// The institution is no longer offered to the tenant's users.
    pub const NOT_OFFERED: &str = "NOT_OFFERED";
    /// Something on our side; the user may try again later.
    pub const INTERNAL: &str = "INTERNAL";
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    #[error(
        "redirect_uri `{0}` is not one this tenant registered (an admin registers them with PUT /admin/tenants/{{id}}/redirect-uris)"
    )]
    RedirectNotRegistered(String),
    #[error("unknown product `{0}`: use accounts, holdings or transactions")]
    UnknownProduct(String),
    #[error("institution `{institution}` does not offer `{product}`")]
    ProductNotOffered {
        institution: String,
        product: String,
    },
    #[error("no connection `{0}` for this user")]
    NoSuchConnection(String),
    #[error("connection `{connection}` is with `{linked}`, not `{asked}`")]
    OtherInstitution {
        connection: String,
        linked: String,
        asked: String,
    },
    #[error(
        "connection `{0}` was disconnected; open a session without connection_id to link again"
    )]
    Revoked(String),
    /// The link URL's token is wrong, or the session does not exist.
    #[error("unknown link session")]
    Unknown,
    /// The link URL was opened before (by another browser, or this one).
    #[error("this link has already been used")]
    Used,
    #[error("this link session has expired")]
    Expired,
    #[error("this link session has ended ({0})")]
    Ended(LinkSessionStatus),
    /// The request did not come from the browser that opened the session.
    #[error("this link session was opened in another browser")]
    OtherBrowser,
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error(transparent)]
    Vault(#[from] VaultError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<RegistryError> for SessionError {
    fn from(e: RegistryError) -> Self {
        Self::Link(LinkError::Registry(e))
    }
}

/// What an app asks for.
pub struct SessionRequest {
    pub user: UserId,
    pub institution: Option<String>,
    pub redirect_uri: String,
    pub products: Vec<String>,
    /// The connection to repair.
    pub repair: Option<ConnectionId>,
}

/// A session just made, with the URL to send the user to.
pub struct NewSession {
    pub session: LinkSessionRecord,
    pub link_url: url::Url,
}

/// A browser's hold on the session it opened: the cookie's value.
pub struct BrowserKey(pub SecretString);

/// The keys a browser came back from an institution with, by the session they
/// belong to (a browser may be in several sessions at once).
#[derive(Default)]
pub struct BrowserKeys(pub Vec<(LinkSessionId, String)>);

impl BrowserKeys {
    pub fn for_session(&self, id: LinkSessionId) -> Option<&str> {
        self.0
            .iter()
            .find(|(session, _)| *session == id)
            .map(|(_, key)| key.as_str())
    }
}

impl Linker {
    /// Creates a session for `tenant`'s user, after checking everything the user
    /// could not fix: the redirect URI, the products, the institution, the
    /// connection to repair.
    pub async fn create_session(
        &self,
        tenant: TenantId,
        request: SessionRequest,
    ) -> Result<NewSession, SessionError> {
        let registered = self.store.tenant_redirect_uris(tenant).await?;
        if !registered.contains(&request.redirect_uri) {
            return Err(SessionError::RedirectNotRegistered(request.redirect_uri));
        }
        let mut products = Vec::new();
        for product in request.products {
            if !PRODUCTS.contains(&product.as_str()) {
                return Err(SessionError::UnknownProduct(product));
            }
            if !products.contains(&product) {
                products.push(product);
            }
        }
        let mut institution = request.institution;
        if let Some(repair) = request.repair {
            let connection = self
                .store
                .user_connections(tenant, &request.user)
                .await?
                .into_iter()
                .find(|c| c.id == repair)
                .ok_or_else(|| SessionError::NoSuchConnection(repair.to_string()))?;
            if connection.status == ConnectionStatus::Revoked {
                return Err(SessionError::Revoked(repair.to_string()));
            }
            match institution.as_deref() {
                Some(asked) if asked != connection.institution_id => {
                    return Err(SessionError::OtherInstitution {
                        connection: repair.to_string(),
                        linked: connection.institution_id,
                        asked: asked.to_owned(),
                    });
                }
                _ => institution = Some(connection.institution_id),
            }
        }
        if let Some(id) = &institution {
            self.check_institution(tenant, id, &products).await?;
        }
        let id = LinkSessionId::new();
        let token = random_secret();
        let session = self
            .store
            .insert_link_session(NewLinkSession {
                id,
                tenant_id: tenant,
                user_id: request.user,
                institution_id: institution,
                products,
                redirect_uri: request.redirect_uri,
                repair_connection_id: request.repair,
                sealed_token: self.vault.seal(&token_context(id), &token)?,
                expires_at: Utc::now() + self.session_lifetime,
            })
            .await?;
        tracing::info!(tenant = %tenant, session = %id, "Link session created.");
        let link_url = self.link_url(&session)?;
        Ok(NewSession { session, link_url })
    }

    /// The link URL of `session`: the page's address and the session's token.
    pub fn link_url(&self, session: &LinkSessionRecord) -> Result<url::Url, SessionError> {
        let token = self
            .vault
            .open(&token_context(session.id), &session.sealed_token)?;
        let mut url = self
            .link_base
            .join(&session.id.to_string())
            .map_err(|_| SessionError::Store(StoreError::Corrupt("link page address".into())))?;
        url.query_pairs_mut()
            .append_pair("token", token.expose_secret());
        Ok(url)
    }

    /// Where to send the user to link `connection` again, when it needs them: the
    /// link URL of a repair session returning to the tenant's first redirect URI,
    /// one not yet opened if there is one, else a new one. `None` when nothing can
    /// be offered (no redirect URI registered, the institution withdrawn).
    pub async fn repair_url(
        &self,
        connection: &crate::store::ConnectionRecord,
    ) -> Result<Option<url::Url>, SessionError> {
        if connection.status != ConnectionStatus::ReauthRequired {
            return Ok(None);
        }
        let Some(redirect_uri) = self
            .store
            .tenant_redirect_uris(connection.tenant_id)
            .await?
            .into_iter()
            .next()
        else {
            return Ok(None);
        };
        let now = Utc::now();
        if let Some(session) = self
            .store
            .pending_repair_session(connection.id, &redirect_uri, now + REUSE_MARGIN)
            .await?
            // A token sealed under a key since retired cannot be shown again.
            && let Ok(url) = self.link_url(&session)
        {
            return Ok(Some(url));
        }
        let created = self
            .create_session(
                connection.tenant_id,
                SessionRequest {
                    user: connection.user_id.clone(),
                    institution: None,
                    redirect_uri,
                    products: Vec::new(),
                    repair: Some(connection.id),
                },
            )
            .await;
        match created {
            Ok(new) => Ok(Some(new.link_url)),
            Err(SessionError::Link(LinkError::NotOffered(_) | LinkError::Registry(_))) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The session a link URL names, if its token is right and nobody opened it
    /// yet (a look that changes nothing: link scanners and previews fetch URLs).
    pub async fn peek_session(
        &self,
        id: LinkSessionId,
        token: &str,
    ) -> Result<LinkSessionRecord, SessionError> {
        let session = self
            .store
            .link_session(id)
            .await?
            .ok_or(SessionError::Unknown)?;
        let expected = self
            .vault
            .open(&token_context(id), &session.sealed_token)
            .map_err(|_| SessionError::Unknown)?;
        if !crate::fingerprint::same(expected.expose_secret(), token) {
            return Err(SessionError::Unknown);
        }
        match session.status_at(Utc::now()) {
            LinkSessionStatus::Pending => Ok(session),
            LinkSessionStatus::Open => Err(SessionError::Used),
            LinkSessionStatus::Expired => Err(SessionError::Expired),
            ended => Err(SessionError::Ended(ended)),
        }
    }

    /// Opens a session from its link URL: the first browser to present the token
    /// gets the key it carries on with; any later opening is refused.
    pub async fn open_session(
        &self,
        id: LinkSessionId,
        token: &str,
    ) -> Result<(LinkSessionRecord, BrowserKey), SessionError> {
        self.peek_session(id, token).await?;
        let key = random_secret();
        if !self
            .store
            .open_link_session(id, &browser_hash(&key), Utc::now())
            .await?
        {
            // Another browser got there first.
            return Err(SessionError::Used);
        }
        tracing::info!(session = %id, "Link session opened.");
        let session = self
            .store
            .link_session(id)
            .await?
            .ok_or(SessionError::Unknown)?;
        Ok((session, BrowserKey(key)))
    }

    /// The session `key`'s browser opened, as it is now (ended or expired too:
    /// the page says so).
    pub async fn session_for(
        &self,
        id: LinkSessionId,
        key: Option<&str>,
    ) -> Result<LinkSessionRecord, SessionError> {
        let session = self
            .store
            .link_session(id)
            .await?
            .ok_or(SessionError::Unknown)?;
        match (&session.browser_hash, key) {
            (Some(hash), Some(key)) if crate::fingerprint::same(hash, &browser_hash_of(key)) => {
                Ok(session)
            }
            (None, _) if session.status_at(Utc::now()) == LinkSessionStatus::Pending => {
                Err(SessionError::Unknown)
            }
            _ => Err(SessionError::OtherBrowser),
        }
    }

    /// Checks that `institution` may be offered in `tenant`'s sessions for
    /// `products`.
    pub async fn check_institution(
        &self,
        tenant: TenantId,
        institution: &str,
        products: &[String],
    ) -> Result<(), SessionError> {
        let connector = self.registry.get(institution)?;
        self.offered(tenant, &connector.id).await?;
        if let Some(missing) = products.iter().find(|p| !connector.products.contains(p)) {
            return Err(SessionError::ProductNotOffered {
                institution: connector.id.clone(),
                product: missing.clone(),
            });
        }
        Ok(())
    }

    /// Sends the session's user to `institution` to authorize: returns the
    /// institution's authorization URL.
    pub async fn authorize_session(
        &self,
        id: LinkSessionId,
        key: &str,
        institution: &str,
    ) -> Result<url::Url, SessionError> {
        let session = self.live_session(id, key).await?;
        if let Some(fixed) = &session.institution_id
            && session.repair_connection_id.is_some()
            && fixed != institution
        {
            return Err(SessionError::OtherInstitution {
                connection: session
                    .repair_connection_id
                    .map(|c| c.to_string())
                    .unwrap_or_default(),
                linked: fixed.clone(),
                asked: institution.to_owned(),
            });
        }
        self.check_institution(session.tenant_id, institution, &session.products)
            .await?;
        // Disconnected since the session was made: nothing to repair any more.
        if let Some(repair) = session.repair_connection_id
            && self.store.connection(repair).await?.status == ConnectionStatus::Revoked
        {
            return Err(SessionError::Revoked(repair.to_string()));
        }
        let start = self
            .begin(
                session.tenant_id,
                &session.user_id,
                institution,
                Some(id),
                AuditEntry::new(Actor::user(), "link.started"),
            )
            .await?;
        let now = Utc::now();
        if !self
            .store
            .begin_link_authorization(
                id,
                &start.attempt,
                institution,
                start.connection_id,
                start.expires_at,
                now,
            )
            .await?
        {
            return Err(SessionError::Expired);
        }
        tracing::info!(session = %id, connection = %start.connection_id, institution, "Link session sent the user to the institution.");
        Ok(start.authorize_url)
    }

    /// Ends a session the user leaves without linking: `denied` if they declined
    /// (or gave up before trying), `failed` if the last attempt failed, `expired`
    /// if time ran out. Returns the session as it ended.
    pub async fn leave_session(
        &self,
        id: LinkSessionId,
        key: &str,
    ) -> Result<LinkSessionRecord, SessionError> {
        let session = self.session_for(id, Some(key)).await?;
        let now = Utc::now();
        let (status, error) = match (session.status_at(now), session.error.as_deref()) {
            (LinkSessionStatus::Expired, _) => (LinkSessionStatus::Expired, codes::SESSION_EXPIRED),
            (LinkSessionStatus::Open, None | Some(codes::CONSENT_DENIED)) => {
                (LinkSessionStatus::Denied, codes::CONSENT_DENIED)
            }
            (LinkSessionStatus::Open, Some(code)) => (LinkSessionStatus::Failed, code),
            // Already over: the user goes back with the outcome it had.
            _ => return Ok(session),
        };
        let code = error.to_owned();
        self.store
            .finish_link_session(id, status, &code, now)
            .await?;
        tracing::info!(session = %id, status = %status, "Link session left.");
        self.store
            .link_session(id)
            .await?
            .ok_or(SessionError::Unknown)
    }

    async fn live_session(
        &self,
        id: LinkSessionId,
        key: &str,
    ) -> Result<LinkSessionRecord, SessionError> {
        let session = self.session_for(id, Some(key)).await?;
        match session.status_at(Utc::now()) {
            LinkSessionStatus::Open => Ok(session),
            LinkSessionStatus::Expired => Err(SessionError::Expired),
            ended => Err(SessionError::Ended(ended)),
        }
    }
}

/// Where the user goes back to the app after `session`: its redirect URI with
/// `link_session_id`, `status`, and `connection_id` on success or `error` (a
/// lower-cased code) otherwise. Never a token or a code.
pub fn return_url(session: &LinkSessionRecord, now: DateTime<Utc>) -> Option<url::Url> {
    let mut url = url::Url::parse(&session.redirect_uri).ok()?;
    let status = session.status_at(now);
    {
        let mut query = url.query_pairs_mut();
        query.append_pair("link_session_id", &session.id.to_string());
        query.append_pair("status", status.as_str());
        match status {
            LinkSessionStatus::Linked | LinkSessionStatus::Repaired => {
                if let Some(connection) = session.connection_id {
                    query.append_pair("connection_id", &connection.to_string());
                }
            }
            LinkSessionStatus::Expired => {
                query.append_pair("error", &codes::SESSION_EXPIRED.to_lowercase());
            }
            _ => {
                if let Some(error) = &session.error {
                    query.append_pair("error", &error.to_lowercase());
                }
            }
        }
    }
    Some(url)
}

/// Checks a redirect URI an admin registers: an absolute https URL without
/// credentials or fragment; plain http only to this machine (an app developer's
/// loopback server).
pub fn check_redirect_uri(uri: &str) -> Result<(), String> {
    let url = url::Url::parse(uri).map_err(|e| format!("`{uri}` is not an absolute URL ({e})"))?;
    if url.as_str() != uri {
        return Err(format!(
            "`{uri}` must be written in its normal form, `{url}`, to be matched exactly"
        ));
    }
    if url.fragment().is_some() {
        return Err(format!("`{uri}` must not have a fragment"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!("`{uri}` must not carry credentials"));
    }
    match url.scheme() {
        "https" => Ok(()),
        "http" if is_loopback(&url) => Ok(()),
        "http" => Err(format!(
            "`{uri}` must use https (plain http only for 127.0.0.1, [::1] or localhost)"
        )),
        other => Err(format!("`{uri}` must use https, not `{other}`")),
    }
}

fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(name)) => name == "localhost",
        None => false,
    }
}

/// The stable code a session keeps for why a link failed.
pub(super) fn failure_code(error: &LinkError) -> &'static str {
    match error {
        LinkError::Denied(_) => codes::CONSENT_DENIED,
        LinkError::Exchange(_) => codes::INSTITUTION_ERROR,
        LinkError::NotOffered(_) => codes::NOT_OFFERED,
        _ => codes::INTERNAL,
    }
}

fn token_context(id: LinkSessionId) -> String {
    format!("link_session:{id}:token")
}

fn random_secret() -> SecretString {
    let bytes: [u8; 32] = rand::rng().random();
    SecretString::from(hex::encode(bytes))
}

fn browser_hash(key: &SecretString) -> String {
    browser_hash_of(key.expose_secret())
}

pub(super) fn browser_hash_of(key: &str) -> String {
    crate::fingerprint::sha256_hex(key.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_uris_are_https_or_loopback_in_normal_form() {
        for good in [
            "https://app.example.com/linked",
            "http://127.0.0.1:3000/cb",
            "http://localhost:8080/cb",
            "http://[::1]:9/cb",
        ] {
            assert_eq!(check_redirect_uri(good), Ok(()), "{good}");
        }
        for (bad, says) in [
            ("http://app.example.com/cb", "must use https"),
            ("https://app.example.com/cb#x", "fragment"),
            ("https://u:p@app.example.com/cb", "credentials"),
            ("javascript:alert(1)", "must use https"),
            ("/relative", "not an absolute URL"),
            ("HTTPS://App.Example.com", "normal form"),
        ] {
            let error = check_redirect_uri(bad).unwrap_err();
            assert!(error.contains(says), "{bad}: {error}");
        }
    }

    fn session(status: LinkSessionStatus, error: Option<&str>) -> LinkSessionRecord {
        LinkSessionRecord {
            id: LinkSessionId::new(),
            tenant_id: TenantId::new(),
            user_id: UserId::parse("ada").unwrap(),
            institution_id: Some("meridian".into()),
            products: Vec::new(),
            redirect_uri: "https://app.example.com/linked?from=finsync".into(),
            repair_connection_id: None,
            connection_id: Some(ConnectionId::new()),
            sealed_token: Vec::new(),
            browser_hash: None,
            attempt: None,
            status,
            error: error.map(str::to_owned),
            created_at: Utc::now(),
            expires_at: Utc::now() + chrono::Duration::minutes(30),
            opened_at: None,
            completed_at: None,
        }
    }

    #[test]
    fn the_way_back_says_the_outcome_and_never_more() {
        let linked = session(LinkSessionStatus::Linked, None);
        let url = return_url(&linked, Utc::now()).unwrap();
        let query: Vec<(String, String)> = url.query_pairs().into_owned().collect();
        assert_eq!(
            query,
            [
                ("from".into(), "finsync".into()),
                ("link_session_id".into(), linked.id.to_string()),
                ("status".into(), "linked".into()),
                (
                    "connection_id".into(),
                    linked.connection_id.unwrap().to_string()
                ),
            ]
        );
        let denied = session(LinkSessionStatus::Denied, Some(codes::CONSENT_DENIED));
        let url = return_url(&denied, Utc::now()).unwrap();
        assert!(
            url.as_str()
                .ends_with("&status=denied&error=consent_denied"),
            "{url}"
        );
        assert!(!url.as_str().contains("connection_id"), "{url}");
        let late = session(LinkSessionStatus::Open, None);
        let url = return_url(&late, late.expires_at).unwrap();
        assert!(
            url.as_str()
                .ends_with("&status=expired&error=session_expired"),
            "{url}"
        );
    }
}
