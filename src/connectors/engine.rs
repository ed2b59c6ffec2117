//! The generic engine: runs a connector's endpoints against its institution with a
//! user's access token, following the declared paging until the last page, and
//! classifies failures by the connector's error semantics. Transient failures are
//! retried with exponential backoff and jitter; a rate limit waits as long as the
//! institution asks (within reason).

use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use chrono::Utc;
use reqwest::header::{HeaderMap, LINK};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use super::mapping::{self, FieldError};
use super::{Connector, Endpoint, Paging};
use crate::domain::Snapshot;

/// A page loop that has not ended after this many pages is treated as broken paging,
/// not as an institution with that much data.
const MAX_PAGES: usize = 10_000;
/// Longest `Retry-After` honoured inside one run; longer means "try a later run".
const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);
/// Largest response body read from an institution; a bigger one is a fault, and
/// must not exhaust a worker's memory.
const MAX_BODY_BYTES: usize = 32 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    #[error("the institution wants the user to re-authenticate (HTTP {status})")]
    Reauth { status: u16 },
    #[error("rate limited by the institution")]
    RateLimited { retry_after: Option<Duration> },
    #[error("the institution is unavailable: {0}")]
    Unavailable(String),
    #[error("the institution's response could not be read: {0}")]
    Unreadable(String),
    #[error("the institution rejected the request: HTTP {status}")]
    Rejected { status: u16 },
}

impl EngineError {
    fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable(_) | Self::RateLimited { .. })
    }
}

/// One record that could not be mapped, with the reason (no values).
#[derive(Debug, Clone)]
pub struct Rejected {
    pub endpoint: &'static str,
    pub reason: FieldError,
}

/// Everything fetched for one connection, mapped.
#[derive(Debug, Default)]
pub struct Fetched {
    pub snapshot: Snapshot,
    pub rejected: Vec<Rejected>,
    pub requests: usize,
}

impl Fetched {
    /// Whether every record of `endpoint` mapped: only then is the endpoint's list
    /// complete enough to remove stored records it no longer contains.
    pub fn complete(&self, endpoint: &str) -> bool {
        !self.rejected.iter().any(|r| r.endpoint == endpoint)
    }
}

/// Runs connectors over one shared HTTP client.
#[derive(Clone, Debug)]
pub struct Engine {
    http: reqwest::Client,
}

impl Engine {
    pub fn new(http: reqwest::Client) -> Self {
        Self { http }
    }

    /// Fetches and maps every endpoint of the connector. A record that does not map
    /// is set aside with its reason; a page that cannot be read fails the whole fetch.
    pub async fn fetch(
        &self,
        connector: &Connector,
        token: &SecretString,
    ) -> Result<Fetched, EngineError> {
        let mut out = Fetched::default();
        let fetched_at = Utc::now();

        let (records, requests) = self
            .fetch_records(connector, &connector.accounts, token)
            .await?;
        out.requests += requests;
        for record in &records {
            match mapping::account(&connector.accounts.fields, record, fetched_at) {
                Ok(account) => out.snapshot.accounts.push(account),
                Err(reason) => out.rejected.push(Rejected {
                    endpoint: "accounts",
                    reason,
                }),
            }
        }

        if let Some(endpoint) = &connector.holdings {
            let (records, requests) = self.fetch_records(connector, endpoint, token).await?;
            out.requests += requests;
            let security_mapping = endpoint.security.as_ref().unwrap_or(&endpoint.fields);
            for record in &records {
                match mapping::holding(&endpoint.fields, security_mapping, record) {
                    Ok((holding, security)) => {
                        if !out
                            .snapshot
                            .securities
                            .iter()
                            .any(|s| s.external_id == security.external_id)
                        {
                            out.snapshot.securities.push(security);
                        }
                        out.snapshot.holdings.push(holding);
                    }
                    Err(reason) => out.rejected.push(Rejected {
                        endpoint: "holdings",
                        reason,
                    }),
                }
            }
        }

        if let Some(endpoint) = &connector.transactions {
            let (records, requests) = self.fetch_records(connector, endpoint, token).await?;
            out.requests += requests;
            for record in &records {
                match mapping::transaction(&endpoint.fields, endpoint.sign, record) {
                    Ok(transaction) => out.snapshot.transactions.push(transaction),
                    Err(reason) => out.rejected.push(Rejected {
                        endpoint: "transactions",
                        reason,
                    }),
                }
            }
        }
        Ok(out)
    }

