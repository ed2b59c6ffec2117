//! The sandbox institutions: fake financial institutions served over real HTTP, the way a
//! payment provider ships a sandbox, so finsync can be demonstrated and tested end to end
//! without a real bank.
//!
//! One institution so far, Meridian Brokerage, under `/meridian`:
//! - [`oauth`]: its OAuth2 authorization server (RFC 6749, PKCE per RFC 7636, revocation per
//!   RFC 7009), keeping codes and tokens in [`grants`];
//! - [`meridian`]: its bearer-protected, cursor-paged data API;
//! - [`data`]: the deterministic data that API serves, also callable directly by tests,
//!   at every epoch of the world;
//! - [`world`]: the world clock, the epoch all institutions serve their data at, advanced
//!   through `/sandbox/admin`, on a timer, or by [`Sandbox::advance`].
//!
//! This module owns the configuration, the router and the running-server handle.

pub mod data;
mod grants;
mod meridian;
mod oauth;
#[cfg(test)]
mod test_support;
mod world;

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use chrono::NaiveDate;
use secrecy::SecretString;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use self::grants::GrantStore;
pub use self::oauth::TokenQuirks;
use self::world::World;

const DEFAULT_ANCHOR_DATE: NaiveDate = match NaiveDate::from_ymd_opt(2026, 11, 20) {
    Some(date) => date,
    None => panic!("the default anchor date is a valid date"),
};

/// How a sandbox behaves. The same seed and anchor date always yield the same data.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// Seeds every user's data; change it to get a different but equally stable world.
    pub seed: u64,
    /// Lifetime of issued access tokens; short values let tests exercise refresh.
    pub access_token_ttl: Duration,
    /// The one OAuth client the authorization server knows.
    pub client_id: String,
    pub client_secret: SecretString,
    /// "Today" for the data: transactions fall in the 90 days before it, prices close the
    /// trading day before it. Fixed, so data does not drift with the wall clock.
    pub anchor_date: NaiveDate,
    /// How long a refresh token rotated out by a refresh is still accepted. Presenting it
    /// again inside the grace rotates again: a fresh pair, and the refresh token issued
    /// before is invalidated. Zero, the default, rejects it at once with `invalid_grant`.
    pub refresh_grace: Duration,
    /// Non-standard shapes of successful token responses; the default is standard.
    pub token_quirks: TokenQuirks,
    /// The epoch the world starts at (see [`data::portfolio_at`]); 0, the default, serves
    /// exactly [`data::portfolio`].
    pub start_epoch: u32,
    /// Advances the world one epoch every period, so data changes on its own; `None`, the
    /// default, or zero leaves it to [`Sandbox::advance`] and `POST /sandbox/admin/advance`.
    pub advance_every: Option<Duration>,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        Self {
            seed: 42,
            access_token_ttl: Duration::from_secs(3600),
            client_id: "finsync-sandbox".to_owned(),
            client_secret: SecretString::from("meridian-sandbox-secret"),
            anchor_date: DEFAULT_ANCHOR_DATE,
            refresh_grace: Duration::ZERO,
            token_quirks: TokenQuirks::default(),
            start_epoch: 0,
            advance_every: None,
        }
    }
}

/// Counters of what the sandbox has been asked to do, for tests that assert traffic.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SandboxStats {
    /// Authorization codes issued (auto-approved or through the consent page).
    pub authorizations: u64,
    /// Successful `authorization_code` grants.
    pub code_exchanges: u64,
    /// Successful `refresh_token` grants, including those of a token inside its grace.
    pub refreshes: u64,
    /// `refresh_token` grants answered `invalid_grant`: unknown, revoked, rotated out
    /// (past any grace) or another client's token.
    pub refreshes_rejected: u64,
    /// Revocation requests answered with 200, whether or not the token was known.
    pub revocations: u64,
    /// Data API requests, counted before authentication, so rejected ones count too.
    pub api_requests: u64,
}

