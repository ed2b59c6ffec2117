//! The example app `finsync demo` serves at `/example-app`: a minimal advisory app,
//! written the way an app's backend would use finsync, over HTTP with its API key
//! only. It registers its webhook endpoint through the tenant API, opens a link
//! session when its user asks to connect an account, sends the browser to the
//! session's link URL, and on the way back confirms the outcome with
//! `GET /v1/link-sessions/{id}` (the query string is only a hint) and shows the
//! user's portfolio. Webhooks it receives are checked against their signature
//! and listed on its page. The README's "Link your users" guide walks through it.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, OnceLock};

use anyhow::Context as _;
use askama::Template;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use chrono::Utc;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::webhooks::outbound::{SIGNATURE_HEADER, verify};

/// Webhooks kept for the page, newest first.
const KEPT_EVENTS: usize = 20;
/// How old a webhook's signature may be.
const SIGNATURE_TOLERANCE: std::time::Duration = std::time::Duration::from_secs(300);

/// The app's own state: its key, its webhook secret, what it has heard.
pub struct ExampleApp {
    /// finsync's API, e.g. `http://127.0.0.1:8080/`.
    api: url::Url,
    key: SecretString,
    /// Where this app is served, e.g. `http://127.0.0.1:8080/example-app/`.
    base: url::Url,
    /// The webhook signing secret, once the endpoint is registered.
    secret: OnceLock<SecretString>,
    events: Mutex<VecDeque<Heard>>,
    http: reqwest::Client,
}

/// A webhook the app received and verified.
#[derive(Clone)]
struct Heard {
    event: String,
    summary: String,
}

impl ExampleApp {
    /// The URL the tenant must register as a redirect URI for this app.
    pub fn return_url(base: &url::Url) -> anyhow::Result<url::Url> {
        Ok(base.join("return")?)
    }

    /// The app and its routes, to be served at `base`.
    pub fn new(api: url::Url, key: SecretString, base: url::Url) -> (Arc<Self>, Router) {
        let app = Arc::new(Self {
            api,
            key,
            secret: OnceLock::new(),
            events: Mutex::new(VecDeque::new()),
            http: crate::http::client(),
            base: base.clone(),
        });
        // Full paths: the app's own address ends in a slash, which a nested
        // router's "/" would not match.
        let at = base.path().trim_end_matches('/');
        let routes = Router::new()
            .route(&format!("{at}/"), get(home))
            .route(&format!("{at}/connect"), post(connect))
            .route(&format!("{at}/return"), get(returned))
            .route(&format!("{at}/webhooks"), post(webhook))
            .with_state(app.clone());
        (app, routes)
    }

    /// Registers the app's webhook endpoint through finsync's API, once finsync
    /// serves it, replacing those earlier runs left on this machine (the demo's
    /// port may change from run to run).
    pub async fn register_webhooks(&self) -> anyhow::Result<()> {
        let hooks = self.base.join("webhooks")?;
        let mut cursor: Option<String> = None;
        let mut stale = Vec::new();
        loop {
            let mut url = self.api.join("v1/webhooks")?;
            if let Some(cursor) = &cursor {
                url.query_pairs_mut().append_pair("cursor", cursor);
            }
            let page = self
                .call(self.http.get(url))
                .await
                .context("listing the app's webhook endpoints")?;
            for old in page["webhooks"].as_array().into_iter().flatten() {
                let url = old["url"].as_str().and_then(|u| url::Url::parse(u).ok());
                let ours = url.is_some_and(|u| {
                    u.path() == hooks.path()
                        && matches!(u.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"))
                });
                if ours && old["disabled_at"].is_null() {
                    stale.push(old["id"].as_str().unwrap_or_default().to_owned());
                }
            }
            cursor = page["next_cursor"].as_str().map(str::to_owned);
            if cursor.is_none() {
                break;
            }
        }
        for id in stale {
            self.call(
                self.http
                    .delete(self.api.join(&format!("v1/webhooks/{id}"))?),
            )
            .await
            .context("removing an earlier run's webhook endpoint")?;
        }
        let registered = self
            .call(
                self.http.post(self.api.join("v1/webhooks")?).json(
                    &json!({ "url": hooks, "events": ["connection.linked", "sync.completed"] }),
                ),
            )
            .await
            .context("registering the app's webhook endpoint")?;
        let secret = registered["secret"]
            .as_str()
            .context("the registered endpoint has no secret")?;
        // Registered once per run; a second call keeps the first secret.
        let _ = self.secret.set(SecretString::from(secret.to_owned()));
        Ok(())
    }

    fn heard(&self) -> Vec<Heard> {
        self.events
            .lock()
            .map(|e| e.iter().cloned().collect())
            .unwrap_or_default()
    }

    async fn call(&self, request: reqwest::RequestBuilder) -> anyhow::Result<Value> {
        let response = request.bearer_auth(self.key.expose_secret()).send().await?;
        let status = response.status();
        if status == StatusCode::NO_CONTENT {
            return Ok(Value::Null);
        }
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            anyhow::bail!(
                "finsync answered {status}: {}",
                body["error"]["message"].as_str().unwrap_or("no message")
            );
        }
        Ok(body)
    }
}

#[derive(Template)]
#[template(path = "example_app/home.html")]
struct Home {
    base: String,
    heard: Vec<Heard>,
    problem: Option<String>,
}

