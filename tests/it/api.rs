//! The read API as advisory apps use it: every route scoped to the calling tenant,
//! keys with scopes, revocation and a rate limit, paged transactions, on-demand
//! syncs whose data is readable as soon as they report done, stale data served
//! with the right reason, and the contract it publishes.

use std::collections::BTreeSet;
use std::time::Duration;

use finsync::domain::{ConnectionStatus, TransactionStatus};
use reqwest::{Method, StatusCode};
use sea_orm::ConnectionTrait;
use secrecy::ExposeSecret;
use serde_json::{Value, json};

use crate::support::{ADMIN_TOKEN, LinkBrowser, TestApp, eventually};

async fn call(
    app: &TestApp,
    method: Method,
    path: &str,
    bearer: &str,
) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let response = finsync::http::client()
        .request(method, format!("{}{path}", app.address))
        .bearer_auth(bearer)
        .send()
        .await
        .unwrap();
    let (status, headers) = (response.status(), response.headers().clone());
    let body = response.json().await.unwrap_or(Value::Null);
    (status, headers, body)
}

async fn call_json(
    app: &TestApp,
    method: Method,
    path: &str,
    bearer: &str,
    body: Value,
) -> (StatusCode, Value) {
    let response = finsync::http::client()
        .request(method, format!("{}{path}", app.address))
        .bearer_auth(bearer)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// `call` for any route with an id: a PATCH carries an empty object (every field
/// is optional), so only the id can be what a route refuses.
async fn call_route(
    app: &TestApp,
    method: Method,
    path: &str,
    bearer: &str,
) -> (StatusCode, Value) {
    if method == Method::PATCH {
        return call_json(app, method, path, bearer, json!({})).await;
    }
    let (status, _, body) = call(app, method, path, bearer).await;
    (status, body)
}

/// Polls a sync until it stops running and returns its last status.
async fn wait_for(app: &TestApp, sync_id: &str, key: &str) -> Value {
    let what = format!("sync {sync_id} to finish");
    eventually(&what, Duration::from_secs(30), || async {
        let (status, _, body) = call(app, Method::GET, &format!("/v1/syncs/{sync_id}"), key).await;
        assert_eq!(status, 200, "{body}");
        (!matches!(body["status"].as_str(), Some("queued" | "running"))).then_some(body)
    })
    .await
}

#[tokio::test]
async fn every_route_answers_not_found_for_another_tenants_ids() {
    let app = TestApp::builder().sqlite().tenant("owner").build().await;
    let store = &app.app.ctx.store;
    let owner = app.tenant();
    let owner_key = &owner.key;
    let (_, other_key) = store.create_tenant("other").await.unwrap();
    let owner_key = owner_key.0.expose_secret().to_owned();
    let connection = app.link_and_sync(owner.id, "demo-alice").await;
    let (status, _, sync) = call(&app, Method::POST, "/v1/users/demo-alice/sync", &owner_key).await;
    assert_eq!(status, 202, "{sync}");
    let sync_id = sync["id"].as_str().unwrap();
    let (status, hook) = call_json(
        &app,
        Method::POST,
        "/v1/webhooks",
        &owner_key,
        json!({"url": "http://127.0.0.1:9/hook", "events": ["sync.completed"]}),
    )
    .await;
    assert_eq!(status, 201, "{hook}");
    let webhook_id = hook["id"].as_str().unwrap();
    let (_, _, page) = call(
        &app,
        Method::GET,
        "/v1/users/demo-alice/transactions?limit=1",
        &owner_key,
    )
    .await;
    let transaction_id = page["transactions"][0]["id"].as_str().unwrap();
    let back = "https://owner.example.com/back";
    store
        .set_tenant_redirect_uris(owner.id, &[back.to_owned()], crate::support::by_test())
        .await
        .unwrap();
    let (status, session) = call_json(
        &app,
        Method::POST,
        "/v1/link-sessions",
        &owner_key,
        json!({"user_id": "demo-alice", "redirect_uri": back}),
    )
    .await;
    assert_eq!(status, 201, "{session}");
    let link_session_id = session["id"].as_str().unwrap();
    // An erasure of a user who only ever had a link session.
    let (status, _) = call_json(
        &app,
        Method::POST,
        "/v1/link-sessions",
        &owner_key,
        json!({"user_id": "demo-carol", "redirect_uri": back}),
    )
    .await;
    assert_eq!(status, 201);
    let (status, _, erasure) = call(&app, Method::DELETE, "/v1/users/demo-carol", &owner_key).await;
    assert_eq!(status, 202, "{erasure}");
    let erasure_id = erasure["id"].as_str().unwrap();
    app.link_and_sync(owner.id, "demo-bob").await;
    let family = finsync::domain::HouseholdId::parse("family").unwrap();
    let members = [finsync::domain::UserId::parse("demo-alice").unwrap()];
    let make_family = || store.put_household(owner.id, &family, "Family", &members);
    make_family().await.unwrap();

    // Every tenant route in the published contract, with the owner's ids.
    let document = finsync::api::document();
    let mut walked = 0;
    for (path, item) in &document.paths.paths {
        if !path.starts_with("/v1/") {
            continue;
        }
        if !path.contains('{') {
            // No id in it: it can only name the caller's own things.
            continue;
        }
        // Erasing a user is walked on Bob, whose data the rest does not read.
        let user = if path == "/v1/users/{user_id}" {
            "demo-bob"
        } else {
            "demo-alice"
        };
        let concrete = path
            .replace("{user_id}", user)
            .replace("{erasure_id}", erasure_id)
            .replace("{sync_id}", sync_id)
            .replace("{webhook_id}", webhook_id)
            .replace("{transaction_id}", transaction_id)
            .replace("{link_session_id}", link_session_id)
            .replace("{household_id}", family.as_str())
            .replace("{connection_id}", &connection.to_string());
        for (method, present) in [
            (Method::GET, item.get.is_some()),
            (Method::POST, item.post.is_some()),
            (Method::PATCH, item.patch.is_some()),
            (Method::DELETE, item.delete.is_some()),
        ] {
            if !present {
                continue;
            }
            let (status, body) =
                call_route(&app, method.clone(), &concrete, other_key.0.expose_secret()).await;
            assert_eq!(
                status, 404,
                "{method} {concrete} for another tenant: {body}"
            );
            assert_eq!(body["error"]["code"], "NOT_FOUND");
            assert!(body["request_id"].is_string());
            let (status, body) = call_route(&app, method.clone(), &concrete, &owner_key).await;
            assert!(
                status.is_success() || status == 429,
                "{method} {concrete} for its owner: {status} {body}"
            );
            if method == Method::DELETE && path.starts_with("/v1/households/") {
                make_family().await.unwrap();
            }
            walked += 1;
        }
    }
    assert_eq!(walked, 19, "every /v1 operation with an id was walked");
}

#[tokio::test]
async fn keys_are_hashed_scoped_revocable_and_rate_limited() {
    let app = TestApp::builder()
        .postgres()
        .with(|settings| {
            settings.server.rate_limit_per_second = 1;
            settings.server.rate_limit_burst = 3;
        })
        .build()
        .await;
    let http = finsync::http::client();

    // An admin creates a tenant over the API; its first key works at once.
    let created: Value = http
        .post(format!("{}/admin/tenants", app.address))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"name": "advisor"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let tenant_id = created["tenant"]["id"].as_str().unwrap().to_owned();
    let first_key = created["api_key"]["secret"].as_str().unwrap().to_owned();
    assert_eq!(created["api_key"]["scopes"], json!(["read", "sync"]));
    let duplicate = http
        .post(format!("{}/admin/tenants", app.address))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"name": "advisor"}))
        .send()
        .await
        .unwrap();
    assert_eq!(duplicate.status(), 409);

    let tenant = tenant_id.parse().unwrap();
    app.link_and_sync(tenant, "demo-bob").await;

    // A read-only key reads but may not ask for syncs.
    let issued: Value = http
        .post(format!("{}/admin/tenants/{tenant_id}/keys", app.address))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"scopes": ["read"], "label": "dashboard"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let read_only = issued["secret"].as_str().unwrap().to_owned();
    let (status, _, _) = call(&app, Method::GET, "/v1/users/demo-bob/accounts", &read_only).await;
    assert_eq!(status, 200);
    let (status, _, body) = call(&app, Method::POST, "/v1/users/demo-bob/sync", &read_only).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (StatusCode::FORBIDDEN, &json!("FORBIDDEN"))
    );

    // Listings show prefixes, never keys; the database holds only hashes.
    let keys: Value = http
        .get(format!("{}/admin/tenants/{tenant_id}/keys", app.address))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(keys["keys"].as_array().unwrap().len(), 2);
    assert!(!keys.to_string().contains(&read_only));
    let dump = crate::support::dump_database(&app.app.ctx.store).await;
    assert!(!dump.contains(&read_only) && !dump.contains(&first_key));

    // Revoked: refused at once.
    let key_id = issued["id"].as_str().unwrap();
    let revoked = http
        .delete(format!(
            "{}/admin/tenants/{tenant_id}/keys/{key_id}",
            app.address
        ))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 204);
    let (status, _, _) = call(&app, Method::GET, "/v1/users/demo-bob/accounts", &read_only).await;
    assert_eq!(status, 401);

    // The other key has its own budget: a burst of 3, then 429 with Retry-After.
    // Sent at once, so that the budget cannot refill in between.
    let answers = futures::future::join_all(
        (0..6).map(|_| call(&app, Method::GET, "/v1/users/demo-bob/holdings", &first_key)),
    )
    .await;
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for (status, headers, body) in answers {
        if status == 429 {
            assert_eq!(body["error"]["code"], "RATE_LIMITED");
            retry_after = headers.get("retry-after").cloned();
        }
        statuses.push(status.as_u16());
    }
    assert_eq!(
        statuses.iter().filter(|&&s| s == 200).count(),
        3,
        "{statuses:?}"
    );
    assert!(statuses.contains(&429), "{statuses:?}");
    let wait: u64 = retry_after.unwrap().to_str().unwrap().parse().unwrap();
    assert!(wait >= 1);
}

