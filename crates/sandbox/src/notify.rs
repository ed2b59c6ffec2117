//! Meridian's webhooks, sent the way a real aggregator sends them. Each time the world
//! moves to a new epoch, Meridian tells the URL registered with it, once per user with a
//! live grant, that new data is available: a `SYNC_UPDATES_AVAILABLE` event naming the
//! user's accounts, signed with HMAC-SHA256 over `"<timestamp>.<body>"`:
//!
//! ```text
//! POST <url>
//! Meridian-Timestamp: 1764892800
//! Meridian-Signature: v1=<hex>
//!
//! {"webhook_id":"mer_whk_…","webhook_type":"TRANSACTIONS","webhook_code":"SYNC_UPDATES_AVAILABLE",
//!  "user_id":"demo-alice","account_ids":["mer_acc_…"],"epoch":4,"sent_at":"2026-12-04T12:00:00Z"}
//! ```
//!
//! Delivery is at least once: a POST that fails with a 5xx or no answer is sent again,
//! same event id, new timestamp and signature, up to three times. The admin endpoints
//! register the URL and fire an event by hand, and list what was sent.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use backon::{ExponentialBuilder, Retryable};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use hmac::{Hmac, KeyInit, Mac};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::Sha256;
use tokio::sync::watch;

use super::{AppState, Institution};

/// Deliveries remembered for the admin listing.
const REMEMBERED: usize = 200;
/// POSTs per event at most (the first included).
const ATTEMPTS: usize = 3;
/// Users notified at once after an epoch moves.
const CONCURRENT: usize = 8;
/// The event an epoch sends.
const SYNC_UPDATES_AVAILABLE: &str = "SYNC_UPDATES_AVAILABLE";

/// One event Meridian sent (or tried to), for the admin listing and tests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SentWebhook {
    pub webhook_id: String,
    pub user_id: String,
    pub code: String,
    pub epoch: u32,
    /// POSTs made, retries and repeats included.
    pub attempts: u32,
    /// The last answer's status; `None` when nothing answered.
    pub status: Option<u16>,
    pub sent_at: DateTime<Utc>,
}

/// Where an institution sends its webhooks, with what secret, and what it sent.
#[derive(Debug)]
pub(super) struct Notifier {
    secret: SecretString,
    url: RwLock<Option<String>>,
    sent: Mutex<VecDeque<SentWebhook>>,
    http: reqwest::Client,
}

impl Notifier {
    pub(super) fn new(secret: SecretString, url: Option<String>) -> Self {
        Self {
            secret,
            url: RwLock::new(url),
            sent: Mutex::new(VecDeque::new()),
            http: crate::http::client(),
        }
    }

    pub(super) fn url(&self) -> Option<String> {
        self.url
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(super) fn set_url(&self, url: Option<String>) {
        *self.url.write().unwrap_or_else(PoisonError::into_inner) = url;
    }

    pub(super) fn sent(&self) -> Vec<SentWebhook> {
        self.sent
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .cloned()
            .collect()
    }

    /// Sends one event to the registered URL `repeat` times (1: once, as normal;
    /// more: as an institution that delivers twice would), each delivery retried
    /// on failure. Returns `None` when no URL is registered.
    async fn send(
        &self,
        user_id: &str,
        code: &str,
        account_ids: &[String],
        epoch: u32,
        repeat: u32,
    ) -> Option<SentWebhook> {
        let url = self.url()?;
        let webhook_id = format!("mer_whk_{}", uuid::Uuid::new_v4().simple());
        let mut record = SentWebhook {
            webhook_id: webhook_id.clone(),
            user_id: user_id.to_owned(),
            code: code.to_owned(),
            epoch,
            attempts: 0,
            status: None,
            sent_at: Utc::now(),
        };
        let body = json!({
            "webhook_id": webhook_id,
            "webhook_type": "TRANSACTIONS",
            "webhook_code": code,
            "user_id": user_id,
            "account_ids": account_ids,
            "epoch": epoch,
            "sent_at": record.sent_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        })
        .to_string();
        let attempts = std::sync::atomic::AtomicU32::new(0);
        for _ in 0..repeat.max(1) {
            let attempt = || async {
                attempts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                self.post(&url, &body).await
            };
            let answered = attempt
                .retry(
                    ExponentialBuilder::default()
                        .with_min_delay(Duration::from_millis(200))
                        .with_max_times(ATTEMPTS - 1)
                        .with_jitter(),
                )
                .when(|status: &Option<u16>| status.is_none_or(|s| s >= 500))
                .await;
            record.status = match answered {
                Ok(status) | Err(status) => status,
            };
        }
        record.attempts = attempts.into_inner();
        tracing::info!(webhook = %record.webhook_id, user = %user_id, code, status = ?record.status, "Sandbox webhook sent.");
        let mut sent = self.sent.lock().unwrap_or_else(PoisonError::into_inner);
        if sent.len() == REMEMBERED {
            sent.pop_front();
        }
        sent.push_back(record.clone());
        Some(record)
    }

    /// One POST with a fresh timestamp and signature: `Ok` with a 2xx–4xx status,
    /// `Err` with a 5xx or none, which is worth trying again.
    async fn post(&self, url: &str, body: &str) -> Result<Option<u16>, Option<u16>> {
        let timestamp = Utc::now().timestamp().to_string();
        let mut mac = Hmac::<Sha256>::new_from_slice(self.secret.expose_secret().as_bytes())
            .expect("HMAC accepts keys of any length");
        mac.update(timestamp.as_bytes());
        mac.update(b".");
        mac.update(body.as_bytes());
        // Signed with hmac directly, not finsync's helper: the sandbox plays the
        // institution, and a separate implementation cross-checks finsync's check.
        let signature = format!("v1={}", hex::encode(mac.finalize().into_bytes()));
        let answer = self
            .http
            .post(url)
            .header("Meridian-Timestamp", timestamp)
            .header("Meridian-Signature", signature)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .timeout(Duration::from_secs(10))
            .body(body.to_owned())
            .send()
            .await;
        match answer.map(|r| r.status().as_u16()) {
            Ok(status) if status < 500 => Ok(Some(status)),
            Ok(status) => Err(Some(status)),
            Err(_) => Err(None),
        }
    }
}

/// Notifies every user with a live grant at each institution that sends webhooks,
/// each time the world moves; runs alongside the server.
pub(super) async fn run(app: Arc<AppState>, mut moved: watch::Receiver<u32>) {
    while moved.changed().await.is_ok() {
        let epoch = *moved.borrow_and_update();
        for institution in Institution::ALL {
            let Some(notifier) = app.notifier(institution) else {
                continue;
            };
            if notifier.url().is_none() {
                continue;
            }
            let users = app.grants(institution).users();
            futures::stream::iter(users)
                .for_each_concurrent(CONCURRENT, |user| {
                    let (app, notifier) = (&app, &notifier);
                    async move {
                        let accounts = account_ids(app, institution, &user);
                        notifier
                            .send(&user, SYNC_UPDATES_AVAILABLE, &accounts, epoch, 1)
                            .await;
                    }
                })
                .await;
        }
    }
}

fn account_ids(app: &AppState, institution: Institution, user: &str) -> Vec<String> {
    app.portfolio(institution, user)
        .accounts
        .into_iter()
        .map(|a| a.account_id)
        .collect()
}

pub(super) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route(
            "/sandbox/admin/webhooks/{institution}",
            get(describe).put(register).delete(unregister),
        )
        .route("/sandbox/admin/webhooks/{institution}/fire", post(fire))
}

