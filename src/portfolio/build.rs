//! Builds the portfolio view from the store: one pass over the user's connections,
//! with totals per currency, allocations and freshness.

use std::collections::{BTreeMap, BTreeSet};

use rust_decimal::Decimal;

use super::views::{
    AccountShare, AccountSync, AccountView, Allocation, BalancesView, ConnectionView, FindingView,
    Freshness, HoldingView, IdentifierIssueView, InstrumentView, Portfolio, SecurityTypeShare,
    SecurityView, SplitView, StaleReason, TransactionView,
};
use crate::domain::{
    Account, AccountType, BalanceMeaning, ConnectionStatus, Currency, Holding, Money, SecurityType,
    TenantId, UserId,
};
use crate::store::{ConnectionRecord, PortfolioRecords, SecurityMatch, Store, StoreError};

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

pub(super) async fn assemble(
    store: &Store,
    user: &UserId,
    connections: Vec<ConnectionRecord>,
    recent_transactions: u64,
) -> Result<Option<Portfolio>, StoreError> {
    if connections.is_empty() {
        return Ok(None);
    }
    let mut portfolio = Portfolio::empty(user.to_string());
    let mut totals: BTreeMap<Currency, Decimal> = BTreeMap::new();
    for connection in &connections {
        let cid = connection.id.to_string();
        let PortfolioRecords {
            records: stored,
            mut annotations,
            matches,
            fetch_failures: mut failing,
        } = store
            .portfolio_records(connection.id, recent_transactions)
            .await?;
        let mut findings: BTreeMap<String, Vec<FindingView>> = BTreeMap::new();
        for f in store.findings(connection.id).await? {
            findings.entry(f.account_id).or_default().push(FindingView {
                code: f.code,
                scope: f.scope,
                subject: f.subject,
                detail: f.detail,
                first_seen_at: f.first_seen_at,
                last_seen_at: f.last_seen_at,
            });
        }
        let cash_funds: BTreeSet<&str> = stored
            .securities
            .iter()
            .filter(|s| s.security_type == SecurityType::Cash)
            .map(|s| s.external_id.as_str())
            .collect();
        let outside = outside_balances(&stored.accounts, &stored.holdings, &cash_funds);
        for a in stored.accounts {
            let sign = match a.account_type {
                AccountType::Credit | AccountType::Loan => Decimal::NEGATIVE_ONE,
                _ => Decimal::ONE,
            };
            // What the account is worth: its balance, and the positions its
            // balance leaves out, each in its own currency.
            let mut worth: BTreeMap<Currency, Decimal> = BTreeMap::new();
            worth.insert(a.currency, a.balances.current.amount);
            let (beside, unvalued) = outside.get(&a.external_id).cloned().unwrap_or_default();
            for (currency, amount) in beside {
                let sum = worth.entry(currency).or_default();
                match sum.checked_add(amount) {
                    Some(added) => *sum = added,
                    None => portfolio.totals_complete = false,
                }
            }
            if unvalued > 0 {
                portfolio.totals_complete = false;
            }
            for (currency, amount) in &worth {
                let total = totals.entry(*currency).or_default();
                // Beyond Decimal's range (about 7.9e28) a total means nothing; say
                // so rather than panic.
                match sign.checked_mul(*amount).and_then(|v| total.checked_add(v)) {
                    Some(sum) => *total = sum,
                    None => {
                        portfolio.totals_complete = false;
                        tracing::warn!(currency = %currency, "Portfolio total out of range; left out.");
                    }
                }
            }
            let sync = match failing.remove(&a.external_id) {
                Some(failed) => AccountSync {
                    refreshed_at: failed.refreshed_at,
                    last_fetch_failed: true,
                    failing_since: Some(failed.failing_since),
                    failure: Some(failed.failure),
                },
                None => AccountSync {
                    refreshed_at: connection.last_synced_at,
                    last_fetch_failed: false,
                    failing_since: None,
                    failure: None,
                },
            };
            portfolio.accounts.push(AccountView {
                connection_id: cid.clone(),
                data_quality: findings.remove(&a.external_id).unwrap_or_default(),
                id: a.external_id,
                name: a.name,
                official_name: a.official_name,
                account_type: a.account_type,
                subtype: a.subtype,
                mask: a.mask,
                currency: a.currency,
                sync,
                value: worth
                    .into_iter()
                    .map(|(currency, amount)| Money::new(amount, currency))
                    .collect(),
                value_complete: unvalued == 0,
                balances: BalancesView {
                    current: a.balances.current,
                    available: a.balances.available,
                    cash: a.balances.cash,
                    meaning: a.balances.meaning,
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
            let matched = matches.get(&s.external_id);
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
                    instrument: matched.and_then(instrument_view),
                    identifier_issues: matched
                        .map(|m| {
                            m.issues
                                .iter()
                                .map(|i| IdentifierIssueView {
                                    identifier: i.identifier.to_string(),
                                    value: i.value.clone(),
                                    problem: i.problem.clone(),
                                })
                                .collect()
                        })
                        .unwrap_or_default(),
                },
            });
        }
        for t in stored.transactions {
            let annotations = annotations.remove(&t.external_id).unwrap_or_default();
            portfolio
                .transactions
                .push(TransactionView::from_record(cid.clone(), t, annotations));
        }
    }
    attach_splits(store, &mut portfolio).await?;
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
    (portfolio.freshness, portfolio.connections) = connection_views(&connections);
    portfolio.allocation = allocation(&portfolio);
    Ok(Some(portfolio))
}

