//! API errors: a stable machine-readable code, a message for people, and the
//! request id, mapped to a status code in one place.

use axum::Json;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::REQUEST_ID;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    Unauthorized,
    NotFound,
    InvalidRequest,
    UnknownInstitution,
    InvalidState,
    ConsentDenied,
    InstitutionError,
    AdminDisabled,
    Internal,
}

impl ErrorCode {
    fn status(self) -> StatusCode {
        match self {
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::NotFound | Self::UnknownInstitution => StatusCode::NOT_FOUND,
            Self::InvalidRequest | Self::InvalidState | Self::ConsentDenied => {
                StatusCode::BAD_REQUEST
            }
            Self::InstitutionError => StatusCode::BAD_GATEWAY,
            Self::AdminDisabled => StatusCode::FORBIDDEN,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
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

#[derive(Serialize)]
struct Body<'a> {
    error: &'a ApiError,
    request_id: Option<&'a str>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.code.status();
        let mut response = (
            status,
            Json(Body {
                error: &self,
                request_id: None,
            }),
        )
            .into_response();
        // The request id is added by `attach_request_id`, which sees the request.
        response.extensions_mut().insert(self);
        response
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
        return (
            status,
            Json(Body {
                error: &error,
                request_id: id.as_deref(),
            }),
        )
            .into_response();
    }
    response
}

pub async fn not_found() -> ApiError {
    ApiError::new(ErrorCode::NotFound, "no such endpoint")
}
