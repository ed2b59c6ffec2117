//! Webhooks from an institution, as its connector file describes them: checking that
//! a request was signed with the institution's secret and sent recently, then
//! reading the event's id, type and the accounts it concerns. What happens to an
//! event afterwards (storing, deduplicating, syncing) is `sync::inbound`'s.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use hmac::Mac;
use reqwest::header::HeaderMap;
use secrecy::SecretString;
use serde_json::Value;
use serde_json_path::JsonPath;

use super::spec::{SignatureEncoding, SignedContent};
use crate::fingerprint::hmac_sha256;

/// Longest event id, type or account id read, in bytes.
const MAX_TEXT: usize = 200;
/// Most account ids one event may name.
const MAX_ACCOUNTS: usize = 100;
/// Most signatures one header may carry (an institution rotating its secret sends
/// two); more are refused unchecked, so a header cannot make us hash a body
/// thousands of times.
const MAX_SIGNATURES: usize = 5;
/// Bytes in an HMAC-SHA256.
const SIGNATURE_BYTES: usize = 32;

/// A connector's compiled `[webhooks]`.
#[derive(Debug, Clone)]
pub struct Webhooks {
    /// Name of the variable that holds the signing secret.
    pub secret_env: String,
    pub signature_header: String,
    pub signature_prefix: Option<String>,
    pub encoding: SignatureEncoding,
    pub signed: SignedContent,
    pub timestamp: Timestamp,
    pub tolerance: std::time::Duration,
    pub event_id: JsonPath,
    pub event_type: Option<JsonPath>,
    pub account_ids: JsonPath,
    /// Event types that ask for a sync; `None`: all of them.
    pub sync_on: Option<Vec<String>>,
}

/// Where an event's send time is.
#[derive(Debug, Clone)]
pub enum Timestamp {
    Header(String),
    Body(JsonPath),
}

/// An event that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub event_id: String,
    pub event_type: Option<String>,
    /// The institution's account ids, without repeats, in the order sent.
    pub account_ids: Vec<String>,
    pub sent_at: DateTime<Utc>,
}

/// Why a request is refused. Messages name what is wrong, never a secret or
/// the signature expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WebhookError {
    #[error("the `{0}` header with the signature is missing")]
    MissingSignature(String),
    #[error("no signature in the `{0}` header matches the body")]
    BadSignature(String),
    #[error("the time the event was sent is missing (`{0}`)")]
    MissingTimestamp(String),
    #[error("`{0}` is not a time in epoch seconds or RFC 3339")]
    BadTimestamp(String),
    #[error("the event was sent {skew_secs} s from now, beyond the {tolerance_secs} s allowed")]
    OutsideTolerance { skew_secs: u64, tolerance_secs: u64 },
    #[error("the body is not JSON: {0}")]
    NotJson(String),
    #[error("the event has no `{0}`: {1}")]
    MissingField(&'static str, String),
    #[error(
        "the event names more than {MAX_ACCOUNTS} accounts, or an account id longer than {MAX_TEXT} bytes"
    )]
    TooManyAccounts,
}

impl WebhookError {
    /// Whether the request failed authentication (as opposed to being unreadable).
    pub fn is_unauthenticated(&self) -> bool {
        matches!(
            self,
            Self::MissingSignature(_)
                | Self::BadSignature(_)
                | Self::MissingTimestamp(_)
                | Self::BadTimestamp(_)
                | Self::OutsideTolerance { .. }
        )
    }
}

impl Webhooks {
    /// Checks the signature and the send time of a request, then reads the event.
    /// The signature is checked before the body is parsed, so nothing an unsigned
    /// sender wrote is ever interpreted.
    pub fn verify(
        &self,
        secret: &SecretString,
        headers: &HeaderMap,
        body: &[u8],
        now: DateTime<Utc>,
    ) -> Result<Notice, WebhookError> {
        let header_time = match &self.timestamp {
            Timestamp::Header(name) => Some(
                header(headers, name)
                    .ok_or_else(|| WebhookError::MissingTimestamp(name.clone()))?,
            ),
            Timestamp::Body(_) => None,
        };
        let signed_prefix = match self.signed {
            SignedContent::Body => None,
            // Validation makes `timestamp.body` come with a timestamp header.
            SignedContent::TimestampDotBody => header_time,
        };
        self.check_signature(secret, headers, signed_prefix, body)?;

        let event: Value =
            serde_json::from_slice(body).map_err(|e| WebhookError::NotJson(e.to_string()))?;
        let sent_at = match (&self.timestamp, header_time) {
            (_, Some(text)) => parse_time(text)?,
            (Timestamp::Body(path), None) => {
                let value = path
                    .query(&event)
                    .first()
                    .ok_or_else(|| WebhookError::MissingTimestamp(path.to_string()))?;
                parse_time_value(value)?
            }
            (Timestamp::Header(name), None) => {
                return Err(WebhookError::MissingTimestamp(name.clone()));
            }
        };
        let skew = now.timestamp().abs_diff(sent_at.timestamp());
        if skew > self.tolerance.as_secs() {
            return Err(WebhookError::OutsideTolerance {
                skew_secs: skew,
                tolerance_secs: self.tolerance.as_secs(),
            });
        }

        let event_id = text_at(&self.event_id, &event)
            .ok_or_else(|| WebhookError::MissingField("event_id", self.event_id.to_string()))?;
        let event_type = match &self.event_type {
            Some(path) => Some(
                text_at(path, &event)
                    .ok_or_else(|| WebhookError::MissingField("event_type", path.to_string()))?,
            ),
            None => None,
        };
        Ok(Notice {
            event_id,
            event_type,
            account_ids: self.accounts_in(&event)?,
            sent_at,
        })
    }

