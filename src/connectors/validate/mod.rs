//! Turns a connector file into a [`Connector`], or reports every problem in it at
//! once, each with the file and the field path, in words an admin understands.

mod auth;
mod endpoints;
mod mappings;
mod shape;
mod webhooks;

use self::shape::offending_key;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;

use chrono_tz::Tz;
use serde_json_path::JsonPath;
use serde_path_to_error::Segment;
use url::Url;

use super::fields::{self, FieldDef, Kind};
use super::mapping::{CompiledField, FieldPath, Mapping, Scope, SignFrom, Source, TimeFormat};
use super::profiles;
use super::spec::{
    ConnectorFile, EndpointSpec, FieldSpec, HeaderSpec, OAuth2Spec, PagingSpec, SignedContent,
    WebhooksSpec, WindowSpec,
};
use super::template::Template;
use super::webhook::{Timestamp, Webhooks};
use super::{Connector, Endpoint, Errors, FanOut, Header, Join, OAuth2, Paging, Window};
use mappings::Scopes;

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
/// A file that `extends` a profile is read as the profile with the file's keys set
/// over it; a problem with a key the profile set says so, with the profile's line.
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
    let own: toml::Table = toml::from_str(text).unwrap_or_default();
    let profile = match own.get("extends") {
        None => None,
        Some(toml::Value::String(name)) => match profiles::shipped(name) {
            Some(profile) => Some(profile),
            None => {
                v.report(
                    "extends",
                    format!(
                        "there is no profile `{name}`; the shipped profiles are: {}",
                        profiles::names()
                    ),
                );
                return Err(Problems(v.problems));
            }
        },
        Some(_) => {
            v.report("extends", "must name a profile, e.g. extends = \"fdx\"");
            return Err(Problems(v.problems));
        }
    };
    let base: toml::Table = profile
        .and_then(|p| toml::from_str(p.text).ok())
        .unwrap_or_default();
    let read = match profile {
        None => match serde_path_to_error::deserialize::<_, ConnectorFile>(deserializer) {
            Ok(spec) => Some((spec, Vec::new())),
            Err(first) => {
                // The first problem comes with its line; the rest are found on the
                // parsed tree, which no longer knows lines.
                let (_, path) = offending_key(first.path(), first.inner().message());
                v.problems
                    .push(v.toml_problem(text, first.inner(), path.clone()));
                toml::from_str::<toml::Value>(text)
                    .ok()
                    .and_then(|tree| v.every_shape_problem(tree, &path))
            }
        },
        Some(_) => {
            let tree = toml::Value::Table(profiles::merge(base.clone(), own.clone()));
            match serde_path_to_error::deserialize::<_, ConnectorFile>(tree.clone()) {
                Ok(spec) => Some((spec, Vec::new())),
                Err(first) => {
                    let message = first.inner().message().trim_end().to_owned();
                    let (_, path) = offending_key(first.path(), &message);
                    v.report(path.clone(), message);
                    v.every_shape_problem(tree, &path)
                }
            }
        }
    };
    // What else is wrong is looked for even when the shape was not right, except at
    // keys that were dropped or stood in for.
    let shape = v.problems.len();
    let hashed = match profile {
        Some(p) => format!("{}\n{text}", p.text),
        None => text.to_owned(),
    };
    let connector = read.and_then(|(spec, touched)| {
        let connector = v.connector(id, &spec, &hashed, base_url_override);
        let semantic = v.problems.split_off(shape);
        v.problems.extend(semantic.into_iter().filter(|p| {
            !touched
                .iter()
                .any(|t| p.path == *t || p.path.starts_with(&format!("{t}.")))
        }));
        connector
    });
    if let Some(profile) = profile {
        for problem in &mut v.problems {
            if !problem.path.is_empty()
                && !profiles::sets(&own, &problem.path)
                && profiles::sets(&base, &problem.path)
            {
                let line = profiles::line_of(profile.text, &problem.path)
                    .map(|line| format!(" line {line}"))
                    .unwrap_or_default();
                problem.message = format!(
                    "{} (set by profile `{}`, {}{line}; override it in this file)",
                    problem.message, profile.name, profile.file
                );
            }
        }
    }
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
/// A deep sync at most daily (it reads everything) and at least yearly.
pub const DEEP_SYNC_INTERVAL_DAYS: std::ops::RangeInclusive<u32> = 1..=365;

/// Longest date window and history, in days.
const MAX_WINDOW_DAYS: u32 = 36_600;

