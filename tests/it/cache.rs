//! The read cache: Redis shared between processes, and reads that keep working
//! when Redis is down or hangs.

use std::time::Duration;

use finsync::cache::{Cache, CacheConfig, Hit};
use secrecy::ExposeSecret;
use tokio::net::TcpListener;

use crate::support::{
    Backend, RedisPrefix, TestApp, TestDb, eventually, redis_url, unique, wait_until,
};

fn config<'a>(url: Option<&'a str>, prefix: &'a str) -> CacheConfig<'a> {
    CacheConfig {
        l1_capacity: 100,
        l1_ttl: Duration::from_secs(60),
        redis_url: url,
        key_prefix: prefix,
        redis_timeout: Duration::from_millis(50),
        l2_ttl: Duration::from_secs(60),
        breaker_cooldown: Duration::from_secs(60),
        degraded_l1_ttl: Duration::from_secs(1),
    }
}

/// A loader standing in for the database, counting how often it is asked.
fn loader(
    calls: &std::sync::Arc<std::sync::atomic::AtomicUsize>,
    value: &'static [u8],
) -> impl std::future::Future<Output = Result<Vec<u8>, std::convert::Infallible>> {
    let calls = calls.clone();
    async move {
        calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(value.to_vec())
    }
}

async fn read(
    cache: &Cache,
    calls: &std::sync::Arc<std::sync::atomic::AtomicUsize>,
) -> (Vec<u8>, Hit) {
    let (value, hit) = tokio::time::timeout(
        Duration::from_secs(5),
        cache.get_or_load("k", || loader(calls, b"from-db")),
    )
    .await
    .expect("no stall")
    .unwrap();
    (value.to_vec(), hit)
}

/// Waits for a condition on the caches' own state.
async fn observed(what: &str, mut condition: impl FnMut() -> bool) {
    wait_until(what, Duration::from_secs(5), || {
        std::future::ready(condition())
    })
    .await;
}

#[tokio::test]
async fn a_write_in_one_process_replaces_what_every_other_process_serves() {
    let prefix = RedisPrefix(unique("finsync_test"));
    let url = redis_url();
    let writer = Cache::new(config(Some(&url), &prefix.0)).unwrap();
    let reader = Cache::new(config(Some(&url), &prefix.0)).unwrap();
    assert!(reader.degraded(), "not yet subscribed to invalidations");
    let listener = reader.listen_for_invalidations().unwrap();
    observed("subscription", || !reader.degraded()).await;
    let calls = std::sync::Arc::default();

    // Every write is announced, this one too: wait for its message, or it could
    // arrive during the next read and (rightly) keep that read out of L1.
    let received = |n: u64| {
        let reader = &reader;
        move || {
            reader
                .stats()
                .invalidations_received
                .load(std::sync::atomic::Ordering::Relaxed)
                >= n
        }
    };
    writer.put("k", b"v1".to_vec()).await;
    observed("the first write's message", received(1)).await;
    assert_eq!(read(&reader, &calls).await, (b"v1".to_vec(), Hit::L2));
    assert_eq!(
        read(&reader, &calls).await,
        (b"v1".to_vec(), Hit::L1),
        "an L2 hit fills L1"
    );

    writer.put("k", b"v2".to_vec()).await;
    observed("the invalidation message", received(2)).await;
    assert_eq!(
        read(&reader, &calls).await,
        (b"v2".to_vec(), Hit::L2),
        "L1 dropped v1"
    );

    writer.invalidate("k").await;
    observed("the second invalidation", received(3)).await;
    assert_eq!(
        read(&reader, &calls).await,
        (b"from-db".to_vec(), Hit::Miss)
    );
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
    listener.abort();
}

