//! The data over time: epoch 0 is [`portfolio`], and each later epoch applies a few seeded
//! changes to the one before, the way an institution's records move between two syncs.
//!
//! Epoch `e` changes epoch `e - 1` in this order, every draw seeded by `(seed, user, e)`:
//! 1. every transaction that has been pending for [`PENDING_EPOCHS`] epochs posts: the
//!    pending record goes, and a posted one with a new id and `pending_transaction_id`
//!    naming it comes, dated a day later and sometimes grown by a tip;
//! 2. one to three new cash transactions appear (a bulk user's, [`BULK_NEW_PER_EPOCH`]),
//!    dated on or before the anchor date, the first of them pending;
//! 3. one earlier posted cash transaction gets a new description and category;
//! 4. one earlier transaction disappears;
//! 5. every market price moves by up to ±2%, the same move for every user;
//! 6. at [`SPLIT_EPOCH`], one equity the user holds splits 2-for-1, recorded as a `split`
//!    investment transaction per account holding it.
//!
//! Depository balances follow the posted amounts and the holds of pending ones; investment
//! balances follow the holdings' values. Amounts are computed with [`Dec`], never `f64`.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{Datelike, Days, NaiveDate};

use super::{
    BULK_NEW_PER_EPOCH, Dec, MERCHANTS, Merchant, Portfolio, SecurityKind, SplitMix64, Transaction,
    days_before, portfolio, stable_hash,
};

/// A pending transaction posts this many epochs after the one that added it, so clients see
/// it pending across at least one sync.
const PENDING_EPOCHS: u32 = 2;

/// The epoch whose changes include a stock split.
const SPLIT_EPOCH: u32 = 3;

/// What an investment transaction recording a split is called (the model's `split`).
const SPLIT_TYPE: &str = "split";

/// Builds the portfolio the API serves to `user_id` at `epoch`; epoch 0 is exactly
/// [`portfolio`]. The cost grows with the epoch: [`EpochState::next`] steps one at a time.
pub fn portfolio_at(seed: u64, anchor_date: NaiveDate, user_id: &str, epoch: u32) -> Portfolio {
    let mut state = EpochState::genesis(seed, anchor_date, user_id);
    while state.epoch < epoch {
        state = state.next();
    }
    state.portfolio
}

/// One user's data at one epoch, with what computing the next epoch needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EpochState {
    seed: u64,
    anchor_date: NaiveDate,
    user_id: String,
    epoch: u32,
    portfolio: Portfolio,
    /// The epoch that added each pending transaction, which decides when it posts.
    pending_since: BTreeMap<String, u32>,
    /// How the transactions differ from the epoch before (none at epoch 0): the
    /// institution's change log, so that a change feed need not compare a user's
    /// whole history on every request.
    since_previous: Option<Delta>,
}

/// How one epoch's transactions differ from another's, as positions in their lists:
/// added and modified in the later epoch's order, removed in the earlier one's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delta {
    pub added: Vec<usize>,
    pub modified: Vec<usize>,
    /// Positions in the earlier epoch's list.
    pub removed: Vec<usize>,
}

impl Delta {
    /// Compares every transaction of the two portfolios.
    pub fn between(before: &Portfolio, after: &Portfolio) -> Self {
        let earlier: HashMap<&str, &Transaction> = before
            .transactions
            .iter()
            .map(|t| (t.transaction_id.as_str(), t))
            .collect();
        let later: HashSet<&str> = after
            .transactions
            .iter()
            .map(|t| t.transaction_id.as_str())
            .collect();
        let mut delta = Self::default();
        for (at, transaction) in after.transactions.iter().enumerate() {
            match earlier.get(transaction.transaction_id.as_str()) {
                None => delta.added.push(at),
                Some(old) if *old != transaction => delta.modified.push(at),
                Some(_) => {}
            }
        }
        delta.removed = before
            .transactions
            .iter()
            .enumerate()
            .filter(|(_, t)| !later.contains(t.transaction_id.as_str()))
            .map(|(at, _)| at)
            .collect();
        delta
    }
}

