//! Larkspur Data: an aggregator whose API has Plaid's shape: every data call a `POST`
//! with a JSON body that carries the user's `access_token` (and the client's
//! `client_id` and `secret`, or `PLAID-CLIENT-ID` and `PLAID-SECRET` headers),
//! holdings that name a `security_id` listed once in a `securities` array beside them,
//! `/transactions/sync` changes since a cursor, positive amounts for money out, and
//! errors as `{"error_type", "error_code", "error_message"}`. A standard OAuth server
//! with PKCE links users; refresh tokens rotate, a replaced one refused at once.
//!
//! This module is Larkspur's profile ([`SPEC`]) and its description; [`api`] is its
//! data API.

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
    id: "larkspur",
    name: "Larkspur Data",
    prefix: "lsp_",
    default_client: DefaultClient {
        client_id: "finsync-larkspur",
        client_secret: "larkspur-sandbox-secret",
    },
    oauth: OAuthRules {
        client_auth: ClientAuth::Either,
        scopes: ScopeSet::all(),
        scope_separator: ' ',
        pkce_required: true,
        token_shape: TokenShape::Fixed(TokenQuirks::STANDARD),
        refresh_tokens: RefreshTokens::Rotate {
            grace: Duration::ZERO,
        },
        consent_ids: false,
    },
    data: DataRules {
        salted_seed: true,
        rebranded: true,
    },
    faults: FaultRules {
        malformed_numbers: &["amount", "quantity", "balances.current"],
    },
    api_root: "/larkspur",
    sends_webhooks: false,
    routes,
    describe,
};

fn routes(_: &Arc<AppState>) -> Router<Arc<AppState>> {
    api::routes()
}

fn describe(config: &SandboxConfig) -> String {
    let client = config.client(Institution::Larkspur);
    format!(
        "Larkspur Data (institution id `larkspur`, client `{id}`), a Plaid-shaped aggregator\n\
         \x20 OAuth: PKCE S256 required, space-separated scopes accounts holdings transactions, refresh tokens rotate.\n\
         \x20 POST /larkspur/accounts/get                 scope `accounts`\n\
         \x20 POST /larkspur/investments/holdings/get     scope `holdings`: `holdings` name a `security_id` of `securities`\n\
         \x20 POST /larkspur/transactions/sync            scope `transactions`: {{\"added\", \"modified\", \"removed\", \"next_cursor\",\n\
         \x20      \"has_more\"}} since `cursor`, `count` 1..=500 (default 100); 400 TRANSACTIONS_SYNC_MUTATION_DURING_PAGINATION\n\
         \x20 Every body is JSON with `access_token`, and `client_id` and `secret` (`{id}`) unless the\n\
         \x20   `PLAID-CLIENT-ID` and `PLAID-SECRET` headers carry them. Amounts are JSON numbers, money out positive.\n\
         \x20 Errors: HTTP 400 {{\"error_type\", \"error_code\", \"error_message\", \"display_message\", \"request_id\"}}.\n",
        id = client.client_id,
    )
}
