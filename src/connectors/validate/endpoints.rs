//! `[endpoints.*]`: paths, paging styles, date windows and the keys each style
//! needs.

use super::*;
use crate::connectors::SignConvention;
use crate::connectors::mapping::member_names;

impl Validator {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn endpoint(
        &mut self,
        base: &Url,
        name: &str,
        spec: &EndpointSpec,
        defs: &'static [FieldDef],
        security_defs: Option<&'static [FieldDef]>,
        file_headers: &BTreeMap<String, HeaderSpec>,
        provided: Vec<&'static str>,
    ) -> Option<Endpoint> {
        let at = |key: &str| format!("endpoints.{name}.{key}");
        let method = match spec.method.to_ascii_uppercase().as_str() {
            "GET" => Some(reqwest::Method::GET),
            "POST" => Some(reqwest::Method::POST),
            other => {
                self.report(
                    at("method"),
                    format!("`{other}` is not supported: use GET or POST"),
                );
                None
            }
        };
        let fan_out = self.fan_out(name, spec);
        let path = self.template(&at("path"), &spec.path);
        if let Some(path) = &path {
            self.url(base, &at("path"), &path.sample());
        }
        let mut query = Vec::new();
        for (key, raw) in &spec.query {
            if let Some(value) = self.template(&at(&format!("query.{key}")), raw) {
                query.push((key.clone(), value));
            }
        }
        let names_account = path.as_ref().is_some_and(Template::names_account)
            || query.iter().any(|(_, t)| t.names_account());
        match (&fan_out, names_account) {
            (Some(Some(_)), false) => self.report(
                at("path"),
                "a fan-out request must say which account it is for: name it in the path or the query, e.g. `accounts/{account.external_id}`",
            ),
            (Some(None), true) => self.report(
                at("path"),
                "names an account, so the endpoint must run once per account: add `for_each = \"accounts\"`",
            ),
            _ => {}
        }
        let fans_out = matches!(fan_out, Some(Some(_)));
        let headers = self.headers(name, file_headers, &spec.headers, fans_out);
        let joins = self.joins(&at("joins"), spec);
        let records = self.json_path(&at("records"), &spec.records);
        let records_container = spec
            .records
            .strip_suffix("[*]")
            .and_then(|c| JsonPath::parse(c).ok());
        let record_lists = std::iter::once(&spec.records)
            .chain(spec.modified.as_ref())
            .map(|raw| raw.strip_suffix("[*]").and_then(member_names))
            .collect::<Option<Vec<_>>>()
            .filter(|lists| spec.joins.is_empty() && (lists.len() == 1 || lists[0] != lists[1]));
        let lists_as_text = record_lists
            .as_ref()
            .is_some_and(|lists| lists_apart(lists, spec));
        let paging = self.paging(&at("paging"), &spec.paging);
        let scopes = Scopes {
            fan_out: fans_out,
            joins: spec.joins.keys().cloned().collect(),
            provided,
        };
        let fields = self.mapping(&at("fields"), &spec.fields, defs, &scopes);
        let security = match security_defs {
            Some(defs) => {
                Some(self.mapping(&at("security_fields"), &spec.security_fields, defs, &scopes)?)
            }
            None => {
                if !spec.security_fields.is_empty() {
                    self.report(
                        at("security_fields"),
                        "only the holdings endpoint has security fields",
                    );
                }
                None
            }
        };
        if spec.sign_convention == SignConvention::OutflowPositive
            && spec.fields.get("amount").is_some_and(|f| f.sign.is_some())
        {
            self.report(
                at("sign_convention"),
                "the amount takes its sign from `fields.amount.sign`; remove `sign_convention`",
            );
        }
        let sync_token = matches!(spec.paging, PagingSpec::SyncToken { .. });
        if sync_token && name != "transactions" {
            self.report(
                at("paging"),
                "`sync-token` paging is for the transactions endpoint only",
            );
        }
        let mut changes = |key: &str, raw: &Option<String>| match raw {
            Some(_) if !sync_token => {
                self.report(
                    at(key),
                    "only an endpoint with `sync-token` paging has modified and removed records",
                );
                None
            }
            Some(raw) => Some(self.json_path(&at(key), raw)),
            None => None,
        };
        let modified = changes("modified", &spec.modified);
        let removed = changes("removed", &spec.removed);
        let window = spec.window.as_ref().and_then(|w| {
            if sync_token {
                self.report(
                    at("window"),
                    "a `sync-token` endpoint already fetches only what changed; remove the window",
                );
            }
            if name != "transactions" {
                self.report(at("window"), "only the transactions endpoint walks dates");
            }
            self.window(&at("window"), w)
        });
        if spec.deferrable && name == "accounts" {
            self.report(
                at("deferrable"),
                "accounts are never deferred: every sync needs them",
            );
        }
        Some(Endpoint {
            deferrable: spec.deferrable,
            method: method?,
            base_url: base.clone(),
            path: path?,
            query,
            headers: headers?,
            fan_out: fan_out.flatten(),
            joins: joins?,
            paging: paging?,
            records: records?,
            records_container,
            record_lists,
            lists_as_text,
            fields: fields?,
            security,
            sign: spec.sign_convention,
            modified: modified.flatten(),
            removed: removed.flatten(),
            window,
        })
    }

