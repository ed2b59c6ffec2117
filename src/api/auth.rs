//! Authentication extractors: a tenant by one of its API keys (with the key's
//! scopes and a per-key rate limit; recently seen keys are cached briefly, and
//! remembered longer for when the database is away), an admin by a named
//! credential or the break-glass token, allowed by role ([`Permission`]).

use std::marker::PhantomData;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use secrecy::{ExposeSecret, SecretString};

use super::audit::AuditSlot;
use super::{ApiError, ApiState, ErrorCode};
use crate::cache::Cache;
use crate::store::{
    Actor, ApiKeyRecord, AuditEntry, RememberedKey, Role, Scope, Store, TenantRecord,
    api_key_prefix, is_admin_credential,
};

/// The tenant whose API key authenticated the request, and that key.
#[derive(Clone)]
pub struct Tenant {
    pub tenant: Arc<TenantRecord>,
    pub key: Arc<ApiKeyRecord>,
    request_id: Option<String>,
}

impl Tenant {
    /// An audit entry for `action` done with this key.
    pub fn audit(&self, action: &str) -> AuditEntry {
        AuditEntry::new(Actor::key(&self.key.prefix), action).request_id(self.request_id.clone())
    }

    /// Refuses the request unless the key carries `scope`.
    pub fn require(&self, scope: Scope) -> Result<(), ApiError> {
        if self.key.allows(scope) {
            Ok(())
        } else {
            Err(ApiError::new(
                ErrorCode::Forbidden,
                format!("this API key lacks the `{scope}` scope"),
            ))
        }
    }
}

/// Which roles may call an admin route: the type parameter of [`Admin`].
pub trait Permission: Send + Sync + 'static {
    const ROLES: &'static [Role];
}

/// Tenants, keys, connectors, admins: `admin` only.
pub struct Manage;
/// Running the fleet (connections, syncs, quarantine, deliveries): `admin` and
/// `operator`.
pub struct Operate;
/// Reading the audit trail: `admin` and `auditor`.
pub struct Audit;

impl Permission for Manage {
    const ROLES: &'static [Role] = &[Role::Admin];
}
impl Permission for Operate {
    const ROLES: &'static [Role] = &[Role::Admin, Role::Operator];
}
impl Permission for Audit {
    const ROLES: &'static [Role] = &[Role::Admin, Role::Auditor];
}

/// An admin request whose credential holds one of `P`'s roles. A request without
/// one is refused before the handler runs (401, or 403 naming the role), and the
/// refusal is audited.
pub struct Admin<P: Permission = Manage> {
    pub actor: Actor,
    slot: AuditSlot,
    permission: PhantomData<P>,
}

impl<P: Permission> Admin<P> {
    /// This request's audit entry (its action, target and request id filled in),
    /// for the handler to record in the transaction of its change. Handing it
    /// out tells the audit layer that a successful answer was recorded there.
    pub fn audit(&self) -> AuditEntry {
        self.slot.handed_over()
    }
}

/// Requests per second per API key, in this process (GCRA, from governor).
pub struct KeyLimiter {
    limiter: DefaultKeyedRateLimiter<String>,
    clock: DefaultClock,
}

impl KeyLimiter {
    pub fn new(per_second: NonZeroU32, burst: NonZeroU32) -> Arc<Self> {
        Arc::new(Self {
            limiter: DefaultKeyedRateLimiter::keyed(
                Quota::per_second(per_second).allow_burst(burst),
            ),
            clock: DefaultClock::default(),
        })
    }

    fn check(&self, key: &ApiKeyRecord) -> Result<(), ApiError> {
        self.limiter.check_key(&key.id).map_err(|not_until| {
            let wait = not_until.wait_time_from(self.clock.now());
            ApiError::rate_limited(
                "too many requests for this API key",
                wait.as_secs() + u64::from(wait.subsec_nanos() > 0),
            )
        })
    }
}

