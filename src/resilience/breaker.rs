//! The circuit breaker of one institution, in this process: consecutive transient
//! failures open it, and while it is open requests fail fast without touching the
//! network. After a cool-down one probe is let through (half-open); its success
//! closes the breaker, its failure opens it again for twice as long, up to a cap.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::time::Instant;

/// When a breaker opens and how long it stays open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerPolicy {
    /// Consecutive transient failures that open the breaker.
    pub failures: u32,
    /// How long the breaker stays open before its first probe.
    pub cooldown: Duration,
    /// The longest cool-down, however many probes failed.
    pub max_cooldown: Duration,
}

impl Default for BreakerPolicy {
    fn default() -> Self {
        Self {
            failures: 5,
            cooldown: Duration::from_secs(30),
            max_cooldown: Duration::from_secs(300),
        }
    }
}

/// Where a breaker stands; the number is the `finsync_institution_breaker_state` gauge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    Closed,
    HalfOpen,
    Open,
}

impl BreakerState {
    pub fn gauge(self) -> f64 {
        match self {
            Self::Closed => 0.0,
            Self::HalfOpen => 1.0,
            Self::Open => 2.0,
        }
    }
}

/// What the admin API shows of a breaker.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct BreakerView {
    pub state: BreakerState,
    /// When it last opened; absent while closed.
    pub opened_at: Option<DateTime<Utc>>,
    pub consecutive_failures: u32,
}

/// How a request was let through, which decides what its outcome does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Normal,
    /// The one request that tests whether a down institution is back.
    Probe,
}

#[derive(Debug)]
struct Inner {
    state: BreakerState,
    consecutive_failures: u32,
    opened_at: Option<DateTime<Utc>>,
    /// Until when an open breaker refuses everything.
    open_until: Instant,
    /// The current cool-down, doubled by each failed probe.
    cooldown: Duration,
    /// When the probe in flight started: a probe that never reports (its run was
    /// cancelled) must not keep the breaker half-open for ever.
    probe_started: Option<Instant>,
}

#[derive(Debug)]
pub struct Breaker {
    policy: BreakerPolicy,
    inner: Mutex<Inner>,
}