impl EpochState {
    /// Epoch 0: the generator's portfolio.
    pub fn genesis(seed: u64, anchor_date: NaiveDate, user_id: &str) -> Self {
        let portfolio = portfolio(seed, anchor_date, user_id);
        let pending_since = portfolio
            .transactions
            .iter()
            .filter(|t| t.pending)
            .map(|t| (t.transaction_id.clone(), 0))
            .collect();
        Self {
            seed,
            anchor_date,
            user_id: user_id.to_owned(),
            epoch: 0,
            portfolio,
            pending_since,
            since_previous: None,
        }
    }

    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    pub fn portfolio(&self) -> &Portfolio {
        &self.portfolio
    }

    /// How this epoch's transactions differ from the epoch before's; `None` at
    /// epoch 0.
    pub fn since_previous(&self) -> Option<&Delta> {
        self.since_previous.as_ref()
    }

    /// How many records (accounts, holdings, transactions) the state holds.
    pub fn records(&self) -> usize {
        let p = &self.portfolio;
        p.accounts.len() + p.holdings.len() + p.transactions.len()
    }

    /// The same user one epoch later.
    pub fn next(&self) -> Self {
        let mut next = self.clone();
        next.epoch += 1;
        next.step();
        next.since_previous = Some(Delta::between(&self.portfolio, &next.portfolio));
        next
    }

    fn step(&mut self) {
        let mut rng = SplitMix64::seeded(&[
            b"epoch",
            &self.seed.to_le_bytes(),
            self.user_id.as_bytes(),
            &self.epoch.to_le_bytes(),
        ]);
        let earlier: HashSet<String> = self
            .portfolio
            .transactions
            .iter()
            .map(|t| t.transaction_id.clone())
            .collect();
        // Net outflow per account of what posted in this epoch.
        let mut posted = BTreeMap::new();
        self.post_due_pendings(&mut rng, &mut posted);
        self.add_transactions(&mut rng, &mut posted);
        let modified = self.modify_one(&mut rng, &earlier);
        self.remove_one(&mut rng, &earlier, modified.as_deref());
        self.move_prices();
        if self.epoch == SPLIT_EPOCH {
            self.split_one(&mut rng);
        }
        self.portfolio.transactions.sort_by(|a, b| {
            b.date
                .cmp(&a.date)
                .then_with(|| a.transaction_id.cmp(&b.transaction_id))
        });
        self.settle_balances(&posted);
    }

    fn post_due_pendings(&mut self, rng: &mut SplitMix64, posted: &mut BTreeMap<String, Dec>) {
        let due: Vec<String> = self
            .pending_since
            .iter()
            .filter(|&(_, &since)| since + PENDING_EPOCHS <= self.epoch)
            .map(|(id, _)| id.clone())
            .collect();
        for id in due {
            self.pending_since.remove(&id);
            let Some(index) = self
                .portfolio
                .transactions
                .iter()
                .position(|t| t.transaction_id == id)
            else {
                continue;
            };
            let pending = self.portfolio.transactions.remove(index);
            let mut amount = Dec::parse(&pending.amount);
            if amount.units > 0 && rng.below(2) == 0 {
                // A tip of 5–20%, added when the merchant settles.
                let rate = Dec::from_u64(rng.between(5, 20), 2);
                amount = amount.add(amount.mul_round(rate, 2));
            }
            let date = pending
                .date
                .checked_add_days(Days::new(1))
                .unwrap_or(pending.date)
                .min(self.anchor_date);
            record_outflow(posted, &pending.account_id, amount);
            let transaction = Transaction {
                transaction_id: transaction_id(
                    self.seed,
                    &self.user_id,
                    "posted",
                    &[id.as_bytes()],
                ),
                amount: amount.to_string(),
                date,
                pending: false,
                pending_transaction_id: Some(id),
                ..pending
            };
            self.portfolio.transactions.push(transaction);
        }
    }