    /// Whether an event of this type asks for a sync.
    pub fn syncs_on(&self, event_type: Option<&str>) -> bool {
        match (&self.sync_on, event_type) {
            (None, _) => true,
            (Some(types), Some(t)) => types.iter().any(|s| s == t),
            (Some(_), None) => false,
        }
    }

    /// Reads a stored event's type and accounts again, with this (perhaps newer)
    /// connector: what a replay after a connector fix needs. The signature and
    /// time were checked when the event arrived.
    pub fn reread(&self, body: &str) -> Result<(Option<String>, Vec<String>), WebhookError> {
        let event: Value =
            serde_json::from_str(body).map_err(|e| WebhookError::NotJson(e.to_string()))?;
        let event_type = self.event_type.as_ref().and_then(|p| text_at(p, &event));
        Ok((event_type, self.accounts_in(&event)?))
    }

    /// The account ids an event names, without repeats, in the order sent. An event
    /// naming more than we read is refused whole rather than synced in part.
    fn accounts_in(&self, event: &Value) -> Result<Vec<String>, WebhookError> {
        let mut ids: Vec<String> = Vec::new();
        for value in self.account_ids.query(event).all() {
            let id = match value {
                Value::String(s) => s.trim().to_owned(),
                Value::Number(n) => n.to_string(),
                _ => continue,
            };
            if id.len() > MAX_TEXT {
                return Err(WebhookError::TooManyAccounts);
            }
            if !id.is_empty() && !ids.contains(&id) {
                if ids.len() == MAX_ACCOUNTS {
                    return Err(WebhookError::TooManyAccounts);
                }
                ids.push(id);
            }
        }
        Ok(ids)
    }

    fn check_signature(
        &self,
        secret: &SecretString,
        headers: &HeaderMap,
        signed_prefix: Option<&str>,
        body: &[u8],
    ) -> Result<(), WebhookError> {
        let name = &self.signature_header;
        let value =
            header(headers, name).ok_or_else(|| WebhookError::MissingSignature(name.clone()))?;
        // One MAC for the request, cloned per candidate: the body is hashed once.
        let parts: &[&[u8]] = match signed_prefix {
            Some(prefix) => &[prefix.as_bytes(), b".", body],
            None => &[body],
        };
        let mac = hmac_sha256(secret, parts);
        let candidates: Vec<&str> = value.split(',').map(str::trim).collect();
        let matches = candidates.len() <= MAX_SIGNATURES
            && candidates.into_iter().any(|candidate| {
                let candidate = match &self.signature_prefix {
                    Some(prefix) => match candidate.strip_prefix(prefix.as_str()) {
                        Some(rest) => rest,
                        None => return false,
                    },
                    None => candidate,
                };
                let decoded = match self.encoding {
                    SignatureEncoding::Hex => hex::decode(candidate).ok(),
                    SignatureEncoding::Base64 => STANDARD.decode(candidate).ok(),
                };
                // `verify_slice` compares in constant time.
                decoded.is_some_and(|bytes| {
                    bytes.len() == SIGNATURE_BYTES && mac.clone().verify_slice(&bytes).is_ok()
                })
            });
        if matches {
            Ok(())
        } else {
            Err(WebhookError::BadSignature(name.clone()))
        }
    }
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// A string or number at `path`, as text, if short enough to be an id.
fn text_at(path: &JsonPath, event: &Value) -> Option<String> {
    path.query(event).first().and_then(scalar_text)
}

fn scalar_text(value: &Value) -> Option<String> {
    let text = match value {
        Value::String(s) => s.trim().to_owned(),
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    (!text.is_empty() && text.len() <= MAX_TEXT).then_some(text)
}

fn parse_time(text: &str) -> Result<DateTime<Utc>, WebhookError> {
    if let Ok(secs) = text.parse::<i64>() {
        return DateTime::from_timestamp(secs, 0)
            .ok_or_else(|| WebhookError::BadTimestamp(text.to_owned()));
    }
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| WebhookError::BadTimestamp(shorten(text)))
}

fn parse_time_value(value: &Value) -> Result<DateTime<Utc>, WebhookError> {
    match value {
        Value::String(s) => parse_time(s),
        Value::Number(n) => parse_time(&n.to_string()),
        other => Err(WebhookError::BadTimestamp(shorten(&other.to_string()))),
    }
}

/// At most 40 characters of something a sender wrote, for an error message.
fn shorten(text: &str) -> String {
    text.chars().take(40).collect()
}

#[cfg(test)]
mod tests {
    use reqwest::header::HeaderValue;

