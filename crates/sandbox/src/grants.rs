//! An authorization server's memory: authorization codes, grants and the tokens issued
//! under them, with PKCE checking, refresh-token rotation and revocation. Each sandbox
//! institution has its own store, with its own [`GrantPolicy`].
//!
//! Refresh tokens either rotate on every use or stay the same for the grant's life. Rotation
//! may have a grace period, as many providers allow so that a client whose
//! refresh response was lost can retry: a refresh token rotated out less than the grace
//! ago is still accepted and rotates again, replacing the grant's live refresh token. With
//! no grace a rotated-out token is dead at once.
//!
//! Everything lives in one mutex-guarded map set; the sandbox is small and short-lived,
//! and one lock keeps rotation and revocation atomic. Callers pass `now` so expiry can be
//! tested without waiting.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

/// How long an authorization code may wait to be exchanged.
pub(super) const CODE_TTL: Duration = Duration::from_secs(60);

/// A permission the data API checks, one per endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Scope {
    Accounts,
    Holdings,
    Transactions,
}

impl Scope {
    const ALL: [Self; 3] = [Self::Accounts, Self::Holdings, Self::Transactions];

    pub(super) fn as_str(self) -> &'static str {
        match self {
            Self::Accounts => "accounts",
            Self::Holdings => "holdings",
            Self::Transactions => "transactions",
        }
    }

    const fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of scopes; prints in a fixed order, space-separated as in RFC 6749 §3.3 (or
/// joined with an institution's own separator through [`ScopeSet::joined`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ScopeSet(u8);

#[derive(Debug, thiserror::Error)]
#[error("unknown scope {0:?}; the sandbox knows accounts, holdings and transactions")]
pub(super) struct UnknownScope(String);

impl ScopeSet {
    pub(super) const fn all() -> Self {
        Self::of(&Scope::ALL)
    }

    /// Parses a scope list whose words are separated by `separator` (a space in RFC 6749),
    /// and only by it; an empty list is not an error here, the caller decides what it means.
    pub(super) fn parse(text: &str, separator: char) -> Result<Self, UnknownScope> {
        text.split(separator)
            .filter(|word| !word.is_empty())
            .try_fold(Self(0), |set, word| {
                Scope::ALL
                    .into_iter()
                    .find(|scope| scope.as_str() == word)
                    .map(|scope| Self(set.0 | scope.bit()))
                    .ok_or_else(|| UnknownScope(word.to_owned()))
            })
    }

    pub(super) fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub(super) fn contains(self, scope: Scope) -> bool {
        self.0 & scope.bit() != 0
    }

    pub(super) fn is_subset_of(self, other: Self) -> bool {
        self.0 & !other.0 == 0
    }

    /// The scope names in a fixed order, joined with `separator`.
    pub(super) fn joined(self, separator: char) -> String {
        let mut text = String::new();
        for scope in Scope::ALL.into_iter().filter(|scope| self.contains(*scope)) {
            if !text.is_empty() {
                text.push(separator);
            }
            text.push_str(scope.as_str());
        }
        text
    }

    /// The set of exactly these scopes.
    /// `const` so that an institution's profile can be a `static`.
    pub(super) const fn of(scopes: &[Scope]) -> Self {
        let mut bits = 0;
        let mut i = 0;
        while i < scopes.len() {
            bits |= scopes[i].bit();
            i += 1;
        }
        Self(bits)
    }
}

impl fmt::Display for ScopeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.joined(' '))
    }
}

/// What the user approved, as bound to an authorization code.
#[derive(Debug, Clone)]
pub(super) struct Approval {
    pub(super) client_id: String,
    /// Kept verbatim: the token request must repeat it exactly (RFC 6749 §4.1.3).
    pub(super) redirect_uri: String,
    pub(super) user_id: String,
    pub(super) scopes: ScopeSet,
    /// BASE64URL(SHA-256(code_verifier)), from the authorization request; `None` where
    /// the institution does not require PKCE and the client sent no challenge.
    pub(super) code_challenge: Option<String>,
}

