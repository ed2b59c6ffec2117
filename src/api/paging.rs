//! Cursor paging, one shape for every list that pages: `limit` (a bounded page
//! size) and `cursor` in the query, `next_cursor` in the answer (absent on the last
//! page). A cursor is opaque to callers: the list's own position after the last
//! item it returned, as URL-safe base64 of JSON.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::ApiError;

/// `limit`, or `default` without one; refused outside 1 to `max`.
pub(super) fn limit(asked: Option<u32>, default: u32, max: u32) -> Result<u32, ApiError> {
    let limit = asked.unwrap_or(default);
    if (1..=max).contains(&limit) {
        Ok(limit)
    } else {
        Err(ApiError::invalid(format!(
            "`limit` must be between 1 and {max}"
        )))
    }
}

/// The cursor that resumes after `position`.
pub(super) fn cursor<T: Serialize>(position: &T) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(position).unwrap_or_default())
}

/// The position a cursor this API returned stands for.
pub(super) fn position<T: DeserializeOwned>(raw: &str) -> Result<T, ApiError> {
    let invalid = || ApiError::invalid("`cursor` is not a cursor this API returned");
    let bytes = URL_SAFE_NO_PAD.decode(raw).map_err(|_| invalid())?;
    serde_json::from_slice(&bytes).map_err(|_| invalid())
}

/// The first `limit` of `items` (fetched one past the page) and, when there were
/// more, the cursor after the last one kept.
pub(super) fn page<I, P: Serialize>(
    mut items: Vec<I>,
    limit: u32,
    position: impl Fn(&I) -> P,
) -> (Vec<I>, Option<String>) {
    let limit = limit as usize;
    if items.len() <= limit {
        return (items, None);
    }
    items.truncate(limit);
    let next = items.last().map(|last| cursor(&position(last)));
    (items, next)
}

/// `limit` and `cursor`, for a list with no other parameters.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct PageQuery {
    /// Items per page, 1 to 500, 100 by default.
    #[param(minimum = 1, maximum = 500)]
    pub(super) limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub(super) cursor: Option<String>,
}

/// A page of a short list read whole: `items` in ascending `position` order, from
/// after the position `query`'s cursor names.
pub(super) fn page_of<I, P>(
    items: Vec<I>,
    query: &PageQuery,
    position: impl Fn(&I) -> P,
) -> Result<(Vec<I>, Option<String>), ApiError>
where
    P: Serialize + DeserializeOwned + Ord,
{
    let limit = limit(query.limit, 100, 500)?;
    let after: Option<P> = query.cursor.as_deref().map(self::position).transpose()?;
    let rest: Vec<I> = items
        .into_iter()
        .filter(|item| after.as_ref().is_none_or(|a| position(item) > *a))
        .take(limit as usize + 1)
        .collect();
    Ok(page(rest, limit, position))
}
