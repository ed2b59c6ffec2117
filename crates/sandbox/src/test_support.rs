//! Test helpers: a sandbox on a real loopback port, a client that does not follow
//! redirects, and the OAuth steps tests keep repeating.

use std::collections::HashMap;

use chrono::NaiveDate;
use secrecy::ExposeSecret;
use tokio::net::TcpListener;

use super::data::Portfolio;
use super::{Institution, Sandbox, SandboxConfig, SandboxStats, spawn};

/// The worked example of RFC 7636 Appendix B.
pub(super) const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
pub(super) const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
/// Never contacted: the client stops at the 302.
pub(super) const REDIRECT_URI: &str = "http://127.0.0.1:9/callback";

pub(super) struct TestSandbox {
    sandbox: Sandbox,
    http: reqwest::Client,
    config: SandboxConfig,
    /// Meridian's client, which most tests use.
    pub(super) client_id: String,
    pub(super) client_secret: String,
    pub(super) anchor_date: NaiveDate,
}

impl TestSandbox {
    pub(super) async fn start() -> Self {
        Self::start_with(SandboxConfig::default()).await
    }

    pub(super) async fn start_with(config: SandboxConfig) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let (client_id, client_secret) = client_pair(&config, Institution::Meridian);
        let anchor_date = config.anchor_date;
        let sandbox = spawn(config.clone(), listener)
            .await
            .expect("spawn sandbox");
        // finsync's own client: redirects off, and rustls with its crypto provider.
        let http = crate::http::client();
        Self {
            sandbox,
            http,
            config,
            client_id,
            client_secret,
            anchor_date,
        }
    }

    pub(super) fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.http.get(format!("{}{path}", self.sandbox.base_url()))
    }

    pub(super) fn sandbox_request(
        &self,
        method: reqwest::Method,
        path: &str,
    ) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.sandbox.base_url()))
    }

    pub(super) fn faults_of(&self, institution: Institution) -> super::Faults {
        self.sandbox.faults(institution)
    }

    pub(super) fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.http.post(format!("{}{path}", self.sandbox.base_url()))
    }

    /// `institution`'s client id and secret.
    pub(super) fn client(&self, institution: Institution) -> (String, String) {
        client_pair(&self.config, institution)
    }

    pub(super) fn sandbox(&self) -> &Sandbox {
        &self.sandbox
    }

    pub(super) fn portfolio(&self, institution: Institution, user_id: &str) -> Portfolio {
        self.sandbox.portfolio(institution, user_id)
    }

    pub(super) fn stats(&self) -> SandboxStats {
        self.sandbox.stats()
    }

    pub(super) fn issued_tokens(&self) -> Vec<String> {
        self.sandbox.issued_tokens()
    }

    pub(super) fn epoch(&self) -> u32 {
        self.sandbox.epoch()
    }

    pub(super) fn advance(&self) -> u32 {
        self.sandbox.advance()
    }

    pub(super) async fn shutdown(self) {
        self.sandbox.shutdown().await;
    }

    /// A valid authorization request for `demo-alice`, with `overrides` replacing or adding
    /// parameters.
    pub(super) fn authorize_request(&self, overrides: &[(&str, &str)]) -> reqwest::RequestBuilder {
        let mut params: Vec<(&str, &str)> = vec![
            ("response_type", "code"),
            ("client_id", &self.client_id),
            ("redirect_uri", REDIRECT_URI),
            ("scope", "accounts holdings transactions"),
            ("state", "xyz"),
            ("code_challenge", CHALLENGE),
            ("code_challenge_method", "S256"),
            ("login_hint", "demo-alice"),
        ];
        for (name, value) in overrides {
            params.retain(|(existing, _)| existing != name);
            params.push((name, value));
        }
        self.get("/meridian/oauth/authorize").query(&params)
    }

    /// Runs the authorize step for an auto-approved user and returns the code.
    pub(super) async fn authorize(&self, user_id: &str, scope: &str) -> String {
        let response = self
            .authorize_request(&[("login_hint", user_id), ("scope", scope)])
            .send()
            .await
            .expect("authorize request");
        assert_eq!(response.status(), 302);
        location_query(&response)
            .remove("code")
            .expect("code in redirect")
    }

    /// Posts a token request authenticated with HTTP Basic.
    pub(super) async fn token(&self, form: &[(&str, &str)]) -> reqwest::Response {
        self.post("/meridian/oauth/token")
            .basic_auth(&self.client_id, Some(&self.client_secret))
            .form(form)
            .send()
            .await
            .expect("token request")
    }

    pub(super) async fn exchange(&self, code: &str) -> reqwest::Response {
        self.token(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", REDIRECT_URI),
            ("code_verifier", VERIFIER),
        ])
        .await
    }

    /// A refresh with `refresh_token` and nothing else.
    pub(super) async fn refresh(&self, refresh_token: &str) -> reqwest::Response {
        self.token(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ])
        .await
    }

    /// Authorizes and exchanges the code: the token response of a fresh link.
    pub(super) async fn link(&self, user_id: &str, scope: &str) -> serde_json::Value {
        let code = self.authorize(user_id, scope).await;
        let response = self.exchange(&code).await;
        assert_eq!(response.status(), 200);
        response.json().await.expect("token json")
    }
}