#[tokio::test]
async fn transactions_are_filtered_and_paged_with_an_opaque_cursor() {
    let app = TestApp::builder().sqlite().tenant("advisor").build().await;
    let store = &app.app.ctx.store;
    let tenant = app.tenant();
    let key = &tenant.key;
    let key = key.0.expose_secret().to_owned();
    let connection = app.link_and_sync(tenant.id, "demo-alice").await;
    let stored = store.full_snapshot(connection).await.unwrap().transactions;
    assert!(stored.len() > 10, "enough transactions to page through");

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            None => "/v1/users/demo-alice/transactions?limit=7".to_owned(),
            Some(c) => format!("/v1/users/demo-alice/transactions?limit=7&cursor={c}"),
        };
        let (status, _, page) = call(&app, Method::GET, &path, &key).await;
        assert_eq!(status, 200, "{page}");
        assert!(page["transactions"].as_array().unwrap().len() <= 7);
        assert_eq!(page["freshness"]["stale"], false);
        seen.extend(page["transactions"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    let ids: Vec<&str> = seen.iter().map(|t| t["id"].as_str().unwrap()).collect();
    let unique_ids: BTreeSet<&str> = ids.iter().copied().collect();
    assert_eq!(ids.len(), stored.len(), "every transaction once");
    assert_eq!(unique_ids.len(), stored.len(), "no duplicates across pages");
    let dates: Vec<&str> = seen.iter().map(|t| t["date"].as_str().unwrap()).collect();
    assert!(dates.windows(2).all(|w| w[0] >= w[1]), "newest first");
    // Amounts are exact strings, as stored.
    for t in &seen {
        let original = stored
            .iter()
            .find(|s| s.external_id == t["id"].as_str().unwrap())
            .unwrap();
        assert_eq!(t["amount"]["amount"], original.amount.amount.to_string());
    }

    let pending = stored
        .iter()
        .filter(|t| t.status == TransactionStatus::Pending)
        .count();
    let (_, _, page) = call(
        &app,
        Method::GET,
        "/v1/users/demo-alice/transactions?status=pending&limit=500",
        &key,
    )
    .await;
    assert_eq!(page["transactions"].as_array().unwrap().len(), pending);
    let middle = stored[stored.len() / 2].date;
    let (_, _, page) = call(
        &app,
        Method::GET,
        &format!("/v1/users/demo-alice/transactions?from={middle}&to={middle}&limit=500"),
        &key,
    )
    .await;
    let expected = stored.iter().filter(|t| t.date == middle).count();
    assert_eq!(page["transactions"].as_array().unwrap().len(), expected);

    for bad in [
        "cursor=not-a-cursor",
        "limit=0",
        "limit=501",
        "status=settled",
        "from=2026-02-30",
        "from=2026-03-02&to=2026-03-01",
        "colour=blue",
    ] {
        let (status, _, body) = call(
            &app,
            Method::GET,
            &format!("/v1/users/demo-alice/transactions?{bad}"),
            &key,
        )
        .await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert_eq!(body["error"]["code"], "INVALID_REQUEST", "{bad}");
    }
}

#[tokio::test]
async fn a_requested_sync_is_coalesced_limited_and_readable_once_done() {
    let app = TestApp::builder()
        .postgres()
        .redis()
        .tenant("advisor")
        .build()
        .await;
    let store = &app.app.ctx.store;
    let tenant = app.tenant();
    let key = &tenant.key;
    let key = key.0.expose_secret().to_owned();
    let connection = app.link_and_sync(tenant.id, "demo-carol").await;
    // Cache the view as it is now, so a stale L1 copy would show.
    let (_, _, before) = call(&app, Method::GET, "/v1/users/demo-carol/portfolio", &key).await;

    let (status, headers, first) =
        call(&app, Method::POST, "/v1/users/demo-carol/sync", &key).await;
    assert_eq!(status, 202, "{first}");
    let id = first["id"].as_str().unwrap().to_owned();
    assert_eq!(
        headers["location"].to_str().unwrap(),
        format!("/v1/syncs/{id}")
    );
    // Asked again at once: the same request while it runs, or a clear 429 once done.
    let (status, headers, again) =
        call(&app, Method::POST, "/v1/users/demo-carol/sync", &key).await;
    match status.as_u16() {
        202 => assert_eq!(
            (again["id"].as_str(), &again["coalesced"]),
            (Some(id.as_str()), &json!(true))
        ),
        429 => assert!(headers.contains_key("retry-after")),
        other => panic!("unexpected {other}: {again}"),
    }

    let done = wait_for(&app, &id, &key).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(
        done["connections"][0]["connection_id"],
        connection.to_string()
    );
    let synced_at = store
        .connection(connection)
        .await
        .unwrap()
        .last_synced_at
        .unwrap();
    let (_, _, after) = call(&app, Method::GET, "/v1/users/demo-carol/portfolio", &key).await;
    assert_eq!(
        after["freshness"]["as_of"]
            .as_str()
            .unwrap()
            .parse::<chrono::DateTime<chrono::Utc>>()
            .unwrap(),
        synced_at,
        "the read right after done shows that sync (before: {})",
        before["freshness"]["as_of"]
    );

    let (status, headers, body) = call(&app, Method::POST, "/v1/users/demo-carol/sync", &key).await;
    assert_eq!(status, 429, "{body}");
    assert!(
        headers["retry-after"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 1
    );
}

#[tokio::test]
async fn stale_data_is_served_with_the_reason_when_the_institution_is_down() {
    let mut app = TestApp::builder()
        .expect_failed_jobs()
        .sqlite()
        .tenant("advisor")
        .build()
        .await;
    let key = app.tenant().bearer().to_owned();
    app.link_and_sync(app.tenant().id, "demo-alice").await;
    let (_, _, good) = call(&app, Method::GET, "/v1/users/demo-alice/portfolio", &key).await;
    app.shutdown_sandbox().await;

    let (status, _, sync) = call(&app, Method::POST, "/v1/users/demo-alice/sync", &key).await;
    assert_eq!(status, 202);
    let done = wait_for(&app, sync["id"].as_str().unwrap(), &key).await;
    assert_eq!(done["status"], "failed", "{done}");

    for path in [
        "portfolio",
        "accounts",
        "holdings",
        "transactions",
        "connections",
    ] {
        let (status, _, body) = call(
            &app,
            Method::GET,
            &format!("/v1/users/demo-alice/{path}"),
            &key,
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(body["freshness"]["stale"], true, "{path}: {body}");
        assert_eq!(
            body["freshness"]["reason"], "INSTITUTION_UNAVAILABLE",
            "{path}: {body}"
        );
        assert_eq!(
            body["freshness"]["as_of"], good["freshness"]["as_of"],
            "{path}"
        );
        assert_eq!(
            body["connections"][0]["freshness"]["reason"], "INSTITUTION_UNAVAILABLE",
            "{path}"
        );
    }
    let (_, _, body) = call(&app, Method::GET, "/v1/users/demo-alice/portfolio", &key).await;
    assert_eq!(
        body["accounts"], good["accounts"],
        "the last good data is served"
    );
    assert_eq!(body["holdings"], good["holdings"]);
}

#[tokio::test]
async fn a_portfolio_is_sent_gzip_compressed_to_clients_that_accept_it() {
    let app = TestApp::builder().sqlite().tenant("advisor").build().await;
    let key = app.tenant().bearer().to_owned();
    app.link_and_sync(app.tenant().id, "demo-alice").await;
    let url = format!("{}/v1/users/demo-alice/portfolio", app.address);
    let get = |accept: Option<&'static str>| {
        let mut request = finsync::http::client().get(&url).bearer_auth(&key);
        if let Some(accept) = accept {
            request = request.header("accept-encoding", accept);
        }
        async move {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 200);
            let headers = response.headers().clone();
            assert_eq!(headers["vary"], "accept-encoding", "{accept:?}");
            let encoding = headers
                .get("content-encoding")
                .map(|v| v.to_str().unwrap().to_owned());
            (encoding, response.bytes().await.unwrap().to_vec())
        }
    };

    let (encoding, plain) = get(None).await;
    assert_eq!(encoding, None);
    let plain: Value = serde_json::from_slice(&plain).unwrap();
    assert_eq!(plain["user_id"], "demo-alice");

    for accept in ["gzip", "br;q=1, GZIP;q=0.5", "*", "identity, x-gzip"] {
        let (encoding, body) = get(Some(accept)).await;
        assert_eq!(encoding.as_deref(), Some("gzip"), "{accept}");
        let mut json = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&body[..]), &mut json)
            .unwrap();
        assert!(
            body.len() * 3 < json.len(),
            "{accept}: {} bytes for {} of JSON",
            body.len(),
            json.len()
        );
        assert_eq!(
            serde_json::from_slice::<Value>(&json).unwrap(),
            plain,
            "{accept}"
        );
    }
    for refused in [
        "gzip;q=0",
        "*, gzip;q=0.000",
        "br",
        "*;q=0",
        "gzip;q=5",
        "gzip;q=x",
    ] {
        let (encoding, body) = get(Some(refused)).await;
        assert_eq!(encoding, None, "{refused}");
        assert_eq!(
            serde_json::from_slice::<Value>(&body).unwrap(),
            plain,
            "{refused}"
        );
    }
}