#[tokio::test]
async fn concurrent_misses_of_one_key_load_once() {
    let cache = Cache::new(config(None, "p")).unwrap();
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let asked = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let reads = (0..20).map(|_| {
        let (calls, asked) = (calls.clone(), asked.clone());
        let cache = cache.clone();
        async move {
            asked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let all = asked.clone();
            cache
                .get_or_load("k", || async move {
                    calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    // The load ends only once every reader has asked, so every other
                    // reader finds it in flight.
                    wait_until("every reader to ask", Duration::from_secs(5), || {
                        std::future::ready(all.load(std::sync::atomic::Ordering::SeqCst) == 20)
                    })
                    .await;
                    Ok::<_, std::convert::Infallible>(b"v".to_vec())
                })
                .await
                .unwrap()
        }
    });
    let results = futures::future::join_all(reads).await;
    assert!(results.iter().all(|(v, _)| v.as_slice() == b"v"));
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(
        results.iter().filter(|(_, hit)| *hit == Hit::Miss).count(),
        1
    );
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
async fn a_hung_or_missing_redis_sends_reads_to_the_database_and_is_then_skipped() {
    for url in [black_hole().await, "redis://127.0.0.1:1".to_owned()] {
        let cache = Cache::new(config(Some(&url), "p")).unwrap();
        let calls = std::sync::Arc::default();
        // redis-rs blocks the *second* call to a dead server for about 9 s unless
        // every call has its own timeout: the reads below would stall.
        assert_eq!(read(&cache, &calls).await, (b"from-db".to_vec(), Hit::Miss));
        assert_eq!(read(&cache, &calls).await, (b"from-db".to_vec(), Hit::L1));
        tokio::time::timeout(Duration::from_secs(20), cache.put("k", b"new".to_vec()))
            .await
            .expect("no hang");
        assert_eq!(read(&cache, &calls).await, (b"new".to_vec(), Hit::L1));
        // Without invalidations a value is kept only briefly (1 s here): reads hit L1
        // until it expires, and the first read after comes from the database.
        let after = eventually(
            "the L1 value to expire",
            Duration::from_secs(10),
            || async {
                let (value, hit) = read(&cache, &calls).await;
                (hit != Hit::L1).then_some((value, hit))
            },
        )
        .await;
        assert_eq!(after, (b"from-db".to_vec(), Hit::Miss));
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2);
        let stats = cache.stats();
        // The first read's GET, then the write's SET and DEL: writes try Redis
        // even while the breaker is open, so an old value cannot outlive them.
        assert_eq!(
            stats.l2_errors.load(std::sync::atomic::Ordering::Relaxed),
            3,
            "{url}"
        );
        assert!(
            stats.l2_skipped.load(std::sync::atomic::Ordering::Relaxed) >= 3,
            "the breaker skips Redis after a failure: {url}"
        );
        assert!(cache.degraded());
    }
}

