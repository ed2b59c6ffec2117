//! Turns a connector file into a [`Connector`], or reports every problem in it at
//! once, each with the file and the field path, in words an admin understands.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use chrono_tz::Tz;
use serde_json_path::JsonPath;
use serde_path_to_error::Segment;
use url::Url;

use super::fields::{self, FieldDef, Kind};
use super::mapping::{CompiledField, Mapping, Source, TimeFormat};
use super::spec::{
    ConnectorFile, EndpointSpec, FieldSpec, OAuth2Spec, PagingSpec, SignedContent, WebhooksSpec,
    WindowSpec,
};
use super::webhook::{Timestamp, Webhooks};
use super::{Connector, Endpoint, Errors, OAuth2, Paging, Window};

/// One problem in one connector file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: String,
    /// Dotted path of the offending key, e.g. `endpoints.accounts.records`.
    pub path: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}: {}", self.file, self.message)
        } else {
            write!(f, "{}: {}: {}", self.file, self.path, self.message)
        }
    }
}

/// Every problem found in one file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Problems(pub Vec<Problem>);

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

/// Reads and validates one file; the connector id is the file stem.
pub fn validate_file(path: &Path, base_url_override: Option<&str>) -> Result<Connector, Problems> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        Problems(vec![Problem {
            file: file.clone(),
            path: String::new(),
            message: format!("cannot read: {e}"),
        }])
    })?;
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default();
    validate_str(&file, stem, &text, base_url_override)
}

/// Validates connector text that would be stored as `<id>.toml`. A base URL override
/// (from configuration) replaces the file's `base_url`, e.g. to point at a sandbox.
pub fn validate_str(
    file: &str,
    id: &str,
    text: &str,
    base_url_override: Option<&str>,
) -> Result<Connector, Problems> {
    let mut v = Validator {
        file: file.to_owned(),
        problems: Vec::new(),
    };
    let deserializer = match toml::de::Deserializer::parse(text) {
        Ok(d) => d,
        Err(e) => return Err(Problems(vec![v.toml_problem(text, &e, String::new())])),
    };
    let spec: ConnectorFile = match serde_path_to_error::deserialize(deserializer) {
        Ok(spec) => spec,
        Err(first) => {
            // The first problem comes with its line; the rest are found on the parsed
            // tree, which no longer knows lines.
            let (_, path) = offending_key(first.path(), first.inner().message());
            v.problems
                .push(v.toml_problem(text, first.inner(), path.clone()));
            if let Ok(tree) = toml::from_str::<toml::Value>(text) {
                v.every_shape_problem(tree, &path);
            }
            return Err(Problems(v.problems));
        }
    };
    let connector = v.connector(id, &spec, text, base_url_override);
    match connector {
        Some(c) if v.problems.is_empty() => Ok(c),
        _ => Err(Problems(v.problems)),
    }
}

struct Validator {
    file: String,
    problems: Vec<Problem>,
}

/// Sync intervals a connector or a connection may ask for, in seconds.
pub const SYNC_INTERVAL_SECS: std::ops::RangeInclusive<u64> = 60..=2_592_000;

/// Longest date window and history, in days.
const MAX_WINDOW_DAYS: u32 = 36_600;

/// Most shape problems one file is searched for; a file with more is hopeless anyway.
const MAX_SHAPE_PROBLEMS: usize = 100;

/// `a.b[0].c`, or empty for the whole file.
fn display_path(path: &serde_path_to_error::Path) -> String {
    let path = path.to_string();
    if path == "." { String::new() } else { path }
}

/// The path of the key a serde error is about, as segments and as text. Inside a
/// tagged table (`auth`, `paging`) an unknown key's path stops at the table, so the
/// key named in the message is added.
fn offending_key(path: &serde_path_to_error::Path, message: &str) -> (Vec<Segment>, String) {
    let mut segments: Vec<Segment> = path.iter().cloned().collect();
    let mut shown = display_path(path);
    if message.starts_with("unknown field")
        && let Some(name) = quoted(message)
        && !matches!(segments.last(), Some(Segment::Map { key }) if key == name)
    {
        segments.push(Segment::Map {
            key: name.to_owned(),
        });
        shown = if shown.is_empty() {
            name.to_owned()
        } else {
            format!("{shown}.{name}")
        };
    }
    (segments, shown)
}