    fn add_transactions(&mut self, rng: &mut SplitMix64, posted: &mut BTreeMap<String, Dec>) {
        let Some(account) = self
            .portfolio
            .accounts
            .iter()
            .find(|a| a.account_type == "depository")
        else {
            return;
        };
        let (account_id, currency) = (
            account.account_id.clone(),
            account.balances.iso_currency_code.clone(),
        );
        let new = if super::bulk_history(&self.user_id).is_some() {
            BULK_NEW_PER_EPOCH
        } else {
            rng.between(1, 3)
        };
        for index in 0..new {
            let pending = index == 0;
            // Whole cents only, so balances stay in cents; holds are spending, never income.
            let merchants: Vec<&Merchant> = MERCHANTS
                .iter()
                .filter(|m| m.decimals == 2 && !(pending && m.inflow))
                .collect();
            let merchant = *rng.pick(&merchants);
            let amount = Dec::from_u64(rng.between(merchant.cents.0, merchant.cents.1), 2);
            let amount = if merchant.inflow {
                amount.neg()
            } else {
                amount
            };
            let days_back = if pending { 2 } else { 6 };
            let date = days_before(self.anchor_date, rng.between(0, days_back));
            let id = transaction_id(
                self.seed,
                &self.user_id,
                "epoch-transaction",
                &[&self.epoch.to_le_bytes(), &index.to_le_bytes()],
            );
            if pending {
                self.pending_since.insert(id.clone(), self.epoch);
            } else {
                record_outflow(posted, &account_id, amount);
            }
            self.portfolio.transactions.push(Transaction {
                transaction_id: id,
                account_id: account_id.clone(),
                amount: amount.to_string(),
                iso_currency_code: currency.clone(),
                date,
                pending,
                pending_transaction_id: None,
                name: merchant.name.to_owned(),
                category: merchant.category.map(str::to_owned),
                investment_type: None,
                security_id: None,
                quantity: None,
                price: None,
            });
        }
    }

    /// Gives one earlier posted cash transaction a store number and another category, as an
    /// institution's merchant clean-up does; returns its id.
    fn modify_one(&mut self, rng: &mut SplitMix64, earlier: &HashSet<String>) -> Option<String> {
        let candidates: Vec<usize> = self
            .portfolio
            .transactions
            .iter()
            .enumerate()
            .filter(|(_, t)| {
                !t.pending && t.investment_type.is_none() && earlier.contains(&t.transaction_id)
            })
            .map(|(index, _)| index)
            .collect();
        if candidates.is_empty() {
            return None;
        }
        let transaction = &mut self.portfolio.transactions[*rng.pick(&candidates)];
        let categories: Vec<&str> = MERCHANTS
            .iter()
            .filter_map(|m| m.category)
            .filter(|&category| transaction.category.as_deref() != Some(category))
            .collect();
        transaction.category = Some((*rng.pick(&categories)).to_owned());
        let base = transaction
            .name
            .rsplit_once(" #")
            .map_or(transaction.name.as_str(), |(base, _)| base);
        transaction.name = format!("{base} #{:04}", rng.below(10_000));
        Some(transaction.transaction_id.clone())
    }

    fn remove_one(&mut self, rng: &mut SplitMix64, earlier: &HashSet<String>, keep: Option<&str>) {
        let candidates: Vec<usize> = self
            .portfolio
            .transactions
            .iter()
            .enumerate()
            .filter(|(_, t)| {
                earlier.contains(&t.transaction_id) && keep != Some(t.transaction_id.as_str())
            })
            .map(|(index, _)| index)
            .collect();
        if candidates.is_empty() {
            return;
        }
        let removed = self.portfolio.transactions.remove(*rng.pick(&candidates));
        self.pending_since.remove(&removed.transaction_id);
    }

