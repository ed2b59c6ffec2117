//! `GET /status`: the operators' page ([`crate::status`]), server-rendered with no
//! script and nothing from elsewhere, refreshing itself. Behind a sign-in: the form
//! exchanges the admin token for a session cookie (HttpOnly, SameSite=Strict,
//! scoped to `/status`, [`SESSION`] long) whose value is its expiry signed with the
//! admin token, so changing the token ends every session. Forms carry a token
//! derived from the session (or, on the sign-in form, a double-submitted cookie).
//! From the page an operator can queue a sync of a failing connection.

use askama::Template;
use axum::Router;
use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use rand::RngExt;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::ApiState;
use super::extract::Path;
use super::link_page::{Message, cookie, html};
use crate::directory::Health;
use crate::domain::{ConnectionId, ConnectionStatus};
use crate::store::StoreError;
use crate::sync::SyncConnection;

/// How long a sign-in lasts.
pub const SESSION: chrono::Duration = chrono::Duration::minutes(30);
const SESSION_COOKIE: &str = "finsync_status";
const LOGIN_COOKIE: &str = "finsync_status_login";
const REFRESH_SECS: u32 = 30;

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/status", get(page))
        .route("/status/login", post(login))
        .route("/status/logout", post(logout))
        .route("/status/connections/{connection_id}/sync", post(sync_now))
}

#[derive(Template)]
#[template(path = "status/login.html")]
struct Login {
    title: &'static str,
    csrf: String,
    problem: Option<&'static str>,
    session_minutes: i64,
}

#[derive(Template)]
#[template(path = "status/page.html")]
struct Page {
    title: &'static str,
    as_of: String,
    refresh_secs: u32,
    csrf: String,
    notice: Option<String>,
    queue_depth: String,
    oldest_job: String,
    open_quarantine: u64,
    failed_deliveries: u64,
    institutions: Vec<InstitutionLine>,
    failing: Vec<FailingLine>,
}

struct InstitutionLine {
    id: String,
    name: String,
    health: &'static str,
    syncs: usize,
    success: String,
    p95: String,
    active: usize,
    failing: usize,
    needs_user: usize,
    open_quarantine: u64,
}

struct FailingLine {
    since: String,
    institution: String,
    connection_id: String,
    code: String,
    message: String,
}

#[derive(Debug, Deserialize)]
struct PageQuery {
    queued: Option<String>,
}

#[derive(Debug, Deserialize)]
struct LoginForm {
    csrf: String,
    token: String,
}

#[derive(Debug, Deserialize)]
struct ActionForm {
    csrf: String,
}

async fn page(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Query(query): Query<PageQuery>,
) -> Response {
    let Some(admin) = state.admin_token.clone() else {
        return disabled();
    };
    let Some(session) = signed_in(&headers, &admin) else {
        return login_page(&state, StatusCode::OK, None);
    };
    let overview = match crate::status::overview(&state.env.store, state.catalog.registry()).await {
        Ok(overview) => overview,
        Err(error) => return super::link_page::trouble(error),
    };
    let queue_depth = match state.env.queue.depth().await {
        Ok(depth) => depth.to_string(),
        Err(_) => "unknown".into(),
    };
    let oldest_job = match state.env.queue.oldest_due_age(Utc::now()).await {
        Ok(age) => {
            humantime::format_duration(std::time::Duration::from_secs(age.as_secs())).to_string()
        }
        Err(_) => "unknown".into(),
    };
    let institutions = overview
        .institutions
        .iter()
        .map(|i| InstitutionLine {
            id: i.id.clone(),
            name: i.name.clone(),
            health: match i.health {
                Health::Ok => "ok",
                Health::Degraded => "degraded",
                Health::Down => "down",
            },
            syncs: i.syncs,
            success: i
                .success_rate()
                .map_or_else(|| "–".into(), |r| format!("{:.1} %", r * 100.0)),
            p95: i
                .p95
                .map_or_else(|| "–".into(), |d| format!("{:.2} s", d.as_secs_f64())),
            active: i.active,
            failing: i.failing,
            needs_user: i.needs_user,
            open_quarantine: i.open_quarantine,
        })
        .collect();
    let failing = overview
        .failing
        .iter()
        .map(|f| FailingLine {
            since: when(f.since),
            institution: f.institution.clone(),
            connection_id: f.connection_id.clone(),
            code: f.code.clone(),
            message: f.message.clone(),
        })
        .collect();
    html(
        StatusCode::OK,
        &Page {
            title: "Fleet status",
            as_of: when(overview.as_of),
            refresh_secs: REFRESH_SECS,
            csrf: csrf_of(&admin, &session),
            notice: query
                .queued
                .filter(|id| id.parse::<ConnectionId>().is_ok())
                .map(|id| format!("A sync of connection {id} is queued.")),
            queue_depth,
            oldest_job,
            open_quarantine: overview.open_quarantine,
            failed_deliveries: overview.failed_deliveries,
            institutions,
            failing,
        },
    )
}

