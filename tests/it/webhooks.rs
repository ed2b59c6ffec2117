//! Outgoing webhooks against a real receiver on 127.0.0.1:0: what a sync, a
//! connection needing reauth and its repair send, signatures, retries with
//! backoff, giving up, several delivery loops sharing the queue, and secrets that
//! stay sealed.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use finsync::app::config::Settings;
use finsync::domain::{
    ConnectionId, ConnectionStatus, DeliveryStatus, TenantId, UserId, WebhookDeliveryId,
    WebhookEndpointId,
};
use finsync::store::{DeliveryQuery, Store, WebhookDelivery};
use finsync::sync::{RefreshToken, SyncConnection, scheduler};
use finsync::tokens::rotate;
use finsync::vault::{Vault, webhook_secret_context};
use finsync::webhooks::outbound::{
    self, DELIVERY_HEADER, Deliverer, DeliveryPolicy, EVENT_HEADER, EventData, Registered,
    SIGNATURE_HEADER, VerifyError, WebhookError, WebhookEvent,
};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::support::{
    Backend, TestApp, TestDb, VAULT_KEY, captured_logs, dump_database, eventually,
};
use crate::tokens::{open_token, rotate_behind_our_back};

const TOLERANCE: Duration = Duration::from_secs(300);
const ALL_EVENTS: [WebhookEvent; 3] = [
    WebhookEvent::SyncCompleted,
    WebhookEvent::ConnectionReauthRequired,
    WebhookEvent::ConnectionRepaired,
];

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Received {
    headers: HeaderMap,
    body: String,
}

impl Received {
    fn header(&self, name: &str) -> &str {
        self.headers[name].to_str().unwrap()
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap()
    }
}

struct ReceiverState {
    /// Answers to give, in order; `then` once they are used up.
    answers: Mutex<VecDeque<u16>>,
    then: u16,
    received: Mutex<Vec<Received>>,
}

/// A tenant's webhook receiver: records every request and answers as scripted.
struct Receiver {
    url: String,
    state: Arc<ReceiverState>,
}

impl Receiver {
    async fn spawn(answers: &[u16], then: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hooks", listener.local_addr().unwrap());
        let state = Arc::new(ReceiverState {
            answers: Mutex::new(answers.iter().copied().collect()),
            then,
            received: Mutex::new(Vec::new()),
        });
        let router = Router::new()
            .route("/hooks", post(receive))
            .with_state(state.clone());
        tokio::spawn(async move { axum::serve(listener, router).await });
        Self { url, state }
    }

    fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }
}

async fn receive(
    State(state): State<Arc<ReceiverState>>,
    headers: HeaderMap,
    body: String,
) -> StatusCode {
    state
        .received
        .lock()
        .unwrap()
        .push(Received { headers, body });
    let answer = state
        .answers
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or(state.then);
    StatusCode::from_u16(answer).unwrap()
}

/// Retries a few milliseconds apart, so a test sees them all.
fn quick_webhooks(settings: &mut Settings, max_attempts: u32) {
    settings.webhooks.max_attempts = max_attempts;
    settings.webhooks.backoff_base_ms = 10;
    settings.webhooks.backoff_max_ms = 40;
    settings.webhooks.poll_interval_ms = 20;
    settings.webhooks.timeout_ms = 5_000;
}

/// A delivery loop running until dropped.
struct Delivering(watch::Sender<bool>);

impl Drop for Delivering {
    fn drop(&mut self) {
        let _ = self.0.send(true);
    }
}

fn start_delivering(deliverer: Deliverer) -> Delivering {
    let (stop, mut stopped) = watch::channel(false);
    tokio::spawn(outbound::run(deliverer, async move {
        let _ = stopped.wait_for(|s| *s).await;
    }));
    Delivering(stop)
}

async fn register(
    app: &TestApp,
    tenant: TenantId,
    url: &str,
    events: &[WebhookEvent],
) -> Registered {
    let deliverer = &app.app.webhooks;
    outbound::register_endpoint(
        &deliverer.store,
        &deliverer.vault,
        tenant,
        url,
        events,
        true,
    )
    .await
    .unwrap()
}

