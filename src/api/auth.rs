//! Authentication extractors: a tenant by one of its API keys (with the key's
//! scopes and a per-key rate limit; recently seen keys are cached briefly), an
//! admin by the admin token.

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
use crate::store::{ApiKeyRecord, Scope, Store, TenantRecord};

/// The tenant whose API key authenticated the request, and that key.
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
pub struct KeyCache {
    known: moka::future::Cache<String, (TenantRecord, ApiKeyRecord)>,
    /// Moves on every revocation, so a lookup that raced one is not kept.
    revocations: std::sync::atomic::AtomicU64,
}

impl KeyCache {
    pub fn new(ttl: Duration) -> Arc<Self> {
        Arc::new(Self {
            known: moka::future::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(ttl)
                .build(),
            revocations: Default::default(),
        })
    }

    async fn authenticate(
        &self,
        store: &Store,
        key: &str,
    ) -> Result<(TenantRecord, ApiKeyRecord), ApiError> {
        // By hash: the cache never holds a key itself.
        let id = crate::fingerprint::sha256_hex(key.as_bytes());
        if let Some(found) = self.known.get(&id).await {
            return Ok(found);
        }
        let before = self.revocations.load(Ordering::SeqCst);
        match store.authenticate(key).await {
            Ok(Some(found)) => {
                self.known.insert(id.clone(), found.clone()).await;
                // Inserted first, checked after: a revocation in between either
                // cleared the entry or shows here.
                if self.revocations.load(Ordering::SeqCst) != before {
                    self.known.invalidate(&id).await;
                }
                Ok(found)
            }
            Ok(None) => Err(ApiError::new(
                ErrorCode::Unauthorized,
                "unknown or revoked API key",
            )),
            Err(e) => Err(ApiError::internal(e)),
        }
    }

    /// After a revocation: nothing authenticated before it is trusted any more.
    pub fn forget_all(&self) {
        self.revocations.fetch_add(1, Ordering::SeqCst);
        self.known.invalidate_all();
    }
}

fn bearer(parts: &Parts) -> Option<&str> {
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
        let key = bearer(parts).ok_or_else(|| {
            ApiError::new(
                ErrorCode::Unauthorized,
                "send your API key as `Authorization: Bearer <key>`",
            )
        })?;
        let (tenant, key) = state.keys.authenticate(&state.env.store, key).await?;
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
