//! Apps link their own users: a link session, the hosted page a browser walks
//! through (played here by a client that keeps the page's cookie), the way back
//! to the app, and every way a session is refused without changing anything.

use std::collections::HashMap;
use std::time::Duration;

use finsync::domain::{ConnectionStatus, WebhookEvent};
use finsync::store::{DeliveryQuery, Store};
use finsync::webhooks::outbound;
use reqwest::StatusCode;
use sea_orm::ConnectionTrait;
use serde_json::{Value, json};

use crate::support::{ADMIN_TOKEN, LinkBrowser, TestApp, csrf_in, eventually, location};

const BACK: &str = "https://advisor.example.com/finsync/return";

async fn register_back(app: &TestApp) {
    let http = finsync::http::client();
    let url = format!(
        "{}/admin/tenants/{}/redirect-uris",
        app.address,
        app.tenant().id
    );
    let refused = http
        .put(&url)
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({ "redirect_uris": ["http://advisor.example.com/back"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    let body: Value = refused.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("must use https"),
        "{body}"
    );
    let put = http
        .put(&url)
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({ "redirect_uris": [BACK, "http://127.0.0.1:3000/back"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);
}

async fn create_session(app: &TestApp, key: &str, body: Value) -> (StatusCode, Value) {
    let response = finsync::http::client()
        .post(format!("{}/v1/link-sessions", app.address))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap();
    (response.status(), response.json().await.unwrap())
}

async fn session_view(app: &TestApp, key: &str, id: &str) -> (StatusCode, Value) {
    let response = finsync::http::client()
        .get(format!("{}/v1/link-sessions/{id}", app.address))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    (response.status(), response.json().await.unwrap())
}

fn query_of(url: &url::Url) -> HashMap<String, String> {
    url.query_pairs().into_owned().collect()
}

/// Subscribes the tenant to `connection.linked`, so that every link leaves a
/// delivery to count.
async fn listen_for_links(app: &TestApp) {
    let deliverer = &app.app.webhooks;
    outbound::register_endpoint(
        &deliverer.store,
        &deliverer.vault,
        app.tenant().id,
        "http://127.0.0.1:9/hooks",
        &[WebhookEvent::ConnectionLinked],
        true,
    )
    .await
    .unwrap();
}

async fn linked_events(store: &Store) -> Vec<Value> {
    store
        .webhook_deliveries(DeliveryQuery {
            tenant: None,
            endpoint: None,
            before: None,
            limit: 100,
        })
        .await
        .unwrap()
        .into_iter()
        .filter(|d| d.event == WebhookEvent::ConnectionLinked)
        .map(|d| serde_json::from_str(&d.payload).unwrap())
        .collect()
}

#[tokio::test]
async fn an_app_links_its_user_through_a_session_and_hears_how_it_went() {
    let app = TestApp::builder().sqlite().tenant("advisor").build().await;
    let store = &app.app.ctx.store;
    let key = app.tenant().bearer().to_owned();
    register_back(&app).await;
    listen_for_links(&app).await;

    // The app's backend opens a session; a retry with the same key gets the same one.
    let body = json!({ "user_id": "demo-ada", "redirect_uri": BACK, "products": ["holdings"] });
    let send = || {
        finsync::http::client()
            .post(format!("{}/v1/link-sessions", app.address))
            .bearer_auth(&key)
            .header("Idempotency-Key", "link-ada-1")
            .json(&body)
            .send()
    };
    let first = send().await.unwrap();
    assert_eq!(first.status(), 201);
    let created: Value = first.json().await.unwrap();
    let again: Value = send().await.unwrap().json().await.unwrap();
    assert_eq!(
        again, created,
        "an idempotent retry answers the same session"
    );
    let id = created["id"].as_str().unwrap().to_owned();
    let link_url = created["link_url"].as_str().unwrap().to_owned();
    assert_eq!(created["status"], "pending");
    assert!(
        link_url.starts_with(&format!("{}/link/{id}?token=", app.address)),
        "{link_url}"
    );

    // A link preview fetching the URL uses nothing up.
    let preview = LinkBrowser::default().get(&link_url).await;
    assert_eq!(preview.status(), 200);
    assert!(
        preview
            .text()
            .await
            .unwrap()
            .contains("uses finsync to read your accounts")
    );
    let (_, view) = session_view(&app, &key, &id).await;
    assert_eq!(view["status"], "pending");

    // The user opens it: the browser gets cookies for the page and the callback.
    let mut browser = LinkBrowser::default();
    let opened = browser.open(&link_url).await;
    assert_eq!(opened.status(), 303);
    let cookies: Vec<&str> = opened
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|c| c.to_str().unwrap())
        .collect();
    assert_eq!(cookies.len(), 2, "{cookies:?}");
    for (cookie, path) in cookies
        .iter()
        .zip([format!("Path=/link/{id}"), "Path=/oauth/callback".into()])
    {
        for attribute in ["HttpOnly", "SameSite=Lax", &path] {
            assert!(cookie.contains(attribute), "{cookie}");
        }
        assert!(
            cookie.contains("Max-Age="),
            "it outlives the session only a little: {cookie}"
        );
    }
    // Back at the link URL, the same browser carries on.
    let again = browser.get(&link_url).await;
    assert_eq!(again.status(), 303);
    let page = format!("{}{}", app.address, location(&opened));
    assert!(!page.contains("token"), "the token leaves the address bar");
    let (_, view) = session_view(&app, &key, &id).await;
    assert_eq!(view["status"], "open");

    // The picker: every institution serving holdings, searchable.
    let picker = browser.get(&page).await;
    assert_eq!(picker.status(), 200);
    assert_eq!(picker.headers()["referrer-policy"], "no-referrer");
    assert!(
        picker.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("default-src 'none'")
    );
    let html = picker.text().await.unwrap();
    assert!(html.contains("Meridian Brokerage"), "{html}");
    assert!(
        !html.contains("Harbor"),
        "Harbor serves no holdings: {html}"
    );
    let searched = browser
        .get(&format!("{page}?step=pick&q=KEY"))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        searched.contains("Keystone") && !searched.contains("Meridian Brokerage"),
        "{searched}"
    );

    // The consent screen says what will be read, then the user goes on.
    let consent = browser.get(&format!("{page}?institution=meridian")).await;
    let html = consent.text().await.unwrap();
    assert!(html.contains("Continue to Meridian Brokerage"), "{html}");
    assert!(html.contains("Your investments"), "{html}");
    let authorized = browser
        .post_form(
            &format!("{page}/authorize"),
            &[("csrf", &csrf_in(&html)), ("institution", "meridian")],
        )
        .await;
    assert_eq!(authorized.status(), 303);
    let at_institution = browser.get(&location(&authorized)).await;
    assert_eq!(at_institution.status(), 302);
    let callback = browser.get(&location(&at_institution)).await;
    assert_eq!(callback.status(), 303);

    // Back in the app, with the outcome and nothing secret.
    let back = url::Url::parse(&location(&callback)).unwrap();
    assert!(back.as_str().starts_with(BACK), "{back}");
    let query = query_of(&back);
    assert_eq!(query["link_session_id"], id);
    assert_eq!(query["status"], "linked");
    let connection = query["connection_id"].clone();
    assert_eq!(query.len(), 3, "nothing but the outcome: {back}");

    let (_, view) = session_view(&app, &key, &id).await;
    assert_eq!(view["status"], "linked");
    assert_eq!(view["connection_id"], connection.as_str());
    assert_eq!(view["institution"], "meridian");
    assert!(view["completed_at"].is_string());

    let events = linked_events(store).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["type"], "connection.linked");
    assert_eq!(events[0]["data"]["connection_id"], connection.as_str());
    assert_eq!(events[0]["data"]["link_session_id"], id.as_str());
    assert_eq!(events[0]["data"]["user_id"], "demo-ada");

    // The first sync follows; the app reads the portfolio with its key.
    let portfolio = eventually("the first sync", Duration::from_secs(60), || async {
        let p = app.get_json("/v1/users/demo-ada/portfolio", &key).await;
        (!p["accounts"].as_array()?.is_empty()).then_some(p)
    })
    .await;
    assert_eq!(portfolio["freshness"]["stale"], false);

    // The link works once; the callback too.
    let reopened = LinkBrowser::default().get(&link_url).await;
    assert_eq!(reopened.status(), 409);
    assert!(
        reopened
            .text()
            .await
            .unwrap()
            .contains("nothing more to do here")
    );
    let replayed = browser.get(&location(&at_institution)).await;
    assert_eq!(replayed.status(), 400);
    let (_, view) = session_view(&app, &key, &id).await;
    assert_eq!(view["status"], "linked");
    assert_eq!(linked_events(store).await.len(), 1);
}

#[tokio::test]
async fn link_sessions_refuse_what_they_must_and_change_nothing() {
    let app = TestApp::builder()
        .postgres()
        .workers(false)
        .tenant("advisor")
        .build()
        .await;
    let store = &app.app.ctx.store;
    let key = app.tenant().bearer().to_owned();
    register_back(&app).await;
    listen_for_links(&app).await;
    let count = || async {
        let db = store.db();
        let row = db
            .query_one_raw(sea_orm::Statement::from_string(
                db.get_database_backend(),
                "SELECT COUNT(*) AS n FROM link_sessions",
            ))
            .await
            .unwrap()
            .unwrap();
        row.try_get::<i64>("", "n").unwrap()
    };

    // A redirect URI the tenant did not register, a product nobody has heard of.
    let (status, body) = create_session(
        &app,
        &key,
        json!({ "user_id": "zoe", "redirect_uri": "https://evil.example.net/steal" }),
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("is not one this tenant registered"),
        "{body}"
    );
    let (status, _) = create_session(
        &app,
        &key,
        json!({ "user_id": "zoe", "redirect_uri": BACK, "products": ["crypto"] }),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(count().await, 0, "nothing made");

    // Another tenant cannot see a session.
    let (status, created) = create_session(
        &app,
        &key,
        json!({ "user_id": "zoe", "redirect_uri": BACK, "institution": "meridian" }),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    let link_url = created["link_url"].as_str().unwrap().to_owned();
    let (_, other_key) = store.create_tenant("other").await.unwrap();
    let other_key = secrecy::ExposeSecret::expose_secret(&other_key.0).to_owned();
    let (status, _) = session_view(&app, &other_key, &id).await;
    assert_eq!(status, 404);

    // A wrong token, then a second browser after the first: refused.
    let mut first = LinkBrowser::default();
    let forged = first
        .get(&format!("{}/link/{id}?token=forged", app.address))
        .await;
    assert_eq!(forged.status(), 404);
    let opened = first.open(&link_url).await;
    assert_eq!(opened.status(), 303);
    let mut second = LinkBrowser::default();
    let twice = second.get(&link_url).await;
    assert_eq!(twice.status(), 409);
    assert!(twice.text().await.unwrap().contains("already been used"));
    let page = format!("{}/link/{id}", app.address);
    let elsewhere = second.get(&page).await;
    assert_eq!(elsewhere.status(), 403);
    assert!(elsewhere.text().await.unwrap().contains("another browser"));
    // A form without this browser's token does nothing.
    let forged = first
        .post_form(
            &format!("{page}/authorize"),
            &[("csrf", "0"), ("institution", "meridian")],
        )
        .await;
    assert_eq!(forged.status(), 403);
    let (_, view) = session_view(&app, &key, &id).await;
    assert_eq!(view["status"], "open");
    assert!(view["connection_id"].is_null(), "no authorization began");

    // The user declines at the institution: the page says so and offers a retry.
    let consent = first.get(&page).await.text().await.unwrap();
    assert!(
        consent.contains("Continue to Meridian Brokerage"),
        "the session named it: {consent}"
    );
    let authorized = first
        .post_form(
            &format!("{page}/authorize"),
            &[("csrf", &csrf_in(&consent)), ("institution", "meridian")],
        )
        .await;
    let authorize_url = url::Url::parse(&location(&authorized)).unwrap();
    let state = query_of(&authorize_url)["state"].clone();
    let denied = first
        .get(&format!(
            "{}/oauth/callback?state={state}&error=access_denied",
            app.address
        ))
        .await;
    assert_eq!(denied.status(), 303);
    assert_eq!(location(&denied), format!("/link/{id}"));
    let explained = first.get(&page).await.text().await.unwrap();
    assert!(
        explained.contains("You didn&#39;t grant access")
            || explained.contains("You didn't grant access"),
        "{explained}"
    );
    assert!(explained.contains("Try again"), "{explained}");
    let (_, view) = session_view(&app, &key, &id).await;
    assert_eq!(view["status"], "open", "the user may still try again");
    assert_eq!(view["error"], "CONSENT_DENIED");
    let connection: finsync::domain::ConnectionId =
        view["connection_id"].as_str().unwrap().parse().unwrap();
    assert_ne!(
        store.connection(connection).await.unwrap().status,
        ConnectionStatus::Active
    );

    // Going back to the app ends it as denied.
    let left = first
        .post_form(&format!("{page}/leave"), &[("csrf", &csrf_in(&explained))])
        .await;
    assert_eq!(left.status(), 303);
    let back = url::Url::parse(&location(&left)).unwrap();
    let query = query_of(&back);
    assert_eq!(query["status"], "denied");
    assert_eq!(query["error"], "consent_denied");
    assert!(!query.contains_key("connection_id"));
    let (_, view) = session_view(&app, &key, &id).await;
    assert_eq!(view["status"], "denied");
    assert!(linked_events(store).await.is_empty(), "nothing was linked");

    // A session that runs out: opening it says so and goes back as expired.
    let (_, late) = create_session(
        &app,
        &key,
        json!({ "user_id": "zoe", "redirect_uri": BACK }),
    )
    .await;
    let late_id = late["id"].as_str().unwrap();
    store
        .db()
        .execute_unprepared(&format!(
            "UPDATE link_sessions SET expires_at = now() - interval '1 second' WHERE id = '{late_id}'"
        ))
        .await
        .unwrap();
    let expired = LinkBrowser::default()
        .get(late["link_url"].as_str().unwrap())
        .await;
    assert_eq!(expired.status(), 410);
    let html = expired.text().await.unwrap();
    assert!(html.contains("This link has expired"), "{html}");
    assert!(
        html.contains("status=expired"),
        "a way back to the app: {html}"
    );
    let (_, view) = session_view(&app, &key, late_id).await;
    assert_eq!(view["status"], "expired");
    assert_eq!(view["error"], "SESSION_EXPIRED");
    assert!(view["opened_at"].is_null(), "an expired link opens nothing");

    // An institution that is failing says so before the user goes there.
    store
        .db()
        .execute_unprepared(&format!(
            "UPDATE connections SET status = 'active', last_failure_at = now(), last_failure_reason = 'INSTITUTION_UNAVAILABLE: timed out' WHERE id = '{connection}'"
        ))
        .await
        .unwrap();
    let (_, created) = create_session(
        &app,
        &key,
        json!({ "user_id": "zoe", "redirect_uri": BACK }),
    )
    .await;
    let mut browser = LinkBrowser::default();
    browser.open(created["link_url"].as_str().unwrap()).await;
    let page = format!("{}/link/{}", app.address, created["id"].as_str().unwrap());
    let picker = browser.get(&page).await.text().await.unwrap();
    assert!(picker.contains("not responding right now"), "{picker}");
    let consent = browser
        .get(&format!("{page}?institution=meridian"))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        consent.contains("Meridian Brokerage is not responding right now. You can try anyway, choose another institution, or come back later."),
        "{consent}"
    );
}

/// Authorizes at the institution for `session` (opened by `browser`): returns the
/// callback URL the sandbox sends a `demo-…` user back to.
async fn authorize(browser: &mut LinkBrowser, page: &str, institution: &str) -> String {
    let html = browser
        .get(&format!("{page}?step=consent&institution={institution}"))
        .await
        .text()
        .await
        .unwrap();
    let authorized = browser
        .post_form(
            &format!("{page}/authorize"),
            &[("csrf", &csrf_in(&html)), ("institution", institution)],
        )
        .await;
    assert_eq!(authorized.status(), 303);
    let approved = browser.get(&location(&authorized)).await;
    assert_eq!(approved.status(), 302);
    location(&approved)
}

#[tokio::test]
async fn only_the_latest_attempt_in_the_browser_that_opened_the_session_links() {
    let app = TestApp::builder()
        .sqlite()
        .workers(false)
        .tenant("advisor")
        .build()
        .await;
    let store = &app.app.ctx.store;
    let key = app.tenant().bearer().to_owned();
    register_back(&app).await;
    listen_for_links(&app).await;
    let (_, created) = create_session(
        &app,
        &key,
        json!({ "user_id": "demo-zoe", "redirect_uri": BACK }),
    )
    .await;
    let id = created["id"].as_str().unwrap().to_owned();
    let page = format!("{}/link/{id}", app.address);
    let mut user = LinkBrowser::default();
    assert_eq!(
        user.open(created["link_url"].as_str().unwrap())
            .await
            .status(),
        303
    );

    // Two attempts: the first one's answer no longer counts.
    let first = authorize(&mut user, &page, "meridian").await;
    let second = authorize(&mut user, &page, "meridian").await;
    let stale = user.get(&first).await;
    assert_eq!(stale.status(), 303);
    assert_eq!(location(&stale), format!("/link/{id}"));
    let (_, view) = session_view(&app, &key, &id).await;
    assert_eq!(view["status"], "open");
    assert!(
        view["error"].is_null(),
        "a stale attempt notes nothing: {view}"
    );

    // The latest attempt's answer in another browser (a link forwarded to a
    // victim) links nothing.
    let forwarded = LinkBrowser::default().get(&second).await;
    assert_eq!(forwarded.status(), 403);
    assert!(
        forwarded
            .text()
            .await
            .unwrap()
            .contains("started in another browser")
    );
    let connection: finsync::domain::ConnectionId =
        view["connection_id"].as_str().unwrap().parse().unwrap();
    assert_ne!(
        store.connection(connection).await.unwrap().status,
        ConnectionStatus::Active
    );
    assert!(linked_events(store).await.is_empty());

    // The answer was not used up there: in the user's own browser it links.
    let done = user.get(&second).await;
    assert_eq!(done.status(), 303);
    assert!(
        location(&done).contains("status=linked"),
        "{}",
        location(&done)
    );
    assert_eq!(
        store.connection(connection).await.unwrap().status,
        ConnectionStatus::Active
    );
    assert_eq!(linked_events(store).await.len(), 1);
    // The callback's cookie goes with the session.
    let cleared = done.headers().get_all("set-cookie").iter().any(|c| {
        c.to_str()
            .unwrap()
            .starts_with(&format!("finsync_link_{id}=;"))
    });
    assert!(cleared, "{:?}", done.headers());

    // A user who leaves while the institution still has the page open: its late
    // answer links nothing.
    let (_, created) = create_session(
        &app,
        &key,
        json!({ "user_id": "demo-yan", "redirect_uri": BACK }),
    )
    .await;
    let id = created["id"].as_str().unwrap().to_owned();
    let page = format!("{}/link/{id}", app.address);
    let mut user = LinkBrowser::default();
    user.open(created["link_url"].as_str().unwrap()).await;
    let pending = authorize(&mut user, &page, "harbor").await;
    let html = user
        .get(&format!("{page}?step=pick"))
        .await
        .text()
        .await
        .unwrap();
    let left = user
        .post_form(&format!("{page}/leave"), &[("csrf", &csrf_in(&html))])
        .await;
    assert!(
        location(&left).contains("status=denied"),
        "{}",
        location(&left)
    );
    let late = user.get(&pending).await;
    assert_eq!(late.status(), 303);
    let shown = user.get(&page).await.text().await.unwrap();
    assert!(shown.contains("chose not to connect"), "{shown}");
    let (_, view) = session_view(&app, &key, &id).await;
    assert_eq!(view["status"], "denied");
    let connection: finsync::domain::ConnectionId =
        view["connection_id"].as_str().unwrap().parse().unwrap();
    assert_ne!(
        store.connection(connection).await.unwrap().status,
        ConnectionStatus::Active
    );
    assert_eq!(
        linked_events(store).await.len(),
        1,
        "still only the first link"
    );
}