impl Breaker {
    pub fn new(policy: BreakerPolicy) -> Self {
        Self {
            policy,
            inner: Mutex::new(Inner {
                state: BreakerState::Closed,
                consecutive_failures: 0,
                opened_at: None,
                open_until: Instant::now(),
                cooldown: policy.cooldown,
                probe_started: None,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Lets a request through, or refuses it (`None`) while the institution is
    /// taken to be down. Returns the state after the decision too.
    pub fn admit(&self) -> (Option<Admission>, BreakerState) {
        let mut inner = self.lock();
        let now = Instant::now();
        let admission = match inner.state {
            BreakerState::Closed => Some(Admission::Normal),
            BreakerState::Open if now < inner.open_until => None,
            BreakerState::HalfOpen
                if inner
                    .probe_started
                    .is_some_and(|started| now < started + self.policy.cooldown) =>
            {
                None
            }
            BreakerState::Open | BreakerState::HalfOpen => {
                inner.state = BreakerState::HalfOpen;
                inner.probe_started = Some(now);
                Some(Admission::Probe)
            }
        };
        (admission, inner.state)
    }

    /// How long from now until a request may be let through again: the rest of the
    /// cool-down, or of the probe in flight; zero when it is closed.
    pub fn reopens_in(&self) -> Duration {
        let inner = self.lock();
        let until = match (inner.state, inner.probe_started) {
            (BreakerState::Closed, _) => return Duration::ZERO,
            (BreakerState::HalfOpen, Some(started)) => started + self.policy.cooldown,
            _ => inner.open_until,
        };
        until.saturating_duration_since(Instant::now())
    }

    /// The institution answered (whatever it said): it is up.
    pub fn succeeded(&self) -> BreakerState {
        let mut inner = self.lock();
        inner.state = BreakerState::Closed;
        inner.consecutive_failures = 0;
        inner.opened_at = None;
        inner.cooldown = self.policy.cooldown;
        inner.probe_started = None;
        inner.state
    }

    /// The institution failed transiently (5xx, timeout, connection refused).
    pub fn failed(&self, admission: Admission) -> BreakerState {
        let mut inner = self.lock();
        inner.consecutive_failures = inner.consecutive_failures.saturating_add(1);
        let open_for = match (admission, inner.state) {
            (Admission::Probe, _) => Some((inner.cooldown * 2).min(self.policy.max_cooldown)),
            (Admission::Normal, BreakerState::Closed)
                if inner.consecutive_failures >= self.policy.failures =>
            {
                Some(self.policy.cooldown)
            }
            _ => None,
        };
        if let Some(cooldown) = open_for {
            inner.state = BreakerState::Open;
            inner.cooldown = cooldown;
            inner.open_until = Instant::now() + cooldown;
            inner.opened_at = Some(Utc::now());
            inner.probe_started = None;
        }
        inner.state
    }

    /// Whether requests go through as usual (retries are pointless otherwise).
    pub fn is_closed(&self) -> bool {
        self.lock().state == BreakerState::Closed
    }

    pub fn view(&self) -> BreakerView {
        let inner = self.lock();
        BreakerView {
            state: inner.state,
            opened_at: inner.opened_at,
            consecutive_failures: inner.consecutive_failures,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: BreakerPolicy = BreakerPolicy {
        failures: 3,
        cooldown: Duration::from_secs(10),
        max_cooldown: Duration::from_secs(25),
    };

    fn fail(breaker: &Breaker, times: u32) -> BreakerState {
        let mut state = BreakerState::Closed;
        for _ in 0..times {
            let (admission, _) = breaker.admit();
            state = breaker.failed(admission.expect("admitted"));
        }
        state
    }

    #[tokio::test(start_paused = true)]
    async fn consecutive_failures_open_it_and_a_success_in_between_resets_the_count() {
        let breaker = Breaker::new(POLICY);
        assert_eq!(fail(&breaker, 2), BreakerState::Closed);
        breaker.succeeded();
        assert_eq!(fail(&breaker, 2), BreakerState::Closed);
        assert_eq!(fail(&breaker, 1), BreakerState::Open);
        let view = breaker.view();
        assert_eq!(view.consecutive_failures, 3);
        assert!(view.opened_at.is_some());
        assert_eq!(breaker.admit(), (None, BreakerState::Open));
    }

    #[tokio::test(start_paused = true)]
    async fn after_the_cooldown_one_probe_goes_through_and_its_success_closes_it() {
        let breaker = Breaker::new(POLICY);
        fail(&breaker, 3);
        tokio::time::advance(Duration::from_secs(9)).await;
        assert_eq!(breaker.admit().0, None);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(
            breaker.admit(),
            (Some(Admission::Probe), BreakerState::HalfOpen)
        );
        // Only one probe at a time.
        assert_eq!(breaker.admit(), (None, BreakerState::HalfOpen));
        assert_eq!(breaker.succeeded(), BreakerState::Closed);
        assert_eq!(breaker.admit().0, Some(Admission::Normal));
        assert_eq!(breaker.view().consecutive_failures, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_probe_doubles_the_cooldown_up_to_the_cap() {
        let breaker = Breaker::new(POLICY);
        fail(&breaker, 3);
        tokio::time::advance(POLICY.cooldown).await;
        for open_for in [20, 25] {
            assert_eq!(breaker.admit().0, Some(Admission::Probe));
            assert_eq!(breaker.failed(Admission::Probe), BreakerState::Open);
            tokio::time::advance(Duration::from_secs(open_for - 1)).await;
            assert_eq!(breaker.admit().0, None, "open for {open_for}s");
            tokio::time::advance(Duration::from_secs(1)).await;
        }
        // However long it was down, one good answer closes it at the base cool-down.
        assert_eq!(breaker.admit().0, Some(Admission::Probe));
        breaker.succeeded();
        fail(&breaker, 3);
        tokio::time::advance(POLICY.cooldown).await;
        assert_eq!(breaker.admit().0, Some(Admission::Probe));
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_that_never_reports_is_replaced_after_a_cooldown() {
        let breaker = Breaker::new(POLICY);
        fail(&breaker, 3);
        tokio::time::advance(POLICY.cooldown).await;
        assert_eq!(breaker.admit().0, Some(Admission::Probe));
        tokio::time::advance(POLICY.cooldown).await;
        assert_eq!(breaker.admit().0, Some(Admission::Probe));
    }
}
