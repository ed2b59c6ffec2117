//! The sandbox's admin endpoints, under `/sandbox/admin/`: change an institution's
//! injected faults, revoke every grant, expire every access token. They take no
//! authentication: the sandbox is for development and tests, and must never be exposed
//! where anyone else can reach it.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use super::{AppState, Faults, Institution};

pub(super) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route(
            "/sandbox/admin/faults/{institution}",
            get(get_faults).put(put_faults),
        )
        .route(
            "/sandbox/admin/{institution}/revoke-grants",
            post(revoke_grants),
        )
        .route(
            "/sandbox/admin/{institution}/expire-tokens",
            post(expire_tokens),
        )
}

fn problem(status: StatusCode, message: String) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

/// The institution an admin path names; unknown ones are 404.
fn institution(id: &str) -> Result<Institution, Box<Response>> {
    id.parse::<Institution>()
        .map_err(|error| Box::new(problem(StatusCode::NOT_FOUND, error.to_string())))
}

async fn get_faults(State(app): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    match institution(&id) {
        Ok(institution) => Json(app.faults(institution).get()).into_response(),
        Err(response) => *response,
    }
}

async fn put_faults(
    State(app): State<Arc<AppState>>,
    Path(id): Path<String>,
    body: Result<Json<Faults>, JsonRejection>,
) -> Response {
    let institution = match institution(&id) {
        Ok(institution) => institution,
        Err(response) => return *response,
    };
    let Json(faults) = match body {
        Ok(body) => body,
        Err(rejection) => return problem(StatusCode::BAD_REQUEST, rejection.body_text()),
    };
    match app.faults(institution).set(faults) {
        Ok(applied) => {
            tracing::info!(%institution, faults = ?applied, "Sandbox faults changed.");
            Json(applied).into_response()
        }
        Err(error) => problem(StatusCode::BAD_REQUEST, error.to_string()),
    }
}

async fn revoke_grants(State(app): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    match institution(&id) {
        Ok(institution) => {
            let revoked = app.grants(institution).revoke_all();
            Json(json!({ "institution": institution.id(), "revoked_grants": revoked }))
                .into_response()
        }
        Err(response) => *response,
    }
}