async fn login(
    State(state): State<ApiState>,
    headers: HeaderMap,
    form: Result<Form<LoginForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let Some(admin) = state.admin_token.clone() else {
        return disabled();
    };
    let Ok(Form(form)) = form else {
        return login_page(
            &state,
            StatusCode::BAD_REQUEST,
            Some("The form arrived incomplete; try again."),
        );
    };
    // The sign-in form's token must match the cookie set with it: another site
    // cannot sign a browser in.
    let sent = cookie(&headers, LOGIN_COOKIE).unwrap_or_default();
    if sent.is_empty() || !crate::fingerprint::same(&sent, &form.csrf) {
        return login_page(
            &state,
            StatusCode::FORBIDDEN,
            Some("The form has expired; try again."),
        );
    }
    if !crate::fingerprint::same_secret(admin.expose_secret(), &form.token) {
        tracing::warn!("A sign-in to the status page was refused.");
        return login_page(
            &state,
            StatusCode::UNAUTHORIZED,
            Some("That is not the admin token."),
        );
    }
    let expires = Utc::now() + SESSION;
    let value = session_value(&admin, expires.timestamp());
    tracing::info!("An operator signed in to the status page.");
    let mut response = Redirect::to("/status").into_response();
    set_cookie(
        &mut response,
        SESSION_COOKIE,
        &value,
        SESSION.num_seconds(),
        &state,
    );
    set_cookie(&mut response, LOGIN_COOKIE, "", 0, &state);
    response
}

async fn logout(
    State(state): State<ApiState>,
    headers: HeaderMap,
    form: Result<Form<ActionForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    if let Err(refused) = checked(&state, &headers, form.ok().map(|f| f.0.csrf)) {
        return *refused;
    }
    let mut response = Redirect::to("/status").into_response();
    set_cookie(&mut response, SESSION_COOKIE, "", 0, &state);
    response
}

/// Queues a sync of one connection now (a failing one, usually).
async fn sync_now(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(raw): Path<String>,
    form: Result<Form<ActionForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    if let Err(refused) = checked(&state, &headers, form.ok().map(|f| f.0.csrf)) {
        return *refused;
    }
    let Ok(id) = raw.parse::<ConnectionId>() else {
        return html(
            StatusCode::NOT_FOUND,
            &Message::new("No such connection", &[&raw]),
        );
    };
    match state.env.store.connection(id).await {
        Ok(c) if c.status == ConnectionStatus::Active => {}
        Ok(c) => {
            return html(
                StatusCode::CONFLICT,
                &Message::new(
                    "This connection does not sync",
                    &[&format!(
                        "It is {}: only an active connection syncs.",
                        c.status
                    )],
                ),
            );
        }
        Err(StoreError::NotFound(_)) => {
            return html(
                StatusCode::NOT_FOUND,
                &Message::new("No such connection", &[&raw]),
            );
        }
        Err(error) => return super::link_page::trouble(error),
    }
    let job = SyncConnection {
        connection_id: id,
        idempotency_key: format!("status:{id}:{}", uuid::Uuid::new_v4()),
    };
    match state.env.queue.enqueue(job).await {
        Ok(_) => {
            tracing::info!(connection = %id, "An operator queued a sync from the status page.");
            Redirect::to(&format!("/status?queued={id}")).into_response()
        }
        Err(error) => super::link_page::trouble(error),
    }
}

