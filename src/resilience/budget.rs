//! Rate budgets: how many requests an institution may receive per second, minute and
//! day, and until when it asked for none at all.
//!
//! With Redis, one budget is shared by the whole fleet: fixed windows counted in
//! Redis (`<prefix>:budget:<institution>:<window>:<window start>`), taken atomically
//! by one script that also honours the institution's "blocked until" key
//! (`<prefix>:blocked:<institution>`). Windows follow the Redis server's clock, so
//! workers' clocks do not matter. Fixed windows allow up to twice a window's limit
//! across a boundary (the end of one and the start of the next); per window the
//! limit holds exactly.
//!
//! Without Redis, or while it does not answer within its timeout, each process
//! keeps the budget on its own with governor (GCRA) limiters. That local budget is
//! the connector's whole limit, not a share: a process cannot know how many others
//! are running, and dividing by a guess would starve a lone worker. During a Redis
//! outage the fleet may therefore send up to its process count times the limit; the
//! institution's 429s, which are honoured, are the backstop.

use std::num::NonZeroU32;
use std::sync::Mutex;
use std::sync::PoisonError;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota as GovernorQuota, RateLimiter};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::time::Instant;

/// An institution's limits, from its connector's `[limits]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Quota {
    pub per_second: Option<NonZeroU32>,
    pub per_minute: Option<NonZeroU32>,
    pub per_day: Option<NonZeroU32>,
    /// Requests in flight at once, per process.
    pub concurrency: u32,
    /// Latency at which the institution counts as struggling (adaptive mode); zero:
    /// latency is not judged.
    pub slow: Duration,
}

impl Quota {
    /// Each configured window: its name, its length and its limit.
    fn windows(&self) -> impl Iterator<Item = (&'static str, Duration, NonZeroU32)> {
        [
            ("second", Duration::from_secs(1), self.per_second),
            ("minute", Duration::from_secs(60), self.per_minute),
            ("day", Duration::from_secs(86_400), self.per_day),
        ]
        .into_iter()
        .filter_map(|(name, span, limit)| limit.map(|limit| (name, span, limit)))
    }
}

/// governor's clock over tokio's, so limiters follow a paused test clock too.
#[derive(Debug, Clone, Copy, Default)]
struct TokioClock;

impl Clock for TokioClock {
    type Instant = std::time::Instant;

    fn now(&self) -> Self::Instant {
        Instant::now().into_std()
    }
}

type Limiter = RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<std::time::Instant>>;

/// One institution's budget in this process: used alone without Redis, and as the
/// fallback while Redis is unreachable.
#[derive(Debug)]
pub struct LocalBudget {
    limiters: Vec<Limiter>,
    blocked_until: Mutex<Option<Instant>>,
}

impl LocalBudget {
    pub fn new(quota: &Quota) -> Self {
        let limiters = quota
            .windows()
            .filter_map(|(_, span, limit)| {
                // The whole window's limit may be used at once, as with Redis's windows.
                GovernorQuota::with_period(span / limit.get())
                    .map(|q| RateLimiter::direct_with_clock(q.allow_burst(limit), TokioClock))
            })
            .collect();
        Self {
            limiters,
            blocked_until: Mutex::new(None),
        }
    }

    /// How long until the institution accepts requests again, if it asked for a pause.
    pub fn blocked_for(&self) -> Duration {
        let until = *self
            .blocked_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        until.map_or(Duration::ZERO, |until| {
            until.saturating_duration_since(Instant::now())
        })
    }

    pub fn block_for(&self, wait: Duration) {
        let until = Instant::now() + wait;
        let mut blocked = self
            .blocked_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if blocked.is_none_or(|current| current < until) {
            *blocked = Some(until);
        }
    }

    /// Takes one permit from every window, or says how long to wait before asking
    /// again. A permit taken from a shorter window before a longer one refused is
    /// spent: the budget errs on the side of fewer requests.
    pub fn try_take(&self) -> Duration {
        let blocked = self.blocked_for();
        if !blocked.is_zero() {
            return blocked;
        }
        for limiter in &self.limiters {
            if let Err(not_until) = limiter.check() {
                return not_until.wait_time_from(TokioClock.now());
            }
        }
        Duration::ZERO
    }
}