/// Waits until `endpoint` has `count` deliveries of `event` and none of them is
/// pending any more; returns them oldest first.
async fn settled(
    store: &Store,
    endpoint: WebhookEndpointId,
    event: WebhookEvent,
    count: usize,
) -> Vec<WebhookDelivery> {
    let what = format!("{count} settled {event} deliveries to {endpoint}");
    eventually(&what, Duration::from_secs(30), || async {
        let mut found: Vec<WebhookDelivery> = store
            .webhook_deliveries(DeliveryQuery {
                tenant: None,
                endpoint: Some(endpoint),
                before: None,
                limit: 100,
            })
            .await
            .unwrap()
            .into_iter()
            .filter(|d| d.event == event)
            .collect();
        if found.len() >= count && found.iter().all(|d| d.status != DeliveryStatus::Pending) {
            found.reverse();
            return Some(found);
        }
        None
    })
    .await
}

fn requests_for(receiver: &Receiver, delivery: WebhookDeliveryId) -> Vec<Received> {
    receiver
        .received()
        .into_iter()
        .filter(|r| r.header(DELIVERY_HEADER) == delivery.to_string())
        .collect()
}

/// Checks what every request of a delivery must carry, and returns its payload.
fn check_request(request: &Received, delivery: &WebhookDelivery, secret: &SecretString) -> Value {
    assert_eq!(
        outbound::verify(
            secret,
            request.header(SIGNATURE_HEADER),
            request.body.as_bytes(),
            chrono::Utc::now(),
            TOLERANCE,
        ),
        Ok(())
    );
    assert_eq!(request.header(EVENT_HEADER), delivery.event.as_str());
    assert_eq!(request.header("content-type"), "application/json");
    assert_eq!(
        request.body, delivery.payload,
        "the stored body is what was sent"
    );
    let payload = request.json();
    assert_eq!(payload["type"], delivery.event.as_str());
    assert!(
        payload["id"]
            .as_str()
            .unwrap()
            .parse::<uuid::Uuid>()
            .is_ok()
    );
    assert!(
        payload["created_at"]
            .as_str()
            .unwrap()
            .parse::<chrono::DateTime<chrono::Utc>>()
            .is_ok()
    );
    payload
}

#[tokio::test]
async fn a_sync_sends_a_signed_sync_completed_event_to_subscribed_endpoints_only() {
    let app = TestApp::builder()
        .sqlite()
        .with(|settings| {
            quick_webhooks(settings, 3);
        })
        .build()
        .await;
    let sandbox = app.sandbox();
    let _delivering = start_delivering(app.app.webhooks.clone());
    let store = app.app.ctx.store.clone();
    let (tenant, _) = store.create_tenant("advisor").await.unwrap();
    let (other, _) = store.create_tenant("another").await.unwrap();
    let receiver = Receiver::spawn(&[], 200).await;
    let endpoint = register(
        &app,
        tenant.id,
        &receiver.url,
        &[WebhookEvent::SyncCompleted],
    )
    .await;
    let reauth_only = register(
        &app,
        tenant.id,
        &receiver.url,
        &[WebhookEvent::ConnectionReauthRequired],
    )
    .await;
    let other_tenants = register(&app, other.id, &receiver.url, &ALL_EVENTS).await;

    let connection = app.link_and_sync(tenant.id, "demo-alice").await;
    let delivery = settled(&store, endpoint.endpoint.id, WebhookEvent::SyncCompleted, 1)
        .await
        .remove(0);
    assert_eq!(delivery.status, DeliveryStatus::Delivered);
    assert_eq!(delivery.attempts, 1);
    assert_eq!(delivery.last_status_code, Some(200));
    assert!(delivery.delivered_at.is_some() && delivery.last_error.is_none());
    assert_eq!(delivery.tenant_id, tenant.id);

    let requests = requests_for(&receiver, delivery.id);
    assert_eq!(requests.len(), 1);
    let payload = check_request(&requests[0], &delivery, &endpoint.secret);
    let data = &payload["data"];
    assert_eq!(data["user_id"], "demo-alice");
    assert_eq!(data["connection_id"], connection.to_string());
    assert_eq!(data["institution"], "meridian");
    assert_eq!(data["status"], "active");
    let run = store.runs(connection).await.unwrap().remove(0);
    assert!(run.added > 0, "the first sync adds records");
    for (count, stored) in [
        ("added", run.added),
        ("modified", run.modified),
        ("removed", run.removed),
        ("unchanged", run.unchanged),
        ("quarantined", run.quarantined),
    ] {
        assert_eq!(
            data["counts"][count],
            i64::from(stored),
            "{count}: {payload}"
        );
    }
    // Another secret does not verify it.
    assert_eq!(
        outbound::verify(
            &other_tenants.secret,
            requests[0].header(SIGNATURE_HEADER),
            requests[0].body.as_bytes(),
            chrono::Utc::now(),
            TOLERANCE,
        ),
        Err(VerifyError::Mismatch)
    );
    for token in sandbox.issued_tokens() {
        assert!(!requests[0].body.contains(&token), "a token in a payload");
    }

    // The event went, in the same transaction, to every subscriber: there were
    // no others.
    for unsubscribed in [&reauth_only, &other_tenants] {
        let log = store
            .webhook_deliveries(DeliveryQuery {
                tenant: None,
                endpoint: Some(unsubscribed.endpoint.id),
                before: None,
                limit: 10,
            })
            .await
            .unwrap();
        assert!(log.is_empty(), "{log:?}");
    }
    assert_eq!(receiver.received().len(), 1);
    let tenant_log = store
        .webhook_deliveries(DeliveryQuery {
            tenant: Some(tenant.id),
            endpoint: None,
            before: None,
            limit: 10,
        })
        .await
        .unwrap();
    assert_eq!(
        tenant_log.iter().map(|d| d.id).collect::<Vec<_>>(),
        [delivery.id]
    );
}

