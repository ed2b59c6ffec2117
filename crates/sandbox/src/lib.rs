//! The sandbox institutions: fake financial institutions served over real HTTP, the way a
//! payment provider ships a sandbox, so finsync can be demonstrated and tested end to end
//! without a real bank.
//!
//! Seven institutions, deliberately unlike each other, each under `/<id>` and each one folder
//! under [`institutions`] that owns its profile (an `InstitutionSpec`: id, name, OAuth
//! rules, data and fault rules, the text `GET /` shows), its data API and its tests:
//! - Meridian Brokerage (`meridian`, `institutions/meridian/`): a modern aggregator-style
//!   API, cursor paging and `/transactions/sync`, JSON numbers, Plaid's sign convention,
//!   rotating refresh tokens, webhooks;
//! - Harbor Savings Bank (`harbor`, `institutions/harbor/`): a retail bank, offset paging,
//!   amounts as strings of cents with money out positive, US dates, `client_secret_post`
//!   only, comma-separated scopes, `expires_in` as a string, no PKCE;
//! - Keystone Trust & Custody (`keystone`, `institutions/keystone/`): a legacy custodian,
//!   RFC 8288 `Link` paging, transactions by date window, 4-decimal strings, securities by
//!   CUSIP and ISIN, a nested token response without `token_type` or `expires_in`, refresh
//!   tokens that never change, a daily quota, a per-second limit and slowness under load;
//! - Northwind Credit Union (`northwind`, `institutions/northwind/`): page-number paging,
//!   JSON numbers, epoch-millisecond dates, a standard OAuth server;
//! - Pinecrest Bank & Trust (`pinecrest`, `institutions/pinecrest/`): the FDX 6 (Core
//!   Exchange) standard: balances, holdings and transactions asked per account, unsigned
//!   amounts beside `debitCreditMemo`, `page.nextOffset` paging, FDX error bodies;
//! - Albion Building Society (`albion`, `institutions/albion/`): UK Open Banking's
//!   Account and Transaction API: balances per account picked by type, signs in
//!   `CreditDebitIndicator`, transactions between booking times paged by `Links.Next`;
//! - Larkspur Data (`larkspur`, `institutions/larkspur/`): a Plaid-shaped aggregator,
//!   `POST` calls with the access token in the body, holdings joined to a `securities`
//!   array, a `/transactions/sync` change feed.
//!
//! The machinery they share asks an institution's spec and never matches on it:
//! - [`oauth`]: each institution's authorization server, built from its OAuth rules, with
//!   one [`grants`] store each (codes, grants, tokens, rotation, revocation);
//! - [`bearer`]: the Bearer check every data API starts with;
//! - [`faults`]: wraps every data API and injects latency, errors, rate limits, outages,
//!   malformed records and schema drift on demand; [`admin`] changes that at run time;
//! - [`data`]: the deterministic data every institution serves, each from its own seed
//!   (`data/epochs` moves it from one epoch to the next);
//! - [`world`]: the world clock, the epoch every institution serves its data at, advanced
//!   through `/sandbox/admin`, on a timer, or by [`Sandbox::advance`], and the cache of
//!   users' data;
//! - [`fapi`]: the interaction id FDX and UK Open Banking institutions echo;
//! - [`changes`]: the change feed of a user's transactions since a cursor, for the
//!   institutions that serve one (Meridian, Larkspur);
//! - [`notify`]: signed webhooks when the data moves, from institutions that send them
//!   (Meridian);
//! - `http`: the one HTTP client (webhooks, tests); `test_support`: test helpers.
//!
//! Beside the institutions, [`fx`] serves a recorded publication of exchange rates in
//! the ECB's format, for reporting currencies.
//!
//! A network fault outside the institutions: [`link`], a TCP link tests and benchmarks
//! cut between finsync and its database.
//!
//! This module owns the configuration, the router and the running-server handle.

