//! Erasure on request: after `DELETE /v1/users/{user_id}`, neither PostgreSQL nor
//! Redis holds anything of the user (their institution's ids, account names,
//! transaction descriptions, amounts, their user id), the institution saw the
//! grants revoked, another user's data is untouched, and the audit trail names
//! the user only by a pseudonym. An erasure cut off midway is finished by the
//! next run.

use std::collections::BTreeSet;
use std::time::Duration;

use finsync::domain::{ConnectionId, UserId};
use finsync::store::{Actor, AuditEntry, ErasureStatus, Store};
use sea_orm::{ConnectionTrait, Statement};
use serde_json::Value;

use crate::support::{TestApp, by_test, dump_database, eventually, redis_url};

/// Everything of one user's synced data a dump must not show once they are gone:
/// institutions' ids, names, descriptions and amounts, as stored.
async fn identifying(store: &Store, connections: &[ConnectionId]) -> BTreeSet<String> {
    let ids: Vec<String> = connections.iter().map(|c| format!("'{c}'")).collect();
    let within = ids.join(",");
    let mut found = BTreeSet::new();
    for query in [
        format!("SELECT external_id AS v FROM accounts WHERE connection_id IN ({within})"),
        format!("SELECT name AS v FROM accounts WHERE connection_id IN ({within})"),
        format!("SELECT external_id AS v FROM transactions WHERE connection_id IN ({within})"),
        format!("SELECT description AS v FROM transactions WHERE connection_id IN ({within})"),
        format!("SELECT amount::text AS v FROM transactions WHERE connection_id IN ({within})"),
        format!("SELECT external_id AS v FROM holdings WHERE connection_id IN ({within})"),
    ] {
        let rows = store
            .db()
            .query_all_raw(Statement::from_string(sea_orm::DbBackend::Postgres, query))
            .await
            .unwrap();
        for row in rows {
            let value: String = row.try_get("", "v").unwrap();
            found.insert(value);
        }
    }
    found
}

/// Every key under the prefix, with its value whatever its type.
fn dump_redis(prefix: &str) -> String {
    let client = redis::Client::open(redis_url()).unwrap();
    let mut connection = client.get_connection().unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:*"))
        .query(&mut connection)
        .unwrap();
    let mut dump = String::new();
    for key in keys {
        let kind: String = redis::cmd("TYPE").arg(&key).query(&mut connection).unwrap();
        let values: Vec<Vec<u8>> = match kind.as_str() {
            "string" => vec![redis::cmd("GET").arg(&key).query(&mut connection).unwrap()],
            "hash" => redis::cmd("HGETALL")
                .arg(&key)
                .query(&mut connection)
                .unwrap(),
            "list" => redis::cmd("LRANGE")
                .arg(&key)
                .arg(0)
                .arg(-1)
                .query(&mut connection)
                .unwrap(),
            "set" => redis::cmd("SMEMBERS")
                .arg(&key)
                .query(&mut connection)
                .unwrap(),
            "zset" => redis::cmd("ZRANGE")
                .arg(&key)
                .arg(0)
                .arg(-1)
                .query(&mut connection)
                .unwrap(),
            _ => Vec::new(),
        };
        dump.push_str(&key);
        dump.push('\n');
        for value in values {
            dump.push_str(&String::from_utf8_lossy(&value));
            dump.push('\n');
        }
    }
    dump
}

