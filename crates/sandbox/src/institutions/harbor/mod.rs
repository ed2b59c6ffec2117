//! Harbor Savings Bank: a retail bank with offset paging, amounts as strings of cents with
//! money out positive, US dates, `client_secret_post` only, comma-separated scopes,
//! `expires_in` as a string and no PKCE.
//!
//! This module is Harbor's profile ([`SPEC`]) and its description; [`api`] is its data API.

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
    id: "harbor",
    name: "Harbor Savings Bank",
    prefix: "hsb_",
    default_client: DefaultClient {
        client_id: "finsync-harbor",
        client_secret: "harbor-sandbox-secret",
    },
    oauth: OAuthRules {
        client_auth: ClientAuth::PostOnly,
        scopes: ScopeSet::of(&[Scope::Accounts, Scope::Transactions]),
        scope_separator: ',',
        pkce_required: false,
        token_shape: TokenShape::Fixed(TokenQuirks {
            expires_in_as_string: true,
            ..TokenQuirks::STANDARD
        }),
        refresh_tokens: RefreshTokens::Rotate {
            grace: Duration::from_secs(60),
        },
        consent_ids: false,
    },
    data: DataRules {
        salted_seed: true,
        rebranded: true,
    },
    faults: FaultRules {
        malformed_numbers: &["amount", "ledger_balance"],
    },
    api_root: "/harbor",
    sends_webhooks: false,
    routes,
    describe,
};

fn routes(_: &Arc<AppState>) -> Router<Arc<AppState>> {
    api::routes()
}

fn describe(config: &SandboxConfig) -> String {
    format!(
        "Harbor Savings Bank (institution id `harbor`, client `{client}`), a retail bank\n\
         \x20 OAuth: client_secret_post only (HTTP Basic is refused), comma-separated scopes `accounts,transactions`,\n\
         \x20   no PKCE, `expires_in` sent as a string, refresh tokens rotate, a replaced one still accepted for 60 s.\n\
         \x20 GET  /harbor/api/accounts         scope `accounts`: checking (CHK) and savings (SAV) accounts\n\
         \x20 GET  /harbor/api/transactions     scope `transactions`\n\
         \x20 Pages by `offset` and `limit` (1..=100, default 25): {{\"data\": [...], \"total\": N}}.\n\
         \x20 Amounts and balances are strings of integer cents; a positive amount is money out (a debit).\n\
         \x20 Dates are MM/DD/YYYY; `status` is PENDING or POSTED, `replaces_pending_id` names the pending one.\n",
        client = config.client(Institution::Harbor).client_id,
    )
}
