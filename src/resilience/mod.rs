//! Resilience per institution: what every request to an institution passes through
//! before it is sent, and reports to after.
//!
//! - A circuit breaker (per process, see [`breaker`]) fails requests fast while the
//!   institution is down and lets one probe through after a cool-down.
//! - A pause the institution asked for (`429` with `Retry-After` or the connector's
//!   reset header) holds every request to it, fleet-wide with Redis.
//! - A concurrency cap: at most `limits.concurrency` requests in flight to one
//!   institution per process.
//! - A rate budget per second, minute and day (see [`budget`]), fleet-wide with Redis.
//!
//! - An adaptive mode (see [`adaptive`]): while an institution's errors or latency
//!   climb, it gets half its concurrency and its deferrable endpoints wait.
//!
//! Requests wait for a pause or a budget window rather than fail, unless the wait is
//! longer than the caller allows; then the caller treats it as a rate limit.

pub mod adaptive;
pub mod breaker;
pub mod budget;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub use breaker::{BreakerPolicy, BreakerState, BreakerView};
pub use budget::Quota;

use adaptive::Health;
use breaker::{Admission, Breaker};
use budget::{LocalBudget, RedisBudget};

/// Why a request may not be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The institution's breaker is open; it lets a request through again in
    /// `retry_in`.
    CircuitOpen { retry_in: Duration },
    /// A pause or an exhausted budget lasts longer than the caller would wait.
    Wait(Duration),
}

/// How a request that was sent ended, for the breaker and the pauses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The institution answered, whatever it said.
    Answered,
    /// It asked for a pause of this long (or did not say how long).
    RateLimited(Option<Duration>),
    /// A transient failure: 5xx, timeout, connection refused.
    Unavailable,
}

/// Everything this process keeps about one institution.
#[derive(Debug)]
struct Guard {
    quota: Quota,
    breaker: Arc<Breaker>,
    in_flight: Arc<Semaphore>,
    /// Half the slots, taken as well while the institution is degraded.
    degraded_in_flight: Arc<Semaphore>,
    health: Arc<Health>,
    local: LocalBudget,
}

/// The resilience of every institution, shared by every engine of a process.
#[derive(Debug, Clone)]
pub struct Resilience {
    redis: Option<RedisBudget>,
    policy: BreakerPolicy,
    guards: Arc<Mutex<HashMap<String, Arc<Guard>>>>,
}

/// Leave to send one request; hand it back with [`Resilience::settle`].
#[derive(Debug)]
pub struct Pass {
    institution: String,
    guard: Arc<Guard>,
    admission: Admission,
    started: tokio::time::Instant,
    _in_flight: OwnedSemaphorePermit,
    _degraded_in_flight: Option<OwnedSemaphorePermit>,
}

impl Resilience {
    /// Budgets and pauses in this process only.
    pub fn local(policy: BreakerPolicy) -> Self {
        Self {
            redis: None,
            policy,
            guards: Arc::default(),
        }
    }

    /// Budgets and pauses shared through Redis under `prefix`, each call giving up
    /// after `timeout` (then this process's own budget decides).
    pub fn shared(
        policy: BreakerPolicy,
        redis_url: &str,
        prefix: &str,
        timeout: Duration,
    ) -> Result<Self, redis::RedisError> {
        Ok(Self {
            redis: Some(RedisBudget::new(redis_url, prefix, timeout)?),
            ..Self::local(policy)
        })
    }

    /// The guard of `institution`; a changed quota (a new connector version) gets a
    /// new budget and cap, and keeps the breaker.
    fn guard(&self, institution: &str, quota: Quota) -> Arc<Guard> {
        let mut guards = self.guards.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(guard) = guards.get(institution)
            && guard.quota == quota
        {
            return guard.clone();
        }
        let (breaker, health) = guards.get(institution).map_or_else(
            || (Arc::new(Breaker::new(self.policy)), Arc::default()),
            |old| (old.breaker.clone(), old.health.clone()),
        );
        let slots = quota.concurrency.max(1) as usize;
        let guard = Arc::new(Guard {
            quota,
            breaker,
            in_flight: Arc::new(Semaphore::new(slots)),
            degraded_in_flight: Arc::new(Semaphore::new(slots.div_ceil(2))),
            health,
            local: LocalBudget::new(&quota),
        });
        guards.insert(institution.to_owned(), guard.clone());
        guard
    }

