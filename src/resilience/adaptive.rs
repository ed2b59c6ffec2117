//! The adaptive mode of one institution: from its recent requests, whether it is
//! struggling. While it is (errors or slowness climbing), requests to it run at half
//! the concurrency and endpoints its connector marks `deferrable` wait for a later
//! sync; it returns to normal once errors and latency are back down. The two
//! thresholds differ, so an institution at the edge does not flap.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// Requests the judgement looks back on.
const WINDOW: usize = 20;
/// Fewer requests than this say nothing yet.
const MIN_SAMPLES: usize = 10;
/// Share of failed requests that makes an institution degraded…
const ENTER_ERRORS: f64 = 0.3;
/// …and the share it must fall to before it is normal again.
const LEAVE_ERRORS: f64 = 0.1;

/// The recent requests of one institution, in this process.
#[derive(Debug, Default)]
pub struct Health {
    recent: Mutex<VecDeque<(Duration, bool)>>,
    degraded: AtomicBool,
}

impl Health {
    /// Records one request (how long it took, whether it succeeded) against the
    /// latency `slow` that counts as struggling (zero: latency is not judged).
    /// Returns the new mode when it changed.
    pub fn record(&self, latency: Duration, ok: bool, slow: Duration) -> Option<bool> {
        let mut recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
        if recent.len() == WINDOW {
            recent.pop_front();
        }
        recent.push_back((latency, ok));
        let was = self.degraded.load(Ordering::Relaxed);
        let now = assess(recent.make_contiguous(), slow, was);
        self.degraded.store(now, Ordering::Relaxed);
        (now != was).then_some(now)
    }

    pub fn is_degraded(&self) -> bool {
        self.degraded.load(Ordering::Relaxed)
    }
}

/// Whether requests like `samples` mean degraded, given the current mode.
fn assess(samples: &[(Duration, bool)], slow: Duration, degraded: bool) -> bool {
    if samples.len() < MIN_SAMPLES {
        return degraded;
    }
    let errors = samples.iter().filter(|(_, ok)| !ok).count() as f64 / samples.len() as f64;
    let mut latencies: Vec<Duration> = samples.iter().map(|(latency, _)| *latency).collect();
    latencies.sort();
    let median = latencies[latencies.len() / 2];
    let judged = !slow.is_zero();
    if degraded {
        !(errors <= LEAVE_ERRORS && (!judged || median < slow / 2))
    } else {
        errors >= ENTER_ERRORS || (judged && median >= slow)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SLOW: Duration = Duration::from_secs(10);

    fn feed(health: &Health, n: usize, latency_ms: u64, ok: bool) {
        for _ in 0..n {
            health.record(Duration::from_millis(latency_ms), ok, SLOW);
        }
    }

    #[test]
    fn errors_climbing_degrade_and_recovery_restores_with_hysteresis() {
        let health = Health::default();
        feed(&health, 5, 100, false);
        assert!(!health.is_degraded(), "too few requests to judge");
        feed(&health, 5, 100, true);
        assert!(health.is_degraded(), "half of 10 failed");
        // 3 failures in 20 (15 %) would not degrade a normal institution, and do
        // not yet make a degraded one normal.
        feed(&health, 10, 100, true);
        assert!(health.is_degraded(), "{:?}", health.recent);
        feed(&health, 5, 100, true);
        assert!(!health.is_degraded());
    }

    #[test]
    fn slowness_degrades_even_without_errors() {
        let health = Health::default();
        feed(&health, 10, 12_000, true);
        assert!(health.is_degraded());
        // Faster, but not yet under half the threshold.
        feed(&health, 20, 7_000, true);
        assert!(health.is_degraded());
        feed(&health, 20, 1_000, true);
        assert!(!health.is_degraded());
        // Without a threshold, latency is not judged.
        let unjudged = Health::default();
        for _ in 0..20 {
            unjudged.record(Duration::from_secs(60), true, Duration::ZERO);
        }
        assert!(!unjudged.is_degraded());
    }
}