#[tokio::test]
async fn a_failing_receiver_is_retried_with_backoff_until_it_answers_or_attempts_run_out() {
    let app = TestApp::builder()
        .sqlite()
        .with(|settings| {
            quick_webhooks(settings, 4);
        })
        .build()
        .await;
    let _delivering = start_delivering(app.app.webhooks.clone());
    let store = app.app.ctx.store.clone();
    let (tenant, _) = store.create_tenant("advisor").await.unwrap();
    let flaky = Receiver::spawn(&[500, 500], 200).await;
    let broken = Receiver::spawn(&[], 500).await;
    let flaky_endpoint =
        register(&app, tenant.id, &flaky.url, &[WebhookEvent::SyncCompleted]).await;
    let broken_endpoint =
        register(&app, tenant.id, &broken.url, &[WebhookEvent::SyncCompleted]).await;

    app.link_and_sync(tenant.id, "demo-bob").await;

    let delivered = settled(
        &store,
        flaky_endpoint.endpoint.id,
        WebhookEvent::SyncCompleted,
        1,
    )
    .await
    .remove(0);
    assert_eq!(delivered.status, DeliveryStatus::Delivered);
    assert_eq!(delivered.attempts, 3);
    assert_eq!(delivered.last_status_code, Some(200));
    assert!(
        delivered.next_attempt_at > delivered.created_at,
        "the failed attempts moved the next one later"
    );
    let requests = requests_for(&flaky, delivered.id);
    assert_eq!(requests.len(), 3, "two refusals, then the answer");
    for request in &requests {
        check_request(request, &delivered, &flaky_endpoint.secret);
    }

    let failed = settled(
        &store,
        broken_endpoint.endpoint.id,
        WebhookEvent::SyncCompleted,
        1,
    )
    .await
    .remove(0);
    assert_eq!(failed.status, DeliveryStatus::Failed);
    assert_eq!(failed.attempts, 4);
    assert_eq!(failed.last_status_code, Some(500));
    assert_eq!(
        failed.last_error.as_deref(),
        Some("the receiver answered 500")
    );
    assert!(failed.delivered_at.is_none());
    assert_eq!(
        requests_for(&broken, failed.id).len(),
        4,
        "exactly max_attempts tries"
    );

    let metrics = app.app.metrics.render();
    for outcome in ["delivered", "retrying", "failed"] {
        assert!(
            metrics.contains(&format!(
                "finsync_webhook_deliveries_total{{outcome=\"{outcome}\"}}"
            )),
            "{metrics}"
        );
    }
}