#[tokio::test]
async fn a_connection_that_needs_the_user_shows_why_and_a_relink_url() {
    let app = TestApp::builder().sqlite().build().await;
    let ctx = &app.app.ctx;
    let (tenant, key) = ctx.store.create_tenant("advisor").await.unwrap();
    let key = key.0.expose_secret().to_owned();
    let connection = app.link_and_sync(tenant.id, "demo-bob").await;
    assert!(
        ctx.store
            .leave_active(
                connection,
                ConnectionStatus::ReauthRequired,
                "REAUTH_REQUIRED: the institution needs the user to link again",
                true,
            )
            .await
            .unwrap()
    );
    let record = ctx.store.connection(connection).await.unwrap();
    ctx.refresh_portfolio(&record).await.unwrap();

    // Without a redirect URI there is nowhere to bring the user back to.
    let (_, _, body) = call(&app, Method::GET, "/v1/users/demo-bob/connections", &key).await;
    assert!(body["connections"][0]["relink_url"].is_null(), "{body}");

    let back = "https://advisor.example.com/finsync/return";
    ctx.store
        .set_tenant_redirect_uris(tenant.id, &[back.to_owned()], crate::support::by_test())
        .await
        .unwrap();
    let (_, _, body) = call(&app, Method::GET, "/v1/users/demo-bob/connections", &key).await;
    let c = &body["connections"][0];
    assert_eq!(c["status"], "reauth_required");
    assert_eq!(c["freshness"]["reason"], "REAUTH_REQUIRED");
    assert!(c["last_synced_at"].is_string());
    let relink = c["relink_url"].as_str().unwrap().to_owned();
    assert!(
        relink.starts_with(&format!("{}/link/", app.address)),
        "{relink}"
    );
    // Reading again hands out the same session, not a new one per read.
    let (_, _, again) = call(&app, Method::GET, "/v1/users/demo-bob/connections", &key).await;
    assert_eq!(again["connections"][0]["relink_url"], relink.as_str());

    let (_, _, portfolio) = call(&app, Method::GET, "/v1/users/demo-bob/portfolio", &key).await;
    assert_eq!(portfolio["freshness"]["reason"], "REAUTH_REQUIRED");
    assert!(
        !portfolio["accounts"].as_array().unwrap().is_empty(),
        "data kept"
    );

    // Following it repairs the connection in place and returns to the app.
    let returned = LinkBrowser::default()
        .link(&app.address, &relink, "meridian")
        .await;
    assert!(returned.as_str().starts_with(back), "{returned}");
    let query: std::collections::HashMap<_, _> = returned.query_pairs().into_owned().collect();
    assert_eq!(query["status"], "repaired");
    assert_eq!(query["connection_id"], connection.to_string());
    assert_eq!(
        ctx.store.connection(connection).await.unwrap().status,
        ConnectionStatus::Active
    );
}

