//! API errors: a stable machine-readable code, a message for people, and the
//! request id, mapped to a status code in one place.

use axum::Json;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header::RETRY_AFTER};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use super::REQUEST_ID;

/// Stable, machine-readable error codes. New codes may be added; existing ones
/// keep their meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    Unauthorized,
    /// The key is valid but lacks the scope the endpoint needs.
    Forbidden,
    NotFound,
    /// The thing to create exists already, or a request with the same
    /// `Idempotency-Key` is still being processed.
    Conflict,
    /// The `Idempotency-Key` was used for another request.
    IdempotencyKeyReused,
    InvalidRequest,
    /// A connector file that does not validate; the message lists every problem.
    InvalidConnector,
    UnknownInstitution,
    /// An institution's webhook whose signature or send time does not check out.
    InvalidSignature,
    /// The request body is larger than this endpoint accepts.
    PayloadTooLarge,
    InvalidState,
    ConsentDenied,
    InstitutionError,
    /// Too many requests; `Retry-After` says when to try again.
    RateLimited,
    /// The database cannot be reached just now and the answer needs it; `Retry-After`
    /// says when to try again. Answers the cache holds are still served.
    StoreUnavailable,
    Internal,
}

impl ErrorCode {
    fn status(self) -> StatusCode {
        match self {
            Self::Unauthorized | Self::InvalidSignature => StatusCode::UNAUTHORIZED,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::Conflict => StatusCode::CONFLICT,
            Self::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Self::NotFound | Self::UnknownInstitution => StatusCode::NOT_FOUND,
            Self::InvalidRequest | Self::InvalidState | Self::ConsentDenied => {
                StatusCode::BAD_REQUEST
            }
            Self::InvalidConnector | Self::IdempotencyKeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            Self::InstitutionError => StatusCode::BAD_GATEWAY,
            Self::StoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    /// Seconds to wait before retrying, sent as `Retry-After`.
    #[serde(skip)]
    pub retry_after_secs: Option<u64>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            retry_after_secs: None,
        }
    }

    pub fn rate_limited(message: impl Into<String>, retry_after_secs: u64) -> Self {
        Self {
            retry_after_secs: Some(retry_after_secs.max(1)),
            ..Self::new(ErrorCode::RateLimited, message)
        }
    }

    /// The database is away: try again in a few seconds.
    pub fn store_unavailable() -> Self {
        Self {
            retry_after_secs: Some(STORE_RETRY_SECS),
            ..Self::new(
                ErrorCode::StoreUnavailable,
                "the database is unreachable just now; answers the cache holds are still served",
            )
        }
    }

    pub fn not_found(what: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, what)
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidRequest, message)
    }

    /// An unexpected failure: logged in full, answered without details.
    pub fn internal(error: impl std::fmt::Display) -> Self {
        tracing::error!(error = %error, "Request failed.");
        Self::new(
            ErrorCode::Internal,
            "internal error; quote the request id when reporting it",
        )
    }
}

/// A store failure is never the caller's fault: an unreachable database answers
/// 503 `STORE_UNAVAILABLE` with `Retry-After`; anything else is logged in full and
/// answered as `INTERNAL` without details.
impl From<crate::store::StoreError> for ApiError {
    fn from(error: crate::store::StoreError) -> Self {
        if error.is_unavailable() {
            Self::store_unavailable()
        } else {
            Self::internal(error)
        }
    }
}

impl From<crate::sync::QueueError> for ApiError {
    fn from(error: crate::sync::QueueError) -> Self {
        Self::internal(error)
    }
}

/// What a client told `STORE_UNAVAILABLE` waits before asking again: outages worth
/// the name last longer, and the probe notices the database's return within a
/// second.
const STORE_RETRY_SECS: u64 = 5;

/// Every error response: `{ "error": { "code", "message" }, "request_id" }`.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody<'a> {
    error: &'a ApiError,
    /// Quote it when reporting a problem; it is in our logs.
    request_id: Option<&'a str>,
}

fn with_retry_after(mut response: Response, error: &ApiError) -> Response {
    if let Some(secs) = error.retry_after_secs {
        response
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.code.status();
        let mut response = (
            status,
            Json(ErrorBody {
                error: &self,
                request_id: None,
            }),
        )
            .into_response();
        // The request id is added by `attach_request_id`, which sees the request.
        response.extensions_mut().insert(self.clone());
        with_retry_after(response, &self)
    }
}

/// Rewrites error bodies to carry the request's id.
pub async fn attach_request_id(request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut response = next.run(request).await;
    if let Some(error) = response.extensions_mut().remove::<ApiError>() {
        let status = response.status();
        let response = (
            status,
            Json(ErrorBody {
                error: &error,
                request_id: id.as_deref(),
            }),
        )
            .into_response();
        return with_retry_after(response, &error);
    }
    response
}

/// Drops a caller's `x-request-id` that is not plain (1 to 64 of letters, digits,
/// `.`, `_`, `:`, `-`), so a new one is made: the id goes into logs, error bodies
/// and the audit trail, where a caller must not write what they like.
pub async fn plain_request_id(mut request: Request, next: Next) -> Response {
    let plain = request
        .headers()
        .get(&REQUEST_ID)
        .map(|v| v.as_bytes())
        .is_none_or(|id| {
            (1..=64).contains(&id.len())
                && id
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || b".:_-".contains(b))
        });
    if !plain {
        request.headers_mut().remove(&REQUEST_ID);
    }
    next.run(request).await
}

pub async fn not_found() -> ApiError {
    ApiError::new(ErrorCode::NotFound, "no such endpoint")
}