/// A store, vault and delivery loop without the rest of finsync.
async fn bare(db: &TestDb, policy: DeliveryPolicy) -> Deliverer {
    let store = Store::connect(&SecretString::from(db.url.clone()), 5)
        .await
        .unwrap();
    store.migrate().await.unwrap();
    Deliverer {
        store,
        vault: Arc::new(Vault::single(VAULT_KEY).unwrap()),
        http: finsync::http::client(),
        policy,
    }
}

fn policy(backoff_base: Duration, batch_size: u64) -> DeliveryPolicy {
    DeliveryPolicy {
        max_attempts: 8,
        timeout: Duration::from_secs(5),
        poll_interval: Duration::from_millis(10),
        backoff_base,
        backoff_max: backoff_base * 8,
        batch_size,
        allow_private_targets: true,
    }
}

fn sample_data() -> EventData {
    EventData {
        user_id: UserId::parse("demo-carol").unwrap(),
        connection_id: ConnectionId::new(),
        institution: "meridian".into(),
        status: ConnectionStatus::ReauthRequired,
        reason: Some("REAUTH_REQUIRED".into()),
        counts: None,
        accounts_unread: Vec::new(),
        link_session_id: None,
    }
}

#[tokio::test]
async fn a_failed_attempt_waits_out_its_backoff_and_disabling_ends_what_is_pending() {
    let db = TestDb::new(Backend::Sqlite).await;
    let deliverer = bare(&db, policy(Duration::from_secs(3600), 10)).await;
    let store = deliverer.store.clone();
    let (tenant, _) = store.create_tenant("advisor").await.unwrap();
    let (other, _) = store.create_tenant("another").await.unwrap();
    let receiver = Receiver::spawn(&[], 503).await;
    let endpoint = outbound::register_endpoint(
        &store,
        &deliverer.vault,
        tenant.id,
        &receiver.url,
        &ALL_EVENTS,
        true,
    )
    .await
    .unwrap();
    let queued = outbound::emit(
        &store,
        tenant.id,
        WebhookEvent::ConnectionReauthRequired,
        &sample_data(),
    )
    .await
    .unwrap();
    assert_eq!(queued.len(), 1);

    assert_eq!(deliverer.deliver_due().await.unwrap(), 1);
    let after = store.webhook_delivery(queued[0]).await.unwrap();
    assert_eq!(after.status, DeliveryStatus::Pending);
    assert_eq!(after.attempts, 1);
    assert_eq!(after.last_status_code, Some(503));
    let wait = after.next_attempt_at - after.last_attempt_at.unwrap();
    assert!(
        wait >= chrono::Duration::hours(1) && wait < chrono::Duration::hours(2),
        "the base backoff plus at most as much jitter: {wait}"
    );
    assert_eq!(
        deliverer.deliver_due().await.unwrap(),
        0,
        "not due before its backoff"
    );
    assert_eq!(receiver.received().len(), 1);

    // Only its own tenant can disable it; that ends the pending delivery and
    // nothing new is queued for it.
    assert!(
        !store
            .disable_webhook_endpoint(other.id, endpoint.endpoint.id)
            .await
            .unwrap()
    );
    assert!(
        store
            .disable_webhook_endpoint(tenant.id, endpoint.endpoint.id)
            .await
            .unwrap()
    );
    assert!(
        !store
            .disable_webhook_endpoint(tenant.id, endpoint.endpoint.id)
            .await
            .unwrap(),
        "already disabled"
    );
    let ended = store.webhook_delivery(queued[0]).await.unwrap();
    assert_eq!(ended.status, DeliveryStatus::Failed);
    assert!(ended.last_error.unwrap().starts_with("ENDPOINT_DISABLED"));
    let again = outbound::emit(
        &store,
        tenant.id,
        WebhookEvent::ConnectionReauthRequired,
        &sample_data(),
    )
    .await
    .unwrap();
    assert!(again.is_empty());
    let listed = store.webhook_endpoints(tenant.id).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert!(listed[0].disabled_at.is_some());
}

