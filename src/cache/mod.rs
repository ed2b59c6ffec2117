//! The read cache: moka in this process (L1) in front of Redis shared by the fleet
//! (L2), behind one interface. Values are opaque bytes (serialized views) so the
//! cache knows nothing of what it holds.
//!
//! Three rules keep it honest:
//! - Every Redis call has its own tight timeout, and a failure trips a breaker that
//!   skips Redis for a cool-down: while Redis is down or slow, reads go to the
//!   database without waiting on it.
//! - A writer publishes every change on a Redis channel and each process drops its
//!   L1 copy when the message arrives. While this process is not subscribed (Redis
//!   down, or no listener started), its L1 could miss such a message, so L1 is not
//!   trusted: reads use a second in-process cache whose entries live only briefly
//!   (`degraded_l1_ttl`), so what they serve is at most that old.
//! - Concurrent misses of one key are coalesced: one loader runs, the others wait
//!   for its value.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use moka::future::Cache as Moka;
use redis::AsyncCommands;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

/// Where a read was answered from, for metrics, tests and the `x-cache` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hit {
    L1,
    L2,
    Miss,
}

impl Hit {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::L1 => "l1",
            Self::L2 => "l2",
            Self::Miss => "miss",
        }
    }
}

#[derive(Debug, Default)]
pub struct CacheStats {
    pub l1_hits: AtomicU64,
    pub l2_hits: AtomicU64,
    pub misses: AtomicU64,
    pub l2_errors: AtomicU64,
    /// Redis calls not made because the breaker was open.
    pub l2_skipped: AtomicU64,
    pub invalidations_received: AtomicU64,
}

#[derive(Clone)]
pub struct Cache {
    l1: Moka<String, Arc<Vec<u8>>>,
    /// Used instead of `l1` while invalidations may be missed: its entries live so
    /// briefly that what it serves is at most that old, and concurrent misses still
    /// share one load, so a Redis outage does not turn every read into a query.
    brief: Moka<String, Arc<Vec<u8>>>,
    l2: Option<RedisL2>,
    /// Whether values are kept in this process at all (`l1_capacity` above zero);
    /// a process that serves no reads keeps none.
    local: bool,
    stats: Arc<CacheStats>,
    /// Moves on every change this process makes or hears of. A load that saw it
    /// move may have put an older value over a newer one, so its value is dropped.
    epoch: Arc<AtomicU64>,
}

#[derive(Clone)]
struct RedisL2 {
    client: redis::Client,
    connection: ConnectionManager,
    prefix: String,
    timeout: Duration,
    ttl: Duration,
    breaker: Arc<Breaker>,
    /// Whether this process is subscribed to invalidations right now.
    subscribed: Arc<AtomicBool>,
}

/// Opens after a failed Redis call and stays open for `cooldown`, during which
/// reads skip Redis. After it, calls try Redis again; the next failure re-opens it.
struct Breaker {
    epoch: Instant,
    open_until_ms: AtomicU64,
    cooldown: Duration,
}

impl Breaker {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn allows(&self) -> bool {
        self.now_ms() >= self.open_until_ms.load(Ordering::Relaxed)
    }

    fn trip(&self) {
        let until =
            self.now_ms() + u64::try_from(self.cooldown.as_millis()).unwrap_or(u64::MAX / 2);
        self.open_until_ms.store(until, Ordering::Relaxed);
    }
}

/// How often each listening process proves its subscription still delivers.
const HEARTBEAT: Duration = Duration::from_secs(1);

/// Aborts a background task when its owner ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[derive(Debug, thiserror::Error)]
#[error("redis: {0}")]
pub struct CacheError(#[from] redis::RedisError);

pub struct CacheConfig<'a> {
    pub l1_capacity: u64,
    pub l1_ttl: Duration,
    pub redis_url: Option<&'a str>,
    pub key_prefix: &'a str,
    pub redis_timeout: Duration,
    pub l2_ttl: Duration,
    /// How long Redis is left alone after a failed call.
    pub breaker_cooldown: Duration,
    /// How long a value lives in this process while invalidations may be missed.
    pub degraded_l1_ttl: Duration,
}

