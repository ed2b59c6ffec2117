//! `finsync connectors check`: proves a connector against its live institution before
//! it serves anyone. It links the institution's test user (whose login the
//! institution approves without a page, as sandboxes do), runs every endpoint once
//! (a fan-out endpoint once per account), and reports per endpoint and account how
//! many records came back, how many mapped, and which fields were missing or
//! unparsable, with examples. A field the connector maps that came back empty in
//! every record is flagged: its path may be wrong (or the institution never fills
//! it, as a profile's optional identifiers may be). Nothing is stored;
//! the grant is revoked at the end when the institution supports it.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::Utc;
use reqwest::StatusCode;
use reqwest::header::LOCATION;
use secrecy::{ExposeSecret, SecretString};

use crate::connectors::engine::{Grant, Secrets};
use crate::connectors::mapping::{self, FieldError, Item, Layers, Mapping, Parent};
use crate::connectors::{Connector, Endpoint, Engine};
use crate::tokens::oauth::{OAuthClient, OAuthError};

/// Examples kept per field problem.
const EXAMPLES: usize = 3;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckError {
    #[error("linking the test user failed: {0}")]
    Link(String),
    #[error("the code exchange failed: {0}")]
    Token(#[from] OAuthError),
}

/// What one endpoint returned (for one account, when it fans out).
#[derive(Debug, Default)]
pub struct EndpointReport {
    pub endpoint: String,
    /// The account a fan-out endpoint was asked about.
    pub account: Option<String>,
    /// Requests made; `None` when the fetch failed before it could say.
    pub requests: Option<usize>,
    pub fetched: usize,
    pub mapped: usize,
    /// Why fetching failed, if it did.
    pub failure: Option<String>,
    /// Records that did not map, by field: how many, and example reasons.
    pub unparsable: BTreeMap<String, (usize, Vec<String>)>,
    /// Declared fields the institution left empty, by field: in how many records.
    pub absent: BTreeMap<&'static str, usize>,
    /// Declared fields empty in every record the endpoint returned (for every
    /// account, when it fans out; set on the endpoint's first row): most likely a
    /// wrong path.
    pub never_filled: Vec<&'static str>,
}

impl EndpointReport {
    /// Every record fetched and mapped, and nothing failed.
    pub fn is_clean(&self) -> bool {
        self.failure.is_none() && self.mapped == self.fetched
    }
}

/// Marks, on each endpoint's first row, the declared fields empty in every record
/// of all its rows.
fn mark_never_filled(reports: &mut [EndpointReport]) {
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..reports.len() {
        let endpoint = reports[i].endpoint.clone();
        if !seen.insert(endpoint.clone()) {
            continue;
        }
        let rows: Vec<&EndpointReport> =
            reports.iter().filter(|r| r.endpoint == endpoint).collect();
        let fetched: usize = rows.iter().map(|r| r.fetched).sum();
        let mut empty: BTreeMap<&'static str, usize> = BTreeMap::new();
        for row in &rows {
            for (field, count) in &row.absent {
                *empty.entry(*field).or_default() += count;
            }
        }
        reports[i].never_filled = empty
            .into_iter()
            .filter(|(_, count)| fetched > 0 && *count == fetched)
            .map(|(field, _)| field)
            .collect();
    }
}

/// Links `test_user`, runs every endpoint once and reports on each; `secrets` are
/// where the secrets the connector's headers name are read.
pub async fn check(
    connector: &Connector,
    secret: SecretString,
    secrets: Secrets,
    redirect_uri: &url::Url,
    test_user: &str,
    http: reqwest::Client,
) -> Result<Vec<EndpointReport>, CheckError> {
    let client = OAuthClient::new(connector, secret, redirect_uri, http.clone());
    let authorization = client.authorize(Some(test_user));
    let answer = http
        .get(authorization.url.clone())
        .send()
        .await
        .map_err(|e| CheckError::Link(e.without_url().to_string()))?;
    if !matches!(answer.status(), StatusCode::FOUND | StatusCode::SEE_OTHER) {
        return Err(CheckError::Link(format!(
            "the authorization endpoint answered {} instead of redirecting back; does the institution approve `{test_user}` without a login page?",
            answer.status()
        )));
    }
    let back = answer
        .headers()
        .get(LOCATION)
        .and_then(|l| l.to_str().ok())
        .and_then(|l| redirect_uri.join(l).ok())
        .ok_or_else(|| CheckError::Link("the redirect has no usable Location".into()))?;
    let query: BTreeMap<String, String> = back.query_pairs().into_owned().collect();
    if let Some(error) = query.get("error") {
        return Err(CheckError::Link(format!(
            "the institution refused: {error}"
        )));
    }
    if query.get("state").map(String::as_str) != Some(authorization.state.expose_secret()) {
        return Err(CheckError::Link(
            "the redirect does not carry the state that was sent".into(),
        ));
    }
    let code = query
        .get("code")
        .ok_or_else(|| CheckError::Link("the redirect carries no code".into()))?;
    let tokens = client
        .exchange_code(code, authorization.pkce_verifier.as_ref())
        .await?;

    let engine = Engine::new(http).with_secrets(secrets);
    let grant = Grant {
        access_token: tokens.access_token,
        values: tokens.kept,
    };
    let reports = run(&engine, connector, &grant).await;
    if let Some(refresh) = &tokens.refresh_token
        && let Err(error) = client.revoke(refresh).await
    {
        tracing::warn!(%error, "Could not revoke the check's grant.");
    }
    Ok(reports)
}

/// Every endpoint once, fan-out endpoints once per account they ask for.
async fn run(engine: &Engine, connector: &Connector, grant: &Grant) -> Vec<EndpointReport> {
    let now = Utc::now();
    let mut reports = Vec::new();
    let accounts = fetch(engine, connector, &connector.accounts, grant, None).await;
    let mut report = new_report("accounts", None, &accounts);
    let mut parents = Vec::new();
    // Fields the account's details fill are not the list's to fill.
    let provided: Vec<&'static str> = connector
        .details
        .iter()
        .flat_map(|(_, endpoint)| endpoint.fields.names())
        .collect();
    if let Ok(pages) = &accounts {
        for item in &pages.records {
            tally(
                &mut report,
                &[&connector.accounts.fields],
                item,
                |item| match mapping::account(&Layers::one(&connector.accounts.fields, item), now) {
                    Err(FieldError::Missing(field)) if provided.contains(&field) => Ok(()),
                    other => other.map(drop),
                },
            );
            if let Ok(Some(id)) = connector.accounts.fields.text(item, "external_id") {
                parents.push(Arc::new(Parent {
                    external_id: id,
                    record: item.record.to_value(),
                }));
            }
        }
    }
    for field in &provided {
        report.absent.remove(field);
    }
    reports.push(report);

    let mut endpoints: Vec<(String, &Endpoint)> = connector
        .details
        .iter()
        .map(|(name, e)| (format!("details.{name}"), e))
        .collect();
    endpoints.extend(
        connector
            .holdings
            .iter()
            .map(|e| ("holdings".to_owned(), e)),
    );
    endpoints.extend(
        connector
            .transactions
            .iter()
            .map(|e| ("transactions".to_owned(), e)),
    );
    for (name, endpoint) in endpoints {
        let asked: Vec<Option<&Arc<Parent>>> = if endpoint.fan_out.is_some() {
            parents
                .iter()
                .filter(|p| endpoint.asks_for(&p.record))
                .map(Some)
                .collect()
        } else {
            vec![None]
        };
        for parent in asked {
            let pages = fetch(engine, connector, endpoint, grant, parent).await;
            let mut report = new_report(&name, parent.map(|p| p.external_id.clone()), &pages);
            let Ok(pages) = pages else {
                reports.push(report);
                continue;
            };
            for item in &pages.records {
                let security = endpoint.security.as_ref().unwrap_or(&endpoint.fields);
                let mut mappings = vec![&endpoint.fields];
                if let Some(security) = &endpoint.security {
                    mappings.push(security);
                }
                tally(&mut report, &mappings, item, |item| match name.as_str() {
                    "holdings" => mapping::holding(&endpoint.fields, security, item).map(drop),
                    "transactions" => {
                        mapping::transaction(&endpoint.fields, endpoint.sign, item).map(drop)
                    }
                    _ => {
                        let listed = Item::plain(
                            parent.map_or(serde_json::Value::Null, |p| p.record.clone()),
                        );
                        let layers = Layers(vec![
                            (&connector.accounts.fields, &listed),
                            (&endpoint.fields, item),
                        ]);
                        mapping::account(&layers, now).map(drop)
                    }
                });
            }
            reports.push(report);
        }
    }
    mark_never_filled(&mut reports);
    reports
}

async fn fetch(
    engine: &Engine,
    connector: &Connector,
    endpoint: &Endpoint,
    grant: &Grant,
    account: Option<&Arc<Parent>>,
) -> Result<crate::connectors::engine::Pages, String> {
    match account {
        Some(account) => engine.fetch_for(connector, endpoint, grant, account).await,
        None => engine.fetch_records(connector, endpoint, grant).await,
    }
    .map_err(|e| e.to_string())
}

fn new_report(
    endpoint: &str,
    account: Option<String>,
    pages: &Result<crate::connectors::engine::Pages, String>,
) -> EndpointReport {
    let mut report = EndpointReport {
        endpoint: endpoint.to_owned(),
        account,
        ..EndpointReport::default()
    };
    match pages {
        Ok(pages) => {
            report.requests = Some(pages.requests);
            report.fetched = pages.records.len();
        }
        Err(failure) => report.failure = Some(failure.clone()),
    }
    report
}

/// Counts one record: mapped or why not, and which declared fields it left empty.
fn tally(
    report: &mut EndpointReport,
    mappings: &[&Mapping],
    item: &Item,
    map: impl Fn(&Item) -> Result<(), FieldError>,
) {
    match map(item) {
        Ok(()) => report.mapped += 1,
        Err(error) => {
            let (field, reason) = match &error {
                FieldError::Missing(field) => (*field, "missing".to_owned()),
                FieldError::Invalid { field, problem } => (*field, problem.clone()),
            };
            let entry = report.unparsable.entry(field.to_owned()).or_default();
            entry.0 += 1;
            if entry.1.len() < EXAMPLES && !entry.1.contains(&reason) {
                entry.1.push(reason);
            }
        }
    }
    for fields in mappings {
        for field in fields.names() {
            if matches!(fields.text(item, field), Ok(None)) {
                *report.absent.entry(field).or_default() += 1;
            }
        }
    }
}