/// A successful token response's contents.
#[derive(Debug, Clone)]
pub(super) struct IssuedTokens {
    pub(super) access_token: String,
    pub(super) refresh_token: String,
    pub(super) expires_in: Duration,
    pub(super) scopes: ScopeSet,
    /// The grant's consent: one per authorization, the same on every refresh.
    pub(super) consent_id: String,
}

/// Who an access token speaks for.
#[derive(Debug, Clone)]
pub(super) struct Bearer {
    pub(super) user_id: String,
    pub(super) scopes: ScopeSet,
    /// The consent the token's grant stands on.
    pub(super) consent_id: String,
}

/// Why a grant request failed; each maps to an RFC 6749 §5.2 error code.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(super) enum GrantError {
    #[error("{0}")]
    InvalidGrant(&'static str),
    #[error("the requested scope exceeds the scope originally granted")]
    InvalidScope,
}

type GrantId = u64;

struct PendingCode {
    approval: Approval,
    expires_at: Instant,
}

/// A code already exchanged, remembered until it would have expired so a replay can be
/// answered by revoking what it produced (RFC 6749 §4.1.2).
struct SpentCode {
    grant: GrantId,
    forget_at: Instant,
}

struct Grant {
    client_id: String,
    user_id: String,
    scopes: ScopeSet,
    consent_id: String,
}

struct AccessToken {
    grant: GrantId,
    scopes: ScopeSet,
    expires_at: Instant,
}

/// A refresh token rotated out while a grace period is configured, still accepted until
/// `usable_until`.
struct RotatedRefreshToken {
    grant: GrantId,
    usable_until: Instant,
}

#[derive(Default)]
struct Inner {
    codes: HashMap<String, PendingCode>,
    spent_codes: HashMap<String, SpentCode>,
    grants: HashMap<GrantId, Grant>,
    access_tokens: HashMap<String, AccessToken>,
    /// The one live refresh token of each grant; rotation replaces it.
    refresh_tokens: HashMap<String, GrantId>,
    /// Rotated-out refresh tokens still inside the grace period; empty without a grace.
    rotated_refresh_tokens: HashMap<String, RotatedRefreshToken>,
    /// Every access and refresh token ever issued, in issue order, for tests that prove
    /// no token leaks. Only grows; the sandbox is short-lived.
    issued: Vec<String>,
    /// Every grant's consent id, in issue order, likewise.
    consents: Vec<String>,
    next_grant: GrantId,
}

impl Inner {
    /// Drops expired codes and access tokens so memory stays bounded under long test runs.
    fn purge(&mut self, now: Instant) {
        self.codes.retain(|_, code| code.expires_at > now);
        self.spent_codes.retain(|_, code| code.forget_at > now);
        self.access_tokens.retain(|_, token| token.expires_at > now);
        self.rotated_refresh_tokens
            .retain(|_, token| token.usable_until > now);
    }

    fn revoke_grant(&mut self, grant: GrantId) {
        self.grants.remove(&grant);
        self.refresh_tokens.retain(|_, owner| *owner != grant);
        self.rotated_refresh_tokens
            .retain(|_, token| token.grant != grant);
        self.access_tokens.retain(|_, token| token.grant != grant);
    }

    /// The grant a refresh token may still be used for at `now`: a live token, or a
    /// rotated-out one inside its grace period.
    fn refresh_grant(&self, refresh_token: &str, now: Instant) -> Option<(GrantId, bool)> {
        if let Some(&grant) = self.refresh_tokens.get(refresh_token) {
            return Some((grant, true));
        }
        self.rotated_refresh_tokens
            .get(refresh_token)
            .filter(|token| token.usable_until > now)
            .map(|token| (token.grant, false))
    }

