//! The institutions' authorization servers over HTTP: for each, under `/<id>/oauth/`, the
//! authorize endpoint with its consent page, the token endpoint and revocation. Request
//! checks and error shapes follow RFC 6749 (§4.1, §5.2), RFC 7636 (S256 only) and RFC 7009;
//! codes and tokens live in the institution's own [`super::grants::GrantStore`].
//!
//! A [`Profile`] says how one institution deviates from the common path: which client
//! authentication it accepts, its scope separator, whether PKCE is required, and
//! [`TokenQuirks`], which bend successful token responses into the non-standard shapes
//! real providers send, so clients can be tested against them. [`AuthServer::new`] builds
//! it from the institution's spec (`institutions::OAuthRules`) and the configuration.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use url::Url;

use super::faults::FaultInjector;
use super::grants::{
    self, Approval, GrantError, GrantPolicy, GrantStore, IssuedTokens, Rotation, ScopeSet,
};
use super::institutions::{RefreshTokens, TokenShape};
use super::{ClientCredentials, Institution, SandboxConfig, Stats};

/// How the token and revocation endpoints let the client authenticate (RFC 6749 §2.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ClientAuth {
    /// HTTP Basic (`client_secret_basic`) or credentials in the body (`client_secret_post`).
    Either,
    /// `client_secret_basic` only; credentials in the body are refused with 401.
    BasicOnly,
    /// `client_secret_post` only; HTTP Basic is refused with 401.
    PostOnly,
}

/// One institution's authorization server: who it is, the one client it knows, and how
/// its protocol deviates from the common path.
#[derive(Debug)]
pub(super) struct Profile {
    /// The institution id, which is also the path prefix: `/<id>/oauth/…`.
    pub(super) institution: &'static str,
    /// Shown on the consent page.
    pub(super) name: &'static str,
    pub(super) client_id: String,
    pub(super) client_secret: SecretString,
    pub(super) client_auth: ClientAuth,
    /// The scopes the institution offers; a request with none gets all of them.
    pub(super) scopes: ScopeSet,
    /// Separates scope names in requests and responses (RFC 6749 says a space).
    pub(super) scope_separator: char,
    /// Whether an authorization request must carry an S256 challenge. Where not, a
    /// challenge that is sent is still checked at the token endpoint.
    pub(super) pkce_required: bool,
    pub(super) token_quirks: TokenQuirks,
    /// Whether token responses carry the grant's `consent_id` (see
    /// [`crate::institutions::OAuthRules::consent_ids`]).
    pub(super) consent_ids: bool,
}

/// An authorization server: its profile, its grants, and the sandbox's shared counters.
#[derive(Debug)]
pub(super) struct AuthServer {
    pub(super) profile: Profile,
    pub(super) grants: GrantStore,
    pub(super) stats: Arc<Stats>,
    /// The institution's faults; the token endpoint honours `token_delay_ms`.
    pub(super) faults: Arc<FaultInjector>,
}

impl AuthServer {
    /// `institution`'s authorization server as its spec and `config` say: its client
    /// (configured or default), its OAuth rules, and its token policy.
    pub(super) fn new(
        config: &SandboxConfig,
        institution: Institution,
        stats: Arc<Stats>,
        faults: Arc<FaultInjector>,
    ) -> Self {
        let spec = institution.spec();
        let rules = &spec.oauth;
        let ClientCredentials {
            client_id,
            client_secret,
        } = config.client(institution);
        let token_quirks = match rules.token_shape {
            TokenShape::Configured => config.token_quirks,
            TokenShape::Fixed(quirks) => quirks,
        };
        let rotation = match rules.refresh_tokens {
            RefreshTokens::Rotate { grace } => Rotation::Rotate {
                grace: config.refresh_grace.unwrap_or(grace),
            },
            RefreshTokens::Keep => Rotation::Keep,
        };
        Self {
            profile: Profile {
                institution: spec.id,
                name: spec.name,
                client_id,
                client_secret,
                client_auth: rules.client_auth,
                scopes: rules.scopes,
                scope_separator: rules.scope_separator,
                pkce_required: rules.pkce_required,
                token_quirks,
                consent_ids: rules.consent_ids,
            },
            grants: GrantStore::new(GrantPolicy {
                token_prefix: spec.prefix,
                access_token_ttl: config.access_token_ttl,
                rotation,
            }),
            stats,
            faults,
        }
    }
}

/// The authorize, token and revocation endpoints of `server`, under its institution's prefix.
pub(super) fn routes<S>(server: Arc<AuthServer>) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    let prefix = server.profile.institution;
    Router::new()
        .route(
            &format!("/{prefix}/oauth/authorize"),
            get(authorize).post(consent),
        )
        .route(&format!("/{prefix}/oauth/token"), post(token))
        .route(&format!("/{prefix}/oauth/revoke"), post(revoke))
        .with_state(server)
}

/// Sandbox personas: users whose id starts with one of these skip the consent page
/// (`bulk-` and `bulkdeep-` users are the benchmarks' large portfolios).
const AUTO_APPROVED_PREFIXES: [&str; 4] = [
    "demo",
    "test",
    crate::data::BULK_PREFIX,
    crate::data::DEEP_BULK_PREFIX,
];

/// Query of `GET /authorize`, all optional so that missing ones get our own errors.
#[derive(Debug, Deserialize)]
struct AuthorizeParams {
    response_type: Option<String>,
    client_id: Option<String>,
    redirect_uri: Option<String>,
    scope: Option<String>,
    state: Option<String>,
    code_challenge: Option<String>,
    code_challenge_method: Option<String>,
    login_hint: Option<String>,
}

