//! Authentication extractors: a tenant by its API key, an admin by the admin token.
//! Keys are compared by hash (tenants) or in constant time (admin).

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use secrecy::ExposeSecret;

use super::{ApiError, ApiState, ErrorCode};
use crate::store::TenantRecord;

/// The tenant whose API key authenticated the request.
pub struct Tenant(pub TenantRecord);

/// A request that presented the admin token.
pub struct Admin;

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
        match state.sync.store.tenant_by_api_key(key).await {
            Ok(Some(tenant)) => Ok(Self(tenant)),
            Ok(None) => Err(ApiError::new(ErrorCode::Unauthorized, "unknown API key")),
            Err(e) => Err(ApiError::internal(e)),
        }
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