#[derive(Debug, Default)]
struct Stats {
    authorizations: AtomicU64,
    code_exchanges: AtomicU64,
    refreshes: AtomicU64,
    refreshes_rejected: AtomicU64,
    revocations: AtomicU64,
    api_requests: AtomicU64,
}

impl Stats {
    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> SandboxStats {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        SandboxStats {
            authorizations: read(&self.authorizations),
            code_exchanges: read(&self.code_exchanges),
            refreshes: read(&self.refreshes),
            refreshes_rejected: read(&self.refreshes_rejected),
            revocations: read(&self.revocations),
            api_requests: read(&self.api_requests),
        }
    }
}

/// What every handler shares.
struct AppState {
    config: SandboxConfig,
    grants: Arc<GrantStore>,
    stats: Arc<Stats>,
    world: Arc<World>,
}

/// A running sandbox. Dropping it stops the server too; [`Sandbox::shutdown`] also waits.
#[derive(Debug)]
pub struct Sandbox {
    addr: SocketAddr,
    stats: Arc<Stats>,
    grants: Arc<GrantStore>,
    world: Arc<World>,
    /// Dropping or firing this starts a graceful shutdown.
    stop: oneshot::Sender<()>,
    server: JoinHandle<()>,
}

impl Sandbox {
    /// Base URL to prefix paths with, e.g. `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn stats(&self) -> SandboxStats {
        self.stats.snapshot()
    }

    /// Every access and refresh token this sandbox ever issued, in issue order, whether
    /// still valid or not, for tests that prove no token leaks. The list only grows.
    pub fn issued_tokens(&self) -> Vec<String> {
        self.grants.issued_tokens()
    }

    /// The epoch every institution serves its data at now.
    pub fn epoch(&self) -> u32 {
        self.world.epoch()
    }

    /// Moves every institution's data one epoch on and returns the new epoch.
    pub fn advance(&self) -> u32 {
        self.world.advance()
    }

    /// Stops accepting connections and waits for requests in flight to finish.
    pub async fn shutdown(self) {
        let Self { stop, server, .. } = self;
        // An error only means the server already stopped on its own.
        let _ = stop.send(());
        if let Err(error) = server.await {
            tracing::error!(%error, "Sandbox server task failed.");
        }
    }
}

/// Serves the sandbox on `listener` in a background task.
pub async fn spawn(config: SandboxConfig, listener: TcpListener) -> std::io::Result<Sandbox> {
    let local = listener.local_addr()?;
    // A wildcard bind is still reached through loopback.
    let addr = match local {
        SocketAddr::V4(v4) if v4.ip().is_unspecified() => {
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), v4.port())
        }
        SocketAddr::V6(v6) if v6.ip().is_unspecified() => {
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), v6.port())
        }
        other => other,
    };
    let advance_every = config.advance_every.filter(|period| !period.is_zero());
    let world = Arc::new(World::new(
        config.seed,
        config.anchor_date,
        config.start_epoch,
    ));
    let (router, stats, grants) = build(config, Arc::clone(&world));
    let (stop, stopped) = oneshot::channel::<()>();
    let clock = Arc::clone(&world);
    let server = tokio::spawn(async move {
        let shutdown = async {
            // Fired or dropped, either way it is time to stop.
            let _ = stopped.await;
        };
        let serve = async {
            if let Err(error) = axum::serve(listener, router)
                .with_graceful_shutdown(shutdown)
                .await
            {
                tracing::error!(%error, "Sandbox server failed.");
            }
        };
        let ticking = async {
            match advance_every {
                Some(period) => clock.tick(period).await,
                None => std::future::pending().await,
            }
        };
        // The clock never finishes; it stops with the server.
        tokio::select! {
            () = serve => {}
            () = ticking => {}
        }
    });
    tracing::info!(%addr, "Sandbox listening.");
    Ok(Sandbox {
        addr,
        stats,
        grants,
        world,
        stop,
        server,
    })
}