/// The consent form repeats the authorization request, which is checked again: a form
/// post is as untrusted as the original query.
#[derive(Debug, Deserialize)]
struct ConsentForm {
    #[serde(flatten)]
    request: AuthorizeParams,
    user_id: Option<String>,
    decision: Option<String>,
}

/// An authorization request that passed every check.
#[derive(Debug)]
struct AuthorizeRequest {
    client_id: String,
    /// Exactly as sent, to bind the code to it.
    redirect_uri: String,
    redirect_url: Url,
    scopes: ScopeSet,
    state: String,
    code_challenge: Option<String>,
    login_hint: Option<String>,
}

#[derive(Debug, thiserror::Error)]
enum AuthorizeError {
    /// The client or redirect URI cannot be trusted, so the error is shown to the user
    /// instead of being sent anywhere (RFC 6749 §4.1.2.1).
    #[error("{0}")]
    Shown(String),
    /// Sent back to the client through its redirect URI.
    #[error("{error}: {description}")]
    Redirected {
        /// Boxed to keep the `Result`s carrying this error small.
        redirect_url: Box<Url>,
        error: &'static str,
        description: String,
        state: Option<String>,
    },
}

impl IntoResponse for AuthorizeError {
    fn into_response(self) -> Response {
        match self {
            Self::Shown(message) => (
                StatusCode::BAD_REQUEST,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                format!("{message}\n"),
            )
                .into_response(),
            Self::Redirected {
                redirect_url,
                error,
                description,
                state,
            } => {
                let mut params = vec![
                    ("error", error),
                    ("error_description", description.as_str()),
                ];
                if let Some(state) = &state {
                    params.push(("state", state.as_str()));
                }
                redirect(*redirect_url, &params)
            }
        }
    }
}

/// 302 to `target` with `params` added to its query.
fn redirect(mut target: Url, params: &[(&str, &str)]) -> Response {
    target.query_pairs_mut().extend_pairs(params);
    (
        StatusCode::FOUND,
        [
            (header::LOCATION, target.to_string()),
            (header::CACHE_CONTROL, "no-store".to_owned()),
        ],
    )
        .into_response()
}

fn non_empty(value: &Option<String>) -> Option<&str> {
    value.as_deref().filter(|text| !text.is_empty())
}

/// `^[A-Za-z0-9_.-]{1,64}$`
fn is_valid_user_id(user_id: &str) -> bool {
    (1..=64).contains(&user_id.len())
        && user_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

fn validate(
    params: &AuthorizeParams,
    profile: &Profile,
) -> Result<AuthorizeRequest, AuthorizeError> {
    let client_id = profile.client_id.as_str();
    let given_client = non_empty(&params.client_id)
        .ok_or_else(|| AuthorizeError::Shown("client_id is required.".to_owned()))?;
    if given_client != client_id {
        return Err(AuthorizeError::Shown(format!(
            "Unknown client_id {given_client:?}; the sandbox's client is {client_id:?}."
        )));
    }
    let redirect_uri = non_empty(&params.redirect_uri)
        .ok_or_else(|| AuthorizeError::Shown("redirect_uri is required.".to_owned()))?;
    let redirect_url = Url::parse(redirect_uri).map_err(|error| {
        AuthorizeError::Shown(format!("redirect_uri is not an absolute URL: {error}."))
    })?;
    if !matches!(redirect_url.scheme(), "http" | "https") {
        return Err(AuthorizeError::Shown(
            "redirect_uri must be an http or https URL.".to_owned(),
        ));
    }
    if redirect_url.fragment().is_some() {
        return Err(AuthorizeError::Shown(
            "redirect_uri must not contain a fragment.".to_owned(),
        ));
    }

    // From here on the client is known, so errors go back to it.
    let fail = |error: &'static str, description: &str| AuthorizeError::Redirected {
        redirect_url: Box::new(redirect_url.clone()),
        error,
        description: description.to_owned(),
        state: non_empty(&params.state).map(str::to_owned),
    };
    match non_empty(&params.response_type) {
        Some("code") => {}
        Some(_) => {
            return Err(fail(
                "unsupported_response_type",
                "only response_type=code is supported",
            ));
        }
        None => return Err(fail("invalid_request", "response_type is required")),
    }
    let state =
        non_empty(&params.state).ok_or_else(|| fail("invalid_request", "state is required"))?;
    let scopes = match non_empty(&params.scope) {
        Some(text) => ScopeSet::parse(text, profile.scope_separator)
            .map_err(|error| fail("invalid_scope", &error.to_string()))?,
        None => profile.scopes,
    };
    if !scopes.is_subset_of(profile.scopes) {
        return Err(fail(
            "invalid_scope",
            &format!(
                "this institution offers only {}",
                profile.scopes.joined(profile.scope_separator)
            ),
        ));
    }
    // No scope asked for means the default: everything the client may read.
    let scopes = if scopes.is_empty() {
        profile.scopes
    } else {
        scopes
    };
    let challenge_sent = non_empty(&params.code_challenge).is_some()
        || non_empty(&params.code_challenge_method).is_some();
    let code_challenge = if profile.pkce_required || challenge_sent {
        match non_empty(&params.code_challenge_method) {
            Some("S256") => {}
            Some(_) => {
                return Err(fail(
                    "invalid_request",
                    "only code_challenge_method=S256 is supported",
                ));
            }
            None => {
                return Err(fail(
                    "invalid_request",
                    "PKCE is required: send code_challenge_method=S256",
                ));
            }
        }
        let code_challenge = non_empty(&params.code_challenge)
            .ok_or_else(|| fail("invalid_request", "PKCE is required: send code_challenge"))?;
        if !grants::is_valid_s256_challenge(code_challenge) {
            return Err(fail(
                "invalid_request",
                "code_challenge must be 43 base64url characters (S256)",
            ));
        }
        Some(code_challenge.to_owned())
    } else {
        None
    };
    let login_hint = match non_empty(&params.login_hint) {
        Some(hint) if is_valid_user_id(hint) => Some(hint.to_owned()),
        Some(_) => {
            return Err(fail(
                "invalid_request",
                "login_hint must match ^[A-Za-z0-9_.-]{1,64}$",
            ));
        }
        None => None,
    };
    Ok(AuthorizeRequest {
        client_id: given_client.to_owned(),
        redirect_uri: redirect_uri.to_owned(),
        redirect_url,
        scopes,
        state: state.to_owned(),
        code_challenge,
        login_hint,
    })
}