fn client_pair(config: &SandboxConfig, institution: Institution) -> (String, String) {
    let client = config.client(institution);
    (
        client.client_id,
        client.client_secret.expose_secret().to_owned(),
    )
}

impl TestSandbox {
    /// Runs the authorize step at `institution` for an auto-approved user, with PKCE, and
    /// returns the code.
    pub(super) async fn authorize_at(
        &self,
        institution: Institution,
        user_id: &str,
        scope: &str,
    ) -> String {
        let (client_id, _) = self.client(institution);
        let response = self
            .get(&format!("/{institution}/oauth/authorize"))
            .query(&[
                ("response_type", "code"),
                ("client_id", client_id.as_str()),
                ("redirect_uri", REDIRECT_URI),
                ("scope", scope),
                ("state", "xyz"),
                ("code_challenge", CHALLENGE),
                ("code_challenge_method", "S256"),
                ("login_hint", user_id),
            ])
            .send()
            .await
            .expect("authorize request");
        assert_eq!(response.status(), 302);
        location_query(&response)
            .remove("code")
            .expect("code in redirect")
    }

    /// Posts a token request to `institution`, authenticated with HTTP Basic.
    pub(super) async fn token_at(
        &self,
        institution: Institution,
        form: &[(&str, &str)],
    ) -> reqwest::Response {
        let (client_id, secret) = self.client(institution);
        self.post(&format!("/{institution}/oauth/token"))
            .basic_auth(client_id, Some(secret))
            .form(form)
            .send()
            .await
            .expect("token request")
    }

    /// Authorizes with PKCE and exchanges the code with HTTP Basic at `institution`: the
    /// token response of a fresh link, as the institution shaped it.
    pub(super) async fn link_at(
        &self,
        institution: Institution,
        user_id: &str,
        scope: &str,
    ) -> serde_json::Value {
        let code = self.authorize_at(institution, user_id, scope).await;
        let response = self
            .token_at(
                institution,
                &[
                    ("grant_type", "authorization_code"),
                    ("code", &code),
                    ("redirect_uri", REDIRECT_URI),
                    ("code_verifier", VERIFIER),
                ],
            )
            .await;
        assert_eq!(response.status(), 200);
        response.json().await.expect("token json")
    }
}

/// The query parameters of a redirect's `Location`.
pub(super) fn location_query(response: &reqwest::Response) -> HashMap<String, String> {
    let location = response
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|value| value.to_str().ok())
        .expect("Location header");
    let url = url::Url::parse(location).expect("absolute Location");
    url.query_pairs().into_owned().collect()
}