mod admin;
mod bearer;
mod changes;
pub mod data;
mod discrepancies;
mod fapi;
mod faults;
mod fx;
mod grants;
mod http;
mod institutions;
pub mod link;
mod notify;
mod oauth;
#[cfg(test)]
mod test_support;
mod world;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::middleware;
use axum::response::IntoResponse;
use axum::routing::get;
use chrono::NaiveDate;
use secrecy::SecretString;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use self::data::Portfolio;
use self::faults::FaultInjector;
pub use self::faults::{Arrival, Drift, Faults, FaultsError, Latency, Outage};
use self::grants::GrantStore;
pub use self::institutions::keystone::KeystoneLimits;
pub use self::institutions::{Institution, UnknownInstitution};
use self::notify::Notifier;
pub use self::notify::SentWebhook;
use self::oauth::AuthServer;
pub use self::oauth::TokenQuirks;
use self::world::World;

/// The default "today" of the data: two days before the first time this process asked
/// (UTC), then the same for the life of the process. Recent, so connectors that read
/// by date from the real clock find the data; fixed per process, so a test's sandbox
/// and its expectations agree.
fn default_anchor_date() -> NaiveDate {
    static ANCHOR: std::sync::OnceLock<NaiveDate> = std::sync::OnceLock::new();
    *ANCHOR.get_or_init(|| {
        let today = chrono::Utc::now().date_naive();
        today
            .checked_sub_days(chrono::Days::new(2))
            .unwrap_or(today)
    })
}

/// An institution that sends no webhooks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} sends no webhooks; only meridian does", .0.name())]
pub struct NoWebhooks(pub Institution);

/// The one OAuth client an institution's authorization server knows.
#[derive(Debug, Clone)]
pub struct ClientCredentials {
    pub client_id: String,
    pub client_secret: SecretString,
}

impl ClientCredentials {
    /// The client `institution` knows unless configured otherwise.
    fn default_of(institution: Institution) -> Self {
        let client = &institution.spec().default_client;
        Self {
            client_id: client.client_id.to_owned(),
            client_secret: SecretString::from(client.client_secret),
        }
    }
}

/// How a sandbox behaves. The same seed and anchor date always yield the same data.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// Seeds every user's data; change it to get a different but equally stable world.
    /// Each institution salts it with its id (Meridian excepted).
    pub seed: u64,
    /// Lifetime of issued access tokens, at every institution; short values let tests
    /// exercise refresh.
    pub access_token_ttl: Duration,
    /// Each institution's OAuth client by institution id; an institution left out keeps
    /// its default client (`finsync-sandbox` / `meridian-sandbox-secret`,
    /// `finsync-harbor` / `harbor-sandbox-secret`, `FINSYNC-KTC-0001` /
    /// `keystone-sandbox-secret`, `finsync-northwind` / `northwind-sandbox-secret`,
    /// `finsync-pinecrest` / `pinecrest-sandbox-secret`, `finsync-albion` /
    /// `albion-sandbox-secret`, `finsync-larkspur` / `larkspur-sandbox-secret`).
    pub clients: BTreeMap<String, ClientCredentials>,
    /// "Today" for the data: transactions fall in the 90 days before it, prices close the
    /// trading day before it. The same anchor (and seed) always yields the same data;
    /// the default is two days before the day the process started (UTC).
    pub anchor_date: NaiveDate,
    /// How long a refresh token rotated out by a refresh is still accepted, at every
    /// institution that rotates them (all but Keystone). Presenting it again inside the
    /// grace rotates again: a fresh pair, and the refresh token issued before is
    /// invalidated; zero rejects it at once with `invalid_grant`. `None`, the default,
    /// leaves each institution its own grace period: none at Meridian, Albion and Larkspur, 60 s at
    /// Harbor, 30 s at Pinecrest, 30 minutes at Northwind.
    pub refresh_grace: Option<Duration>,
    /// Non-standard shapes of Meridian's successful token responses; the default is
    /// standard. The other institutions' shapes are fixed: they are part of who they are.
    pub token_quirks: TokenQuirks,
    /// The epoch the world starts at (see [`data::portfolio_at`]); 0, the default, serves
    /// exactly [`data::portfolio`].
    pub start_epoch: u32,
    /// Advances the world one epoch every period, so data changes on its own; `None`, the
    /// default, or zero leaves it to [`Sandbox::advance`] and `POST /sandbox/admin/advance`.
    pub advance_every: Option<Duration>,
    /// Keystone's quota, rate limit and slowness under load.
    pub keystone: KeystoneLimits,
    /// Faults injected into each institution's data API from the start, by institution
    /// id; `PUT /sandbox/admin/faults/{institution}` changes them at run time.
    pub faults: BTreeMap<String, Faults>,
    /// Where institutions that send webhooks (Meridian) send them, by institution id;
    /// `PUT /sandbox/admin/webhooks/{institution}` changes it at run time.
    pub webhook_urls: BTreeMap<String, String>,
    /// The secret Meridian signs its webhooks with; public, like the client secrets.
    pub webhook_secret: SecretString,
    /// How many records (accounts, holdings, transactions) of the users' data served
    /// recently are kept, so that the next request of the same user is answered
    /// without generating it again, as an institution serves from storage. The
    /// default, 100,000, bounds what arbitrary login hints can make it hold to some
    /// tens of MiB; `finsync-bench sync` makes room for all of its users.
    pub cached_records: usize,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        Self {
            seed: 42,
            access_token_ttl: Duration::from_secs(3600),
            clients: Institution::ALL
                .into_iter()
                .map(|institution| {
                    (
                        institution.id().to_owned(),
                        ClientCredentials::default_of(institution),
                    )
                })
                .collect(),
            anchor_date: default_anchor_date(),
            refresh_grace: None,
            token_quirks: TokenQuirks::default(),
            start_epoch: 0,
            advance_every: None,
            keystone: KeystoneLimits::default(),
            faults: BTreeMap::new(),
            webhook_urls: BTreeMap::new(),
            webhook_secret: SecretString::from("meridian-webhook-secret"),
            cached_records: world::CACHED_RECORDS,
        }
    }
}

