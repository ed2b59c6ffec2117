//! The sandbox's world clock: the epoch every institution serves its data at (see
//! [`data::portfolio_at`](super::data::portfolio_at)), each user's data at recently
//! served epochs, and the unauthenticated admin endpoints that read and advance the clock.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::NaiveDate;
use serde_json::json;
use tokio::sync::watch;

use super::AppState;
use super::data::EpochState;

/// How many records (accounts, holdings, transactions) of recently served states are
/// kept by default: about a hundred bench-sized users, thousands of demo users, and
/// a bound on what arbitrary login hints can make it hold (some tens of MiB).
pub const CACHED_RECORDS: usize = 100_000;

pub(super) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/sandbox/admin/advance", post(advance))
        .route("/sandbox/admin/world", get(describe))
}

/// The epoch shared by every institution, and the data of each user at it.
#[derive(Debug)]
pub(super) struct World {
    seed: u64,
    anchor_date: NaiveDate,
    epoch: AtomicU32,
    /// Recently served states, so a request steps from the nearest one it can reuse
    /// instead of replaying every epoch from 0, or generating the user's data again.
    recent: Mutex<Recent>,
    /// How many records `recent` may hold.
    cached_records: usize,
    /// Announces each new epoch, to the institutions' webhooks.
    moved: watch::Sender<u32>,
}

/// States by `(seed, user, epoch)`, and how many records they hold in all.
#[derive(Debug, Default)]
struct Recent {
    states: BTreeMap<(u64, String, u32), Arc<EpochState>>,
    records: usize,
}

impl World {
    pub(super) fn new(
        seed: u64,
        anchor_date: NaiveDate,
        start_epoch: u32,
        cached_records: usize,
    ) -> Self {
        Self {
            seed,
            anchor_date,
            epoch: AtomicU32::new(start_epoch),
            recent: Mutex::default(),
            cached_records,
            moved: watch::Sender::new(start_epoch),
        }
    }

    /// The epoch the institutions serve now.
    pub(super) fn epoch(&self) -> u32 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// Moves the world one epoch on and returns the new epoch.
    pub(super) fn advance(&self) -> u32 {
        let previous = self
            .epoch
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |epoch| {
                Some(epoch.saturating_add(1))
            })
            .unwrap_or_else(|epoch| epoch);
        let epoch = previous.saturating_add(1);
        tracing::info!(epoch, "Sandbox world advanced.");
        self.moved.send_replace(epoch);
        epoch
    }

    /// Sees every epoch the world moves to from now on.
    pub(super) fn subscribe(&self) -> watch::Receiver<u32> {
        self.moved.subscribe()
    }

    /// `user_id`'s data at `epoch` in the world seeded with `seed` (each institution
    /// salts the sandbox's seed with its own).
    pub(super) fn state(&self, seed: u64, user_id: &str, epoch: u32) -> Arc<EpochState> {
        let key = (seed, user_id.to_owned(), epoch);
        let start = {
            let recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(state) = recent.states.get(&key) {
                return Arc::clone(state);
            }
            recent
                .states
                .range((seed, user_id.to_owned(), 0)..key.clone())
                .next_back()
                .map(|(_, state)| Arc::clone(state))
        };
        // Stepping happens outside the lock; two requests racing for one state both compute
        // it, and get equal results.
        let mut state = match start {
            Some(state) => Arc::unwrap_or_clone(state),
            None => EpochState::genesis(seed, self.anchor_date, user_id),
        };
        while state.epoch() < epoch {
            state = state.next();
        }
        let state = Arc::new(state);
        let mut recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(replaced) = recent.states.insert(key, Arc::clone(&state)) {
            recent.records -= replaced.records();
        }
        recent.records += state.records();
        // The state just served stays, however large.
        while recent.records > self.cached_records && recent.states.len() > 1 {
            // Clients move forward, so the oldest epoch is the least likely to be asked again.
            let Some(oldest) = recent
                .states
                .iter()
                .filter(|(_, kept)| !Arc::ptr_eq(kept, &state))
                .min_by_key(|((_, _, epoch), _)| *epoch)
                .map(|(key, _)| key.clone())
            else {
                break;
            };
            if let Some(evicted) = recent.states.remove(&oldest) {
                recent.records -= evicted.records();
            }
        }
        state
    }

    /// Advances the world every `period`, forever; run it alongside the server.
    pub(super) async fn tick(&self, period: Duration) {
        let start = tokio::time::Instant::now() + period;
        let mut interval = tokio::time::interval_at(start, period);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            self.advance();
        }
    }
}

async fn advance(State(app): State<Arc<AppState>>) -> Json<serde_json::Value> {
    Json(json!({ "epoch": app.world.advance() }))
}