    fn move_prices(&mut self) {
        for holding in &mut self.portfolio.holdings {
            if holding.security.security_type == SecurityKind::Cash.as_str() {
                continue;
            }
            let factor = price_factor(
                self.seed,
                self.anchor_date,
                &holding.security.security_id,
                self.epoch,
            );
            let close = Dec::parse(&holding.security.close_price).mul_round(factor, 4);
            reprice(holding, close);
        }
    }

    /// Splits one of the user's equities 2-for-1 in every account holding it: twice the
    /// shares at exactly half the price, the same cost basis and value.
    fn split_one(&mut self, rng: &mut SplitMix64) {
        let Portfolio {
            holdings,
            transactions,
            ..
        } = &mut self.portfolio;
        let mut equities: Vec<String> = holdings
            .iter()
            .filter(|h| h.security.security_type == SecurityKind::Equity.as_str())
            .map(|h| h.security.security_id.clone())
            .collect();
        equities.sort_unstable();
        equities.dedup();
        if equities.is_empty() {
            return;
        }
        let chosen = rng.pick(&equities).clone();
        for holding in holdings
            .iter_mut()
            .filter(|h| h.security.security_id == chosen)
        {
            let quantity = Dec::parse(&holding.quantity);
            holding.quantity = Dec::new(quantity.units * 2, quantity.scale).to_string();
            reprice(holding, Dec::parse(&holding.institution_price).halved());
            transactions.push(Transaction {
                transaction_id: transaction_id(
                    self.seed,
                    &self.user_id,
                    "split",
                    &[holding.account_id.as_bytes(), chosen.as_bytes()],
                ),
                account_id: holding.account_id.clone(),
                amount: Dec::new(0, 2).to_string(),
                iso_currency_code: holding.iso_currency_code.clone(),
                date: self.anchor_date,
                pending: false,
                pending_transaction_id: None,
                name: format!("2-FOR-1 STOCK SPLIT {}", holding.security.ticker_symbol),
                category: Some("Investment:Stock Split".to_owned()),
                investment_type: Some(SPLIT_TYPE.to_owned()),
                security_id: Some(chosen.clone()),
                // The shares the split added.
                quantity: Some(quantity.to_string()),
                price: None,
            });
        }
    }

    /// Depository accounts: the current balance pays what posted in this epoch, and the
    /// available balance is what remains after pending holds. Investment accounts: the
    /// value of the positions in the account's currency, as the generator reports it.
    fn settle_balances(&mut self, posted: &BTreeMap<String, Dec>) {
        let Portfolio {
            accounts,
            holdings,
            transactions,
        } = &mut self.portfolio;
        for account in accounts {
            let balances = &mut account.balances;
            if account.account_type == "depository" {
                let mut current = Dec::parse(&balances.current);
                if let Some(outflow) = posted.get(&account.account_id) {
                    current = current.add(outflow.neg());
                }
                let held = transactions
                    .iter()
                    .filter(|t| t.pending && t.account_id == account.account_id)
                    .fold(Dec::new(0, 2), |sum, t| sum.add(Dec::parse(&t.amount)));
                balances.current = current.to_string();
                balances.available = Some(current.add(held.neg()).to_string());
            } else {
                let invested = holdings
                    .iter()
                    .filter(|h| {
                        h.account_id == account.account_id
                            && h.iso_currency_code == balances.iso_currency_code
                    })
                    .fold(Dec::new(0, 2), |sum, h| {
                        sum.add(Dec::parse(&h.institution_value))
                    });
                balances.current = invested.to_string();
            }
        }
    }
}

