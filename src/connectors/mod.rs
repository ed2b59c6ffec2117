//! Connectors: the abstraction layer between finsync and institutions. An admin
//! describes an institution in one TOML file under `connectors/` ([`spec`]), which
//! may build on a shipped profile of a standard ([`profiles`]); it is validated and
//! compiled into a [`Connector`] ([`validate`]), kept in the [`Registry`], and run by
//! one generic [`engine`] that fetches pages (once per account for a fan-out
//! endpoint, with values filled into [`template`]s) and [`mapping`] that turns
//! records into the canonical model; a record that does not map is [`redact`]ed for
//! quarantine. The institution's signed [`webhook`]s are checked and read here too.
//! No code here is specific to an institution.

pub mod engine;
pub mod fields;
pub mod incremental;
pub mod mapping;
pub mod paging;
pub mod profiles;
pub mod record;
pub mod redact;
pub mod registry;
pub mod spec;
pub mod template;
pub mod validate;
pub mod webhook;

use std::collections::{BTreeMap, BTreeSet};

use serde_json_path::JsonPath;
use url::Url;

use crate::domain::Institution;

pub use engine::{Engine, EngineError, Fetched};
pub use incremental::{Position, SyncCursor};
pub use paging::Paging;
pub use registry::{Registry, RegistryError};
pub use spec::{ClientAuth, SignConvention, TokenResponseSpec};
pub use validate::{DEEP_SYNC_INTERVAL_DAYS, Problem, Problems, validate_file, validate_str};
pub use webhook::{Notice, WebhookError, Webhooks};

/// A validated connector file, ready to run.
#[derive(Debug, Clone)]
pub struct Connector {
    pub id: String,
    /// The shipped profile the file extends, if it does.
    pub profile: Option<String>,
    pub name: String,
    pub country: String,
    pub products: Vec<String>,
    pub base_url: Url,
    pub auth: OAuth2,
    pub limits: spec::LimitsSpec,
    pub errors: Errors,
    /// How often this institution's connections are synced, if the file says.
    pub sync_interval: Option<std::time::Duration>,
    /// How often a connection is deep-synced, if the connector says.
    pub deep_sync_interval: Option<std::time::Duration>,
    /// Webhooks the institution sends, if the file declares them.
    pub webhooks: Option<webhook::Webhooks>,
    pub accounts: Endpoint,
    /// Per-account endpoints that fill fields of the account, by name.
    pub details: Vec<(String, Endpoint)>,
    pub holdings: Option<Endpoint>,
    pub transactions: Option<Endpoint>,
    /// SHA-256 of the file (and of the profile it extends): which version of the
    /// connector produced a record.
    pub hash: String,
}

impl Connector {
    /// The institution this file describes, as the canonical model names it.
    pub fn institution(&self) -> Institution {
        Institution {
            id: self.id.clone(),
            name: self.name.clone(),
            country: self.country.clone(),
            connector_hash: self.hash.clone(),
        }
    }

    /// The values of the connection's grant that some request header sends.
    pub fn grant_values_needed(&self) -> BTreeSet<&str> {
        [
            Some(&self.accounts),
            self.holdings.as_ref(),
            self.transactions.as_ref(),
        ]
        .into_iter()
        .flatten()
        .chain(self.details.iter().map(|(_, e)| e))
        .flat_map(|e| &e.headers)
        .filter_map(|(_, header)| match header {
            Header::Connection(name) => Some(name.as_str()),
            _ => None,
        })
        .collect()
    }
}

#[derive(Debug, Clone)]
pub struct OAuth2 {
    pub authorize_url: Url,
    pub token_url: Url,
    pub revocation_url: Option<Url>,
    pub client_id: String,
    /// Name of the variable that holds the client secret.
    pub client_secret_env: String,
    pub client_auth: ClientAuth,
    pub scopes: Vec<String>,
    pub scope_separator: String,
    pub pkce: bool,
    pub rotating_refresh_tokens: bool,
    /// How long a rotated-out refresh token is still accepted; `None`: not at all.
    pub refresh_token_reuse_grace: Option<std::time::Duration>,
    pub consent_lifetime_days: Option<u32>,
    pub login_hint_param: Option<String>,
    pub extra_token_params: BTreeMap<String, String>,
    pub token_response: TokenResponseSpec,
    /// Where data requests carry the access token, when not as a Bearer header.
    pub access_token_param: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Errors {
    pub spec: spec::ErrorSpec,
    pub code_path: Option<JsonPath>,
    /// Read in every record, so looked up by member names where it can be.
    pub record_error: Option<mapping::FieldPath>,
}

#[derive(Debug, Clone)]
pub struct Endpoint {
    pub method: reqwest::Method,
    pub base_url: Url,
    /// Relative to `base_url`, or a whole URL.
    pub path: template::Template,
    pub query: Vec<(String, template::Template)>,
    /// The file's `[headers]` and the endpoint's own, in that order.
    pub headers: Vec<(reqwest::header::HeaderName, Header)>,
    /// Requested once per account.
    pub fan_out: Option<FanOut>,
    /// Lists of the same response that records refer to by key.
    pub joins: Vec<Join>,
    pub paging: Paging,
    pub records: JsonPath,
    /// The list the records sit in (the records path without its trailing `[*]`),
    /// when it can be derived: a page without it is unreadable, not empty.
    pub records_container: Option<JsonPath>,
    /// The member names leading to each list of records, records first, when every
    /// records path is a plain list (`$.a.b[*]`), no two are the same list, and no
    /// join reads the page again: a page's records are then taken out of it list
    /// by list, with no path per record.
    pub record_lists: Option<Vec<Vec<String>>>,
    /// Whether those lists' records are kept as the page's text and read in place
    /// (see [`record`]): no other path of the page reads into the lists.
    pub lists_as_text: bool,
    pub fields: mapping::Mapping,
    pub security: Option<mapping::Mapping>,
    pub sign: SignConvention,
    /// Sync-token paging: records changed since the token.
    pub modified: Option<JsonPath>,
    /// Sync-token paging: ids of records removed since the token.
    pub removed: Option<JsonPath>,
    pub window: Option<Window>,
    /// May wait for a later sync while the institution struggles.
    pub deferrable: bool,
}

impl Endpoint {
    /// The lists whose records a page keeps as text ([`Self::lists_as_text`]).
    pub fn text_lists(&self) -> Option<&[Vec<String>]> {
        self.record_lists.as_deref().filter(|_| self.lists_as_text)
    }

