//! `GET /oauth/callback`: where institutions send the user back after consent.
//! Completes the link, announces a repaired connection to the tenant's webhooks,
//! and enqueues the connection's first sync.

use axum::Router;
use axum::extract::{Query, State};
use axum::response::Html;
use axum::routing::get;
use serde::Deserialize;

use super::{ApiError, ApiState, ErrorCode};
use crate::domain::ConnectionStatus;
use crate::sync::SyncConnection;
use crate::tokens::LinkError;
use crate::webhooks::{self, EventData, WebhookEvent};

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
    let linked = state
        .linker
        .complete(link_state, outcome)
        .await
        .map_err(|e| match e {
            LinkError::InvalidState => ApiError::new(ErrorCode::InvalidState, e.to_string()),
            LinkError::Denied(error) => ApiError::new(
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
            LinkError::Exchange(e) => ApiError::new(ErrorCode::InstitutionError, e.to_string()),
            other => ApiError::internal(other),
        })?;
    let connection = linked.connection_id;
    if linked.previous.status == ConnectionStatus::ReauthRequired {
        let data = EventData::connection(&linked.previous, ConnectionStatus::Active);
        webhooks::announce(
            &state.sync.store,
            linked.previous.tenant_id,
            WebhookEvent::ConnectionRepaired,
            &data,
        )
        .await;
    }
    let job = SyncConnection {
        connection_id: connection,
        idempotency_key: format!("link:{connection}:{}", uuid::Uuid::new_v4()),
    };
    state
        .sync
        .queue
        .enqueue(job)
        .await
        .map_err(ApiError::internal)?;
    Ok(Html(format!(
        "<!doctype html><title>Linked</title><p>Your institution is linked (connection {connection}). \
         Your data is being synced; you can close this window.</p>"
    )))
}