async fn authorize(
    State(app): State<Arc<AuthServer>>,
    query: Result<Query<AuthorizeParams>, QueryRejection>,
) -> Response {
    let params = match query {
        Ok(Query(params)) => params,
        Err(rejection) => {
            return AuthorizeError::Shown(format!(
                "Malformed authorization request: {}",
                rejection.body_text()
            ))
            .into_response();
        }
    };
    let request = match validate(&params, &app.profile) {
        Ok(request) => request,
        Err(error) => return error.into_response(),
    };
    match request.login_hint.clone() {
        Some(user_id)
            if AUTO_APPROVED_PREFIXES
                .iter()
                .any(|prefix| user_id.starts_with(prefix)) =>
        {
            approve(&app, request, user_id)
        }
        hint => consent_page(&app.profile, &request, hint.as_deref(), None),
    }
}

async fn consent(
    State(app): State<Arc<AuthServer>>,
    form: Result<Form<ConsentForm>, FormRejection>,
) -> Response {
    let form = match form {
        Ok(Form(form)) => form,
        Err(rejection) => {
            return AuthorizeError::Shown(format!(
                "Malformed consent form: {}",
                rejection.body_text()
            ))
            .into_response();
        }
    };
    let request = match validate(&form.request, &app.profile) {
        Ok(request) => request,
        Err(error) => return error.into_response(),
    };
    match form.decision.as_deref() {
        Some("approve") => match non_empty(&form.user_id) {
            Some(user_id) if is_valid_user_id(user_id) => {
                approve(&app, request, user_id.to_owned())
            }
            typed => consent_page(
                &app.profile,
                &request,
                typed,
                Some("Enter a user id of 1 to 64 letters, digits, '.', '_' or '-'."),
            ),
        },
        Some("deny") => {
            let params = [
                ("error", "access_denied"),
                ("error_description", "the user denied access"),
                ("state", request.state.as_str()),
            ];
            redirect(request.redirect_url, &params)
        }
        _ => {
            let params = [
                ("error", "invalid_request"),
                ("error_description", "decision must be approve or deny"),
                ("state", request.state.as_str()),
            ];
            redirect(request.redirect_url, &params)
        }
    }
}

/// Issues a code for `user_id` and sends the browser back to the client with it.
fn approve(app: &AuthServer, request: AuthorizeRequest, user_id: String) -> Response {
    let approval = Approval {
        client_id: request.client_id,
        redirect_uri: request.redirect_uri,
        user_id,
        scopes: request.scopes,
        code_challenge: request.code_challenge,
    };
    let code = app.grants.issue_code(approval, Instant::now());
    Stats::bump(&app.stats.authorizations);
    redirect(
        request.redirect_url,
        &[("code", code.as_str()), ("state", request.state.as_str())],
    )
}

fn escape_html(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            other => escaped.push(other),
        }
    }
    escaped
}

