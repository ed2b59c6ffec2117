//! The hosted link page an app sends its user to (`link_url`): server-rendered
//! HTML with no script and no outside asset, laid out for phones and keyboards.
//! `GET /link/{id}?token=…` greets the user, whose press of Continue
//! (`POST /link/{id}/open`) opens the session and gives this browser its cookies;
//! then `GET /link/{id}` shows the institution picker (with search) or the consent
//! screen, `POST /link/{id}/authorize` sends the user to the institution, and
//! `POST /link/{id}/leave` returns them to the app. The callback
//! ([`super::callback`]) brings them back here when the institution said no.
//!
//! Forms carry a token derived from the browser's cookie, and the cookie is
//! `SameSite=Lax` and scoped to the session's path: another site can neither
//! post for the user nor read the page. A second cookie, scoped to the callback,
//! ties the institution's answer to the browser that opened the session.

use askama::Template;
use axum::Router;
use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use chrono::Utc;
use serde::Deserialize;

use super::ApiState;
use super::extract::Path;
use crate::connectors::RegistryError;
use crate::directory::{self, Health};
use crate::domain::{LinkSessionId, LinkSessionStatus};
use crate::store::LinkSessionRecord;
use crate::tokens::sessions::{self, codes};
use crate::tokens::{LinkError, SessionError};

const COOKIE: &str = "finsync_link";
/// Institutions listed in the picker at once; search narrows them.
const PICKER_SIZE: usize = 50;

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/link/{link_session_id}", get(page))
        .route("/link/{link_session_id}/open", post(open))
        .route("/link/{link_session_id}/authorize", post(authorize))
        .route("/link/{link_session_id}/leave", post(leave))
}

#[derive(Template)]
#[template(path = "link/picker.html")]
struct Picker {
    title: &'static str,
    app_name: String,
    page: String,
    query: String,
    csrf: String,
    institutions: Vec<PickItem>,
}

struct PickItem {
    name: String,
    initials: String,
    country: String,
    note: Option<&'static str>,
    href: String,
}

#[derive(Template)]
#[template(path = "link/welcome.html")]
struct Welcome {
    title: &'static str,
    app_name: String,
    page: String,
    token: String,
}

#[derive(Template)]
#[template(path = "link/consent.html")]
struct Consent {
    title: String,
    app_name: String,
    page: String,
    csrf: String,
    institution: String,
    institution_id: String,
    reads: Vec<&'static str>,
    duration: String,
    warning: Option<String>,
    problem: Option<String>,
    can_choose_other: bool,
}

#[derive(Template)]
#[template(path = "link/message.html")]
pub(super) struct Message {
    pub title: String,
    pub app_name: String,
    pub lines: Vec<String>,
    /// The first line is an error to announce.
    pub alert: bool,
    pub actions: Vec<Action>,
}

pub(super) enum Action {
    /// A link to follow.
    Go {
        label: String,
        href: String,
        primary: bool,
    },
    /// The form that ends the session and returns to the app.
    Leave {
        label: String,
        page: String,
        csrf: String,
    },
}

impl Message {
    pub(super) fn new(title: impl Into<String>, lines: &[&str]) -> Self {
        Self {
            title: title.into(),
            app_name: String::new(),
            lines: lines.iter().map(|l| (*l).to_owned()).collect(),
            alert: false,
            actions: Vec::new(),
        }
    }

    pub(super) fn alert(mut self) -> Self {
        self.alert = true;
        self
    }
}