#[derive(Template)]
#[template(path = "example_app/returned.html")]
struct Returned {
    base: String,
    user: String,
    status: String,
    connection: Option<String>,
    error: Option<String>,
    accounts: Vec<AccountLine>,
    syncing: bool,
    heard: Vec<Heard>,
}

struct AccountLine {
    name: String,
    kind: String,
    balance: String,
}

fn page(template: &impl Template, status: StatusCode) -> Response {
    match template.render() {
        Ok(body) => (status, Html(body)).into_response(),
        Err(error) => (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()).into_response(),
    }
}

async fn home(State(app): State<Arc<ExampleApp>>) -> Response {
    page(
        &Home {
            base: app.base.to_string(),
            heard: app.heard(),
            problem: None,
        },
        StatusCode::OK,
    )
}

#[derive(Deserialize)]
struct ConnectForm {
    user_id: String,
}

/// The app's backend opens a link session and sends the browser to it.
async fn connect(State(app): State<Arc<ExampleApp>>, Form(form): Form<ConnectForm>) -> Response {
    let created = async {
        let request = app
            .http
            .post(app.api.join("v1/link-sessions")?)
            .header("Idempotency-Key", uuid::Uuid::new_v4().to_string())
            .json(&json!({
                "user_id": form.user_id.trim(),
                "redirect_uri": ExampleApp::return_url(&app.base)?,
            }));
        app.call(request).await
    }
    .await;
    match created.map(|c| c["link_url"].as_str().map(str::to_owned)) {
        Ok(Some(link_url)) => Redirect::to(&link_url).into_response(),
        Ok(None) => problem(&app, "finsync's answer had no link_url".into()),
        Err(error) => problem(&app, error.to_string()),
    }
}

fn problem(app: &ExampleApp, message: String) -> Response {
    page(
        &Home {
            base: app.base.to_string(),
            heard: app.heard(),
            problem: Some(message),
        },
        StatusCode::BAD_GATEWAY,
    )
}

#[derive(Deserialize)]
struct ReturnQuery {
    link_session_id: String,
}

/// The user is back: the app asks finsync how the session ended, then shows the
/// portfolio.
async fn returned(
    State(app): State<Arc<ExampleApp>>,
    Query(query): Query<ReturnQuery>,
) -> Response {
    let shown = async {
        let id = uuid::Uuid::parse_str(&query.link_session_id)?;
        let session = app
            .call(
                app.http
                    .get(app.api.join(&format!("v1/link-sessions/{id}"))?),
            )
            .await?;
        let user = session["user_id"].as_str().unwrap_or_default().to_owned();
        let status = session["status"].as_str().unwrap_or_default().to_owned();
        let mut accounts = Vec::new();
        let mut syncing = false;
        if matches!(status.as_str(), "linked" | "repaired") {
            let mut url = app.api.clone();
            url.path_segments_mut()
                .map_err(|()| anyhow::anyhow!("finsync's address cannot take a path"))?
                .pop_if_empty()
                .extend(["v1", "users", &user, "portfolio"]);
            let p = app.call(app.http.get(url)).await?;
            for a in p["accounts"].as_array().into_iter().flatten() {
                let current = &a["balances"]["current"];
                accounts.push(AccountLine {
                    name: a["name"].as_str().unwrap_or_default().to_owned(),
                    kind: a["type"].as_str().unwrap_or_default().to_owned(),
                    balance: format!(
                        "{} {}",
                        current["amount"].as_str().unwrap_or("?"),
                        current["currency"].as_str().unwrap_or("")
                    ),
                });
            }
            // The first sync has not finished yet: the page refreshes until it has.
            syncing =
                accounts.is_empty() && p["freshness"]["reason"].as_str() == Some("SYNC_PENDING");
        }
        anyhow::Ok(Returned {
            base: app.base.to_string(),
            user,
            status,
            connection: session["connection_id"].as_str().map(str::to_owned),
            error: session["error"].as_str().map(str::to_owned),
            accounts,
            syncing,
            heard: app.heard(),
        })
    }
    .await;
    match shown {
        Ok(view) => page(&view, StatusCode::OK),
        Err(error) => problem(&app, error.to_string()),
    }
}

/// A webhook from finsync: kept only if its signature verifies.
async fn webhook(
    State(app): State<Arc<ExampleApp>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let signature = headers
        .get(SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let Some(secret) = app.secret.get() else {
        return StatusCode::SERVICE_UNAVAILABLE;
    };
    if verify(secret, signature, &body, Utc::now(), SIGNATURE_TOLERANCE).is_err() {
        return StatusCode::UNAUTHORIZED;
    }
    let Ok(payload) = serde_json::from_slice::<Value>(&body) else {
        return StatusCode::BAD_REQUEST;
    };
    let data = &payload["data"];
    let heard = Heard {
        event: payload["type"].as_str().unwrap_or_default().to_owned(),
        summary: format!(
            "user {} · {} · connection {}",
            data["user_id"].as_str().unwrap_or("?"),
            data["institution"].as_str().unwrap_or("?"),
            data["connection_id"].as_str().unwrap_or("?"),
        ),
    };
    if let Ok(mut events) = app.events.lock() {
        events.push_front(heard);
        events.truncate(KEPT_EVENTS);
    }
    StatusCode::NO_CONTENT
}