/// Most shape problems one file is searched for; a file with more is hopeless anyway.
const MAX_SHAPE_PROBLEMS: usize = 100;

impl Validator {
    pub(super) fn report(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem {
            file: self.file.clone(),
            path: path.into(),
            message: message.into(),
        });
    }

    pub(super) fn connector(
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
            record_error: spec.errors.record_error.as_deref().and_then(|p| {
                let path = self.json_path("errors.record_error", p)?;
                Some(FieldPath::new(path, p))
            }),
            spec: spec.errors.clone(),
        };
        if let Some(days) = spec
            .schedule
            .as_ref()
            .and_then(|s| s.deep_sync_interval_days)
            && !DEEP_SYNC_INTERVAL_DAYS.contains(&days)
        {
            self.report(
                "schedule.deep_sync_interval_days",
                format!(
                    "must be {} to {} days",
                    DEEP_SYNC_INTERVAL_DAYS.start(),
                    DEEP_SYNC_INTERVAL_DAYS.end()
                ),
            );
        }
        if let Some(secs) = spec.schedule.as_ref().and_then(|s| s.interval_secs)
            && !SYNC_INTERVAL_SECS.contains(&secs)
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
        let details: Vec<(String, Option<Endpoint>)> = spec
            .endpoints
            .details
            .iter()
            .map(|(name, e)| {
                let endpoint = base_url.as_ref().and_then(|b| {
                    self.endpoint(
                        b,
                        &format!("details.{name}"),
                        e,
                        fields::ACCOUNT_DETAILS,
                        None,
                        &spec.headers,
                        Vec::new(),
                    )
                });
                (name.clone(), endpoint)
            })
            .collect();
        // A field an account's details fill need not be in the list, unless those
        // details are asked for some accounts only.
        let provided: Vec<&'static str> = fields::ACCOUNT
            .iter()
            .filter(|d| {
                spec.endpoints
                    .details
                    .values()
                    .any(|e| e.when.is_none() && e.fields.contains_key(d.name))
            })
            .map(|d| d.name)
            .collect();
        for (name, e) in &spec.endpoints.details {
            if e.records.trim_end().ends_with("[*]") {
                self.report(
                    format!("endpoints.details.{name}.records"),
                    "selects a list: a details endpoint's `records` is the account's one record, e.g. `$` or `$.Data`",
                );
            }
        }
        self.connection_headers(spec);
        if spec.auth.access_token_param.is_some() {
            let endpoints = [Some(&spec.endpoints.accounts)]
                .into_iter()
                .chain([
                    spec.endpoints.holdings.as_ref(),
                    spec.endpoints.transactions.as_ref(),
                ])
                .flatten()
                .chain(spec.endpoints.details.values());
            if endpoints
                .into_iter()
                .any(|e| !e.method.eq_ignore_ascii_case("POST"))
            {
                self.report(
                    "auth.access_token_param",
                    "the access token would travel in URLs, where servers and proxies log them: every endpoint of such an institution must be `method = \"POST\"`",
                );
            }
        }
        let accounts = base_url.as_ref().and_then(|b| {
            self.endpoint(
                b,
                "accounts",
                &spec.endpoints.accounts,
                fields::ACCOUNT,
                None,
                &spec.headers,
                provided,
            )
        });
        let holdings = spec.endpoints.holdings.as_ref().map(|e| {
            base_url.as_ref().and_then(|b| {
                self.endpoint(
                    b,
                    "holdings",
                    e,
                    fields::HOLDING,
                    Some(fields::SECURITY),
                    &spec.headers,
                    Vec::new(),
                )
            })
        });
        let transactions = spec.endpoints.transactions.as_ref().map(|e| {
            base_url.as_ref().and_then(|b| {
                self.endpoint(
                    b,
                    "transactions",
                    e,
                    fields::TRANSACTION,
                    None,
                    &spec.headers,
                    Vec::new(),
                )
            })
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
        let details = details
            .into_iter()
            .map(|(name, endpoint)| endpoint.map(|e| (name, e)))
            .collect::<Option<Vec<_>>>();
        Some(Connector {
            id: id.to_owned(),
            profile: spec.extends.clone(),
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
                .and_then(|s| s.interval_secs)
                .map(std::time::Duration::from_secs),
            deep_sync_interval: spec
                .schedule
                .as_ref()
                .and_then(|s| s.deep_sync_interval_days)
                .map(|days| std::time::Duration::from_secs(u64::from(days) * 86_400)),
            webhooks,
            accounts: accounts?,
            details: details?,
            holdings: holdings.flatten(),
            transactions: transactions.flatten(),
            hash: crate::fingerprint::sha256_hex(text.as_bytes()),
        })
    }
}