    /// `for_each` and `when`: `Some(None)` for an endpoint that does not fan out,
    /// `None` when what it says is wrong.
    fn fan_out(&mut self, name: &str, spec: &EndpointSpec) -> Option<Option<FanOut>> {
        let at = |key: &str| format!("endpoints.{name}.{key}");
        let details = name.starts_with("details.");
        match spec.for_each.as_deref() {
            None if details => {
                self.report(
                    at("for_each"),
                    "a details endpoint fills the fields of one account at a time: add `for_each = \"accounts\"`",
                );
                None
            }
            None => {
                if spec.when.is_some() {
                    self.report(
                        at("when"),
                        "only a fan-out endpoint (`for_each`) chooses accounts",
                    );
                }
                Some(None)
            }
            Some(_) if name == "accounts" => {
                self.report(
                    at("for_each"),
                    "the accounts endpoint is what others fan out over",
                );
                None
            }
            Some("accounts") => {
                // A bad filter is reported; the endpoint is still read as fanning out,
                // so what else is wrong with it is found too.
                let when = spec.when.as_ref().and_then(|filter| {
                    JsonPath::parse(&format!("$[?{filter}]"))
                        .map_err(|e| {
                            self.report(
                                at("when"),
                                format!("`{filter}` is not an RFC 9535 filter expression like `@.accountCategory == 'INVESTMENT_ACCOUNT'`: {e}"),
                            );
                        })
                        .ok()
                });
                Some(Some(FanOut { when }))
            }
            Some(other) => {
                self.report(
                    at("for_each"),
                    format!("`{other}` is not something to fan out over: use \"accounts\""),
                );
                None
            }
        }
    }

    fn template(&mut self, at: &str, raw: &str) -> Option<Template> {
        match Template::parse(raw) {
            Ok(template) => Some(template),
            Err(problem) => {
                self.report(at, problem);
                None
            }
        }
    }

    /// The file's headers and then the endpoint's (which win by name).
    fn headers(
        &mut self,
        name: &str,
        file: &BTreeMap<String, HeaderSpec>,
        own: &BTreeMap<String, HeaderSpec>,
        fan_out: bool,
    ) -> Option<Vec<(reqwest::header::HeaderName, Header)>> {
        let before = self.problems.len();
        let mut headers: Vec<(reqwest::header::HeaderName, Header)> = Vec::new();
        let layers = [
            ("headers".to_owned(), file),
            (format!("endpoints.{name}.headers"), own),
        ];
        for (table, specs) in layers {
            for (key, spec) in specs {
                let at = format!("{table}.{key}");
                let Ok(header) = reqwest::header::HeaderName::from_bytes(key.as_bytes()) else {
                    self.report(at, "is not a valid HTTP header name");
                    continue;
                };
                if header == reqwest::header::AUTHORIZATION {
                    self.report(at, "finsync sends the user's access token as `Authorization`; it cannot be set here");
                    continue;
                }
                let value = match spec {
                    HeaderSpec::Secret(secret) => {
                        self.secret_env(&at, &secret.env);
                        Header::Secret(secret.env.clone())
                    }
                    // Checked against `auth.token_response.keep` with the whole file.
                    HeaderSpec::Connection(value) => Header::Connection(value.connection.clone()),
                    HeaderSpec::Text(raw) => {
                        let Some(template) = self.template(&at, raw) else {
                            continue;
                        };
                        if template.names_account() && !fan_out {
                            self.report(
                                &at,
                                "names an account, but this endpoint does not run once per account",
                            );
                            continue;
                        }
                        if reqwest::header::HeaderValue::from_str(&template.sample()).is_err() {
                            self.report(&at, "is not a valid HTTP header value");
                            continue;
                        }
                        Header::Text(template)
                    }
                };
                headers.retain(|(h, _)| *h != header);
                headers.push((header, value));
            }
        }
        (self.problems.len() == before).then_some(headers)
    }

