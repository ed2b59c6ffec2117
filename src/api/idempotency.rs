//! `Idempotency-Key` on the tenant API's `POST`s, after Stripe's: the same key with
//! the same request (API key, method, path and body) gets the first answer again,
//! marked `Idempotent-Replayed: true`; the same key with another request is `422
//! IDEMPOTENCY_KEY_REUSED`; while the first is still being processed, `409 CONFLICT`
//! with `Retry-After`. Keys are the tenant's (two tenants may use the same one) and
//! live 24 hours. A request runs to its end even if the caller hangs up, so its
//! retry finds the answer. Answers the request may be retried after as it is
//! (malformed, unauthorized, rate limited, our failure) are not kept. Kept answers
//! are sealed with the vault, as one may carry a secret shown once (a webhook
//! signing secret). Claiming a key is the store's ([`crate::store::Claim`]).

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::header::{CONTENT_TYPE, LOCATION, RETRY_AFTER};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

use axum::extract::FromRequestParts;

use super::auth::Tenant;
use super::{ApiError, ApiState, ErrorCode};
use crate::store::{Claim, StoredAnswer, key_id};
use crate::vault::idempotent_answer_context;

const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
const REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");
/// Stripe's limit on a key's length.
const MAX_KEY_LEN: usize = 255;
/// The largest body a keyed request may have (the tenant API's are small JSON).
const MAX_BODY_BYTES: usize = 1024 * 1024;
/// The largest answer kept for replay.
const MAX_ANSWER_BYTES: usize = 1024 * 1024;
/// The headers an answer is replayed with.
const REPLAYED_HEADERS: [HeaderName; 3] = [CONTENT_TYPE, LOCATION, RETRY_AFTER];

/// Honours an `Idempotency-Key` on a tenant's `POST`; anything else passes through.
pub(super) async fn honour(
    State(state): State<ApiState>,
    request: Request,
    next: Next,
) -> Response {
    if request.method() != Method::POST || !request.headers().contains_key(IDEMPOTENCY_KEY) {
        return next.run(request).await;
    }
    let key = match request_key(&request) {
        Ok(key) => key,
        Err(error) => return error.into_response(),
    };
    let (mut parts, body) = request.into_parts();
    // Authenticated (and counted against the key's budget) once, here: a replay
    // answers only the API key that made the request, and the handler reuses it.
    let tenant = match Tenant::from_request_parts(&mut parts, &state).await {
        Ok(tenant) => tenant,
        Err(error) => return error.into_response(),
    };
    let Ok(bytes) = axum::body::to_bytes(body, MAX_BODY_BYTES).await else {
        return ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("a request with an Idempotency-Key has at most {MAX_BODY_BYTES} bytes of body"),
        )
        .into_response();
    };
    let fingerprint = fingerprint(
        &tenant.key.id,
        &parts.method,
        parts.uri.path_and_query().map_or("", |p| p.as_str()),
        &bytes,
    );
    let id = key_id(
        tenant.tenant.id,
        &crate::fingerprint::sha256_hex(key.as_bytes()),
    );
    let owner = uuid::Uuid::new_v4().to_string();
    let claim = match state
        .env
        .store
        .claim_idempotency_key(
            tenant.tenant.id,
            &id,
            &owner,
            &fingerprint,
            chrono::Utc::now(),
        )
        .await
    {
        Ok(claim) => claim,
        Err(error) => return ApiError::from(error).into_response(),
    };
    match claim {
        Claim::Fresh => {
            parts.extensions.insert(tenant);
            let request = Request::from_parts(parts, Body::from(bytes));
            // Run to the end even if the caller hangs up: its retry must find the
            // answer, not run the request again.
            let run = tokio::spawn(async move {
                let response = next.run(request).await;
                keep(&state, &id, &owner, response).await
            });
            run.await.unwrap_or_else(|error| ApiError::internal(error).into_response())
        }
        Claim::InFlight => ApiError {
            retry_after_secs: Some(1),
            ..ApiError::new(
                ErrorCode::Conflict,
                "a request with this Idempotency-Key is still being processed; try again shortly",
            )
        }
        .into_response(),
        Claim::Mismatch => ApiError::new(
            ErrorCode::IdempotencyKeyReused,
            "this Idempotency-Key was used for another request (API key, method, path or body); use a new key for a new request",
        )
        .into_response(),
        Claim::Answered(answer) => {
            match state
                .env
                .tokens
                .vault
                .open(&idempotent_answer_context(&id), &answer.body)
            {
                Ok(body) => replay(answer.status, &answer.headers, body.expose_secret()),
                Err(error) => ApiError::internal(error).into_response(),
            }
        }
    }
}

