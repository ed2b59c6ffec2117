//! Consent history as records: a grant, its expiry, the user's renewal and the
//! tenant's disconnect each leave an event, in order, with who caused it; the
//! tenant and operators read it; another tenant sees none of it; and the
//! migration fills it in from what the connections held before.

use finsync::domain::UserId;
use finsync::store::entities::connection as row;
use finsync::store::{Actor, AdminName, AuditEntry, Role};
use migrations::{Migrator, MigratorTrait};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, sea_query::Expr};
use secrecy::ExposeSecret;
use serde_json::Value;

use crate::support::TestApp;

#[tokio::test]
async fn a_consent_s_life_is_kept_event_by_event() {
    let app = TestApp::builder()
        .sqlite()
        .workers(false)
        .tenant("advisor")
        .build()
        .await;
    let store = app.app.ctx.store.clone();
    let tenant = app.tenant();
    let user = UserId::parse("demo-alice").unwrap();
    let http = finsync::http::client();
    let link = || async {
        app.app
            .linker
            .link_test_user(&http, tenant.id, &user, "meridian")
            .await
            .unwrap()
    };
    let connection = link().await;

    // Its 90 days run out, the user links again, then the app disconnects.
    row::Entity::update_many()
        .col_expr(
            row::Column::ConsentExpiresAt,
            Expr::value(chrono::Utc::now() - chrono::Duration::minutes(1)),
        )
        .filter(row::Column::Id.eq(connection.to_string()))
        .exec(store.db())
        .await
        .unwrap();
    finsync::sync::scheduler::tick(&app.app.ctx).await.unwrap();
    assert_eq!(link().await, connection, "the same connection, repaired");
    let gone = http
        .delete(format!(
            "{}/v1/users/demo-alice/connections/{connection}",
            app.address
        ))
        .bearer_auth(tenant.bearer())
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 200);

    let history = app
        .get_json("/v1/users/demo-alice/consents", tenant.bearer())
        .await;
    let events: Vec<(&str, &str)> = history["consents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["kind"].as_str().unwrap(), e["acted_by"].as_str().unwrap()))
        .collect();
    assert_eq!(
        events,
        [
            ("granted", "user"),
            ("expired", "system"),
            ("renewed", "user"),
            ("revoked", "tenant"),
        ],
        "{history}"
    );
    let granted = &history["consents"][0];
    assert_eq!(granted["institution"], "meridian");
    assert_eq!(granted["connection_id"], connection.to_string());
    assert!(
        granted["scopes"].as_str().is_some_and(|s| !s.is_empty()),
        "{granted}"
    );
    assert!(
        granted["expires_at"].is_string(),
        "a 90-day consent: {granted}"
    );
    assert_eq!(history["consents"][1]["reason"], "CONSENT_EXPIRED");

    // Paged, it is the same history.
    let first = app
        .get_json("/v1/users/demo-alice/consents?limit=3", tenant.bearer())
        .await;
    let cursor = first["next_cursor"].as_str().unwrap();
    let rest = app
        .get_json(
            &format!("/v1/users/demo-alice/consents?limit=3&cursor={cursor}"),
            tenant.bearer(),
        )
        .await;
    assert_eq!(rest["consents"][0]["kind"], "revoked");
    assert!(rest["next_cursor"].is_null());

    // An operator reads it too; another tenant reads nothing of it.
    let (_, operator) = store
        .create_admin(
            &AdminName::parse("otto").unwrap(),
            Role::Operator,
            "cli",
            AuditEntry::new(Actor::cli(), "admin.create"),
        )
        .await
        .unwrap();
    let seen: Value = app
        .get_json(
            &format!("/admin/tenants/{}/users/demo-alice/consents", tenant.id),
            operator.0.expose_secret(),
        )
        .await;
    assert_eq!(seen["consents"], history["consents"]);
    let (_, other) = store.create_tenant("other").await.unwrap();
    let theirs = app
        .get_json("/v1/users/demo-alice/consents", other.0.expose_secret())
        .await;
    assert_eq!(theirs["error"]["code"], "NOT_FOUND", "{theirs}");

    // The migration that brought these records fills them in from the columns
    // of connections made before it: the grant and its revocation.
    let migrations = Migrator::migrations();
    let consents = migrations
        .iter()
        .position(|m| m.name().ends_with("consent_events"))
        .unwrap();
    let after = u32::try_from(migrations.len() - consents).unwrap();
    Migrator::down(store.db(), Some(after)).await.unwrap();
    Migrator::up(store.db(), None).await.unwrap();
    let backfilled = app
        .get_json("/v1/users/demo-alice/consents", tenant.bearer())
        .await;
    let events: Vec<(&str, &str)> = backfilled["consents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["kind"].as_str().unwrap(), e["acted_by"].as_str().unwrap()))
        .collect();
    assert_eq!(
        events,
        [("granted", "user"), ("revoked", "unknown")],
        "{backfilled}"
    );
}
