//! The connector file format, exactly as an admin writes it. Unknown keys are
//! rejected by serde; everything that needs more than a type check (JSONPath, URLs,
//! which canonical fields exist and are required) is checked in `validate`, which
//! reports every problem at once.

use std::collections::BTreeMap;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectorFile {
    /// A profile this file builds on (`connectors/profiles/<name>.toml`): the file is
    /// read as the profile with the file's own keys set over it.
    pub extends: Option<String>,
    /// Optional; when present it must equal the file stem.
    pub id: Option<String>,
    pub name: String,
    /// ISO 3166-1 alpha-2.
    pub country: String,
    pub products: Vec<String>,
    /// Every relative URL and path in the file is joined to this.
    pub base_url: String,
    pub auth: OAuth2Spec,
    #[serde(default)]
    pub limits: LimitsSpec,
    #[serde(default)]
    pub errors: ErrorSpec,
    /// How often this institution's connections are synced, unless a connection
    /// says otherwise; absent: the deployment's default (`sync.interval_secs`).
    pub schedule: Option<ScheduleSpec>,
    /// Webhooks the institution sends when a user's data changes, if it does.
    pub webhooks: Option<WebhooksSpec>,
    /// Headers sent on every data request (each endpoint may add its own).
    #[serde(default)]
    pub headers: BTreeMap<String, HeaderSpec>,
    pub endpoints: EndpointsSpec,
}

/// One request header's value: text, in which `{uuid}` is a fresh UUID per request
/// and `{account.…}` a value of the account a fan-out request is for, a reference
/// to a secret, or a value the connection's grant came with.
#[derive(Debug, Clone, Deserialize)]
#[serde(
    untagged,
    expecting = "a header is text, `{ env = \"NAME\" }` (a secret) or `{ connection = \"name\" }` (a value kept from the token response)"
)]
pub enum HeaderSpec {
    Text(String),
    Secret(SecretRef),
    Connection(ConnectionRef),
}

/// A value the institution granted with the user's tokens (one of
/// `[auth.token_response] keep`), e.g. a consent id every request must carry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionRef {
    pub connection: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSpec {
    /// Seconds between two scheduled syncs of one connection (60 to 2 592 000).
    pub interval_secs: Option<u64>,
    /// Days between two deep syncs of one connection (1 to 365): the whole history
    /// the institution offers read again, so removals an incremental sync cannot
    /// see are found.
    pub deep_sync_interval_days: Option<u32>,
}

/// How the institution signs the webhooks it sends to `POST /webhooks/<id>`, and
/// where an event says what it is and which accounts it concerns.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhooksSpec {
    /// A reference to the signing secret the institution gave, never the secret.
    pub secret: SecretRef,
    /// Header that carries the HMAC-SHA256 signature. Several signatures separated
    /// by commas are accepted (an institution rotating its secret sends two).
    pub signature_header: String,
    /// Text before each signature in the header (e.g. `sha256=`), if any.
    pub signature_prefix: Option<String>,
    #[serde(default)]
    pub signature_encoding: SignatureEncoding,
    /// What the signature covers.
    #[serde(default)]
    pub signed_content: SignedContent,
    /// Header that says when the event was sent (epoch seconds or RFC 3339)...
    pub timestamp_header: Option<String>,
    /// ...or JSONPath to that time in the body.
    pub timestamp_path: Option<String>,
    /// Events sent longer ago than this (or this far in the future) are refused.
    #[serde(default = "default_tolerance")]
    pub tolerance_secs: u64,
    /// JSONPath to the event's unique id: a second delivery of it is a duplicate.
    pub event_id: String,
    /// JSONPath to the event's type, if it has one.
    pub event_type: Option<String>,
    /// JSONPath to the institution's ids of the accounts the event concerns (it may
    /// select several); their connections are synced.
    pub account_ids: String,
    /// Event types that ask for a sync; absent: every event does.
    pub sync_on: Option<Vec<String>>,
}

fn default_tolerance() -> u64 {
    300
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SignatureEncoding {
    #[default]
    Hex,
    Base64,
}

/// The bytes an institution's HMAC covers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum SignedContent {
    /// The raw request body.
    #[default]
    #[serde(rename = "body")]
    Body,
    /// The timestamp header's value, a `.`, then the raw body: the time is signed
    /// too, so a captured request cannot be sent again later with a new time.
    #[serde(rename = "timestamp.body")]
    TimestampDotBody,
}