/// The key, if it is 1 to 255 visible ASCII characters.
fn request_key(request: &Request) -> Result<String, ApiError> {
    request
        .headers()
        .get(IDEMPOTENCY_KEY)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|k| (1..=MAX_KEY_LEN).contains(&k.len()) && k.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_owned)
        .ok_or_else(|| {
            ApiError::invalid(format!(
                "Idempotency-Key must be 1 to {MAX_KEY_LEN} visible ASCII characters, e.g. a UUID"
            ))
        })
}

/// SHA-256 of the request as far as sameness goes: the API key, method, path with
/// query, and body (a JSON body by its meaning: key order and spacing aside).
fn fingerprint(api_key: &str, method: &Method, path: &str, body: &[u8]) -> String {
    let canonical = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|value| serde_json::to_vec(&value).ok());
    let body = canonical.as_deref().unwrap_or(body);
    let mut hash = Sha256::new();
    hash.update(api_key);
    hash.update([0]);
    hash.update(method.as_str());
    hash.update([0]);
    hash.update(path);
    hash.update([0]);
    hash.update(body);
    hex::encode(hash.finalize())
}

/// Stores the answer for replay, or frees the key when the answer is one the
/// request may be sent again after (see [`kept`]) or cannot be kept; returns the
/// answer as it was.
async fn keep(state: &ApiState, id: &str, owner: &str, response: Response) -> Response {
    let status = response.status();
    let transient = !kept(status);
    let (parts, body) = response.into_parts();
    let read = axum::body::to_bytes(body, MAX_ANSWER_BYTES).await;
    let sealed = match &read {
        Ok(bytes) if !transient => std::str::from_utf8(bytes).ok().and_then(|text| {
            state
                .env
                .tokens
                .vault
                .seal(&idempotent_answer_context(id), &SecretString::from(text))
                .ok()
        }),
        _ => None,
    };
    let (bytes, sealed) = match (read, sealed) {
        (Ok(bytes), Some(sealed)) => (bytes, sealed),
        (other, _) => {
            if let Err(error) = state.env.store.release_idempotency_key(id, owner).await {
                tracing::warn!(%error, "Freeing an idempotency key failed; it frees itself in two minutes.");
            }
            return Response::from_parts(parts, Body::from(other.unwrap_or_else(|_| Bytes::new())));
        }
    };
    let answer = StoredAnswer {
        status: status.as_u16(),
        headers: REPLAYED_HEADERS
            .iter()
            .filter_map(|name| {
                let value = parts.headers.get(name)?.to_str().ok()?;
                Some((name.as_str().to_owned(), value.to_owned()))
            })
            .collect(),
        body: sealed,
    };
    if let Err(error) = state
        .env
        .store
        .answer_idempotency_key(id, owner, &answer)
        .await
    {
        // The effect happened but its answer is not kept: a retry with this key is
        // told to wait until the claim counts as abandoned, then runs again.
        tracing::error!(%error, "Storing an idempotent answer failed.");
    }
    Response::from_parts(parts, Body::from(bytes))
}

/// Whether an answer is kept for replay. Not when the request never ran or may be
/// sent again as it is to better effect: refused as malformed (400, 413, 415),
/// unauthenticated or forbidden (401, 403), rate limited (429) or failed on our side
/// (5xx). The rest, refusals of what it asked included, are its answer.
fn kept(status: StatusCode) -> bool {
    !(status.is_server_error() || matches!(status.as_u16(), 400 | 401 | 403 | 413 | 415 | 429))
}

fn replay(status: u16, stored: &[(String, String)], body: &str) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    let mut response = (status, body.to_owned()).into_response();
    let headers = response.headers_mut();
    headers.remove(CONTENT_TYPE);
    for (name, value) in stored {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            headers.insert(name, value);
        }
    }
    headers.insert(REPLAYED, HeaderValue::from_static("true"));
    response
}