impl SandboxConfig {
    /// The OAuth client `institution` knows.
    pub fn client(&self, institution: Institution) -> ClientCredentials {
        self.clients
            .get(institution.id())
            .cloned()
            .unwrap_or_else(|| ClientCredentials::default_of(institution))
    }
}

/// Counters of what the sandbox has been asked to do, across every institution, for tests
/// that assert traffic.
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
    /// Data API requests that reached an institution's handler (past injected faults and
    /// Keystone's limits), counted before authentication, so rejected ones count too.
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
#[derive(Debug)]
struct AppState {
    config: SandboxConfig,
    stats: Arc<Stats>,
    /// Each institution's authorization server, indexed by [`Institution`].
    servers: [Arc<AuthServer>; Institution::ALL.len()],
    /// Each institution's fault injector, indexed by [`Institution`].
    faults: [Arc<FaultInjector>; Institution::ALL.len()],
    /// Each institution's webhooks, indexed by [`Institution`]; `None` where its spec sends
    /// none (all but Meridian).
    notifiers: [Option<Arc<Notifier>>; Institution::ALL.len()],
    world: Arc<World>,
    /// Where clients reach an institution's API when a gateway or proxy fronts it, by
    /// [`Institution`]; the links an institution writes into its answers start there.
    public_bases: std::sync::RwLock<[Option<String>; Institution::ALL.len()]>,
}

impl AppState {
    /// Where clients reach `institution`'s API, if a gateway fronts it.
    fn public_base(&self, institution: Institution) -> Option<String> {
        self.public_bases
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)[institution as usize]
            .clone()
    }

    /// The one way every institution reads a user's data: `institution`'s view of the
    /// seeded world, its ids and names in the institution's own brand.
    fn portfolio(&self, institution: Institution, user_id: &str) -> Portfolio {
        let state = self.world.state(
            institution.seed(self.config.seed),
            user_id,
            self.world.epoch(),
        );
        institutions::rebrand(state.portfolio().clone(), institution)
    }

    fn grants(&self, institution: Institution) -> &GrantStore {
        &self.servers[institution as usize].grants
    }

    fn faults(&self, institution: Institution) -> &FaultInjector {
        &self.faults[institution as usize]
    }

    fn notifier(&self, institution: Institution) -> Option<Arc<Notifier>> {
        self.notifiers[institution as usize].clone()
    }
}