    /// A new access token for `grant`, with `refresh_token` as its companion, or a new
    /// refresh token too when `refresh_token` is `None`.
    fn issue(
        &mut self,
        grant: GrantId,
        scopes: ScopeSet,
        policy: &GrantPolicy,
        refresh_token: Option<String>,
        now: Instant,
    ) -> IssuedTokens {
        let access_token = random_token(policy.token_prefix, "at_");
        self.issued.push(access_token.clone());
        let refresh_token = refresh_token.unwrap_or_else(|| {
            let fresh = random_token(policy.token_prefix, "rt_");
            self.refresh_tokens.insert(fresh.clone(), grant);
            self.issued.push(fresh.clone());
            fresh
        });
        self.access_tokens.insert(
            access_token.clone(),
            AccessToken {
                grant,
                scopes,
                expires_at: now + policy.access_token_ttl,
            },
        );
        IssuedTokens {
            access_token,
            refresh_token,
            expires_in: policy.access_token_ttl,
            scopes,
            consent_id: self
                .grants
                .get(&grant)
                .map(|g| g.consent_id.clone())
                .unwrap_or_default(),
        }
    }
}

/// What refreshing does to the refresh token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Rotation {
    /// Every refresh issues a new refresh token. The one presented stays usable for
    /// `grace` after it was rotated out; zero rejects it at once with `invalid_grant`.
    Rotate { grace: Duration },
    /// The grant's refresh token never changes; refreshing returns it again.
    Keep,
}

/// How one institution's authorization server issues tokens.
#[derive(Debug, Clone, Copy)]
pub(super) struct GrantPolicy {
    /// Starts every code and token, so a token shows which institution issued it
    /// (e.g. `mer_` gives `mer_ac_…`, `mer_at_…`, `mer_rt_…`).
    pub(super) token_prefix: &'static str,
    pub(super) access_token_ttl: Duration,
    pub(super) rotation: Rotation,
}

pub(super) struct GrantStore {
    inner: Mutex<Inner>,
    policy: GrantPolicy,
}