/// How finsync is authorised at the institution. Only OAuth 2.0 exists today; the
/// `type` key names it so other kinds can come without changing existing files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthType {
    Oauth2,
}

/// A plain struct rather than a tagged enum, so that a problem deep inside `[auth]`
/// is reported with its full path.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuth2Spec {
    pub r#type: AuthType,
    pub authorize_url: String,
    pub token_url: String,
    pub revocation_url: Option<String>,
    pub client_id: String,
    /// A reference to the secret, never the secret itself.
    pub client_secret: SecretRef,
    #[serde(default)]
    pub client_auth: ClientAuth,
    pub scopes: Vec<String>,
    #[serde(default = "default_scope_separator")]
    pub scope_separator: String,
    #[serde(default = "yes")]
    pub pkce: bool,
    #[serde(default)]
    pub rotating_refresh_tokens: bool,
    /// How long the institution still accepts a refresh token after rotating it out
    /// (its reuse grace period), if it does: a refresh cut short before its result
    /// was saved is then retried with the same token instead of asking the user to
    /// link again. Only with `rotating_refresh_tokens`; 1 to 86 400.
    pub refresh_token_reuse_grace_secs: Option<u64>,
    /// How long a user's consent lasts at this institution (e.g. 90 days under
    /// PSD2), if it expires at all.
    pub consent_lifetime_days: Option<u32>,
    /// Query parameter that names the user to the institution's login page, if the
    /// institution supports one.
    pub login_hint_param: Option<String>,
    /// Extra parameters sent on every token request.
    #[serde(default)]
    pub extra_token_params: BTreeMap<String, String>,
    /// The institution takes the user's access token as this parameter of every data
    /// request (the JSON body of a `POST`, the query of a `GET`), as Plaid's
    /// `access_token`, instead of an `Authorization: Bearer` header.
    pub access_token_param: Option<String>,
    #[serde(default)]
    pub token_response: TokenResponseSpec,
}

fn default_scope_separator() -> String {
    " ".into()
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretRef {
    /// Name of the environment variable (or `[connectors.secrets]` entry) that holds it.
    pub env: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    /// HTTP Basic (`client_secret_basic`).
    #[default]
    Basic,
    /// In the form body (`client_secret_post`).
    Post,
}

/// How this institution bends RFC 6749 §5.1; the token client straightens it out.
/// Every key is optional.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenResponseSpec {
    /// Lifetime assumed when `expires_in` is absent.
    #[serde(default = "default_lifetime")]
    pub default_lifetime_secs: u64,
    /// `token_type` to assume when the institution leaves it out.
    #[serde(default = "default_token_type")]
    pub default_token_type: String,
    /// Key under which the token fields are nested, if they are (e.g. `data`).
    pub nested_under: Option<String>,
    /// Fields of the token response beside the tokens that the connection keeps
    /// (sealed, like its tokens) for headers to send, e.g. a consent id. A refresh
    /// that answers without one keeps the value the grant came with.
    #[serde(default)]
    pub keep: Vec<String>,
}

fn default_lifetime() -> u64 {
    3600
}

fn default_token_type() -> String {
    "Bearer".into()
}