/// A transaction id derived from what it records, in the generator's id format.
fn transaction_id(seed: u64, user_id: &str, kind: &str, parts: &[&[u8]]) -> String {
    let seed = seed.to_le_bytes();
    let mut all: Vec<&[u8]> = vec![kind.as_bytes(), &seed, user_id.as_bytes()];
    all.extend_from_slice(parts);
    let digest = stable_hash(&all);
    let mut id = String::from("mer_txn_");
    for byte in &digest[..10] {
        id.push_str(&format!("{byte:02x}"));
    }
    id
}

fn record_outflow(posted: &mut BTreeMap<String, Dec>, account_id: &str, amount: Dec) {
    let total = posted
        .entry(account_id.to_owned())
        .or_insert(Dec::new(0, 2));
    *total = total.add(amount);
}

/// A security's price move in one epoch, a factor within ±2%, the same for every user.
fn price_factor(seed: u64, anchor_date: NaiveDate, security_id: &str, epoch: u32) -> Dec {
    let mut rng = SplitMix64::seeded(&[
        b"price",
        &seed.to_le_bytes(),
        &anchor_date.num_days_from_ce().to_le_bytes(),
        security_id.as_bytes(),
        &epoch.to_le_bytes(),
    ]);
    Dec::from_u64(rng.between(9_800, 10_200), 4)
}

/// Sets a holding's price and recomputes its value as the generator does.
fn reprice(holding: &mut super::Holding, price: Dec) {
    let value = Dec::parse(&holding.quantity).mul_round(price, 2);
    holding.security.close_price = price.to_string();
    holding.institution_price = price.to_string();
    holding.institution_value = value.to_string();
}

impl Dec {
    /// Reads back text that `Dec` printed; the data only ever holds such text.
    fn parse(text: &str) -> Self {
        let (negative, digits) = text
            .strip_prefix('-')
            .map_or((false, text), |rest| (true, rest));
        let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
        let units: i128 = format!("{whole}{fraction}")
            .parse()
            .unwrap_or_else(|_| panic!("{text:?} is not decimal text the sandbox printed"));
        let scale = u32::try_from(fraction.len()).unwrap_or(u32::MAX);
        Self::new(if negative { -units } else { units }, scale)
    }

    /// Exactly half: one more decimal when the last digit is odd.
    fn halved(self) -> Self {
        if self.units % 2 == 0 {
            Self::new(self.units / 2, self.scale)
        } else {
            Self::new(self.units * 5, self.scale + 1)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    const SEED: u64 = 42;
    const USERS: [&str; 5] = ["demo-alice", "demo-bob", "demo-carol", "zoe", "test-7"];

    fn anchor() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, 20).expect("valid date")
    }

    /// Every epoch of `user` from 0 through `last`.
    fn history(user: &str, last: u32) -> Vec<Portfolio> {
        let mut state = EpochState::genesis(SEED, anchor(), user);
        let mut epochs = vec![state.portfolio().clone()];
        while state.epoch() < last {
            state = state.next();
            epochs.push(state.portfolio().clone());
        }
        epochs
    }

    fn by_id(portfolio: &Portfolio) -> HashMap<&str, &Transaction> {
        portfolio
            .transactions
            .iter()
            .map(|t| (t.transaction_id.as_str(), t))
            .collect()
    }

    fn sum(amounts: impl Iterator<Item = Dec>) -> Dec {
        amounts.fold(Dec::new(0, 2), Dec::add)
    }

    #[test]
    fn epoch_zero_is_the_generator_s_portfolio_byte_for_byte() {
        for user in USERS {
            let generated = serde_json::to_string(&portfolio(SEED, anchor(), user)).expect("json");
            let at_zero =
                serde_json::to_string(&portfolio_at(SEED, anchor(), user, 0)).expect("json");
            assert_eq!(at_zero, generated, "{user}");
        }
    }

