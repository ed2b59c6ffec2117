//! What a user attaches to a transaction: `PATCH /v1/transactions/{transaction_id}`
//! sets its tags and note. The id is the one the read API shows (the institution's),
//! looked up among the calling tenant's connections. Syncs keep what was set: a
//! posted transaction keeps what was set on the pending one it replaces, and a
//! transaction the institution moves to another account keeps its own.

use axum::Router;
use axum::extract::State;
use axum::routing::patch;
use serde::{Deserialize, Deserializer};
use utoipa::{IntoParams, ToSchema};

use super::auth::Tenant;
use super::error::ErrorBody;
use super::extract::{Json, Path, Query};
use super::{ApiError, ApiState, ErrorCode};
use crate::portfolio::TransactionView;
use crate::store::{AnnotationChange, Scope, StoreError};

pub fn routes() -> Router<ApiState> {
    Router::new().route("/v1/transactions/{transaction_id}", patch(annotate))
}

const MAX_TAGS: usize = 20;
const MAX_TAG_CHARS: usize = 64;
const MAX_NOTE_CHARS: usize = 2000;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct AnnotateQuery {
    /// The transaction's connection (an id from `/connections`); needed only when
    /// two of the tenant's connections have a transaction with this id.
    connection_id: Option<String>,
}

/// What to change; a field left out stays as it is.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct AnnotateRequest {
    /// Replaces the tags: at most 20, each 1 to 64 characters once trimmed;
    /// a repeated tag is kept once.
    #[serde(default, deserialize_with = "present")]
    #[schema(nullable = false, max_items = 20)]
    tags: Option<Vec<String>>,
    /// Replaces the note (at most 2000 characters); `null` or an empty note clears it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, max_length = 2000)]
    note: Option<Option<String>>,
}

/// A field that is in the body, even as `null`: tells "clear" from "leave".
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

fn validated(request: AnnotateRequest) -> Result<AnnotationChange, ApiError> {
    let tags = match request.tags {
        None => None,
        Some(given) => {
            if given.len() > MAX_TAGS {
                return Err(ApiError::invalid(format!(
                    "at most {MAX_TAGS} tags; got {}",
                    given.len()
                )));
            }
            let mut tags: Vec<String> = Vec::with_capacity(given.len());
            for (position, tag) in given.iter().enumerate() {
                let tag = tag.trim();
                let chars = tag.chars().count();
                if !(1..=MAX_TAG_CHARS).contains(&chars) {
                    return Err(ApiError::invalid(format!(
                        "each tag must be 1 to {MAX_TAG_CHARS} characters once trimmed; tag {} has {chars}",
                        position + 1
                    )));
                }
                if !tags.iter().any(|t| t == tag) {
                    tags.push(tag.to_owned());
                }
            }
            Some(tags)
        }
    };
    let note = match request.note {
        Some(Some(note)) if note.chars().count() > MAX_NOTE_CHARS => {
            return Err(ApiError::invalid(format!(
                "the note must be at most {MAX_NOTE_CHARS} characters"
            )));
        }
        Some(note) => Some(note.filter(|n| !n.trim().is_empty())),
        None => None,
    };
    Ok(AnnotationChange { tags, note })
}

/// Sets the tags and note of one of the tenant's transactions and answers with the
/// transaction as `/transactions` shows it. A write: the API key needs the `sync`
/// scope. The portfolio shows the change at once; a posted transaction keeps what
/// was set on the pending one it replaces, a transaction moved to another account
/// keeps its own, and syncs never change it.
#[utoipa::path(
    patch, path = "/v1/transactions/{transaction_id}", tag = "annotations",
    params(
        ("transaction_id" = String, Path, description = "The transaction's `id`, as `/transactions` and the portfolio show it"),
        AnnotateQuery,
    ),
    request_body = AnnotateRequest,
    responses(
        (status = 200, body = TransactionView),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "Several connections have a transaction with this id: give `connection_id`"),
        (status = 429, body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub(super) async fn annotate(
    State(state): State<ApiState>,
    tenant: Tenant,
    Path(transaction_id): Path<String>,
    Query(query): Query<AnnotateQuery>,
    Json(request): Json<AnnotateRequest>,
) -> Result<Json<TransactionView>, ApiError> {
    tenant.require(Scope::Sync)?;
    let not_found = || ApiError::not_found(format!("no transaction `{transaction_id}`"));
    let connection = match query.connection_id.as_deref() {
        None => None,
        // Not an id this API hands out: nothing of the tenant's has it.
        Some(raw) => Some(raw.parse().map_err(|_| not_found())?),
    };
    let change = validated(request)?;
    let ctx = &state.env;
    let annotated = ctx
        .store
        .annotate_transaction(tenant.tenant.id, &transaction_id, connection, change)
        .await
        .map_err(|e| match e {
            StoreError::NotFound(_) => not_found(),
            StoreError::Conflict(message) => ApiError::new(ErrorCode::Conflict, message),
            e => ApiError::internal(e),
        })?;
    let record = ctx.store.connection(annotated.connection).await?;
    ctx.refresh_portfolio(&record).await?;
    Ok(Json(TransactionView::from_record(
        annotated.connection.to_string(),
        annotated.transaction,
        annotated.annotations,
    )))
}
