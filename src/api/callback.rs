//! `GET /oauth/callback`: where institutions send the user back after consent.
//! Hands the outcome to [`crate::sync::Environment::complete_link`] and says, in a
//! page, how it went.

use axum::Router;
use axum::extract::{Query, State};
use axum::response::Html;
use axum::routing::get;
use serde::Deserialize;

use super::{ApiError, ApiState, ErrorCode};
use crate::sync::lifecycle::CompleteLinkError;
use crate::tokens::LinkError;

pub fn routes() -> Router<ApiState> {
    Router::new().route("/oauth/callback", get(callback))
}

#[derive(Debug, Deserialize)]
struct CallbackParams {
    state: Option<String>,
    code: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

async fn callback(
    State(state): State<ApiState>,
    Query(params): Query<CallbackParams>,
) -> Result<Html<String>, ApiError> {
    let link_state = params
        .state
        .as_deref()
        .ok_or_else(|| ApiError::new(ErrorCode::InvalidState, "the callback has no `state`"))?;
    let outcome = match (&params.code, &params.error) {
        (_, Some(error)) => Err(error.as_str()),
        (Some(code), None) => Ok(code.as_str()),
        (None, None) => {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                "the callback has neither `code` nor `error`",
            ));
        }
    };
    let connection = state
        .env
        .complete_link(&state.linker, link_state, outcome)
        .await
        .map_err(|e| match e {
            CompleteLinkError::Link(LinkError::InvalidState) => {
                ApiError::new(ErrorCode::InvalidState, e.to_string())
            }
            CompleteLinkError::Link(LinkError::Denied(error)) => ApiError::new(
                ErrorCode::ConsentDenied,
                format!(
                    "access was not granted at the institution: {error}{}",
                    params
                        .error_description
                        .as_deref()
                        .map(|d| format!(" ({d})"))
                        .unwrap_or_default()
                ),
            ),
            CompleteLinkError::Link(LinkError::Exchange(e)) => {
                ApiError::new(ErrorCode::InstitutionError, e.to_string())
            }
            CompleteLinkError::Link(LinkError::NotOffered(id)) => ApiError::new(
                ErrorCode::Forbidden,
                format!("institution `{id}` is no longer offered to you"),
            ),
            other => ApiError::internal(other),
        })?;
    Ok(Html(format!(
        "<!doctype html><title>Linked</title><p>Your institution is linked (connection {connection}). \
         Your data is being synced; you can close this window.</p>"
    )))
}
