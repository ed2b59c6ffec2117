//! Paging: how one endpoint's requests walk from its first page to its last. Each
//! style says two things, here and nowhere else: the parameters of the first
//! request ([`Paging::first_params`]) and, from a page just read, the request for
//! the next one ([`Walk::advance`]). The engine drives a [`Walk`] and knows no style.

use std::collections::HashSet;

use reqwest::header::{HeaderMap, LINK};
use serde_json::Value;
use serde_json_path::JsonPath;
use url::Url;

use super::engine::EngineError;

/// One paging style, compiled from a connector file's `paging` table.
#[derive(Debug, Clone)]
pub enum Paging {
    /// One request returns everything.
    None,
    /// The body names the next page's cursor.
    Cursor {
        cursor_param: String,
        next_cursor: JsonPath,
        page_size_param: Option<String>,
    },
    /// `offset` and `limit`; the list ends at `total`, else at an empty page.
    Offset {
        offset_param: String,
        limit_param: String,
        total: Option<JsonPath>,
    },
    /// Page numbers; an empty page ends the list.
    Page {
        page_param: String,
        page_size_param: Option<String>,
        first_page: u32,
    },
    /// RFC 8288 `Link: <…>; rel="next"`.
    LinkHeader { page_size_param: Option<String> },
    /// The next page's URL in the body (UK Open Banking's `Links.Next`).
    NextLink {
        next: JsonPath,
        page_size_param: Option<String>,
    },
    /// Changes since a token, while `has_more` is true.
    SyncToken {
        token_param: String,
        next_token: JsonPath,
        has_more: JsonPath,
        page_size_param: Option<String>,
        restart_statuses: Vec<u16>,
        restart_codes: Vec<String>,
    },
}

impl Paging {
    /// The first request's parameters: `fixed` (the endpoint's own, a date window's)
    /// and what the style adds to ask for the first page of `page_size` records.
    pub fn first_params(
        &self,
        page_size: u32,
        fixed: Vec<(String, String)>,
    ) -> Vec<(String, String)> {
        let mut params = fixed;
        match self {
            Self::None => {}
            Self::Cursor {
                page_size_param, ..
            }
            | Self::LinkHeader { page_size_param }
            | Self::NextLink {
                page_size_param, ..
            }
            | Self::SyncToken {
                page_size_param, ..
            } => {
                if let Some(p) = page_size_param {
                    params.push((p.clone(), page_size.to_string()));
                }
            }
            Self::Offset {
                offset_param,
                limit_param,
                ..
            } => {
                params.push((offset_param.clone(), "0".into()));
                params.push((limit_param.clone(), page_size.to_string()));
            }
            Self::Page {
                page_param,
                page_size_param,
                first_page,
            } => {
                params.push((page_param.clone(), first_page.to_string()));
                if let Some(p) = page_size_param {
                    params.push((p.clone(), page_size.to_string()));
                }
            }
        }
        params
    }
}

/// One page as the walk sees it.
pub struct PageRead<'a> {
    /// 1 for the first page.
    pub number: usize,
    pub headers: &'a HeaderMap,
    pub body: &'a Value,
    /// Records on this page.
    pub count: usize,
    /// Records on every page so far, this one included.
    pub so_far: usize,
}

/// Where one walk through an endpoint's pages stands: the next request's URL and
/// parameters, and what it must not see twice.
pub struct Walk<'a> {
    paging: &'a Paging,
    /// The endpoint's own URL: the origin a `Link` header may point to.
    origin: &'a Url,
    url: Url,
    params: Vec<(String, String)>,
    seen: HashSet<String>,
    next_token: Option<String>,
}

impl<'a> Walk<'a> {
    /// A walk that starts at `url` with `first_params` ([`Paging::first_params`]).
    pub fn new(paging: &'a Paging, url: &'a Url, first_params: Vec<(String, String)>) -> Self {
        Self {
            paging,
            origin: url,
            url: url.clone(),
            params: first_params,
            seen: HashSet::new(),
            next_token: None,
        }
    }