    use super::*;

    const SECRET: &str = "whsec-test";

    fn webhooks(timestamp: Timestamp, signed: SignedContent) -> Webhooks {
        Webhooks {
            secret_env: "TEST_WEBHOOK_SECRET".into(),
            signature_header: "X-Signature".into(),
            signature_prefix: Some("sha256=".into()),
            encoding: SignatureEncoding::Hex,
            signed,
            timestamp,
            tolerance: std::time::Duration::from_secs(300),
            event_id: JsonPath::parse("$.id").unwrap(),
            event_type: Some(JsonPath::parse("$.type").unwrap()),
            account_ids: JsonPath::parse("$.accounts[*]").unwrap(),
            sync_on: Some(vec!["DATA_CHANGED".into()]),
        }
    }

    /// Signs independently of the code under test.
    /// The usual kind: the time in a header, signed with the body.
    fn time_in_header() -> Webhooks {
        webhooks(
            Timestamp::Header("X-Timestamp".into()),
            SignedContent::TimestampDotBody,
        )
    }

    fn sign(prefix: Option<&str>, body: &[u8], secret: &str) -> String {
        use hmac::{Hmac, KeyInit};
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        if let Some(prefix) = prefix {
            mac.update(prefix.as_bytes());
            mac.update(b".");
        }
        mac.update(body);
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    }