/// The signed-in session, if the form came from its page.
fn checked(
    state: &ApiState,
    headers: &HeaderMap,
    csrf: Option<String>,
) -> Result<String, Box<Response>> {
    let Some(admin) = &state.admin_token else {
        return Err(Box::new(disabled()));
    };
    let Some(session) = signed_in(headers, admin) else {
        return Err(Box::new(Redirect::to("/status").into_response()));
    };
    match csrf {
        Some(csrf) if crate::fingerprint::same(&csrf_of(admin, &session), &csrf) => Ok(session),
        _ => Err(Box::new(html(
            StatusCode::FORBIDDEN,
            &Message::new(
                "This form has expired",
                &["Reload the status page and try again."],
            )
            .alert(),
        ))),
    }
}

/// The session cookie's value, if it is one this admin token signed and has not
/// expired.
fn signed_in(headers: &HeaderMap, admin: &SecretString) -> Option<String> {
    let value = cookie(headers, SESSION_COOKIE)?;
    let (expires, _) = value.split_once('.')?;
    let expires: i64 = expires.parse().ok()?;
    (expires > Utc::now().timestamp()
        && crate::fingerprint::same(&session_value(admin, expires), &value))
    .then_some(value)
}

fn session_value(admin: &SecretString, expires: i64) -> String {
    let mac = crate::fingerprint::hmac_sha256(
        admin,
        &[b"status-session:", expires.to_string().as_bytes()],
    );
    format!(
        "{expires}.{}",
        hex::encode(hmac::Mac::finalize(mac).into_bytes())
    )
}

fn csrf_of(admin: &SecretString, session: &str) -> String {
    let mac = crate::fingerprint::hmac_sha256(admin, &[b"status-csrf:", session.as_bytes()]);
    hex::encode(hmac::Mac::finalize(mac).into_bytes())
}

fn login_page(state: &ApiState, status: StatusCode, problem: Option<&'static str>) -> Response {
    let bytes: [u8; 32] = rand::rng().random();
    let csrf = hex::encode(bytes);
    let mut response = html(
        status,
        &Login {
            title: "Sign in",
            csrf: csrf.clone(),
            problem,
            session_minutes: SESSION.num_minutes(),
        },
    );
    let cookie = cookie::Cookie::build((LOGIN_COOKIE, csrf))
        .path("/status")
        .http_only(true)
        .secure(state.linker.link_base.scheme() == "https")
        .same_site(cookie::SameSite::Strict)
        .max_age(cookie::time::Duration::minutes(30))
        .build();
    if let Ok(value) = HeaderValue::from_str(&cookie.to_string()) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

fn set_cookie(
    response: &mut Response,
    name: &'static str,
    value: &str,
    max_age: i64,
    state: &ApiState,
) {
    let cookie = cookie::Cookie::build((name, value.to_owned()))
        .path("/status")
        .http_only(true)
        .secure(state.linker.link_base.scheme() == "https")
        .same_site(cookie::SameSite::Strict)
        .max_age(cookie::time::Duration::seconds(max_age))
        .build();
    if let Ok(value) = HeaderValue::from_str(&cookie.to_string()) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
}

fn disabled() -> Response {
    html(
        StatusCode::NOT_FOUND,
        &Message::new(
            "The status page is off",
            &["It signs in with the admin token: set server.admin_token to turn it on."],
        ),
    )
}

fn when(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}