/// The data `institution` serves `user_id` at `epoch` in a sandbox seeded with `seed`:
/// what a sandbox in another process serves, for tests that compare with it.
pub fn institution_portfolio(
    seed: u64,
    anchor_date: NaiveDate,
    institution: Institution,
    user_id: &str,
    epoch: u32,
) -> Portfolio {
    institutions::rebrand(
        data::portfolio_at(institution.seed(seed), anchor_date, user_id, epoch),
        institution,
    )
}

/// A running sandbox. Dropping it stops the server too; [`Sandbox::shutdown`] also waits.
#[derive(Debug)]
pub struct Sandbox {
    addr: SocketAddr,
    state: Arc<AppState>,
    /// Dropping or firing this starts a graceful shutdown.
    stop: oneshot::Sender<()>,
    server: JoinHandle<()>,
}

impl Sandbox {
    /// Base URL to prefix paths with, e.g. `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Where this sandbox serves its recorded exchange rates (the ECB's format).
    pub fn fx_url(&self) -> String {
        format!("{}{}", self.base_url(), fx::ECB_DAILY_PATH)
    }

    /// The base URL `institution`'s connector joins its paths to on this sandbox.
    pub fn api_base(&self, institution: Institution) -> String {
        format!("{}{}", self.base_url(), institution.api_root())
    }

    pub fn stats(&self) -> SandboxStats {
        self.state.stats.snapshot()
    }

    /// Every access and refresh token this sandbox ever issued, whether still valid or
    /// not, and the consent ids it handed out with them, for tests that prove no token
    /// leaks: institution by institution, each in issue order. The list only grows.
    pub fn issued_tokens(&self) -> Vec<String> {
        self.state
            .servers
            .iter()
            .flat_map(|server| {
                let consents = if server.profile.consent_ids {
                    server.grants.issued_consents()
                } else {
                    Vec::new()
                };
                server.grants.issued_tokens().into_iter().chain(consents)
            })
            .collect()
    }

    /// The data `institution` serves to `user_id`, for tests that compare what a client
    /// stored with what the institution holds.
    pub fn portfolio(&self, institution: Institution, user_id: &str) -> Portfolio {
        self.state.portfolio(institution, user_id)
    }

    /// Makes up `users`' data at `institution`, at the epoch served now, and keeps
    /// it: a real institution has its customers' data stored before any client
    /// asks, so a bench timing the first syncs should not pay for the sandbox
    /// generating it. [`SandboxConfig::cached_records`] must hold all of it: the
    /// oldest-first eviction would drop each user just before it is asked for.
    /// Runs on the calling thread, about a millisecond per thousand records.
    pub fn prepare(&self, institution: Institution, users: &[String]) {
        let seed = institution.seed(self.state.config.seed);
        let epoch = self.state.world.epoch();
        for user in users {
            self.state.world.state(seed, user, epoch);
        }
    }

    /// The faults now injected into `institution`'s data API.
    pub fn faults(&self, institution: Institution) -> Faults {
        self.state.faults(institution).get()
    }

    /// The data API requests that reached `institution` (the latest ten thousand),
    /// oldest first, with when they arrived and how they were answered.
    pub fn arrivals(&self, institution: Institution) -> Vec<Arrival> {
        self.state.faults(institution).arrivals()
    }

    /// How many data API requests `institution` answered `429 Too Many Requests`.
    pub fn throttled(&self, institution: Institution) -> u64 {
        self.state.faults(institution).throttled()
    }

    /// Replaces `institution`'s faults (an outage `for_secs` starts now) and returns them
    /// as applied.
    pub fn set_faults(
        &self,
        institution: Institution,
        faults: Faults,
    ) -> Result<Faults, FaultsError> {
        self.state.faults(institution).set(faults)
    }

    /// Revokes every grant at `institution`, as if each user withdrew consent; returns how
    /// many there were.
    pub fn revoke_grants(&self, institution: Institution) -> usize {
        self.state.grants(institution).revoke_all()
    }