    /// Waits until a request to `institution` may be sent: the breaker lets it
    /// through, no pause is in force, a slot is free and every budget window has a
    /// permit. Refuses at once while the breaker is open, and when the wait would
    /// exceed `max_wait`.
    pub async fn admit(
        &self,
        institution: &str,
        quota: Quota,
        max_wait: Duration,
    ) -> Result<Pass, Refusal> {
        let guard = self.guard(institution, quota);
        let (admission, state) = guard.breaker.admit();
        publish(institution, state);
        let admission = admission.ok_or_else(|| Refusal::CircuitOpen {
            retry_in: guard.breaker.reopens_in(),
        })?;
        // The semaphore is never closed; were it, refusing is the safe answer.
        let in_flight =
            guard
                .in_flight
                .clone()
                .acquire_owned()
                .await
                .map_err(|_| Refusal::CircuitOpen {
                    retry_in: Duration::ZERO,
                })?;
        let degraded_in_flight = if guard.health.is_degraded() {
            Some(
                guard
                    .degraded_in_flight
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(|_| Refusal::CircuitOpen {
                        retry_in: Duration::ZERO,
                    })?,
            )
        } else {
            None
        };
        loop {
            let wait = match &self.redis {
                Some(redis) => match redis.try_take(institution, &quota).await {
                    // A pause heard only here (Redis was down when it came) still holds.
                    Some(wait) => wait.max(guard.local.blocked_for()),
                    None => guard.local.try_take(),
                },
                None => guard.local.try_take(),
            };
            if wait.is_zero() {
                break;
            }
            if wait > max_wait {
                return Err(Refusal::Wait(wait));
            }
            tokio::time::sleep(wait + release_jitter(wait)).await;
        }
        Ok(Pass {
            institution: institution.to_owned(),
            guard,
            admission,
            started: tokio::time::Instant::now(),
            _in_flight: in_flight,
            _degraded_in_flight: degraded_in_flight,
        })
    }

    /// Reports how the request ended: the breaker learns of it, and a pause the
    /// institution asked for is recorded for the fleet.
    pub async fn settle(&self, pass: Pass, outcome: Outcome) {
        let state = match outcome {
            Outcome::Unavailable => pass.guard.breaker.failed(pass.admission),
            Outcome::Answered | Outcome::RateLimited(_) => pass.guard.breaker.succeeded(),
        };
        publish(&pass.institution, state);
        let ok = outcome == Outcome::Answered;
        if let Some(degraded) =
            pass.guard
                .health
                .record(pass.started.elapsed(), ok, pass.guard.quota.slow)
        {
            if degraded {
                tracing::warn!(institution = %pass.institution, "Institution struggling: half the concurrency, deferrable endpoints wait.");
            } else {
                tracing::info!(institution = %pass.institution, "Institution back to normal.");
            }
            metrics::gauge!("finsync_institution_degraded", "institution" => pass.institution.clone())
                .set(if degraded { 1.0 } else { 0.0 });
        }
        if let Outcome::RateLimited(Some(wait)) = outcome {
            pass.guard.local.block_for(wait);
            if let Some(redis) = &self.redis {
                redis.block_for(&pass.institution, wait).await;
            }
        }
    }

    /// Whether requests to `institution` go through as usual; while its breaker is
    /// not closed, retrying a failure only adds load.
    pub fn is_closed(&self, institution: &str) -> bool {
        self.guards
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(institution)
            .is_none_or(|guard| guard.breaker.is_closed())
    }

    /// Whether `institution` is in the adaptive mode's degraded state in this process.
    pub fn is_degraded(&self, institution: &str) -> bool {
        self.guards
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(institution)
            .is_some_and(|guard| guard.health.is_degraded())
    }

    /// Every institution this process has called: its breaker and whether it is
    /// degraded, for the fleet's view.
    pub fn snapshot(&self) -> Vec<(String, BreakerView, bool)> {
        self.guards
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(id, guard)| (id.clone(), guard.breaker.view(), guard.health.is_degraded()))
            .collect()
    }

    /// The breaker of `institution` in this process, once a request was made to it.
    pub fn breaker(&self, institution: &str) -> Option<BreakerView> {
        self.guards
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(institution)
            .map(|guard| guard.breaker.view())
    }
}

fn publish(institution: &str, state: BreakerState) {
    metrics::gauge!("finsync_institution_breaker_state", "institution" => institution.to_owned())
        .set(state.gauge());
}

/// Extra wait for a request held by a long wait (a pause the institution asked
/// for, a daily budget): up to a tenth of it, at most a second, so the requests
/// held together do not all arrive in the same millisecond when it ends. Short
/// waits (a per-second budget's spacing) get none: they are the budget's pace.
fn release_jitter(wait: Duration) -> Duration {
    if wait < JITTERED_FROM {
        return Duration::ZERO;
    }
    let most = (wait / 10).min(Duration::from_secs(1));
    most.mul_f64(rand::random::<f64>())
}

/// Waits from this long on are released with jitter.
const JITTERED_FROM: Duration = Duration::from_millis(500);

#[cfg(test)]
mod tests {
    use super::*;
    use std::num::NonZeroU32;

    const POLICY: BreakerPolicy = BreakerPolicy {
        failures: 2,
        cooldown: Duration::from_secs(5),
        max_cooldown: Duration::from_secs(5),
    };