    fn headers(pairs: &[(&'static str, String)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    fn secret() -> SecretString {
        SecretString::from(SECRET)
    }

    #[test]
    fn a_signed_recent_event_is_read() {
        let hooks = time_in_header();
        let now = Utc::now();
        let t = now.timestamp().to_string();
        let body = br#"{"id":"evt_1","type":"DATA_CHANGED","accounts":["a1","a2","a1",7]}"#;
        let h = headers(&[
            ("x-timestamp", t.clone()),
            ("x-signature", sign(Some(&t), body, SECRET)),
        ]);
        let notice = hooks.verify(&secret(), &h, body, now).unwrap();
        assert_eq!(notice.event_id, "evt_1");
        assert_eq!(notice.event_type.as_deref(), Some("DATA_CHANGED"));
        assert_eq!(notice.account_ids, ["a1", "a2", "7"]);
        assert!(hooks.syncs_on(notice.event_type.as_deref()));
        assert!(!hooks.syncs_on(Some("SOMETHING_ELSE")));
    }

    #[test]
    fn a_wrong_secret_a_changed_body_or_a_moved_timestamp_is_refused() {
        let hooks = time_in_header();
        let now = Utc::now();
        let t = now.timestamp().to_string();
        let body = br#"{"id":"evt_1","type":"DATA_CHANGED","accounts":[]}"#;
        let good = sign(Some(&t), body, SECRET);
        let cases = [
            (t.clone(), sign(Some(&t), body, "another-secret"), &body[..]),
            (
                t.clone(),
                good.clone(),
                &br#"{"id":"evt_2","type":"DATA_CHANGED","accounts":[]}"#[..],
            ),
            ((now.timestamp() + 1).to_string(), good.clone(), &body[..]),
            (
                t.clone(),
                good.trim_start_matches("sha256=").to_owned(),
                &body[..],
            ),
            (t.clone(), "sha256=zz".into(), &body[..]),
        ];
        for (timestamp, signature, body) in cases {
            let h = headers(&[("x-timestamp", timestamp), ("x-signature", signature)]);
            assert_eq!(
                hooks.verify(&secret(), &h, body, now),
                Err(WebhookError::BadSignature("X-Signature".into()))
            );
        }
        let h = headers(&[("x-timestamp", t)]);
        assert_eq!(
            hooks.verify(&secret(), &h, body, now),
            Err(WebhookError::MissingSignature("X-Signature".into()))
        );
    }

    #[test]
    fn one_of_several_signatures_may_match() {
        let hooks = time_in_header();
        let now = Utc::now();
        let t = now.timestamp().to_string();
        let body = br#"{"id":"evt_1","type":"DATA_CHANGED","accounts":[]}"#;
        let both = format!(
            "{}, {}",
            sign(Some(&t), body, "old-secret"),
            sign(Some(&t), body, SECRET)
        );
        let h = headers(&[("x-timestamp", t.clone()), ("x-signature", both)]);
        assert!(hooks.verify(&secret(), &h, body, now).is_ok());

        // The good one after five bad ones is never looked at.
        let good = sign(Some(&t), body, SECRET);
        let many = format!("{}{good}", "sha256=00,".repeat(MAX_SIGNATURES));
        let h = headers(&[("x-timestamp", t), ("x-signature", many)]);
        assert_eq!(
            hooks.verify(&secret(), &h, body, now),
            Err(WebhookError::BadSignature("X-Signature".into()))
        );
    }

    #[test]
    fn an_event_naming_too_many_accounts_is_refused_whole() {
        let hooks = time_in_header();
        let now = Utc::now();
        let t = now.timestamp().to_string();
        let ids: Vec<String> = (0..=MAX_ACCOUNTS).map(|i| format!("a{i}")).collect();
        let long = "x".repeat(MAX_TEXT + 1);
        for accounts in [serde_json::json!(ids), serde_json::json!([long])] {
            let body =
                serde_json::json!({"id": "evt_1", "type": "DATA_CHANGED", "accounts": accounts})
                    .to_string();
            let h = headers(&[
                ("x-timestamp", t.clone()),
                ("x-signature", sign(Some(&t), body.as_bytes(), SECRET)),
            ]);
            assert_eq!(
                hooks.verify(&secret(), &h, body.as_bytes(), now),
                Err(WebhookError::TooManyAccounts)
            );
        }
    }

    #[test]
    fn an_event_sent_outside_the_tolerance_is_refused_even_when_signed() {
        let hooks = time_in_header();
        let now = Utc::now();
        let body = br#"{"id":"evt_1","type":"DATA_CHANGED","accounts":[]}"#;
        for offset in [-301_i64, 301] {
            let t = (now.timestamp() + offset).to_string();
            let h = headers(&[
                ("x-timestamp", t.clone()),
                ("x-signature", sign(Some(&t), body, SECRET)),
            ]);
            assert_eq!(
                hooks.verify(&secret(), &h, body, now),
                Err(WebhookError::OutsideTolerance {
                    skew_secs: 301,
                    tolerance_secs: 300
                })
            );
        }
        let h = headers(&[
            ("x-timestamp", "yesterday".into()),
            ("x-signature", sign(Some("yesterday"), body, SECRET)),
        ]);
        assert_eq!(
            hooks.verify(&secret(), &h, body, now),
            Err(WebhookError::BadTimestamp("yesterday".into()))
        );
    }

    #[test]
    fn a_time_in_the_signed_body_is_read_from_it() {
        let mut hooks = webhooks(
            Timestamp::Body(JsonPath::parse("$.sent_at").unwrap()),
            SignedContent::Body,
        );
        hooks.encoding = SignatureEncoding::Base64;
        hooks.signature_prefix = None;
        let now = Utc::now();
        let stale = (now - chrono::Duration::hours(1)).to_rfc3339();
        for (sent_at, ok) in [(now.to_rfc3339(), true), (stale, false)] {
            let body = format!(
                r#"{{"id":"evt_1","type":"DATA_CHANGED","sent_at":"{sent_at}","accounts":["a"]}}"#
            );
            let signature = STANDARD.encode(
                hmac_sha256(&secret(), &[body.as_bytes()])
                    .finalize()
                    .into_bytes(),
            );
            let h = headers(&[("x-signature", signature)]);
            assert_eq!(
                hooks.verify(&secret(), &h, body.as_bytes(), now).is_ok(),
                ok
            );
        }
    }

    #[test]
    fn a_signed_event_without_an_id_is_unreadable_not_unauthenticated() {
        let hooks = time_in_header();
        let now = Utc::now();
        let t = now.timestamp().to_string();
        for body in [&br#"{"type":"DATA_CHANGED"}"#[..], b"not json"] {
            let h = headers(&[
                ("x-timestamp", t.clone()),
                ("x-signature", sign(Some(&t), body, SECRET)),
            ]);
            let error = hooks.verify(&secret(), &h, body, now).unwrap_err();
            assert!(!error.is_unauthenticated(), "{error}");
        }
    }
}
