//! The portfolio read model: everything an advisory app sees for one user, across
//! all their connections, with how fresh it is. Built from the store ([`build`]),
//! cached as gzip-compressed JSON ([`stored`]; moka → Redis), and rebuilt after
//! every change so readers rarely touch the database. The user's [`positions`]
//! (holdings summed per instrument of the securities master, optionally
//! [`in_currency`]) are derived from it, and a [`household`]'s from its members'
//! together.

mod build;
mod positions;
pub mod stored;
mod views;

use std::sync::Arc;

use chrono::{DateTime, Utc};

pub use build::{build, connection_views};
pub use positions::{
    HouseholdPositions, Position, PositionAllocation, PositionHolding, PositionInCurrency,
    Positions, RateUsed, Reporting, Share, in_currency, positions,
};
pub use views::{
    AccountShare, AccountSync, AccountView, Allocation, BalancesView, ConnectionView, FindingView,
    Freshness, HoldingView, IdentifierIssueView, InstrumentView, Portfolio, SecurityTypeShare,
    SecurityView, SplitView, StaleReason, TransactionView,
};

use crate::cache::{Cache, Hit};
use crate::domain::{ConnectionId, HouseholdId, TenantId, UserId};
use crate::store::{ConnectionRecord, Store, StoreError};
use stored::StoredError;

/// The cache key of a user's portfolio. The version names the view's shape, so a
/// deploy that changes it never reads views cached by the previous release.
pub fn cache_key(tenant: TenantId, user: &UserId) -> String {
    format!("portfolio:v10:{tenant}:{user}")
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("no such user")]
    NoSuchUser,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cached portfolio: {0}")]
    Stored(#[from] StoredError),
}

/// A portfolio as the cache holds it: serialized, ready to send as it is.
pub struct CachedPortfolio {
    /// The view as [`stored`] keeps it: gzip-compressed JSON.
    pub gzip: Arc<Vec<u8>>,
    pub hit: Hit,
    /// The shared cache is unavailable; the answer must say so.
    pub degraded: bool,
    /// The database is unreachable (the view came from a cache); the answer must
    /// say so.
    pub store_unavailable: bool,
}

impl CachedPortfolio {
    /// Whether the cached bytes need a notice before they are sent.
    pub fn needs_notice(&self) -> bool {
        self.degraded || self.store_unavailable
    }

    /// The portfolio itself, with the notices applied.
    pub fn parse(&self) -> Result<Portfolio, StoredError> {
        let mut portfolio = stored::decode(&self.gzip)?;
        if self.store_unavailable {
            portfolio.freshness.mark_store_unavailable();
        } else if self.degraded {
            portfolio.freshness.mark_cache_degraded();
        }
        Ok(portfolio)
    }
}

/// Reads the portfolio: cache first, then the database (filling the cache).
/// `None` when the tenant has no such user.
pub async fn read(
    store: &Store,
    cache: &Cache,
    tenant: TenantId,
    user: &UserId,
    recent_transactions: u64,
) -> Result<Option<CachedPortfolio>, Arc<ReadError>> {
    let key = cache_key(tenant, user);
    let load = || async {
        let portfolio = build(store, tenant, user, recent_transactions)
            .await?
            .ok_or(ReadError::NoSuchUser)?;
        Ok::<_, ReadError>(stored::encode(&portfolio)?)
    };
    match cache.get_or_load(&key, load).await {
        Ok((gzip, hit)) => Ok(Some(CachedPortfolio {
            gzip,
            hit,
            degraded: cache.degraded(),
            store_unavailable: !store.reachable(),
        })),
        Err(e) if matches!(*e, ReadError::NoSuchUser) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Household `id`'s positions: every member's portfolio (each from the cache, as
/// [`read`] gives it), together. `None` when the tenant has no such household.
pub async fn household(
    store: &Store,
    cache: &Cache,
    tenant: TenantId,
    id: &HouseholdId,
    recent_transactions: u64,
) -> Result<Option<HouseholdPositions>, Arc<ReadError>> {
    let Some(household) = store
        .household(tenant, id)
        .await
        .map_err(|e| Arc::new(ReadError::Store(e)))?
    else {
        return Ok(None);
    };
    let mut portfolios = Vec::with_capacity(household.members.len());
    for member in &household.members {
        if let Some(cached) = read(store, cache, tenant, member, recent_transactions).await? {
            portfolios.push(cached.parse().map_err(|e| Arc::new(e.into()))?);
        }
    }
    Ok(Some(positions::household_positions(
        &household,
        &portfolios,
    )))
}

/// Brings the cached view up to date after a change (a sync, a status change).
///
/// When the cached view was built from the records the user's connections hold
/// now (the same connections at the same records versions), only their statuses
/// and freshness are written into it: a sync that found nothing new costs no
/// rebuild. Otherwise it is rebuilt from the store.
///
/// Two writers can race: one builds from the connections as they were, another
/// commits a change and caches its newer view, then the first one's older view
/// lands on top. So after writing, the connections are read again; if any moved
/// while the view was built, it is built and written again. The key is never
/// left empty for a reader to fill with a view it built before the change.
pub async fn refresh(
    store: &Store,
    cache: &Cache,
    tenant: TenantId,
    user: &UserId,
    recent_transactions: u64,
) -> Result<(), StoreError> {
    const ROUNDS: usize = 5;
    let key = cache_key(tenant, user);
    let mut connections = store.user_connections(tenant, user).await?;
    for _ in 0..ROUNDS {
        let built_from = versions(&connections);
        let view = match patched(cache, &key, &connections).await {
            Some(view) => view,
            None => {
                let Some(view) =
                    build::assemble(store, user, connections, recent_transactions).await?
                else {
                    cache.invalidate(&key).await;
                    return Ok(());
                };
                stored::encode(&view).map_err(|e| StoreError::Corrupt(e.to_string()))?
            }
        };
        cache.put(&key, view).await;
        connections = store.user_connections(tenant, user).await?;
        if versions(&connections) == built_from {
            return Ok(());
        }
    }
    // Still changing after several rounds: whoever changes it next rewrites it.
    tracing::warn!(user = %user, "A portfolio kept changing while it was cached; dropped.");
    cache.invalidate(&key).await;
    Ok(())
}

/// The cached view with `connections`' statuses and freshness written in, if it
/// holds their records as they are now; `None` when there is no cached view, or
/// it was built from other connections or older records.
async fn patched(cache: &Cache, key: &str, connections: &[ConnectionRecord]) -> Option<Vec<u8>> {
    let cached = cache.peek(key).await?;
    let mut view = stored::decode(&cached).ok()?;
    let current = view.connections.len() == connections.len()
        && view
            .connections
            .iter()
            .zip(connections)
            .all(|(v, c)| v.id == c.id.to_string() && v.records_version == c.records_version);
    if !current {
        return None;
    }
    (view.freshness, view.connections) = connection_views(connections);
    build::follow_connections(&mut view, connections);
    stored::encode(&view).ok()
}

/// What a cached view depends on, per connection: the row (status, freshness)
/// and its records.
fn versions(connections: &[ConnectionRecord]) -> Vec<(ConnectionId, DateTime<Utc>, i64)> {
    connections
        .iter()
        .map(|c| (c.id, c.updated_at, c.records_version))
        .collect()
}