/// Writes into every holding's instrument the splits recorded against it.
async fn attach_splits(store: &Store, portfolio: &mut Portfolio) -> Result<(), StoreError> {
    let mut ids: Vec<String> = portfolio
        .holdings
        .iter()
        .filter_map(|h| h.security.instrument.as_ref().map(|i| i.id.clone()))
        .collect();
    ids.sort_unstable();
    ids.dedup();
    let splits = store.splits(&ids).await?;
    if splits.is_empty() {
        return Ok(());
    }
    for h in &mut portfolio.holdings {
        if let Some(instrument) = h.security.instrument.as_mut()
            && let Some(recorded) = splits.get(&instrument.id)
        {
            instrument.splits = recorded
                .iter()
                .map(|r| SplitView {
                    ratio: r.ratio.to_string(),
                    new: r.ratio.new,
                    old: r.ratio.old,
                    date: r.date,
                    source: r.source.as_str().to_owned(),
                })
                .collect();
        }
    }
    Ok(())
}

/// Per account, the value of the positions its balance leaves out (by its
/// [`BalanceMeaning`]), per currency, and how many of those had no value. A cash
/// fund (`cash_funds`) held in a cash-only account is the balance's own cash,
/// not a position beside it.
fn outside_balances(
    accounts: &[Account],
    holdings: &[Holding],
    cash_funds: &BTreeSet<&str>,
) -> BTreeMap<String, (BTreeMap<Currency, Decimal>, usize)> {
    let mut outside: BTreeMap<String, (BTreeMap<Currency, Decimal>, usize)> = BTreeMap::new();
    for a in accounts {
        for h in holdings
            .iter()
            .filter(|h| h.account_external_id == a.external_id)
        {
            let left_out = match a.balances.meaning {
                BalanceMeaning::Total => false,
                BalanceMeaning::Cash => !cash_funds.contains(h.security_external_id.as_str()),
                // A holding with no value says its currency through its price
                // or cost; with none of them it is taken to be the account's.
                BalanceMeaning::AccountCurrencyTotal => h
                    .value
                    .or(h.price)
                    .or(h.cost_basis)
                    .is_some_and(|m| m.currency != a.currency),
            };
            if !left_out {
                continue;
            }
            let entry = outside.entry(a.external_id.clone()).or_default();
            match h.value {
                Some(value) => {
                    let sum = entry.0.entry(value.currency).or_default();
                    *sum = sum.checked_add(value.amount).unwrap_or(*sum);
                }
                None => entry.1 += 1,
            }
        }
    }
    outside
}