#[tokio::test]
async fn several_delivery_loops_send_each_delivery_exactly_once() {
    let db = TestDb::new(Backend::Postgres).await;
    // Each loop has its own pool, as separate worker processes would.
    let mut loops = Vec::new();
    for _ in 0..4 {
        loops.push(bare(&db, policy(Duration::from_millis(10), 3)).await);
    }
    let store = loops[0].store.clone();
    let (tenant, _) = store.create_tenant("advisor").await.unwrap();
    let receiver = Receiver::spawn(&[], 204).await;
    let endpoint = outbound::register_endpoint(
        &store,
        &loops[0].vault,
        tenant.id,
        &receiver.url,
        &ALL_EVENTS,
        true,
    )
    .await
    .unwrap();
    let mut queued = HashSet::new();
    for _ in 0..40 {
        queued.extend(
            outbound::emit(
                &store,
                tenant.id,
                WebhookEvent::ConnectionRepaired,
                &sample_data(),
            )
            .await
            .unwrap(),
        );
    }
    assert_eq!(queued.len(), 40);

    let running: Vec<Delivering> = loops.into_iter().map(start_delivering).collect();
    let delivered = settled(
        &store,
        endpoint.endpoint.id,
        WebhookEvent::ConnectionRepaired,
        40,
    )
    .await;
    drop(running);
    assert!(
        delivered
            .iter()
            .all(|d| d.status == DeliveryStatus::Delivered && d.attempts == 1)
    );
    let received = receiver.received();
    let ids: HashSet<String> = received
        .iter()
        .map(|r| r.header(DELIVERY_HEADER).to_owned())
        .collect();
    assert_eq!(ids.len(), 40, "every delivery arrived");
    assert_eq!(received.len(), 40, "and none twice");
}

#[tokio::test]
async fn a_connection_needing_reauth_and_its_repair_are_announced() {
    use finsync::store::entities::connection as row;
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, sea_query::Expr};
    let app = TestApp::builder()
        .expect_failed_jobs()
        .sqlite()
        .with(|settings| {
            quick_webhooks(settings, 3);
        })
        .build()
        .await;
    let sandbox = app.sandbox();
    let _db = app.db();
    let _delivering = start_delivering(app.app.webhooks.clone());
    let store = app.app.ctx.store.clone();
    let (tenant, _) = store.create_tenant("advisor").await.unwrap();
    let receiver = Receiver::spawn(&[], 200).await;
    let endpoint = register(&app, tenant.id, &receiver.url, &ALL_EVENTS).await;
    let id = endpoint.endpoint.id;
    let connection = app.link_and_sync(tenant.id, "demo-bob").await;
    settled(&store, id, WebhookEvent::SyncCompleted, 1).await;

    // The stored access token has expired and its refresh token was rotated
    // elsewhere: the next sync's refresh is refused.
    row::Entity::update_many()
        .col_expr(
            row::Column::AccessTokenExpiresAt,
            Expr::value(chrono::Utc::now() - chrono::Duration::minutes(1)),
        )
        .filter(row::Column::Id.eq(connection.to_string()))
        .exec(store.db())
        .await
        .unwrap();
    rotate_behind_our_back(
        sandbox,
        &open_token(&app, connection, "refresh_token").await,
    )
    .await;
    let job = SyncConnection {
        connection_id: connection,
        idempotency_key: "test:refused".into(),
    };
    crate::support::request_sync(&app.app.ctx.queue, job).await;

    let reauth = settled(&store, id, WebhookEvent::ConnectionReauthRequired, 1)
        .await
        .remove(0);
    assert_eq!(reauth.status, DeliveryStatus::Delivered);
    assert_eq!(
        store.connection(connection).await.unwrap().status,
        ConnectionStatus::ReauthRequired
    );
    let requests = requests_for(&receiver, reauth.id);
    assert_eq!(requests.len(), 1);
    let payload = check_request(&requests[0], &reauth, &endpoint.secret);
    assert_eq!(payload["data"]["connection_id"], connection.to_string());
    assert_eq!(payload["data"]["user_id"], "demo-bob");
    assert_eq!(payload["data"]["status"], "reauth_required");
    assert_eq!(payload["data"]["reason"], "REAUTH_REQUIRED");
    assert!(payload["data"].get("counts").is_none(), "{payload}");

    // Linking again repairs the connection, and says so.
    app.link_and_sync(tenant.id, "demo-bob").await;
    let repaired = settled(&store, id, WebhookEvent::ConnectionRepaired, 1)
        .await
        .remove(0);
    let requests = requests_for(&receiver, repaired.id);
    assert_eq!(requests.len(), 1);
    let payload = check_request(&requests[0], &repaired, &endpoint.secret);
    assert_eq!(payload["data"]["connection_id"], connection.to_string());
    assert_eq!(payload["data"]["status"], "active");
    settled(&store, id, WebhookEvent::SyncCompleted, 2).await;

    for request in receiver.received() {
        for token in sandbox.issued_tokens() {
            assert!(!request.body.contains(&token), "a token in a payload");
        }
    }
}

