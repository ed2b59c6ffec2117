//! Bearer authentication (RFC 6750) as every institution's data API does it: the token
//! from the `Authorization` header (or, for an API that takes it in the request body,
//! from there), resolved against the institution's grants and checked for the
//! endpoint's scope, and, where the institution binds data requests to a consent, the
//! `Consent-ID` header checked against the token's grant. Each institution words its
//! refusals its own way.

use std::time::Instant;

use axum::http::{HeaderMap, header};

use super::grants::{Bearer, GrantStore, Scope};

/// Why a data request was not let in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Denied {
    /// Missing, unknown, expired or revoked: the client must refresh or re-link.
    InvalidToken,
    /// A valid token without the endpoint's scope.
    InsufficientScope(Scope),
}

/// The user and scopes behind the request's token, if it may read `scope`.
pub(super) fn authorize(
    grants: &GrantStore,
    headers: &HeaderMap,
    scope: Scope,
) -> Result<Bearer, Denied> {
    let token = bearer_token(headers).ok_or(Denied::InvalidToken)?;
    authorize_token(grants, token, scope)
}

/// Why a request did not repeat its grant's consent (`Consent-ID`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ConsentDenied {
    /// No `Consent-ID` header: the client's format error.
    Missing,
    /// A consent other than the one the token's grant stands on.
    Other,
}

/// Whether the request's `Consent-ID` header names the consent `bearer` stands on.
pub(super) fn consent(bearer: &Bearer, headers: &HeaderMap) -> Result<(), ConsentDenied> {
    let sent = headers
        .get("consent-id")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .ok_or(ConsentDenied::Missing)?;
    if super::grants::constant_time_eq(sent.as_bytes(), bearer.consent_id.as_bytes()) {
        Ok(())
    } else {
        Err(ConsentDenied::Other)
    }
}

/// The user and scopes behind `token`, if it may read `scope`.
pub(super) fn authorize_token(
    grants: &GrantStore,
    token: &str,
    scope: Scope,
) -> Result<Bearer, Denied> {
    let bearer = grants
        .authenticate(token, Instant::now())
        .ok_or(Denied::InvalidToken)?;
    if !bearer.scopes.contains(scope) {
        return Err(Denied::InsufficientScope(scope));
    }
    Ok(bearer)
}

/// The token of an `Authorization: Bearer …` header; the scheme is case-insensitive.
pub(super) fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let (scheme, token) = headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .trim()
        .split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}
