//! The OAuth2 client for one connector: authorization URLs with PKCE, code exchange,
//! refresh and revocation, through the `oauth2` crate over our shared reqwest client.
//! Institutions' token responses are straightened out (per the connector's declared
//! quirks) before `oauth2` parses them, and its errors are reduced to text that can
//! never carry a token.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use oauth2::basic::{
    BasicErrorResponse, BasicErrorResponseType, BasicRevocationErrorResponse,
    BasicTokenIntrospectionResponse, BasicTokenType,
};
use oauth2::{
    AuthType, AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointNotSet,
    EndpointSet, HttpRequest, HttpResponse, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl,
    RefreshToken, RequestTokenError, Scope, StandardRevocableToken, TokenResponse, TokenUrl,
};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::connectors::{ClientAuth, Connector, TokenResponseSpec};

/// The longest access-token lifetime believed.
const MAX_LIFETIME: Duration = Duration::from_secs(366 * 24 * 3600);

/// A token response: RFC 6749's fields and whatever else the institution sent.
type Granted = oauth2::StandardTokenResponse<OtherFields, BasicTokenType>;

type Client = oauth2::Client<
    BasicErrorResponse,
    Granted,
    BasicTokenIntrospectionResponse,
    StandardRevocableToken,
    BasicRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointSet,
>;

/// The fields of a token response beside RFC 6749's, of which the connector keeps
/// those it names (`[auth.token_response] keep`). Printed by name only.
#[derive(Clone, Default, Deserialize, Serialize)]
pub struct OtherFields(BTreeMap<String, Value>);

impl oauth2::ExtraTokenFields for OtherFields {}

impl std::fmt::Debug for OtherFields {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

/// Tokens as granted or refreshed.
pub struct TokenSet {
    pub access_token: SecretString,
    /// `None` when the institution did not issue (or rotate) one.
    pub refresh_token: Option<SecretString>,
    pub issued_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub scopes: Option<String>,
    /// The fields the connector keeps (`[auth.token_response] keep`) that this
    /// response carried, as text.
    pub kept: BTreeMap<String, SecretString>,
}

impl std::fmt::Debug for TokenSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSet")
            .field("expires_at", &self.expires_at)
            .field("scopes", &self.scopes)
            .field("kept", &self.kept.keys().collect::<Vec<_>>())
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OAuthError {
    /// The grant is gone (`invalid_grant`): only the user can fix it, by linking again.
    #[error("the institution no longer accepts this grant ({0})")]
    InvalidGrant(String),
    #[error("the institution rejected the token request: {0}")]
    Rejected(String),
    #[error("the institution could not be reached: {0}")]
    Unavailable(String),
    #[error("the institution's token response could not be read")]
    Unreadable,
}

/// A link attempt's authorization URL and the secrets that must survive until the
/// callback.
pub struct Authorization {
    pub url: url::Url,
    pub state: SecretString,
    pub pkce_verifier: Option<SecretString>,
}

pub struct OAuthClient {
    client: Client,
    http: reqwest::Client,
    quirks: TokenResponseSpec,
    connector_scopes: String,
    login_hint_param: Option<String>,
    pkce: bool,
    extra_token_params: Vec<(String, String)>,
    revocation_url: Option<url::Url>,
    client_id: String,
    client_secret: SecretString,
    client_auth: ClientAuth,
}

impl OAuthClient {
    pub fn new(
        connector: &Connector,
        secret: SecretString,
        redirect: &url::Url,
        http: reqwest::Client,
    ) -> Self {
        let auth = &connector.auth;
        let client: Client = oauth2::Client::new(ClientId::new(auth.client_id.clone()))
            .set_client_secret(ClientSecret::new(secret.expose_secret().to_owned()))
            .set_auth_uri(AuthUrl::from_url(auth.authorize_url.clone()))
            .set_token_uri(TokenUrl::from_url(auth.token_url.clone()))
            .set_redirect_uri(RedirectUrl::from_url(redirect.clone()))
            .set_auth_type(match auth.client_auth {
                ClientAuth::Basic => AuthType::BasicAuth,
                ClientAuth::Post => AuthType::RequestBody,
            });
        Self {
            client,
            http,
            quirks: auth.token_response.clone(),
            connector_scopes: auth.scopes.join(&auth.scope_separator),
            login_hint_param: auth.login_hint_param.clone(),
            pkce: auth.pkce,
            extra_token_params: auth.extra_token_params.clone().into_iter().collect(),
            revocation_url: auth.revocation_url.clone(),
            client_id: auth.client_id.clone(),
            client_secret: secret,
            client_auth: auth.client_auth,
        }
    }