async fn expire_tokens(State(app): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    match institution(&id) {
        Ok(institution) => {
            let expired = app.grants(institution).expire_access_tokens(Instant::now());
            Json(json!({ "institution": institution.id(), "expired_tokens": expired }))
                .into_response()
        }
        Err(response) => *response,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use axum::http::header;

    use super::super::faults::GARBAGE_NUMBER;
    use super::super::test_support::TestSandbox;
    use super::super::{Faults, SandboxConfig};
    use super::*;

    async fn put(
        sandbox: &TestSandbox,
        institution: &str,
        faults: serde_json::Value,
    ) -> reqwest::Response {
        sandbox
            .sandbox_request(
                reqwest::Method::PUT,
                &format!("/sandbox/admin/faults/{institution}"),
            )
            .json(&faults)
            .send()
            .await
            .expect("request")
    }

    async fn harbor_token(sandbox: &TestSandbox) -> String {
        // Harbor's PKCE is optional: the shared helper's challenge is checked and passes,
        // but Harbor takes client credentials in the body only, so exchange by hand.
        let code = sandbox
            .authorize_at(Institution::Harbor, "demo-alice", "accounts,transactions")
            .await;
        let (client_id, secret) = sandbox.client(Institution::Harbor);
        let response = sandbox
            .post("/harbor/oauth/token")
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", code.as_str()),
                ("redirect_uri", super::super::test_support::REDIRECT_URI),
                ("code_verifier", super::super::test_support::VERIFIER),
                ("client_id", client_id.as_str()),
                ("client_secret", secret.as_str()),
            ])
            .send()
            .await
            .expect("token");
        assert_eq!(response.status(), 200);
        let body: serde_json::Value = response.json().await.expect("json");
        body["access_token"].as_str().expect("token").to_owned()
    }

    #[tokio::test]
    async fn each_fault_kind_is_observable_at_rate_one() {
        let sandbox = TestSandbox::start().await;
        let token = harbor_token(&sandbox).await;
        let fetch = || {
            sandbox
                .get("/harbor/api/transactions")
                .bearer_auth(&token)
                .send()
        };
        assert_eq!(fetch().await.expect("request").status(), 200);

        let applied = put(&sandbox, "harbor", serde_json::json!({"error_rate": 1.0})).await;
        assert_eq!(applied.status(), 200);
        assert_eq!(fetch().await.expect("request").status(), 503);

        put(
            &sandbox,
            "harbor",
            serde_json::json!({"rate_limit_rate": 1.0, "retry_after_secs": 7}),
        )
        .await;
        let limited = fetch().await.expect("request");
        assert_eq!(limited.status(), 429);
        assert_eq!(limited.headers()[header::RETRY_AFTER], "7");

        let applied = put(
            &sandbox,
            "harbor",
            serde_json::json!({"outage": {"for_secs": 3600}}),
        )
        .await;
        let applied: Faults = applied.json().await.expect("json");
        assert!(matches!(
            applied.outage,
            Some(super::super::Outage::Until(_))
        ));
        let down = fetch().await.expect("request");
        assert_eq!(down.status(), 503);
        let retry_after: u64 = down.headers()[header::RETRY_AFTER]
            .to_str()
            .expect("text")
            .parse()
            .expect("secs");
        assert!((3000..=3600).contains(&retry_after), "{retry_after}");

        put(&sandbox, "harbor", serde_json::json!({"malformed_rate": 1.0, "drift": {"from": "memo", "to": "description"}})).await;
        let page: serde_json::Value = fetch().await.expect("request").json().await.expect("json");
        let records = page["data"].as_array().expect("data");
        assert!(!records.is_empty());
        for record in records {
            assert_eq!(record["amount"], GARBAGE_NUMBER);
            assert!(
                record.get("memo").is_none() && record["description"].is_string(),
                "{record}"
            );
        }

        put(
            &sandbox,
            "harbor",
            serde_json::json!({"latency": {"min_ms": 150, "max_ms": 150}}),
        )
        .await;
        let started = std::time::Instant::now();
        assert_eq!(fetch().await.expect("request").status(), 200);
        assert!(started.elapsed() >= Duration::from_millis(150));

        put(&sandbox, "harbor", serde_json::json!({})).await;
        let faults = sandbox
            .get("/sandbox/admin/faults/harbor")
            .send()
            .await
            .expect("request")
            .json::<Faults>()
            .await
            .expect("json");
        assert_eq!(faults, Faults::default());
        assert_eq!(fetch().await.expect("request").status(), 200);
        // The authorization server is never faulted.
        assert_eq!(sandbox.faults_of(Institution::Meridian), Faults::default());
        sandbox.shutdown().await;
    }

    #[tokio::test]
    async fn faults_wrap_meridian_and_start_from_the_configuration() {
        let config = SandboxConfig {
            faults: BTreeMap::from([(
                "meridian".to_owned(),
                Faults {
                    drift: Some(super::super::Drift {
                        from: "amount".into(),
                        to: "amt".into(),
                    }),
                    ..Faults::default()
                },
            )]),
            ..SandboxConfig::default()
        };
        let sandbox = TestSandbox::start_with(config).await;
        let tokens = sandbox.link("demo-bob", "transactions").await;
        let token = tokens["access_token"].as_str().expect("token");
        let page: serde_json::Value = sandbox
            .get("/meridian/v1/transactions")
            .bearer_auth(token)
            .send()
            .await
            .expect("request")
            .json()
            .await
            .expect("json");
        let records = page["transactions"].as_array().expect("records");
        assert!(!records.is_empty());
        assert!(
            records
                .iter()
                .all(|r| r.get("amount").is_none() && r["amt"].is_number())
        );
        sandbox.shutdown().await;
    }

    #[tokio::test]
    async fn bad_requests_to_the_admin_api_are_refused() {
        let sandbox = TestSandbox::start().await;
        assert_eq!(
            put(&sandbox, "atlantis", serde_json::json!({}))
                .await
                .status(),
            404
        );
        assert_eq!(
            put(&sandbox, "harbor", serde_json::json!({"error_rate": 2}))
                .await
                .status(),
            400
        );
        assert_eq!(
            put(&sandbox, "harbor", serde_json::json!({"errors": 1}))
                .await
                .status(),
            400
        );
        let unknown = sandbox
            .post("/sandbox/admin/atlantis/revoke-grants")
            .send()
            .await
            .expect("request");
        assert_eq!(unknown.status(), 404);
        sandbox.shutdown().await;
    }

    #[tokio::test]
    async fn revoked_grants_and_expired_tokens_answer_401() {
        let sandbox = TestSandbox::start().await;
        let tokens = sandbox
            .link_at(
                Institution::Northwind,
                "demo-alice",
                "accounts transactions",
            )
            .await;
        let access = tokens["access_token"].as_str().expect("token");
        let refresh = tokens["refresh_token"].as_str().expect("token");
        let consent = tokens["consent_id"].as_str().expect("consent");
        let fetch = |token: String| {
            sandbox
                .get("/northwind/v1/accounts")
                .bearer_auth(token)
                .header("Consent-ID", consent)
                .send()
        };
        assert_eq!(
            fetch(access.to_owned()).await.expect("request").status(),
            200
        );

        let expired = sandbox
            .post("/sandbox/admin/northwind/expire-tokens")
            .send()
            .await
            .expect("request");
        let body: serde_json::Value = expired.json().await.expect("json");
        assert_eq!(body["expired_tokens"], 1);
        assert_eq!(
            fetch(access.to_owned()).await.expect("request").status(),
            401
        );
        let refreshed = sandbox
            .token_at(
                Institution::Northwind,
                &[("grant_type", "refresh_token"), ("refresh_token", refresh)],
            )
            .await;
        assert_eq!(refreshed.status(), 200);
        let refreshed: serde_json::Value = refreshed.json().await.expect("json");
        assert_eq!(
            refreshed["consent_id"], consent,
            "a refresh keeps the consent"
        );
        let access = refreshed["access_token"]
            .as_str()
            .expect("token")
            .to_owned();
        let refresh = refreshed["refresh_token"]
            .as_str()
            .expect("token")
            .to_owned();
        assert_eq!(fetch(access.clone()).await.expect("request").status(), 200);

        let revoked = sandbox
            .post("/sandbox/admin/northwind/revoke-grants")
            .send()
            .await
            .expect("request");
        let body: serde_json::Value = revoked.json().await.expect("json");
        assert_eq!(body["revoked_grants"], 1);
        assert_eq!(fetch(access).await.expect("request").status(), 401);
        let refused = sandbox
            .token_at(
                Institution::Northwind,
                &[("grant_type", "refresh_token"), ("refresh_token", &refresh)],
            )
            .await;
        assert_eq!(refused.status(), 400);
        let body: serde_json::Value = refused.json().await.expect("json");
        assert_eq!(body["error"], "invalid_grant");
        sandbox.shutdown().await;
    }
}