    #[test]
    fn the_same_inputs_give_the_same_epochs() {
        for user in USERS {
            let first =
                serde_json::to_string(&portfolio_at(SEED, anchor(), user, 6)).expect("json");
            let second =
                serde_json::to_string(&portfolio_at(SEED, anchor(), user, 6)).expect("json");
            assert_eq!(first, second);
            let stepped = history(user, 6).pop().expect("epoch 6");
            assert_eq!(serde_json::to_string(&stepped).expect("json"), first);
        }
        assert_ne!(
            portfolio_at(SEED, anchor(), "demo-alice", 4),
            portfolio_at(SEED + 1, anchor(), "demo-alice", 4)
        );
    }

    #[test]
    fn every_epoch_adds_posts_modifies_and_removes_transactions() {
        for user in USERS {
            let epochs = history(user, 8);
            for (epoch, pair) in epochs.windows(2).enumerate() {
                let epoch = epoch + 1;
                let (before, after) = (by_id(&pair[0]), by_id(&pair[1]));
                let context = format!("{user} at epoch {epoch}");
                let new: Vec<&Transaction> = pair[1]
                    .transactions
                    .iter()
                    .filter(|t| !before.contains_key(t.transaction_id.as_str()))
                    .collect();
                let gone: Vec<&Transaction> = pair[0]
                    .transactions
                    .iter()
                    .filter(|t| !after.contains_key(t.transaction_id.as_str()))
                    .collect();

                // Posted replacements of pending records that are gone.
                let replacements: Vec<&&Transaction> = new
                    .iter()
                    .filter(|t| t.pending_transaction_id.is_some())
                    .collect();
                for posted in &replacements {
                    let pending_id = posted.pending_transaction_id.as_deref().expect("id");
                    let pending = before.get(pending_id).expect("it was listed before");
                    assert!(pending.pending && !posted.pending, "{context}");
                    assert!(!after.contains_key(pending_id), "{context}");
                    assert_ne!(posted.transaction_id, pending.transaction_id);
                    assert_eq!(
                        (&posted.account_id, &posted.name),
                        (&pending.account_id, &pending.name)
                    );
                    // The posted amount is the held one, or that plus a tip of 5–20%.
                    let (held, paid) = (Dec::parse(&pending.amount), Dec::parse(&posted.amount));
                    assert!(paid.units >= held.units && paid.units * 100 <= held.units * 121);
                }
                let due = if epoch >= PENDING_EPOCHS as usize {
                    pair[0].transactions.iter().filter(|t| t.pending).count()
                } else {
                    0
                };
                assert!(replacements.len() <= due, "{context}");
                if epoch == 2 {
                    // Both of the generator's pending transactions post at epoch 2.
                    assert!(!replacements.is_empty(), "{context}");
                }

                let fresh: Vec<&&Transaction> = new
                    .iter()
                    .filter(|t| t.pending_transaction_id.is_none() && t.investment_type.is_none())
                    .collect();
                assert!((1..=3).contains(&fresh.len()), "{context}");
                assert!(fresh.iter().any(|t| t.pending), "{context}");
                assert!(new.iter().all(|t| t.date <= anchor()), "{context}");

                let modified: Vec<(&Transaction, &Transaction)> = pair[0]
                    .transactions
                    .iter()
                    .filter_map(|old| {
                        after
                            .get(old.transaction_id.as_str())
                            .filter(|new| **new != old)
                            .map(|new| (*new, old))
                    })
                    .collect();
                assert_eq!(modified.len(), 1, "{context}");
                let (new_version, old_version) = modified[0];
                assert!(!old_version.pending);
                assert_ne!(new_version.category, old_version.category);
                assert_ne!(new_version.name, old_version.name);
                assert_eq!(new_version.amount, old_version.amount);

                // One removal besides the pending records that posted.
                assert_eq!(gone.len(), replacements.len() + 1, "{context}");

                let ids: HashSet<&str> = after.keys().copied().collect();
                assert_eq!(
                    ids.len(),
                    pair[1].transactions.len(),
                    "{context}: unique ids"
                );
                assert!(
                    pair[1]
                        .transactions
                        .windows(2)
                        .all(|t| t[0].date >= t[1].date),
                    "{context}: newest first"
                );
            }
        }
    }