/// The page a non-persona user sees: a user id field and Approve/Deny, carrying the
/// request along in hidden fields. `problem` marks a resubmission that was refused.
fn consent_page(
    profile: &Profile,
    request: &AuthorizeRequest,
    user_id: Option<&str>,
    problem: Option<&str>,
) -> Response {
    let scope = request.scopes.joined(profile.scope_separator);
    let mut fields = vec![
        ("response_type", "code"),
        ("client_id", request.client_id.as_str()),
        ("redirect_uri", request.redirect_uri.as_str()),
        ("scope", scope.as_str()),
        ("state", request.state.as_str()),
    ];
    if let Some(challenge) = &request.code_challenge {
        fields.push(("code_challenge", challenge.as_str()));
        fields.push(("code_challenge_method", "S256"));
    }
    let hidden: String = fields
        .iter()
        .map(|(name, value)| {
            format!(
                "    <input type=\"hidden\" name=\"{name}\" value=\"{}\">\n",
                escape_html(value)
            )
        })
        .collect();
    let problem_html = problem
        .map(|text| format!("  <p class=\"problem\">{}</p>\n", escape_html(text)))
        .unwrap_or_default();
    let body = format!(
        r#"<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>{institution} · Authorize access</title>
  <style>body{{font-family:system-ui,sans-serif;max-width:30rem;margin:3rem auto;padding:0 1rem}}.problem{{color:#b00020}}button{{margin-right:.5rem}}</style>
</head>
<body>
  <h1>{institution}</h1>
  <p><strong>{client}</strong> asks to read your <strong>{scopes}</strong>.</p>
{problem_html}  <form method="post" action="authorize">
{hidden}    <p><label>User id <input name="user_id" value="{user}" maxlength="64" required autofocus></label></p>
    <p><button name="decision" value="approve">Approve</button><button name="decision" value="deny" formnovalidate>Deny</button></p>
  </form>
  <p><small>Sandbox institution: no password. Every user id has its own seeded data.</small></p>
</body>
</html>
"#,
        institution = escape_html(profile.name),
        client = escape_html(&request.client_id),
        scopes = escape_html(&scope),
        user = escape_html(user_id.unwrap_or_default()),
    );
    let status = if problem.is_some() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    // Consent must not be clickjacked into another page (RFC 6749 §10.13).
    (
        status,
        [
            (header::CACHE_CONTROL, "no-store"),
            (header::X_FRAME_OPTIONS, "DENY"),
        ],
        Html(body),
    )
        .into_response()
}

/// RFC 6749 §5.2 errors of the token and revocation endpoints.
#[derive(Debug, thiserror::Error)]
enum OAuthError {
    #[error("{0}")]
    InvalidRequest(String),
    #[error("{0}")]
    InvalidClient(String),
    #[error("{0}")]
    InvalidGrant(String),
    #[error("{0}")]
    UnsupportedGrantType(String),
    #[error("{0}")]
    InvalidScope(String),
}

impl OAuthError {
    fn code(&self) -> &'static str {
        match self {
            Self::InvalidRequest(_) => "invalid_request",
            Self::InvalidClient(_) => "invalid_client",
            Self::InvalidGrant(_) => "invalid_grant",
            Self::UnsupportedGrantType(_) => "unsupported_grant_type",
            Self::InvalidScope(_) => "invalid_scope",
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            Self::InvalidClient(_) => StatusCode::UNAUTHORIZED,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

impl From<GrantError> for OAuthError {
    fn from(error: GrantError) -> Self {
        match error {
            GrantError::InvalidGrant(_) => Self::InvalidGrant(error.to_string()),
            GrantError::InvalidScope => Self::InvalidScope(error.to_string()),
        }
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    error_description: String,
}

impl OAuthError {
    /// The RFC 6749 §5.2 response; a 401 challenges for Basic credentials in `realm`.
    fn response(self, realm: &str) -> Response {
        let body = ErrorBody {
            error: self.code(),
            error_description: self.to_string(),
        };
        let mut response = (self.status(), no_store(), Json(body)).into_response();
        if self.status() == StatusCode::UNAUTHORIZED
            && let Ok(challenge) = HeaderValue::from_str(&format!("Basic realm=\"{realm}\""))
        {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, challenge);
        }
        response
    }
}

/// Token responses carry secrets and must not be cached (RFC 6749 §5.1).
fn no_store() -> [(header::HeaderName, &'static str); 2] {
    [
        (header::CACHE_CONTROL, "no-store"),
        (header::PRAGMA, "no-cache"),
    ]
}

#[derive(Debug, Deserialize)]
struct TokenForm {
    grant_type: Option<String>,
    code: Option<String>,
    redirect_uri: Option<String>,
    code_verifier: Option<String>,
    refresh_token: Option<String>,
    scope: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
}

/// Deviations from the standard shape of successful token responses (RFC 6749 §5.1),
/// for both grant types; error responses are never affected. The default is standard.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenQuirks {
    /// The whole response nested under this key, e.g. `{"result":{"access_token":…}}`.
    pub nested_under: Option<&'static str>,
    /// `"expires_in":"3600"`, a string instead of a number.
    pub expires_in_as_string: bool,
    /// No `expires_in` at all; wins over `expires_in_as_string`.
    pub omit_expires_in: bool,
    /// No `token_type`.
    pub omit_token_type: bool,
    /// Unrequested members: `"id_token_hint":"x","meta":{"issued_by":"meridian"}`.
    pub extra_fields: bool,
}

impl TokenQuirks {
    /// The standard shape, as a constant so that an institution's profile can start from
    /// it in a `static`; the same as [`TokenQuirks::default`].
    pub(crate) const STANDARD: Self = Self {
        nested_under: None,
        expires_in_as_string: false,
        omit_expires_in: false,
        omit_token_type: false,
        extra_fields: false,
    };
}

#[derive(Serialize)]
struct TokenResponse {
    access_token: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    token_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_in: Option<ExpiresIn>,
    refresh_token: String,
    scope: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    consent_id: Option<String>,
    #[serde(flatten)]
    extra: Option<ExtraFields>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum ExpiresIn {
    Number(u64),
    Text(String),
}

#[derive(Serialize)]
struct ExtraFields {
    id_token_hint: &'static str,
    meta: ExtraMeta,
}

#[derive(Serialize)]
struct ExtraMeta {
    issued_by: &'static str,
}

impl TokenResponse {
    fn new(tokens: IssuedTokens, profile: &Profile) -> Self {
        let quirks = profile.token_quirks;
        let seconds = tokens.expires_in.as_secs();
        let expires_in = match quirks {
            TokenQuirks {
                omit_expires_in: true,
                ..
            } => None,
            TokenQuirks {
                expires_in_as_string: true,
                ..
            } => Some(ExpiresIn::Text(seconds.to_string())),
            _ => Some(ExpiresIn::Number(seconds)),
        };
        Self {
            access_token: tokens.access_token,
            token_type: (!quirks.omit_token_type).then_some("Bearer"),
            expires_in,
            refresh_token: tokens.refresh_token,
            scope: tokens.scopes.joined(profile.scope_separator),
            consent_id: profile.consent_ids.then_some(tokens.consent_id),
            extra: quirks.extra_fields.then_some(ExtraFields {
                id_token_hint: "x",
                meta: ExtraMeta {
                    issued_by: profile.institution,
                },
            }),
        }
    }
}

async fn token(
    State(app): State<Arc<AuthServer>>,
    headers: HeaderMap,
    form: Result<Form<TokenForm>, FormRejection>,
) -> Response {
    let granted = grant(&app, &headers, form);
    // The work is done (a refresh token rotated) before the answer is held back: a
    // client that stops waiting has lost what the institution now holds.
    let delay = app.faults.get().token_delay_ms;
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    match granted {
        Ok(tokens) => {
            let body = TokenResponse::new(tokens, &app.profile);
            match app.profile.token_quirks.nested_under {
                Some(key) => (no_store(), Json(serde_json::json!({ key: body }))).into_response(),
                None => (no_store(), Json(body)).into_response(),
            }
        }
        Err(error) => error.response(app.profile.institution),
    }
}

fn required<'a>(value: &'a Option<String>, name: &str) -> Result<&'a str, OAuthError> {
    non_empty(value).ok_or_else(|| OAuthError::InvalidRequest(format!("{name} is required")))
}

fn grant(
    app: &AuthServer,
    headers: &HeaderMap,
    form: Result<Form<TokenForm>, FormRejection>,
) -> Result<IssuedTokens, OAuthError> {
    let Form(form) = form.map_err(|rejection| {
        OAuthError::InvalidRequest(format!(
            "malformed token request: {}",
            rejection.body_text()
        ))
    })?;
    let client_id = authenticate_client(
        &app.profile,
        headers,
        form.client_id.as_deref(),
        form.client_secret.as_deref(),
    )?;
    let now = Instant::now();
    match non_empty(&form.grant_type) {
        Some("authorization_code") => {
            let code = required(&form.code, "code")?;
            let redirect_uri = required(&form.redirect_uri, "redirect_uri")?;
            let verifier = if app.profile.pkce_required {
                Some(required(&form.code_verifier, "code_verifier")?)
            } else {
                non_empty(&form.code_verifier)
            };
            let tokens = app
                .grants
                .exchange_code(&client_id, code, redirect_uri, verifier, now)?;
            Stats::bump(&app.stats.code_exchanges);
            Ok(tokens)
        }
        Some("refresh_token") => {
            let refresh_token = required(&form.refresh_token, "refresh_token")?;
            let scopes = match non_empty(&form.scope) {
                Some(text) => {
                    let scopes = ScopeSet::parse(text, app.profile.scope_separator)
                        .map_err(|error| OAuthError::InvalidScope(error.to_string()))?;
                    (!scopes.is_empty()).then_some(scopes)
                }
                None => None,
            };
            match app.grants.refresh(&client_id, refresh_token, scopes, now) {
                Ok(tokens) => {
                    Stats::bump(&app.stats.refreshes);
                    Ok(tokens)
                }
                Err(error) => {
                    if matches!(error, GrantError::InvalidGrant(_)) {
                        Stats::bump(&app.stats.refreshes_rejected);
                    }
                    Err(error.into())
                }
            }
        }
        Some(other) => Err(OAuthError::UnsupportedGrantType(format!(
            "grant_type {other:?} is not supported; use authorization_code or refresh_token"
        ))),
        None => Err(OAuthError::InvalidRequest(
            "grant_type is required".to_owned(),
        )),
    }
}

#[derive(Debug, Deserialize)]
struct RevokeForm {
    token: Option<String>,
    // `token_type_hint` is accepted and ignored: both kinds are looked up anyway (RFC 7009 §2.1).
    client_id: Option<String>,
    client_secret: Option<String>,
}

async fn revoke(
    State(app): State<Arc<AuthServer>>,
    headers: HeaderMap,
    form: Result<Form<RevokeForm>, FormRejection>,
) -> Response {
    let outcome = form
        .map_err(|rejection| {
            OAuthError::InvalidRequest(format!(
                "malformed revocation request: {}",
                rejection.body_text()
            ))
        })
        .and_then(|Form(form)| {
            let client_id = authenticate_client(
                &app.profile,
                &headers,
                form.client_id.as_deref(),
                form.client_secret.as_deref(),
            )?;
            let token = required(&form.token, "token")?;
            // Unknown tokens are not an error: the client's goal is met either way (RFC 7009 §2.2).
            app.grants.revoke(&client_id, token, Instant::now());
            Ok(())
        });
    match outcome {
        Ok(()) => {
            Stats::bump(&app.stats.revocations);
            (StatusCode::OK, no_store()).into_response()
        }
        Err(error) => error.response(app.profile.institution),
    }
}

/// Authenticates the client by HTTP Basic (`client_secret_basic`) or by credentials in the
/// body (`client_secret_post`), as far as the profile accepts each, returning its id. Using
/// both at once is refused (RFC 6749 §2.3).
fn authenticate_client(
    profile: &Profile,
    headers: &HeaderMap,
    body_id: Option<&str>,
    body_secret: Option<&str>,
) -> Result<String, OAuthError> {
    let is_client = |id: &str, secret: &str| {
        id == profile.client_id
            && grants::constant_time_eq(
                secret.as_bytes(),
                profile.client_secret.expose_secret().as_bytes(),
            )
    };
    let refused = || {
        OAuthError::InvalidClient(
            "client authentication failed: unknown client or wrong secret".to_owned(),
        )
    };
    let authorization = headers.get(header::AUTHORIZATION);
    match profile.client_auth {
        ClientAuth::PostOnly if authorization.is_some() => {
            return Err(OAuthError::InvalidClient(
                "this institution accepts only client_id and client_secret in the body (client_secret_post)".to_owned(),
            ));
        }
        ClientAuth::BasicOnly if authorization.is_none() => {
            return Err(OAuthError::InvalidClient(
                "this institution accepts only HTTP Basic client authentication (client_secret_basic)".to_owned(),
            ));
        }
        _ => {}
    }
    let Some(authorization) = authorization else {
        return match (body_id, body_secret) {
            (Some(id), Some(secret)) if is_client(id, secret) => Ok(id.to_owned()),
            (Some(_), Some(_)) => Err(refused()),
            _ => Err(OAuthError::InvalidClient(
                "client authentication is required: HTTP Basic, or client_id and client_secret in the body".to_owned(),
            )),
        };
    };
    if body_secret.is_some() {
        return Err(OAuthError::InvalidRequest(
            "use one client authentication method: HTTP Basic or client_secret in the body, not both".to_owned(),
        ));
    }
    let (id, secret) = parse_basic(authorization).ok_or_else(|| {
        OAuthError::InvalidClient(
            "the Authorization header is not valid HTTP Basic credentials".to_owned(),
        )
    })?;
    // RFC 6749 §2.3.1 has clients form-encode both parts first; many skip it, so take either.
    let decoded = form_decoded(&id).zip(form_decoded(&secret));
    let client_id = if is_client(&id, &secret) {
        id
    } else {
        match decoded {
            Some((decoded_id, decoded_secret)) if is_client(&decoded_id, &decoded_secret) => {
                decoded_id
            }
            _ => return Err(refused()),
        }
    };
    if body_id.is_some_and(|body_id| body_id != client_id) {
        return Err(OAuthError::InvalidRequest(
            "client_id in the body differs from the Basic credentials".to_owned(),
        ));
    }
    Ok(client_id)
}

fn parse_basic(value: &HeaderValue) -> Option<(String, String)> {
    let (scheme, encoded) = value.to_str().ok()?.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    Some((id.to_owned(), secret.to_owned()))
}

/// Undoes `application/x-www-form-urlencoded` encoding of one value; `None` if the text
/// holds raw delimiters and so was not encoded.
fn form_decoded(text: &str) -> Option<String> {
    if text.contains(['&', '=']) {
        return None;
    }
    Some(
        url::form_urlencoded::parse(text.as_bytes())
            .next()
            .map(|(name, _)| name.into_owned())
            .unwrap_or_default(),
    )
}

#[cfg(test)]
mod tests {
    use super::super::SandboxConfig;
    use super::super::test_support::{
        CHALLENGE, REDIRECT_URI, TestSandbox, VERIFIER, location_query,
    };
    use super::*;

    #[test]
    fn user_ids_follow_the_documented_pattern() {
        assert!(is_valid_user_id("demo-alice"));
        assert!(is_valid_user_id("a.b_c-9"));
        assert!(!is_valid_user_id(""));
        assert!(!is_valid_user_id("with space"));
        assert!(!is_valid_user_id(&"x".repeat(65)));
    }

    #[test]
    fn basic_credentials_are_form_decoded() {
        assert_eq!(form_decoded("a%2Bb+c").as_deref(), Some("a+b c"));
        assert_eq!(form_decoded("a=b"), None);
        let header =
            HeaderValue::from_static("Basic Zmluc3luYy1zYW5kYm94Om1lcmlkaWFuLXNhbmRib3gtc2VjcmV0");
        assert_eq!(
            parse_basic(&header),
            Some((
                "finsync-sandbox".to_owned(),
                "meridian-sandbox-secret".to_owned()
            ))
        );
    }

    #[tokio::test]
    async fn demo_users_are_approved_at_once_and_others_see_consent() {
        let sandbox = TestSandbox::start().await;
        let response = sandbox
            .authorize_request(&[("login_hint", "demo-carol")])
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), 302);
        let query = location_query(&response);
        assert!(
            query
                .get("code")
                .is_some_and(|code| code.starts_with("mer_ac_"))
        );
        assert_eq!(query.get("state").map(String::as_str), Some("xyz"));

        let response = sandbox
            .authorize_request(&[("login_hint", "zoe")])
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), 200);
        let page = response.text().await.expect("body");
        assert!(
            page.contains("name=\"decision\" value=\"approve\""),
            "{page}"
        );
        assert!(page.contains("value=\"zoe\""), "{page}");
        assert_eq!(sandbox.stats().authorizations, 1);
        sandbox.shutdown().await;
    }

    #[tokio::test]
    async fn the_consent_form_approves_or_denies() {
        let sandbox = TestSandbox::start().await;
        let request = [
            ("response_type", "code"),
            ("client_id", sandbox.client_id.as_str()),
            ("redirect_uri", REDIRECT_URI),
            ("scope", "accounts"),
            ("state", "s1"),
            ("code_challenge", CHALLENGE),
            ("code_challenge_method", "S256"),
        ];
        let post = |extra: &[(&'static str, &'static str)]| {
            let mut form: Vec<(&str, &str)> = request.to_vec();
            form.extend_from_slice(extra);
            sandbox.post("/meridian/oauth/authorize").form(&form).send()
        };
        let denied = post(&[("user_id", "zoe"), ("decision", "deny")])
            .await
            .expect("request");
        assert_eq!(denied.status(), 302);
        let query = location_query(&denied);
        assert_eq!(
            query.get("error").map(String::as_str),
            Some("access_denied")
        );
        assert_eq!(query.get("state").map(String::as_str), Some("s1"));

        let refused = post(&[("user_id", "no spaces"), ("decision", "approve")])
            .await
            .expect("request");
        assert_eq!(refused.status(), 400);

        let approved = post(&[("user_id", "zoe"), ("decision", "approve")])
            .await
            .expect("request");
        assert_eq!(approved.status(), 302);
        let code = location_query(&approved).remove("code").expect("code");
        let tokens = sandbox.exchange(&code).await;
        assert_eq!(tokens.status(), 200);
        let tokens: serde_json::Value = tokens.json().await.expect("json");
        assert_eq!(tokens["scope"], "accounts");
        sandbox.shutdown().await;
    }

    #[tokio::test]
    async fn bad_client_or_redirect_is_shown_and_other_errors_redirect() {
        let sandbox = TestSandbox::start().await;
        for bad in [
            [("client_id", "other")],
            [("redirect_uri", "/relative")],
            [("redirect_uri", "ftp://x/y")],
        ] {
            let response = sandbox
                .authorize_request(&bad)
                .send()
                .await
                .expect("request");
            assert_eq!(response.status(), 400, "{bad:?}");
            assert!(response.headers().get(header::LOCATION).is_none());
        }
        let cases = [
            ([("scope", "accounts payments")], "invalid_scope"),
            ([("code_challenge_method", "plain")], "invalid_request"),
            ([("response_type", "token")], "unsupported_response_type"),
            ([("code_challenge", "too-short")], "invalid_request"),
        ];
        for (bad, error) in cases {
            let response = sandbox
                .authorize_request(&bad)
                .send()
                .await
                .expect("request");
            assert_eq!(response.status(), 302, "{bad:?}");
            let query = location_query(&response);
            assert_eq!(
                query.get("error").map(String::as_str),
                Some(error),
                "{bad:?}"
            );
            assert_eq!(query.get("state").map(String::as_str), Some("xyz"));
        }
        sandbox.shutdown().await;
    }

    #[tokio::test]
    async fn the_token_endpoint_checks_pkce_and_uses_each_code_once() {
        let sandbox = TestSandbox::start().await;
        let code = sandbox.authorize("demo-alice", "accounts").await;
        let wrong_verifier = "A".repeat(43);
        let response = sandbox
            .token(&[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", REDIRECT_URI),
                ("code_verifier", &wrong_verifier),
            ])
            .await;
        assert_eq!(response.status(), 400);
        let body: serde_json::Value = response.json().await.expect("json");
        assert_eq!(body["error"], "invalid_grant");

        let code = sandbox.authorize("demo-alice", "accounts").await;
        let first = sandbox.exchange(&code).await;
        assert_eq!(first.status(), 200);
        assert_eq!(
            first
                .headers()
                .get(header::CACHE_CONTROL)
                .map(HeaderValue::as_bytes),
            Some(&b"no-store"[..])
        );
        let second = sandbox.exchange(&code).await;
        assert_eq!(second.status(), 400);
        let body: serde_json::Value = second.json().await.expect("json");
        assert_eq!(body["error"], "invalid_grant");
        assert_eq!(sandbox.stats().code_exchanges, 1);
        assert!(VERIFIER.len() >= 43);
        sandbox.shutdown().await;
    }

    #[tokio::test]
    async fn refresh_tokens_rotate_over_http() {
        let sandbox = TestSandbox::start().await;
        let tokens = sandbox.link("test-user", "holdings").await;
        let old = tokens["refresh_token"]
            .as_str()
            .expect("refresh token")
            .to_owned();
        let rotated = sandbox
            .token(&[("grant_type", "refresh_token"), ("refresh_token", &old)])
            .await;
        assert_eq!(rotated.status(), 200);
        let rotated: serde_json::Value = rotated.json().await.expect("json");
        assert_ne!(rotated["refresh_token"].as_str(), Some(old.as_str()));
        assert_eq!(rotated["scope"], "holdings");

        let reused = sandbox
            .token(&[("grant_type", "refresh_token"), ("refresh_token", &old)])
            .await;
        assert_eq!(reused.status(), 400);
        let body: serde_json::Value = reused.json().await.expect("json");
        assert_eq!(body["error"], "invalid_grant");
        assert!(body["error_description"].is_string());
        let stats = sandbox.stats();
        assert_eq!((stats.refreshes, stats.refreshes_rejected), (1, 1));
        sandbox.shutdown().await;
    }

    /// The bodies of a code exchange and of a refresh answered under `quirks`, after
    /// checking that an error response keeps its standard shape.
    async fn token_bodies(quirks: TokenQuirks) -> [serde_json::Value; 2] {
        let sandbox = TestSandbox::start_with(SandboxConfig {
            token_quirks: quirks,
            ..SandboxConfig::default()
        })
        .await;
        let linked = sandbox.link("demo-alice", "accounts").await;
        let old = linked["refresh_token"].as_str().expect("refresh token");
        let refreshed = sandbox.refresh(old).await;
        assert_eq!(refreshed.status(), 200);
        let refreshed: serde_json::Value = refreshed.json().await.expect("json");

        let rejected = sandbox.refresh(old).await;
        assert_eq!(rejected.status(), 400);
        let error: serde_json::Value = rejected.json().await.expect("json");
        assert_eq!(members(&error), ["error", "error_description"]);
        assert_eq!(error["error"], "invalid_grant");
        sandbox.shutdown().await;
        [linked, refreshed]
    }

    /// A JSON object's member names, sorted.
    fn members(body: &serde_json::Value) -> Vec<&str> {
        let mut names: Vec<&str> = body
            .as_object()
            .expect("a JSON object")
            .keys()
            .map(String::as_str)
            .collect();
        names.sort_unstable();
        names
    }

    const STANDARD_MEMBERS: [&str; 5] = [
        "access_token",
        "expires_in",
        "refresh_token",
        "scope",
        "token_type",
    ];

    #[tokio::test]
    async fn token_responses_are_standard_by_default() {
        for body in token_bodies(TokenQuirks::default()).await {
            assert_eq!(members(&body), STANDARD_MEMBERS, "{body}");
            assert_eq!(body["expires_in"], 3600);
            assert_eq!(body["token_type"], "Bearer");
        }
    }

    #[tokio::test]
    async fn the_expires_in_as_string_quirk_sends_a_string() {
        let quirks = TokenQuirks {
            expires_in_as_string: true,
            ..TokenQuirks::default()
        };
        for body in token_bodies(quirks).await {
            assert_eq!(members(&body), STANDARD_MEMBERS, "{body}");
            assert_eq!(body["expires_in"], serde_json::json!("3600"), "{body}");
        }
    }

    #[tokio::test]
    async fn the_omit_expires_in_quirk_drops_it_even_as_a_string() {
        for expires_in_as_string in [false, true] {
            let quirks = TokenQuirks {
                omit_expires_in: true,
                expires_in_as_string,
                ..TokenQuirks::default()
            };
            for body in token_bodies(quirks).await {
                assert_eq!(
                    members(&body),
                    ["access_token", "refresh_token", "scope", "token_type"],
                    "{body}"
                );
            }
        }
    }

    #[tokio::test]
    async fn the_omit_token_type_quirk_drops_it() {
        let quirks = TokenQuirks {
            omit_token_type: true,
            ..TokenQuirks::default()
        };
        for body in token_bodies(quirks).await {
            assert_eq!(
                members(&body),
                ["access_token", "expires_in", "refresh_token", "scope"],
                "{body}"
            );
            assert_eq!(body["expires_in"], 3600);
        }
    }

    #[tokio::test]
    async fn the_extra_fields_quirk_adds_unrequested_members() {
        let quirks = TokenQuirks {
            extra_fields: true,
            ..TokenQuirks::default()
        };
        for body in token_bodies(quirks).await {
            assert_eq!(
                members(&body),
                [
                    "access_token",
                    "expires_in",
                    "id_token_hint",
                    "meta",
                    "refresh_token",
                    "scope",
                    "token_type"
                ],
                "{body}"
            );
            assert_eq!(body["id_token_hint"], "x");
            assert_eq!(body["meta"], serde_json::json!({"issued_by": "meridian"}));
            assert_eq!(body["token_type"], "Bearer");
            assert_eq!(body["expires_in"], 3600);
        }
    }

    #[tokio::test]
    async fn client_authentication_is_required_either_way() {
        let sandbox = TestSandbox::start().await;
        let form = [
            ("grant_type", "refresh_token"),
            ("refresh_token", "mer_rt_unknown"),
        ];
        let anonymous = sandbox
            .post("/meridian/oauth/token")
            .form(&form)
            .send()
            .await
            .expect("request");
        assert_eq!(anonymous.status(), 401);
        assert!(anonymous.headers().contains_key(header::WWW_AUTHENTICATE));
        let body: serde_json::Value = anonymous.json().await.expect("json");
        assert_eq!(body["error"], "invalid_client");

        let wrong = sandbox
            .post("/meridian/oauth/token")
            .basic_auth(&sandbox.client_id, Some("wrong"))
            .form(&form)
            .send()
            .await
            .expect("request");
        assert_eq!(wrong.status(), 401);

        // Credentials in the body authenticate too; the token itself is then unknown.
        let in_body = [
            ("grant_type", "refresh_token"),
            ("refresh_token", "mer_rt_unknown"),
            ("client_id", sandbox.client_id.as_str()),
            ("client_secret", sandbox.client_secret.as_str()),
        ];
        let posted = sandbox
            .post("/meridian/oauth/token")
            .form(&in_body)
            .send()
            .await
            .expect("request");
        assert_eq!(posted.status(), 400);
        let body: serde_json::Value = posted.json().await.expect("json");
        assert_eq!(body["error"], "invalid_grant");

        let unsupported = sandbox.token(&[("grant_type", "password")]).await;
        let body: serde_json::Value = unsupported.json().await.expect("json");
        assert_eq!(body["error"], "unsupported_grant_type");
        sandbox.shutdown().await;
    }

    #[tokio::test]
    async fn revocation_answers_200_even_for_unknown_tokens() {
        let sandbox = TestSandbox::start().await;
        let response = sandbox
            .post("/meridian/oauth/revoke")
            .basic_auth(&sandbox.client_id, Some(&sandbox.client_secret))
            .form(&[("token", "never-issued")])
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), 200);
        let anonymous = sandbox
            .post("/meridian/oauth/revoke")
            .form(&[("token", "never-issued")])
            .send()
            .await
            .expect("request");
        assert_eq!(anonymous.status(), 401);
        assert_eq!(sandbox.stats().revocations, 1);
        sandbox.shutdown().await;
    }
}
