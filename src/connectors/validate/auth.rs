//! `base_url`, `[auth]` and what they refer to: absolute URLs joined to the base,
//! secrets only by reference (a variable's name, never its value), header names.

use super::*;

/// A day: longer than any grace period seen in the wild (minutes at most).
const MAX_REUSE_GRACE_SECS: u64 = 86_400;

impl Validator {
    pub(super) fn base_url(&mut self, raw: &str) -> Option<Url> {
        match Url::parse(raw) {
            Ok(url) if matches!(url.scheme(), "http" | "https") => {
                // A trailing slash makes `join` keep the last path segment.
                let mut url = url;
                if !url.path().ends_with('/') {
                    let path = format!("{}/", url.path());
                    url.set_path(&path);
                }
                Some(url)
            }
            Ok(url) => {
                self.report(
                    "base_url",
                    format!("scheme `{}` is not http or https", url.scheme()),
                );
                None
            }
            Err(e) => {
                self.report("base_url", format!("`{raw}` is not an absolute URL: {e}"));
                None
            }
        }
    }

    pub(super) fn url(&mut self, base: &Url, path: &str, raw: &str) -> Option<Url> {
        let joined = if raw.starts_with("http://") || raw.starts_with("https://") {
            Url::parse(raw)
        } else {
            base.join(raw.trim_start_matches('/'))
        };
        match joined {
            Ok(url) => Some(url),
            Err(e) => {
                self.report(path, format!("`{raw}` is not a URL or a path: {e}"));
                None
            }
        }
    }

    /// A secret reference must name a variable, so that a secret pasted into the
    /// file is refused rather than published with it.
    pub(super) fn secret_env(&mut self, path: &str, env: &str) {
        if env.is_empty()
            || !env
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        {
            self.report(
                path,
                // The value may be a pasted secret: it is not repeated in the report.
                "must be the NAME of an environment variable (A-Z, 0-9, _), never the secret itself; the value given is not shown",
            );
        }
    }

