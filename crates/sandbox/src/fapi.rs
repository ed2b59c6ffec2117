//! What the Financial-grade API profile asks of every answer of a standards
//! institution (FDX, UK Open Banking): the `x-fapi-interaction-id` the client sent,
//! echoed, or a fresh one, so both sides can name one exchange in their logs.

use axum::Json;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

pub(crate) const INTERACTION_ID: &str = "x-fapi-interaction-id";

/// The answer (a JSON document, or the institution's refusal), with the interaction
/// id the request carried, or a new one.
pub(crate) fn answered<E: IntoResponse>(
    headers: &HeaderMap,
    outcome: Result<Value, E>,
) -> Response {
    let interaction = headers
        .get(INTERACTION_ID)
        .cloned()
        .or_else(|| HeaderValue::from_str(&uuid::Uuid::new_v4().to_string()).ok());
    let mut response = match outcome {
        Ok(body) => Json(body).into_response(),
        Err(refusal) => refusal.into_response(),
    };
    if let Some(id) = interaction {
        response.headers_mut().insert(INTERACTION_ID, id);
    }
    response
}
