//! The sandbox institutions: fake financial institutions served over real HTTP, the way a
//! payment provider ships a sandbox, so finsync can be demonstrated and tested end to end
//! without a real bank.
//!
//! Four institutions, deliberately unlike each other, each under `/<id>`:
//! - Meridian Brokerage (`meridian`, [`meridian`]): a modern aggregator-style API, cursor
//!   paging, JSON numbers, Plaid's sign convention, rotating refresh tokens;
//! - Harbor Savings Bank (`harbor`, [`harbor`]): a retail bank, offset paging, amounts as
//!   strings of cents with money out positive, US dates, `client_secret_post` only,
//!   comma-separated scopes, `expires_in` as a string, no PKCE;
//! - Keystone Trust & Custody (`keystone`, [`keystone`]): a legacy custodian, RFC 8288
//!   `Link` paging, transactions by date window, 4-decimal strings, securities by CUSIP and
//!   ISIN, a nested token response without `token_type` or `expires_in`, refresh tokens
//!   that never change, a daily quota, a per-second limit and slowness under load;
//! - Northwind Credit Union (`northwind`, [`northwind`]): page-number paging, JSON numbers,
//!   epoch-millisecond dates, a standard OAuth server.
//! - the world clock ([`world`]): the epoch every institution serves its data at, advanced
//!   through `/sandbox/admin`, on a timer, or by [`Sandbox::advance`]; [`data`] yields each
//!   user's data at every epoch.
//!
//! Every institution has its own authorization server ([`oauth`], one [`grants`] store
//! each), and every data API sits behind [`faults`], which injects latency, errors, rate
//! limits, outages, malformed records and schema drift on demand; [`admin`] changes that
//! at run time. [`data`] generates the deterministic data every institution serves, each
//! from its own seed. Meridian also sends signed webhooks when the data moves
//! ([`notify`]).
//!
//! A network fault outside the institutions: [`link`], a TCP link tests and benchmarks
//! cut between finsync and its database.
//!
//! This module owns the configuration, the institutions' identities, the router and the
//! running-server handle.

mod admin;
mod bearer;
pub mod data;
mod faults;
mod grants;
mod harbor;
mod http;
mod keystone;
pub mod link;
mod meridian;
mod northwind;
mod notify;
mod oauth;
#[cfg(test)]
mod test_support;
mod world;

use std::collections::BTreeMap;
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
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
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use self::data::Portfolio;
use self::faults::FaultInjector;
pub use self::faults::{Arrival, Drift, Faults, FaultsError, Latency, Outage};
use self::grants::{GrantPolicy, GrantStore, Rotation, Scope, ScopeSet};
pub use self::keystone::KeystoneLimits;
use self::notify::Notifier;
pub use self::notify::SentWebhook;
pub use self::oauth::TokenQuirks;
use self::oauth::{AuthServer, ClientAuth, Profile};
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

/// One of the sandbox's institutions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Institution {
    Meridian,
    Harbor,
    Keystone,
    Northwind,
}

impl Institution {
    /// Every institution, in the order the sandbox lists them.
    pub const ALL: [Self; 4] = [
        Self::Meridian,
        Self::Harbor,
        Self::Keystone,
        Self::Northwind,
    ];