/// Placeholders tried, in turn, for a missing key, so the keys after it are still
/// checked; none of them is ever reported.
fn placeholders() -> [toml::Value; 5] {
    [
        toml::Value::String(String::new()),
        toml::Value::Integer(0),
        toml::Value::Boolean(false),
        toml::Value::Array(Vec::new()),
        toml::Value::Table(toml::Table::new()),
    ]
}

/// A key of `tree` by its serde path, as a (table, key) pair to edit.
fn parent_and_key<'t>(
    tree: &'t mut toml::Value,
    segments: &[Segment],
) -> Option<(&'t mut toml::Table, String)> {
    let (last, parents) = segments.split_last()?;
    let mut node = tree;
    for segment in parents {
        node = match segment {
            Segment::Map { key } => node.as_table_mut()?.get_mut(key)?,
            Segment::Seq { index } => node.as_array_mut()?.get_mut(*index)?,
            _ => return None,
        };
    }
    match last {
        Segment::Map { key } => Some((node.as_table_mut()?, key.clone())),
        _ => None,
    }
}

/// The name inside the first pair of backticks of a serde message.
fn quoted(message: &str) -> Option<&str> {
    let start = message.find('`')? + 1;
    let len = message[start..].find('`')?;
    Some(&message[start..start + len])
}