    pub(super) fn header_name(&mut self, path: &str, name: &str) {
        if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
            self.report(path, format!("`{name}` is not an HTTP header name"));
        }
    }

    pub(super) fn auth(&mut self, base: &Url, spec: &OAuth2Spec) -> Option<OAuth2> {
        let authorize_url = self.url(base, "auth.authorize_url", &spec.authorize_url);
        let token_url = self.url(base, "auth.token_url", &spec.token_url);
        let revocation_url = spec
            .revocation_url
            .as_deref()
            .map(|u| self.url(base, "auth.revocation_url", u));
        let env = &spec.client_secret.env;
        self.secret_env("auth.client_secret.env", env);
        if spec.scopes.is_empty() {
            self.report("auth.scopes", "list at least one scope");
        }
        if spec.scope_separator.is_empty() {
            self.report("auth.scope_separator", "must not be empty");
        }
        if spec.token_response.default_lifetime_secs == 0 {
            self.report(
                "auth.token_response.default_lifetime_secs",
                "must be at least 1",
            );
        }
        self.kept_values(&spec.token_response.keep);
        if let Some(grace) = spec.refresh_token_reuse_grace_secs {
            let path = "auth.refresh_token_reuse_grace_secs";
            if !spec.rotating_refresh_tokens {
                self.report(
                    path,
                    "only means something with `rotating_refresh_tokens = true`: a refresh token that is never rotated out is always reused",
                );
            } else if !(1..=MAX_REUSE_GRACE_SECS).contains(&grace) {
                self.report(
                    path,
                    format!("must be 1 to {MAX_REUSE_GRACE_SECS} seconds (leave it out if the institution has no grace period)"),
                );
            }
        }
        if spec
            .access_token_param
            .as_deref()
            .is_some_and(|p| p.trim().is_empty())
        {
            self.report(
                "auth.access_token_param",
                "must name the parameter (e.g. access_token), or be left out for a Bearer header",
            );
        }
        Some(OAuth2 {
            authorize_url: authorize_url?,
            token_url: token_url?,
            revocation_url: match revocation_url {
                Some(url) => Some(url?),
                None => None,
            },
            client_id: spec.client_id.clone(),
            client_secret_env: env.clone(),
            client_auth: spec.client_auth,
            scopes: spec.scopes.clone(),
            scope_separator: spec.scope_separator.clone(),
            pkce: spec.pkce,
            consent_lifetime_days: spec.consent_lifetime_days,
            rotating_refresh_tokens: spec.rotating_refresh_tokens,
            refresh_token_reuse_grace: spec
                .refresh_token_reuse_grace_secs
                .filter(|_| spec.rotating_refresh_tokens)
                .map(std::time::Duration::from_secs),
            login_hint_param: spec.login_hint_param.clone(),
            extra_token_params: spec.extra_token_params.clone(),
            token_response: spec.token_response.clone(),
            access_token_param: spec.access_token_param.clone(),
        })
    }

    /// `[auth.token_response] keep`: names of fields beside the tokens, each once.
    fn kept_values(&mut self, keep: &[String]) {
        let mut seen = BTreeSet::new();
        for (i, name) in keep.iter().enumerate() {
            let at = format!("auth.token_response.keep[{i}]");
            if name.trim().is_empty() {
                self.report(
                    at,
                    "must name a field of the token response, e.g. consent_id",
                );
            } else if STANDARD_TOKEN_FIELDS.contains(&name.as_str()) {
                self.report(
                    at,
                    format!("`{name}` is one of the OAuth token response's own fields, which finsync reads itself; tokens are never sent as header values"),
                );
            } else if !seen.insert(name.as_str()) {
                self.report(at, format!("`{name}` is listed twice"));
            }
        }
    }

    /// Every `{ connection = "…" }` header names a value the grant keeps.
    pub(super) fn connection_headers(&mut self, spec: &ConnectorFile) {
        let keep = &spec.auth.token_response.keep;
        let endpoints = [("accounts".to_owned(), &spec.endpoints.accounts)]
            .into_iter()
            .chain(
                spec.endpoints
                    .holdings
                    .iter()
                    .map(|e| ("holdings".to_owned(), e)),
            )
            .chain(
                spec.endpoints
                    .transactions
                    .iter()
                    .map(|e| ("transactions".to_owned(), e)),
            )
            .chain(
                spec.endpoints
                    .details
                    .iter()
                    .map(|(n, e)| (format!("details.{n}"), e)),
            );
        let tables = [("headers".to_owned(), &spec.headers)]
            .into_iter()
            .chain(endpoints.map(|(name, e)| (format!("endpoints.{name}.headers"), &e.headers)));
        for (table, headers) in tables {
            for (key, header) in headers {
                if let HeaderSpec::Connection(value) = header
                    && !keep.contains(&value.connection)
                {
                    self.report(
                        format!("{table}.{key}.connection"),
                        format!(
                            "`{}` is not a value the connection keeps: add it to `keep` under [auth.token_response]",
                            value.connection
                        ),
                    );
                }
            }
        }
    }
}

/// RFC 6749 §5.1's fields (and OpenID Connect's `id_token`).
const STANDARD_TOKEN_FIELDS: [&str; 6] = [
    "access_token",
    "refresh_token",
    "id_token",
    "token_type",
    "expires_in",
    "scope",
];

#[cfg(test)]
mod tests {
    use super::super::test_support::{HARBOR, changed, has, problems};