    /// The institution id: its path prefix and its connector file's stem.
    pub fn id(self) -> &'static str {
        match self {
            Self::Meridian => "meridian",
            Self::Harbor => "harbor",
            Self::Keystone => "keystone",
            Self::Northwind => "northwind",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Meridian => "Meridian Brokerage",
            Self::Harbor => "Harbor Savings Bank",
            Self::Keystone => "Keystone Trust & Custody",
            Self::Northwind => "Northwind Credit Union",
        }
    }

    /// Starts the institution's record ids, codes and tokens (`mer_acc_…`, `mer_at_…`).
    fn prefix(self) -> &'static str {
        match self {
            Self::Meridian => "mer_",
            Self::Harbor => "hsb_",
            Self::Keystone => "ktc_",
            Self::Northwind => "nwcu_",
        }
    }

    /// The OAuth client the institution knows unless configured otherwise. The secrets
    /// are public, like a payment provider's test keys.
    fn default_client(self) -> ClientCredentials {
        let (client_id, secret) = match self {
            Self::Meridian => ("finsync-sandbox", "meridian-sandbox-secret"),
            Self::Harbor => ("finsync-harbor", "harbor-sandbox-secret"),
            Self::Keystone => ("FINSYNC-KTC-0001", "keystone-sandbox-secret"),
            Self::Northwind => ("finsync-northwind", "northwind-sandbox-secret"),
        };
        ClientCredentials {
            client_id: client_id.to_owned(),
            client_secret: SecretString::from(secret),
        }
    }

    /// Seeds this institution's data: Meridian takes the configured seed as it is, so its
    /// data stays what it always was; the others salt it, so a user has different
    /// accounts at each institution.
    fn seed(self, seed: u64) -> u64 {
        if self == Self::Meridian {
            return seed;
        }
        let digest = Sha256::digest(self.id().as_bytes());
        let mut salt = [0u8; 8];
        salt.copy_from_slice(&digest[..8]);
        seed ^ u64::from_le_bytes(salt)
    }
}

impl fmt::Display for Institution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id())
    }
}

/// An id that names no sandbox institution.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no sandbox institution {0:?}; they are meridian, harbor, keystone and northwind")]
pub struct UnknownInstitution(pub String);

impl FromStr for Institution {
    type Err = UnknownInstitution;

    fn from_str(id: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|institution| institution.id() == id)
            .ok_or_else(|| UnknownInstitution(id.to_owned()))
    }
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
    /// `keystone-sandbox-secret`, `finsync-northwind` / `northwind-sandbox-secret`).
    pub clients: BTreeMap<String, ClientCredentials>,
    /// "Today" for the data: transactions fall in the 90 days before it, prices close the
    /// trading day before it. The same anchor (and seed) always yields the same data;
    /// the default is two days before the day the process started (UTC).
    pub anchor_date: NaiveDate,
    /// How long a refresh token rotated out by a refresh is still accepted, at the
    /// institutions that rotate them (all but Keystone). Presenting it again inside the
    /// grace rotates again: a fresh pair, and the refresh token issued before is
    /// invalidated. Zero, the default, rejects it at once with `invalid_grant`.
    pub refresh_grace: Duration,
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
                .map(|institution| (institution.id().to_owned(), institution.default_client()))
                .collect(),
            anchor_date: default_anchor_date(),
            refresh_grace: Duration::ZERO,
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
            .unwrap_or_else(|| institution.default_client())
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
    servers: [Arc<AuthServer>; 4],
    /// Each institution's fault injector, indexed by [`Institution`].
    faults: [Arc<FaultInjector>; 4],
    /// Each institution's webhooks, indexed by [`Institution`]; only Meridian sends any.
    notifiers: [Option<Arc<Notifier>>; 4],
    world: Arc<World>,
}