    /// Every record of one endpoint, across all its pages; returns the records and
    /// the number of requests made.
    pub async fn fetch_records(
        &self,
        connector: &Connector,
        endpoint: &Endpoint,
        token: &SecretString,
    ) -> Result<(Vec<Value>, usize), EngineError> {
        let page_size = connector.limits.page_size;
        let mut records = Vec::new();
        let mut url = endpoint.url.clone();
        let mut page_params: Vec<(String, String)> = Vec::new();
        let mut seen_cursors = std::collections::HashSet::new();
        match &endpoint.paging {
            Paging::None => {}
            Paging::Cursor {
                page_size_param, ..
            }
            | Paging::LinkHeader { page_size_param } => {
                if let Some(p) = page_size_param {
                    page_params.push((p.clone(), page_size.to_string()));
                }
            }
            Paging::Offset {
                offset_param,
                limit_param,
                ..
            } => {
                page_params.push((offset_param.clone(), "0".into()));
                page_params.push((limit_param.clone(), page_size.to_string()));
            }
            Paging::Page {
                page_param,
                page_size_param,
                first_page,
            } => {
                page_params.push((page_param.clone(), first_page.to_string()));
                if let Some(p) = page_size_param {
                    page_params.push((p.clone(), page_size.to_string()));
                }
            }
        }

        for page in 1..=MAX_PAGES {
            let (headers, body) = self
                .get_page(connector, endpoint, &url, &page_params, token)
                .await?;
            if let Some(container) = &endpoint.records_container
                && !matches!(
                    container.query(&body).at_most_one(),
                    Ok(Some(Value::Array(_)))
                )
            {
                return Err(EngineError::Unreadable(format!(
                    "page {page} of {} has no list of records where the connector says",
                    endpoint.url.path()
                )));
            }
            let found: Vec<Value> = endpoint
                .records
                .query(&body)
                .all()
                .into_iter()
                .cloned()
                .collect();
            let count = found.len();
            records.extend(found);
            let next = match &endpoint.paging {
                Paging::None => None,
                Paging::Cursor {
                    cursor_param,
                    next_cursor,
                    ..
                } => match next_cursor.query(&body).at_most_one() {
                    Ok(Some(Value::String(c))) if !c.is_empty() => {
                        if !seen_cursors.insert(c.clone()) {
                            return Err(EngineError::Unreadable(format!(
                                "the cursor repeated after page {page}"
                            )));
                        }
                        set_param(&mut page_params, cursor_param, c.clone());
                        Some(())
                    }
                    Ok(Some(Value::Number(n))) => {
                        set_param(&mut page_params, cursor_param, n.to_string());
                        Some(())
                    }
                    _ => None,
                },
                Paging::Offset {
                    offset_param,
                    total,
                    ..
                } => {
                    let offset = records.len();
                    let total = total
                        .as_ref()
                        .and_then(|t| t.query(&body).at_most_one().ok().flatten())
                        .and_then(|v| v.to_string().parse::<usize>().ok());
                    // Without a total, only an empty page ends the list: institutions
                    // may cap the page size below what was asked for.
                    let more = match total {
                        Some(total) => offset < total && count > 0,
                        None => count > 0,
                    };
                    more.then(|| set_param(&mut page_params, offset_param, offset.to_string()))
                }
                Paging::Page {
                    page_param,
                    first_page,
                    ..
                } => (count > 0).then(|| {
                    let next = u64::from(*first_page) + page as u64;
                    set_param(&mut page_params, page_param, next.to_string())
                }),
                Paging::LinkHeader { .. } => match next_link(&headers) {
                    Some(link) => {
                        let next = endpoint.url.join(&link).map_err(|e| {
                            EngineError::Unreadable(format!(
                                "the Link header's next URL is invalid: {e}"
                            ))
                        })?;
                        // The bearer token goes only where the connector said it may.
                        if next.origin() != endpoint.url.origin() {
                            return Err(EngineError::Unreadable(format!(
                                "the Link header points to another origin ({})",
                                next.origin().ascii_serialization()
                            )));
                        }
                        url = next;
                        // The next link carries every parameter it needs.
                        page_params.clear();
                        Some(())
                    }
                    None => None,
                },
            };
            if next.is_none() {
                return Ok((records, page));
            }
        }
        Err(EngineError::Unreadable(format!(
            "paging did not end after {MAX_PAGES} pages"
        )))
    }

