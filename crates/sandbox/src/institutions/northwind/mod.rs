//! Northwind Credit Union: page-number paging, JSON numbers, epoch-millisecond dates, a
//! standard OAuth server, and data requests bound to the grant's consent.
//!
//! This module is Northwind's profile ([`SPEC`]) and its description; [`api`] is its data
//! API.

mod api;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;

use super::{
    DataRules, DefaultClient, FaultRules, InstitutionSpec, OAuthRules, RefreshTokens, TokenShape,
};
use crate::grants::{Scope, ScopeSet};
use crate::oauth::{ClientAuth, TokenQuirks};
use crate::{AppState, Institution, SandboxConfig};

pub(crate) static SPEC: InstitutionSpec = InstitutionSpec {
    id: "northwind",
    name: "Northwind Credit Union",
    prefix: "nwcu_",
    default_client: DefaultClient {
        client_id: "finsync-northwind",
        client_secret: "northwind-sandbox-secret",
    },
    oauth: OAuthRules {
        client_auth: ClientAuth::Either,
        scopes: ScopeSet::of(&[Scope::Accounts, Scope::Transactions]),
        scope_separator: ' ',
        pkce_required: true,
        token_shape: TokenShape::Fixed(TokenQuirks::STANDARD),
        refresh_tokens: RefreshTokens::Rotate {
            grace: Duration::from_secs(1800),
        },
        consent_ids: true,
    },
    data: DataRules {
        salted_seed: true,
        rebranded: true,
    },
    faults: FaultRules {
        malformed_numbers: &["amount", "balance"],
    },
    api_root: "/northwind",
    sends_webhooks: false,
    routes,
    describe,
};

fn routes(_: &Arc<AppState>) -> Router<Arc<AppState>> {
    api::routes()
}

fn describe(config: &SandboxConfig) -> String {
    format!(
        "Northwind Credit Union (institution id `northwind`, client `{client}`)\n\
         \x20 OAuth: standard; PKCE S256 required, space-separated scopes `accounts transactions`, refresh tokens rotate, a replaced one still accepted for 30 minutes.\n\
         \x20 Each grant stands on a consent: token responses carry its `consent_id`, which every data request repeats as `Consent-ID` (400 without it, 401 for another).\n\
         \x20 GET  /northwind/v1/accounts       scope `accounts`\n\
         \x20 GET  /northwind/v1/transactions   scope `transactions`\n\
         \x20 Pages by `page` (from 1) and `per_page` (1..=100, default 25): {{\"items\": [...], \"page\": 1, \"total_pages\": 3}}.\n\
         \x20 Amounts are JSON numbers, a positive amount is money in; times are epoch milliseconds.\n",
        client = config.client(Institution::Northwind).client_id,
    )
}