/// A page with the headers every page of the link flow carries: nothing cached,
/// no referrer (the link URL carries its token), no framing, no script.
pub(super) fn html(status: StatusCode, page: &impl Template) -> Response {
    let body = match page.render() {
        Ok(body) => body,
        Err(error) => {
            tracing::error!(%error, "A link page could not be rendered.");
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
    };
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_TYPE, "text/html; charset=utf-8"),
        (header::CACHE_CONTROL, "no-store"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; base-uri 'none'; frame-ancestors 'none'",
        ),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

#[derive(Debug, Deserialize)]
struct PageQuery {
    /// The link URL's token: present once, when the user arrives from the app.
    token: Option<String>,
    /// `pick` shows the picker even after an institution was chosen.
    step: Option<String>,
    institution: Option<String>,
    q: Option<String>,
}

#[derive(Debug, Deserialize)]
struct AuthorizeForm {
    csrf: String,
    institution: String,
}

#[derive(Debug, Deserialize)]
struct LeaveForm {
    csrf: String,
}

async fn page(
    State(state): State<ApiState>,
    Path(raw): Path<String>,
    headers: HeaderMap,
    Query(query): Query<PageQuery>,
) -> Response {
    let Ok(id) = raw.parse::<LinkSessionId>() else {
        return not_valid();
    };
    let key = cookie(&headers, COOKIE);
    if let Some(token) = &query.token {
        return welcome(&state, id, token, key.as_deref()).await;
    }
    let session = match state.linker.session_for(id, key.as_deref()).await {
        Ok(session) => session,
        Err(error) => return refused(&state, id, error).await,
    };
    let key = key.unwrap_or_default();
    let app_name = app_name(&state, &session).await;
    let now = Utc::now();
    match session.status_at(now) {
        LinkSessionStatus::Open => {}
        LinkSessionStatus::Expired => return expired(&session, &key, app_name),
        _ => return finished(&session, app_name),
    }
    let chosen = session
        .institution_id
        .clone()
        .filter(|_| session.repair_connection_id.is_some() || query.institution.is_none())
        .or(query.institution.clone());
    if let (Some(code), None) = (&session.error, &query.step) {
        return problem(&state, &session, &key, app_name, code).await;
    }
    match chosen {
        Some(institution) if query.step.as_deref() != Some("pick") => {
            consent(&state, &session, &key, app_name, &institution, None).await
        }
        _ => picker(&state, &session, &key, app_name, query.q.as_deref()).await,
    }
}

/// The user arrives with the link URL: a page that says who asks, whose button
/// opens the session. Only that press uses the link up, so a mail scanner or a
/// chat preview fetching the URL cannot.
async fn welcome(state: &ApiState, id: LinkSessionId, token: &str, key: Option<&str>) -> Response {
    // Back in the browser that opened it: carry on there.
    if let Ok(session) = state.linker.session_for(id, key).await
        && session.status_at(Utc::now()) == LinkSessionStatus::Open
    {
        return Redirect::to(&page_path(id)).into_response();
    }
    match state.linker.peek_session(id, token).await {
        Ok(session) => {
            let app_name = app_name(state, &session).await;
            html(
                StatusCode::OK,
                &Welcome {
                    title: "Connect your accounts",
                    page: page_path(id),
                    token: token.to_owned(),
                    app_name,
                },
            )
        }
        Err(error) => refused(state, id, error).await,
    }
}

#[derive(Debug, Deserialize)]
struct OpenForm {
    token: String,
}

/// Opens the session for this browser, which gets its keys: one for the link
/// page, one it brings back from the institution to the callback.
async fn open(
    State(state): State<ApiState>,
    Path(raw): Path<String>,
    form: Result<Form<OpenForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let Ok(id) = raw.parse::<LinkSessionId>() else {
        return not_valid();
    };
    let Ok(Form(form)) = form else {
        return bad_form();
    };
    match state.linker.open_session(id, &form.token).await {
        Ok((session, key)) => {
            let key = secrecy::ExposeSecret::expose_secret(&key.0).to_owned();
            let page = page_path(id);
            let secure = state.linker.link_base.scheme() == "https";
            // They outlive the session by an authorization's lifetime, which may
            // extend it; the session's own expiry is enforced here.
            let lifetime = (session.expires_at - Utc::now()).num_seconds().max(0) + 600;
            let cookies = [
                (COOKIE.to_owned(), page.clone()),
                (callback_cookie(id), "/oauth/callback".to_owned()),
            ]
            .map(|(name, path)| {
                cookie::Cookie::build((name, key.clone()))
                    .path(path)
                    .http_only(true)
                    .secure(secure)
                    .same_site(cookie::SameSite::Lax)
                    .max_age(cookie::time::Duration::seconds(lifetime))
                    .build()
                    .to_string()
            });
            let mut response = Redirect::to(&page).into_response();
            for cookie in cookies {
                match HeaderValue::from_str(&cookie) {
                    Ok(value) => response.headers_mut().append(header::SET_COOKIE, value),
                    Err(_) => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
                };
            }
            response
        }
        Err(error) => refused(&state, id, error).await,
    }
}

/// The cookie the callback reads for session `id`: this prefix and the id.
pub(super) const CALLBACK_COOKIE_PREFIX: &str = "finsync_link_";

fn callback_cookie(id: LinkSessionId) -> String {
    format!("{CALLBACK_COOKIE_PREFIX}{id}")
}

/// Tells the browser to drop the callback's cookie of a session that ended.
pub(super) fn forget_callback_cookie(mut response: Response, id: LinkSessionId) -> Response {
    let gone = cookie::Cookie::build((callback_cookie(id), ""))
        .path("/oauth/callback")
        .max_age(cookie::time::Duration::ZERO)
        .build();
    if let Ok(value) = HeaderValue::from_str(&gone.to_string()) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

async fn authorize(
    State(state): State<ApiState>,
    Path(raw): Path<String>,
    headers: HeaderMap,
    form: Result<Form<AuthorizeForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let Ok(id) = raw.parse::<LinkSessionId>() else {
        return not_valid();
    };
    let Ok(Form(form)) = form else {
        return bad_form();
    };
    let (session, key) = match checked(&state, id, &headers, &form.csrf).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    match state
        .linker
        .authorize_session(id, &key, &form.institution)
        .await
    {
        Ok(url) => Redirect::to(url.as_str()).into_response(),
        Err(
            error @ (SessionError::ProductNotOffered { .. }
            | SessionError::OtherInstitution { .. }
            | SessionError::Link(
                LinkError::NotOffered(_) | LinkError::Registry(RegistryError::Unknown(_)),
            )),
        ) => {
            tracing::info!(session = %id, %error, "Link page refused an institution.");
            let app_name = app_name(&state, &session).await;
            not_connectable(&session, app_name)
        }
        Err(error) => refused(&state, id, error).await,
    }
}

async fn leave(
    State(state): State<ApiState>,
    Path(raw): Path<String>,
    headers: HeaderMap,
    form: Result<Form<LeaveForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let Ok(id) = raw.parse::<LinkSessionId>() else {
        return not_valid();
    };
    let Ok(Form(form)) = form else {
        return bad_form();
    };
    let key = match checked(&state, id, &headers, &form.csrf).await {
        Ok((_, key)) => key,
        Err(response) => return response,
    };
    match state.linker.leave_session(id, &key).await {
        Ok(session) => back_to_app(&session),
        Err(error) => refused(&state, id, error).await,
    }
}

/// The session this browser opened, if the form came from its page.
async fn checked(
    state: &ApiState,
    id: LinkSessionId,
    headers: &HeaderMap,
    csrf: &str,
) -> Result<(LinkSessionRecord, String), Response> {
    let key = cookie(headers, COOKIE);
    let session = match state.linker.session_for(id, key.as_deref()).await {
        Ok(session) => session,
        Err(error) => return Err(refused(state, id, error).await),
    };
    let key = key.unwrap_or_default();
    if !crate::fingerprint::same(&csrf_of(&key), csrf) {
        return Err(html(
            StatusCode::FORBIDDEN,
            &Message::new(
                "This form has expired",
                &["Go back to the previous page, reload it, and try again."],
            )
            .alert(),
        ));
    }
    Ok((session, key))
}

async fn picker(
    state: &ApiState,
    session: &LinkSessionRecord,
    key: &str,
    app_name: String,
    query: Option<&str>,
) -> Response {
    let listed = match directory::list(
        &state.env.store,
        state.catalog.registry(),
        session.tenant_id,
        directory::Wanted {
            search: query,
            products: &session.products,
            after: None,
            limit: PICKER_SIZE,
        },
        state.breaker_window,
    )
    .await
    {
        Ok(listed) => listed,
        Err(error) => return trouble(error),
    };
    let page = page_path(session.id);
    let institutions = listed
        .into_iter()
        .map(|i| PickItem {
            href: format!("{page}?institution={}", percent(&i.id)),
            note: match i.health {
                Health::Ok => None,
                Health::Degraded => Some("some connections are failing right now"),
                Health::Down => Some("not responding right now"),
            },
            name: i.name,
            initials: i.initials,
            country: i.country,
        })
        .collect();
    html(
        StatusCode::OK,
        &Picker {
            title: "Choose your institution",
            app_name,
            page,
            query: query.unwrap_or_default().to_owned(),
            csrf: csrf_of(key),
            institutions,
        },
    )
}

async fn consent(
    state: &ApiState,
    session: &LinkSessionRecord,
    key: &str,
    app_name: String,
    institution: &str,
    problem: Option<String>,
) -> Response {
    let Ok(connector) = state.catalog.registry().get(institution) else {
        return picker(state, session, key, app_name, None).await;
    };
    if let Err(error) = state
        .linker
        .check_institution(session.tenant_id, &connector.id, &session.products)
        .await
    {
        tracing::info!(session = %session.id, %error, "Link page refused an institution.");
        return not_connectable(session, app_name);
    }
    let warning = match directory::health_of(&state.env.store, &connector.id, state.breaker_window)
        .await
    {
        Ok(Health::Down) => Some(format!(
            "{} is not responding right now. You can try anyway, choose another institution, or come back later.",
            connector.name
        )),
        Ok(Health::Degraded) => Some(format!(
            "{} is failing for some people right now. If it doesn't work, try again later.",
            connector.name
        )),
        Ok(Health::Ok) => None,
        Err(error) => return trouble(error),
    };
    let reads = connector
        .products
        .iter()
        .filter_map(|p| match p.as_str() {
            "accounts" => Some("Your accounts: their names, types, last digits and balances"),
            "holdings" => Some("Your investments: what you hold, how many, prices and values"),
            "transactions" => Some("Your transactions: dates, amounts and descriptions"),
            _ => None,
        })
        .collect();
    let duration = match connector.auth.consent_lifetime_days {
        Some(days) => {
            format!("Access lasts {days} days. After that, {app_name} will ask you to renew it.")
        }
        None => format!(
            "Access lasts until you revoke it, or until {} ends it.",
            connector.name
        ),
    };
    html(
        StatusCode::OK,
        &Consent {
            title: format!("Connect {}", connector.name),
            app_name,
            page: page_path(session.id),
            csrf: csrf_of(key),
            institution: connector.name.clone(),
            institution_id: connector.id.clone(),
            reads,
            duration,
            warning,
            problem,
            can_choose_other: session.repair_connection_id.is_none(),
        },
    )
}

/// The page the callback sends the user back to when the last attempt failed.
async fn problem(
    state: &ApiState,
    session: &LinkSessionRecord,
    key: &str,
    app_name: String,
    code: &str,
) -> Response {
    let institution = session
        .institution_id
        .as_deref()
        .and_then(|id| state.catalog.registry().get(id).ok())
        .map_or_else(|| "The institution".to_owned(), |c| c.name.clone());
    let (title, line) = match code {
        codes::CONSENT_DENIED => (
            "You didn't grant access".to_owned(),
            format!("{institution} says access was not granted, so nothing was connected."),
        ),
        codes::INSTITUTION_ERROR => (
            format!("{institution} couldn't finish connecting"),
            format!(
                "{institution} had a problem completing the connection. Nothing was connected. It is often temporary: try again in a moment."
            ),
        ),
        codes::NOT_OFFERED => (
            "This institution can't be connected".to_owned(),
            "It is no longer one this app can connect. Choose another institution.".to_owned(),
        ),
        _ => (
            "Something went wrong".to_owned(),
            "Something went wrong on our side and nothing was connected. Try again in a moment."
                .to_owned(),
        ),
    };
    let page_path = page_path(session.id);
    let mut page = Message::new(title, &[line.as_str()]).alert();
    page.app_name = app_name.clone();
    if let Some(id) = session
        .institution_id
        .as_deref()
        .filter(|_| code != codes::NOT_OFFERED)
    {
        page.actions.push(Action::Go {
            label: "Try again".into(),
            href: format!("{page_path}?step=consent&institution={}", percent(id)),
            primary: true,
        });
    }
    if session.repair_connection_id.is_none() {
        page.actions.push(Action::Go {
            label: "Choose another institution".into(),
            href: format!("{page_path}?step=pick"),
            primary: false,
        });
    }
    page.actions.push(Action::Leave {
        label: format!("Return to {app_name}"),
        page: page_path,
        csrf: csrf_of(key),
    });
    html(StatusCode::OK, &page)
}

fn not_connectable(session: &LinkSessionRecord, app_name: String) -> Response {
    let mut page = Message::new(
        "This institution can't be connected",
        &["It isn't one this app can connect for you. Choose another institution."],
    )
    .alert();
    page.app_name = app_name;
    if session.repair_connection_id.is_none() {
        page.actions.push(Action::Go {
            label: "Choose another institution".into(),
            href: format!("{}?step=pick", page_path(session.id)),
            primary: true,
        });
    }
    html(StatusCode::BAD_REQUEST, &page)
}

fn expired(session: &LinkSessionRecord, key: &str, app_name: String) -> Response {
    let mut page = Message::new(
        "This link has expired",
        &["For your security, a link works for a limited time. Return to the app and start again."],
    )
    .alert();
    page.actions.push(Action::Leave {
        label: format!("Return to {app_name}"),
        page: page_path(session.id),
        csrf: csrf_of(key),
    });
    page.app_name = app_name;
    html(StatusCode::GONE, &page)
}

fn finished(session: &LinkSessionRecord, app_name: String) -> Response {
    let mut page = Message::new(ended_title(session), &[ended_line(session)]);
    if let Some(url) = sessions::return_url(session, Utc::now()) {
        page.actions.push(Action::Go {
            label: format!("Return to {app_name}"),
            href: url.to_string(),
            primary: true,
        });
    }
    page.app_name = app_name;
    html(StatusCode::OK, &page)
}

/// Sends the user back to the app with the session's outcome.
pub(super) fn back_to_app(session: &LinkSessionRecord) -> Response {
    match sessions::return_url(session, Utc::now()) {
        Some(url) => {
            let mut response = Redirect::to(url.as_str()).into_response();
            response.headers_mut().insert(
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            );
            response
        }
        None => trouble("the session's redirect URI does not parse"),
    }
}

/// What a session error looks like to the user.
async fn refused(state: &ApiState, id: LinkSessionId, error: SessionError) -> Response {
    match error {
        SessionError::Unknown => not_valid(),
        SessionError::Used => html(
            StatusCode::CONFLICT,
            &Message::new(
                "This link has already been used",
                &[
                    "For your security, a connection link works once, in one browser.",
                    "If that wasn't you, or you closed the window, go back to the app and start again.",
                ],
            )
            .alert(),
        ),
        SessionError::OtherBrowser => html(
            StatusCode::FORBIDDEN,
            &Message::new(
                "This link was opened in another browser",
                &["Carry on in the browser (or window) where you first opened it, or go back to the app and start again."],
            )
            .alert(),
        ),
        // The token was right: the user may go back with the outcome.
        SessionError::Expired | SessionError::Ended(_) => {
            match state.env.store.link_session(id).await {
                Ok(Some(session)) => {
                    let app_name = app_name(state, &session).await;
                    let expired = session.status_at(Utc::now()) == LinkSessionStatus::Expired;
                    let mut page = if expired {
                        Message::new(
                            "This link has expired",
                            &["For your security, a link works for a limited time. Return to the app and start again."],
                        )
                        .alert()
                    } else {
                        Message::new(ended_title(&session), &[ended_line(&session)])
                    };
                    if let Some(url) = sessions::return_url(&session, Utc::now()) {
                        page.actions.push(Action::Go {
                            label: format!("Return to {app_name}"),
                            href: url.to_string(),
                            primary: true,
                        });
                    }
                    page.app_name = app_name;
                    html(
                        if expired { StatusCode::GONE } else { StatusCode::CONFLICT },
                        &page,
                    )
                }
                Ok(None) => not_valid(),
                Err(error) => trouble(error),
            }
        }
        other => trouble(other),
    }
}

fn ended_title(session: &LinkSessionRecord) -> &'static str {
    match session.status {
        LinkSessionStatus::Linked | LinkSessionStatus::Repaired => "You're connected",
        _ => "This link has already been used",
    }
}

fn ended_line(session: &LinkSessionRecord) -> &'static str {
    match session.status {
        LinkSessionStatus::Linked => "Your account is connected. There is nothing more to do here.",
        LinkSessionStatus::Repaired => {
            "Your connection works again. There is nothing more to do here."
        }
        LinkSessionStatus::Denied => {
            "You chose not to connect, so nothing was connected. To connect after all, start again from the app."
        }
        _ => "Nothing was connected. To try again, start again from the app.",
    }
}

