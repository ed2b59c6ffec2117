//! Fault injection: what can go wrong with an institution's data API (and how slowly
//! its token endpoint answers), on demand. Each
//! institution has one [`FaultInjector`], set from [`super::SandboxConfig::faults`] and
//! changed at run time through the admin endpoints; [`inject`] is the middleware that
//! wraps the institution's data routes.
//!
//! Chance is drawn from a random generator seeded from the sandbox seed and the
//! institution, so a run is repeatable, and a rate of 1.0 (always) or 0.0 (never) is exact.

use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::Json;
use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Institution;
use super::discrepancies::{self, Discrepancies};

/// Text that looks like a number to a careless parser and is not one.
pub(super) const GARBAGE_NUMBER: &str = "12,3.4";

/// Faults injected into one institution's data API. Every rate is a probability from 0
/// to 1, drawn per request (per record for `malformed_rate`). The default injects nothing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Extra time before every answer, drawn uniformly from the range.
    pub latency: Option<Latency>,
    /// Requests answered `503 Service Unavailable`.
    pub error_rate: f64,
    /// Requests answered `429 Too Many Requests` with `Retry-After: retry_after_secs`.
    pub rate_limit_rate: f64,
    /// The institution's own rate limit: beyond this many requests a second (a token
    /// bucket holding one second's worth), a request is answered `429` with the
    /// `Retry-After` seconds until a token is back.
    pub requests_per_second: Option<u32>,
    pub retry_after_secs: u64,
    /// Every request answered 503 while it lasts, with `Retry-After` saying how long.
    pub outage: Option<Outage>,
    /// Records whose amounts and quantities become garbage text (`"12,3.4"`), so a client
    /// must set them aside and keep the rest.
    pub malformed_rate: f64,
    /// A field of every record renamed, as when an institution changes its schema.
    pub drift: Option<Drift>,
    /// Milliseconds the institution's token endpoint holds every answer back after
    /// doing its work: a refresh has rotated the refresh token by then, so a client
    /// that stops meanwhile (killed, timed out) never learns the new one.
    pub token_delay_ms: u64,
    /// Requests whose path contains one of these texts (an account's id, say) are
    /// answered `500 Internal Server Error`, every time: one account's data broken at
    /// the institution while the rest is served.
    pub failing_paths: Vec<String>,
    /// Every ISIN the institution sends (a field named `isin`, or the
    /// `securityId` of an FDX `securityIdType: ISIN`) has its check digit made
    /// wrong, as a typo in the institution's security master would.
    pub bad_check_digits: bool,
    /// Every answer moves each account's current balance further on, by as many
    /// units of its currency as answers were served so far, with no transaction
    /// to explain it.
    pub drifting_balances: bool,
    /// The first posted transaction of every page is sent twice, the second time
    /// under a new id, as after an institution re-keys its records.
    pub rekeyed_transactions: bool,
    /// The first holding of every page names its security without describing it.
    pub missing_security: bool,
    /// Split transactions are left out, while holdings show the split.
    pub unrecorded_splits: bool,
    /// The first holding of every page says it is worth one unit more than
    /// quantity × price.
    pub misvalued_holdings: bool,
    /// Every pending transaction is dated 30 days earlier.
    pub stale_pending: bool,
    /// The first posted transaction of every page is dated 30 days ahead.
    pub future_dated: bool,
    /// The first transaction of every page is in `ZZZ`, three letters that ISO
    /// 4217 does not list.
    pub unknown_currency: bool,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            latency: None,
            error_rate: 0.0,
            rate_limit_rate: 0.0,
            requests_per_second: None,
            retry_after_secs: 1,
            outage: None,
            malformed_rate: 0.0,
            drift: None,
            token_delay_ms: 0,
            failing_paths: Vec::new(),
            bad_check_digits: false,
            drifting_balances: false,
            rekeyed_transactions: false,
            missing_security: false,
            unrecorded_splits: false,
            misvalued_holdings: false,
            stale_pending: false,
            future_dated: false,
            unknown_currency: false,
        }
    }
}

/// `{"min_ms": 10, "max_ms": 200}`, both inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Latency {
    pub min_ms: u64,
    pub max_ms: u64,
}

/// `{"until": "2026-11-20T12:00:00Z"}` or `{"for_secs": 30}`; the second becomes the first
/// when the faults are applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Outage {
    Until(DateTime<Utc>),
    ForSecs(u64),
}

