//! Meridian Brokerage: a modern aggregator-style API, cursor paging, JSON numbers, Plaid's
//! sign convention, rotating refresh tokens, PKCE, configurable token response shapes, and
//! signed webhooks when the data moves. The data generator speaks Meridian, so its data is
//! the generator's as it is.
//!
//! This module is Meridian's profile ([`SPEC`]) and its description; [`api`] is its data
//! API and [`sync`] its `/v1/transactions/sync`.

mod api;
mod sync;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;

use super::{
    DataRules, DefaultClient, FaultRules, InstitutionSpec, OAuthRules, RefreshTokens, TokenShape,
};
use crate::grants::ScopeSet;
use crate::oauth::ClientAuth;
use crate::{AppState, Institution, SandboxConfig};

pub(crate) static SPEC: InstitutionSpec = InstitutionSpec {
    id: "meridian",
    name: "Meridian Brokerage",
    prefix: "mer_",
    default_client: DefaultClient {
        client_id: "finsync-sandbox",
        client_secret: "meridian-sandbox-secret",
    },
    oauth: OAuthRules {
        client_auth: ClientAuth::Either,
        scopes: ScopeSet::all(),
        scope_separator: ' ',
        pkce_required: true,
        token_shape: TokenShape::Configured,
        refresh_tokens: RefreshTokens::Rotate {
            grace: Duration::ZERO,
        },
        consent_ids: false,
    },
    data: DataRules {
        salted_seed: false,
        rebranded: false,
    },
    faults: FaultRules {
        malformed_numbers: &["amount", "quantity", "balances.current"],
    },
    api_root: "/meridian",
    sends_webhooks: true,
    routes,
    describe,
};

fn routes(_: &Arc<AppState>) -> Router<Arc<AppState>> {
    api::routes()
}

fn describe(config: &SandboxConfig) -> String {
    format!(
        "Meridian Brokerage (institution id `meridian`, client `{client}`)\n\
         \x20 OAuth: PKCE S256 required, Basic or body client authentication, space-separated scopes\n\
         \x20   accounts holdings transactions, refresh tokens rotate, a replaced one refused at once.\n\
         \x20 GET  /meridian/v1/accounts        scope `accounts`\n\
         \x20 GET  /meridian/v1/holdings        scope `holdings`\n\
         \x20 GET  /meridian/v1/transactions    scope `transactions`\n\
         \x20 GET  /meridian/v1/transactions/sync  scope `transactions`: {{\"added\", \"modified\", \"removed\", \"next_cursor\", \"has_more\"}}\n\
         \x20      since `cursor` (none: everything); 409 sync_mutation_during_pagination if the epoch moved mid-paging\n\
         \x20 Bearer token; pages by `cursor` and `count` (1..=500, default 50): {{\"<endpoint>\": [...], \"next_cursor\": ...}}.\n\
         \x20 Amounts are JSON numbers; a positive transaction amount is money out of the account.\n\
         \x20 Webhooks: each new epoch, a SYNC_UPDATES_AVAILABLE event per linked user to the registered URL,\n\
         \x20   signed HMAC-SHA256 over \"<Meridian-Timestamp>.<body>\" as `Meridian-Signature: v1=<hex>`\n\
         \x20   (secret `meridian-webhook-secret` unless configured); retried on 5xx, same `webhook_id`.\n",
        client = config.client(Institution::Meridian).client_id,
    )
}