fn build(config: SandboxConfig, world: Arc<World>) -> (Router, Arc<Stats>, Arc<GrantStore>) {
    let stats = Arc::new(Stats::default());
    let grants = Arc::new(GrantStore::new(
        config.access_token_ttl,
        config.refresh_grace,
    ));
    let state = Arc::new(AppState {
        grants: Arc::clone(&grants),
        config,
        stats: Arc::clone(&stats),
        world,
    });
    let router = Router::new()
        .route("/", get(describe))
        .route("/meridian", get(describe))
        .merge(oauth::routes())
        .merge(meridian::routes())
        .merge(world::routes())
        .fallback(not_found)
        .with_state(state);
    (router, stats, grants)
}

async fn describe(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    let text = format!(
        "finsync sandbox institutions\n\
         \n\
         Fake financial institutions with real protocols and deterministic data (seed {seed}, as of {anchor}).\n\
         The data moves in epochs (now {epoch}): each one posts pending transactions under new ids, adds, changes\n\
         and removes a few, and moves prices; epoch 3 splits a stock 2-for-1. Every institution serves the current epoch.\n\
         \n\
         World clock (no authentication: this is a sandbox, anyone who can reach it can move its time)\n\
         \x20 GET  /sandbox/admin/world        {{\"epoch\", \"seed\", \"anchor_date\"}}\n\
         \x20 POST /sandbox/admin/advance      moves every institution one epoch on; answers {{\"epoch\"}}\n\
         \n\
         Meridian Brokerage (institution id `meridian`)\n\
         \x20 GET  /meridian/oauth/authorize    OAuth2 authorization (response_type=code, PKCE S256 required)\n\
         \x20 POST /meridian/oauth/authorize    consent form submission\n\
         \x20 POST /meridian/oauth/token        authorization_code and refresh_token grants (refresh tokens rotate)\n\
         \x20 POST /meridian/oauth/revoke       RFC 7009 revocation\n\
         \x20 GET  /meridian/v1/accounts        scope `accounts`\n\
         \x20 GET  /meridian/v1/holdings        scope `holdings`\n\
         \x20 GET  /meridian/v1/transactions    scope `transactions`\n\
         \x20 GET  /meridian/v1/transactions/sync  scope `transactions`: {{\"added\", \"modified\", \"removed\", \"next_cursor\", \"has_more\"}}\n\
         \x20      since `cursor` (none: everything); 409 sync_mutation_during_pagination if the epoch moved mid-paging\n\
         \x20 Data endpoints take a Bearer token and page with `cursor` and `count` (1..=500, default 50).\n\
         \n\
         OAuth client: client_id `{client_id}`, secret from the sandbox configuration.\n\
         Users whose login_hint starts with `demo` or `test` (demo-alice, demo-bob, demo-carol) are approved at once;\n\
         anyone else sees a consent page.\n",
        seed = state.config.seed,
        anchor = state.config.anchor_date,
        epoch = state.world.epoch(),
        client_id = state.config.client_id,
    );
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text)
}