fn not_valid() -> Response {
    html(
        StatusCode::NOT_FOUND,
        &Message::new(
            "This link isn't valid",
            &["Check that you opened the whole link, or go back to the app and start again."],
        )
        .alert(),
    )
}

fn bad_form() -> Response {
    html(
        StatusCode::BAD_REQUEST,
        &Message::new(
            "That didn't work",
            &["The form arrived incomplete. Go back, reload the page and try again."],
        )
        .alert(),
    )
}

/// Our own failure: logged in full, shown in words.
pub(super) fn trouble(error: impl std::fmt::Display) -> Response {
    tracing::error!(%error, "The link page failed.");
    html(
        StatusCode::INTERNAL_SERVER_ERROR,
        &Message::new(
            "Something went wrong",
            &["Something went wrong on our side. Nothing was connected. Try again in a moment."],
        )
        .alert(),
    )
}

async fn app_name(state: &ApiState, session: &LinkSessionRecord) -> String {
    match state.env.store.tenant(session.tenant_id).await {
        Ok(Some(tenant)) => tenant.name,
        _ => "the app".to_owned(),
    }
}

fn page_path(id: LinkSessionId) -> String {
    format!("/link/{id}")
}

/// The value of the cookie `name`, if the request carries it.
pub(super) fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    cookies(headers)
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, value)| value)
}

/// Every cookie the request carries, by name.
pub(super) fn cookies(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(cookie::Cookie::split_parse)
        .filter_map(Result::ok)
        .map(|c| (c.name().to_owned(), c.value().to_owned()))
        .collect()
}

/// The forms' token: tied to the browser's cookie, which another site cannot read.
fn csrf_of(key: &str) -> String {
    crate::fingerprint::sha256_hex(format!("csrf:{key}").as_bytes())
}

fn percent(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}