/// Keys this process recently authenticated, so a read does not pay two database
/// queries for its key. Entries live `ttl`: a key revoked through another process
/// stops working here within that time (at once in the revoking process).
///
/// While the database cannot be reached, a key authenticated within `outage_grace`
/// (by this process, or by any process through Redis) is still accepted, so that
/// answers the cache holds keep being served. A key revoked in that window before
/// the outage may then be accepted until the database answers again; once it does,
/// the database decides again.
pub struct KeyCache {
    /// By the key's SHA-256 digest; shared, not copied, into each request that
    /// presents the key.
    known: moka::future::Cache<[u8; 32], (Arc<TenantRecord>, Arc<ApiKeyRecord>)>,
    /// By key prefix; consulted only while the database is unreachable.
    last_good: moka::future::Cache<String, RememberedKey>,
    outage_grace: Duration,
    /// Moves on every revocation, so a lookup that raced one is not kept.
    revocations: std::sync::atomic::AtomicU64,
}

/// Where a key is remembered in Redis.
fn remembered_at(prefix: &str) -> String {
    format!("apikey:{prefix}")
}

impl KeyCache {
    pub fn new(ttl: Duration, outage_grace: Duration) -> Arc<Self> {
        Arc::new(Self {
            known: moka::future::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(ttl)
                .build(),
            last_good: moka::future::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(outage_grace.max(Duration::from_secs(1)))
                .build(),
            outage_grace,
            revocations: Default::default(),
        })
    }

    pub(super) async fn authenticate(
        &self,
        store: &Store,
        cache: &Cache,
        key: &str,
    ) -> Result<(Arc<TenantRecord>, Arc<ApiKeyRecord>), ApiError> {
        // By hash: the cache never holds a key itself. The digest's bytes, not its
        // hex: every authenticated request computes it.
        let id = crate::fingerprint::sha256(key.as_bytes());
        if let Some(found) = self.known.get(&id).await {
            return Ok(found);
        }
        // Boxed: a hit, nearly every request, then does not carry the store's
        // query in its future.
        Box::pin(self.authenticate_from_store(store, cache, key, id)).await
    }

    /// [`Self::authenticate`] for a key not seen within the TTL: the store, or
    /// while it is unreachable, the key remembered for this prefix.
    async fn authenticate_from_store(
        &self,
        store: &Store,
        cache: &Cache,
        key: &str,
        id: [u8; 32],
    ) -> Result<(Arc<TenantRecord>, Arc<ApiKeyRecord>), ApiError> {
        let unknown = || ApiError::new(ErrorCode::Unauthorized, "unknown or revoked API key");
        let before = self.revocations.load(Ordering::SeqCst);
        match store.authenticate(key).await {
            Ok(Some((tenant, record))) => {
                let (tenant, record) = (Arc::new(tenant), Arc::new(record));
                self.known
                    .insert(id, (tenant.clone(), record.clone()))
                    .await;
                // Inserted first, checked after: a revocation in between either
                // cleared the entry or shows here.
                if self.revocations.load(Ordering::SeqCst) != before {
                    self.known.invalidate(&id).await;
                    return Err(unknown());
                }
                self.remember(
                    cache,
                    RememberedKey::new(key, (*tenant).clone(), (*record).clone()),
                )
                .await;
                Ok((tenant, record))
            }
            Ok(None) => {
                if let Some(prefix) = api_key_prefix(key) {
                    self.last_good.invalidate(prefix).await;
                    cache.forget_remembered(&remembered_at(prefix)).await;
                }
                Err(unknown())
            }
            Err(e) if e.is_unavailable() => {
                store.note(&e);
                self.recall(cache, key)
                    .await
                    .map(|remembered| (Arc::new(remembered.tenant), Arc::new(remembered.key)))
                    .ok_or_else(ApiError::store_unavailable)
            }
            Err(e) => Err(ApiError::internal(e)),
        }
    }

    async fn remember(&self, cache: &Cache, remembered: RememberedKey) {
        let prefix = remembered.key.prefix.clone();
        if self.last_good.contains_key(&prefix) {
            return;
        }
        if let Ok(json) = serde_json::to_vec(&remembered) {
            cache
                .remember(&remembered_at(&prefix), &json, self.outage_grace)
                .await;
        }
        self.last_good.insert(prefix, remembered).await;
    }