/// Writes each healthy account's freshness (its connection's last sync) into a
/// view whose records are current; an account whose fetch fails keeps its own.
pub(super) fn follow_connections(view: &mut Portfolio, connections: &[ConnectionRecord]) {
    for account in &mut view.accounts {
        if account.sync.last_fetch_failed {
            continue;
        }
        if let Some(c) = connections
            .iter()
            .find(|c| c.id.to_string() == account.connection_id)
        {
            account.sync.refreshed_at = c.last_synced_at;
        }
    }
}

/// The user's connections as the API shows them, and their combined freshness:
/// the oldest `as_of`, and the first stale connection's reason.
pub fn connection_views(connections: &[ConnectionRecord]) -> (Freshness, Vec<ConnectionView>) {
    let mut combined = Freshness::current(None);
    let mut views = Vec::with_capacity(connections.len());
    for connection in connections {
        let freshness = connection_freshness(connection);
        combined.combine(&freshness);
        views.push(ConnectionView {
            id: connection.id.to_string(),
            institution: connection.institution_id.clone(),
            status: connection.status,
            freshness,
            records_version: connection.records_version,
        });
    }
    (combined, views)
}

/// Whether one connection's data is current, and if not, why.
fn connection_freshness(c: &ConnectionRecord) -> Freshness {
    // Stored reasons start with their stable code (see the sync pipeline).
    let stored = |fallback: StaleReason, message: &str| match &c.last_failure_reason {
        Some(reason) => {
            let (code, text) = StaleReason::from_stored(reason);
            Freshness::stale(c.last_synced_at, code, text)
        }
        None => Freshness::stale(c.last_synced_at, fallback, message),
    };
    let pending = || {
        Freshness::stale(
            None,
            StaleReason::SyncPending,
            "the first sync has not finished yet",
        )
    };
    match c.status {
        ConnectionStatus::ReauthRequired => stored(
            StaleReason::ReauthRequired,
            "the user must link the institution again",
        ),
        ConnectionStatus::Revoked => Freshness::stale(
            c.last_synced_at,
            StaleReason::ConnectionRevoked,
            "the user disconnected this institution",
        ),
        ConnectionStatus::Pending => pending(),
        ConnectionStatus::Error => stored(StaleReason::SyncFailed, "the last sync failed"),
        ConnectionStatus::Active => match (c.last_synced_at, c.last_failure_at) {
            (Some(ok), Some(failed)) if failed > ok => {
                stored(StaleReason::SyncFailed, "the last sync failed")
            }
            (None, Some(_)) => stored(StaleReason::SyncFailed, "the last sync failed"),
            (None, None) => pending(),
            (ok, _) => Freshness::current(ok),
        },
    }
}

/// The master's instrument a security matched, as the view shows it.
fn instrument_view(matched: &SecurityMatch) -> Option<InstrumentView> {
    let instrument = matched.instrument.as_ref()?;
    Some(InstrumentView {
        id: instrument.id.clone(),
        name: instrument.name.clone(),
        security_type: instrument.security_type.parse().ok()?,
        currency: instrument.currency.parse().ok()?,
        ticker: instrument.ticker.clone(),
        figi: instrument.figi.clone(),
        isin: instrument.isin.clone(),
        cusip: instrument.cusip.clone(),
        sedol: instrument.sedol.clone(),
        matched_by: matched.matched_by.clone()?,
        weak: instrument.weak || matched.matched_by.as_deref() == Some("ticker"),
        splits: Vec::new(),
    })
}

/// Weights to six decimal places; a currency whose total is zero gets none.
pub(super) fn weight(part: Decimal, total: Decimal) -> Decimal {
    if total.is_zero() {
        Decimal::ZERO
    } else {
        part.checked_div(total)
            .map(|w| w.round_dp(6))
            .unwrap_or_default()
    }
}