    /// Expires every access token `institution` issued; refresh tokens stay valid.
    /// Returns how many expired.
    pub fn expire_tokens(&self, institution: Institution) -> usize {
        self.state
            .grants(institution)
            .expire_access_tokens(Instant::now())
    }

    /// The epoch every institution serves its data at now.
    pub fn epoch(&self) -> u32 {
        self.state.world.epoch()
    }

    /// Moves every institution's data one epoch on and returns the new epoch.
    pub fn advance(&self) -> u32 {
        self.state.world.advance()
    }

    /// Registers (or with `None`, removes) the URL `institution` sends its webhooks
    /// to; only Meridian sends any.
    pub fn set_webhook_url(
        &self,
        institution: Institution,
        url: Option<String>,
    ) -> Result<(), NoWebhooks> {
        let notifier = self
            .state
            .notifier(institution)
            .ok_or(NoWebhooks(institution))?;
        notifier.set_url(url);
        Ok(())
    }

    /// Says that clients reach `institution`'s API at `base` (a gateway or a
    /// validating proxy in front of it), so that links in its answers (UK Open
    /// Banking's `Links.Next`) point there; `None`: at the address a request came to.
    pub fn set_public_base(&self, institution: Institution, base: Option<String>) {
        self.state
            .public_bases
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)[institution as usize] = base;
    }

    /// The webhooks `institution` sent (the latest two hundred), oldest first.
    pub fn webhooks_sent(&self, institution: Institution) -> Vec<SentWebhook> {
        self.state
            .notifier(institution)
            .map(|n| n.sent())
            .unwrap_or_default()
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
        config.cached_records,
    ));
    let (router, state) = build(config, Arc::clone(&world));
    let (stop, stopped) = oneshot::channel::<()>();
    let clock = Arc::clone(&world);
    let notifying = notify::run(Arc::clone(&state), world.subscribe());
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
        // The clock and the webhooks never finish; they stop with the server.
        tokio::select! {
            () = serve => {}
            () = ticking => {}
            () = notifying => {}
        }
    });
    tracing::info!(%addr, "Sandbox listening.");
    Ok(Sandbox {
        addr,
        state,
        stop,
        server,
    })
}

fn build(config: SandboxConfig, world: Arc<World>) -> (Router, Arc<AppState>) {
    let stats = Arc::new(Stats::default());
    for id in config.faults.keys() {
        if id.parse::<Institution>().is_err() {
            tracing::warn!(institution = %id, "Faults configured for an unknown sandbox institution are ignored.");
        }
    }
    let faults = Institution::ALL.map(|institution| {
        let initial = config
            .faults
            .get(institution.id())
            .cloned()
            .unwrap_or_default();
        Arc::new(FaultInjector::new(institution, config.seed, initial))
    });
    let servers = Institution::ALL.map(|institution| {
        Arc::new(AuthServer::new(
            &config,
            institution,
            Arc::clone(&stats),
            Arc::clone(&faults[institution as usize]),
        ))
    });
    for id in config.webhook_urls.keys() {
        let sends = id
            .parse::<Institution>()
            .is_ok_and(|i| i.spec().sends_webhooks);
        if !sends {
            tracing::warn!(institution = %id, "Only meridian sends webhooks; this URL is ignored.");
        }
    }
    let notifiers = Institution::ALL.map(|institution| {
        institution.spec().sends_webhooks.then(|| {
            Arc::new(Notifier::new(
                config.webhook_secret.clone(),
                config.webhook_urls.get(institution.id()).cloned(),
            ))
        })
    });
    let state = Arc::new(AppState {
        config,
        stats,
        servers,
        faults,
        notifiers,
        world,
        public_bases: std::sync::RwLock::default(),
    });
    let mut router = Router::new().route("/", get(describe));
    for institution in Institution::ALL {
        // Faults wrap each institution's data API from outside, Meridian's untouched routes too.
        let data_api = (institution.spec().routes)(&state).layer(middleware::from_fn_with_state(
            Arc::clone(&state.faults[institution as usize]),
            faults::inject,
        ));
        router = router.merge(data_api);
    }
    let mut router = router
        .merge(admin::routes())
        .merge(notify::routes())
        .merge(fx::routes())
        .merge(world::routes());
    for server in &state.servers {
        router = router
            .route(&format!("/{}", server.profile.institution), get(describe))
            .merge(oauth::routes(Arc::clone(server)));
    }
    let router = router.fallback(not_found).with_state(Arc::clone(&state));
    (router, state)
}

