//! `[endpoints.*]`: paths, paging styles, date windows and the keys each style
//! needs.

use super::*;

impl Validator {
    pub(super) fn endpoint(
        &mut self,
        base: &Url,
        name: &str,
        spec: &EndpointSpec,
        defs: &'static [FieldDef],
        security_defs: Option<&'static [FieldDef]>,
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
        let url = self.url(base, &at("path"), &spec.path);
        let records = self.json_path(&at("records"), &spec.records);
        let records_container = spec
            .records
            .strip_suffix("[*]")
            .and_then(|c| JsonPath::parse(c).ok());
        let paging = self.paging(&at("paging"), &spec.paging);
        let fields = self.mapping(&at("fields"), &spec.fields, defs);
        let security = match security_defs {
            Some(defs) => {
                Some(self.mapping(&at("security_fields"), &spec.security_fields, defs)?)
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
            url: url?,
            query: spec.query.clone(),
            paging: paging?,
            records: records?,
            records_container,
            fields: fields?,
            security,
            sign: spec.sign_convention,
            modified: modified.flatten(),
            removed: removed.flatten(),
            window,
        })
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
        match TimeFormat::parse(&spec.format) {
            Ok(TimeFormat::Pattern(_)) => {}
            _ => self.report(
                format!("{at}.format"),
                format!("`{}` is not a strftime pattern like %Y-%m-%d", spec.format),
            ),
        }
        (self.problems.len() == before).then(|| Window {
            from_param: spec.from_param.clone(),
            to_param: spec.to_param.clone(),
            format: spec.format.clone(),
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

#[cfg(test)]
mod tests {
    use super::super::test_support::{HARBOR, changed, has, problems};

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
}