    /// The URL to send the user to, with a fresh random `state` and PKCE verifier.
    pub fn authorize(&self, login_hint: Option<&str>) -> Authorization {
        // One scope parameter joined with the institution's own separator: the
        // oauth2 crate would join several with spaces.
        let mut request = self
            .client
            .authorize_url(CsrfToken::new_random)
            .add_scope(Scope::new(self.connector_scopes.clone()));
        let verifier = if self.pkce {
            let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
            request = request.set_pkce_challenge(challenge);
            Some(SecretString::from(verifier.secret().to_owned()))
        } else {
            None
        };
        if let (Some(param), Some(hint)) = (&self.login_hint_param, login_hint) {
            request = request.add_extra_param(param.clone(), hint.to_owned());
        }
        let (url, state) = request.url();
        Authorization {
            url,
            state: SecretString::from(state.secret().to_owned()),
            pkce_verifier: verifier,
        }
    }

    pub async fn exchange_code(
        &self,
        code: &str,
        verifier: Option<&SecretString>,
    ) -> Result<TokenSet, OAuthError> {
        let mut request = self
            .client
            .exchange_code(AuthorizationCode::new(code.to_owned()));
        if let Some(v) = verifier {
            request =
                request.set_pkce_verifier(PkceCodeVerifier::new(v.expose_secret().to_owned()));
        }
        for (name, value) in &self.extra_token_params {
            request = request.add_extra_param(name.clone(), value.clone());
        }
        let http = self.adapter(true);
        let response = request.request_async(&http).await.map_err(token_error)?;
        Ok(self.token_set(&response))
    }

    pub async fn refresh(&self, refresh_token: &SecretString) -> Result<TokenSet, OAuthError> {
        let token = RefreshToken::new(refresh_token.expose_secret().to_owned());
        let mut request = self.client.exchange_refresh_token(&token);
        for (name, value) in &self.extra_token_params {
            request = request.add_extra_param(name.clone(), value.clone());
        }
        let http = self.adapter(true);
        let response = request.request_async(&http).await.map_err(token_error)?;
        Ok(self.token_set(&response))
    }

    /// RFC 7009 revocation of a refresh token (which ends the whole grant).
    /// `Ok(false)` when the institution has no revocation endpoint.
    ///
    /// Sent by hand rather than through `oauth2`, which refuses any non-HTTPS
    /// endpoint: here plain HTTP is allowed to this machine only (the sandbox).
    pub async fn revoke(&self, refresh_token: &SecretString) -> Result<bool, OAuthError> {
        let Some(url) = &self.revocation_url else {
            return Ok(false);
        };
        let loopback = match url.host() {
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            Some(url::Host::Domain(name)) => name == "localhost",
            None => false,
        };
        if url.scheme() != "https" && !loopback {
            return Err(OAuthError::Rejected(
                "the revocation endpoint is not HTTPS".into(),
            ));
        }
        let mut form = vec![
            ("token", refresh_token.expose_secret().to_owned()),
            ("token_type_hint", "refresh_token".to_owned()),
        ];
        let mut trace = reqwest::header::HeaderMap::new();
        crate::tracecontext::inject(&tracing::Span::current(), &mut trace);
        let mut request = self.http.post(url.clone()).headers(trace);
        match self.client_auth {
            // RFC 6749 §2.3.1: credentials are form-encoded before Basic encoding.
            ClientAuth::Basic => {
                let encode = |v: &str| {
                    url::form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>()
                };
                request = request.basic_auth(
                    encode(&self.client_id),
                    Some(encode(self.client_secret.expose_secret())),
                );
            }
            ClientAuth::Post => {
                form.push(("client_id", self.client_id.clone()));
                form.push((
                    "client_secret",
                    self.client_secret.expose_secret().to_owned(),
                ));
            }
        }
        let response = request
            .form(&form)
            .send()
            .await
            .map_err(|e| OAuthError::Unavailable(e.without_url().to_string()))?;
        let status = response.status();
        if status.is_success() {
            return Ok(true);
        }
        if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            return Err(OAuthError::Unavailable(format!("HTTP {status}")));
        }
        let code = response
            .json::<Value>()
            .await
            .ok()
            .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_owned))
            .unwrap_or_else(|| format!("HTTP {status}"));
        Err(OAuthError::Rejected(code))
    }

    fn token_set(&self, response: &Granted) -> TokenSet {
        let lifetime = response
            .expires_in()
            .unwrap_or(Duration::from_secs(self.quirks.default_lifetime_secs));
        let issued_at = Utc::now();
        TokenSet {
            access_token: SecretString::from(response.access_token().secret().to_owned()),
            refresh_token: response
                .refresh_token()
                .map(|t| SecretString::from(t.secret().to_owned())),
            // A lifetime beyond a year is the institution's mistake, not a token to
            // trust for longer: cap it (and avoid date overflow).
            issued_at,
            expires_at: issued_at
                + chrono::Duration::from_std(lifetime.min(MAX_LIFETIME))
                    .unwrap_or(chrono::Duration::hours(1)),
            scopes: response.scopes().map(|s| {
                s.iter()
                    .map(|s| s.to_string())
                    .collect::<Vec<_>>()
                    .join(" ")
            }),
            kept: kept(&self.quirks.keep, response.extra_fields()),
        }
    }

    /// The HTTP adapter `oauth2` calls. Its futures own what they use, so they are
    /// `Send + 'static` whatever borrows the caller holds.
    fn adapter(
        &self,
        token_endpoint: bool,
    ) -> impl Fn(HttpRequest) -> BoxFuture<'static, Result<HttpResponse, AdapterError>> + use<>
    {
        let http = self.http.clone();
        let quirks = self.quirks.clone();
        move |request| Box::pin(send(http.clone(), quirks.clone(), request, token_endpoint))
    }
}