    fn joins(&mut self, at: &str, spec: &EndpointSpec) -> Option<Vec<Join>> {
        let before = self.problems.len();
        let mut joins = Vec::new();
        for (name, join) in &spec.joins {
            if matches!(name.as_str(), "record" | "account") {
                self.report(
                    format!("{at}.{name}"),
                    "`record` and `account` are taken: name the join after what it finds",
                );
                continue;
            }
            let list = self.json_path(&format!("{at}.{name}.list"), &join.list);
            let key = self.json_path(&format!("{at}.{name}.key"), &join.key);
            let on = self.json_path(&format!("{at}.{name}.on"), &join.on);
            if let (Some(list), Some(key), Some(on)) = (list, key, on) {
                joins.push(Join {
                    name: name.clone(),
                    list,
                    key,
                    on,
                });
            }
        }
        (self.problems.len() == before).then_some(joins)
    }

    pub(super) fn window(&mut self, at: &str, spec: &WindowSpec) -> Option<Window> {
        let before = self.problems.len();
        if spec.step_days == 0 || spec.step_days > MAX_WINDOW_DAYS {
            self.report(
                format!("{at}.step_days"),
                format!("must be 1 to {MAX_WINDOW_DAYS}"),
            );
        }
        if spec.history_days > MAX_WINDOW_DAYS {
            self.report(
                format!("{at}.history_days"),
                format!("must be at most {MAX_WINDOW_DAYS} (about 100 years)"),
            );
        }
        if spec.lookback_days > spec.history_days {
            self.report(
                format!("{at}.lookback_days"),
                "cannot reach further back than `history_days`",
            );
        }
        if spec.from_param.is_empty() || spec.to_param.is_empty() {
            self.report(at, "`from_param` and `to_param` must name query parameters");
        }
        for (key, pattern) in [
            ("format", Some(&spec.format)),
            ("to_format", spec.to_format.as_ref()),
        ] {
            let Some(pattern) = pattern else { continue };
            match TimeFormat::parse(pattern) {
                Ok(TimeFormat::Pattern(_)) => {}
                _ => self.report(
                    format!("{at}.{key}"),
                    format!("`{pattern}` is not a strftime pattern like %Y-%m-%d"),
                ),
            }
        }
        (self.problems.len() == before).then(|| Window {
            from_param: spec.from_param.clone(),
            to_param: spec.to_param.clone(),
            format: spec.format.clone(),
            to_format: spec
                .to_format
                .clone()
                .unwrap_or_else(|| spec.format.clone()),
            step_days: spec.step_days,
            history_days: spec.history_days,
            lookback_days: spec.lookback_days,
        })
    }

    pub(super) fn paging(&mut self, at: &str, spec: &PagingSpec) -> Option<Paging> {
        Some(match spec {
            PagingSpec::None => Paging::None,
            PagingSpec::Cursor {
                cursor_param,
                next_cursor,
                page_size_param,
            } => Paging::Cursor {
                cursor_param: cursor_param.clone(),
                next_cursor: self.json_path(&format!("{at}.next_cursor"), next_cursor)?,
                page_size_param: page_size_param.clone(),
            },
            PagingSpec::Offset {
                offset_param,
                limit_param,
                total,
            } => Paging::Offset {
                offset_param: offset_param.clone(),
                limit_param: limit_param.clone(),
                total: match total {
                    Some(p) => Some(self.json_path(&format!("{at}.total"), p)?),
                    None => None,
                },
            },
            PagingSpec::Page {
                page_param,
                page_size_param,
                first_page,
            } => Paging::Page {
                page_param: page_param.clone(),
                page_size_param: page_size_param.clone(),
                first_page: *first_page,
            },
            PagingSpec::LinkHeader { page_size_param } => Paging::LinkHeader {
                page_size_param: page_size_param.clone(),
            },
            PagingSpec::NextLink {
                next,
                page_size_param,
            } => Paging::NextLink {
                next: self.json_path(&format!("{at}.next"), next)?,
                page_size_param: page_size_param.clone(),
            },
            PagingSpec::SyncToken {
                token_param,
                next_token,
                has_more,
                page_size_param,
                restart_statuses,
                restart_codes,
            } => {
                let next_token = self.json_path(&format!("{at}.next_token"), next_token);
                let has_more = self.json_path(&format!("{at}.has_more"), has_more);
                Paging::SyncToken {
                    token_param: token_param.clone(),
                    next_token: next_token?,
                    has_more: has_more?,
                    page_size_param: page_size_param.clone(),
                    restart_statuses: restart_statuses.clone(),
                    restart_codes: restart_codes.clone(),
                }
            }
        })
    }
}