/// `{"from": "amount", "to": "amt"}`: a top-level member of every record renamed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Drift {
    pub from: String,
    pub to: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FaultsError {
    #[error("`{0}` must be a probability from 0 to 1")]
    Rate(&'static str),
    #[error("`latency.min_ms` must not exceed `latency.max_ms`")]
    Latency,
    #[error("`drift.from` and `drift.to` must be different, non-empty names")]
    Drift,
    #[error("`requests_per_second` must be at least 1 (leave it out for no limit)")]
    Limit,
    #[error("`token_delay_ms` must be at most 600000 (ten minutes)")]
    TokenDelay,
    #[error("`failing_paths` must not contain empty texts (they would fail every request)")]
    FailingPath,
}

impl Faults {
    fn validate(&self) -> Result<(), FaultsError> {
        for (name, rate) in [
            ("error_rate", self.error_rate),
            ("rate_limit_rate", self.rate_limit_rate),
            ("malformed_rate", self.malformed_rate),
        ] {
            if !(0.0..=1.0).contains(&rate) {
                return Err(FaultsError::Rate(name));
            }
        }
        if self.requests_per_second == Some(0) {
            return Err(FaultsError::Limit);
        }
        if self.token_delay_ms > 600_000 {
            return Err(FaultsError::TokenDelay);
        }
        if self.failing_paths.iter().any(String::is_empty) {
            return Err(FaultsError::FailingPath);
        }
        if self.latency.is_some_and(|l| l.min_ms > l.max_ms) {
            return Err(FaultsError::Latency);
        }
        if self
            .drift
            .as_ref()
            .is_some_and(|d| d.from.is_empty() || d.to.is_empty() || d.from == d.to)
        {
            return Err(FaultsError::Drift);
        }
        Ok(())
    }

    /// With an outage's duration turned into its end, counted from `now`.
    fn resolved(mut self, now: DateTime<Utc>) -> Self {
        if let Some(Outage::ForSecs(secs)) = self.outage {
            let secs = i64::try_from(secs).unwrap_or(i64::MAX);
            let until = chrono::Duration::try_seconds(secs)
                .and_then(|span| now.checked_add_signed(span))
                .unwrap_or(DateTime::<Utc>::MAX_UTC);
            self.outage = Some(Outage::Until(until));
        }
        self
    }
}

/// One data API request as the institution saw it, for tests that assert when
/// requests arrived (a client honouring `Retry-After`, a rate budget).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arrival {
    pub at: Instant,
    /// The status it was answered with.
    pub status: u16,
    /// The W3C `traceparent` the caller sent, as institutions log it to match
    /// their records with a caller's trace.
    pub traceparent: Option<String>,
}

/// Arrivals kept per institution; older ones are dropped so a long-running sandbox
/// does not grow.
const ARRIVALS_KEPT: usize = 10_000;

/// One institution's current faults and the generator their chances are drawn from.
#[derive(Debug)]
pub(super) struct FaultInjector {
    /// Where each record keeps the numbers `malformed_rate` spoils.
    numbers: &'static [&'static str],
    state: Mutex<(Faults, StdRng)>,
    /// Enforces `requests_per_second`; rebuilt whenever the faults change.
    limiter: Mutex<Option<DefaultDirectRateLimiter>>,
    arrivals: Mutex<VecDeque<Arrival>>,
    /// Requests answered 429, however many arrivals are kept.
    throttled: AtomicU64,
    /// Answers served while balances drift: how far the next one moves them.
    drifted: AtomicU64,
}

/// What happens to one request, decided before it runs.
enum Verdict {
    Outage { retry_after: u64 },
    RateLimited { retry_after: u64 },
    Error,
    Serve,
}

impl FaultInjector {
    pub(super) fn new(institution: Institution, seed: u64, initial: Faults) -> Self {
        let initial = match initial.validate() {
            Ok(()) => initial.resolved(Utc::now()),
            Err(error) => {
                tracing::warn!(%institution, %error, "Configured sandbox faults are invalid; none are injected.");
                Faults::default()
            }
        };
        let numbers = institution.spec().faults.malformed_numbers;
        let rng = StdRng::seed_from_u64(institution.seed(seed) ^ 0xFA17_5EED);
        Self {
            numbers,
            limiter: Mutex::new(limiter(&initial)),
            state: Mutex::new((initial, rng)),
            arrivals: Mutex::default(),
            throttled: AtomicU64::new(0),
            drifted: AtomicU64::new(0),
        }
    }

    /// Requests answered `429 Too Many Requests` so far.
    pub(super) fn throttled(&self) -> u64 {
        self.throttled.load(Ordering::Relaxed)
    }