fn problem(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

/// The notifier of the institution a path names: 404 for an unknown one or one
/// that sends no webhooks.
fn notifier(app: &AppState, id: &str) -> Result<(Institution, Arc<Notifier>), Box<Response>> {
    let institution = id
        .parse::<Institution>()
        .map_err(|e| Box::new(problem(StatusCode::NOT_FOUND, e.to_string())))?;
    let notifier = app.notifier(institution).ok_or_else(|| {
        Box::new(problem(
            StatusCode::NOT_FOUND,
            format!(
                "{} sends no webhooks; only meridian does",
                institution.name()
            ),
        ))
    })?;
    Ok((institution, notifier))
}

async fn describe(State(app): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    match notifier(&app, &id) {
        Ok((_, notifier)) => {
            Json(json!({ "url": notifier.url(), "sent": notifier.sent() })).into_response()
        }
        Err(response) => *response,
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Registration {
    url: String,
}

async fn register(
    State(app): State<Arc<AppState>>,
    Path(id): Path<String>,
    body: Result<Json<Registration>, JsonRejection>,
) -> Response {
    let (institution, notifier) = match notifier(&app, &id) {
        Ok(found) => found,
        Err(response) => return *response,
    };
    let Json(registration) = match body {
        Ok(body) => body,
        Err(rejection) => return problem(StatusCode::BAD_REQUEST, rejection.body_text()),
    };
    match url::Url::parse(&registration.url) {
        Ok(url) if matches!(url.scheme(), "http" | "https") => {}
        _ => {
            return problem(
                StatusCode::BAD_REQUEST,
                format!("`{}` is not an http(s) URL", registration.url),
            );
        }
    }
    tracing::info!(%institution, url = %registration.url, "Sandbox webhook URL registered.");
    notifier.set_url(Some(registration.url.clone()));
    Json(json!({ "url": registration.url })).into_response()
}

async fn unregister(State(app): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    match notifier(&app, &id) {
        Ok((_, notifier)) => {
            notifier.set_url(None);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(response) => *response,
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Fire {
    user: String,
    /// Defaults to `SYNC_UPDATES_AVAILABLE`.
    code: Option<String>,
    /// Deliver the same event this many times (1 to 5), as an institution that
    /// delivers twice would.
    #[serde(default = "once")]
    repeat: u32,
}

fn once() -> u32 {
    1
}

async fn fire(
    State(app): State<Arc<AppState>>,
    Path(id): Path<String>,
    body: Result<Json<Fire>, JsonRejection>,
) -> Response {
    let (institution, notifier) = match notifier(&app, &id) {
        Ok(found) => found,
        Err(response) => return *response,
    };
    let Json(fire) = match body {
        Ok(body) => body,
        Err(rejection) => return problem(StatusCode::BAD_REQUEST, rejection.body_text()),
    };
    if !(1..=5).contains(&fire.repeat) {
        return problem(StatusCode::BAD_REQUEST, "`repeat` must be 1 to 5");
    }
    let accounts = account_ids(&app, institution, &fire.user);
    let code = fire.code.as_deref().unwrap_or(SYNC_UPDATES_AVAILABLE);
    match notifier
        .send(&fire.user, code, &accounts, app.world.epoch(), fire.repeat)
        .await
    {
        Some(sent) => Json(sent).into_response(),
        None => problem(
            StatusCode::CONFLICT,
            format!(
                "no webhook URL is registered with {}: PUT one first",
                institution.name()
            ),
        ),
    }
}