#[tokio::test]
async fn a_refused_background_refresh_and_an_expired_consent_announce_reauth_required() {
    use finsync::store::entities::connection as row;
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, sea_query::Expr};
    let app = TestApp::builder()
        .sqlite()
        .with(|settings| {
            quick_webhooks(settings, 3);
        })
        .build()
        .await;
    let sandbox = app.sandbox();
    let _db = app.db();
    let _delivering = start_delivering(app.app.webhooks.clone());
    let store = app.app.ctx.store.clone();
    let (tenant, _) = store.create_tenant("advisor").await.unwrap();
    let receiver = Receiver::spawn(&[], 200).await;
    let endpoint = register(
        &app,
        tenant.id,
        &receiver.url,
        &[WebhookEvent::ConnectionReauthRequired],
    )
    .await;
    let refused = app.link_and_sync(tenant.id, "demo-alice").await;
    let expired = app.link_and_sync(tenant.id, "demo-carol").await;

    // The background refresh finds its refresh token rotated away.
    rotate_behind_our_back(sandbox, &open_token(&app, refused, "refresh_token").await).await;
    let record = store.connection(refused).await.unwrap();
    finsync::sync::refresh::run(
        app.app.ctx.clone(),
        RefreshToken {
            connection_id: refused,
            idempotency_key: "test:refresh".into(),
            expires_at: record.tokens.access_token_expires_at,
        },
    )
    .await
    .unwrap();
    // The other's consent ends; the scheduler notices.
    row::Entity::update_many()
        .col_expr(
            row::Column::ConsentExpiresAt,
            Expr::value(chrono::Utc::now() - chrono::Duration::minutes(1)),
        )
        .filter(row::Column::Id.eq(expired.to_string()))
        .exec(store.db())
        .await
        .unwrap();
    scheduler::tick(&app.app.ctx).await.unwrap();

    let deliveries = settled(
        &store,
        endpoint.endpoint.id,
        WebhookEvent::ConnectionReauthRequired,
        2,
    )
    .await;
    assert_eq!(deliveries.len(), 2);
    let mut announced = HashSet::new();
    for delivery in &deliveries {
        assert_eq!(delivery.status, DeliveryStatus::Delivered);
        let requests = requests_for(&receiver, delivery.id);
        let payload = check_request(&requests[0], delivery, &endpoint.secret);
        assert_eq!(payload["data"]["status"], "reauth_required");
        assert_eq!(payload["data"]["reason"], "REAUTH_REQUIRED");
        announced.insert(
            payload["data"]["connection_id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    assert_eq!(
        announced,
        HashSet::from([refused.to_string(), expired.to_string()])
    );
    for connection in [refused, expired] {
        assert_eq!(
            store.connection(connection).await.unwrap().status,
            ConnectionStatus::ReauthRequired
        );
    }
}

#[tokio::test]
async fn signing_secrets_are_sealed_at_rest_and_never_logged() {
    let app = TestApp::builder()
        .postgres()
        .with(|settings| {
            quick_webhooks(settings, 3);
        })
        .build()
        .await;
    let _delivering = start_delivering(app.app.webhooks.clone());
    let store = app.app.ctx.store.clone();
    let (tenant, _) = store.create_tenant("advisor").await.unwrap();
    let receiver = Receiver::spawn(&[500], 200).await;
    let endpoint = register(&app, tenant.id, &receiver.url, &ALL_EVENTS).await;
    let secret = endpoint.secret.expose_secret().to_owned();
    app.link_and_sync(tenant.id, "demo-alice").await;
    let delivery = settled(&store, endpoint.endpoint.id, WebhookEvent::SyncCompleted, 1)
        .await
        .remove(0);
    assert_eq!(delivery.attempts, 2, "a failed attempt was logged too");

    let stored = store.webhook_endpoints(tenant.id).await.unwrap().remove(0);
    let opened = Vault::single(VAULT_KEY)
        .unwrap()
        .open(&webhook_secret_context(stored.id), &stored.sealed_secret)
        .unwrap();
    assert_eq!(opened.expose_secret(), secret, "the vault holds it");
    assert!(
        !format!("{stored:?}").contains(&secret),
        "nor does a record's Debug show it"
    );
    let dump = dump_database(&store).await;
    assert!(
        dump.contains(&stored.id.to_string()),
        "the dump holds the endpoint's row"
    );
    assert!(
        !dump.contains(&secret),
        "the secret is in the database in plain text"
    );
    let logs = captured_logs();
    assert!(
        logs.contains("Webhook delivered."),
        "the logs were captured"
    );
    assert!(logs.contains("Webhook attempt failed; retrying later."));
    assert!(!logs.contains(&secret), "the secret was logged");
}

#[tokio::test]
async fn rotating_the_vault_key_reseals_signing_secrets() {
    let db = TestDb::new(Backend::Sqlite).await;
    let deliverer = bare(&db, policy(Duration::from_millis(10), 10)).await;
    let store = deliverer.store.clone();
    let (tenant, _) = store.create_tenant("advisor").await.unwrap();
    let registered = outbound::register_endpoint(
        &store,
        &deliverer.vault,
        tenant.id,
        "https://advisor.example/hooks",
        &[WebhookEvent::SyncCompleted],
        true,
    )
    .await
    .unwrap();

    let new_key = Vault::generate_key();
    let mut ring = Vault::single(new_key.expose_secret()).unwrap();
    ring.add_key(VAULT_KEY).unwrap();
    let report = rotate::reseal_all(&store, &ring).await.unwrap();
    assert_eq!(report.webhook_secrets, 1);
    assert_eq!(
        rotate::reseal_all(&store, &ring)
            .await
            .unwrap()
            .webhook_secrets,
        0,
        "a second run has nothing to do"
    );
    let sealed = store.webhook_endpoints(tenant.id).await.unwrap().remove(0);
    let context = webhook_secret_context(sealed.id);
    let only_new = Vault::single(new_key.expose_secret()).unwrap();
    assert_eq!(
        only_new
            .open(&context, &sealed.sealed_secret)
            .unwrap()
            .expose_secret(),
        registered.secret.expose_secret()
    );
    assert!(
        Vault::single(VAULT_KEY)
            .unwrap()
            .open(&context, &sealed.sealed_secret)
            .is_err()
    );
}

#[tokio::test]
async fn registration_refuses_what_it_cannot_deliver_safely() {
    let db = TestDb::new(Backend::Sqlite).await;
    let deliverer = bare(&db, policy(Duration::from_millis(10), 10)).await;
    let store = deliverer.store.clone();
    let (tenant, _) = store.create_tenant("advisor").await.unwrap();
    let register = |url: &'static str, events: &'static [WebhookEvent]| {
        let (store, vault) = (store.clone(), deliverer.vault.clone());
        async move { outbound::register_endpoint(&store, &vault, tenant.id, url, events, true).await }
    };
    for url in [
        "not a url",
        "ftp://advisor.example/hooks",
        "https://user:pass@advisor.example/hooks",
    ] {
        assert!(
            matches!(
                register(url, &[WebhookEvent::SyncCompleted]).await,
                Err(WebhookError::InvalidUrl(_))
            ),
            "{url}"
        );
    }
    assert!(matches!(
        register("https://advisor.example/hooks", &[]).await,
        Err(WebhookError::NoEvents)
    ));
    assert!(store.webhook_endpoints(tenant.id).await.unwrap().is_empty());
}