#[tokio::test]
async fn an_erased_user_leaves_nothing_but_a_pseudonym() {
    let app = TestApp::builder()
        .postgres()
        .redis()
        .tenant("advisor")
        .build()
        .await;
    let store = app.app.ctx.store.clone();
    let tenant = app.tenant();
    // The app listens for syncs: their payloads name the user.
    finsync::webhooks::outbound::register_endpoint(
        &store,
        &app.app.linker.vault,
        tenant.id,
        "http://127.0.0.1:9/hook",
        &[
            finsync::webhooks::outbound::WebhookEvent::SyncCompleted,
            finsync::webhooks::outbound::WebhookEvent::ConnectionLinked,
        ],
        true,
    )
    .await
    .unwrap();
    let alice = [
        app.link_and_sync_at(tenant.id, "demo-alice", "meridian")
            .await,
        app.link_and_sync_at(tenant.id, "demo-alice", "harbor")
            .await,
    ];
    let bob = app.link_and_sync(tenant.id, "demo-bob").await;
    // She and Bob are one household.
    let family = finsync::domain::HouseholdId::parse("family").unwrap();
    let members = ["demo-alice", "demo-bob"].map(|u| finsync::domain::UserId::parse(u).unwrap());
    store
        .put_household(tenant.id, &family, "Family", &members)
        .await
        .unwrap();
    let deliveries_of = |user: &'static str| {
        let store = store.clone();
        async move {
            use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
            finsync::store::entities::webhook_delivery::Entity::find()
                .filter(finsync::store::entities::webhook_delivery::Column::Payload.contains(user))
                .all(store.db())
                .await
                .unwrap()
                .len()
        }
    };
    let bobs_deliveries = deliveries_of("demo-bob").await;
    assert!(bobs_deliveries > 0 && deliveries_of("demo-alice").await > 0);
    let refresh = crate::tokens::open_token(&app, alice[0], "refresh_token").await;

    // Alice's views are cached (Redis and this process), and she has a note.
    let portfolio = app
        .get_json("/v1/users/demo-alice/portfolio", tenant.bearer())
        .await;
    let transaction = portfolio["transactions"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let http = finsync::http::client();
    let noted = http
        .patch(format!("{}/v1/transactions/{transaction}", app.address))
        .bearer_auth(tenant.bearer())
        .json(&serde_json::json!({ "note": "alice-private-note" }))
        .send()
        .await
        .unwrap();
    assert!(
        noted.status().is_success(),
        "{}",
        noted.text().await.unwrap()
    );
    app.get_json("/v1/users/demo-bob/portfolio", tenant.bearer())
        .await;

    // What identifies her, less what she shares with Bob (a security's name, say).
    let bobs = identifying(&store, &[bob]).await;
    let mine: BTreeSet<String> = identifying(&store, &alice)
        .await
        .difference(&bobs)
        // Short amounts turn up inside any timestamp ("…:59.17…"): only those
        // long enough to mean something are looked for.
        .filter(|v| {
            let numeric = v
                .chars()
                .all(|c| c.is_ascii_digit() || c == '.' || c == '-');
            v.len() >= if numeric { 7 } else { 4 }
        })
        .cloned()
        .collect();
    assert!(mine.len() > 20, "{mine:?}");
    let prefix = app.app.settings.redis.key_prefix.clone();
    assert!(
        dump_redis(&prefix).contains("demo-alice"),
        "her view is cached"
    );

    let erased = http
        .delete(format!("{}/v1/users/demo-alice", app.address))
        .bearer_auth(tenant.bearer())
        .send()
        .await
        .unwrap();
    assert_eq!(erased.status(), 202);
    let location = erased.headers()["location"].to_str().unwrap().to_owned();
    let erasure: Value = erased.json().await.unwrap();
    assert_eq!(
        location,
        format!("/v1/erasures/{}", erasure["id"].as_str().unwrap())
    );
    assert!(!erasure.to_string().contains("demo-alice"));

    let done: Value = eventually("the erasure to finish", Duration::from_secs(30), || {
        let (http, url, key) = (
            http.clone(),
            format!("{}{location}", app.address),
            tenant.bearer().to_owned(),
        );
        async move {
            let body: Value = http
                .get(url)
                .bearer_auth(key)
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            (body["status"] == "done").then_some(body)
        }
    })
    .await;
    assert_eq!(done["result"]["connections"], 2, "{done}");
    assert_eq!(
        done["result"]["revoked_at"],
        serde_json::json!(["meridian", "harbor"]),
        "{done}"
    );

    // The institution no longer honours her grant.
    let sandbox = app.sandbox();
    let refused = http
        .post(format!("{}/meridian/oauth/token", sandbox.base_url()))
        .basic_auth("finsync-sandbox", Some("meridian-sandbox-secret"))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);

    // Her household goes on without her.
    let household = store.household(tenant.id, &family).await.unwrap().unwrap();
    assert_eq!(household.members, [members[1].clone()]);

    // Nothing of hers anywhere.
    let database = dump_database(&store).await;
    let cache = dump_redis(&prefix);
    let mut forbidden: Vec<String> = mine.iter().cloned().collect();
    forbidden.extend(["demo-alice".to_owned(), "alice-private-note".to_owned()]);
    for (name, dump) in [("PostgreSQL", &database), ("Redis", &cache)] {
        for value in &forbidden {
            assert!(
                !dump.contains(value.as_str()),
                "{name} still holds `{value}`"
            );
        }
    }
    let gone = app
        .get_json("/v1/users/demo-alice/portfolio", tenant.bearer())
        .await;
    assert_eq!(gone["error"]["code"], "NOT_FOUND", "{gone}");

    // Bob is untouched, his webhooks included.
    assert_eq!(deliveries_of("demo-bob").await, bobs_deliveries);
    let bobs_now = identifying(&store, &[bob]).await;
    assert_eq!(bobs_now, bobs);
    let his = app
        .get_json("/v1/users/demo-bob/portfolio", tenant.bearer())
        .await;
    assert!(his["accounts"].as_array().is_some_and(|a| !a.is_empty()));

    // The trail names her by the pseudonym the erasure shows, and nothing else.
    let pseudonym = done["user_pseudonym"].as_str().unwrap();
    let trail = store
        .audit_entries(&Default::default(), None, 10_000)
        .await
        .unwrap();
    let actions: Vec<&str> = trail
        .iter()
        .filter(|e| e.target.as_deref().is_some_and(|t| t.contains(pseudonym)))
        .map(|e| e.action.as_str())
        .collect();
    assert_eq!(actions, ["user.erasure_requested", "user.erased"]);
    assert!(
        store
            .verify_audit(None, &crate::support::audit_seals)
            .await
            .unwrap()
            .broken
            .is_none()
    );

    // Asked again, there is nobody left to erase.
    let again = http
        .delete(format!("{}/v1/users/demo-alice", app.address))
        .bearer_auth(tenant.bearer())
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 404);

    // Another tenant cannot read this tenant's erasure.
    let (_, other) = store.create_tenant("other").await.unwrap();
    let hidden = http
        .get(format!("{}{location}", app.address))
        .bearer_auth(secrecy::ExposeSecret::expose_secret(&other.0))
        .send()
        .await
        .unwrap();
    assert_eq!(hidden.status(), 404);
}