    fn quota(per_second: u32, concurrency: u32) -> Quota {
        Quota {
            per_second: NonZeroU32::new(per_second),
            concurrency,
            ..Quota::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_open_breaker_refuses_only_its_own_institution() {
        let resilience = Resilience::local(POLICY);
        for _ in 0..2 {
            let pass = resilience
                .admit("down", quota(100, 4), Duration::ZERO)
                .await
                .unwrap();
            resilience.settle(pass, Outcome::Unavailable).await;
        }
        assert_eq!(
            resilience
                .admit("down", quota(100, 4), Duration::ZERO)
                .await
                .unwrap_err(),
            Refusal::CircuitOpen {
                retry_in: POLICY.cooldown
            }
        );
        assert!(!resilience.is_closed("down"));
        assert_eq!(
            resilience.breaker("down").unwrap().state,
            BreakerState::Open
        );
        assert!(
            resilience
                .admit("up", quota(100, 4), Duration::ZERO)
                .await
                .is_ok()
        );
    }

    /// Requests held by one pause are released spread out, not all at once.
    #[tokio::test(start_paused = true)]
    async fn requests_held_by_a_pause_are_released_with_jitter() {
        // No budget: only the pause holds the requests back.
        let resilience = Resilience::local(POLICY);
        let pass = resilience
            .admit("busy", quota(0, 16), Duration::ZERO)
            .await
            .unwrap();
        resilience
            .settle(pass, Outcome::RateLimited(Some(Duration::from_secs(2))))
            .await;
        let asked = tokio::time::Instant::now();
        let mut held = tokio::task::JoinSet::new();
        for _ in 0..8 {
            let resilience = resilience.clone();
            held.spawn(async move {
                let pass = resilience
                    .admit("busy", quota(0, 16), Duration::from_secs(30))
                    .await
                    .unwrap();
                let at = asked.elapsed();
                resilience.settle(pass, Outcome::Answered).await;
                at
            });
        }
        let released: std::collections::BTreeSet<Duration> =
            held.join_all().await.into_iter().collect();
        assert!(released.iter().all(|at| *at >= Duration::from_secs(2)));
        assert!(released.iter().all(|at| *at <= Duration::from_millis(2200)));
        assert!(released.len() > 1, "all released at once: {released:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_rate_limit_pauses_the_institution_and_a_longer_wait_is_refused() {
        let resilience = Resilience::local(POLICY);
        let pass = resilience
            .admit("busy", quota(100, 4), Duration::ZERO)
            .await
            .unwrap();
        resilience
            .settle(pass, Outcome::RateLimited(Some(Duration::from_secs(2))))
            .await;
        assert_eq!(
            resilience
                .admit("busy", quota(100, 4), Duration::from_secs(1))
                .await
                .unwrap_err(),
            Refusal::Wait(Duration::from_secs(2))
        );
        let asked = tokio::time::Instant::now();
        resilience
            .admit("busy", quota(100, 4), Duration::from_secs(30))
            .await
            .unwrap();
        assert!(asked.elapsed() >= Duration::from_secs(2));
        // A 429 is an answer: it does not count towards the breaker.
        assert!(resilience.is_closed("busy"));
    }

    /// Rate-limited answers do not trip the breaker but do count as a struggling
    /// institution: past the adaptive threshold, it gets half its slots.
    #[tokio::test(start_paused = true)]
    async fn a_struggling_institution_gets_half_its_concurrency_until_it_recovers() {
        let resilience = Resilience::local(POLICY);
        let settle_many = |outcome: Outcome, n: usize| {
            let resilience = resilience.clone();
            async move {
                for _ in 0..n {
                    let pass = resilience
                        .admit("slow", quota(1000, 4), Duration::ZERO)
                        .await
                        .unwrap();
                    resilience.settle(pass, outcome).await;
                }
            }
        };
        settle_many(Outcome::RateLimited(None), 10).await;
        assert!(resilience.is_degraded("slow") && resilience.is_closed("slow"));
        let mut held = Vec::new();
        for _ in 0..2 {
            held.push(
                resilience
                    .admit("slow", quota(1000, 4), Duration::ZERO)
                    .await
                    .unwrap(),
            );
        }
        let third = tokio::spawn({
            let resilience = resilience.clone();
            async move {
                resilience
                    .admit("slow", quota(1000, 4), Duration::ZERO)
                    .await
                    .is_ok()
            }
        });
        tokio::task::yield_now().await;
        assert!(!third.is_finished(), "only 2 of 4 slots while degraded");
        for pass in held {
            resilience.settle(pass, Outcome::Answered).await;
        }
        assert!(third.await.unwrap());
        settle_many(Outcome::Answered, 20).await;
        assert!(!resilience.is_degraded("slow"));
    }

    #[tokio::test(start_paused = true)]
    async fn the_concurrency_cap_holds_requests_until_a_slot_frees() {
        let resilience = Resilience::local(POLICY);
        let first = resilience
            .admit("bank", quota(100, 1), Duration::ZERO)
            .await
            .unwrap();
        let second = tokio::spawn({
            let resilience = resilience.clone();
            async move {
                resilience
                    .admit("bank", quota(100, 1), Duration::ZERO)
                    .await
                    .is_ok()
            }
        });
        tokio::task::yield_now().await;
        assert!(!second.is_finished());
        resilience.settle(first, Outcome::Answered).await;
        assert!(second.await.unwrap());
    }
}