impl Validator {
    fn report(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem {
            file: self.file.clone(),
            path: path.into(),
            message: message.into(),
        });
    }

    /// Reports every problem serde finds in the file's shape, not just the first: an
    /// unknown or ill-typed key is reported and dropped, a missing one is reported and
    /// stood in for by a placeholder, and the tree is read again. `known` was already
    /// reported (with its line).
    fn every_shape_problem(&mut self, mut tree: toml::Value, known: &str) {
        // The missing key a placeholder stands in for, and the next placeholder to try.
        let mut standing_in: Option<(Vec<Segment>, String, usize)> = None;
        // Keys dropped for their type: that they are then missing is no news.
        let mut dropped: Vec<String> = Vec::new();
        for _ in 0..MAX_SHAPE_PROBLEMS * placeholders().len() {
            let error = match serde_path_to_error::deserialize::<_, ConnectorFile>(tree.clone()) {
                Ok(_) => return,
                Err(error) => error,
            };
            let message = error.inner().message().trim_end().to_owned();
            let (mut segments, path) = offending_key(error.path(), &message);
            if let Some((at, shown, next)) = &mut standing_in
                && path.starts_with(shown.as_str())
            {
                // The placeholder has the wrong shape: try the next one.
                let Some(value) = placeholders().into_iter().nth(*next) else {
                    return;
                };
                *next += 1;
                match parent_and_key(&mut tree, at) {
                    Some((table, key)) => table.insert(key, value),
                    None => return,
                };
                continue;
            }
            standing_in = None;
            let missing = quoted(&message)
                .filter(|_| message.starts_with("missing field"))
                .map(|name| match path.as_str() {
                    "" => name.to_owned(),
                    parent => format!("{parent}.{name}"),
                });
            let already = (path == known && self.problems.len() == 1)
                || missing.as_ref().is_some_and(|m| dropped.contains(m));
            if !already {
                self.report(path.clone(), message.clone());
            }
            if self.problems.len() >= MAX_SHAPE_PROBLEMS {
                return;
            }
            match missing {
                Some(shown) => {
                    let Some(name) = quoted(&message) else { return };
                    segments.push(Segment::Map {
                        key: name.to_owned(),
                    });
                    let Some((table, key)) = parent_and_key(&mut tree, &segments) else {
                        return;
                    };
                    table.insert(key, toml::Value::String(String::new()));
                    standing_in = Some((segments, shown, 1));
                }
                None => {
                    let Some((table, key)) = parent_and_key(&mut tree, &segments) else {
                        return;
                    };
                    if table.remove(&key).is_none() {
                        return;
                    }
                    dropped.push(path);
                }
            }
        }
    }

    fn toml_problem(&self, text: &str, error: &toml::de::Error, path: String) -> Problem {
        let location = error.span().map(|span| {
            let mut start = span.start.min(text.len());
            while !text.is_char_boundary(start) {
                start -= 1;
            }
            let before = &text[..start];
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, str::len) + 1;
            format!(" (line {line}, column {column})")
        });
        Problem {
            file: self.file.clone(),
            path,
            message: format!(
                "{}{}",
                error.message().trim_end(),
                location.unwrap_or_default()
            ),
        }
    }

    fn connector(
        &mut self,
        id: &str,
        spec: &ConnectorFile,
        text: &str,
        base_url_override: Option<&str>,
    ) -> Option<Connector> {
        if !is_identifier(id) {
            self.report("", format!("the file name `{id}` must be a connector id: lower-case letters, digits, '-' and '_'"));
        }
        if let Some(declared) = &spec.id
            && declared != id
        {
            self.report(
                "id",
                format!(
                    "`{declared}` differs from the file name `{id}`; remove `id` or rename the file"
                ),
            );
        }
        if spec.country.len() != 2 || !spec.country.chars().all(|c| c.is_ascii_uppercase()) {
            self.report(
                "country",
                format!(
                    "`{}` is not an ISO 3166 two-letter code like US",
                    spec.country
                ),
            );
        }
        for (i, product) in spec.products.iter().enumerate() {
            if !matches!(product.as_str(), "accounts" | "holdings" | "transactions") {
                self.report(
                    format!("products[{i}]"),
                    format!("unknown product `{product}`: use accounts, holdings or transactions"),
                );
            }
        }
        let base_url = self.base_url(base_url_override.unwrap_or(&spec.base_url));
        let auth = base_url
            .as_ref()
            .and_then(|base| self.auth(base, &spec.auth));
        let errors = Errors {
            code_path: spec
                .errors
                .code_path
                .as_deref()
                .and_then(|p| self.json_path("errors.code_path", p)),
            record_error: spec
                .errors
                .record_error
                .as_deref()
                .and_then(|p| self.json_path("errors.record_error", p)),
            spec: spec.errors.clone(),
        };
        if let Some(schedule) = &spec.schedule
            && !SYNC_INTERVAL_SECS.contains(&schedule.interval_secs)
        {
            self.report(
                "schedule.interval_secs",
                format!(
                    "must be {} to {} seconds (a minute to 30 days)",
                    SYNC_INTERVAL_SECS.start(),
                    SYNC_INTERVAL_SECS.end()
                ),
            );
        }
        let webhooks = spec.webhooks.as_ref().and_then(|w| self.webhooks(w));
        if spec.limits.page_size == 0 {
            self.report("limits.page_size", "must be at least 1");
        }
        if spec.limits.concurrency == 0 {
            self.report("limits.concurrency", "must be at least 1");
        }
        for (path, limit) in [
            (
                "limits.requests_per_second",
                spec.limits.requests_per_second,
            ),
            (
                "limits.requests_per_minute",
                spec.limits.requests_per_minute,
            ),
            ("limits.requests_per_day", spec.limits.requests_per_day),
        ] {
            if limit == Some(0) {
                self.report(path, "must be at least 1 (leave it out for no limit)");
            }
        }
        let accounts = base_url.as_ref().and_then(|b| {
            self.endpoint(
                b,
                "accounts",
                &spec.endpoints.accounts,
                fields::ACCOUNT,
                None,
            )
        });
        let holdings = spec.endpoints.holdings.as_ref().map(|e| {
            base_url.as_ref().and_then(|b| {
                self.endpoint(b, "holdings", e, fields::HOLDING, Some(fields::SECURITY))
            })
        });
        let transactions = spec.endpoints.transactions.as_ref().map(|e| {
            base_url
                .as_ref()
                .and_then(|b| self.endpoint(b, "transactions", e, fields::TRANSACTION, None))
        });
        for (product, present) in [
            ("holdings", holdings.is_some()),
            ("transactions", transactions.is_some()),
        ] {
            if spec.products.iter().any(|p| p == product) && !present {
                self.report(
                    format!("endpoints.{product}"),
                    format!("`{product}` is listed in products but has no endpoint"),
                );
            }
        }
        Some(Connector {
            id: id.to_owned(),
            name: spec.name.clone(),
            country: spec.country.clone(),
            products: spec.products.clone(),
            base_url: base_url?,
            auth: auth?,
            limits: spec.limits.clone(),
            errors,
            sync_interval: spec
                .schedule
                .as_ref()
                .map(|s| std::time::Duration::from_secs(s.interval_secs)),
            webhooks,
            accounts: accounts?,
            holdings: holdings.flatten(),
            transactions: transactions.flatten(),
            hash: crate::fingerprint::sha256_hex(text.as_bytes()),
        })
    }

    fn base_url(&mut self, raw: &str) -> Option<Url> {
        match Url::parse(raw) {
            Ok(url) if matches!(url.scheme(), "http" | "https") => {
                // A trailing slash makes `join` keep the last path segment.
                let mut url = url;
                if !url.path().ends_with('/') {
                    let path = format!("{}/", url.path());
                    url.set_path(&path);
                }
                Some(url)
            }
            Ok(url) => {
                self.report(
                    "base_url",
                    format!("scheme `{}` is not http or https", url.scheme()),
                );
                None
            }
            Err(e) => {
                self.report("base_url", format!("`{raw}` is not an absolute URL: {e}"));
                None
            }
        }
    }

    fn url(&mut self, base: &Url, path: &str, raw: &str) -> Option<Url> {
        let joined = if raw.starts_with("http://") || raw.starts_with("https://") {
            Url::parse(raw)
        } else {
            base.join(raw.trim_start_matches('/'))
        };
        match joined {
            Ok(url) => Some(url),
            Err(e) => {
                self.report(path, format!("`{raw}` is not a URL or a path: {e}"));
                None
            }
        }
    }

    /// A secret reference must name a variable, so that a secret pasted into the
    /// file is refused rather than published with it.
    fn secret_env(&mut self, path: &str, env: &str) {
        if env.is_empty()
            || !env
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        {
            self.report(
                path,
                // The value may be a pasted secret: it is not repeated in the report.
                "must be the NAME of an environment variable (A-Z, 0-9, _), never the secret itself; the value given is not shown",
            );
        }
    }

    fn header_name(&mut self, path: &str, name: &str) {
        if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
            self.report(path, format!("`{name}` is not an HTTP header name"));
        }
    }

    fn webhooks(&mut self, spec: &WebhooksSpec) -> Option<Webhooks> {
        self.secret_env("webhooks.secret.env", &spec.secret.env);
        self.header_name("webhooks.signature_header", &spec.signature_header);
        if spec.signature_prefix.as_deref() == Some("") {
            self.report(
                "webhooks.signature_prefix",
                "must not be empty (leave it out)",
            );
        }
        let timestamp = match (&spec.timestamp_header, &spec.timestamp_path) {
            (Some(header), None) => {
                self.header_name("webhooks.timestamp_header", header);
                if spec.signed_content == SignedContent::Body {
                    // An unsigned time could be replaced on a captured request.
                    self.report(
                        "webhooks.signed_content",
                        "a time sent in a header must be signed: use `timestamp.body` (or timestamp_path for a time in the body)",
                    );
                }
                Some(Timestamp::Header(header.clone()))
            }
            (None, Some(path)) => {
                if spec.signed_content == SignedContent::TimestampDotBody {
                    self.report(
                        "webhooks.signed_content",
                        "`timestamp.body` signs the timestamp header's value: set timestamp_header, or sign `body` with the time in it",
                    );
                }
                self.json_path("webhooks.timestamp_path", path)
                    .map(Timestamp::Body)
            }
            (Some(_), Some(_)) => {
                self.report(
                    "webhooks",
                    "give either timestamp_header or timestamp_path, not both",
                );
                None
            }
            (None, None) => {
                self.report(
                    "webhooks",
                    "say where the time the event was sent is (timestamp_header or timestamp_path): without it a captured request could be replayed for ever",
                );
                None
            }
        };
        if !(1..=3600).contains(&spec.tolerance_secs) {
            self.report(
                "webhooks.tolerance_secs",
                "must be 1 to 3600 seconds (an hour)",
            );
        }
        let event_id = self.json_path("webhooks.event_id", &spec.event_id);
        let event_type = spec
            .event_type
            .as_deref()
            .map(|p| self.json_path("webhooks.event_type", p));
        let account_ids = self.json_path("webhooks.account_ids", &spec.account_ids);
        if let Some(types) = &spec.sync_on {
            if types.is_empty() {
                self.report(
                    "webhooks.sync_on",
                    "list at least one event type (leave it out to sync on every event)",
                );
            }
            if spec.event_type.is_none() {
                self.report(
                    "webhooks.sync_on",
                    "needs `event_type`: where the event's type is",
                );
            }
        }
        Some(Webhooks {
            secret_env: spec.secret.env.clone(),
            signature_header: spec.signature_header.clone(),
            signature_prefix: spec.signature_prefix.clone(),
            encoding: spec.signature_encoding,
            signed: spec.signed_content,
            timestamp: timestamp?,
            tolerance: std::time::Duration::from_secs(spec.tolerance_secs),
            event_id: event_id?,
            event_type: match event_type {
                Some(path) => Some(path?),
                None => None,
            },
            account_ids: account_ids?,
            sync_on: spec.sync_on.clone(),
        })
    }

    fn auth(&mut self, base: &Url, spec: &OAuth2Spec) -> Option<OAuth2> {
        let authorize_url = self.url(base, "auth.authorize_url", &spec.authorize_url);
        let token_url = self.url(base, "auth.token_url", &spec.token_url);
        let revocation_url = spec
            .revocation_url
            .as_deref()
            .map(|u| self.url(base, "auth.revocation_url", u));
        let env = &spec.client_secret.env;
        self.secret_env("auth.client_secret.env", env);
        if spec.scopes.is_empty() {
            self.report("auth.scopes", "list at least one scope");
        }
        if spec.scope_separator.is_empty() {
            self.report("auth.scope_separator", "must not be empty");
        }
        if spec.token_response.default_lifetime_secs == 0 {
            self.report(
                "auth.token_response.default_lifetime_secs",
                "must be at least 1",
            );
        }
        Some(OAuth2 {
            authorize_url: authorize_url?,
            token_url: token_url?,
            revocation_url: match revocation_url {
                Some(url) => Some(url?),
                None => None,
            },
            client_id: spec.client_id.clone(),
            client_secret_env: env.clone(),
            client_auth: spec.client_auth,
            scopes: spec.scopes.clone(),
            scope_separator: spec.scope_separator.clone(),
            pkce: spec.pkce,
            consent_lifetime_days: spec.consent_lifetime_days,
            rotating_refresh_tokens: spec.rotating_refresh_tokens,
            login_hint_param: spec.login_hint_param.clone(),
            extra_token_params: spec.extra_token_params.clone(),
            token_response: spec.token_response.clone(),
        })
    }

    fn json_path(&mut self, path: &str, raw: &str) -> Option<JsonPath> {
        match JsonPath::parse(raw) {
            Ok(p) => Some(p),
            Err(e) => {
                self.report(
                    path,
                    format!("`{raw}` is not a valid JSONPath (RFC 9535): {e}"),
                );
                None
            }
        }
    }

    fn endpoint(
        &mut self,
        base: &Url,
        name: &str,
        spec: &EndpointSpec,
        defs: &'static [FieldDef],
        security_defs: Option<&'static [FieldDef]>,
    ) -> Option<Endpoint> {
        let at = |key: &str| format!("endpoints.{name}.{key}");
        let method = match spec.method.to_ascii_uppercase().as_str() {
            "GET" => Some(reqwest::Method::GET),
            "POST" => Some(reqwest::Method::POST),
            other => {
                self.report(
                    at("method"),
                    format!("`{other}` is not supported: use GET or POST"),
                );
                None
            }
        };
        let url = self.url(base, &at("path"), &spec.path);
        let records = self.json_path(&at("records"), &spec.records);
        let records_container = spec
            .records
            .strip_suffix("[*]")
            .and_then(|c| JsonPath::parse(c).ok());
        let paging = self.paging(&at("paging"), &spec.paging);
        let fields = self.mapping(&at("fields"), &spec.fields, defs);
        let security = match security_defs {
            Some(defs) => {
                Some(self.mapping(&at("security_fields"), &spec.security_fields, defs)?)
            }
            None => {
                if !spec.security_fields.is_empty() {
                    self.report(
                        at("security_fields"),
                        "only the holdings endpoint has security fields",
                    );
                }
                None
            }
        };
        let sync_token = matches!(spec.paging, PagingSpec::SyncToken { .. });
        if sync_token && name != "transactions" {
            self.report(
                at("paging"),
                "`sync-token` paging is for the transactions endpoint only",
            );
        }
        let mut changes = |key: &str, raw: &Option<String>| match raw {
            Some(_) if !sync_token => {
                self.report(
                    at(key),
                    "only an endpoint with `sync-token` paging has modified and removed records",
                );
                None
            }
            Some(raw) => Some(self.json_path(&at(key), raw)),
            None => None,
        };
        let modified = changes("modified", &spec.modified);
        let removed = changes("removed", &spec.removed);
        let window = spec.window.as_ref().and_then(|w| {
            if sync_token {
                self.report(
                    at("window"),
                    "a `sync-token` endpoint already fetches only what changed; remove the window",
                );
            }
            self.window(&at("window"), w)
        });
        if spec.deferrable && name == "accounts" {
            self.report(
                at("deferrable"),
                "accounts are never deferred: every sync needs them",
            );
        }
        Some(Endpoint {
            deferrable: spec.deferrable,
            method: method?,
            url: url?,
            query: spec.query.clone(),
            paging: paging?,
            records: records?,
            records_container,
            fields: fields?,
            security,
            sign: spec.sign_convention,
            modified: modified.flatten(),
            removed: removed.flatten(),
            window,
        })
    }

    fn window(&mut self, at: &str, spec: &WindowSpec) -> Option<Window> {
        let before = self.problems.len();
        if spec.step_days == 0 || spec.step_days > MAX_WINDOW_DAYS {
            self.report(
                format!("{at}.step_days"),
                format!("must be 1 to {MAX_WINDOW_DAYS}"),
            );
        }
        if spec.history_days > MAX_WINDOW_DAYS {
            self.report(
                format!("{at}.history_days"),
                format!("must be at most {MAX_WINDOW_DAYS} (about 100 years)"),
            );
        }
        if spec.lookback_days > spec.history_days {
            self.report(
                format!("{at}.lookback_days"),
                "cannot reach further back than `history_days`",
            );
        }
        if spec.from_param.is_empty() || spec.to_param.is_empty() {
            self.report(at, "`from_param` and `to_param` must name query parameters");
        }
        match TimeFormat::parse(&spec.format) {
            Ok(TimeFormat::Pattern(_)) => {}
            _ => self.report(
                format!("{at}.format"),
                format!("`{}` is not a strftime pattern like %Y-%m-%d", spec.format),
            ),
        }
        (self.problems.len() == before).then(|| Window {
            from_param: spec.from_param.clone(),
            to_param: spec.to_param.clone(),
            format: spec.format.clone(),
            step_days: spec.step_days,
            history_days: spec.history_days,
            lookback_days: spec.lookback_days,
        })
    }

    fn paging(&mut self, at: &str, spec: &PagingSpec) -> Option<Paging> {
        Some(match spec {
            PagingSpec::None => Paging::None,
            PagingSpec::Cursor {
                cursor_param,
                next_cursor,
                page_size_param,
            } => Paging::Cursor {
                cursor_param: cursor_param.clone(),
                next_cursor: self.json_path(&format!("{at}.next_cursor"), next_cursor)?,
                page_size_param: page_size_param.clone(),
            },
            PagingSpec::Offset {
                offset_param,
                limit_param,
                total,
            } => Paging::Offset {
                offset_param: offset_param.clone(),
                limit_param: limit_param.clone(),
                total: match total {
                    Some(p) => Some(self.json_path(&format!("{at}.total"), p)?),
                    None => None,
                },
            },
            PagingSpec::Page {
                page_param,
                page_size_param,
                first_page,
            } => Paging::Page {
                page_param: page_param.clone(),
                page_size_param: page_size_param.clone(),
                first_page: *first_page,
            },
            PagingSpec::LinkHeader { page_size_param } => Paging::LinkHeader {
                page_size_param: page_size_param.clone(),
            },
            PagingSpec::SyncToken {
                token_param,
                next_token,
                has_more,
                page_size_param,
                restart_statuses,
                restart_codes,
            } => {
                let next_token = self.json_path(&format!("{at}.next_token"), next_token);
                let has_more = self.json_path(&format!("{at}.has_more"), has_more);
                Paging::SyncToken {
                    token_param: token_param.clone(),
                    next_token: next_token?,
                    has_more: has_more?,
                    page_size_param: page_size_param.clone(),
                    restart_statuses: restart_statuses.clone(),
                    restart_codes: restart_codes.clone(),
                }
            }
        })
    }

    fn mapping(
        &mut self,
        at: &str,
        specs: &BTreeMap<String, FieldSpec>,
        defs: &'static [FieldDef],
    ) -> Option<Mapping> {
        let before = self.problems.len();
        let mut compiled = BTreeMap::new();
        for (name, spec) in specs {
            let path = format!("{at}.{name}");
            let Some(def) = defs.iter().find(|d| d.name == name) else {
                let known: Vec<_> = defs.iter().map(|d| d.name).collect();
                self.report(
                    path,
                    format!("unknown field; this endpoint maps: {}", known.join(", ")),
                );
                continue;
            };
            if let Some(field) = self.field(&path, def, spec) {
                compiled.insert(def.name, field);
            }
        }
        for def in defs.iter().filter(|d| d.required) {
            if !specs.contains_key(def.name) {
                self.report(
                    format!("{at}.{}", def.name),
                    "required field has no mapping (give a `path`, a `value` or a `default`)",
                );
            }
        }
        (self.problems.len() == before).then(|| Mapping::new(compiled))
    }

    fn field(&mut self, at: &str, def: &FieldDef, spec: &FieldSpec) -> Option<CompiledField> {
        let source = match (&spec.path, &spec.value) {
            (Some(_), Some(_)) => {
                self.report(at, "give either `path` or `value`, not both");
                return None;
            }
            (Some(p), None) => {
                let path = self.json_path(&format!("{at}.path"), p)?;
                Source::Path(path)
            }
            (None, Some(v)) => Source::Const(v.clone()),
            (None, None) if spec.default.is_some() => Source::Const(String::new()),
            (None, None) => {
                self.report(at, "needs a `path`, a `value` or a `default`");
                return None;
            }
        };
        if spec.minor_units.is_some() && def.kind != Kind::Decimal {
            self.report(
                format!("{at}.minor_units"),
                "only decimal fields can be in minor units",
            );
        }
        if let Some(scale) = spec.minor_units
            && scale > 18
        {
            self.report(format!("{at}.minor_units"), "scale must be 0 to 18");
        }
        let format = match (&spec.format, def.kind) {
            (None, _) => TimeFormat::Iso8601,
            (Some(f), Kind::Date | Kind::DateTime) => match TimeFormat::parse(f) {
                Ok(format) => format,
                Err(message) => {
                    self.report(format!("{at}.format"), message);
                    return None;
                }
            },
            (Some(_), _) => {
                self.report(
                    format!("{at}.format"),
                    "only date and date-time fields take a format",
                );
                return None;
            }
        };
        let timezone = match (&spec.timezone, def.kind) {
            (None, _) => None,
            (Some(zone), Kind::Date | Kind::DateTime) => match zone.parse::<Tz>() {
                Ok(zone) => Some(zone),
                Err(_) => {
                    self.report(
                        format!("{at}.timezone"),
                        format!("`{zone}` is not an IANA time zone like America/New_York"),
                    );
                    return None;
                }
            },
            (Some(_), _) => {
                self.report(
                    format!("{at}.timezone"),
                    "only date and date-time fields take a time zone",
                );
                return None;
            }
        };
        if let Kind::Enum(allowed) = def.kind {
            for (from, to) in &spec.map {
                if !allowed.contains(&to.as_str()) {
                    self.report(
                        format!("{at}.map.{from}"),
                        format!("`{to}` is not one of: {}", allowed.join(", ")),
                    );
                }
            }
            for constant in spec.value.iter().chain(spec.default.iter()) {
                let mapped = spec.map.get(constant).unwrap_or(constant);
                if !allowed.contains(&mapped.as_str()) {
                    self.report(
                        at,
                        format!("`{constant}` is not one of: {}", allowed.join(", ")),
                    );
                }
            }
        }
        Some(CompiledField {
            source,
            default: spec.default.clone(),
            map: spec.map.clone(),
            minor_units: spec.minor_units,
            format,
            timezone,
        })
    }
}

fn is_identifier(id: &str) -> bool {
    !id.is_empty()
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}
