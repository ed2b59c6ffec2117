//! The read cache: moka in this process (L1) in front of Redis shared by the fleet
//! (L2), behind one interface. Values are opaque bytes (serialized views) so the
//! cache knows nothing of what it holds. Every Redis call has its own tight timeout
//! and any Redis failure is a miss, never an error: the caller falls back to the
//! database and keeps answering.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use moka::future::Cache as Moka;
use redis::AsyncCommands;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

/// Where a read was answered from, for metrics and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hit {
    L1,
    L2,
    Miss,
}

#[derive(Debug, Default)]
pub struct CacheStats {
    pub l1_hits: AtomicU64,
    pub l2_hits: AtomicU64,
    pub misses: AtomicU64,
    pub l2_errors: AtomicU64,
}

#[derive(Clone)]
pub struct Cache {
    l1: Moka<String, Arc<Vec<u8>>>,
    l2: Option<RedisL2>,
    stats: Arc<CacheStats>,
}

#[derive(Clone)]
struct RedisL2 {
    connection: ConnectionManager,
    prefix: String,
    timeout: Duration,
    ttl: Duration,
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
}

impl Cache {
    /// Builds the cache. Redis is connected lazily: an unreachable Redis at start is
    /// not an error, reads just miss L2 until it is back.
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
                    connection: ConnectionManager::new_lazy_with_config(client, manager_config)?,
                    prefix: config.key_prefix.to_owned(),
                    timeout: config.redis_timeout,
                    ttl: config.l2_ttl,
                })
            }
        };
        Ok(Self {
            l1,
            l2,
            stats: Arc::default(),
        })
    }

    pub fn stats(&self) -> &CacheStats {
        &self.stats
    }

    /// Looks in L1, then L2 (filling L1 on an L2 hit).
    pub async fn get(&self, key: &str) -> (Option<Arc<Vec<u8>>>, Hit) {
        if let Some(value) = self.l1.get(key).await {
            self.stats.l1_hits.fetch_add(1, Ordering::Relaxed);
            return (Some(value), Hit::L1);
        }
        if let Some(l2) = &self.l2 {
            let mut connection = l2.connection.clone();
            let full = l2.key(key);
            match tokio::time::timeout(l2.timeout, connection.get::<_, Option<Vec<u8>>>(&full))
                .await
            {
                Ok(Ok(Some(bytes))) => {
                    let value = Arc::new(bytes);
                    self.l1.insert(key.to_owned(), value.clone()).await;
                    self.stats.l2_hits.fetch_add(1, Ordering::Relaxed);
                    return (Some(value), Hit::L2);
                }
                Ok(Ok(None)) => {}
                Ok(Err(e)) => self.l2_failed("get", &e.to_string()),
                Err(_) => self.l2_failed("get", "timed out"),
            }
        }
        self.stats.misses.fetch_add(1, Ordering::Relaxed);
        (None, Hit::Miss)
    }

    /// Stores in L1 and L2. An L2 failure is logged, not returned: the database
    /// still has the data.
    pub async fn put(&self, key: &str, value: Vec<u8>) {
        let value = Arc::new(value);
        self.l1.insert(key.to_owned(), value.clone()).await;
        if let Some(l2) = &self.l2 {
            let mut connection = l2.connection.clone();
            let write = connection.set_ex::<_, _, ()>(
                l2.key(key),
                value.as_slice(),
                l2.ttl.as_secs().max(1),
            );
            let failure = match tokio::time::timeout(l2.timeout, write).await {
                Ok(Ok(())) => return,
                Ok(Err(e)) => e.to_string(),
                Err(_) => "timed out".to_owned(),
            };
            self.l2_failed("put", &failure);
            // An older value left in Redis would be served as current: drop it.
            let mut connection = l2.connection.clone();
            if !matches!(
                tokio::time::timeout(l2.timeout, connection.del::<_, ()>(l2.key(key))).await,
                Ok(Ok(()))
            ) {
                self.l2_failed("invalidate", "could not drop the outdated value");
            }
        }
    }

    /// Stores a value read through from the database, unless a value is already
    /// there: a writer with newer data (a sync that just committed) always wins over
    /// a reader that built its value a moment before.
    pub async fn fill(&self, key: &str, value: Vec<u8>) {
        let value = Arc::new(value);
        self.l1.entry(key.to_owned()).or_insert(value.clone()).await;
        if let Some(l2) = &self.l2 {
            let mut connection = l2.connection.clone();
            let mut set = redis::cmd("SET");
            set.arg(l2.key(key))
                .arg(value.as_slice())
                .arg("NX")
                .arg("EX")
                .arg(l2.ttl.as_secs().max(1));
            match tokio::time::timeout(
                l2.timeout,
                set.query_async::<Option<String>>(&mut connection),
            )
            .await
            {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => self.l2_failed("fill", &e.to_string()),
                Err(_) => self.l2_failed("fill", "timed out"),
            }
        }
    }

    /// Forgets a key everywhere, so the next read goes to the database. L1 in other
    /// processes expires by its short TTL.
    pub async fn invalidate(&self, key: &str) {
        self.l1.invalidate(key).await;
        if let Some(l2) = &self.l2 {
            let mut connection = l2.connection.clone();
            match tokio::time::timeout(l2.timeout, connection.del::<_, ()>(l2.key(key))).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => self.l2_failed("invalidate", &e.to_string()),
                Err(_) => self.l2_failed("invalidate", "timed out"),
            }
        }
    }

    fn l2_failed(&self, operation: &str, error: &str) {
        self.stats.l2_errors.fetch_add(1, Ordering::Relaxed);
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
}