/// Shows no token: the store is all secrets.
impl fmt::Debug for GrantStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrantStore")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl GrantStore {
    pub(super) fn new(policy: GrantPolicy) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            policy,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic elsewhere cannot leave the maps half-updated in a way that matters here.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records an approval and returns the single-use code that stands for it.
    pub(super) fn issue_code(&self, approval: Approval, now: Instant) -> String {
        let code = random_token(self.policy.token_prefix, "ac_");
        let mut inner = self.lock();
        inner.purge(now);
        inner.codes.insert(
            code.clone(),
            PendingCode {
                approval,
                expires_at: now + CODE_TTL,
            },
        );
        code
    }

    /// Exchanges a code for tokens. The code is consumed whatever the outcome, so a
    /// verifier cannot be guessed by retrying.
    pub(super) fn exchange_code(
        &self,
        client_id: &str,
        code: &str,
        redirect_uri: &str,
        code_verifier: Option<&str>,
        now: Instant,
    ) -> Result<IssuedTokens, GrantError> {
        let mut inner = self.lock();
        inner.purge(now);
        let Some(pending) = inner.codes.remove(code) else {
            if let Some(spent) = inner.spent_codes.remove(code) {
                inner.revoke_grant(spent.grant);
                return Err(GrantError::InvalidGrant(
                    "authorization code was already used; the tokens issued for it are revoked",
                ));
            }
            return Err(GrantError::InvalidGrant(
                "authorization code is unknown or expired",
            ));
        };
        let approval = pending.approval;
        if approval.client_id != client_id {
            return Err(GrantError::InvalidGrant(
                "authorization code was issued to another client",
            ));
        }
        if approval.redirect_uri != redirect_uri {
            return Err(GrantError::InvalidGrant(
                "redirect_uri does not match the authorization request",
            ));
        }
        if let Some(challenge) = &approval.code_challenge {
            let Some(verifier) = code_verifier else {
                return Err(GrantError::InvalidGrant(
                    "code_verifier is required: the authorization request sent a code_challenge",
                ));
            };
            if !pkce_matches(verifier, challenge) {
                return Err(GrantError::InvalidGrant(
                    "code_verifier does not match the code_challenge",
                ));
            }
        }
        let grant = inner.next_grant;
        inner.next_grant += 1;
        let consent_id = random_token(self.policy.token_prefix, "consent_");
        inner.consents.push(consent_id.clone());
        inner.grants.insert(
            grant,
            Grant {
                client_id: approval.client_id,
                user_id: approval.user_id,
                scopes: approval.scopes,
                consent_id,
            },
        );
        inner.spent_codes.insert(
            code.to_owned(),
            SpentCode {
                grant,
                forget_at: pending.expires_at,
            },
        );
        Ok(inner.issue(grant, approval.scopes, &self.policy, None, now))
    }

    /// Refreshes: a new access token, and under [`Rotation::Rotate`] a new refresh token
    /// while the presented one dies; under [`Rotation::Keep`] the presented one is returned
    /// again. `scopes` may narrow the new access token (RFC 6749 §6); the grant keeps its
    /// full scope.
    ///
    /// With a grace period the presented token is not forgotten at once: until the grace
    /// has passed since its rotation it is accepted again, each time rotating anew and
    /// invalidating the refresh token issued before, so a grant keeps one live refresh
    /// token. Access tokens already issued live on until they expire, as with any rotation.
    pub(super) fn refresh(
        &self,
        client_id: &str,
        refresh_token: &str,
        scopes: Option<ScopeSet>,
        now: Instant,
    ) -> Result<IssuedTokens, GrantError> {
        let mut inner = self.lock();
        inner.purge(now);
        let invalid = "refresh token is unknown, revoked, or was already rotated";
        let (grant_id, live) = inner
            .refresh_grant(refresh_token, now)
            .ok_or(GrantError::InvalidGrant(invalid))?;
        let grant = inner
            .grants
            .get(&grant_id)
            .ok_or(GrantError::InvalidGrant(invalid))?;
        if grant.client_id != client_id {
            return Err(GrantError::InvalidGrant(
                "refresh token was issued to another client",
            ));
        }
        let scopes = match scopes {
            Some(requested) if !requested.is_subset_of(grant.scopes) => {
                return Err(GrantError::InvalidScope);
            }
            Some(requested) => requested,
            None => grant.scopes,
        };
        let grace = match self.policy.rotation {
            Rotation::Keep => {
                let kept = Some(refresh_token.to_owned());
                return Ok(inner.issue(grant_id, scopes, &self.policy, kept, now));
            }
            Rotation::Rotate { grace } => grace,
        };
        if live {
            inner.refresh_tokens.remove(refresh_token);
            if !grace.is_zero() {
                inner.rotated_refresh_tokens.insert(
                    refresh_token.to_owned(),
                    RotatedRefreshToken {
                        grant: grant_id,
                        usable_until: now + grace,
                    },
                );
            }
        } else {
            // The successor this token's earlier rotation issued, or whatever replaced it.
            inner.refresh_tokens.retain(|_, owner| *owner != grant_id);
        }
        Ok(inner.issue(grant_id, scopes, &self.policy, None, now))
    }

    /// Revokes a token of `client_id` (RFC 7009). A refresh token, including a rotated-out
    /// one still inside its grace period, takes its whole grant with it; an access token
    /// only itself. Returns whether anything was revoked.
    pub(super) fn revoke(&self, client_id: &str, token: &str, now: Instant) -> bool {
        let mut inner = self.lock();
        let owned_by_client = |inner: &Inner, grant: GrantId| {
            inner
                .grants
                .get(&grant)
                .is_some_and(|g| g.client_id == client_id)
        };
        if let Some((grant, _)) = inner.refresh_grant(token, now) {
            if owned_by_client(&inner, grant) {
                inner.revoke_grant(grant);
                return true;
            }
            return false;
        }
        if let Some(grant) = inner.access_tokens.get(token).map(|t| t.grant)
            && owned_by_client(&inner, grant)
        {
            inner.access_tokens.remove(token);
            return true;
        }
        false
    }

    /// The users with a live grant, each once, in order.
    pub(super) fn users(&self) -> std::collections::BTreeSet<String> {
        self.lock()
            .grants
            .values()
            .map(|grant| grant.user_id.clone())
            .collect()
    }

    /// Every access and refresh token ever issued, in issue order.
    pub(super) fn issued_tokens(&self) -> Vec<String> {
        self.lock().issued.clone()
    }

    /// Every grant's consent id, in issue order.
    pub(super) fn issued_consents(&self) -> Vec<String> {
        self.lock().consents.clone()
    }

    /// Revokes every grant, as a user withdrawing consent everywhere at once would; returns
    /// how many there were.
    pub(super) fn revoke_all(&self) -> usize {
        let mut inner = self.lock();
        let revoked = inner.grants.len();
        inner.grants.clear();
        inner.access_tokens.clear();
        inner.refresh_tokens.clear();
        inner.rotated_refresh_tokens.clear();
        inner.codes.clear();
        inner.spent_codes.clear();
        revoked
    }

    /// Makes every live access token expire at `now`; refresh tokens stay valid. Returns
    /// how many expired.
    pub(super) fn expire_access_tokens(&self, now: Instant) -> usize {
        let mut inner = self.lock();
        inner.purge(now);
        let expired = inner.access_tokens.len();
        inner.access_tokens.clear();
        expired
    }

    /// Resolves a live access token to the user and scopes it carries.
    pub(super) fn authenticate(&self, access_token: &str, now: Instant) -> Option<Bearer> {
        let inner = self.lock();
        let token = inner
            .access_tokens
            .get(access_token)
            .filter(|token| token.expires_at > now)?;
        let grant = inner.grants.get(&token.grant)?;
        Some(Bearer {
            user_id: grant.user_id.clone(),
            scopes: token.scopes,
            consent_id: grant.consent_id.clone(),
        })
    }
}

