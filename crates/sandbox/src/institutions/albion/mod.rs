//! Albion Building Society: a UK bank that publishes its accounts the way UK Open
//! Banking's Account and Transaction API (v3.1) says: `{"Data", "Links", "Meta"}`
//! documents, balances per account as a list typed `InterimBooked` /
//! `InterimAvailable` with a `CreditDebitIndicator` beside an unsigned amount,
//! transactions per account between booking times, paged by `Links.Next`, and
//! `x-fapi-interaction-id` echoed. Its answers are checked against the published
//! OpenAPI document in the test suite. A standard OAuth server with PKCE; refresh
//! tokens rotate, a replaced one refused at once.
//!
//! This module is Albion's profile ([`SPEC`]) and its description; [`api`] is its data
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
    id: "albion",
    name: "Albion Building Society",
    prefix: "alb_",
    default_client: DefaultClient {
        client_id: "finsync-albion",
        client_secret: "albion-sandbox-secret",
    },
    oauth: OAuthRules {
        client_auth: ClientAuth::Either,
        scopes: ScopeSet::of(&[Scope::Accounts, Scope::Transactions]),
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
        malformed_numbers: &["Amount.Amount"],
    },
    api_root: "/albion/open-banking/v3.1/aisp/",
    sends_webhooks: false,
    routes,
    describe,
};

fn routes(_: &Arc<AppState>) -> Router<Arc<AppState>> {
    api::routes()
}

fn describe(config: &SandboxConfig) -> String {
    format!(
        "Albion Building Society (institution id `albion`, client `{client}`), UK Open Banking AIS v3.1\n\
         \x20 OAuth: PKCE S256 required, Basic or body client authentication, scopes `accounts transactions`,\n\
         \x20   refresh tokens rotate, a replaced one refused at once.\n\
         \x20 GET  /albion/open-banking/v3.1/aisp/accounts                          scope `accounts`\n\
         \x20 GET  /albion/open-banking/v3.1/aisp/accounts/{{AccountId}}/balances     scope `accounts`:\n\
         \x20      `InterimBooked` and `InterimAvailable`, each an unsigned `Amount` with a `CreditDebitIndicator`\n\
         \x20 GET  /albion/open-banking/v3.1/aisp/accounts/{{AccountId}}/transactions scope `transactions`:\n\
         \x20      `fromBookingDateTime`, `toBookingDateTime`; 25 a page, the next one at `Links.Next`\n\
         \x20 Documents are {{\"Data\": ..., \"Links\": {{\"Self\"}}, \"Meta\": {{\"TotalPages\"}}}}; money is GBP text with two decimals;\n\
         \x20   errors are {{\"Code\", \"Id\", \"Message\", \"Errors\": [{{\"ErrorCode\", \"Message\"}}]}}; `x-fapi-interaction-id` is echoed.\n",
        client = config.client(Institution::Albion).client_id,
    )
}