    /// A key remembered for `key`'s prefix that `key` matches, from this process or
    /// from Redis.
    async fn recall(&self, cache: &Cache, key: &str) -> Option<RememberedKey> {
        let prefix = api_key_prefix(key)?;
        let remembered = match self.last_good.get(prefix).await {
            Some(remembered) => remembered,
            None => serde_json::from_slice(&cache.recall(&remembered_at(prefix)).await?).ok()?,
        };
        remembered.matches(key).then_some(remembered)
    }

    /// After a revocation: nothing authenticated before it is trusted any more,
    /// and the revoked key is remembered nowhere.
    pub async fn revoked(&self, cache: &Cache, prefix: &str) {
        self.revocations.fetch_add(1, Ordering::SeqCst);
        self.known.invalidate_all();
        self.last_good.invalidate(prefix).await;
        cache.forget_remembered(&remembered_at(prefix)).await;
    }
}

pub(super) fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

impl FromRequestParts<ApiState> for Tenant {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &ApiState,
    ) -> Result<Self, Self::Rejection> {
        // Already authenticated (and counted) by a layer in front of the handler.
        if let Some(tenant) = parts.extensions.remove::<Tenant>() {
            return Ok(tenant);
        }
        let key = bearer(parts).ok_or_else(|| {
            ApiError::new(
                ErrorCode::Unauthorized,
                "send your API key as `Authorization: Bearer <key>`",
            )
        })?;
        let (tenant, key) = state
            .keys
            .authenticate(&state.env.store, &state.env.cache, key)
            .await?;
        state.limiter.check(&key)?;
        let request_id = parts
            .headers
            .get(&super::REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        Ok(Self {
            tenant,
            key,
            request_id,
        })
    }
}

impl<P: Permission> FromRequestParts<ApiState> for Admin<P> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &ApiState,
    ) -> Result<Self, Self::Rejection> {
        let presented = bearer(parts).unwrap_or_default();
        let (actor, role) = identify(state, presented).await?;
        let slot = parts
            .extensions
            .get::<AuditSlot>()
            .cloned()
            .unwrap_or_default();
        slot.identified(actor.clone());
        if !P::ROLES.contains(&role) {
            slot.denied();
            let allowed: Vec<&str> = P::ROLES.iter().map(|r| r.as_str()).collect();
            return Err(ApiError::new(
                ErrorCode::Forbidden,
                format!(
                    "the `{role}` role may not do this (it takes: {})",
                    allowed.join(", ")
                ),
            ));
        }
        Ok(Self {
            actor,
            slot,
            permission: PhantomData,
        })
    }
}

/// Who presented `presented` and in which role: a named admin credential, or the
/// break-glass token, which acts as an `admin`.
pub(super) async fn identify(state: &ApiState, presented: &str) -> Result<(Actor, Role), ApiError> {
    let unknown = || {
        ApiError::new(
            ErrorCode::Unauthorized,
            "send an admin credential as `Authorization: Bearer fsa_…`",
        )
    };
    if is_admin_credential(presented) {
        return match state
            .env
            .store
            .authenticate_admin(&SecretString::from(presented))
            .await
        {
            Ok(Some(admin)) => Ok((Actor::admin(&admin.name), admin.role)),
            Ok(None) => Err(ApiError::new(
                ErrorCode::Unauthorized,
                "unknown or revoked admin credential",
            )),
            Err(e) if e.is_unavailable() => {
                state.env.store.note(&e);
                Err(ApiError::store_unavailable())
            }
            Err(e) => Err(ApiError::internal(e)),
        };
    }
    match &state.admin_token {
        Some(token)
            if !presented.is_empty()
                && crate::fingerprint::same_secret(token.expose_secret(), presented) =>
        {
            Ok((Actor::break_glass(), Role::Admin))
        }
        _ => Err(unknown()),
    }
}