/// The institution's prefix, the kind's, then 32 URL-safe characters from 192 random bits.
fn random_token(institution: &str, kind: &str) -> String {
    let mut bytes = [0u8; 24];
    rand::fill(&mut bytes);
    format!("{institution}{kind}{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// RFC 7636 §4.1: 43–128 characters from the unreserved set.
pub(super) fn is_valid_verifier(verifier: &str) -> bool {
    (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// An S256 challenge is the unpadded base64url encoding of 32 bytes: exactly 43 characters.
pub(super) fn is_valid_s256_challenge(challenge: &str) -> bool {
    challenge.len() == 43
        && URL_SAFE_NO_PAD
            .decode(challenge)
            .is_ok_and(|bytes| bytes.len() == 32)
}

/// RFC 7636 §4.6: BASE64URL-NOPAD(SHA256(ASCII(code_verifier))) == code_challenge.
pub(super) fn pkce_matches(verifier: &str, challenge: &str) -> bool {
    if !is_valid_verifier(verifier) {
        return false;
    }
    let computed = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    constant_time_eq(computed.as_bytes(), challenge.as_bytes())
}

/// Compares secrets without leaking, through timing, how long a prefix matched.
pub(super) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    // The worked example of RFC 7636 Appendix B.
    const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
    const CLIENT: &str = "finsync-sandbox";
    const REDIRECT: &str = "http://127.0.0.1:9/callback";

    fn approval(scopes: ScopeSet) -> Approval {
        Approval {
            client_id: CLIENT.to_owned(),
            redirect_uri: REDIRECT.to_owned(),
            user_id: "demo-alice".to_owned(),
            scopes,
            code_challenge: Some(CHALLENGE.to_owned()),
        }
    }

    fn policy(access_token_ttl: Duration, rotation: Rotation) -> GrantPolicy {
        GrantPolicy {
            token_prefix: "mer_",
            access_token_ttl,
            rotation,
        }
    }

    fn store() -> GrantStore {
        GrantStore::new(policy(
            Duration::from_secs(3600),
            Rotation::Rotate {
                grace: Duration::ZERO,
            },
        ))
    }

    /// A store with a refresh grace, and the tokens of a fresh link made at `now`.
    fn linked_with_grace(grace: Duration, now: Instant) -> (GrantStore, IssuedTokens) {
        let store = GrantStore::new(policy(
            Duration::from_secs(3600),
            Rotation::Rotate { grace },
        ));
        let code = store.issue_code(approval(ScopeSet::all()), now);
        let tokens = store
            .exchange_code(CLIENT, &code, REDIRECT, Some(VERIFIER), now)
            .expect("exchange");
        (store, tokens)
    }

    #[test]
    fn pkce_accepts_the_rfc_example_and_rejects_others() {
        assert!(is_valid_s256_challenge(CHALLENGE));
        assert!(pkce_matches(VERIFIER, CHALLENGE));
        let wrong = format!("{}A", &VERIFIER[..VERIFIER.len() - 1]);
        assert!(!pkce_matches(&wrong, CHALLENGE));
        // `plain` would compare the verifier itself; S256 must not accept that.
        assert!(!pkce_matches(CHALLENGE, CHALLENGE));
        assert!(!pkce_matches("short", CHALLENGE));
        assert!(!is_valid_s256_challenge(&CHALLENGE[..40]));
    }

    #[test]
    fn scope_sets_parse_and_print_in_a_fixed_order() {
        let set = ScopeSet::parse("transactions  accounts", ' ').expect("known scopes");
        assert_eq!(set.to_string(), "accounts transactions");
        assert!(ScopeSet::parse("accounts payments", ' ').is_err());
        assert_eq!(
            ScopeSet::all().to_string(),
            "accounts holdings transactions"
        );
    }

    #[test]
    fn a_code_is_single_use_and_a_replay_revokes_its_tokens() {
        let store = store();
        let now = Instant::now();
        let code = store.issue_code(approval(ScopeSet::all()), now);
        let tokens = store
            .exchange_code(CLIENT, &code, REDIRECT, Some(VERIFIER), now)
            .expect("first exchange");
        assert!(store.authenticate(&tokens.access_token, now).is_some());

        let replay = store.exchange_code(CLIENT, &code, REDIRECT, Some(VERIFIER), now);
        assert!(matches!(replay, Err(GrantError::InvalidGrant(_))));
        assert!(store.authenticate(&tokens.access_token, now).is_none());
        assert!(
            store
                .refresh(CLIENT, &tokens.refresh_token, None, now)
                .is_err()
        );
    }

    #[test]
    fn a_code_is_consumed_by_a_failed_exchange_and_expires() {
        let store = store();
        let now = Instant::now();
        let code = store.issue_code(approval(ScopeSet::all()), now);
        let wrong = "x".repeat(43);
        assert!(
            store
                .exchange_code(CLIENT, &code, REDIRECT, Some(&wrong), now)
                .is_err()
        );
        assert!(
            store
                .exchange_code(CLIENT, &code, REDIRECT, Some(VERIFIER), now)
                .is_err()
        );

        let code = store.issue_code(approval(ScopeSet::all()), now);
        assert!(
            store
                .exchange_code(
                    CLIENT,
                    &code,
                    "http://127.0.0.1:9/other",
                    Some(VERIFIER),
                    now
                )
                .is_err()
        );

        let code = store.issue_code(approval(ScopeSet::all()), now);
        let later = now + CODE_TTL + Duration::from_secs(1);
        assert!(
            store
                .exchange_code(CLIENT, &code, REDIRECT, Some(VERIFIER), later)
                .is_err()
        );
    }

    #[test]
    fn refresh_rotates_and_rejects_the_old_token() {
        let store = store();
        let now = Instant::now();
        let code = store.issue_code(approval(ScopeSet::all()), now);
        let first = store
            .exchange_code(CLIENT, &code, REDIRECT, Some(VERIFIER), now)
            .expect("exchange");
        let second = store
            .refresh(CLIENT, &first.refresh_token, None, now)
            .expect("refresh");
        assert_ne!(first.refresh_token, second.refresh_token);
        assert!(matches!(
            store.refresh(CLIENT, &first.refresh_token, None, now),
            Err(GrantError::InvalidGrant(_))
        ));
        let third = store
            .refresh(CLIENT, &second.refresh_token, None, now)
            .expect("refresh with the new token");
        assert!(store.authenticate(&third.access_token, now).is_some());
    }

    #[test]
    fn within_the_grace_a_rotated_out_refresh_token_rotates_again() {
        let now = Instant::now();
        let grace = Duration::from_secs(30);
        let (store, first) = linked_with_grace(grace, now);
        let second = store
            .refresh(CLIENT, &first.refresh_token, None, now)
            .expect("rotation");

        let retry = now + Duration::from_secs(10);
        let third = store
            .refresh(CLIENT, &first.refresh_token, None, retry)
            .expect("the old token inside the grace");
        assert_ne!(third.refresh_token, second.refresh_token);
        assert_ne!(third.access_token, second.access_token);
        assert!(store.authenticate(&third.access_token, retry).is_some());
        // The successor the first rotation issued is no longer valid.
        assert!(matches!(
            store.refresh(CLIENT, &second.refresh_token, None, retry),
            Err(GrantError::InvalidGrant(_))
        ));

        // Still inside the grace of its own rotation, so accepted once more.
        let later = now + Duration::from_secs(29);
        let fourth = store
            .refresh(CLIENT, &first.refresh_token, None, later)
            .expect("the old token still inside the grace");
        assert!(matches!(
            store.refresh(CLIENT, &third.refresh_token, None, later),
            Err(GrantError::InvalidGrant(_))
        ));
        store
            .refresh(CLIENT, &fourth.refresh_token, None, later)
            .expect("the newest token");
    }

    #[test]
    fn after_the_grace_a_rotated_out_refresh_token_is_invalid() {
        let now = Instant::now();
        let grace = Duration::from_secs(30);
        let (store, first) = linked_with_grace(grace, now);
        let second = store
            .refresh(CLIENT, &first.refresh_token, None, now)
            .expect("rotation");
        let expired = now + grace;
        assert!(matches!(
            store.refresh(CLIENT, &first.refresh_token, None, expired),
            Err(GrantError::InvalidGrant(_))
        ));
        // The refused retry leaves the successor alone.
        store
            .refresh(CLIENT, &second.refresh_token, None, expired)
            .expect("the successor");
    }

    #[test]
    fn without_a_grace_a_rotated_out_refresh_token_is_invalid_at_once() {
        let now = Instant::now();
        let (store, first) = linked_with_grace(Duration::ZERO, now);
        let second = store
            .refresh(CLIENT, &first.refresh_token, None, now)
            .expect("rotation");
        assert!(matches!(
            store.refresh(CLIENT, &first.refresh_token, None, now),
            Err(GrantError::InvalidGrant(_))
        ));
        store
            .refresh(CLIENT, &second.refresh_token, None, now)
            .expect("the successor");
    }

    #[test]
    fn revoking_a_rotated_out_token_inside_its_grace_ends_the_grant() {
        let now = Instant::now();
        let (store, first) = linked_with_grace(Duration::from_secs(30), now);
        let second = store
            .refresh(CLIENT, &first.refresh_token, None, now)
            .expect("rotation");
        assert!(!store.revoke("someone-else", &first.refresh_token, now));
        assert!(store.revoke(CLIENT, &first.refresh_token, now));
        assert!(store.authenticate(&second.access_token, now).is_none());
        for token in [&first.refresh_token, &second.refresh_token] {
            assert!(store.refresh(CLIENT, token, None, now).is_err());
        }
    }

    #[test]
    fn every_issued_token_is_recorded_in_order() {
        let now = Instant::now();
        let (store, first) = linked_with_grace(Duration::from_secs(30), now);
        let second = store
            .refresh(CLIENT, &first.refresh_token, None, now)
            .expect("rotation");
        assert!(store.revoke(CLIENT, &second.refresh_token, now));
        assert!(
            store
                .refresh(CLIENT, &second.refresh_token, None, now)
                .is_err()
        );
        let debug = format!("{store:?}");
        assert!(
            !debug.contains("mer_at_") && !debug.contains("mer_rt_"),
            "{debug}"
        );
        assert_eq!(
            store.issued_tokens(),
            [
                first.access_token,
                first.refresh_token,
                second.access_token,
                second.refresh_token
            ]
        );
    }

    #[test]
    fn refresh_can_narrow_but_not_widen_scope() {
        let store = store();
        let now = Instant::now();
        let narrow = ScopeSet::parse("accounts", ' ').expect("known scope");
        let code = store.issue_code(approval(narrow), now);
        let tokens = store
            .exchange_code(CLIENT, &code, REDIRECT, Some(VERIFIER), now)
            .expect("exchange");
        let widened = store.refresh(CLIENT, &tokens.refresh_token, Some(ScopeSet::all()), now);
        assert!(matches!(widened, Err(GrantError::InvalidScope)));
        // A refused refresh does not consume the token.
        let refreshed = store
            .refresh(CLIENT, &tokens.refresh_token, Some(narrow), now)
            .expect("same scope");
        assert_eq!(refreshed.scopes, narrow);
    }

    #[test]
    fn access_tokens_expire_and_revoking_the_refresh_token_ends_the_grant() {
        let store = GrantStore::new(policy(
            Duration::from_secs(10),
            Rotation::Rotate {
                grace: Duration::ZERO,
            },
        ));
        let now = Instant::now();
        let code = store.issue_code(approval(ScopeSet::all()), now);
        let tokens = store
            .exchange_code(CLIENT, &code, REDIRECT, Some(VERIFIER), now)
            .expect("exchange");
        assert!(
            store
                .authenticate(&tokens.access_token, now + Duration::from_secs(11))
                .is_none()
        );

        let code = store.issue_code(approval(ScopeSet::all()), now);
        let tokens = store
            .exchange_code(CLIENT, &code, REDIRECT, Some(VERIFIER), now)
            .expect("exchange");
        assert!(!store.revoke("someone-else", &tokens.refresh_token, now));
        assert!(store.revoke(CLIENT, &tokens.refresh_token, now));
        assert!(store.authenticate(&tokens.access_token, now).is_none());
        assert!(
            store
                .refresh(CLIENT, &tokens.refresh_token, None, now)
                .is_err()
        );
        assert!(!store.revoke(CLIENT, &tokens.refresh_token, now));
    }

    #[test]
    fn a_kept_refresh_token_is_returned_again_and_keeps_working() {
        let store = GrantStore::new(policy(Duration::from_secs(3600), Rotation::Keep));
        let now = Instant::now();
        let code = store.issue_code(approval(ScopeSet::all()), now);
        let first = store
            .exchange_code(CLIENT, &code, REDIRECT, Some(VERIFIER), now)
            .expect("exchange");
        let second = store
            .refresh(CLIENT, &first.refresh_token, None, now)
            .expect("refresh");
        assert_eq!(second.refresh_token, first.refresh_token);
        assert_ne!(second.access_token, first.access_token);
        let third = store
            .refresh(CLIENT, &first.refresh_token, None, now)
            .expect("the same token again");
        assert_eq!(third.refresh_token, first.refresh_token);
        // Recorded once, when it was issued.
        assert_eq!(
            store.issued_tokens(),
            [
                first.access_token,
                first.refresh_token,
                second.access_token,
                third.access_token
            ]
        );
    }

    #[test]
    fn a_code_without_a_challenge_needs_no_verifier() {
        let store = store();
        let now = Instant::now();
        let mut plain = approval(ScopeSet::all());
        plain.code_challenge = None;
        let code = store.issue_code(plain, now);
        store
            .exchange_code(CLIENT, &code, REDIRECT, None, now)
            .expect("exchange without PKCE");
        let code = store.issue_code(approval(ScopeSet::all()), now);
        assert!(matches!(
            store.exchange_code(CLIENT, &code, REDIRECT, None, now),
            Err(GrantError::InvalidGrant(_))
        ));
    }

    #[test]
    fn revoking_everything_and_expiring_access_tokens() {
        let store = store();
        let now = Instant::now();
        let link = || {
            let code = store.issue_code(approval(ScopeSet::all()), now);
            store
                .exchange_code(CLIENT, &code, REDIRECT, Some(VERIFIER), now)
                .expect("exchange")
        };
        let (alice, bob) = (link(), link());
        assert_eq!(store.expire_access_tokens(now), 2);
        assert!(store.authenticate(&alice.access_token, now).is_none());
        let refreshed = store
            .refresh(CLIENT, &alice.refresh_token, None, now)
            .expect("refresh tokens survive expiry");
        assert!(store.authenticate(&refreshed.access_token, now).is_some());

        assert_eq!(store.revoke_all(), 2);
        assert!(store.authenticate(&refreshed.access_token, now).is_none());
        for token in [&refreshed.refresh_token, &bob.refresh_token] {
            assert!(matches!(
                store.refresh(CLIENT, token, None, now),
                Err(GrantError::InvalidGrant(_))
            ));
        }
    }
}
