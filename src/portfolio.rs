//! The portfolio read model: everything an advisory app sees for one user, across
//! all their connections, with how fresh it is. Built from the store, cached as JSON
//! (moka → Redis), and rebuilt after every sync so readers rarely touch the database.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::cache::{Cache, Hit};
use crate::domain::{
    AccountType, ConnectionId, ConnectionStatus, Currency, InvestmentType, Money, SecurityType,
    TenantId, TransactionStatus, UserId,
};
use crate::store::{ConnectionRecord, Store, StoreError};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Portfolio {
    pub user_id: String,
    pub freshness: Freshness,
    pub connections: Vec<ConnectionView>,
    pub accounts: Vec<AccountView>,
    pub holdings: Vec<HoldingView>,
    pub transactions: Vec<TransactionView>,
    /// Net of account balances per currency: assets add, credit and loans subtract.
    pub totals: Vec<Money>,
}

/// How fresh the data is. `stale` data is still the last good data: it is served,
/// with the reason, rather than dropped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Freshness {
    pub as_of: Option<DateTime<Utc>>,
    pub stale: bool,
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConnectionView {
    pub id: String,
    pub institution: String,
    pub status: ConnectionStatus,
    pub freshness: Freshness,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccountView {
    pub connection_id: String,
    pub id: String,
    pub name: String,
    pub official_name: Option<String>,
    #[serde(rename = "type")]
    pub account_type: AccountType,
    pub subtype: Option<String>,
    pub mask: Option<String>,
    pub currency: Currency,
    pub balances: BalancesView,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BalancesView {
    pub current: Money,
    pub available: Option<Money>,
    pub as_of: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HoldingView {
    pub connection_id: String,
    pub account_id: String,
    #[serde(with = "rust_decimal::serde::str")]
    pub quantity: Decimal,
    pub cost_basis: Option<Money>,
    pub price: Option<Money>,
    pub value: Option<Money>,
    pub as_of: Option<NaiveDate>,
    pub security: SecurityView,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SecurityView {
    pub id: String,
    pub name: String,
    #[serde(rename = "type")]
    pub security_type: SecurityType,
    pub ticker: Option<String>,
    pub cusip: Option<String>,
    pub isin: Option<String>,
    pub sedol: Option<String>,
    pub figi: Option<String>,
    pub currency: Currency,
    #[serde(with = "rust_decimal::serde::str_option")]
    pub price: Option<Decimal>,
    pub price_as_of: Option<NaiveDate>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TransactionView {
    pub connection_id: String,
    pub id: String,
    pub account_id: String,
    pub amount: Money,
    pub date: NaiveDate,
    pub status: TransactionStatus,
    pub pending_transaction_id: Option<String>,
    pub description: String,
    pub category: Option<String>,
    pub investment_type: Option<InvestmentType>,
    pub security_id: Option<String>,
    #[serde(with = "rust_decimal::serde::str_option")]
    pub quantity: Option<Decimal>,
    #[serde(with = "rust_decimal::serde::str_option")]
    pub price: Option<Decimal>,
}

pub fn cache_key(tenant: TenantId, user: &UserId) -> String {
    format!("portfolio:v1:{tenant}:{user}")
}

/// Reads the portfolio: cache first, then the database (filling the cache).
/// `None` when the tenant has no such user.
pub async fn read(
    store: &Store,
    cache: &Cache,
    tenant: TenantId,
    user: &UserId,
    recent_transactions: u64,
) -> Result<(Option<Portfolio>, Hit), StoreError> {
    let key = cache_key(tenant, user);
    if let (Some(bytes), hit) = cache.get(&key).await {
        match serde_json::from_slice(&bytes) {
            Ok(portfolio) => return Ok((Some(portfolio), hit)),
            Err(e) => tracing::warn!(error = %e, "Dropping an unreadable cached portfolio."),
        }
    }
    let portfolio = build(store, tenant, user, recent_transactions).await?;
    if let Some(p) = &portfolio
        && let Ok(bytes) = serde_json::to_vec(p)
    {
        cache.fill(&key, bytes).await;
    }
    Ok((portfolio, Hit::Miss))
}

/// Rebuilds the cached view after a change (a sync, a status change).
///
/// Two writers can race: one builds from the connections as they were, another
/// commits a change and caches its newer view, then the first one's older view
/// lands on top. So after writing, the connections are read again; if any moved
/// while the view was built, the view is dropped and the next read rebuilds it.
pub async fn refresh(
    store: &Store,
    cache: &Cache,
    tenant: TenantId,
    user: &UserId,
    recent_transactions: u64,
) -> Result<(), StoreError> {
    let key = cache_key(tenant, user);
    let connections = store.user_connections(tenant, user).await?;
    let built_from = versions(&connections);
    match assemble(store, user, connections, recent_transactions).await? {
        Some(p) => match serde_json::to_vec(&p) {
            Ok(bytes) => cache.put(&key, bytes).await,
            Err(_) => cache.invalidate(&key).await,
        },
        None => cache.invalidate(&key).await,
    }
    if versions(&store.user_connections(tenant, user).await?) != built_from {
        cache.invalidate(&key).await;
    }
    Ok(())
}

fn versions(connections: &[ConnectionRecord]) -> Vec<(ConnectionId, DateTime<Utc>)> {
    connections.iter().map(|c| (c.id, c.updated_at)).collect()
}

/// The portfolio straight from the database.
pub async fn build(
    store: &Store,
    tenant: TenantId,
    user: &UserId,
    recent_transactions: u64,
) -> Result<Option<Portfolio>, StoreError> {
    let connections = store.user_connections(tenant, user).await?;
    assemble(store, user, connections, recent_transactions).await
}

async fn assemble(
    store: &Store,
    user: &UserId,
    connections: Vec<ConnectionRecord>,
    recent_transactions: u64,
) -> Result<Option<Portfolio>, StoreError> {
    if connections.is_empty() {
        return Ok(None);
    }
    let mut portfolio = Portfolio {
        user_id: user.to_string(),
        freshness: Freshness {
            as_of: None,
            stale: false,
            reason: None,
        },
        connections: Vec::new(),
        accounts: Vec::new(),
        holdings: Vec::new(),
        transactions: Vec::new(),
        totals: Vec::new(),
    };
    let mut totals: BTreeMap<Currency, Decimal> = BTreeMap::new();
    for connection in &connections {
        let cid = connection.id.to_string();
        let freshness = connection_freshness(connection);
        let stored = store.portfolio(connection.id, recent_transactions).await?;
        for a in stored.accounts {
            let sign = match a.account_type {
                AccountType::Credit | AccountType::Loan => Decimal::NEGATIVE_ONE,
                _ => Decimal::ONE,
            };
            let total = totals.entry(a.currency).or_default();
            // Beyond Decimal's range (about 7.9e28) a total means nothing; say so
            // rather than panic.
            match sign
                .checked_mul(a.balances.current.amount)
                .and_then(|v| total.checked_add(v))
            {
                Some(sum) => *total = sum,
                None => {
                    tracing::warn!(currency = %a.currency, "Portfolio total out of range; left out.")
                }
            }
            portfolio.accounts.push(AccountView {
                connection_id: cid.clone(),
                id: a.external_id,
                name: a.name,
                official_name: a.official_name,
                account_type: a.account_type,
                subtype: a.subtype,
                mask: a.mask,
                currency: a.currency,
                balances: BalancesView {
                    current: a.balances.current,
                    available: a.balances.available,
                    as_of: a.balances.as_of,
                },
            });
        }
        for h in stored.holdings {
            let Some(s) = stored
                .securities
                .iter()
                .find(|s| s.external_id == h.security_external_id)
            else {
                continue;
            };
            portfolio.holdings.push(HoldingView {
                connection_id: cid.clone(),
                account_id: h.account_external_id,
                quantity: h.quantity,
                cost_basis: h.cost_basis,
                price: h.price,
                value: h.value,
                as_of: h.as_of,
                security: SecurityView {
                    id: s.external_id.clone(),
                    name: s.name.clone(),
                    security_type: s.security_type,
                    ticker: s.ticker.clone(),
                    cusip: s.cusip.clone(),
                    isin: s.isin.clone(),
                    sedol: s.sedol.clone(),
                    figi: s.figi.clone(),
                    currency: s.currency,
                    price: s.price,
                    price_as_of: s.price_as_of,
                },
            });
        }
        for t in stored.transactions {
            portfolio.transactions.push(TransactionView {
                connection_id: cid.clone(),
                id: t.external_id,
                account_id: t.account_external_id,
                amount: t.amount,
                date: t.date,
                status: t.status,
                pending_transaction_id: t.pending_external_id,
                description: t.description,
                category: t.category,
                investment_type: t.investment_type,
                security_id: t.security_external_id,
                quantity: t.quantity,
                price: t.price,
            });
        }
        if freshness.stale && !portfolio.freshness.stale {
            portfolio.freshness.stale = true;
            portfolio.freshness.reason = freshness.reason.clone();
        }
        portfolio.freshness.as_of = match (portfolio.freshness.as_of, freshness.as_of) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        portfolio.connections.push(ConnectionView {
            id: cid,
            institution: connection.institution_id.clone(),
            status: connection.status,
            freshness,
        });
    }
    portfolio
        .transactions
        .sort_by(|a, b| b.date.cmp(&a.date).then_with(|| a.id.cmp(&b.id)));
    portfolio
        .transactions
        .truncate(usize::try_from(recent_transactions).unwrap_or(usize::MAX));
    portfolio.totals = totals
        .into_iter()
        .map(|(currency, amount)| Money::new(amount, currency))
        .collect();
    Ok(Some(portfolio))
}

/// Whether one connection's data is current, and if not, why.
fn connection_freshness(c: &ConnectionRecord) -> Freshness {
    // Stored reasons already start with their stable code (see the sync pipeline).
    let stored = || c.last_failure_reason.clone();
    let reason = match c.status {
        ConnectionStatus::ReauthRequired => stored().or_else(|| {
            Some("CONNECTION_REAUTH_REQUIRED: the user must link the institution again".into())
        }),
        ConnectionStatus::Revoked => {
            Some("CONNECTION_REVOKED: the user disconnected this institution".into())
        }
        ConnectionStatus::Pending => {
            Some("SYNC_PENDING: the first sync has not finished yet".into())
        }
        ConnectionStatus::Error => {
            stored().or_else(|| Some("SYNC_FAILED: the last sync failed".into()))
        }
        ConnectionStatus::Active => match (c.last_synced_at, c.last_failure_at) {
            (Some(ok), Some(failed)) if failed > ok => stored(),
            (None, Some(_)) => stored(),
            (None, None) => Some("SYNC_PENDING: the first sync has not finished yet".into()),
            _ => None,
        },
    };
    Freshness {
        as_of: c.last_synced_at,
        stale: reason.is_some(),
        reason,
    }
}
