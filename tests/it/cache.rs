//! The read cache: Redis shared between processes, and reads that keep working
//! when Redis is down or hangs.

use std::time::Duration;

use finsync::cache::{Cache, CacheConfig, Hit};
use finsync::sandbox::SandboxConfig;
use secrecy::ExposeSecret;
use tokio::net::TcpListener;

use crate::support::{
    Backend, RedisPrefix, TestApp, TestDb, redis_url, settings, spawn_sandbox, unique,
};

fn config<'a>(url: Option<&'a str>, prefix: &'a str) -> CacheConfig<'a> {
    CacheConfig {
        l1_capacity: 100,
        l1_ttl: Duration::from_secs(60),
        redis_url: url,
        key_prefix: prefix,
        redis_timeout: Duration::from_millis(50),
        l2_ttl: Duration::from_secs(60),
    }
}

#[tokio::test]
async fn a_value_written_by_one_process_is_read_from_redis_by_another() {
    let prefix = RedisPrefix(unique("finsync_test"));
    let url = redis_url();
    let writer = Cache::new(config(Some(&url), &prefix.0)).unwrap();
    let reader = Cache::new(config(Some(&url), &prefix.0)).unwrap();
    writer.put("k", b"value".to_vec()).await;
    let (value, hit) = reader.get("k").await;
    assert_eq!(
        (value.as_deref().map(Vec::as_slice), hit),
        (Some(&b"value"[..]), Hit::L2)
    );
    let (_, hit) = reader.get("k").await;
    assert_eq!(hit, Hit::L1, "an L2 hit fills L1");
    writer.invalidate("k").await;
    let other = Cache::new(config(Some(&url), &prefix.0)).unwrap();
    assert_eq!(other.get("k").await.1, Hit::Miss);
}

/// A server that accepts connections and never answers: a hung Redis.
async fn black_hole() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    format!("redis://{address}")
}

#[tokio::test]
async fn a_hung_or_missing_redis_is_a_miss_not_an_error() {
    for url in [black_hole().await, "redis://127.0.0.1:1".to_owned()] {
        let cache = Cache::new(config(Some(&url), "p")).unwrap();
        // redis-rs blocks the *second* call to a dead server for about 9 s unless
        // every call has its own timeout: make several. The bound only turns such a
        // stall into a failure; it does not measure speed.
        for _ in 0..3 {
            let (value, hit) = tokio::time::timeout(Duration::from_secs(5), cache.get("k"))
                .await
                .expect("no stall");
            assert!(value.is_none());
            assert_eq!(hit, Hit::Miss);
        }
        tokio::time::timeout(Duration::from_secs(20), cache.put("k", vec![1]))
            .await
            .expect("no hang");
        assert!(
            cache
                .stats()
                .l2_errors
                .load(std::sync::atomic::Ordering::Relaxed)
                >= 1,
            "{url}"
        );
        // L1 still works without Redis.
        assert_eq!(cache.get("k").await.1, Hit::L1);
    }
}

#[tokio::test]
async fn portfolios_are_served_from_the_database_while_redis_hangs() {
    let sandbox = spawn_sandbox(SandboxConfig::default()).await;
    let db = TestDb::new(Backend::Sqlite).await;
    let mut settings = settings(&db, Some("unused"), &sandbox);
    settings.redis.url = secrecy::SecretString::from(black_hole().await);
    settings.cache.l1_ttl_secs = 1;
    let app = TestApp::spawn(settings, true).await;
    let (tenant, key) = app.app.ctx.store.create_tenant("advisor").await.unwrap();
    app.link_and_sync(tenant.id, "demo-alice").await;
    tokio::time::sleep(Duration::from_millis(1100)).await; // let L1 expire
    let response = finsync::http::client()
        .get(format!("{}/v1/users/demo-alice/portfolio", app.address))
        .bearer_auth(key.0.expose_secret())
        .timeout(Duration::from_secs(20))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["freshness"]["stale"], false);
    assert!(
        app.app
            .ctx
            .cache
            .stats()
            .l2_errors
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
    );
}