/// Whether a page's plain lists may be kept as text ([`Endpoint::lists_as_text`]):
/// the page's other paths (paging's, the removed ids') each start with member names
/// that part from every list's, so none of them reads into a list or around one.
fn lists_apart(lists: &[Vec<String>], spec: &EndpointSpec) -> bool {
    let paging: Vec<&String> = match &spec.paging {
        PagingSpec::Cursor { next_cursor, .. } => vec![next_cursor],
        PagingSpec::Offset { total, .. } => total.iter().collect(),
        PagingSpec::NextLink { next, .. } => vec![next],
        PagingSpec::SyncToken {
            next_token,
            has_more,
            ..
        } => vec![next_token, has_more],
        PagingSpec::None | PagingSpec::Page { .. } | PagingSpec::LinkHeader { .. } => vec![],
    };
    paging.into_iter().chain(&spec.removed).all(|raw| {
        let names = leading_names(raw);
        lists.iter().all(|list| {
            let shared = names
                .iter()
                .zip(list)
                .take_while(|(name, listed)| name == listed)
                .count();
            shared < names.len() && shared < list.len()
        })
    })
}

/// The member names a path starts with (`$.a.b[*].c` starts with `a`, `b`), by the
/// rule of a field's plain form ([`member_names`]); none for a path that starts any
/// other way (`$..a`, `$['a']`, `$.*`).
fn leading_names(raw: &str) -> Vec<String> {
    let end = raw
        .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '$')))
        .unwrap_or(raw.len());
    member_names(&raw[..end]).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{HARBOR, MERIDIAN, changed, has, problems};

    /// Whether `text`'s transactions endpoint keeps its lists' records as text.
    fn as_text(text: &str) -> bool {
        let connector = super::super::validate_str("draft.toml", "draft", text, None)
            .expect("the file validates");
        connector
            .transactions
            .expect("a transactions endpoint")
            .lists_as_text
    }

    /// A page's lists are kept as text only when no other path of the page reads
    /// into them: paging and removed ids that part from the lists' names.
    #[test]
    fn lists_are_kept_as_text_where_nothing_else_reads_into_them() {
        assert!(
            as_text(MERIDIAN),
            "$.added[*] beside $.next_cursor, $.has_more, $.removed"
        );
        for (from, to) in [
            (
                "next_token = \"$.next_cursor\"",
                "next_token = \"$.added[-1:].transaction_id\"",
            ),
            ("has_more = \"$.has_more\"", "has_more = \"$..has_more\""),
            (
                "removed = \"$.removed[*].transaction_id\"",
                "removed = \"$.modified[?@.gone].transaction_id\"",
            ),
            (
                "removed = \"$.removed[*].transaction_id\"",
                "removed = \"$['removed'][*].transaction_id\"",
            ),
        ] {
            assert!(!as_text(&changed(MERIDIAN, from, to)), "{to}");
        }
        let nested = changed(
            MERIDIAN,
            "records = \"$.added[*]\"",
            "records = \"$.page.added[*]\"",
        );
        assert!(as_text(&nested));
        let around = changed(
            &nested,
            "has_more = \"$.has_more\"",
            "has_more = \"$.page\"",
        );
        assert!(
            !as_text(&around),
            "a path that reads the object holding a list"
        );
    }

    #[test]
    fn only_transactions_page_by_sync_token() {
        let found = problems(&changed(
            HARBOR,
            "paging = { type = \"offset\", offset_param = \"offset\", limit_param = \"limit\", total = \"$.total\" }",
            "paging = { type = \"sync-token\", token_param = \"cursor\", next_token = \"$.next\", has_more = \"$.more\" }",
        ));
        has(
            &found,
            "endpoints.accounts.paging",
            "transactions endpoint only",
        );
    }

    #[test]
    fn unsupported_methods_and_deferred_accounts_are_refused() {
        let text = changed(
            HARBOR,
            "path = \"api/accounts\"",
            "path = \"api/accounts\"\nmethod = \"PUT\"\ndeferrable = true",
        );
        let found = problems(&text);
        has(&found, "endpoints.accounts.method", "use GET or POST");
        has(&found, "endpoints.accounts.deferrable", "never deferred");
    }

    #[test]
    fn fan_out_is_declared_where_an_account_is_named_and_nowhere_else() {
        let text = changed(
            HARBOR,
            "path = \"api/transactions\"",
            "path = \"api/accounts/{account.external_id}/transactions\"",
        );
        has(
            &problems(&text),
            "endpoints.transactions.path",
            "add `for_each = \"accounts\"`",
        );
        let text = changed(
            HARBOR,
            "path = \"api/transactions\"",
            "path = \"api/transactions\"\nfor_each = \"accounts\"\nwhen = \"@.kind ==\"",
        );
        let found = problems(&text);
        has(
            &found,
            "endpoints.transactions.path",
            "must say which account",
        );
        has(
            &found,
            "endpoints.transactions.when",
            "not an RFC 9535 filter expression",
        );
        let text = changed(
            HARBOR,
            "path = \"api/accounts\"",
            "path = \"api/accounts\"\nfor_each = \"accounts\"",
        );
        has(
            &problems(&text),
            "endpoints.accounts.for_each",
            "what others fan out over",
        );
    }

    #[test]
    fn a_fan_out_endpoint_fills_the_account_of_its_records() {
        let text = changed(
            HARBOR,
            "path = \"api/transactions\"",
            "path = \"api/accounts/{account.external_id}/transactions\"\nfor_each = \"accounts\"",
        );
        let text = changed(
            &text,
            "account_external_id = { path = \"$.account_number\" }\n",
            "",
        );
        let text = changed(
            &text,
            "currency = { path = \"$.currency\" }\ndate",
            "currency = { path = \"$.currency\", from = \"account\" }\ndate",
        );
        assert_eq!(problems(&text), Vec::new());
        // Without fan-out, neither the account nor its id is there to read.
        let text = changed(
            HARBOR,
            "currency = { path = \"$.currency\" }\ndate",
            "currency = { path = \"$.currency\", from = \"account\" }\ndate",
        );
        has(
            &problems(&text),
            "endpoints.transactions.fields.currency.from",
            "only a fan-out endpoint",
        );
    }

    #[test]
    fn signs_joins_and_headers_are_checked_where_they_are_written() {
        let text = changed(
            HARBOR,
            "amount = { path = \"$.amount\", minor_units = 2 }",
            "amount = { path = \"$.amount\", minor_units = 2, sign = { path = \"dir\", map = { D = \"minus\" } } }",
        );
        let found = problems(&text);
        has(
            &found,
            "endpoints.transactions.fields.amount.sign.path",
            "must start with `$`",
        );
        has(
            &found,
            "endpoints.transactions.fields.amount.sign.map.D",
            "use \"+\" or \"-\"",
        );
        has(
            &found,
            "endpoints.transactions.sign_convention",
            "remove `sign_convention`",
        );
        let text = changed(
            HARBOR,
            "description = { path = \"$.memo\" }",
            "description = { path = \"$.memo\", sign = { path = \"$.d\", map = { D = \"-\" } }, from = \"merchant\" }",
        );
        let found = problems(&text);
        has(
            &found,
            "endpoints.transactions.fields.description.from",
            "use one of: record",
        );
        let text = changed(
            HARBOR,
            "[endpoints.accounts]",
            "[headers]\nAuthorization = \"x\"\n\"x-request-id\" = \"{uuid\"\n\n[endpoints.accounts]",
        );
        let found = problems(&text);
        has(&found, "headers.Authorization", "cannot be set here");
        has(&found, "headers.x-request-id", "never closed");
        let text = changed(
            HARBOR,
            "records = \"$.data[*]\"\npaging = { type = \"offset\", offset_param = \"offset\", limit_param = \"limit\", total = \"$.total\" }\nsign_convention",
            "records = \"$.data[*]\"\njoins = { memo = { list = \"$.memos[*]\", key = \"id\", on = \"$.memo_id\" } }\npaging = { type = \"offset\", offset_param = \"offset\", limit_param = \"limit\", total = \"$.total\" }\nsign_convention",
        );
        has(
            &problems(&text),
            "endpoints.transactions.joins.memo.key",
            "must start with `$`",
        );
    }

    #[test]
    fn a_token_in_the_body_needs_post_and_details_name_one_record() {
        let text = changed(
            HARBOR,
            "login_hint_param = \"login_hint\"",
            "login_hint_param = \"login_hint\"\naccess_token_param = \"access_token\"",
        );
        has(
            &problems(&text),
            "auth.access_token_param",
            "must be `method = \"POST\"`",
        );
        let text = changed(
            HARBOR,
            "[endpoints.transactions]",
            "[endpoints.details.balances]\nfor_each = \"accounts\"\npath = \"api/accounts/{account.external_id}\"\nrecords = \"$.balances[*]\"\n[endpoints.details.balances.fields]\nbalance_available = { path = \"$.available\" }\n\n[endpoints.transactions]",
        );
        has(
            &problems(&text),
            "endpoints.details.balances.records",
            "selects a list",
        );
    }
}