    #[test]
    fn a_pending_transaction_stays_pending_for_two_epochs_then_posts() {
        let mut posted = 0;
        for user in USERS {
            let epochs = history(user, 3);
            let (at_one, at_two, at_three) =
                (by_id(&epochs[1]), by_id(&epochs[2]), by_id(&epochs[3]));
            let added_at_one = epochs[1].transactions.iter().filter(|t| {
                t.pending && !by_id(&epochs[0]).contains_key(t.transaction_id.as_str())
            });
            for pending in added_at_one {
                let id = pending.transaction_id.as_str();
                assert!(at_one.contains_key(id));
                // The removal step may take it; otherwise it is still pending at epoch 2 ...
                let Some(later) = at_two.get(id) else {
                    continue;
                };
                assert!(later.pending, "{user}: {id}");
                // ... and at epoch 3 posted under a new id, or removed.
                assert!(!at_three.contains_key(id), "{user}: {id}");
                posted += epochs[3]
                    .transactions
                    .iter()
                    .filter(|t| t.pending_transaction_id.as_deref() == Some(id))
                    .count();
            }
        }
        assert!(posted > 0);
    }

    #[test]
    fn prices_move_and_values_stay_quantity_times_price() {
        for user in USERS {
            let epochs = history(user, 5);
            for (epoch, pair) in epochs.windows(2).enumerate() {
                let epoch = epoch as u32 + 1;
                let mut moved = 0;
                for (old, new) in pair[0].holdings.iter().zip(&pair[1].holdings) {
                    assert_eq!(
                        (&old.account_id, &old.security.security_id),
                        (&new.account_id, &new.security.security_id)
                    );
                    let value =
                        Dec::parse(&new.quantity).mul_round(Dec::parse(&new.institution_price), 2);
                    assert_eq!(new.institution_value, value.to_string(), "{new:?}");
                    assert_eq!(new.security.close_price, new.institution_price);
                    if old.security.security_type == "cash" {
                        assert_eq!(old, new);
                        continue;
                    }
                    assert_eq!(old.cost_basis, new.cost_basis);
                    let factor = price_factor(SEED, anchor(), &new.security.security_id, epoch);
                    let expected = Dec::parse(&old.institution_price).mul_round(factor, 4);
                    if new.quantity == old.quantity {
                        assert_eq!(new.institution_price, expected.to_string());
                    }
                    moved += usize::from(new.institution_price != old.institution_price);
                }
                assert!(moved > 0, "{user} at epoch {epoch}");
                for account in &pair[1].accounts {
                    if account.account_type == "investment" {
                        let invested = sum(pair[1]
                            .holdings
                            .iter()
                            .filter(|h| {
                                h.account_id == account.account_id
                                    && h.iso_currency_code == account.balances.iso_currency_code
                            })
                            .map(|h| Dec::parse(&h.institution_value)));
                        assert_eq!(account.balances.current, invested.to_string());
                    }
                }
            }
        }
    }

