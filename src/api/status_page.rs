//! `GET /status`: the operators' page ([`crate::status`]), server-rendered with no
//! script and nothing from elsewhere, refreshing itself. Behind a sign-in: the form
//! exchanges an `admin` or `operator` credential (or the break-glass token) for a
//! session cookie (HttpOnly, SameSite=Strict, scoped to `/status`, [`SESSION`]
//! long) holding a random token; the session itself is kept in the database
//! ([`crate::store::StatusSession`]), so signing out ends it for any copy of the
//! cookie. Every request also checks that the credential is still live, so
//! revoking it (or changing the break-glass token) ends its sessions at once. Forms carry a token derived from the session (or, on the sign-in form, a
//! double-submitted cookie). From the page an operator can queue a sync of a
//! failing connection. Sign-ins, sign-outs and queued syncs are audited.

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
use crate::store::{Actor, AuditEntry, FleetBreaker, Outcome, Role, StoreError};
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
    signed_in_as: String,
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
    /// The fleet's breakers in words ("open in 2 of 3 workers").
    breakers: String,
    breakers_open: bool,
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
    credential: String,
}

/// Who a session cookie says signed in, checked against what is live now.
struct Session {
    /// The cookie's value, which the forms' token is derived from.
    value: String,
    actor: Actor,
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
    let session = match signed_in(&state, &headers).await {
        Ok(Some(session)) => session,
        Ok(None) => return login_page(&state, StatusCode::OK, None),
        Err(error) => return super::link_page::trouble(error),
    };
    let overview = match crate::status::overview(
        &state.env.store,
        state.catalog.registry(),
        state.breaker_window,
    )
    .await
    {
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
            breakers: breakers_text(&i.breakers),
            breakers_open: i.breakers.open > 0,
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
            csrf: csrf_of(&state, &session.value),
            signed_in_as: session.actor.to_string(),
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
    let credential = form.credential.trim();
    let (actor, role) = match super::auth::identify(&state, credential).await {
        Ok(found) => found,
        Err(error) if error.code == super::ErrorCode::Unauthorized => {
            tracing::warn!("A sign-in to the status page was refused.");
            return login_page(
                &state,
                StatusCode::UNAUTHORIZED,
                Some("That is not a live admin or operator credential."),
            );
        }
        Err(_) => return super::link_page::trouble("the database could not be asked"),
    };
    let audit = AuditEntry::new(actor.clone(), "status.sign_in");
    if role == Role::Auditor {
        record(&state, audit.outcome(Outcome::Denied)).await;
        return login_page(
            &state,
            StatusCode::FORBIDDEN,
            Some("Auditors read the audit trail only; the status page is for operators."),
        );
    }
    let expires = Utc::now() + SESSION;
    let Some(binding) = binding_of(&state, &actor, Some(credential)).await else {
        return super::link_page::trouble("the credential changed while signing in");
    };
    let value = match state
        .env
        .store
        .open_status_session(actor.as_str(), &binding, expires)
        .await
    {
        Ok(token) => token.expose_secret().to_owned(),
        Err(error) => return super::link_page::trouble(error),
    };
    record(&state, audit).await;
    tracing::info!(actor = %actor, "Signed in to the status page.");
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

/// Appends `entry` to the audit trail; a failure is logged, the page goes on.
async fn record(state: &ApiState, entry: AuditEntry) {
    if let Err(e) = state.env.store.record(entry).await {
        state.env.store.note(&e);
        tracing::error!(error = %e, "Status page action not audited.");
    }
}

async fn logout(
    State(state): State<ApiState>,
    headers: HeaderMap,
    form: Result<Form<ActionForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let session = match checked(&state, &headers, form.ok().map(|f| f.0.csrf)).await {
        Ok(session) => session,
        Err(refused) => return *refused,
    };
    if let Err(error) = state
        .env
        .store
        .end_status_session(&SecretString::from(session.value))
        .await
    {
        return super::link_page::trouble(error);
    }
    record(&state, AuditEntry::new(session.actor, "status.sign_out")).await;
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
    let session = match checked(&state, &headers, form.ok().map(|f| f.0.csrf)).await {
        Ok(session) => session,
        Err(refused) => return *refused,
    };
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
            let audit = AuditEntry::new(session.actor.clone(), "status.sync_now")
                .target(format!("connection:{id}"));
            record(&state, audit).await;
            tracing::info!(connection = %id, actor = %session.actor, "A sync was queued from the status page.");
            Redirect::to(&format!("/status?queued={id}")).into_response()
        }
        Err(error) => super::link_page::trouble(error),
    }
}