async fn describe(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    let config = &state.config;
    let mut text = format!(
        "finsync sandbox institutions\n\
         \n\
         Fake financial institutions with real protocols and deterministic data (seed {seed}, as of {anchor}).\n\
         Every institution has its own OAuth2 server under /<id>/oauth/ (authorize, token, RFC 7009 revoke)\n\
         and its own client; secrets come from the sandbox configuration.\n\
         Users whose login_hint starts with `demo` or `test` (demo-alice, demo-bob, demo-carol) are approved at once;\n\
         anyone else sees a consent page. Each institution seeds its own data: a user differs from one to the next.\n\
         The data moves in epochs (now {epoch}): each one posts pending transactions under new ids, adds, changes\n\
         and removes a few, and moves prices; epoch 3 splits a stock 2-for-1. Every institution serves the current epoch.\n\
         \n\
         World clock (no authentication: this is a sandbox, anyone who can reach it can move its time)\n\
         \x20 GET  /sandbox/admin/world        {{\"epoch\", \"seed\", \"anchor_date\"}}\n\
         \x20 POST /sandbox/admin/advance      moves every institution one epoch on; answers {{\"epoch\"}}\n\
         \n",
        seed = config.seed,
        anchor = config.anchor_date,
        epoch = state.world.epoch(),
    );
    for institution in Institution::ALL {
        text.push_str(&(institution.spec().describe)(config));
        text.push('\n');
    }
    text.push_str(
        "Fault injection (no authentication: this is a sandbox, never expose it)\n\
         \x20 GET  /sandbox/admin/faults/<id>           the faults injected into an institution's data API\n\
         \x20 PUT  /sandbox/admin/faults/<id>           replace them: {\"latency\": {\"min_ms\": 0, \"max_ms\": 50},\n\
         \x20   \"error_rate\": 0.1, \"rate_limit_rate\": 0.1, \"retry_after_secs\": 1, \"outage\": {\"for_secs\": 30},\n\
         \x20   \"requests_per_second\": 50 (the institution's own limit: 429 beyond it),\n\
         \x20   \"malformed_rate\": 0.1, \"drift\": {\"from\": \"amount\", \"to\": \"amt\"},\n\
         \x20   \"token_delay_ms\": 5000 (the token endpoint holds its answer back after doing its work)}\n\
         \x20 POST /sandbox/admin/<id>/revoke-grants    revoke every grant\n\
         \x20 POST /sandbox/admin/<id>/expire-tokens    expire every access token now\n\
         \x20 PUT  /sandbox/admin/webhooks/meridian     where Meridian sends webhooks: {\"url\": \"http://...\"}; DELETE stops them\n\
         \x20 GET  /sandbox/admin/webhooks/meridian     the URL and the events sent\n\
         \x20 POST /sandbox/admin/webhooks/meridian/fire  send one now: {\"user\": \"demo-alice\", \"code\": \"...\", \"repeat\": 1}\n",
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
        for path in [
            "/",
            "/meridian",
            "/harbor",
            "/keystone",
            "/northwind",
            "/pinecrest",
        ] {
            let response = sandbox.get(path).send().await.expect("request");
            assert_eq!(response.status(), 200);
            let text = response.text().await.expect("body");
            for endpoint in [
                "/meridian/v1/transactions",
                "/harbor/api/transactions",
                "/keystone/v2/transactions",
                "/northwind/v1/transactions",
                "/pinecrest/accounts/{accountId}/transactions",
                "/albion/open-banking/v3.1/aisp/accounts/{AccountId}/balances",
                "/larkspur/transactions/sync",
                "/sandbox/admin/faults/",
                "FINSYNC-KTC-0001",
            ] {
                assert!(text.contains(endpoint), "{endpoint} in {text}");
            }
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
            refresh_grace: Some(Duration::from_secs(60)),
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