/// Takes permits from every window and checks the blocked key, atomically. Returns
/// 0 when the permit was taken, else the milliseconds to wait. A window's count is
/// kept a minute past its end, so recent windows can be read back (by an operator,
/// by tests).
const TAKE: &str = r"
local blocked = redis.call('PTTL', KEYS[2])
if blocked > 0 then return blocked end
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local windows, wait = {}, 0
for i = 1, #ARGV, 3 do
  local span, limit = tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
  local start = now - (now % span)
  local key = KEYS[1] .. ':' .. ARGV[i] .. ':' .. start
  if tonumber(redis.call('GET', key) or '0') >= limit then
    wait = math.max(wait, start + span - now)
  end
  windows[#windows + 1] = {key, span}
end
if wait > 0 then return wait end
for _, window in ipairs(windows) do
  if redis.call('INCR', window[1]) == 1 then
    redis.call('PEXPIRE', window[1], window[2] + 60000)
  end
end
return 0
";

/// Sets the blocked key unless it already blocks for longer.
const BLOCK: &str = r"
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
end
return 0
";

/// How long Redis is left alone after a failed call, so that every request does not
/// wait out a timeout while it is down.
const REDIS_RETRY: Duration = Duration::from_secs(2);

/// The fleet's budgets in Redis.
#[derive(Clone)]
pub struct RedisBudget {
    connection: ConnectionManager,
    prefix: String,
    timeout: Duration,
    take: redis::Script,
    block: redis::Script,
    state: std::sync::Arc<RedisState>,
}

#[derive(Debug)]
struct RedisState {
    /// Whether the last call failed, so that an outage is logged once.
    down: AtomicBool,
    skip_until: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for RedisBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBudget")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisBudget {
    /// Connects lazily: an unreachable Redis at start only means local budgets.
    pub fn new(url: &str, prefix: &str, timeout: Duration) -> Result<Self, redis::RedisError> {
        let client = redis::Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout.max(Duration::from_millis(200))))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1);
        Ok(Self {
            connection: ConnectionManager::new_lazy_with_config(client, config)?,
            prefix: prefix.to_owned(),
            timeout,
            take: redis::Script::new(TAKE),
            block: redis::Script::new(BLOCK),
            state: std::sync::Arc::new(RedisState {
                down: AtomicBool::new(false),
                skip_until: Mutex::new(None),
            }),
        })
    }

    /// The key prefix of an institution's windows.
    pub fn budget_key(&self, institution: &str) -> String {
        format!("{}:budget:{institution}", self.prefix)
    }

    fn blocked_key(&self, institution: &str) -> String {
        format!("{}:blocked:{institution}", self.prefix)
    }

    /// Takes a fleet-wide permit: `Some(wait)` as [`LocalBudget::try_take`], or
    /// `None` when Redis cannot say and the local budget must decide.
    pub async fn try_take(&self, institution: &str, quota: &Quota) -> Option<Duration> {
        let mut invocation = self.take.key(self.budget_key(institution));
        invocation.key(self.blocked_key(institution));
        for (name, span, limit) in quota.windows() {
            invocation
                .arg(name)
                .arg(u64::try_from(span.as_millis()).unwrap_or(u64::MAX))
                .arg(limit.get());
        }
        let wait: i64 = self
            .call(|mut connection| async move { invocation.invoke_async(&mut connection).await })
            .await?;
        Some(Duration::from_millis(u64::try_from(wait).unwrap_or(0)))
    }

    /// Records fleet-wide that the institution wants no request for `wait`; `false`
    /// when Redis could not be told.
    pub async fn block_for(&self, institution: &str, wait: Duration) -> bool {
        let mut invocation = self.block.key(self.blocked_key(institution));
        invocation.arg(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1));
        self.call(
            |mut connection| async move { invocation.invoke_async::<i64>(&mut connection).await },
        )
        .await
        .is_some()
    }

    async fn call<T, F, Fut>(&self, call: F) -> Option<T>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let skip = *self
            .state
            .skip_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if skip.is_some_and(|until| Instant::now() < until) {
            return None;
        }
        let error = match tokio::time::timeout(self.timeout, call(self.connection.clone())).await {
            Ok(Ok(value)) => {
                if self.state.down.swap(false, Ordering::Relaxed) {
                    tracing::info!("Redis answers again; rate budgets are fleet-wide again.");
                }
                return Some(value);
            }
            Ok(Err(error)) => error.to_string(),
            Err(_) => format!("no answer within {} ms", self.timeout.as_millis()),
        };
        metrics::counter!("finsync_budget_redis_errors_total").increment(1);
        *self
            .state
            .skip_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(Instant::now() + REDIS_RETRY);
        if !self.state.down.swap(true, Ordering::Relaxed) {
            tracing::warn!(%error, "Redis is unreachable; each process keeps its own rate budgets until it is back.");
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quota(per_second: u32, per_minute: u32) -> Quota {
        Quota {
            per_second: NonZeroU32::new(per_second),
            per_minute: NonZeroU32::new(per_minute),
            per_day: None,
            concurrency: 1,
            slow: Duration::ZERO,
        }
    }

    /// Permits granted in a row, and the wait the first refusal asked for.
    fn take_all(budget: &LocalBudget) -> (usize, Duration) {
        let mut granted = 0;
        loop {
            let wait = budget.try_take();
            if !wait.is_zero() || granted == 1000 {
                return (granted, wait);
            }
            granted += 1;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn each_window_grants_its_limit_then_says_how_long_to_wait() {
        let budget = LocalBudget::new(&quota(3, 5));
        let (granted, wait) = take_all(&budget);
        assert_eq!(granted, 3);
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        // The minute allows two more, whatever the second would.
        let (granted, wait) = take_all(&budget);
        assert_eq!(granted, 2);
        assert!(wait > Duration::from_secs(1), "{wait:?}");
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(take_all(&budget).0, 3);
    }

    #[tokio::test(start_paused = true)]
    async fn without_limits_every_request_goes_through() {
        let budget = LocalBudget::new(&Quota::default());
        assert_eq!(take_all(&budget), (1000, Duration::ZERO));
    }

    #[tokio::test(start_paused = true)]
    async fn a_block_stops_every_request_until_it_ends_and_a_shorter_one_does_not_shorten_it() {
        let budget = LocalBudget::new(&quota(100, 1000));
        budget.block_for(Duration::from_secs(2));
        budget.block_for(Duration::from_secs(1));
        assert_eq!(budget.try_take(), Duration::from_secs(2));
        tokio::time::advance(Duration::from_millis(1500)).await;
        assert_eq!(budget.try_take(), Duration::from_millis(500));
        tokio::time::advance(Duration::from_millis(500)).await;
        assert_eq!(budget.try_take(), Duration::ZERO);
    }
}