#[tokio::test]
async fn admins_list_and_remove_a_tenants_users() {
    let app = TestApp::builder().sqlite().tenant("advisor").build().await;
    let tenant = app.tenant();
    let key = &tenant.key;
    app.link_and_sync(tenant.id, "demo-alice").await;
    app.link_and_sync(tenant.id, "demo-bob").await;
    let http = finsync::http::client();
    let users = format!("{}/admin/tenants/{}/users", app.address, tenant.id);
    let listed: Value = http
        .get(&users)
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = listed["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["user_id"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["demo-alice", "demo-bob"]);

    let removed = http
        .delete(format!("{users}/demo-alice"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(removed.status(), 202);
    let erasure: Value = removed.json().await.unwrap();
    let done = format!(
        "{}/admin/erasures/{}",
        app.address,
        erasure["id"].as_str().unwrap()
    );
    eventually("the erasure to finish", Duration::from_secs(30), || async {
        let body: Value = http
            .get(&done)
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (body["status"] == "done").then_some(())
    })
    .await;
    let (status, _, _) = call(
        &app,
        Method::GET,
        "/v1/users/demo-alice/portfolio",
        key.0.expose_secret(),
    )
    .await;
    assert_eq!(status, 404, "erased");
    let (status, _, _) = call(
        &app,
        Method::GET,
        "/v1/users/demo-bob/accounts",
        key.0.expose_secret(),
    )
    .await;
    assert_eq!(status, 200, "the other user is untouched");
}

#[tokio::test]
async fn the_contract_and_its_docs_page_are_served() {
    let app = TestApp::builder().sqlite().workers(false).build().await;
    let http = finsync::http::client();
    let document: Value = http
        .get(format!("{}/openapi.json", app.address))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(document["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/v1/users/{user_id}/portfolio",
        "/v1/users/{user_id}/transactions",
        "/v1/syncs/{sync_id}",
        "/admin/tenants/{tenant_id}/keys",
    ] {
        assert!(document["paths"][path].is_object(), "{path}");
    }
    let page = http
        .get(format!("{}/docs", app.address))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("/v1/users/{user_id}/transactions"));
    assert!(page.contains("`next_cursor` of the previous page") || page.contains("next_cursor"));
}

/// Runs the delivery loop's pass until it attempts something: the event of a sync
/// is queued just after the sync reports done.
async fn attempt_deliveries(app: &TestApp) -> usize {
    eventually("a delivery to attempt", Duration::from_secs(5), || async {
        let attempted = app.app.webhooks.deliver_due().await.unwrap();
        (attempted > 0).then_some(attempted)
    })
    .await
}

/// A receiver that answers 200 and keeps what it was sent.
async fn receiver() -> (
    String,
    std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>>,
) {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post({
            let seen = seen.clone();
            move |headers: axum::http::HeaderMap, body: String| {
                let seen = seen.clone();
                async move {
                    let signature = headers["finsync-signature"].to_str().unwrap().to_owned();
                    seen.lock().unwrap().push((signature, body));
                    StatusCode::OK
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, seen)
}

#[tokio::test]
async fn tenants_manage_webhooks_and_read_their_delivery_log() {
    let app = TestApp::builder().sqlite().tenant("advisor").build().await;
    let store = &app.app.ctx.store;
    let tenant = app.tenant();
    let key = &tenant.key;
    let key = key.0.expose_secret().to_owned();
    let (_, read_only) = store
        .issue_api_key(
            tenant.id,
            &[finsync::store::Scope::Read],
            None,
            crate::support::by_test(),
        )
        .await
        .unwrap();
    let (url, seen) = receiver().await;
    let (status, _) = call_json(
        &app,
        Method::POST,
        "/v1/webhooks",
        read_only.0.expose_secret(),
        json!({"url": url, "events": ["sync.completed"]}),
    )
    .await;
    assert_eq!(status, 403, "registering needs the sync scope");

    for (body, code) in [
        (
            json!({"url": "ftp://example.com/x", "events": ["sync.completed"]}),
            400,
        ),
        (json!({"url": url, "events": []}), 400),
        (json!({"url": url, "events": ["sync.exploded"]}), 400),
        (json!({"url": url}), 400),
    ] {
        let (status, answer) =
            call_json(&app, Method::POST, "/v1/webhooks", &key, body.clone()).await;
        assert_eq!(status.as_u16(), code, "{body}: {answer}");
        assert_eq!(answer["error"]["code"], "INVALID_REQUEST");
    }
    let (status, hook) = call_json(
        &app,
        Method::POST,
        "/v1/webhooks",
        &key,
        json!({"url": url, "events": ["sync.completed", "connection.repaired"]}),
    )
    .await;
    assert_eq!(status, 201, "{hook}");
    let secret = secrecy::SecretString::from(hook["secret"].as_str().unwrap().to_owned());
    let id = hook["id"].as_str().unwrap().to_owned();
    let (_, _, listed) = call(&app, Method::GET, "/v1/webhooks", &key).await;
    let listed = &listed["webhooks"];
    assert_eq!(listed[0]["id"], id.as_str());
    assert!(listed[0].get("secret").is_none(), "secrets are shown once");

    app.link_and_sync(tenant.id, "demo-carol").await;
    assert_eq!(attempt_deliveries(&app).await, 1);
    let (signature, body) = seen.lock().unwrap()[0].clone();
    finsync::webhooks::outbound::verify(
        &secret,
        &signature,
        body.as_bytes(),
        chrono::Utc::now(),
        Duration::from_secs(300),
    )
    .unwrap();
    let event: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(event["type"], "sync.completed");
    assert_eq!(event["data"]["user_id"], "demo-carol");

    let (status, _, log) = call(
        &app,
        Method::GET,
        &format!("/v1/webhooks/{id}/deliveries"),
        &key,
    )
    .await;
    assert_eq!(status, 200);
    assert!(log.get("next_cursor").is_none(), "one page: {log}");
    let log = &log["deliveries"];
    assert_eq!(log[0]["status"], "delivered");
    assert_eq!(log[0]["attempts"], 1);
    assert_eq!(log[0]["last_status_code"], 200);
    let admin_log: Value = finsync::http::client()
        .get(format!(
            "{}/admin/webhooks/deliveries?tenant_id={}",
            app.address, tenant.id
        ))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(admin_log["deliveries"][0]["id"], log[0]["id"]);

    // Paged, newest first, each delivery once.
    app.link_and_sync(tenant.id, "demo-dave").await;
    assert_eq!(attempt_deliveries(&app).await, 1);
    let path = format!("/v1/webhooks/{id}/deliveries?limit=1");
    let (_, _, first) = call(&app, Method::GET, &path, &key).await;
    let cursor = first["next_cursor"].as_str().expect("a second page");
    let (_, _, second) = call(&app, Method::GET, &format!("{path}&cursor={cursor}"), &key).await;
    assert!(second.get("next_cursor").is_none(), "{second}");
    assert_eq!(
        second["deliveries"][0]["id"], log[0]["id"],
        "the older one last"
    );
    assert_ne!(first["deliveries"][0]["id"], log[0]["id"]);

    let (status, _, _) = call(&app, Method::DELETE, &format!("/v1/webhooks/{id}"), &key).await;
    assert_eq!(status, 204);
    let (status, _, _) = call(&app, Method::DELETE, &format!("/v1/webhooks/{id}"), &key).await;
    assert_eq!(status, 404, "already removed");
    let (_, _, listed) = call(&app, Method::GET, "/v1/webhooks", &key).await;
    assert!(listed["webhooks"][0]["disabled_at"].is_string());
}

#[tokio::test]
async fn webhooks_cannot_point_at_the_internal_network() {
    let app = TestApp::builder()
        .sqlite()
        .with(|settings| settings.webhooks.allow_private_targets = false)
        .tenant("advisor")
        .build()
        .await;
    let store = &app.app.ctx.store;
    let tenant = app.tenant();
    let key = &tenant.key;
    let (url, seen) = receiver().await;
    for target in [
        url.as_str(),
        "http://169.254.169.254/latest/meta-data",
        "http://localhost:8080/admin",
        "http://[::1]/x",
        "http://10.0.0.5/x",
    ] {
        let (status, body) = call_json(
            &app,
            Method::POST,
            "/v1/webhooks",
            key.0.expose_secret(),
            json!({"url": target, "events": ["sync.completed"]}),
        )
        .await;
        assert_eq!(status, 400, "{target}: {body}");
    }

    // A name that resolves to a private address is refused when delivering: this
    // machine's own name (it resolves to loopback or the local network), else
    // `localhost`, which the same check refuses by name.
    let host = String::from_utf8(
        std::process::Command::new("hostname")
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .trim()
    .to_owned();
    let private = match tokio::net::lookup_host((host.as_str(), 80)).await {
        Ok(addresses) => addresses
            .into_iter()
            .all(|a| !finsync::webhooks::outbound::target::is_public(a.ip())),
        Err(_) => false,
    };
    let by_name = url.replace("127.0.0.1", if private { &host } else { "localhost" });
    let endpoint = finsync::webhooks::outbound::register_endpoint(
        store,
        &app.app.linker.vault,
        tenant.id,
        &by_name,
        &[finsync::webhooks::outbound::WebhookEvent::SyncCompleted],
        true,
    )
    .await
    .unwrap();
    app.link_and_sync(tenant.id, "demo-alice").await;
    assert_eq!(attempt_deliveries(&app).await, 1);
    assert!(
        seen.lock().unwrap().is_empty(),
        "nothing reached the receiver"
    );
    let log = store
        .webhook_deliveries(finsync::store::DeliveryQuery {
            tenant: Some(tenant.id),
            endpoint: Some(endpoint.endpoint.id),
            before: None,
            limit: 10,
        })
        .await
        .unwrap();
    assert!(
        log[0].last_error.as_deref().unwrap().starts_with("REFUSED"),
        "{:?}",
        log[0].last_error
    );
}

/// `POST /v1/users/{id}/sync` takes no body: a malformed or unexpected one is
/// refused and starts nothing; none, or `{}`, is a request.
#[tokio::test]
async fn a_sync_request_with_a_body_it_does_not_take_is_refused_and_starts_nothing() {
    let app = TestApp::builder().tenant("advisor").build().await;
    let tenant = app.tenant();
    app.link_and_sync(tenant.id, "demo-alice").await;
    let post = |body: &'static str| {
        finsync::http::client()
            .post(format!("{}/v1/users/demo-alice/sync", app.address))
            .bearer_auth(tenant.bearer())
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    for body in ["{oops", "[]", r#"{"connections": ["x"]}"#] {
        let response = post(body).await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{body}");
        let answer: Value = response.json().await.unwrap();
        assert_eq!(
            answer["error"]["code"], "INVALID_REQUEST",
            "{body}: {answer}"
        );
    }
    let user = finsync::domain::UserId::parse("demo-alice").unwrap();
    assert!(
        app.app
            .ctx
            .store
            .latest_sync_request(tenant.id, &user)
            .await
            .unwrap()
            .is_none(),
        "a refused request recorded nothing"
    );
    assert_eq!(post("{}").await.unwrap().status(), StatusCode::ACCEPTED);
}

/// `POST` with an `Idempotency-Key`, its answer's status, headers and body.
async fn post_keyed(
    app: &TestApp,
    path: &str,
    bearer: &str,
    key: &str,
    body: Value,
) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let response = finsync::http::client()
        .post(format!("{}{path}", app.address))
        .bearer_auth(bearer)
        .header("Idempotency-Key", key)
        .json(&body)
        .send()
        .await
        .unwrap();
    let (status, headers) = (response.status(), response.headers().clone());
    (
        status,
        headers,
        response.json().await.unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn an_idempotency_key_makes_a_post_safe_to_retry() {
    let app = TestApp::builder()
        .postgres()
        .tenant("advisor")
        .build()
        .await;
    let ctx = &app.app.ctx;
    let tenant = app.tenant();
    let bearer = tenant.bearer().to_owned();
    let (url, _) = receiver().await;
    let endpoint = json!({"url": url, "events": ["sync.completed"]});

    // Sent twice (a timeout, a retry): one endpoint, the same answer, its secret too.
    let (status, headers, first) =
        post_keyed(&app, "/v1/webhooks", &bearer, "hook-1", endpoint.clone()).await;
    assert_eq!(status, 201, "{first}");
    assert!(headers.get("idempotent-replayed").is_none());
    let (status, headers, again) =
        post_keyed(&app, "/v1/webhooks", &bearer, "hook-1", endpoint.clone()).await;
    assert_eq!((status.as_u16(), &again), (201, &first));
    assert_eq!(headers["idempotent-replayed"], "true");
    let (_, _, listed) = call(&app, Method::GET, "/v1/webhooks", &bearer).await;
    assert_eq!(listed["webhooks"].as_array().unwrap().len(), 1, "{listed}");

    // The same key for another request is refused, and changes nothing.
    let other = json!({"url": url, "events": ["connection.repaired"]});
    let (status, _, refused) =
        post_keyed(&app, "/v1/webhooks", &bearer, "hook-1", other.clone()).await;
    assert_eq!(status, 422, "{refused}");
    assert_eq!(refused["error"]["code"], "IDEMPOTENCY_KEY_REUSED");
    let (_, _, listed) = call(&app, Method::GET, "/v1/webhooks", &bearer).await;
    assert_eq!(listed["webhooks"].as_array().unwrap().len(), 1);

    // Another API key of the tenant cannot replay it (a read-only one would get the
    // signing secret): to it the key names another request.
    let (_, read_only) = ctx
        .store
        .issue_api_key(
            tenant.id,
            &[finsync::store::Scope::Read],
            None,
            crate::support::by_test(),
        )
        .await
        .unwrap();
    let (status, _, refused) = post_keyed(
        &app,
        "/v1/webhooks",
        read_only.0.expose_secret(),
        "hook-1",
        endpoint.clone(),
    )
    .await;
    assert_eq!(status, 422, "{refused}");
    assert!(refused.get("secret").is_none());

    // A malformed request is not an answer to keep: fixed, the same key runs it.
    let bad = json!({"url": "ftp://example.com/x", "events": ["sync.completed"]});
    let (status, _, _) = post_keyed(&app, "/v1/webhooks", &bearer, "fix-1", bad).await;
    assert_eq!(status, 400);
    let (status, headers, _) =
        post_keyed(&app, "/v1/webhooks", &bearer, "fix-1", endpoint.clone()).await;
    assert_eq!(status, 201);
    assert!(headers.get("idempotent-replayed").is_none());
    // The same JSON with its keys in another order and other spacing is the same
    // request.
    let reordered = finsync::http::client()
        .post(format!("{}/v1/webhooks", app.address))
        .bearer_auth(&bearer)
        .header("Idempotency-Key", "fix-1")
        .header("Content-Type", "application/json")
        .body(format!(
            "{{ \"url\": \"{url}\",\n  \"events\": [\"sync.completed\"] }}"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(reordered.status(), 201);
    assert_eq!(reordered.headers()["idempotent-replayed"], "true");

    // A sync asked for twice with one key is one sync, answered the same, with its
    // Location.
    app.link_and_sync(tenant.id, "demo-alice").await;
    let path = "/v1/users/demo-alice/sync";
    let (status, headers, sync) = post_keyed(&app, path, &bearer, "sync-1", json!({})).await;
    assert_eq!(status, 202, "{sync}");
    let location = headers["location"].clone();
    let (status, headers, replayed) = post_keyed(&app, path, &bearer, "sync-1", json!({})).await;
    assert_eq!((status.as_u16(), &replayed["id"]), (202, &sync["id"]));
    assert_eq!(headers["location"], location);

    // A key that is not 1 to 255 visible characters is refused before anything runs.
    for bad_key in ["", &"k".repeat(256), "caf\u{e9}"] {
        let response = finsync::http::client()
            .post(format!("{}/v1/webhooks", app.address))
            .bearer_auth(&bearer)
            .header("Idempotency-Key", bad_key.as_bytes())
            .json(&endpoint)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{bad_key:?}");
    }

    // Answers are sealed at rest: the signing secret shown once is not in the clear.
    let dump = crate::support::dump_database(&ctx.store).await;
    assert!(!dump.contains(first["secret"].as_str().unwrap()));

    // A day later the key is free again, and the purge forgets it.
    ctx.store
        .db()
        .execute_unprepared(
            "UPDATE idempotency_keys SET created_at = created_at - interval '25 hours'",
        )
        .await
        .unwrap();
    let (status, headers, _) = post_keyed(&app, "/v1/webhooks", &bearer, "hook-1", other).await;
    assert_eq!(status, 201);
    assert!(headers.get("idempotent-replayed").is_none());
    let purged = finsync::sync::scheduler::purge_history(
        ctx,
        &finsync::sync::scheduler::Cutoffs::all_before(chrono::Utc::now()),
    )
    .await
    .unwrap();
    assert!(purged.idempotency_keys >= 2, "{purged:?}");

    // Two requests with one key never both run; a claim whose process stopped is
    // taken over once it counts as abandoned.
    use finsync::store::Claim;
    let now = chrono::Utc::now();
    let claim = |fingerprint: &'static str, at: chrono::DateTime<chrono::Utc>| {
        ctx.store
            .claim_idempotency_key(tenant.id, "t:k", "owner", fingerprint, at)
    };
    assert_eq!(claim("f", now).await.unwrap(), Claim::Fresh);
    assert_eq!(claim("f", now).await.unwrap(), Claim::InFlight);
    assert_eq!(claim("g", now).await.unwrap(), Claim::Mismatch);
    let later = now + chrono::Duration::minutes(3);
    assert_eq!(claim("f", later).await.unwrap(), Claim::Fresh);
}

#[tokio::test]
async fn a_tenant_disconnects_one_of_its_users_connections() {
    let app = TestApp::builder().sqlite().tenant("advisor").build().await;
    let store = &app.app.ctx.store;
    let tenant = app.tenant();
    let bearer = tenant.bearer().to_owned();
    let alice = app.link_and_sync(tenant.id, "demo-alice").await;
    let bob = app.link_and_sync(tenant.id, "demo-bob").await;
    let path = format!("/v1/users/demo-alice/connections/{alice}");

    let (_, read_only) = store
        .issue_api_key(
            tenant.id,
            &[finsync::store::Scope::Read],
            None,
            crate::support::by_test(),
        )
        .await
        .unwrap();
    let (status, _) = call_route(&app, Method::DELETE, &path, read_only.0.expose_secret()).await;
    assert_eq!(status, 403, "disconnecting needs the sync scope");
    // Bob's connection is not Alice's.
    let (status, _) = call_route(
        &app,
        Method::DELETE,
        &format!("/v1/users/demo-alice/connections/{bob}"),
        &bearer,
    )
    .await;
    assert_eq!(status, 404);

    let (status, done) = call_route(&app, Method::DELETE, &path, &bearer).await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["id"], alice.to_string());
    assert_eq!(done["status"], "revoked");
    assert_eq!(
        done["revoked_at_institution"], true,
        "Meridian revokes grants"
    );
    let portfolio = app
        .get_json("/v1/users/demo-alice/portfolio", &bearer)
        .await;
    assert!(
        portfolio["accounts"].as_array().unwrap().is_empty(),
        "{portfolio}"
    );
    assert!(
        portfolio["freshness"]["reason"]
            .as_str()
            .unwrap()
            .starts_with("CONNECTION_REVOKED"),
        "{portfolio}"
    );
    assert!(
        store
            .full_snapshot(alice)
            .await
            .unwrap()
            .accounts
            .is_empty()
    );
    assert!(
        !store.full_snapshot(bob).await.unwrap().accounts.is_empty(),
        "Bob keeps his"
    );

    // Again: nothing more to revoke, nothing changes.
    let (status, again) = call_route(&app, Method::DELETE, &path, &bearer).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["revoked_at_institution"], false);
}

#[tokio::test]
async fn apps_list_the_institutions_they_may_offer_with_the_fleets_view_of_their_health() {
    let app = TestApp::builder().sqlite().tenant("advisor").build().await;
    let store = &app.app.ctx.store;
    let tenant = app.tenant();
    let bearer = tenant.bearer().to_owned();

    // Every institution in service, by name, page by page.
    let mut served: Vec<(String, String)> = app
        .app
        .catalog
        .registry()
        .all()
        .into_iter()
        .map(|s| (s.connector.name.clone(), s.connector.id.clone()))
        .collect();
    served.sort();
    let mut listed = Vec::new();
    let mut path = "/v1/institutions?limit=2".to_owned();
    loop {
        let page = app.get_json(&path, &bearer).await;
        let institutions = page["institutions"].as_array().unwrap();
        assert!(institutions.len() <= 2, "{page}");
        for i in institutions {
            listed.push((
                i["name"].as_str().unwrap().to_owned(),
                i["id"].as_str().unwrap().to_owned(),
            ));
        }
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/v1/institutions?limit=2&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(listed, served);

    // Searched by part of the name or id, any case.
    let found = app.get_json("/v1/institutions?q=MERID", &bearer).await;
    let meridian = &found["institutions"][0];
    assert_eq!(
        found["institutions"].as_array().unwrap().len(),
        1,
        "{found}"
    );
    assert_eq!(
        (&meridian["id"], &meridian["initials"], &meridian["health"]),
        (&json!("meridian"), &json!("MB"), &json!("ok"))
    );
    assert_eq!(
        meridian["products"],
        json!(["accounts", "holdings", "transactions"])
    );
    for bad in ["limit=0", "limit=201", "cursor=nonsense"] {
        let (status, body) = call_route(
            &app,
            Method::GET,
            &format!("/v1/institutions?{bad}"),
            &bearer,
        )
        .await;
        assert_eq!(status, 400, "{bad}: {body}");
    }

    // Health is the fleet's: every connection that tried lately failed for the
    // institution's reasons is `down`; one syncing beside it makes it `degraded`.
    let health = || async {
        app.get_json("/v1/institutions?q=meridian", &bearer).await["institutions"][0]["health"]
            .clone()
    };
    let alice = app.link_and_sync(tenant.id, "demo-alice").await;
    store
        .record_sync_failure(
            alice,
            "INSTITUTION_UNAVAILABLE: the institution could not be reached; retrying later",
        )
        .await
        .unwrap();
    assert_eq!(health().await, "down");
    app.link_and_sync(tenant.id, "demo-bob").await;
    assert_eq!(health().await, "degraded");

    // The workers' breakers count too, before any sync there has failed: open in
    // every worker that reported lately is `down`, open in some is `degraded`.
    let harbor = || async {
        app.get_json("/v1/institutions?q=harbor", &bearer).await["institutions"][0]["health"]
            .clone()
    };
    assert_eq!(harbor().await, "ok");
    let report = |state: &str| finsync::store::BreakerReport {
        institution: "harbor".into(),
        state: state.into(),
        degraded: false,
        consecutive_failures: 5,
        opened_at: Some(chrono::Utc::now()),
    };
    let long_ago = chrono::Utc::now() - chrono::Duration::days(1);
    for worker in ["worker-1", "worker-2"] {
        store
            .report_breakers(worker, &[report("open")], long_ago)
            .await
            .unwrap();
    }
    assert_eq!(harbor().await, "down");
    store
        .report_breakers("worker-2", &[report("closed")], long_ago)
        .await
        .unwrap();
    assert_eq!(harbor().await, "degraded");

    // An admin limits the tenant: only those are listed, and links to others are
    // refused.
    let offered = format!("/admin/tenants/{}/institutions", tenant.id);
    // A link begun before the limit cannot be completed after it.
    let user = finsync::domain::UserId::parse("demo-erin").unwrap();
    let begun = app
        .app
        .linker
        .start(tenant.id, &user, "meridian", crate::support::by_test())
        .await
        .unwrap();
    let (status, body) = call_json(&app, Method::PUT, &offered, ADMIN_TOKEN, json!({})).await;
    assert_eq!(status, 400, "a body without the list lifts nothing: {body}");
    let (status, body) = call_json(
        &app,
        Method::PUT,
        &offered,
        ADMIN_TOKEN,
        json!({"institutions": ["harbor", "atlantis"]}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("atlantis")
    );
    let (status, body) = call_json(
        &app,
        Method::PUT,
        &offered,
        ADMIN_TOKEN,
        json!({"institutions": ["harbor"]}),
    )
    .await;
    assert_eq!(
        (status.as_u16(), &body),
        (200, &json!({"institutions": ["harbor"]}))
    );
    let consent = finsync::http::client()
        .get(begun.authorize_url)
        .send()
        .await
        .unwrap();
    let callback = consent.headers()["location"].to_str().unwrap().to_owned();
    let refused = finsync::http::client().get(&callback).send().await.unwrap();
    assert_eq!(refused.status(), 403, "{}", refused.text().await.unwrap());
    assert_ne!(
        store.connection(begun.connection_id).await.unwrap().status,
        ConnectionStatus::Active
    );
    let only = app.get_json("/v1/institutions", &bearer).await;
    assert_eq!(only["institutions"].as_array().unwrap().len(), 1, "{only}");
    assert_eq!(only["institutions"][0]["id"], "harbor");
    let (status, body) = call_json(
        &app,
        Method::POST,
        "/admin/connections",
        ADMIN_TOKEN,
        json!({"tenant": "advisor", "user": "demo-carol", "institution": "meridian"}),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = call_json(
        &app,
        Method::PUT,
        &offered,
        ADMIN_TOKEN,
        json!({"institutions": null}),
    )
    .await;
    assert_eq!(
        (status.as_u16(), &body),
        (200, &json!({"institutions": null}))
    );
    let all = app.get_json("/v1/institutions?limit=200", &bearer).await;
    assert_eq!(all["institutions"].as_array().unwrap().len(), served.len());
}