    /// The next request's URL.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The next request's parameters.
    pub fn params(&self) -> &[(String, String)] {
        &self.params
    }

    /// The sync token the last page handed out (sync-token paging), to resume from.
    pub fn next_token(self) -> Option<String> {
        self.next_token
    }

    /// Reads what `page` says about the next one: `true` when there is one (the
    /// walk now points at it), `false` when this was the last. A page that would
    /// loop (a cursor or token seen before) or cannot go on is unreadable.
    pub fn advance(&mut self, page: &PageRead<'_>) -> Result<bool, EngineError> {
        let number = page.number;
        match self.paging {
            Paging::None => Ok(false),
            Paging::Cursor {
                cursor_param,
                next_cursor,
                ..
            } => match next_cursor.query(page.body).at_most_one() {
                Ok(Some(Value::String(c))) if !c.is_empty() => {
                    if !self.seen.insert(c.clone()) {
                        return Err(EngineError::Unreadable(format!(
                            "the cursor repeated after page {number}"
                        )));
                    }
                    set_param(&mut self.params, cursor_param, c.clone());
                    Ok(true)
                }
                Ok(Some(Value::Number(n))) => {
                    set_param(&mut self.params, cursor_param, n.to_string());
                    Ok(true)
                }
                _ => Ok(false),
            },
            Paging::Offset {
                offset_param,
                total,
                ..
            } => {
                let total = total
                    .as_ref()
                    .and_then(|t| t.query(page.body).at_most_one().ok().flatten())
                    .and_then(|v| v.to_string().parse::<usize>().ok());
                // Without a total, only an empty page ends the list: institutions
                // may cap the page size below what was asked for.
                let more = match total {
                    Some(total) => page.so_far < total && page.count > 0,
                    None => page.count > 0,
                };
                if more {
                    set_param(&mut self.params, offset_param, page.so_far.to_string());
                }
                Ok(more)
            }
            Paging::Page {
                page_param,
                first_page,
                ..
            } => {
                let more = page.count > 0;
                if more {
                    let next = u64::from(*first_page) + number as u64;
                    set_param(&mut self.params, page_param, next.to_string());
                }
                Ok(more)
            }
            Paging::SyncToken {
                token_param,
                next_token,
                has_more,
                ..
            } => {
                let more = matches!(
                    has_more.query(page.body).at_most_one(),
                    Ok(Some(Value::Bool(true)))
                );
                self.next_token = match next_token.query(page.body).at_most_one() {
                    Ok(Some(Value::String(t))) if !t.is_empty() => Some(t.clone()),
                    _ => None,
                };
                match (&self.next_token, more) {
                    (Some(t), true) => {
                        if !self.seen.insert(t.clone()) {
                            return Err(EngineError::Unreadable(format!(
                                "the sync token repeated after page {number}"
                            )));
                        }
                        let t = t.clone();
                        set_param(&mut self.params, token_param, t);
                        Ok(true)
                    }
                    (None, true) => Err(EngineError::Unreadable(format!(
                        "page {number} has more changes but no next token"
                    ))),
                    (_, false) => Ok(false),
                }
            }
            Paging::LinkHeader { .. } => match next_link(page.headers) {
                Some(link) => self.follow(&link, "the Link header"),
                None => Ok(false),
            },
            Paging::NextLink { next, .. } => match next.query(page.body).at_most_one() {
                Ok(Some(Value::String(link))) if !link.is_empty() => {
                    if !self.seen.insert(link.clone()) {
                        return Err(EngineError::Unreadable(format!(
                            "the next link repeated after page {number}"
                        )));
                    }
                    self.follow(&link.clone(), "the next link")
                }
                _ => Ok(false),
            },
        }
    }