impl Cache {
    /// Builds the cache. Redis is connected lazily: an unreachable Redis at start is
    /// not an error, reads just go to the database until it is back.
    pub fn new(config: CacheConfig<'_>) -> Result<Self, CacheError> {
        let l1 = Moka::builder()
            .max_capacity(config.l1_capacity)
            .time_to_live(config.l1_ttl)
            .build();
        let l2 = match config.redis_url {
            None => None,
            Some(url) => {
                let client = redis::Client::open(url)?;
                let manager_config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(
                        config.redis_timeout.max(Duration::from_millis(200)),
                    ))
                    .set_response_timeout(Some(config.redis_timeout))
                    .set_number_of_retries(1);
                Some(RedisL2 {
                    connection: ConnectionManager::new_lazy_with_config(
                        client.clone(),
                        manager_config,
                    )?,
                    client,
                    prefix: config.key_prefix.to_owned(),
                    timeout: config.redis_timeout,
                    ttl: config.l2_ttl,
                    breaker: Arc::new(Breaker {
                        epoch: Instant::now(),
                        open_until_ms: AtomicU64::new(0),
                        cooldown: config.breaker_cooldown,
                    }),
                    subscribed: Arc::default(),
                })
            }
        };
        let brief = Moka::builder()
            .max_capacity(config.l1_capacity)
            .time_to_live(config.degraded_l1_ttl)
            .build();
        Ok(Self {
            l1,
            brief,
            l2,
            local: config.l1_capacity > 0,
            stats: Arc::default(),
            epoch: Arc::default(),
        })
    }

    pub fn stats(&self) -> &CacheStats {
        &self.stats
    }

    /// Whether answers may be slower or missing other processes' changes: Redis is
    /// configured but failing, or this process is not receiving invalidations.
    pub fn degraded(&self) -> bool {
        self.l2
            .as_ref()
            .is_some_and(|l2| !l2.breaker.allows() || !l2.subscribed.load(Ordering::Relaxed))
    }

    fn l1_trusted(&self) -> bool {
        self.l2
            .as_ref()
            .is_none_or(|l2| l2.subscribed.load(Ordering::Relaxed))
    }

    /// The value under `key`: from L1, else L2, else `load` (the database), whose
    /// value is then cached unless a writer cached a newer one meanwhile. Concurrent
    /// misses of one key share one `load`. A `load` error is returned, not cached.
    ///
    /// `load` makes the loading future only on a miss, and the miss path runs
    /// boxed: a hit, nearly every read, then carries about a kilobyte of future
    /// state up the handler's awaits, not the database query's tens of kilobytes.
    pub async fn get_or_load<E, F, L>(
        &self,
        key: &str,
        load: L,
    ) -> Result<(Arc<Vec<u8>>, Hit), Arc<E>>
    where
        E: Send + Sync + 'static,
        F: Future<Output = Result<Vec<u8>, E>>,
        L: FnOnce() -> F,
    {
        let l1 = if self.l1_trusted() {
            &self.l1
        } else {
            &self.brief
        };
        if let Some(value) = l1.get(key).await {
            self.stats.l1_hits.fetch_add(1, Ordering::Relaxed);
            return Ok((value, Hit::L1));
        }
        Box::pin(self.load_through(l1, key, load)).await
    }

    /// [`Self::get_or_load`] after an L1 miss: L2, else `load`, coalesced with
    /// every concurrent miss of `key`.
    async fn load_through<E, F, L>(
        &self,
        l1: &Moka<String, Arc<Vec<u8>>>,
        key: &str,
        load: L,
    ) -> Result<(Arc<Vec<u8>>, Hit), Arc<E>>
    where
        E: Send + Sync + 'static,
        F: Future<Output = Result<Vec<u8>, E>>,
        L: FnOnce() -> F,
    {
        let through = async {
            if let Some(value) = self.l2_get(key).await {
                self.stats.l2_hits.fetch_add(1, Ordering::Relaxed);
                return Ok((value, Hit::L2));
            }
            self.stats.misses.fetch_add(1, Ordering::Relaxed);
            let value = Arc::new(load().await?);
            self.l2_fill(key, &value).await;
            Ok((value, Hit::Miss))
        };
        // Which layer answered is only known to the caller whose loader ran; the
        // others waited on it and count as L1 hits.
        let answered = std::sync::Mutex::new(Hit::L1);
        let epoch = self.epoch.load(Ordering::SeqCst);
        let value = l1
            .try_get_with(key.to_owned(), async {
                let (value, hit) = through.await?;
                *answered.lock().unwrap_or_else(|e| e.into_inner()) = hit;
                Ok(value)
            })
            .await?;
        let hit = *answered.lock().unwrap_or_else(|e| e.into_inner());
        // moka stores what the loader returned even over a value put meanwhile.
        if hit != Hit::L1 && self.epoch.load(Ordering::SeqCst) != epoch {
            l1.invalidate(key).await;
        }
        if hit == Hit::L1 {
            self.stats.l1_hits.fetch_add(1, Ordering::Relaxed);
        }
        Ok((value, hit))
    }

    /// The value under `key` if this process or Redis holds one, without loading
    /// it or counting a read; `None` on a miss or while Redis is skipped. It may be
    /// older than the newest value: for a writer that checks what it gets.
    pub async fn peek(&self, key: &str) -> Option<Arc<Vec<u8>>> {
        if self.local
            && let Some(value) = self.l1.get(key).await
        {
            return Some(value);
        }
        self.l2_get(key).await
    }

    /// Stores a value a writer just built from committed data, in L1 and L2, and
    /// tells every process to drop its L1 copy. An L2 failure is logged, not
    /// returned: the database still has the data.
    pub async fn put(&self, key: &str, value: Vec<u8>) {
        let value = Arc::new(value);
        self.epoch.fetch_add(1, Ordering::SeqCst);
        if self.local {
            self.l1.insert(key.to_owned(), value.clone()).await;
            self.brief.insert(key.to_owned(), value.clone()).await;
        }
        // Writes try Redis even while the breaker is open: skipping one would leave
        // an older value there for every process to serve.
        let Some(l2) = &self.l2 else {
            return;
        };
        let mut connection = l2.connection.clone();
        let write =
            connection.set_ex::<_, _, ()>(l2.key(key), value.as_slice(), l2.ttl.as_secs().max(1));
        if self.l2_call(l2, "put", write).await.is_some() {
            self.publish(l2, key).await;
        } else {
            // An older value left in Redis would be served as current: drop it.
            self.l2_delete(l2, key).await;
        }
    }

    /// Keeps a small fact in Redis alone for `ttl`, for the moments the database
    /// cannot be asked (see [`Self::recall`]). No L1 copy, no invalidation message:
    /// it is a fallback, not a cached view. A failure is counted and dropped.
    pub async fn remember(&self, key: &str, value: &[u8], ttl: Duration) {
        let Some(l2) = &self.l2 else {
            return;
        };
        let mut connection = l2.connection.clone();
        let write = connection.set_ex::<_, _, ()>(l2.key(key), value, ttl.as_secs().max(1));
        self.l2_call(l2, "remember", write).await;
    }

    /// What [`Self::remember`] kept under `key`, if Redis answers in time.
    pub async fn recall(&self, key: &str) -> Option<Vec<u8>> {
        let l2 = self.l2_allowed()?;
        let mut connection = l2.connection.clone();
        let read = connection.get::<_, Option<Vec<u8>>>(l2.key(key));
        self.l2_call(l2, "recall", read).await.flatten()
    }

    /// Drops what [`Self::remember`] kept under `key`.
    pub async fn forget_remembered(&self, key: &str) {
        if let Some(l2) = &self.l2 {
            self.l2_delete(l2, key).await;
        }
    }

    /// Forgets a key everywhere, so the next read goes to the database.
    pub async fn invalidate(&self, key: &str) {
        self.invalidate_confirmed(key).await;
    }

    /// [`Self::invalidate`], saying whether it is gone everywhere: Redis deleted
    /// it and told the other processes (always, without Redis). Where it matters
    /// that nothing is left (an erasure), a `false` is worth a retry.
    pub async fn invalidate_confirmed(&self, key: &str) -> bool {
        self.forget_locally(key).await;
        match &self.l2 {
            Some(l2) => self.l2_delete(l2, key).await,
            None => true,
        }
    }

    /// Forgets a key in this process only (for a reader that knows its copy is old).
    pub async fn forget_locally(&self, key: &str) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.l1.invalidate(key).await;
        self.brief.invalidate(key).await;
    }

    /// Keeps this process subscribed to other processes' invalidations until the
    /// returned task is aborted. Without Redis there is nothing to listen to.
    pub fn listen_for_invalidations(&self) -> Option<tokio::task::JoinHandle<()>> {
        let l2 = self.l2.clone()?;
        let l1 = self.l1.clone();
        let stats = self.stats.clone();
        let epoch = self.epoch.clone();
        Some(tokio::spawn(async move {
            let channel = l2.channel();
            // A subscription can die silently (a half-open connection, a fail-over):
            // heartbeats published on the channel prove it still delivers.
            let beat = tokio::spawn({
                let (mut connection, channel) = (l2.connection.clone(), channel.clone());
                async move {
                    let mut ticks = tokio::time::interval(HEARTBEAT);
                    loop {
                        ticks.tick().await;
                        let _ = tokio::time::timeout(
                            HEARTBEAT,
                            connection.publish::<_, _, ()>(&channel, ""),
                        )
                        .await;
                    }
                }
            });
            let _stop_beating = AbortOnDrop(beat);
            let mut backoff = Duration::from_millis(100);
            loop {
                let subscription = tokio::time::timeout(Duration::from_secs(2), async {
                    let mut pubsub = l2.client.get_async_pubsub().await?;
                    pubsub.subscribe(&channel).await?;
                    Ok::<_, redis::RedisError>(pubsub)
                })
                .await;
                let pubsub = match subscription {
                    Ok(Ok(pubsub)) => pubsub,
                    failed => {
                        let error = match failed {
                            Ok(Err(e)) => e.to_string(),
                            _ => "timed out".to_owned(),
                        };
                        tracing::warn!(
                            error,
                            "Cannot subscribe to cache invalidations; L1 is bypassed."
                        );
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                        continue;
                    }
                };
                // Messages sent while unsubscribed are lost: start from an empty L1.
                epoch.fetch_add(1, Ordering::SeqCst);
                l1.invalidate_all();
                l2.subscribed.store(true, Ordering::Relaxed);
                backoff = Duration::from_millis(100);
                tracing::info!("Subscribed to cache invalidations.");
                let mut messages = pubsub.into_on_message();
                while let Ok(Some(message)) =
                    tokio::time::timeout(HEARTBEAT * 3, messages.next()).await
                {
                    match message.get_payload::<String>() {
                        Ok(key) if !key.is_empty() => {
                            stats.invalidations_received.fetch_add(1, Ordering::Relaxed);
                            epoch.fetch_add(1, Ordering::SeqCst);
                            l1.invalidate(&key).await;
                        }
                        // Heartbeats, and anything unreadable.
                        _ => {}
                    }
                }
                l2.subscribed.store(false, Ordering::Relaxed);
                tracing::warn!(
                    "Lost the cache invalidation channel; L1 is bypassed until it is back."
                );
            }
        }))
    }

    fn l2_allowed(&self) -> Option<&RedisL2> {
        let l2 = self.l2.as_ref()?;
        if l2.breaker.allows() {
            Some(l2)
        } else {
            self.stats.l2_skipped.fetch_add(1, Ordering::Relaxed);
            None
        }
    }

    async fn l2_get(&self, key: &str) -> Option<Arc<Vec<u8>>> {
        let l2 = self.l2_allowed()?;
        let mut connection = l2.connection.clone();
        let read = connection.get::<_, Option<Vec<u8>>>(l2.key(key));
        self.l2_call(l2, "get", read).await.flatten().map(Arc::new)
    }

    /// Stores a value read through from the database, unless one is already there:
    /// a writer with newer data (a sync that just committed) wins over a reader
    /// that built its value a moment before.
    async fn l2_fill(&self, key: &str, value: &[u8]) {
        let Some(l2) = self.l2_allowed() else {
            return;
        };
        let mut connection = l2.connection.clone();
        let mut set = redis::cmd("SET");
        set.arg(l2.key(key))
            .arg(value)
            .arg("NX")
            .arg("EX")
            .arg(l2.ttl.as_secs().max(1));
        let fill = set.query_async::<Option<String>>(&mut connection);
        self.l2_call(l2, "fill", fill).await;
    }

    /// Deletes `key` in Redis and tells the other processes; whether both happened.
    async fn l2_delete(&self, l2: &RedisL2, key: &str) -> bool {
        let mut connection = l2.connection.clone();
        let delete = connection.del::<_, ()>(l2.key(key));
        self.l2_call(l2, "invalidate", delete).await.is_some() && self.publish(l2, key).await
    }

    async fn publish(&self, l2: &RedisL2, key: &str) -> bool {
        let mut connection = l2.connection.clone();
        let publish = connection.publish::<_, _, ()>(l2.channel(), key);
        self.l2_call(l2, "publish", publish).await.is_some()
    }

    /// Runs one Redis call under its own timeout; a failure or a timeout trips the
    /// breaker, is logged and counted, and comes back as `None`.
    async fn l2_call<T>(
        &self,
        l2: &RedisL2,
        operation: &str,
        call: impl Future<Output = redis::RedisResult<T>>,
    ) -> Option<T> {
        match tokio::time::timeout(l2.timeout, call).await {
            Ok(Ok(value)) => Some(value),
            Ok(Err(e)) => {
                self.l2_failed(l2, operation, &e.to_string());
                None
            }
            Err(_) => {
                self.l2_failed(l2, operation, "timed out");
                None
            }
        }
    }

    fn l2_failed(&self, l2: &RedisL2, operation: &str, error: &str) {
        l2.breaker.trip();
        self.stats.l2_errors.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("finsync_cache_redis_errors_total", "operation" => operation.to_owned())
            .increment(1);
        tracing::warn!(
            operation,
            error,
            "Redis cache unavailable; using the database."
        );
    }
}

impl RedisL2 {
    fn key(&self, key: &str) -> String {
        format!("{}:{key}", self.prefix)
    }

    fn channel(&self) -> String {
        format!("{}:invalidate", self.prefix)
    }
}
