//! Bearer authentication (RFC 6750) as every institution's data API does it: the token
//! from the `Authorization` header (or, for an API that takes it in the request body,
//! from there), resolved against the institution's grants and checked for the
//! endpoint's scope. Each institution words its refusals its own way.

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