#[tokio::test]
async fn portfolios_are_served_from_the_database_while_redis_hangs() {
    let hung = black_hole().await;
    let app = TestApp::builder()
        .sqlite()
        .with(|settings| {
            settings.redis.url = secrecy::SecretString::from(hung);
            settings.redis.key_prefix = "unused".into();
            settings.cache.l1_ttl_secs = 1;
        })
        .tenant("advisor")
        .build()
        .await;
    let (tenant, key) = (app.tenant(), &app.tenant().key);
    app.link_and_sync(tenant.id, "demo-alice").await;
    // Read until L1 has expired (1 s) and a read goes past it, to the hung Redis
    // and then the database: the cache counts that read as a miss.
    let stats = app.app.ctx.cache.stats();
    let misses = || stats.misses.load(std::sync::atomic::Ordering::Relaxed);
    let before = misses();
    let body = eventually("a read past L1", Duration::from_secs(60), || async {
        let response = finsync::http::client()
            .get(format!("{}/v1/users/demo-alice/portfolio", app.address))
            .bearer_auth(key.0.expose_secret())
            .timeout(Duration::from_secs(20))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let body: serde_json::Value = response.json().await.unwrap();
        (misses() > before).then_some(body)
    })
    .await;
    assert_eq!(body["freshness"]["stale"], false, "{body}");
    assert_eq!(body["freshness"]["reason"], "CACHE_DEGRADED", "{body}");
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

/// A sync that finds nothing new moves only the cached view's freshness; a view
/// cached before a write it never saw (its writer stopped between committing the
/// records and refreshing the view) is rebuilt instead, so old records are never
/// passed off as fresh. Two processes share Redis, as two workers would.
#[tokio::test]
async fn a_cached_view_is_patched_only_while_it_holds_the_records_as_they_are() {
    use finsync::domain::{
        Account, AccountType, BalanceMeaning, Balances, Money, Snapshot, TenantId, UserId,
    };
    use finsync::store::{Removals, Store, SyncSuccess, TokenColumns};
    use secrecy::SecretString;

    let db = TestDb::new(Backend::Postgres).await;
    let store = Store::connect(&SecretString::from(db.url.clone()), 4)
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let prefix = RedisPrefix(unique("finsync_test"));
    let url = redis_url();
    let first = Cache::new(config(Some(&url), &prefix.0)).unwrap();
    let second = Cache::new(config(Some(&url), &prefix.0)).unwrap();
    let (tenant, _) = store.create_tenant("t").await.unwrap();
    let user = UserId::parse("u").unwrap();
    let connection = store
        .upsert_connection(tenant.id, &user, "meridian")
        .await
        .unwrap()
        .id;
    store
        .save_grant(
            connection,
            TokenColumns::default(),
            None,
            None,
            crate::support::by_test(),
        )
        .await
        .unwrap();
    let usd = "USD".parse().unwrap();
    let snapshot = |balance: &str| Snapshot {
        accounts: vec![Account {
            external_id: "acc-1".into(),
            account_type: AccountType::Depository,
            subtype: Some("checking".into()),
            name: "Checking".into(),
            official_name: None,
            mask: None,
            currency: usd,
            balances: Balances {
                current: Money::new(balance.parse().unwrap(), usd),
                available: None,
                cash: None,
                meaning: BalanceMeaning::Total,
                as_of: chrono::DateTime::from_timestamp(1_764_000_000, 0).unwrap(),
            },
        }],
        ..Snapshot::default()
    };
    let synced = |n: i64| {
        let at = chrono::DateTime::from_timestamp(1_764_900_000 + n * 3600, 0).unwrap();
        let store = store.clone();
        async move {
            store
                .lease_for_sync(connection, "test", at + chrono::Duration::hours(1))
                .await
                .unwrap()
                .expect("the connection is active and free");
            let success = SyncSuccess {
                at,
                next_sync_at: at + chrono::Duration::hours(1),
                cursor: None,
                deep_sync_due_at: None,
                lease_owner: "test",
                unread: &[],
                read: &[],
                deferred: &[],
                previous: None,
            };
            assert!(
                store
                    .record_sync_success(connection, success)
                    .await
                    .unwrap()
            );
            at
        }
    };
    // What a reader process with nothing cached of its own is served.
    let view = |tenant: TenantId| {
        let (store, user) = (store.clone(), user.clone());
        let cache = Cache::new(config(Some(&url), &prefix.0)).unwrap();
        async move {
            let cached = finsync::portfolio::read(&store, &cache, tenant, &user, 50)
                .await
                .unwrap()
                .unwrap();
            // As cached, without the notice this reader adds for itself (it is
            // not subscribed to invalidations).
            let cached = finsync::portfolio::stored::decode(&cached.gzip).unwrap();
            let built = finsync::portfolio::build(&store, tenant, &user, 50)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(cached, built, "the cached view is the view of the store");
            cached
        }
    };

    store
        .apply_snapshot(connection, &snapshot("100.00"), Removals::all())
        .await
        .unwrap();
    let at = synced(1).await;
    finsync::portfolio::refresh(&store, &first, tenant.id, &user, 50)
        .await
        .unwrap();
    let before = view(tenant.id).await;
    assert_eq!(before.freshness.as_of, Some(at));

    // Nothing new; another process brings the view up to date.
    let at = synced(2).await;
    finsync::portfolio::refresh(&store, &second, tenant.id, &user, 50)
        .await
        .unwrap();
    let after = view(tenant.id).await;
    assert_eq!(after.freshness.as_of, Some(at));
    assert_eq!(
        after.connections[0].records_version,
        before.connections[0].records_version
    );
    // The same accounts, each now as fresh as its connection.
    let mut expected = before.accounts.clone();
    for account in &mut expected {
        account.sync.refreshed_at = Some(at);
    }
    assert_eq!(after.accounts, expected);

    // New records committed by a writer that stopped before refreshing the view;
    // then a sync that finds nothing new.
    store
        .apply_snapshot(connection, &snapshot("250.00"), Removals::all())
        .await
        .unwrap();
    let at = synced(3).await;
    finsync::portfolio::refresh(&store, &second, tenant.id, &user, 50)
        .await
        .unwrap();
    let rebuilt = view(tenant.id).await;
    assert_eq!(rebuilt.freshness.as_of, Some(at));
    assert_eq!(
        rebuilt.accounts[0].balances.current.amount.to_string(),
        "250.00"
    );
    assert!(rebuilt.connections[0].records_version > after.connections[0].records_version);
}