impl AppState {
    /// The one way every institution reads a user's data: `institution`'s view of the
    /// seeded world, its ids and names in the institution's own brand.
    fn portfolio(&self, institution: Institution, user_id: &str) -> Portfolio {
        let state = self.world.state(
            institution.seed(self.config.seed),
            user_id,
            self.world.epoch(),
        );
        rebrand(state.portfolio().clone(), institution)
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
    rebrand(
        data::portfolio_at(institution.seed(seed), anchor_date, user_id, epoch),
        institution,
    )
}

/// Renames Meridian's ids and names to `institution`'s: the generator speaks Meridian.
fn rebrand(mut portfolio: Portfolio, institution: Institution) -> Portfolio {
    if institution == Institution::Meridian {
        return portfolio;
    }
    let id = |text: &mut String| {
        if let Some(rest) = text.strip_prefix(Institution::Meridian.prefix()) {
            *text = format!("{}{rest}", institution.prefix());
        }
    };
    let name = |text: &mut String| {
        *text = text
            .replace("Meridian", institution.name())
            .replace("MERIDIAN", &institution.name().to_uppercase());
    };
    for account in &mut portfolio.accounts {
        id(&mut account.account_id);
        name(&mut account.official_name);
    }
    for holding in &mut portfolio.holdings {
        id(&mut holding.account_id);
        id(&mut holding.security.security_id);
        name(&mut holding.security.name);
    }
    for transaction in &mut portfolio.transactions {
        id(&mut transaction.transaction_id);
        id(&mut transaction.account_id);
        if let Some(pending) = &mut transaction.pending_transaction_id {
            id(pending);
        }
        if let Some(security) = &mut transaction.security_id {
            id(security);
        }
        name(&mut transaction.name);
    }
    portfolio
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

    pub fn stats(&self) -> SandboxStats {
        self.state.stats.snapshot()
    }

    /// Every access and refresh token this sandbox ever issued, whether still valid or
    /// not, for tests that prove no token leaks: institution by institution, each in
    /// issue order. The list only grows.
    pub fn issued_tokens(&self) -> Vec<String> {
        self.state
            .servers
            .iter()
            .flat_map(|server| server.grants.issued_tokens())
            .collect()
    }

    /// The data `institution` serves to `user_id`, for tests that compare what a client
    /// stored with what the institution holds.
    pub fn portfolio(&self, institution: Institution, user_id: &str) -> Portfolio {
        self.state.portfolio(institution, user_id)
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

/// Each institution's authorization server profile: how its OAuth deviates.
fn profile(config: &SandboxConfig, institution: Institution) -> (Profile, Rotation) {
    let ClientCredentials {
        client_id,
        client_secret,
    } = config.client(institution);
    let rotate = Rotation::Rotate {
        grace: config.refresh_grace,
    };
    let everything = ScopeSet::all();
    let (client_auth, scopes, scope_separator, pkce_required, token_quirks, rotation) =
        match institution {
            Institution::Meridian => (
                ClientAuth::Either,
                everything,
                ' ',
                true,
                config.token_quirks,
                rotate,
            ),
            Institution::Harbor => (
                ClientAuth::PostOnly,
                ScopeSet::of(&[Scope::Accounts, Scope::Transactions]),
                ',',
                false,
                TokenQuirks {
                    expires_in_as_string: true,
                    ..TokenQuirks::default()
                },
                rotate,
            ),
            Institution::Keystone => (
                ClientAuth::BasicOnly,
                everything,
                ' ',
                true,
                TokenQuirks {
                    nested_under: Some("result"),
                    omit_expires_in: true,
                    omit_token_type: true,
                    ..TokenQuirks::default()
                },
                Rotation::Keep,
            ),
            Institution::Northwind => (
                ClientAuth::Either,
                ScopeSet::of(&[Scope::Accounts, Scope::Transactions]),
                ' ',
                true,
                TokenQuirks::default(),
                rotate,
            ),
        };
    let profile = Profile {
        institution: institution.id(),
        name: institution.name(),
        client_id,
        client_secret,
        client_auth,
        scopes,
        scope_separator,
        pkce_required,
        token_quirks,
    };
    (profile, rotation)
}

fn build(config: SandboxConfig, world: Arc<World>) -> (Router, Arc<AppState>) {
    let stats = Arc::new(Stats::default());
    for id in config.faults.keys() {
        if id.parse::<Institution>().is_err() {
            tracing::warn!(institution = %id, "Faults configured for an unknown sandbox institution are ignored.");
        }
    }
    let servers = Institution::ALL.map(|institution| {
        let (profile, rotation) = profile(&config, institution);
        Arc::new(AuthServer {
            profile,
            grants: GrantStore::new(GrantPolicy {
                token_prefix: institution.prefix(),
                access_token_ttl: config.access_token_ttl,
                rotation,
            }),
            stats: Arc::clone(&stats),
        })
    });
    let faults = Institution::ALL.map(|institution| {
        let initial = config
            .faults
            .get(institution.id())
            .cloned()
            .unwrap_or_default();
        Arc::new(FaultInjector::new(institution, config.seed, initial))
    });
    for id in config.webhook_urls.keys() {
        if id.parse::<Institution>() != Ok(Institution::Meridian) {
            tracing::warn!(institution = %id, "Only meridian sends webhooks; this URL is ignored.");
        }
    }
    let notifiers = Institution::ALL.map(|institution| {
        (institution == Institution::Meridian).then(|| {
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
    });
    // Faults wrap each institution's data API from outside, Meridian's untouched routes too.
    let data_api = |institution: Institution, routes: Router<Arc<AppState>>| {
        routes.layer(middleware::from_fn_with_state(
            Arc::clone(&state.faults[institution as usize]),
            faults::inject,
        ))
    };
    let mut router = Router::new()
        .route("/", get(describe))
        .merge(data_api(Institution::Meridian, meridian::routes()))
        .merge(data_api(Institution::Harbor, harbor::routes()))
        .merge(data_api(
            Institution::Keystone,
            keystone::routes(Arc::clone(&state)),
        ))
        .merge(data_api(Institution::Northwind, northwind::routes()))
        .merge(admin::routes())
        .merge(notify::routes())
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
    let client = |institution| config.client(institution).client_id;
    let keystone = &config.keystone;
    let text = format!(
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
         \n\
         Meridian Brokerage (institution id `meridian`, client `{meridian}`)\n\
         \x20 OAuth: PKCE S256 required, Basic or body client authentication, space-separated scopes\n\
         \x20   accounts holdings transactions, refresh tokens rotate.\n\
         \x20 GET  /meridian/v1/accounts        scope `accounts`\n\
         \x20 GET  /meridian/v1/holdings        scope `holdings`\n\
         \x20 GET  /meridian/v1/transactions    scope `transactions`\n\
         \x20 GET  /meridian/v1/transactions/sync  scope `transactions`: {{\"added\", \"modified\", \"removed\", \"next_cursor\", \"has_more\"}}\n\
         \x20      since `cursor` (none: everything); 409 sync_mutation_during_pagination if the epoch moved mid-paging\n\
         \x20 Bearer token; pages by `cursor` and `count` (1..=500, default 50): {{\"<endpoint>\": [...], \"next_cursor\": ...}}.\n\
         \x20 Amounts are JSON numbers; a positive transaction amount is money out of the account.\n\
         \x20 Webhooks: each new epoch, a SYNC_UPDATES_AVAILABLE event per linked user to the registered URL,\n\
         \x20   signed HMAC-SHA256 over \"<Meridian-Timestamp>.<body>\" as `Meridian-Signature: v1=<hex>`\n\
         \x20   (secret `meridian-webhook-secret` unless configured); retried on 5xx, same `webhook_id`.\n\
         \n\
         Harbor Savings Bank (institution id `harbor`, client `{harbor}`), a retail bank\n\
         \x20 OAuth: client_secret_post only (HTTP Basic is refused), comma-separated scopes `accounts,transactions`,\n\
         \x20   no PKCE, `expires_in` sent as a string, refresh tokens rotate.\n\
         \x20 GET  /harbor/api/accounts         scope `accounts`: checking (CHK) and savings (SAV) accounts\n\
         \x20 GET  /harbor/api/transactions     scope `transactions`\n\
         \x20 Pages by `offset` and `limit` (1..=100, default 25): {{\"data\": [...], \"total\": N}}.\n\
         \x20 Amounts and balances are strings of integer cents; a positive amount is money out (a debit).\n\
         \x20 Dates are MM/DD/YYYY; `status` is PENDING or POSTED, `replaces_pending_id` names the pending one.\n\
         \n\
         Keystone Trust & Custody (institution id `keystone`, client `{keystone_client}`), a legacy custodian\n\
         \x20 OAuth: client_secret_basic only, PKCE S256 required, token responses nested under `result` without\n\
         \x20   `token_type` or `expires_in`, refresh tokens never change.\n\
         \x20 GET  /keystone/v2/accounts        scope `accounts`\n\
         \x20 GET  /keystone/v2/positions       scope `holdings`: securities by CUSIP and ISIN, tickers for listed ones only\n\
         \x20 GET  /keystone/v2/transactions    scope `transactions`; `from` and `to` (YYYY-MM-DD, inclusive, at most\n\
         \x20   31 days apart) are required\n\
         \x20 Pages by RFC 8288 `Link: <...>; rel=\"next\"` headers, `page_size` 1..=200 (default 50): {{\"records\": [...]}}.\n\
         \x20 Money is a string with 4 decimals; a positive amount is money in. Trade dates are YYYY-MM-DD,\n\
         \x20   settlement times epoch seconds.\n\
         \x20 Limits: {quota} requests a day (429 until UTC midnight), {per_second} a second (429, Retry-After: 1);\n\
         \x20   beyond {slow_after} requests in flight each one adds {latency} ms to every request.\n\
         \n\
         Northwind Credit Union (institution id `northwind`, client `{northwind}`)\n\
         \x20 OAuth: standard; PKCE S256 required, space-separated scopes `accounts transactions`, refresh tokens rotate.\n\
         \x20 GET  /northwind/v1/accounts       scope `accounts`\n\
         \x20 GET  /northwind/v1/transactions   scope `transactions`\n\
         \x20 Pages by `page` (from 1) and `per_page` (1..=100, default 25): {{\"items\": [...], \"page\": 1, \"total_pages\": 3}}.\n\
         \x20 Amounts are JSON numbers, a positive amount is money in; times are epoch milliseconds.\n\
         \n\
         Fault injection (no authentication: this is a sandbox, never expose it)\n\
         \x20 GET  /sandbox/admin/faults/<id>           the faults injected into an institution's data API\n\
         \x20 PUT  /sandbox/admin/faults/<id>           replace them: {{\"latency\": {{\"min_ms\": 0, \"max_ms\": 50}},\n\
         \x20   \"error_rate\": 0.1, \"rate_limit_rate\": 0.1, \"retry_after_secs\": 1, \"outage\": {{\"for_secs\": 30}},\n\
         \x20   \"requests_per_second\": 50 (the institution's own limit: 429 beyond it),\n\
         \x20   \"malformed_rate\": 0.1, \"drift\": {{\"from\": \"amount\", \"to\": \"amt\"}}}}\n\
         \x20 POST /sandbox/admin/<id>/revoke-grants    revoke every grant\n\
         \x20 POST /sandbox/admin/<id>/expire-tokens    expire every access token now\n\
         \x20 PUT  /sandbox/admin/webhooks/meridian     where Meridian sends webhooks: {{\"url\": \"http://...\"}}; DELETE stops them\n\
         \x20 GET  /sandbox/admin/webhooks/meridian     the URL and the events sent\n\
         \x20 POST /sandbox/admin/webhooks/meridian/fire  send one now: {{\"user\": \"demo-alice\", \"code\": \"...\", \"repeat\": 1}}\n",
        seed = config.seed,
        anchor = config.anchor_date,
        epoch = state.world.epoch(),
        meridian = client(Institution::Meridian),
        harbor = client(Institution::Harbor),
        keystone_client = client(Institution::Keystone),
        northwind = client(Institution::Northwind),
        quota = keystone.daily_quota,
        per_second = keystone.per_second,
        slow_after = keystone.slow_after_in_flight,
        latency = keystone.latency_per_extra_request.as_millis(),
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
        for path in ["/", "/meridian", "/harbor", "/keystone", "/northwind"] {
            let response = sandbox.get(path).send().await.expect("request");
            assert_eq!(response.status(), 200);
            let text = response.text().await.expect("body");
            for endpoint in [
                "/meridian/v1/transactions",
                "/harbor/api/transactions",
                "/keystone/v2/transactions",
                "/northwind/v1/transactions",
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