/// A run that crashed after it took the erasure and disconnected one of two
/// connections leaves the erasure pending; the next run (the scheduler's) finishes,
/// on either database, the user's webhook payloads going with the rest and another
/// user's staying, though a LIKE would take one id for the other.
#[tokio::test]
async fn an_erasure_cut_off_midway_is_finished_by_the_next_run() {
    for backend in [
        crate::support::Backend::Sqlite,
        crate::support::Backend::Postgres,
    ] {
        cut_off_midway(backend).await;
    }
}

async fn cut_off_midway(backend: crate::support::Backend) {
    let app = TestApp::builder()
        .backend(backend)
        .tenant("advisor")
        .build()
        .await;
    let ctx = &app.app.ctx;
    let tenant = app.tenant();
    let user = UserId::parse("demo_alice").unwrap();
    finsync::webhooks::outbound::register_endpoint(
        &ctx.store,
        &app.app.linker.vault,
        tenant.id,
        "http://127.0.0.1:9/hook",
        &[finsync::webhooks::outbound::WebhookEvent::ConnectionLinked],
        true,
    )
    .await
    .unwrap();
    // Counted by the parsed payload: a LIKE would take `_` for any character.
    let payloads_naming = |user: &'static str| {
        let store = ctx.store.clone();
        async move {
            use finsync::store::entities::webhook_delivery as delivery;
            use sea_orm::EntityTrait;
            delivery::Entity::find()
                .all(store.db())
                .await
                .unwrap()
                .iter()
                .filter(|d| {
                    serde_json::from_str::<serde_json::Value>(&d.payload).unwrap()["data"]["user_id"]
                        == user
                })
                .count()
        }
    };
    let first = app
        .link_and_sync_at(tenant.id, "demo_alice", "meridian")
        .await;
    // Another user whose id differs from hers only where her `_` is a LIKE wildcard.
    app.link_and_sync_at(tenant.id, "demo-alice", "meridian")
        .await;
    app.link_and_sync_at(tenant.id, "demo_alice", "harbor")
        .await;

    let others = payloads_naming("demo-alice").await;
    assert!(others > 0 && payloads_naming("demo_alice").await > 0);
    let pseudonym = ctx.tokens.vault.pseudonym(user.as_str()).unwrap();
    let (erasure, new) = ctx
        .store
        .request_erasure(
            tenant.id,
            &user,
            &pseudonym,
            AuditEntry::new(Actor::cli(), "user.erasure_requested"),
        )
        .await
        .unwrap();
    assert!(new);
    // The crashed run: it claimed the erasure (its lease has run out since) and
    // disconnected one connection.
    let (_, claimed_user) = ctx
        .store
        .claim_erasure(
            erasure.id,
            "the crashed run",
            chrono::Utc::now() - chrono::Duration::seconds(1),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(claimed_user, user);
    ctx.tokens.disconnect(first, by_test()).await.unwrap();
    let midway = ctx.store.erasure(None, erasure.id).await.unwrap().unwrap();
    assert_eq!(
        midway.status,
        ErasureStatus::Pending,
        "never silently half-erased"
    );

    let finished = finsync::sync::erasure::resume(ctx).await.unwrap();
    assert_eq!(finished, 1);
    let done = ctx.store.erasure(None, erasure.id).await.unwrap().unwrap();
    assert_eq!(done.status, ErasureStatus::Done);
    assert_eq!(done.attempts, 2);
    let result = done.result.unwrap();
    assert_eq!(result.connections, 2);
    assert_eq!(result.revoked_at, ["harbor"]);
    assert_eq!(result.already_disconnected, 1, "the crashed run's");
    assert!(
        ctx.store
            .user_connections(tenant.id, &user)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(payloads_naming("demo_alice").await, 0, "{backend:?}");
    assert_eq!(
        payloads_naming("demo-alice").await,
        others,
        "{backend:?}: not hers"
    );
    // Done is done: nothing more to run.
    assert_eq!(finsync::sync::erasure::resume(ctx).await.unwrap(), 0);
}