/// The kept fields a response carried: text as it is, numbers and booleans as
/// written; an empty, null or structured value is not kept, nor one that cannot be
/// a header's value (a line break would split the request).
fn kept(keep: &[String], fields: &OtherFields) -> BTreeMap<String, SecretString> {
    keep.iter()
        .filter_map(|name| {
            let text = match fields.0.get(name)? {
                Value::String(s) if !s.trim().is_empty() => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                _ => return None,
            };
            if reqwest::header::HeaderValue::from_str(&text).is_err() {
                tracing::warn!(field = %name, "A kept token-response field is not a valid header value; not kept.");
                return None;
            }
            Some((name.clone(), SecretString::from(text)))
        })
        .collect()
}

/// How long one request to an institution's OAuth endpoints may take.
pub const TOKEN_REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// One OAuth request over our reqwest client (redirects off), with token responses
/// normalized per the connector's quirks.
async fn send(
    http: reqwest::Client,
    quirks: TokenResponseSpec,
    request: HttpRequest,
    token_endpoint: bool,
) -> Result<HttpResponse, AdapterError> {
    let mut request = reqwest::Request::try_from(request)
        .map_err(|e| AdapterError(e.without_url().to_string()))?;
    // Bounded per attempt: the token lease is sized from it.
    *request.timeout_mut() = Some(TOKEN_REQUEST_TIMEOUT);
    crate::tracecontext::inject(&tracing::Span::current(), request.headers_mut());
    let response = http
        .execute(request)
        .await
        .map_err(|e| AdapterError(e.without_url().to_string()))?;
    let status = response.status();
    // An overloaded or failing token endpoint is a transient failure, to retry, not
    // a refusal of the grant.
    if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
        return Err(AdapterError(format!(
            "the token endpoint answered HTTP {status}"
        )));
    }
    let headers = response.headers().clone();
    let body = response
        .bytes()
        .await
        .map_err(|e| AdapterError(e.without_url().to_string()))?;
    let body = if token_endpoint && status.is_success() {
        normalize_token_response(&body, &quirks)
    } else {
        body.to_vec()
    };
    let mut builder = oauth2::http::Response::builder().status(status);
    for (name, value) in &headers {
        if name != reqwest::header::CONTENT_LENGTH {
            builder = builder.header(name, value);
        }
    }
    builder.body(body).map_err(|e| AdapterError(e.to_string()))
}

/// A transport failure, as text without URL or body.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct AdapterError(String);

