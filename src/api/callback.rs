//! `GET /oauth/callback`: where institutions send the user back after consent.
//! Hands the outcome to [`crate::sync::Environment::complete_link`]; a user who
//! came through an app's link session goes back to the app (on success) or to the
//! link page, which says what went wrong and offers a retry; a link an admin
//! started ends on a page here. Every answer is a page: a person is reading it.

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use serde::Deserialize;

use super::ApiState;
use super::link_page::{
    CALLBACK_COOKIE_PREFIX, Message, back_to_app, cookies, forget_callback_cookie, html, trouble,
};
use crate::domain::LinkSessionId;
use crate::sync::lifecycle::CompleteLinkError;
use crate::tokens::sessions::BrowserKeys;
use crate::tokens::{LinkError, LinkFailure};

pub fn routes() -> Router<ApiState> {
    Router::new().route("/oauth/callback", get(callback))
}

#[derive(Debug, Deserialize)]
struct CallbackParams {
    state: Option<String>,
    code: Option<String>,
    error: Option<String>,
}

async fn callback(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Query(params): Query<CallbackParams>,
) -> Response {
    let Some(link_state) = params.state.as_deref() else {
        return refused("The institution's answer is incomplete (it has no `state`).");
    };
    let outcome = match (&params.code, &params.error) {
        (_, Some(error)) => Err(error.as_str()),
        (Some(code), None) => Ok(code.as_str()),
        (None, None) => {
            return refused(
                "The institution's answer is incomplete (it has neither `code` nor `error`).",
            );
        }
    };
    match state
        .env
        .complete_link(&state.linker, link_state, outcome, &browser_keys(&headers))
        .await
    {
        Ok(linked) => match linked.session {
            Some(session) => forget_callback_cookie(back_to_app(&session), session.id),
            None => html(
                StatusCode::OK,
                &Message::new(
                    "Connected",
                    &[
                        &format!(
                            "Your institution is linked (connection {}).",
                            linked.connection
                        ),
                        "Your data is being synced; you can close this window.",
                    ],
                ),
            ),
        },
        Err(CompleteLinkError::Link(LinkFailure {
            error: LinkError::OtherBrowser,
            ..
        })) => html(
            StatusCode::FORBIDDEN,
            &Message::new(
                "This sign-in was started in another browser",
                &[
                    "For your security, a connection finishes in the browser it was started in. Nothing was connected.",
                    "If you didn't start it, you can ignore this. Otherwise, go back to the app and start again.",
                ],
            )
            .alert(),
        ),
        // The link page says what happened and lets the user try again.
        Err(CompleteLinkError::Link(failure)) if failure.session.is_some() => {
            let session = failure.session.map(|id| id.to_string()).unwrap_or_default();
            Redirect::to(&format!("/link/{session}")).into_response()
        }
        Err(CompleteLinkError::Link(failure)) => match failure.error {
            LinkError::InvalidState => html(
                StatusCode::BAD_REQUEST,
                &Message::new(
                    "This sign-in can't be used again",
                    &[
                        "It was already completed, or it expired. Nothing was changed.",
                        "To connect again, start again from the app.",
                    ],
                )
                .alert(),
            ),
            LinkError::Denied(_) => html(
                StatusCode::BAD_REQUEST,
                &Message::new(
                    "Access was not granted",
                    &["The institution says access was not granted, so nothing was connected."],
                )
                .alert(),
            ),
            LinkError::Exchange(error) => {
                tracing::warn!(%error, "The institution refused the authorization code.");
                html(
                    StatusCode::BAD_GATEWAY,
                    &Message::new(
                        "The institution couldn't finish connecting",
                        &["Nothing was connected. It is often temporary: start again in a moment."],
                    )
                    .alert(),
                )
            }
            LinkError::NotOffered(_) => html(
                StatusCode::FORBIDDEN,
                &Message::new(
                    "This institution can't be connected",
                    &["It is no longer one this app can connect. Nothing was connected."],
                )
                .alert(),
            ),
            other => trouble(other),
        },
    }
}

/// The link session keys the browser came back with.
fn browser_keys(headers: &HeaderMap) -> BrowserKeys {
    BrowserKeys(
        cookies(headers)
            .into_iter()
            .filter_map(|(name, key)| {
                let id = name
                    .strip_prefix(CALLBACK_COOKIE_PREFIX)?
                    .parse::<LinkSessionId>()
                    .ok()?;
                Some((id, key))
            })
            .collect(),
    )
}

fn refused(line: &str) -> Response {
    html(
        StatusCode::BAD_REQUEST,
        &Message::new("This sign-in can't be completed", &[line]).alert(),
    )
}