    /// Points the walk at `link` (absolute, or relative to the endpoint), which
    /// carries every parameter it needs; `what` names where it came from.
    fn follow(&mut self, link: &str, what: &str) -> Result<bool, EngineError> {
        let next = self
            .origin
            .join(link)
            .map_err(|e| EngineError::Unreadable(format!("{what}'s URL is invalid: {e}")))?;
        // The bearer token goes only where the connector said it may.
        if next.origin() != self.origin.origin() {
            return Err(EngineError::Unreadable(format!(
                "{what} points to another origin ({})",
                next.origin().ascii_serialization()
            )));
        }
        self.url = next;
        self.params.clear();
        Ok(true)
    }
}

/// Sets `name` to `value`, replacing an earlier value.
pub(super) fn set_param(params: &mut Vec<(String, String)>, name: &str, value: String) {
    match params.iter_mut().find(|(n, _)| n == name) {
        Some(slot) => slot.1 = value,
        None => params.push((name.to_owned(), value)),
    }
}

/// The `rel="next"` target of RFC 8288 `Link` headers.
fn next_link(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(LINK)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|link| {
            let (target, params) = link.trim().split_once(';')?;
            let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
            let is_next = params.split(';').any(|p| {
                let Some((key, value)) = p.split_once('=') else {
                    return false;
                };
                key.trim().eq_ignore_ascii_case("rel")
                    && value
                        .trim()
                        .trim_matches('"')
                        .split_whitespace()
                        .any(|r| r.eq_ignore_ascii_case("next"))
            });
            is_next.then(|| target.to_owned())
        })
}

#[cfg(test)]
mod tests {
    use reqwest::header::HeaderValue;
    use serde_json::json;

    use super::*;

    fn path(p: &str) -> JsonPath {
        JsonPath::parse(p).unwrap()
    }