/// Rewrites a token response to RFC 6749 §5.1 shape: un-nests it, turns a string
/// `expires_in` into a number, supplies `token_type` and a default lifetime.
fn normalize_token_response(body: &[u8], quirks: &TokenResponseSpec) -> Vec<u8> {
    let Ok(mut value) = serde_json::from_slice::<Value>(body) else {
        return body.to_vec();
    };
    if let Some(key) = &quirks.nested_under
        && let Some(inner) = value.get_mut(key).map(Value::take)
    {
        value = inner;
    }
    let Some(object) = value.as_object_mut() else {
        return body.to_vec();
    };
    let expires_in = match object.get("expires_in") {
        Some(Value::String(s)) => s.trim().parse::<u64>().ok(),
        Some(Value::Number(n)) => n.to_string().parse::<f64>().ok().map(|f| f.max(0.0) as u64),
        _ => None,
    }
    // A lifetime of zero says nothing useful: use the declared default.
    .filter(|&secs| secs > 0)
    .unwrap_or(quirks.default_lifetime_secs);
    object.insert("expires_in".into(), Value::from(expires_in));
    if !object.get("token_type").is_some_and(Value::is_string) {
        object.insert(
            "token_type".into(),
            Value::from(quirks.default_token_type.clone()),
        );
    }
    serde_json::to_vec(&value).unwrap_or_else(|_| body.to_vec())
}

fn token_error(
    error: RequestTokenError<AdapterError, oauth2::StandardErrorResponse<BasicErrorResponseType>>,
) -> OAuthError {
    match error {
        RequestTokenError::ServerResponse(r) => match r.error() {
            BasicErrorResponseType::InvalidGrant => OAuthError::InvalidGrant(
                r.error_description()
                    .cloned()
                    .unwrap_or_else(|| "invalid_grant".into()),
            ),
            other => OAuthError::Rejected(other.to_string()),
        },
        RequestTokenError::Request(e) => OAuthError::Unavailable(e.to_string()),
        // The parse error carries the raw body (tokens included): drop it.
        RequestTokenError::Parse(..) => OAuthError::Unreadable,
        RequestTokenError::Other(s) => OAuthError::Rejected(s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quirks() -> TokenResponseSpec {
        TokenResponseSpec {
            default_lifetime_secs: 900,
            default_token_type: "Bearer".into(),
            nested_under: None,
            keep: Vec::new(),
        }
    }

    fn normalized(body: &str, quirks: &TokenResponseSpec) -> Value {
        serde_json::from_slice(&normalize_token_response(body.as_bytes(), quirks)).unwrap()
    }

    #[test]
    fn string_expires_in_becomes_a_number() {
        let v = normalized(
            r#"{"access_token":"a","token_type":"bearer","expires_in":"3600"}"#,
            &quirks(),
        );
        assert_eq!(v["expires_in"], Value::from(3600u64));
    }

    #[test]
    fn missing_fields_get_declared_defaults() {
        let v = normalized(r#"{"access_token":"a","extra":{"x":1}}"#, &quirks());
        assert_eq!(v["expires_in"], Value::from(900u64));
        assert_eq!(v["token_type"], Value::from("Bearer"));
        assert_eq!(v["extra"]["x"], Value::from(1u64));
    }

    #[test]
    fn kept_fields_are_text_and_only_those_named() {
        let fields: OtherFields = serde_json::from_str(
            r#"{"consent_id":"c-1","arrangement":42,"empty":"","nested":{"a":1},"split":"a\r\nb","other":"x"}"#,
        )
        .unwrap();
        let names = [
            "consent_id",
            "arrangement",
            "empty",
            "nested",
            "split",
            "absent",
        ]
        .map(String::from);
        let kept = kept(&names, &fields);
        let shown: Vec<(&str, &str)> = kept
            .iter()
            .map(|(k, v)| (k.as_str(), v.expose_secret()))
            .collect();
        assert_eq!(shown, [("arrangement", "42"), ("consent_id", "c-1")]);
        assert!(
            !format!("{fields:?}").contains("c-1"),
            "values are never printed"
        );
    }

    #[test]
    fn nested_responses_are_unwrapped() {
        let mut q = quirks();
        q.nested_under = Some("data".into());
        let v = normalized(r#"{"data":{"access_token":"a","expires_in":60}}"#, &q);
        assert_eq!(v["access_token"], Value::from("a"));
        assert_eq!(v["expires_in"], Value::from(60u64));
    }
}