    /// The URL of a request about `account` (a fan-out request) or of the endpoint.
    pub fn url(&self, account: Option<&mapping::Parent>) -> Result<Url, String> {
        let path = self.path.render(account, template::Escape::PathSegment)?;
        if path.starts_with("http://") || path.starts_with("https://") {
            Url::parse(&path)
        } else {
            self.base_url.join(path.trim_start_matches('/'))
        }
        .map_err(|e| format!("`{path}` is not a URL: {e}"))
    }

    /// Whether a fan-out endpoint asks for `account` (every account without `when`).
    pub fn asks_for(&self, account: &serde_json::Value) -> bool {
        match self.fan_out.as_ref().and_then(|f| f.when.as_ref()) {
            None => true,
            Some(filter) => {
                let one = serde_json::Value::Array(vec![account.clone()]);
                !filter.query(&one).is_empty()
            }
        }
    }
}

/// A header's value: filled in per request, a secret the file names, or a value of
/// the connection's grant.
#[derive(Debug, Clone)]
pub enum Header {
    Text(template::Template),
    /// Name of the variable (or `[connectors.secrets]` entry) that holds it.
    Secret(String),
    /// Name of a value the connection's grant came with (`[auth.token_response] keep`).
    Connection(String),
}

/// An endpoint requested once per account.
#[derive(Debug, Clone)]
pub struct FanOut {
    /// `$[?<when>]`: matches the one-element list of an account's record when the
    /// account is to be asked for.
    pub when: Option<JsonPath>,
}

/// A list in the same response that records refer to by key.
#[derive(Debug, Clone)]
pub struct Join {
    pub name: String,
    pub list: JsonPath,
    pub key: JsonPath,
    pub on: JsonPath,
}

/// A date range walked in steps; see [`spec::WindowSpec`].
#[derive(Debug, Clone)]
pub struct Window {
    pub from_param: String,
    pub to_param: String,
    pub format: String,
    /// The pattern of a step's last date (`format` unless the file says).
    pub to_format: String,
    pub step_days: u32,
    pub history_days: u32,
    pub lookback_days: u32,
}

impl Window {
    /// The inclusive `(from, to)` steps that cover `[today - history_days, today]`,
    /// oldest first.
    pub fn steps(&self, today: chrono::NaiveDate) -> Vec<(chrono::NaiveDate, chrono::NaiveDate)> {
        match today.checked_sub_days(chrono::Days::new(u64::from(self.history_days))) {
            Some(from) => self.steps_from(from, today),
            None => Vec::new(),
        }
    }

    /// Where an incremental walk starts after a sync that covered up to `through`:
    /// `lookback_days` before it, never before the history nor after today.
    pub fn resume_from(
        &self,
        through: chrono::NaiveDate,
        today: chrono::NaiveDate,
    ) -> chrono::NaiveDate {
        let days = |n: u32| chrono::Days::new(u64::from(n));
        let oldest = today
            .checked_sub_days(days(self.history_days))
            .unwrap_or(today);
        through
            .min(today)
            .checked_sub_days(days(self.lookback_days))
            .unwrap_or(oldest)
            .max(oldest)
    }

    /// The inclusive steps that cover `[from, today]`, oldest first.
    pub fn steps_from(
        &self,
        mut from: chrono::NaiveDate,
        today: chrono::NaiveDate,
    ) -> Vec<(chrono::NaiveDate, chrono::NaiveDate)> {
        let days = |n: u32| chrono::Days::new(u64::from(n));
        let mut steps = Vec::new();
        while from <= today {
            let to = from
                .checked_add_days(days(self.step_days.saturating_sub(1)))
                .map_or(today, |to| to.min(today));
            steps.push((from, to));
            match to.succ_opt() {
                Some(next) => from = next,
                None => break,
            }
        }
        steps
    }
}
