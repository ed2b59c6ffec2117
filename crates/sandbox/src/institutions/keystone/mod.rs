//! Keystone Trust & Custody: a legacy custodian with RFC 8288 `Link` paging, transactions
//! by date window, 4-decimal strings, securities by CUSIP and ISIN, a nested token response
//! without `token_type` or `expires_in`, refresh tokens that never change, and the limits
//! of [`KeystoneLimits`]: a daily quota, a per-second limit and slowness under load.
//!
//! This module is Keystone's profile ([`SPEC`]), its limits and its description; [`api`]
//! is its data API and the middleware that enforces the limits.

mod api;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;

use super::{
    DataRules, DefaultClient, FaultRules, InstitutionSpec, OAuthRules, RefreshTokens, TokenShape,
};
use crate::grants::ScopeSet;
use crate::oauth::{ClientAuth, TokenQuirks};
use crate::{AppState, Institution, SandboxConfig};

pub(crate) static SPEC: InstitutionSpec = InstitutionSpec {
    id: "keystone",
    name: "Keystone Trust & Custody",
    prefix: "ktc_",
    default_client: DefaultClient {
        client_id: "FINSYNC-KTC-0001",
        client_secret: "keystone-sandbox-secret",
    },
    oauth: OAuthRules {
        client_auth: ClientAuth::BasicOnly,
        scopes: ScopeSet::all(),
        scope_separator: ' ',
        pkce_required: true,
        token_shape: TokenShape::Fixed(TokenQuirks {
            nested_under: Some("result"),
            omit_expires_in: true,
            omit_token_type: true,
            ..TokenQuirks::STANDARD
        }),
        refresh_tokens: RefreshTokens::Keep,
        consent_ids: false,
    },
    data: DataRules {
        salted_seed: true,
        rebranded: true,
    },
    faults: FaultRules {
        malformed_numbers: &["net_amount", "units", "market_value"],
    },
    api_root: "/keystone",
    sends_webhooks: false,
    routes,
    describe,
};

fn routes(app: &Arc<AppState>) -> Router<Arc<AppState>> {
    api::routes(Arc::clone(app))
}

/// Keystone's limits, per client (the sandbox's Keystone knows one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeystoneLimits {
    /// Data API requests allowed per UTC day; past it, 429 with `Retry-After` until midnight.
    pub daily_quota: u32,
    /// Data API requests allowed per wall-clock second; past it, 429 with `Retry-After: 1`.
    pub per_second: u32,
    /// Requests in flight Keystone serves at full speed.
    pub slow_after_in_flight: usize,
    /// Added to a request's time for every request in flight beyond `slow_after_in_flight`,
    /// so a client with a short timeout times out under load.
    pub latency_per_extra_request: Duration,
}

impl Default for KeystoneLimits {
    fn default() -> Self {
        Self {
            daily_quota: 10_000,
            per_second: 20,
            slow_after_in_flight: 8,
            latency_per_extra_request: Duration::from_millis(250),
        }
    }
}

fn describe(config: &SandboxConfig) -> String {
    let limits = &config.keystone;
    format!(
        "Keystone Trust & Custody (institution id `keystone`, client `{client}`), a legacy custodian\n\
         \x20 OAuth: client_secret_basic only, PKCE S256 required, token responses nested under `result` without\n\
         \x20   `token_type` or `expires_in`, refresh tokens never change.\n\
         \x20 GET  /keystone/v2/accounts        scope `accounts`\n\
         \x20 GET  /keystone/v2/positions       scope `holdings`: securities by CUSIP and ISIN, tickers for listed ones only\n\
         \x20 GET  /keystone/v2/transactions    scope `transactions`; `from` and `to` (YYYY-MM-DD, inclusive, at most\n\
         \x20   31 days apart) are required\n\
         \x20 Pages by RFC 8288 `Link: <...>; rel=\"next\"` headers, `page_size` 1..=200 (default 50): {{\"records\": [...]}}.\n\
         \x20 Money is a string with 4 decimals; a positive amount is money in. Trade dates are YYYY-MM-DD,\n\
         \x20   settlement times epoch seconds.\n\
         \x20 Limits: {quota} requests a day (429 until UTC midnight), {per_second} a second (429, Retry-After: 1);\n\
         \x20   beyond {slow_after} requests in flight each one adds {latency} ms to every request.\n",
        client = config.client(Institution::Keystone).client_id,
        quota = limits.daily_quota,
        per_second = limits.per_second,
        slow_after = limits.slow_after_in_flight,
        latency = limits.latency_per_extra_request.as_millis(),
    )
}
