//! `finsync connectors check`: proves a connector against its live institution before
//! it serves anyone. It links the institution's test user (whose login the
//! institution approves without a page, as sandboxes do), runs every endpoint once,
//! and reports per endpoint how many records came back, how many mapped, and which
//! fields were missing or unparsable, with examples. Nothing is stored; the grant is
//! revoked at the end when the institution supports it.

use std::collections::BTreeMap;

use chrono::Utc;
use reqwest::StatusCode;
use reqwest::header::LOCATION;
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use crate::connectors::mapping::{self, FieldError, Mapping};
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

/// What one endpoint returned.
#[derive(Debug, Default)]
pub struct EndpointReport {
    pub endpoint: &'static str,
    pub requests: usize,
    pub fetched: usize,
    pub mapped: usize,
    /// Why fetching failed, if it did.
    pub failure: Option<String>,
    /// Records that did not map, by field: how many, and example reasons.
    pub unparsable: BTreeMap<String, (usize, Vec<String>)>,
    /// Declared fields the institution left empty, by field: in how many records.
    pub absent: BTreeMap<&'static str, usize>,
}

impl EndpointReport {
    /// Every record fetched and mapped, and nothing failed.
    pub fn is_clean(&self) -> bool {
        self.failure.is_none() && self.mapped == self.fetched
    }
}

/// Links `test_user`, runs every endpoint once and reports on each.
pub async fn check(
    connector: &Connector,
    secret: SecretString,
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

    let engine = Engine::new(http);
    let mut reports = Vec::new();
    let endpoints = [
        ("accounts", Some(&connector.accounts)),
        ("holdings", connector.holdings.as_ref()),
        ("transactions", connector.transactions.as_ref()),
    ];
    for (name, endpoint) in endpoints {
        if let Some(endpoint) = endpoint {
            reports.push(run(&engine, connector, name, endpoint, &tokens.access_token).await);
        }
    }
    if let Some(refresh) = &tokens.refresh_token
        && let Err(error) = client.revoke(refresh).await
    {
        tracing::warn!(%error, "Could not revoke the check's grant.");
    }
    Ok(reports)
}

async fn run(
    engine: &Engine,
    connector: &Connector,
    name: &'static str,
    endpoint: &Endpoint,
    token: &SecretString,
) -> EndpointReport {
    let mut report = EndpointReport {
        endpoint: name,
        ..EndpointReport::default()
    };
    let pages = match engine.fetch_records(connector, endpoint, token).await {
        Ok(pages) => pages,
        Err(error) => {
            report.failure = Some(error.to_string());
            return report;
        }
    };
    report.requests = pages.requests;
    report.fetched = pages.records.len();
    let now = Utc::now();
    for record in &pages.records {
        let mapped = match name {
            "accounts" => mapping::account(&endpoint.fields, record, now).map(drop),
            "holdings" => mapping::holding(
                &endpoint.fields,
                endpoint.security.as_ref().unwrap_or(&endpoint.fields),
                record,
            )
            .map(drop),
            _ => mapping::transaction(&endpoint.fields, endpoint.sign, record).map(drop),
        };
        match mapped {
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
        count_absent(&mut report, &endpoint.fields, record);
        if let Some(security) = &endpoint.security {
            count_absent(&mut report, security, record);
        }
    }
    report
}

fn count_absent(report: &mut EndpointReport, fields: &Mapping, record: &Value) {
    for field in fields.names() {
        if matches!(fields.text(record, field), Ok(None)) {
            *report.absent.entry(field).or_default() += 1;
        }
    }
}