impl Default for TokenResponseSpec {
    fn default() -> Self {
        Self {
            default_lifetime_secs: default_lifetime(),
            default_token_type: default_token_type(),
            nested_under: None,
            keep: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSpec {
    pub requests_per_second: Option<u32>,
    pub requests_per_minute: Option<u32>,
    pub requests_per_day: Option<u32>,
    #[serde(default = "default_concurrency")]
    pub concurrency: u32,
    #[serde(default = "default_page_size")]
    pub page_size: u32,
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
}

fn default_concurrency() -> u32 {
    4
}
fn default_page_size() -> u32 {
    100
}
fn default_timeout() -> u64 {
    30
}

impl Default for LimitsSpec {
    fn default() -> Self {
        Self {
            requests_per_second: None,
            requests_per_minute: None,
            requests_per_day: None,
            concurrency: default_concurrency(),
            page_size: default_page_size(),
            timeout_secs: default_timeout(),
        }
    }
}

/// What the institution's failures mean. Every key is optional; a key left out keeps
/// its default, so `[errors]` need only say what differs.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ErrorSpec {
    pub reauth_statuses: Vec<u16>,
    pub rate_limited_statuses: Vec<u16>,
    pub retry_statuses: Vec<u16>,
    /// Header that says how long to wait when rate limited (seconds, an HTTP date, or
    /// a reset moment in epoch seconds).
    pub retry_after_header: String,
    /// Where an error code sits in an error body, e.g. `$.error`.
    pub code_path: Option<String>,
    #[serde(default)]
    pub reauth_codes: Vec<String>,
    #[serde(default)]
    pub rate_limited_codes: Vec<String>,
    #[serde(default)]
    pub retry_codes: Vec<String>,
    /// JSONPath, relative to one record, to a marker the institution sets on a record
    /// it could not produce (e.g. `$.error`): such a record is set aside as bad.
    pub record_error: Option<String>,
}

impl Default for ErrorSpec {
    fn default() -> Self {
        Self {
            reauth_statuses: vec![401],
            rate_limited_statuses: vec![429],
            retry_statuses: vec![500, 502, 503, 504],
            retry_after_header: "Retry-After".into(),
            code_path: None,
            reauth_codes: Vec::new(),
            rate_limited_codes: Vec::new(),
            retry_codes: Vec::new(),
            record_error: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointsSpec {
    pub accounts: EndpointSpec,
    /// Per-account endpoints that fill fields of the account they were fetched for
    /// (balances, details), by a name of the admin's choosing.
    #[serde(default)]
    pub details: BTreeMap<String, EndpointSpec>,
    pub holdings: Option<EndpointSpec>,
    pub transactions: Option<EndpointSpec>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointSpec {
    #[serde(default = "default_method")]
    pub method: String,
    /// Relative to `base_url`. A fan-out endpoint names the account in it, e.g.
    /// `accounts/{account.external_id}/transactions`.
    pub path: String,
    /// `"accounts"`: the endpoint is requested once per account, with the account's
    /// values in its path, query and headers.
    pub for_each: Option<String>,
    /// Fan-out only: an RFC 9535 filter on the account's record (as the accounts
    /// endpoint returned it) that says which accounts to ask for, e.g.
    /// `@.accountCategory == 'INVESTMENT_ACCOUNT'`.
    pub when: Option<String>,
    /// Headers on every request of this endpoint, over the file's `[headers]`.
    #[serde(default)]
    pub headers: BTreeMap<String, HeaderSpec>,
    /// Lists of the same response that records refer to by key, by a name fields
    /// use in `from` (e.g. holdings naming a security listed beside them).
    #[serde(default)]
    pub joins: BTreeMap<String, JoinSpec>,
    #[serde(default)]
    pub query: BTreeMap<String, String>,
    #[serde(default)]
    pub paging: PagingSpec,
    /// JSONPath (RFC 9535) to the records in one response page.
    pub records: String,
    /// Canonical field name → where it comes from.
    pub fields: BTreeMap<String, FieldSpec>,
    /// Holdings only: the security embedded in each holding record.
    #[serde(default)]
    pub security_fields: BTreeMap<String, FieldSpec>,
    /// Transactions only: which direction a positive amount means.
    #[serde(default)]
    pub sign_convention: SignConvention,
    /// Sync-token paging: JSONPath to records changed since the token, mapped like
    /// `records` and replacing an earlier record with the same id.
    pub modified: Option<String>,
    /// Sync-token paging: JSONPath to the ids of records removed since the token.
    pub removed: Option<String>,
    /// Walk a date range in steps, each step paged by `paging`.
    pub window: Option<WindowSpec>,
    /// Holdings and transactions only: while the institution struggles (adaptive
    /// mode), this endpoint waits for a later sync and what is stored stays.
    #[serde(default)]
    pub deferrable: bool,
}

/// A list in the same response that records refer to by key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinSpec {
    /// JSONPath to the list's elements in the response, e.g. `$.securities[*]`.
    pub list: String,
    /// JSONPath, relative to one element, to its key, e.g. `$.security_id`.
    pub key: String,
    /// JSONPath, relative to one record, to the key it refers to.
    pub on: String,
}

/// A date range walked in steps: `[today - history_days, today]`, one request loop
/// per step of `step_days`, with `from_param` and `to_param` (both inclusive).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowSpec {
    pub from_param: String,
    pub to_param: String,
    /// strftime pattern of the two dates.
    #[serde(default = "default_window_format")]
    pub format: String,
    /// strftime pattern of the last date, when it differs (e.g. the end of the day:
    /// `%Y-%m-%dT23:59:59Z`).
    pub to_format: Option<String>,
    pub step_days: u32,
    pub history_days: u32,
    /// How far before the last synced date an incremental sync starts again, for
    /// records the institution posts late.
    #[serde(default)]
    pub lookback_days: u32,
}

fn default_window_format() -> String {
    "%Y-%m-%d".into()
}

fn default_method() -> String {
    "GET".into()
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum PagingSpec {
    /// One request returns everything.
    #[default]
    None,
    /// The body names the next page's cursor; absent or null on the last page.
    Cursor {
        cursor_param: String,
        next_cursor: String,
        page_size_param: Option<String>,
    },
    /// `offset` and `limit` parameters; the list ends at `total` when the institution
    /// gives one, else at an empty page (institutions may send fewer than asked).
    Offset {
        offset_param: String,
        limit_param: String,
        /// JSONPath to the total record count, when the institution gives one.
        total: Option<String>,
    },
    /// Page numbers from `first_page`; an empty page ends the list.
    Page {
        page_param: String,
        page_size_param: Option<String>,
        #[serde(default = "one")]
        first_page: u32,
    },
    /// RFC 8288 `Link: <…>; rel="next"` headers.
    LinkHeader { page_size_param: Option<String> },
    /// The next page's URL in the body, e.g. UK Open Banking's `$.Links.Next`;
    /// absent, null or empty on the last page.
    NextLink {
        next: String,
        page_size_param: Option<String>,
    },
    /// Changes since a token (added / modified / removed), in the style of Plaid's
    /// `/transactions/sync`: pages follow `next_token` while `has_more` is true.
    SyncToken {
        token_param: String,
        next_token: String,
        has_more: String,
        page_size_param: Option<String>,
        /// Statuses that mean "the data changed while you paged: start again from
        /// the token you began with".
        #[serde(default)]
        restart_statuses: Vec<u16>,
        /// Error codes (at `errors.code_path`) with the same meaning.
        #[serde(default)]
        restart_codes: Vec<String>,
    },
}

fn one() -> u32 {
    1
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SignConvention {
    /// A positive amount is money into the account (finsync's own convention).
    #[default]
    InflowPositive,
    /// A positive amount is money out of the account (e.g. Plaid's).
    OutflowPositive,
}

/// Where one canonical field comes from and how it is converted.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldSpec {
    /// Singular JSONPath relative to the record (`$` is the record).
    pub path: Option<String>,
    /// A constant, instead of a path.
    pub value: Option<String>,
    /// Used when the path finds nothing or null.
    pub default: Option<String>,
    /// The institution's value → finsync's value (after converting it to text).
    #[serde(default)]
    pub map: BTreeMap<String, String>,
    /// Decimal fields: the value is an integer count of 10^-scale units.
    pub minor_units: Option<u32>,
    /// Date and time fields: `iso8601` (default), `epoch_seconds`, `epoch_millis`, or
    /// a strftime pattern such as `%m/%d/%Y`.
    pub format: Option<String>,
    /// IANA time zone (e.g. `America/New_York`) of times sent without an offset, and
    /// in which an epoch timestamp falls on its date. UTC when absent.
    pub timezone: Option<String>,
    /// Where `path` is read: the record (default), `account` (the record of the
    /// account a fan-out request was for), or the name of one of the endpoint's joins.
    pub from: Option<String>,
    /// Decimal fields: the sign comes from another field of the record.
    pub sign: Option<SignSpec>,
}

/// A decimal's sign carried by another field, e.g. `debitCreditMemo`: the value is
/// taken without its sign and given the one the indicator maps to.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignSpec {
    /// Singular JSONPath to the indicator, read where the field's `path` is.
    pub path: String,
    /// Indicator value → `+` or `-`, the sign of the canonical value.
    pub map: BTreeMap<String, String>,
}