    fn page<'a>(
        number: usize,
        headers: &'a HeaderMap,
        body: &'a Value,
        count: usize,
        so_far: usize,
    ) -> PageRead<'a> {
        PageRead {
            number,
            headers,
            body,
            count,
            so_far,
        }
    }

    #[test]
    fn link_headers_yield_the_next_page() {
        let mut headers = HeaderMap::new();
        headers.insert(
            LINK,
            HeaderValue::from_static(
                r#"<https://x.test/a?page=1>; rel="prev", <https://x.test/a?page=3>; rel="next""#,
            ),
        );
        assert_eq!(
            next_link(&headers).as_deref(),
            Some("https://x.test/a?page=3")
        );
        headers.insert(
            LINK,
            HeaderValue::from_static(r#"<https://x.test/a?page=1>; rel="prev""#),
        );
        assert_eq!(next_link(&headers), None);
    }

    #[test]
    fn a_link_to_another_origin_is_refused() {
        let paging = Paging::LinkHeader {
            page_size_param: None,
        };
        let url = Url::parse("https://bank.test/v1/accounts").unwrap();
        let mut walk = Walk::new(&paging, &url, paging.first_params(50, Vec::new()));
        let mut headers = HeaderMap::new();
        headers.insert(
            LINK,
            HeaderValue::from_static(r#"<https://bank.test/v1/accounts?after=9>; rel="next""#),
        );
        let body = json!({});
        assert!(walk.advance(&page(1, &headers, &body, 3, 3)).unwrap());
        assert_eq!(walk.url().as_str(), "https://bank.test/v1/accounts?after=9");
        assert!(walk.params().is_empty());
        headers.insert(
            LINK,
            HeaderValue::from_static(r#"<https://evil.test/steal>; rel="next""#),
        );
        assert!(walk.advance(&page(2, &headers, &body, 3, 6)).is_err());
    }

    #[test]
    fn offsets_follow_the_records_read_and_stop_at_the_total_or_an_empty_page() {
        let paging = Paging::Offset {
            offset_param: "offset".into(),
            limit_param: "limit".into(),
            total: Some(path("$.total")),
        };
        let url = Url::parse("https://bank.test/accounts").unwrap();
        let first = paging.first_params(2, vec![("q".into(), "x".into())]);
        assert_eq!(
            first,
            [("q", "x"), ("offset", "0"), ("limit", "2")]
                .map(|(a, b)| (a.to_owned(), b.to_owned()))
        );
        let mut walk = Walk::new(&paging, &url, first);
        let headers = HeaderMap::new();
        let body = json!({ "total": 3 });
        assert!(walk.advance(&page(1, &headers, &body, 2, 2)).unwrap());
        assert!(walk.params().contains(&("offset".into(), "2".into())));
        assert!(
            !walk.advance(&page(2, &headers, &body, 1, 3)).unwrap(),
            "the total is reached"
        );

        let untotalled = Paging::Offset {
            offset_param: "offset".into(),
            limit_param: "limit".into(),
            total: None,
        };
        let mut walk = Walk::new(&untotalled, &url, Vec::new());
        assert!(
            walk.advance(&page(1, &headers, &json!({}), 1, 1)).unwrap(),
            "fewer than asked is not the end"
        );
        assert!(!walk.advance(&page(2, &headers, &json!({}), 0, 1)).unwrap());
    }

    #[test]
    fn page_numbers_count_from_the_first_page() {
        let paging = Paging::Page {
            page_param: "page".into(),
            page_size_param: Some("size".into()),
            first_page: 0,
        };
        let url = Url::parse("https://bank.test/accounts").unwrap();
        let mut walk = Walk::new(&paging, &url, paging.first_params(10, Vec::new()));
        assert!(walk.params().contains(&("page".into(), "0".into())));
        let headers = HeaderMap::new();
        assert!(
            walk.advance(&page(1, &headers, &json!({}), 10, 10))
                .unwrap()
        );
        assert!(walk.params().contains(&("page".into(), "1".into())));
        assert!(!walk.advance(&page(2, &headers, &json!({}), 0, 10)).unwrap());
    }

    #[test]
    fn a_cursor_seen_twice_is_a_loop_not_a_page() {
        let paging = Paging::Cursor {
            cursor_param: "cursor".into(),
            next_cursor: path("$.next"),
            page_size_param: None,
        };
        let url = Url::parse("https://bank.test/accounts").unwrap();
        let mut walk = Walk::new(&paging, &url, Vec::new());
        let headers = HeaderMap::new();
        let body = json!({ "next": "abc" });
        assert!(walk.advance(&page(1, &headers, &body, 5, 5)).unwrap());
        assert!(walk.params().contains(&("cursor".into(), "abc".into())));
        assert!(walk.advance(&page(2, &headers, &body, 5, 10)).is_err());
        let mut walk = Walk::new(&paging, &url, Vec::new());
        assert!(
            !walk
                .advance(&page(1, &headers, &json!({ "next": "" }), 5, 5))
                .unwrap()
        );
    }

    #[test]
    fn sync_tokens_go_on_while_there_is_more_and_remember_the_last_token() {
        let paging = Paging::SyncToken {
            token_param: "cursor".into(),
            next_token: path("$.next_cursor"),
            has_more: path("$.has_more"),
            page_size_param: None,
            restart_statuses: Vec::new(),
            restart_codes: Vec::new(),
        };
        let url = Url::parse("https://bank.test/transactions/sync").unwrap();
        let mut walk = Walk::new(&paging, &url, Vec::new());
        let headers = HeaderMap::new();
        let more = json!({ "next_cursor": "t1", "has_more": true });
        assert!(walk.advance(&page(1, &headers, &more, 5, 5)).unwrap());
        let last = json!({ "next_cursor": "t2", "has_more": false });
        assert!(!walk.advance(&page(2, &headers, &last, 5, 10)).unwrap());
        assert_eq!(walk.next_token().as_deref(), Some("t2"));

        let mut walk = Walk::new(&paging, &url, Vec::new());
        let broken = json!({ "has_more": true });
        assert!(walk.advance(&page(1, &headers, &broken, 5, 5)).is_err());
    }
}
