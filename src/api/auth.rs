//! Authentication extractors: a tenant by one of its API keys (with the key's
//! scopes and a per-key rate limit; recently seen keys are cached briefly, and
//! remembered longer for when the database is away), an admin by the admin token.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use secrecy::ExposeSecret;

use super::{ApiError, ApiState, ErrorCode};
use crate::cache::Cache;
use crate::store::{ApiKeyRecord, RememberedKey, Scope, Store, TenantRecord, api_key_prefix};

/// The tenant whose API key authenticated the request, and that key.
#[derive(Clone)]
pub struct Tenant {
    pub tenant: TenantRecord,
    pub key: ApiKeyRecord,
}

impl Tenant {
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

/// A request that presented the admin token.
pub struct Admin;

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

    fn check(&self, key_id: &str) -> Result<(), ApiError> {
        self.limiter
            .check_key(&key_id.to_owned())
            .map_err(|not_until| {
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
    known: moka::future::Cache<String, (TenantRecord, ApiKeyRecord)>,
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
    ) -> Result<(TenantRecord, ApiKeyRecord), ApiError> {
        // By hash: the cache never holds a key itself.
        let id = crate::fingerprint::sha256_hex(key.as_bytes());
        if let Some(found) = self.known.get(&id).await {
            return Ok(found);
        }
        let unknown = || ApiError::new(ErrorCode::Unauthorized, "unknown or revoked API key");
        let before = self.revocations.load(Ordering::SeqCst);
        match store.authenticate(key).await {
            Ok(Some((tenant, record))) => {
                self.known
                    .insert(id.clone(), (tenant.clone(), record.clone()))
                    .await;
                // Inserted first, checked after: a revocation in between either
                // cleared the entry or shows here.
                if self.revocations.load(Ordering::SeqCst) != before {
                    self.known.invalidate(&id).await;
                    return Err(unknown());
                }
                self.remember(
                    cache,
                    RememberedKey::new(key, tenant.clone(), record.clone()),
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
                    .map(|remembered| (remembered.tenant, remembered.key))
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
        state.limiter.check(&key.id)?;
        Ok(Self { tenant, key })
    }
}

impl FromRequestParts<ApiState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &ApiState,
    ) -> Result<Self, Self::Rejection> {
        let Some(expected) = &state.admin_token else {
            return Err(ApiError::new(
                ErrorCode::AdminDisabled,
                "the admin API is disabled (set server.admin_token)",
            ));
        };
        let presented = bearer(parts).unwrap_or_default().as_bytes();
        let expected = expected.expose_secret().as_bytes();
        // Constant-time over the expected length, so timing says nothing about the token.
        let mut diff = u8::from(presented.len() != expected.len());
        for (i, byte) in expected.iter().enumerate() {
            diff |= byte ^ presented.get(i).copied().unwrap_or(0);
        }
        if diff == 0 {
            Ok(Self)
        } else {
            Err(ApiError::new(
                ErrorCode::Unauthorized,
                "admin token required",
            ))
        }
    }
}