/// The signed-in session, if the form came from its page.
async fn checked(
    state: &ApiState,
    headers: &HeaderMap,
    csrf: Option<String>,
) -> Result<Session, Box<Response>> {
    let session = match signed_in(state, headers).await {
        Ok(Some(session)) => session,
        Ok(None) => return Err(Box::new(Redirect::to("/status").into_response())),
        Err(error) => return Err(Box::new(super::link_page::trouble(error))),
    };
    match csrf {
        Some(csrf) if crate::fingerprint::same(&csrf_of(state, &session.value), &csrf) => {
            Ok(session)
        }
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

/// The session the cookie holds, if it is live (not signed out, not expired) and
/// its credential still is, with a role that may see the page.
async fn signed_in(state: &ApiState, headers: &HeaderMap) -> Result<Option<Session>, StoreError> {
    let Some(value) = cookie(headers, SESSION_COOKIE) else {
        return Ok(None);
    };
    let Some(session) = state.env.store.status_session(&value).await? else {
        return Ok(None);
    };
    let actor = if session.actor == Actor::break_glass().as_str() {
        Actor::break_glass()
    } else if let Some(name) = session.actor.strip_prefix("admin:") {
        match state.env.store.admin_named(name).await? {
            Some(admin) if admin.revoked_at.is_none() && admin.role != Role::Auditor => {
                Actor::admin(name)
            }
            _ => return Ok(None),
        }
    } else {
        return Ok(None);
    };
    // What the credential is now: a changed break-glass token no longer matches
    // what the session was opened with.
    let now = binding_of(state, &actor, None).await;
    Ok(now
        .filter(|now| crate::fingerprint::same(now, &session.binding))
        .map(|_| Session { value, actor }))
}

/// What ties a session to the credential it was made with: the admin's credential
/// prefix, or a hash of the break-glass token (`presented` at sign-in; the
/// configured one afterwards).
async fn binding_of(state: &ApiState, actor: &Actor, presented: Option<&str>) -> Option<String> {
    if *actor == Actor::break_glass() {
        let token = match presented {
            Some(presented) => presented.to_owned(),
            None => state.admin_token.as_ref()?.expose_secret().to_owned(),
        };
        // Keyed: the table must not hold a guessable hash of a credential.
        return state
            .linker
            .vault
            .keyed_hash("status-break-glass", &token)
            .ok();
    }
    let name = actor.as_str().strip_prefix("admin:")?;
    let admin = state.env.store.admin_named(name).await.ok()??;
    Some(admin.prefix)
}

fn csrf_of(state: &ApiState, session: &str) -> String {
    state
        .linker
        .vault
        .keyed_hash("status-csrf", session)
        .unwrap_or_default()
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

fn breakers_text(fleet: &crate::store::FleetBreaker) -> String {
    let workers = |n: u32| if n == 1 { "worker" } else { "workers" };
    let mut text = match *fleet {
        FleetBreaker { processes: 0, .. } => return "no worker reported".to_owned(),
        FleetBreaker {
            open, processes, ..
        } if open > 0 => format!("open in {open} of {processes} {}", workers(processes)),
        FleetBreaker {
            half_open,
            processes,
            ..
        } if half_open > 0 => {
            format!(
                "half-open in {half_open} of {processes} {}",
                workers(processes)
            )
        }
        FleetBreaker { processes, .. } => format!("closed in {processes} {}", workers(processes)),
    };
    if fleet.degraded > 0 {
        text.push_str(&format!(", degraded in {}", fleet.degraded));
    }
    text
}

fn when(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}