async fn not_found() -> impl IntoResponse {
    (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "No such sandbox endpoint; GET / lists them.\n",
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::SandboxConfig;
    use super::test_support::TestSandbox;

    #[tokio::test]
    async fn the_root_describes_the_endpoints() {
        let sandbox = TestSandbox::start().await;
        for path in ["/", "/meridian"] {
            let response = sandbox.get(path).send().await.expect("request");
            assert_eq!(response.status(), 200);
            let text = response.text().await.expect("body");
            assert!(text.contains("/meridian/v1/transactions"), "{text}");
        }
        let response = sandbox.get("/nowhere").send().await.expect("request");
        assert_eq!(response.status(), 404);
        sandbox.shutdown().await;
    }

    #[tokio::test]
    async fn a_full_link_refresh_and_revoke_is_counted() {
        let sandbox = TestSandbox::start().await;
        let tokens = sandbox
            .link("demo-bob", "accounts holdings transactions")
            .await;
        let access = tokens["access_token"].as_str().expect("access token");
        let refresh = tokens["refresh_token"].as_str().expect("refresh token");
        assert_eq!(tokens["token_type"], "Bearer");
        assert_eq!(tokens["expires_in"], 3600);
        assert_eq!(tokens["scope"], "accounts holdings transactions");

        let accounts = sandbox
            .get("/meridian/v1/accounts")
            .bearer_auth(access)
            .send()
            .await
            .expect("request");
        assert_eq!(accounts.status(), 200);

        let refreshed = sandbox
            .token(&[("grant_type", "refresh_token"), ("refresh_token", refresh)])
            .await;
        assert_eq!(refreshed.status(), 200);
        let refreshed: serde_json::Value = refreshed.json().await.expect("json");
        let new_refresh = refreshed["refresh_token"]
            .as_str()
            .expect("rotated refresh token");

        let revoked = sandbox
            .post("/meridian/oauth/revoke")
            .basic_auth(&sandbox.client_id, Some(&sandbox.client_secret))
            .form(&[("token", new_refresh), ("token_type_hint", "refresh_token")])
            .send()
            .await
            .expect("request");
        assert_eq!(revoked.status(), 200);
        let new_access = refreshed["access_token"].as_str().expect("access token");
        let rejected = sandbox
            .get("/meridian/v1/accounts")
            .bearer_auth(new_access)
            .send()
            .await
            .expect("request");
        assert_eq!(rejected.status(), 401);

        let stats = sandbox.stats();
        assert_eq!(
            (
                stats.authorizations,
                stats.code_exchanges,
                stats.refreshes,
                stats.revocations,
                stats.api_requests
            ),
            (1, 1, 1, 1, 2)
        );
        assert_eq!(stats.refreshes_rejected, 0);
        sandbox.shutdown().await;
    }

    /// The `refresh_token` of a token response.
    fn refresh_token(body: &serde_json::Value) -> String {
        body["refresh_token"]
            .as_str()
            .expect("refresh token")
            .to_owned()
    }

    #[tokio::test]
    async fn a_refresh_inside_the_grace_is_counted_and_every_token_is_recorded() {
        let sandbox = TestSandbox::start_with(SandboxConfig {
            refresh_grace: Duration::from_secs(60),
            ..SandboxConfig::default()
        })
        .await;
        let linked = sandbox.link("demo-alice", "accounts").await;
        let old = refresh_token(&linked);

        let rotated = sandbox.refresh(&old).await;
        assert_eq!(rotated.status(), 200);
        let rotated: serde_json::Value = rotated.json().await.expect("json");
        // The client lost that response and retries with the old token.
        let retried = sandbox.refresh(&old).await;
        assert_eq!(retried.status(), 200);
        let retried: serde_json::Value = retried.json().await.expect("json");
        assert_ne!(retried["refresh_token"], rotated["refresh_token"]);

        let superseded = sandbox.refresh(&refresh_token(&rotated)).await;
        assert_eq!(superseded.status(), 400);
        let body: serde_json::Value = superseded.json().await.expect("json");
        assert_eq!(body["error"], "invalid_grant");
        let accounts = sandbox
            .get("/meridian/v1/accounts")
            .bearer_auth(retried["access_token"].as_str().expect("access token"))
            .send()
            .await
            .expect("request");
        assert_eq!(accounts.status(), 200);

        let stats = sandbox.stats();
        assert_eq!((stats.refreshes, stats.refreshes_rejected), (2, 1));
        let issued: Vec<String> = [&linked, &rotated, &retried]
            .into_iter()
            .flat_map(|body| {
                ["access_token", "refresh_token"]
                    .map(|name| body[name].as_str().expect("token").to_owned())
            })
            .collect();
        assert_eq!(sandbox.issued_tokens(), issued);
        sandbox.shutdown().await;
    }
}