async fn describe(State(app): State<Arc<AppState>>) -> Json<serde_json::Value> {
    Json(json!({
        "epoch": app.world.epoch(),
        "seed": app.world.seed,
        "anchor_date": app.world.anchor_date,
    }))
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::super::data::portfolio_at;
    use super::super::test_support::TestSandbox;
    use super::super::{Institution, SandboxConfig};
    use super::*;

    fn anchor() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, 20).expect("valid date")
    }

    #[test]
    fn states_agree_with_portfolio_at_whatever_the_order_they_are_asked_in() {
        let world = World::new(42, anchor(), 0, CACHED_RECORDS);
        for epoch in [5, 2, 7, 0, 7, 3] {
            let state = world.state(42, "demo-alice", epoch);
            assert_eq!(state.epoch(), epoch);
            assert_eq!(
                *state.portfolio(),
                portfolio_at(42, anchor(), "demo-alice", epoch)
            );
        }
    }

    #[test]
    fn the_states_kept_hold_at_most_the_records_allowed() {
        let one = portfolio_at(42, anchor(), "bulk-00000", 0);
        let records = one.accounts.len() + one.holdings.len() + one.transactions.len();
        let world = World::new(42, anchor(), 0, records * 3);
        for user in 0..5 {
            world.state(42, &format!("bulk-{user:05}"), 0);
        }
        let recent = world.recent.lock().expect("lock");
        assert_eq!(recent.states.len(), 3);
        assert_eq!(recent.records, records * 3);
        drop(recent);
        // One user larger than the whole allowance is still served, and kept alone.
        let world = World::new(42, anchor(), 0, 10);
        world.state(42, "bulk-00000", 0);
        world.state(42, "bulk-00001", 0);
        let recent = world.recent.lock().expect("lock");
        assert_eq!(recent.states.len(), 1);
        assert_eq!(recent.records, records);
    }

    #[tokio::test]
    async fn prepared_users_are_kept_at_the_epoch_served() {
        let config = SandboxConfig {
            start_epoch: 3,
            ..SandboxConfig::default()
        };
        let seed = Institution::Meridian.seed(config.seed);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let sandbox = super::super::spawn(config, listener)
            .await
            .expect("spawn sandbox");
        let users = vec!["bulk-00000".to_owned(), "bulk-00001".to_owned()];
        sandbox.prepare(Institution::Meridian, &users);
        let recent = sandbox.state.world.recent.lock().expect("lock");
        let kept: Vec<(u64, String, u32)> = recent.states.keys().cloned().collect();
        let expected: Vec<(u64, String, u32)> =
            users.iter().map(|u| (seed, u.clone(), 3)).collect();
        assert_eq!(kept, expected);
    }

    #[tokio::test]
    async fn the_admin_endpoints_read_and_advance_the_clock() {
        let sandbox = TestSandbox::start_with(SandboxConfig {
            start_epoch: 4,
            ..SandboxConfig::default()
        })
        .await;
        let world: Value = sandbox
            .get("/sandbox/admin/world")
            .send()
            .await
            .expect("request")
            .json()
            .await
            .expect("json");
        assert_eq!(
            world,
            json!({
                "epoch": 4,
                "seed": 42,
                "anchor_date": SandboxConfig::default().anchor_date.to_string()
            })
        );

        let advanced = sandbox
            .post("/sandbox/admin/advance")
            .send()
            .await
            .expect("request");
        assert_eq!(advanced.status(), 200);
        let advanced: Value = advanced.json().await.expect("json");
        assert_eq!(advanced, json!({"epoch": 5}));
        assert_eq!(sandbox.epoch(), 5);
        assert_eq!(sandbox.advance(), 6);

        let text = sandbox
            .get("/")
            .send()
            .await
            .expect("request")
            .text()
            .await
            .expect("body");
        assert!(
            text.contains("/sandbox/admin/advance") && text.contains("now 6"),
            "{text}"
        );
        sandbox.shutdown().await;
    }

    /// One endpoint's records, all on one page.
    async fn fetch(sandbox: &TestSandbox, token: &str, endpoint: &str) -> Value {
        let mut body: Value = sandbox
            .get(&format!("/meridian/v1/{endpoint}"))
            .bearer_auth(token)
            .query(&[("count", "500")])
            .send()
            .await
            .expect("request")
            .json()
            .await
            .expect("json");
        assert!(body["next_cursor"].is_null());
        body[endpoint].take()
    }

    #[tokio::test]
    async fn the_data_endpoints_serve_the_current_epoch() {
        let sandbox = TestSandbox::start().await;
        let tokens = sandbox
            .link("demo-alice", "accounts holdings transactions")
            .await;
        let token = tokens["access_token"].as_str().expect("token");
        for epoch in [0, 1, 3] {
            while sandbox.epoch() < epoch {
                sandbox.advance();
            }
            let wanted =
                serde_json::to_value(portfolio_at(42, sandbox.anchor_date, "demo-alice", epoch))
                    .expect("json");
            for endpoint in ["accounts", "holdings", "transactions"] {
                assert_eq!(
                    fetch(&sandbox, token, endpoint).await,
                    wanted[endpoint],
                    "{endpoint} at {epoch}"
                );
            }
        }
        sandbox.shutdown().await;
    }

    #[tokio::test]
    async fn a_configured_period_advances_the_clock_on_its_own() {
        let sandbox = TestSandbox::start_with(SandboxConfig {
            advance_every: Some(Duration::from_millis(10)),
            ..SandboxConfig::default()
        })
        .await;
        let mut waited = 0;
        while sandbox.epoch() < 2 {
            assert!(waited < 1_000, "the clock did not advance");
            tokio::time::sleep(Duration::from_millis(10)).await;
            waited += 1;
        }
        sandbox.shutdown().await;
    }
}