    /// How long until the institution's own limit lets a request through, if it is
    /// spent now; takes a token otherwise.
    fn over_limit(&self) -> Option<Duration> {
        let limiter = self.limiter.lock().unwrap_or_else(PoisonError::into_inner);
        let limiter = limiter.as_ref()?;
        limiter
            .check()
            .err()
            .map(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }

    /// The requests that reached this institution, oldest first.
    pub(super) fn arrivals(&self) -> Vec<Arrival> {
        self.arrivals
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .cloned()
            .collect()
    }

    fn record(&self, arrival: Arrival) {
        if arrival.status == StatusCode::TOO_MANY_REQUESTS.as_u16() {
            self.throttled.fetch_add(1, Ordering::Relaxed);
        }
        let mut arrivals = self.arrivals.lock().unwrap_or_else(PoisonError::into_inner);
        if arrivals.len() == ARRIVALS_KEPT {
            arrivals.pop_front();
        }
        arrivals.push_back(arrival);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (Faults, StdRng)> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn get(&self) -> Faults {
        self.lock().0.clone()
    }

    /// Replaces the faults; an outage given as a duration starts now.
    pub(super) fn set(&self, faults: Faults) -> Result<Faults, FaultsError> {
        faults.validate()?;
        let faults = faults.resolved(Utc::now());
        *self.limiter.lock().unwrap_or_else(PoisonError::into_inner) = limiter(&faults);
        self.lock().0 = faults.clone();
        Ok(faults)
    }

    /// Draws the request's fate and latency, in a fixed order so runs repeat.
    fn judge(&self, now: DateTime<Utc>) -> (Verdict, Option<Duration>, Faults) {
        let mut guard = self.lock();
        let (faults, rng) = &mut *guard;
        let delay = faults
            .latency
            .map(|l| Duration::from_millis(rng.random_range(l.min_ms..=l.max_ms)));
        let verdict = match faults.outage {
            Some(Outage::Until(until)) if until > now => {
                let left = (until - now).num_milliseconds().max(0) as u64;
                Verdict::Outage {
                    retry_after: left.div_ceil(1000).max(1),
                }
            }
            _ if draw(rng, faults.rate_limit_rate) => Verdict::RateLimited {
                retry_after: faults.retry_after_secs,
            },
            _ if draw(rng, faults.error_rate) => Verdict::Error,
            _ => Verdict::Serve,
        };
        let faults = faults.clone();
        drop(guard);
        // Only a request the institution would serve spends its own limit.
        let verdict = match verdict {
            Verdict::Serve => match self.over_limit() {
                Some(wait) => Verdict::RateLimited {
                    retry_after: wait.as_secs_f64().ceil().max(1.0) as u64,
                },
                None => Verdict::Serve,
            },
            refused => refused,
        };
        (verdict, delay, faults)
    }

    /// The discrepancies `faults` asks of the next answer.
    fn discrepancies(&self, faults: &Faults) -> Discrepancies {
        Discrepancies {
            drift: faults
                .drifting_balances
                .then(|| self.drifted.fetch_add(1, Ordering::Relaxed) + 1),
            rekeyed_transactions: faults.rekeyed_transactions,
            missing_security: faults.missing_security,
            unrecorded_splits: faults.unrecorded_splits,
            misvalued_holdings: faults.misvalued_holdings,
            stale_pending: faults.stale_pending,
            future_dated: faults.future_dated,
            unknown_currency: faults.unknown_currency,
        }
    }

    /// Spoils and renames fields of the records in a successful JSON body, as `faults` says.
    fn corrupt(&self, body: &mut Value, faults: &Faults) {
        let Some(records) = records_mut(body) else {
            return;
        };
        let mut guard = self.lock();
        let rng = &mut guard.1;
        for record in records.iter_mut().filter_map(Value::as_object_mut) {
            if draw(rng, faults.malformed_rate) {
                for path in self.numbers {
                    spoil(record, path);
                }
            }
            if let Some(drift) = &faults.drift
                && let Some(value) = record.remove(&drift.from)
            {
                record.insert(drift.to.clone(), value);
            }
        }
    }
}

/// The token bucket that enforces `faults.requests_per_second`, if it sets one.
fn limiter(faults: &Faults) -> Option<DefaultDirectRateLimiter> {
    let per_second = NonZeroU32::new(faults.requests_per_second?)?;
    Some(RateLimiter::direct(Quota::per_second(per_second)))
}

/// True with probability `rate`: never for 0, always for 1.
fn draw(rng: &mut StdRng, rate: f64) -> bool {
    rate > 0.0 && rng.random::<f64>() < rate
}

/// The records of a page: the one list among the top-level members of the body, or
/// within a document's one wrapping object (UK Open Banking's `{"Data":
/// {"Transaction": [...]}}`).
fn records_mut(body: &mut Value) -> Option<&mut Vec<Value>> {
    let members = body.as_object_mut()?;
    if members.values().any(Value::is_array) {
        return members.values_mut().find_map(Value::as_array_mut);
    }
    members.values_mut().find_map(|member| {
        member
            .as_object_mut()?
            .values_mut()
            .find_map(Value::as_array_mut)
    })
}

/// Makes the check digit of every ISIN in `value` wrong: the last digit moved on
/// by one.
fn mistype_isins(value: &mut Value) {
    match value {
        Value::Object(members) => {
            let typed_isin = members
                .get("securityIdType")
                .is_some_and(|t| t.as_str() == Some("ISIN"));
            for (key, member) in members.iter_mut() {
                let is_isin =
                    key.eq_ignore_ascii_case("isin") || (typed_isin && key == "securityId");
                match member {
                    Value::String(text) if is_isin => {
                        if let Some(last) = text.pop() {
                            let wrong = last.to_digit(10).map_or(last, |d| {
                                char::from_digit((d + 1) % 10, 10).unwrap_or(last)
                            });
                            text.push(wrong);
                        }
                    }
                    other => mistype_isins(other),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(mistype_isins),
        _ => {}
    }
}

/// Replaces the number at a dotted `path` of `record`, if there is one, with garbage.
fn spoil(record: &mut serde_json::Map<String, Value>, path: &str) {
    let mut parts = path.split('.');
    let Some(first) = parts.next() else {
        return;
    };
    let mut slot = record.get_mut(first);
    for part in parts {
        slot = slot.and_then(|value| value.get_mut(part));
    }
    if let Some(value) = slot.filter(|value| !value.is_null()) {
        *value = Value::from(GARBAGE_NUMBER);
    }
}

/// The middleware around an institution's data routes: injects faults and records
/// when each request arrived and how it was answered.
pub(super) async fn inject(
    State(injector): State<Arc<FaultInjector>>,
    request: Request,
    next: Next,
) -> Response {
    let at = Instant::now();
    let traceparent = request
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let response = answer(&injector, request, next).await;
    injector.record(Arrival {
        at,
        status: response.status().as_u16(),
        traceparent,
    });
    response
}

async fn answer(injector: &FaultInjector, request: Request, next: Next) -> Response {
    let (verdict, delay, faults) = injector.judge(Utc::now());
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }
    let refusal = |status: StatusCode, error: &'static str, retry_after: Option<u64>| {
        let mut response = (
            status,
            Json(serde_json::json!({
                "error": error,
                "error_description": "injected by the sandbox's fault configuration",
            })),
        )
            .into_response();
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    };
    match verdict {
        Verdict::Outage { retry_after } => {
            return refusal(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                Some(retry_after),
            );
        }
        Verdict::RateLimited { retry_after } => {
            return refusal(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                Some(retry_after),
            );
        }
        Verdict::Error => {
            return refusal(StatusCode::SERVICE_UNAVAILABLE, "server_error", None);
        }
        Verdict::Serve => {}
    }
    let path = request.uri().path();
    if faults
        .failing_paths
        .iter()
        .any(|text| path.contains(text.as_str()))
    {
        return refusal(StatusCode::INTERNAL_SERVER_ERROR, "server_error", None);
    }
    let response = next.run(request).await;
    let discrepancies = injector.discrepancies(&faults);
    if (faults.malformed_rate == 0.0
        && faults.drift.is_none()
        && !faults.bad_check_digits
        && !discrepancies.any())
        || !response.status().is_success()
    {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    // The sandbox's own pages are small and in memory; a body that is not JSON passes
    // through untouched.
    let Ok(bytes) = to_bytes(body, usize::MAX).await else {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            "unreadable response body",
        )
            .into_response();
    };
    let Ok(mut value) = serde_json::from_slice::<Value>(&bytes) else {
        return Response::from_parts(parts, Body::from(bytes));
    };
    injector.corrupt(&mut value, &faults);
    if discrepancies.any()
        && let Some(records) = records_mut(&mut value)
    {
        discrepancies::inject(records, discrepancies, Utc::now().date_naive());
    }
    if faults.bad_check_digits {
        mistype_isins(&mut value);
    }
    let Ok(text) = serde_json::to_vec(&value) else {
        return Response::from_parts(parts, Body::from(bytes));
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mistyped_isins_fail_their_check_digit_wherever_they_sit() {
        let mut body = serde_json::json!({
            "holdings": [{"security": {"isin": "US0378331005", "cusip": "037833100"}}],
            "securityIds": [{"securityId": "US5949181045", "securityIdType": "ISIN"},
                            {"securityId": "594918104", "securityIdType": "CUSIP"}],
        });
        mistype_isins(&mut body);
        assert_eq!(body["holdings"][0]["security"]["isin"], "US0378331006");
        assert_eq!(body["holdings"][0]["security"]["cusip"], "037833100");
        assert_eq!(body["securityIds"][0]["securityId"], "US5949181046");
        assert_eq!(body["securityIds"][1]["securityId"], "594918104");
    }

    #[test]
    fn records_are_found_at_the_top_or_inside_a_wrapping_document() {
        let mut flat = serde_json::json!({"page": {"total": 1}, "transactions": [{"a": 1}]});
        assert_eq!(records_mut(&mut flat).map(|r| r.len()), Some(1));
        let mut wrapped = serde_json::json!({
            "Data": {"Transaction": [{"a": 1}, {"a": 2}]},
            "Links": {"Self": "x"},
            "Meta": {"TotalPages": 1},
        });
        assert_eq!(records_mut(&mut wrapped).map(|r| r.len()), Some(2));
        let mut none = serde_json::json!({"Data": {"AccountId": "x"}});
        assert!(records_mut(&mut none).is_none());
    }

    #[test]
    fn invalid_faults_are_refused() {
        let bad_rate = Faults {
            error_rate: 1.5,
            ..Faults::default()
        };
        assert_eq!(bad_rate.validate(), Err(FaultsError::Rate("error_rate")));
        let bad_latency = Faults {
            latency: Some(Latency {
                min_ms: 10,
                max_ms: 1,
            }),
            ..Faults::default()
        };
        assert_eq!(bad_latency.validate(), Err(FaultsError::Latency));
        let bad_drift = Faults {
            drift: Some(Drift {
                from: "amount".into(),
                to: "amount".into(),
            }),
            ..Faults::default()
        };
        assert_eq!(bad_drift.validate(), Err(FaultsError::Drift));
    }

    #[test]
    fn the_institutions_own_limit_refuses_what_exceeds_a_second_of_tokens() {
        let injector = FaultInjector::new(Institution::Meridian, 42, Faults::default());
        let served = |injector: &FaultInjector| {
            (0..12)
                .filter(|_| matches!(injector.judge(Utc::now()).0, Verdict::Serve))
                .count()
        };
        assert_eq!(served(&injector), 12, "no limit, no refusal");
        injector
            .set(Faults {
                requests_per_second: Some(10),
                ..Faults::default()
            })
            .expect("valid");
        // A full bucket lets ten through at once; the next wait for a token.
        assert_eq!(served(&injector), 10);
        let Verdict::RateLimited { retry_after } = injector.judge(Utc::now()).0 else {
            panic!("the limit is spent");
        };
        assert_eq!(retry_after, 1);
        for status in [200, 429, 429] {
            injector.record(Arrival {
                at: Instant::now(),
                status,
                traceparent: None,
            });
        }
        assert_eq!(injector.throttled(), 2);
        let zero = Faults {
            requests_per_second: Some(0),
            ..Faults::default()
        };
        assert_eq!(zero.validate(), Err(FaultsError::Limit));
    }

    #[test]
    fn faults_read_from_json_with_defaults() {
        let faults: Faults = serde_json::from_str(
            r#"{"outage": {"for_secs": 30}, "drift": {"from": "a", "to": "b"}}"#,
        )
        .expect("json");
        assert_eq!(faults.outage, Some(Outage::ForSecs(30)));
        assert_eq!(faults.retry_after_secs, 1);
        let now = Utc::now();
        assert_eq!(
            faults.resolved(now).outage,
            Some(Outage::Until(now + chrono::Duration::seconds(30)))
        );
        assert!(serde_json::from_str::<Faults>(r#"{"eror_rate": 1}"#).is_err());
    }

    #[test]
    fn spoiling_reaches_nested_numbers_and_skips_absent_ones() {
        let mut record =
            serde_json::json!({"amount": 1, "balances": {"current": "2"}, "memo": null});
        let map = record.as_object_mut().expect("object");
        for path in ["amount", "balances.current", "quantity", "memo"] {
            spoil(map, path);
        }
        assert_eq!(
            record,
            serde_json::json!({"amount": GARBAGE_NUMBER, "balances": {"current": GARBAGE_NUMBER}, "memo": null})
        );
    }
}