    #[test]
    fn at_epoch_three_one_equity_splits_two_for_one_exactly() {
        let mut splits = 0;
        for user in USERS {
            let epochs = history(user, 4);
            let (before, at_split) = (&epochs[2], &epochs[3]);
            let split: Vec<(&super::super::Holding, &super::super::Holding)> = before
                .holdings
                .iter()
                .zip(&at_split.holdings)
                .filter(|(old, new)| old.quantity != new.quantity)
                .collect();
            let holds_equity = before
                .holdings
                .iter()
                .any(|h| h.security.security_type == "equity");
            assert_eq!(!split.is_empty(), holds_equity, "{user}");
            let records: Vec<&Transaction> = at_split
                .transactions
                .iter()
                .filter(|t| t.investment_type.as_deref() == Some("split"))
                .collect();
            assert_eq!(records.len(), split.len(), "{user}");
            for (old, new) in split {
                splits += 1;
                assert_eq!(new.security.security_type, "equity");
                let (old_quantity, new_quantity) =
                    (Dec::parse(&old.quantity), Dec::parse(&new.quantity));
                assert_eq!(
                    new_quantity,
                    Dec::new(old_quantity.units * 2, old_quantity.scale)
                );
                let factor = price_factor(SEED, anchor(), &new.security.security_id, 3);
                let moved = Dec::parse(&old.institution_price).mul_round(factor, 4);
                let halved = Dec::parse(&new.institution_price);
                assert_eq!(halved.add(halved), moved.add(Dec::new(0, halved.scale)));
                assert_eq!(new.cost_basis, old.cost_basis);
                // Twice the shares at half the price: the value of the unsplit position.
                assert_eq!(
                    new.institution_value,
                    old_quantity.mul_round(moved, 2).to_string()
                );
                let record = records
                    .iter()
                    .find(|t| t.account_id == new.account_id)
                    .expect("a split record per account");
                assert_eq!(record.security_id.as_ref(), Some(&new.security.security_id));
                assert_eq!(record.quantity.as_deref(), Some(old.quantity.as_str()));
                assert_eq!(record.amount, "0.00");
            }
            // Only epoch 3 splits.
            let after = epochs[4]
                .holdings
                .iter()
                .zip(&at_split.holdings)
                .all(|(later, split)| later.quantity == split.quantity);
            assert!(after, "{user}");
        }
        assert!(splits > 0);
    }

    #[test]
    fn cash_balances_follow_what_posted_and_what_is_held() {
        for user in USERS {
            let epochs = history(user, 6);
            for pair in epochs.windows(2) {
                let before = by_id(&pair[0]);
                for account in pair[1]
                    .accounts
                    .iter()
                    .filter(|a| a.account_type == "depository")
                {
                    let previous = pair[0]
                        .accounts
                        .iter()
                        .find(|a| a.account_id == account.account_id)
                        .expect("same accounts");
                    let mine = |t: &&Transaction| t.account_id == account.account_id;
                    let posted = sum(pair[1]
                        .transactions
                        .iter()
                        .filter(mine)
                        .filter(|t| !t.pending && !before.contains_key(t.transaction_id.as_str()))
                        .map(|t| Dec::parse(&t.amount)));
                    let current = Dec::parse(&account.balances.current);
                    assert_eq!(
                        current.add(posted),
                        Dec::parse(&previous.balances.current).add(Dec::new(0, current.scale)),
                        "{user}"
                    );
                    let held = sum(pair[1]
                        .transactions
                        .iter()
                        .filter(mine)
                        .filter(|t| t.pending)
                        .map(|t| Dec::parse(&t.amount)));
                    assert_eq!(
                        account.balances.available.as_deref(),
                        Some(current.add(held.neg()).to_string().as_str())
                    );
                }
            }
        }
    }

    #[test]
    fn twenty_epochs_stay_well_formed() {
        for user in USERS {
            let late = portfolio_at(SEED, anchor(), user, 20);
            let ids: HashSet<&str> = late
                .transactions
                .iter()
                .map(|t| t.transaction_id.as_str())
                .collect();
            assert_eq!(ids.len(), late.transactions.len());
            assert!(late.transactions.iter().all(|t| t.date <= anchor()));
            assert!(late.transactions.len() >= portfolio(SEED, anchor(), user).transactions.len());
        }
    }

    #[test]
    fn decimals_parse_back_and_halve_exactly() {
        for text in ["0.00", "-12.5", "123.4500", "7", "-0.000001"] {
            assert_eq!(Dec::parse(text).to_string(), text);
        }
        assert_eq!(Dec::new(1_235, 4).halved().to_string(), "0.06175");
        assert_eq!(Dec::new(1_234, 4).halved().to_string(), "0.0617");
    }
}