    #[test]
    fn a_reuse_grace_needs_rotating_tokens_and_a_sensible_length() {
        let with = |rotating: &str, grace: &str| {
            let file = changed(
                HARBOR,
                "rotating_refresh_tokens = true",
                &format!("rotating_refresh_tokens = {rotating}"),
            );
            problems(&changed(
                &file,
                "refresh_token_reuse_grace_secs = 60",
                &format!("refresh_token_reuse_grace_secs = {grace}"),
            ))
        };
        assert!(with("true", "60").is_empty(), "{:#?}", with("true", "60"));
        has(
            &with("false", "60"),
            "auth.refresh_token_reuse_grace_secs",
            "rotating_refresh_tokens = true",
        );
        has(
            &with("true", "0"),
            "auth.refresh_token_reuse_grace_secs",
            "must be 1 to 86400 seconds",
        );
        has(
            &with("true", "604800"),
            "auth.refresh_token_reuse_grace_secs",
            "must be 1 to 86400 seconds",
        );
    }

    #[test]
    fn a_pasted_secret_is_refused_without_being_repeated() {
        let pasted = "sk_live_4eC39HqLyjWDarjtT1zdp7dc";
        let found = problems(&changed(
            HARBOR,
            "env = \"HARBOR_CLIENT_SECRET\"",
            &format!("env = \"{pasted}\""),
        ));
        has(
            &found,
            "auth.client_secret.env",
            "NAME of an environment variable",
        );
        assert!(
            found.iter().all(|(_, message)| !message.contains(pasted)),
            "{found:#?}"
        );
    }

    #[test]
    fn the_base_url_must_be_absolute_http() {
        has(
            &problems(&changed(
                HARBOR,
                "base_url = \"http://127.0.0.1:8091/harbor\"",
                "base_url = \"ftp://bank.test/\"",
            )),
            "base_url",
            "not http or https",
        );
        has(
            &problems(&changed(
                HARBOR,
                "base_url = \"http://127.0.0.1:8091/harbor\"",
                "base_url = \"bank.test\"",
            )),
            "base_url",
            "not an absolute URL",
        );
    }

    #[test]
    fn a_connection_header_names_a_value_the_grant_keeps_and_never_a_token() {
        let login = "login_hint_param = \"login_hint\"";
        let keeping = |keep: &str, header: &str| {
            changed(
                HARBOR,
                login,
                &format!(
                    "{login}\n\n[auth.token_response]\nkeep = {keep}\n\n[headers]\n{header}\n"
                ),
            )
        };
        assert!(
            problems(&keeping(
                "[\"consent_id\"]",
                "Consent-ID = { connection = \"consent_id\" }"
            ))
            .is_empty()
        );
        let found = problems(&keeping(
            "[\"access_token\", \"consent_id\", \"consent_id\", \" \"]",
            "Consent-ID = { connection = \"consentId\" }",
        ));
        has(
            &found,
            "auth.token_response.keep[0]",
            "never sent as header values",
        );
        has(&found, "auth.token_response.keep[2]", "listed twice");
        has(&found, "auth.token_response.keep[3]", "must name a field");
        has(
            &found,
            "headers.Consent-ID.connection",
            "add it to `keep` under [auth.token_response]",
        );
        // An endpoint's own headers too.
        let found = problems(&changed(
            &keeping("[\"consent_id\"]", ""),
            "[endpoints.accounts]\n",
            "[endpoints.accounts]\nheaders = { Consent-ID = { connection = \"consent\" } }\n",
        ));
        has(
            &found,
            "endpoints.accounts.headers.Consent-ID.connection",
            "`consent` is not a value the connection keeps",
        );
        let found = problems(&keeping(
            "[\"consent_id\"]",
            "Consent-ID = { connect = \"consent_id\" }",
        ));
        has(&found, "headers.Consent-ID", "`{ connection = \"name\" }`");
    }

    #[test]
    fn scopes_and_their_separator_cannot_be_empty() {
        let text = changed(
            HARBOR,
            "scopes = [\"accounts\", \"transactions\"]",
            "scopes = []",
        );
        let text = changed(&text, "scope_separator = \",\"", "scope_separator = \"\"");
        let found = problems(&text);
        has(&found, "auth.scopes", "at least one scope");
        has(&found, "auth.scope_separator", "must not be empty");
    }
}