    async fn get_page(
        &self,
        connector: &Connector,
        endpoint: &Endpoint,
        url: &url::Url,
        page_params: &[(String, String)],
        token: &SecretString,
    ) -> Result<(HeaderMap, Value), EngineError> {
        let attempt = || async {
            let mut request = self
                .http
                .request(endpoint.method.clone(), url.clone())
                .bearer_auth(token.expose_secret())
                .timeout(Duration::from_secs(connector.limits.timeout_secs));
            if !endpoint.query.is_empty() {
                request = request.query(&endpoint.query);
            }
            if !page_params.is_empty() {
                request = request.query(page_params);
            }
            let response = request.send().await.map_err(|e| {
                // reqwest's error text names the URL but never the headers.
                EngineError::Unavailable(e.without_url().to_string())
            })?;
            let status = response.status();
            let headers = response.headers().clone();
            let bytes = read_body(response).await?;
            if !status.is_success() {
                return Err(classify(connector, status.as_u16(), &headers, &bytes));
            }
            let body: Value = serde_json::from_slice(&bytes)
                .map_err(|e| EngineError::Unreadable(format!("{} is not JSON: {e}", url.path())))?;
            Ok((headers, body))
        };
        attempt
            .retry(ExponentialBuilder::default().with_jitter().with_min_delay(Duration::from_millis(200)).with_max_times(3))
            .when(EngineError::is_transient)
            .adjust(|error, planned| match error {
                EngineError::RateLimited { retry_after: Some(wait) } if *wait > MAX_RETRY_AFTER => None,
                EngineError::RateLimited { retry_after: Some(wait) } => Some(*wait),
                _ => planned,
            })
            .notify(|error, wait| {
                tracing::warn!(institution = %connector.id, error = %error, wait_ms = wait.as_millis() as u64, "Retrying a request.");
            })
            .await
    }
}

/// The response body, refusing one larger than `MAX_BODY_BYTES`.
async fn read_body(mut response: reqwest::Response) -> Result<Vec<u8>, EngineError> {
    if response
        .content_length()
        .is_some_and(|n| n > MAX_BODY_BYTES as u64)
    {
        return Err(EngineError::Unreadable(format!(
            "the response is larger than {MAX_BODY_BYTES} bytes"
        )));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| EngineError::Unavailable(e.without_url().to_string()))?
    {
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(EngineError::Unreadable(format!(
                "the response is larger than {MAX_BODY_BYTES} bytes"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn set_param(params: &mut Vec<(String, String)>, name: &str, value: String) {
    match params.iter_mut().find(|(n, _)| n == name) {
        Some(slot) => slot.1 = value,
        None => params.push((name.to_owned(), value)),
    }
}

/// What a failed response means, by the connector's declared error semantics.
fn classify(connector: &Connector, status: u16, headers: &HeaderMap, body: &[u8]) -> EngineError {
    let spec = &connector.errors.spec;
    let code = connector.errors.code_path.as_ref().and_then(|path| {
        let body: Value = serde_json::from_slice(body).ok()?;
        match path.query(&body).at_most_one().ok()?? {
            Value::String(s) => Some(s.clone()),
            other => Some(other.to_string()),
        }
    });
    let has_code = |codes: &[String]| code.as_ref().is_some_and(|c| codes.contains(c));
    if spec.reauth_statuses.contains(&status) || has_code(&spec.reauth_codes) {
        EngineError::Reauth { status }
    } else if spec.rate_limited_statuses.contains(&status) || has_code(&spec.rate_limited_codes) {
        EngineError::RateLimited {
            retry_after: retry_after(headers, &spec.retry_after_header),
        }
    } else if spec.retry_statuses.contains(&status) || has_code(&spec.retry_codes) {
        EngineError::Unavailable(format!("HTTP {status}"))
    } else {
        EngineError::Rejected { status }
    }
}

/// `Retry-After` as seconds or an HTTP date (RFC 9110 §10.2.3).
fn retry_after(headers: &HeaderMap, name: &str) -> Option<Duration> {
    let value = headers.get(name)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    (at.with_timezone(&Utc) - Utc::now()).to_std().ok()
}

/// The `rel="next"` target of RFC 8288 `Link` headers.
fn next_link(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(LINK)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|link| {
            let (target, params) = link.trim().split_once(';')?;
            let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
            let is_next = params.split(';').any(|p| {
                let Some((key, value)) = p.split_once('=') else {
                    return false;
                };
                key.trim().eq_ignore_ascii_case("rel")
                    && value
                        .trim()
                        .trim_matches('"')
                        .split_whitespace()
                        .any(|r| r.eq_ignore_ascii_case("next"))
            });
            is_next.then(|| target.to_owned())
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn link_headers_yield_the_next_page() {
        let mut headers = HeaderMap::new();
        headers.insert(
            LINK,
            HeaderValue::from_static(
                r#"<https://x.test/a?page=1>; rel="prev", <https://x.test/a?page=3>; rel="next""#,
            ),
        );
        assert_eq!(
            next_link(&headers).as_deref(),
            Some("https://x.test/a?page=3")
        );
        headers.insert(
            LINK,
            HeaderValue::from_static(r#"<https://x.test/a?page=1>; rel="prev""#),
        );
        assert_eq!(next_link(&headers), None);
    }

    #[test]
    fn retry_after_accepts_seconds() {
        let mut headers = HeaderMap::new();
        headers.insert("Retry-After", HeaderValue::from_static("7"));
        assert_eq!(
            retry_after(&headers, "Retry-After"),
            Some(Duration::from_secs(7))
        );
    }
}