fn allocation(portfolio: &Portfolio) -> Allocation {
    let mut by_type: BTreeMap<(Currency, &'static str), (SecurityType, Decimal)> = BTreeMap::new();
    let mut type_totals: BTreeMap<Currency, Decimal> = BTreeMap::new();
    for h in &portfolio.holdings {
        let Some(value) = h.value else { continue };
        let entry = by_type
            .entry((value.currency, h.security.security_type.as_str()))
            .or_insert((h.security.security_type, Decimal::ZERO));
        entry.1 = entry.1.checked_add(value.amount).unwrap_or(entry.1);
        let total = type_totals.entry(value.currency).or_default();
        *total = total.checked_add(value.amount).unwrap_or(*total);
    }
    let mut account_totals: BTreeMap<Currency, Decimal> = BTreeMap::new();
    let assets: Vec<&AccountView> = portfolio
        .accounts
        .iter()
        .filter(|a| !matches!(a.account_type, AccountType::Credit | AccountType::Loan))
        .collect();
    for a in &assets {
        for worth in &a.value {
            let total = account_totals.entry(worth.currency).or_default();
            *total = total.checked_add(worth.amount).unwrap_or(*total);
        }
    }
    Allocation {
        by_security_type: by_type
            .into_iter()
            .map(
                |((currency, _), (security_type, amount))| SecurityTypeShare {
                    security_type,
                    value: Money::new(amount, currency),
                    weight: weight(amount, type_totals[&currency]),
                },
            )
            .collect(),
        // One share per account and currency it is worth something in.
        by_account: assets
            .into_iter()
            .flat_map(|a| {
                a.value.iter().map(|worth| AccountShare {
                    connection_id: a.connection_id.clone(),
                    account_id: a.id.clone(),
                    value: *worth,
                    weight: weight(worth.amount, account_totals[&worth.currency]),
                })
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;
    use crate::domain::Balances;

    fn usd(amount: i64) -> Money {
        Money::new(Decimal::new(amount, 0), "USD".parse().unwrap())
    }

    fn eur(amount: i64) -> Money {
        Money::new(Decimal::new(amount, 0), "EUR".parse().unwrap())
    }

    fn account(id: &str, meaning: BalanceMeaning) -> Account {
        Account {
            external_id: id.into(),
            account_type: AccountType::Investment,
            subtype: None,
            name: id.into(),
            official_name: None,
            mask: None,
            currency: "USD".parse().unwrap(),
            balances: Balances {
                current: usd(1000),
                available: None,
                cash: None,
                meaning,
                as_of: Utc::now(),
            },
        }
    }

    fn holding(account: &str, value: Option<Money>, price: Option<Money>) -> Holding {
        Holding {
            account_external_id: account.into(),
            security_external_id: "s".into(),
            quantity: Decimal::ONE,
            cost_basis: None,
            price,
            value,
            as_of: None,
        }
    }

    #[test]
    fn positions_a_balance_leaves_out_are_counted_once_each() {
        let accounts = [
            account("total", BalanceMeaning::Total),
            account("own", BalanceMeaning::AccountCurrencyTotal),
            account("cash", BalanceMeaning::Cash),
        ];
        let mut holdings = Vec::new();
        for a in ["total", "own", "cash"] {
            holdings.push(holding(a, Some(usd(600)), None));
            holdings.push(holding(a, Some(eur(300)), None));
            // No value, priced in euros: outside an own-currency balance, unvalued.
            holdings.push(holding(a, None, Some(eur(5))));
        }
        let outside = outside_balances(&accounts, &holdings, &BTreeSet::new());
        assert!(
            !outside.contains_key("total"),
            "a whole-account balance has everything"
        );
        assert_eq!(
            outside["own"],
            (BTreeMap::from([(eur(0).currency, Decimal::new(300, 0))]), 1)
        );
        assert_eq!(
            outside["cash"],
            (
                BTreeMap::from([
                    (eur(0).currency, Decimal::new(300, 0)),
                    (usd(0).currency, Decimal::new(600, 0)),
                ]),
                1
            )
        );
        // A cash fund in a cash-only account is the balance's own cash.
        let mut sweep = holding("cash", Some(usd(50)), None);
        sweep.security_external_id = "sweep".into();
        let outside = outside_balances(&accounts[2..], &[sweep], &BTreeSet::from(["sweep"]));
        assert!(outside.is_empty(), "{outside:?}");
    }
}
