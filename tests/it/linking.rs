//! Linking over OAuth: a state works once, denied consent changes nothing, tokens
//! are sealed at rest, and relinking repairs the same connection.

use finsync::domain::{ConnectionStatus, UserId};
use reqwest::header::LOCATION;

use crate::support::TestApp;

fn no_redirects() -> reqwest::Client {
    finsync::http::client()
}

#[tokio::test]
async fn a_replayed_callback_is_rejected_and_changes_nothing() {
    let app = TestApp::builder().sqlite().tenant("advisor").build().await;
    let store = &app.app.ctx.store;
    let tenant = app.tenant();
    let user = UserId::parse("demo-alice").unwrap();

    let start = app
        .app
        .linker
        .start(tenant.id, &user, "meridian", crate::support::by_test())
        .await
        .unwrap();
    let http = no_redirects();
    let consent = http.get(start.authorize_url.clone()).send().await.unwrap();
    assert_eq!(consent.status(), 302);
    let callback = consent.headers()[LOCATION].to_str().unwrap().to_owned();
    assert!(
        callback.starts_with(&app.address),
        "redirects to our callback: {callback}"
    );
    assert_eq!(http.get(&callback).send().await.unwrap().status(), 200);
    let linked = store.connection(start.connection_id).await.unwrap();
    assert_eq!(linked.status, ConnectionStatus::Active);

    let replay = http.get(&callback).send().await.unwrap();
    assert_eq!(replay.status(), 400);
    let page = replay.text().await.unwrap();
    assert!(page.contains("already completed, or it expired"), "{page}");
    let after = store.connection(start.connection_id).await.unwrap();
    assert_eq!(
        after.tokens.access_token, linked.tokens.access_token,
        "a replay must not touch the tokens"
    );
    assert_eq!(after.status, ConnectionStatus::Active);

    let unknown = http
        .get(format!(
            "{}/oauth/callback?state=made-up&code=x",
            app.address
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 400);
}

#[tokio::test]
async fn denied_consent_is_reported_and_links_nothing() {
    let app = TestApp::builder()
        .sqlite()
        .workers(false)
        .tenant("advisor")
        .build()
        .await;
    let store = &app.app.ctx.store;
    let tenant = app.tenant();
    let user = UserId::parse("someone").unwrap();
    let start = app
        .app
        .linker
        .start(tenant.id, &user, "meridian", crate::support::by_test())
        .await
        .unwrap();
    let state = start
        .authorize_url
        .query_pairs()
        .find(|(k, _)| k == "state")
        .unwrap()
        .1
        .into_owned();

    let url = format!(
        "{}/oauth/callback?state={state}&error=access_denied",
        app.address
    );
    let response = no_redirects().get(&url).send().await.unwrap();
    assert_eq!(response.status(), 400);
    let page = response.text().await.unwrap();
    assert!(page.contains("Access was not granted"), "{page}");
    let connection = store.connection(start.connection_id).await.unwrap();
    assert_eq!(connection.status, ConnectionStatus::Pending);
    assert!(connection.tokens.access_token.is_none());
    // The state was used up by the denial.
    let retry = no_redirects()
        .get(format!(
            "{}/oauth/callback?state={state}&code=x",
            app.address
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(retry.status(), 400);
}

#[tokio::test]
async fn tokens_are_sealed_at_rest_and_relinking_keeps_the_connection_and_its_data() {
    let app = TestApp::builder()
        .postgres()
        .tenant("advisor")
        .build()
        .await;
    let store = &app.app.ctx.store;
    let tenant = app.tenant();
    let first = app.link_and_sync(tenant.id, "demo-bob").await;
    let record = store.connection(first).await.unwrap();
    let sealed = record.tokens.access_token.clone().unwrap();
    let vault = finsync::vault::Vault::single(crate::support::VAULT_KEY).unwrap();
    let token = vault
        .open(
            &finsync::vault::seal_context(first, "access_token"),
            &sealed,
        )
        .unwrap();
    let token = secrecy::ExposeSecret::expose_secret(&token).to_owned();
    assert!(token.len() > 10);

    // Neither token appears anywhere in the database, in any table.
    let refresh = vault
        .open(
            &finsync::vault::seal_context(first, "refresh_token"),
            &record.tokens.refresh_token.clone().unwrap(),
        )
        .unwrap();
    let refresh = secrecy::ExposeSecret::expose_secret(&refresh).to_owned();
    let dump = crate::support::dump_database(store).await;
    assert!(
        dump.contains("demo-bob"),
        "the dump covers the connections table"
    );
    assert!(
        !dump.contains(&token),
        "plaintext access token found in the database"
    );
    assert!(
        !dump.contains(&refresh),
        "plaintext refresh token found in the database"
    );

    let data_before = store.full_snapshot(first).await.unwrap();
    let second = app.link_and_sync(tenant.id, "demo-bob").await;
    assert_eq!(first, second, "a relink repairs the same connection");
    assert_eq!(store.full_snapshot(second).await.unwrap(), data_before);
    assert_ne!(
        store
            .connection(second)
            .await
            .unwrap()
            .tokens
            .access_token
            .unwrap(),
        sealed,
        "new tokens stored"
    );
}
