//! Pinecrest Bank & Trust: a bank with a brokerage arm that publishes its data the way
//! FDX 6 says (as Plaid's Core Exchange does): accounts listed once, then each account's
//! balances and holdings and its transactions asked for by account, amounts without a
//! sign beside a `debitCreditMemo`, `page.nextOffset` paging, FDX error bodies, and a
//! FAPI interaction id echoed on every answer. A standard OAuth server with PKCE and
//! rotating refresh tokens (a replaced one is accepted for 30 s).
//!
//! This module is Pinecrest's profile ([`SPEC`]) and its description; [`api`] is its
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
    id: "pinecrest",
    name: "Pinecrest Bank & Trust",
    prefix: "pct_",
    default_client: DefaultClient {
        client_id: "finsync-pinecrest",
        client_secret: "pinecrest-sandbox-secret",
    },
    oauth: OAuthRules {
        client_auth: ClientAuth::Either,
        scopes: ScopeSet::all(),
        scope_separator: ' ',
        pkce_required: true,
        token_shape: TokenShape::Fixed(TokenQuirks::STANDARD),
        refresh_tokens: RefreshTokens::Rotate {
            grace: Duration::from_secs(30),
        },
        consent_ids: false,
    },
    data: DataRules {
        salted_seed: true,
        rebranded: true,
    },
    faults: FaultRules {
        malformed_numbers: &["amount", "currentBalance", "units"],
    },
    api_root: "/pinecrest",
    sends_webhooks: false,
    routes,
    describe,
};

fn routes(_: &Arc<AppState>) -> Router<Arc<AppState>> {
    api::routes()
}

fn describe(config: &SandboxConfig) -> String {
    format!(
        "Pinecrest Bank & Trust (institution id `pinecrest`, client `{client}`), FDX 6 / Core Exchange\n\
         \x20 OAuth: PKCE S256 required, Basic or body client authentication, space-separated scopes\n\
         \x20   accounts holdings transactions, refresh tokens rotate, a replaced one still accepted for 30 s.\n\
         \x20 GET  /pinecrest/accounts                          scope `accounts`: {{\"page\": {{\"nextOffset\"}}, \"accounts\": [...]}}\n\
         \x20 GET  /pinecrest/accounts/{{accountId}}              scope `accounts`: balances by accountCategory;\n\
         \x20      an INVESTMENT_ACCOUNT's `holdings` (scope `holdings`) with `securityIds` [{{id, idType}}]\n\
         \x20 GET  /pinecrest/accounts/{{accountId}}/transactions scope `transactions`: `startTime`, `endTime`\n\
         \x20      (YYYY-MM-DD, at most 365 days apart), `offset`, `limit` (1..=500, default 100)\n\
         \x20 Amounts are JSON numbers without a sign; `debitCreditMemo` is DEBIT (money out), CREDIT or MEMO\n\
         \x20   (a pending debit). Errors: {{\"code\": \"701\", \"message\": ...}} (701 unknown account, 703 bad dates,\n\
         \x20   601 bad paging, 602 token). Every answer echoes `x-fapi-interaction-id`.\n",
        client = config.client(Institution::Pinecrest).client_id,
    )
}