fn is_identifier(id: &str) -> bool {
    !id.is_empty()
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

/// Helpers for the validator's unit tests: a shipped connector file to change one
/// thing in, and the problems a changed copy has.
#[cfg(test)]
mod test_support {
    /// Harbor's connector, which validates as shipped.
    pub(super) const HARBOR: &str = include_str!("../../../connectors/harbor.toml");
    /// Meridian's, which has a `[webhooks]` table.
    pub(super) const MERIDIAN: &str = include_str!("../../../connectors/meridian.toml");
    /// Pinecrest's, which extends the `fdx` profile.
    pub(super) const PINECREST: &str = include_str!("../../../connectors/pinecrest.toml");

    /// `text` with `from` replaced by `to` (which must be there).
    pub(super) fn changed(text: &str, from: &str, to: &str) -> String {
        assert!(text.contains(from), "`{from}` is not in the file");
        text.replacen(from, to, 1)
    }

    /// Every problem of `text` as (path, message); empty when it validates.
    pub(super) fn problems(text: &str) -> Vec<(String, String)> {
        match super::validate_str("draft.toml", "draft", text, None) {
            Ok(_) => Vec::new(),
            Err(problems) => problems
                .0
                .into_iter()
                .map(|p| {
                    assert_eq!(p.file, "draft.toml", "every problem names the file");
                    (p.path, p.message)
                })
                .collect(),
        }
    }

    /// Asserts that one problem is at `path` and says `says`.
    pub(super) fn has(problems: &[(String, String)], path: &str, says: &str) {
        assert!(
            problems.iter().any(|(p, m)| p == path && m.contains(says)),
            "no problem at `{path}` saying `{says}` in {problems:#?}"
        );
    }

    #[test]
    fn the_shipped_files_validate() {
        assert_eq!(problems(HARBOR), Vec::new());
        assert_eq!(problems(MERIDIAN), Vec::new());
        assert_eq!(problems(PINECREST), Vec::new());
    }

    #[test]
    fn a_problem_with_a_key_the_profile_set_names_the_profile_and_its_line() {
        // The file narrows the profile's window below what its look-back needs.
        let text = changed(
            PINECREST,
            "login_hint_param = \"login_hint\"",
            "login_hint_param = \"login_hint\"\n\n[endpoints.transactions.window]\nhistory_days = 5",
        );
        let found = problems(&text);
        // `lookback_days` (10) is the profile's; the file set `history_days`.
        let (_, message) = found
            .iter()
            .find(|(path, _)| path == "endpoints.transactions.window.lookback_days")
            .unwrap_or_else(|| panic!("{found:#?}"));
        let profile = super::super::profiles::shipped("fdx").unwrap();
        let line = super::super::profiles::line_of(
            profile.text,
            "endpoints.transactions.window.lookback_days",
        )
        .unwrap();
        assert!(
            message.contains(&format!(
                "set by profile `fdx`, connectors/profiles/fdx.toml line {line}"
            )),
            "{message}"
        );
        let unknown = changed(PINECREST, "extends = \"fdx\"", "extends = \"fdx7\"");
        has(
            &problems(&unknown),
            "extends",
            "the shipped profiles are: fdx",
        );
    }

    #[test]
    fn a_file_replaces_a_field_of_its_profile_whole() {
        // The profile reads the currency from the account; this institution states it.
        let text = changed(
            PINECREST,
            "login_hint_param = \"login_hint\"",
            "login_hint_param = \"login_hint\"\n\n[endpoints.transactions.fields]\ncurrency = { value = \"USD\" }",
        );
        assert_eq!(problems(&text), Vec::new());
    }

    #[test]
    fn shape_and_meaning_are_reported_in_one_pass() {
        let text = changed(HARBOR, "page_size = 25", "page_size = \"25\"");
        let text = changed(&text, "records = \"$.data[*]\"", "records = \"data[*]\"");
        let found = problems(&text);
        has(&found, "limits.page_size", "invalid type");
        has(
            &found,
            "endpoints.accounts.records",
            "it must start with `$` (the record itself), e.g. `$.data[*]`",
        );
    }
}
