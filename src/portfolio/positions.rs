//! A user's positions: the portfolio's holdings summed per instrument of the
//! securities master, across every account and connection, each with the holdings
//! it is made of (a holding whose connection last read its data before a split an
//! institution dated counted as split); where the value sits by asset class,
//! currency and account; and the net worth, the portfolio's totals (a household's:
//! its members' added).
//! Sums are exact; amounts in different currencies are never added together (each
//! figure is a list with one amount per currency), and a sum that some holding
//! could not contribute to says so (`*_complete: false`) instead of looking whole.
//!
//! With a reporting currency ([`in_currency`]), every holding's value and cost
//! basis is also converted, each rounded once as [`ROUNDING`] says; every sum in
//! the reporting currency (a position's, an allocation's) adds those converted
//! figures, so the parts always add up to the totals. Each position names the
//! rates it used; a currency without a rate is listed, never counted as zero.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::views::{Freshness, HoldingView, InstrumentView, Portfolio};
use crate::domain::{Conversion, Currency, Money, ROUNDING, RateTable, SecurityType, SplitSource};
use crate::store::Household;

/// What `GET /v1/users/{user_id}/positions` answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Positions {
    pub user_id: String,
    pub freshness: Freshness,
    pub positions: Vec<Position>,
    pub allocation: PositionAllocation,
    /// What the user's accounts are worth together, one amount per currency: the
    /// portfolio's `totals` (positions a balance leaves out added once, credit and
    /// loans subtracted).
    pub net_worth: Vec<Money>,
    /// False when a position to add had no value or a sum left Decimal's range.
    pub net_worth_complete: bool,
    /// With `?currency=`: the value in that one currency, and how it was converted.
    pub reporting: Option<Reporting>,
}

/// The positions, and the net worth, in one reporting currency.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Reporting {
    pub currency: Currency,
    /// How every converted figure was computed and rounded.
    pub rounding: String,
    /// Every rate used below, one per currency converted from.
    pub rates: Vec<RateUsed>,
    /// Currencies whose figures could not be converted (no rate is known, or a
    /// figure beyond Decimal's range): what is valued in them is in no
    /// reporting-currency figure; `complete` is false if a holding is valued in
    /// one, and `net_worth` is absent if the net worth has an amount in one.
    pub missing_rates: Vec<Currency>,
    /// Whether every valued holding could be converted and summed.
    pub complete: bool,
    /// The sum of every holding's converted value; absent unless `complete` (a
    /// total that leaves some holdings out would look whole).
    pub total_value: Option<Money>,
    /// The converted value by asset class, by account
    /// (`<connection_id>/<account_id>`) and by the currency it was held in,
    /// weighted within what could be converted.
    pub by_asset_class: Vec<Share>,
    pub by_account: Vec<Share>,
    pub by_currency: Vec<Share>,
    /// The net worth's amounts, each converted (rounded once as `rounding` says)
    /// and added; absent when one could not be, or `net_worth_complete` is false.
    pub net_worth: Option<Money>,
}

/// An exchange rate a conversion used.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RateUsed {
    pub from: Currency,
    pub to: Currency,
    /// Units of `to` per unit of `from`, exactly as multiplied.
    #[serde(with = "rust_decimal::serde::str")]
    #[schema(value_type = String, example = "0.9487666034155597722960151803")]
    pub rate: Decimal,
    /// The day the rate was published for.
    pub date: chrono::NaiveDate,
    /// Who published it (`ecb`).
    pub source: String,
}

impl From<&Conversion> for RateUsed {
    fn from(c: &Conversion) -> Self {
        Self {
            from: c.from,
            to: c.to,
            rate: c.rate,
            date: c.date,
            source: c.source.clone(),
        }
    }
}

/// A position in the reporting currency.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PositionInCurrency {
    /// The sum of the holdings' converted values; absent when a holding's value
    /// is in a currency without a rate.
    pub value: Option<Money>,
    /// The same for cost basis, over the holdings that have one.
    pub cost_basis: Option<Money>,
    /// The rates used for this position.
    pub rates: Vec<RateUsed>,
    pub missing_rates: Vec<Currency>,
}

/// One instrument held, summed over the accounts that hold it. A security that
/// matched no instrument is a position of its own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Position {
    /// The master's instrument; none for a security nothing could match.
    pub instrument: Option<InstrumentView>,
    /// The instrument's name, else the institution's name for the security.
    pub name: String,
    #[serde(rename = "type")]
    pub security_type: SecurityType,
    /// Sum of the holdings' quantities as held now, exact: a holding read before
    /// a split of the instrument took effect counts at its
    /// `split_adjusted_quantity`.
    #[serde(with = "rust_decimal::serde::str")]
    #[schema(value_type = String, example = "25.5")]
    pub quantity: Decimal,
    /// Market value, one amount per currency the institutions valued it in.
    pub value: Vec<Money>,
    /// Whether every holding had a value.
    pub value_complete: bool,
    /// Cost basis, one amount per currency, over the holdings that have one.
    pub cost_basis: Vec<Money>,
    /// Whether every holding had a cost basis.
    pub cost_basis_complete: bool,
    /// Cost basis per unit held (the sum over `quantity`, to six decimal places,
    /// half to even) where every holding has a cost basis in one currency: it
    /// follows a split (`instrument.splits`), whose new shares share the old cost.
    pub cost_basis_per_unit: Option<Money>,
    /// The holdings it is made of, account by account.
    pub holdings: Vec<PositionHolding>,
    /// With `?currency=`: its value and cost basis in that currency.
    pub reporting: Option<PositionInCurrency>,
}

/// One account's part of a position.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PositionHolding {
    /// The user whose account holds it (in a household, one of its members).
    pub user_id: String,
    pub connection_id: String,
    pub institution: String,
    pub account_id: String,
    pub account_name: String,
    /// The security's id at the institution.
    pub security_id: String,
    #[serde(with = "rust_decimal::serde::str")]
    #[schema(value_type = String, example = "10.5")]
    pub quantity: Decimal,
    /// The quantity after the instrument's splits that took effect after the day
    /// its connection last read the institution's data (an institution down
    /// across a split another institution's split transaction recorded); absent
    /// when none did. Only splits an institution dated count: a detected one is
    /// dated the day its jump was seen, which may be after the data already had
    /// it. `quantity` stays as sent.
    #[serde(with = "rust_decimal::serde::str_option")]
    #[schema(value_type = Option<String>, example = "21")]
    pub split_adjusted_quantity: Option<Decimal>,
    pub value: Option<Money>,
    pub cost_basis: Option<Money>,
    /// `cost_basis` over the quantity held now (`split_adjusted_quantity` where
    /// there is one), to six decimal places, half to even.
    pub cost_basis_per_unit: Option<Money>,
    pub price: Option<Money>,
    pub as_of: Option<chrono::NaiveDate>,
    /// With `?currency=`: `value` and `cost_basis` converted (absent where the
    /// figure or its rate is).
    pub reporting_value: Option<Money>,
    pub reporting_cost_basis: Option<Money>,
    /// The holding's asset class, for allocations.
    #[serde(skip)]
    pub(super) asset_class: Option<SecurityType>,
}

/// Where the positions' value sits: by asset class and by account, each share
/// weighted within its currency, and the total in each currency (which are not
/// weighed against each other: that takes exchange rates).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PositionAllocation {
    pub by_asset_class: Vec<Share>,
    pub by_account: Vec<Share>,
    pub by_currency: Vec<Money>,
}

/// A part of the value: an asset class (`equity`, …) or an account
/// (`<connection_id>/<account_id>`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Share {
    pub key: String,
    pub value: Money,
    /// Share of the currency's total, 0 to 1, to six decimal places.
    #[serde(with = "rust_decimal::serde::str")]
    #[schema(value_type = String, example = "0.254")]
    pub weight: Decimal,
}

/// The positions of `portfolio`.
pub fn positions(portfolio: &Portfolio) -> Positions {
    let (positions, allocation) = gather(portfolio, |_| portfolio.user_id.clone());
    Positions {
        user_id: portfolio.user_id.clone(),
        freshness: portfolio.freshness.clone(),
        positions,
        allocation,
        net_worth: portfolio.totals.clone(),
        net_worth_complete: portfolio.totals_complete,
        reporting: None,
    }
}

/// The members' net worth together: their portfolios' totals added per
/// currency, and whether every one was complete and every sum fits.
fn summed_totals(portfolios: &[Portfolio]) -> (Vec<Money>, bool) {
    let mut sums: BTreeMap<Currency, Decimal> = BTreeMap::new();
    let mut complete = true;
    for p in portfolios {
        complete &= p.totals_complete;
        for total in &p.totals {
            let sum = sums.entry(total.currency).or_default();
            match sum.checked_add(total.amount) {
                Some(added) => *sum = added,
                None => complete = false,
            }
        }
    }
    let totals = sums
        .into_iter()
        .map(|(currency, amount)| Money::new(amount, currency))
        .collect();
    (totals, complete)
}

/// What `GET /v1/households/{household_id}/positions` answers: the positions of
/// every member together, each holding naming its member.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct HouseholdPositions {
    pub household_id: String,
    pub name: String,
    pub members: Vec<String>,
    /// Members with no linked institution yet: nothing of theirs is below.
    pub members_without_data: Vec<String>,
    /// The members' data together: the oldest `as_of`, stale if any is.
    pub freshness: Freshness,
    pub positions: Vec<Position>,
    pub allocation: PositionAllocation,
    /// What the members' accounts are worth together, one amount per currency:
    /// their portfolios' `totals` added. Members without data (listed in
    /// `members_without_data`) add nothing.
    pub net_worth: Vec<Money>,
    /// False when a member's totals were incomplete or a sum left Decimal's range.
    pub net_worth_complete: bool,
    /// With `?currency=`: the value in that one currency, and how it was converted.
    pub reporting: Option<Reporting>,
}

/// The positions of a household's members together, from their portfolios.
pub fn household_positions(household: &Household, portfolios: &[Portfolio]) -> HouseholdPositions {
    let owner: BTreeMap<&str, &str> = portfolios
        .iter()
        .flat_map(|p| {
            p.connections
                .iter()
                .map(|c| (c.id.as_str(), p.user_id.as_str()))
        })
        .collect();
    let mut merged = Portfolio::empty(String::new());
    for (i, p) in portfolios.iter().enumerate() {
        if i == 0 {
            merged.freshness = p.freshness.clone();
        } else {
            merged.freshness.combine(&p.freshness);
        }
        merged.connections.extend(p.connections.iter().cloned());
        merged.accounts.extend(p.accounts.iter().cloned());
        merged.holdings.extend(p.holdings.iter().cloned());
    }
    let (positions, allocation) = gather(&merged, |connection| {
        owner
            .get(connection)
            .map_or_else(String::new, |u| (*u).to_owned())
    });
    let with_data: std::collections::BTreeSet<&str> =
        portfolios.iter().map(|p| p.user_id.as_str()).collect();
    let (net_worth, net_worth_complete) = summed_totals(portfolios);
    HouseholdPositions {
        household_id: household.id.to_string(),
        name: household.name.clone(),
        members: household.members.iter().map(ToString::to_string).collect(),
        members_without_data: household
            .members
            .iter()
            .filter(|m| !with_data.contains(m.as_str()))
            .map(ToString::to_string)
            .collect(),
        freshness: merged.freshness,
        positions,
        allocation,
        net_worth,
        net_worth_complete,
        reporting: None,
    }
}

/// The holdings of `portfolio` summed per instrument, and where their value sits;
/// `owner` names the user a connection belongs to.
fn gather(
    portfolio: &Portfolio,
    owner: impl Fn(&str) -> String,
) -> (Vec<Position>, PositionAllocation) {
    let institution_of: BTreeMap<&str, &str> = portfolio
        .connections
        .iter()
        .map(|c| (c.id.as_str(), c.institution.as_str()))
        .collect();
    // The day each connection last read the institution's data: a split that
    // took effect after it is not in that data's quantities yet.
    let read_on: BTreeMap<&str, chrono::NaiveDate> = portfolio
        .connections
        .iter()
        .filter_map(|c| Some((c.id.as_str(), c.freshness.as_of?.date_naive())))
        .collect();
    let account_name: BTreeMap<(&str, &str), &str> = portfolio
        .accounts
        .iter()
        .map(|a| ((a.connection_id.as_str(), a.id.as_str()), a.name.as_str()))
        .collect();
    // An unmatched security is its own position: keyed by connection and its id.
    let mut grouped: BTreeMap<String, Vec<&HoldingView>> = BTreeMap::new();
    for h in &portfolio.holdings {
        let key = match &h.security.instrument {
            Some(instrument) => format!("i:{}", instrument.id),
            None => format!("s:{}:{}", h.connection_id, h.security.id),
        };
        grouped.entry(key).or_default().push(h);
    }
    let mut positions: Vec<Position> = grouped
        .into_values()
        .map(|holdings| {
            let first = holdings[0];
            // One holding matched by ticker alone makes the whole position weak;
            // a weak instrument's name is another institution's, so the
            // holding's own name is shown.
            let weak = holdings
                .iter()
                .any(|h| h.security.instrument.as_ref().is_some_and(|i| i.weak));
            let instrument = first.security.instrument.clone().map(|mut i| {
                i.weak = weak;
                i
            });
            let splits = instrument.as_ref().map_or(&[][..], |i| &i.splits[..]);
            let adjusted: Vec<Option<Decimal>> = holdings
                .iter()
                .map(|h| {
                    let read_on = read_on.get(h.connection_id.as_str()).copied();
                    split_adjusted(h.quantity, read_on, splits)
                })
                .collect();
            let mut value = Sums::default();
            let mut cost = Sums::default();
            let mut quantity = Decimal::ZERO;
            for (h, now) in holdings.iter().zip(&adjusted) {
                let held = now.unwrap_or(h.quantity);
                quantity = quantity.checked_add(held).unwrap_or(quantity);
                value.add(h.value);
                cost.add(h.cost_basis);
            }
            let cost_basis_per_unit = match cost.money().as_slice() {
                [one] if cost.missing == 0 => per_unit(*one, quantity),
                _ => None,
            };
            Position {
                cost_basis_per_unit,
                name: match &instrument {
                    Some(i) if !weak => i.name.clone(),
                    _ => first.security.name.clone(),
                },
                security_type: instrument
                    .as_ref()
                    .map_or(first.security.security_type, |i| i.security_type),
                instrument,
                quantity,
                value_complete: value.missing == 0,
                value: value.money(),
                cost_basis_complete: cost.missing == 0,
                cost_basis: cost.money(),
                holdings: holdings
                    .iter()
                    .zip(adjusted)
                    .map(|(h, now)| PositionHolding {
                        user_id: owner(&h.connection_id),
                        connection_id: h.connection_id.clone(),
                        institution: institution_of
                            .get(h.connection_id.as_str())
                            .map_or_else(String::new, |i| (*i).to_owned()),
                        account_id: h.account_id.clone(),
                        account_name: account_name
                            .get(&(h.connection_id.as_str(), h.account_id.as_str()))
                            .map_or_else(String::new, |n| (*n).to_owned()),
                        security_id: h.security.id.clone(),
                        quantity: h.quantity,
                        split_adjusted_quantity: now,
                        value: h.value,
                        cost_basis: h.cost_basis,
                        cost_basis_per_unit: h
                            .cost_basis
                            .and_then(|c| per_unit(c, now.unwrap_or(h.quantity))),
                        price: h.price,
                        as_of: h.as_of,
                        reporting_value: None,
                        reporting_cost_basis: None,
                        asset_class: Some(
                            h.security
                                .instrument
                                .as_ref()
                                .map_or(h.security.security_type, |i| i.security_type),
                        ),
                    })
                    .collect(),
                reporting: None,
            }
        })
        .collect();
    positions.sort_by(|a, b| a.name.cmp(&b.name));
    (positions, allocation(&portfolio.holdings))
}

/// `money` in `to` with `rates` (none: no rate is known yet, and only what is
/// already in `to` converts), and the conversion when one was made.
fn converted(
    rates: Option<&RateTable>,
    money: Money,
    to: Currency,
) -> Option<(Money, Option<Conversion>)> {
    match rates {
        Some(table) => table.convert(money, to).ok(),
        None if money.currency == to => Some((money, None)),
        None => None,
    }
}

/// Adds every figure of `positions` in `to`, converted with `rates` (none: no
/// rate is known yet, and only what is already in `to` counts), and returns
/// their total and allocation in `to`, with `net_worth` (complete or not, as
/// `net_worth_complete` says) converted and added.
pub fn in_currency(
    positions: &mut [Position],
    net_worth: &[Money],
    net_worth_complete: bool,
    rates: Option<&RateTable>,
    to: Currency,
) -> Reporting {
    let mut all_used: BTreeMap<Currency, RateUsed> = BTreeMap::new();
    let mut all_missing: std::collections::BTreeSet<Currency> = Default::default();
    let mut class: BTreeMap<String, Decimal> = BTreeMap::new();
    let mut account: BTreeMap<String, Decimal> = BTreeMap::new();
    let mut held_in: BTreeMap<String, Decimal> = BTreeMap::new();
    let mut total = Decimal::ZERO;
    let mut overflowed = false;
    for position in positions.iter_mut() {
        let mut used: BTreeMap<Currency, RateUsed> = BTreeMap::new();
        let mut missing: std::collections::BTreeSet<Currency> = Default::default();
        let mut convert = |money: Option<Money>| -> Option<Money> {
            let money = money?;
            match converted(rates, money, to) {
                Some((converted, conversion)) => {
                    if let Some(c) = conversion {
                        used.entry(c.from).or_insert_with(|| RateUsed::from(&c));
                    }
                    Some(converted)
                }
                None => {
                    missing.insert(money.currency);
                    None
                }
            }
        };
        let mut value = Some(Decimal::ZERO);
        let mut cost = Some(Decimal::ZERO);
        let mut any_cost = false;
        for h in &mut position.holdings {
            h.reporting_value = convert(h.value);
            h.reporting_cost_basis = convert(h.cost_basis);
            value = add_converted(value, h.value, h.reporting_value);
            any_cost |= h.cost_basis.is_some();
            cost = add_converted(cost, h.cost_basis, h.reporting_cost_basis);
            if let Some(v) = h.reporting_value {
                let add = |map: &mut BTreeMap<String, Decimal>, key: String| {
                    let sum = map.entry(key).or_default();
                    *sum = sum.checked_add(v.amount).unwrap_or(*sum);
                };
                let asset_class = h.asset_class.unwrap_or(position.security_type);
                add(&mut class, asset_class.as_str().to_owned());
                add(
                    &mut account,
                    format!("{}/{}", h.connection_id, h.account_id),
                );
                if let Some(original) = h.value {
                    add(&mut held_in, original.currency.to_string());
                }
                match total.checked_add(v.amount) {
                    Some(sum) => total = sum,
                    None => overflowed = true,
                }
            }
        }
        all_missing.extend(missing.iter().copied());
        for (from, rate) in &used {
            all_used.entry(*from).or_insert_with(|| rate.clone());
        }
        position.reporting = Some(PositionInCurrency {
            value: value.map(|v| Money::new(v, to)),
            cost_basis: cost.filter(|_| any_cost).map(|c| Money::new(c, to)),
            rates: used.into_values().collect(),
            missing_rates: missing.into_iter().collect(),
        });
    }
    let shares = |map: BTreeMap<String, Decimal>| {
        map.into_iter()
            .map(|(key, amount)| Share {
                key,
                value: Money::new(amount, to),
                weight: super::build::weight(amount, total),
            })
            .collect()
    };
    let complete = all_missing.is_empty() && !overflowed;
    let mut worth = Some(Decimal::ZERO).filter(|_| net_worth_complete);
    for money in net_worth {
        match converted(rates, *money, to) {
            Some((amount, conversion)) => {
                if let Some(c) = conversion {
                    all_used.entry(c.from).or_insert_with(|| RateUsed::from(&c));
                }
                worth = worth.and_then(|w| w.checked_add(amount.amount));
            }
            None => {
                all_missing.insert(money.currency);
                worth = None;
            }
        }
    }
    Reporting {
        currency: to,
        rounding: ROUNDING.to_owned(),
        rates: all_used.into_values().collect(),
        complete,
        missing_rates: all_missing.into_iter().collect(),
        total_value: complete.then(|| Money::new(total, to)),
        by_asset_class: shares(class),
        by_account: shares(account),
        by_currency: shares(held_in),
        net_worth: worth.map(|w| Money::new(w, to)),
    }
}

/// `sum` plus a figure's conversion; `None` from the first figure that has no
/// conversion (or overflows) on. A missing figure adds nothing.
fn add_converted(
    sum: Option<Decimal>,
    original: Option<Money>,
    converted: Option<Money>,
) -> Option<Decimal> {
    match (original, converted) {
        (None, _) => sum,
        (Some(_), Some(c)) => sum?.checked_add(c.amount),
        (Some(_), None) => None,
    }
}

/// `quantity`, read from the institution on `read_on`, after the splits an
/// institution dated after that day: `None` when none did (or the day is unknown, and the
/// data is taken to be current), or the adjusted quantity would leave Decimal's
/// range.
fn split_adjusted(
    quantity: Decimal,
    read_on: Option<chrono::NaiveDate>,
    splits: &[super::views::SplitView],
) -> Option<Decimal> {
    let read_on = read_on?;
    let mut adjusted = None;
    // A detected split's date is when a sync saw the jump, not when it took effect.
    let dated = splits
        .iter()
        .filter(|s| s.source == SplitSource::Institution.as_str() && s.old > 0);
    for split in dated.filter(|s| s.date > read_on) {
        let before: Decimal = adjusted.unwrap_or(quantity);
        adjusted = Some(
            before
                .checked_mul(Decimal::from(split.new))?
                .checked_div(Decimal::from(split.old))?,
        );
    }
    adjusted
}

/// `total` shared over `quantity` units, to six decimal places (half to even).
fn per_unit(total: Money, quantity: Decimal) -> Option<Money> {
    if quantity <= Decimal::ZERO {
        return None;
    }
    let unit = total
        .amount
        .checked_div(quantity)?
        .round_dp_with_strategy(6, rust_decimal::RoundingStrategy::MidpointNearestEven);
    Some(Money::new(unit, total.currency))
}

/// Amounts summed per currency, counting what had none.
#[derive(Default)]
struct Sums {
    by_currency: BTreeMap<Currency, Decimal>,
    missing: usize,
}

impl Sums {
    fn add(&mut self, money: Option<Money>) {
        let Some(money) = money else {
            self.missing += 1;
            return;
        };
        let sum = self.by_currency.entry(money.currency).or_default();
        *sum = sum.checked_add(money.amount).unwrap_or(*sum);
    }

    fn money(&self) -> Vec<Money> {
        self.by_currency
            .iter()
            .map(|(currency, amount)| Money::new(*amount, *currency))
            .collect()
    }
}

fn allocation(holdings: &[HoldingView]) -> PositionAllocation {
    let mut class: BTreeMap<(Currency, String), Decimal> = BTreeMap::new();
    let mut account: BTreeMap<(Currency, String), Decimal> = BTreeMap::new();
    let mut totals: BTreeMap<Currency, Decimal> = BTreeMap::new();
    for h in holdings {
        let Some(value) = h.value else { continue };
        let security_type = h
            .security
            .instrument
            .as_ref()
            .map_or(h.security.security_type, |i| i.security_type);
        for (map, key) in [
            (&mut class, security_type.as_str().to_owned()),
            (
                &mut account,
                format!("{}/{}", h.connection_id, h.account_id),
            ),
        ] {
            let sum = map.entry((value.currency, key)).or_default();
            *sum = sum.checked_add(value.amount).unwrap_or(*sum);
        }
        let total = totals.entry(value.currency).or_default();
        *total = total.checked_add(value.amount).unwrap_or(*total);
    }
    let shares = |map: BTreeMap<(Currency, String), Decimal>| {
        map.into_iter()
            .map(|((currency, key), amount)| Share {
                key,
                value: Money::new(amount, currency),
                weight: super::build::weight(amount, totals[&currency]),
            })
            .collect()
    };
    PositionAllocation {
        by_asset_class: shares(class),
        by_account: shares(account),
        by_currency: totals
            .iter()
            .map(|(currency, amount)| Money::new(*amount, *currency))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// A holding of the master's instrument `i1` (split 2-for-1 on 2026-06-01) at
    /// `connection`.
    fn holding(connection: &str, quantity: &str, cost: &str) -> HoldingView {
        serde_json::from_value(json!({
            "connection_id": connection, "account_id": "a", "quantity": quantity,
            "cost_basis": {"amount": cost, "currency": "USD"}, "price": null, "value": null,
            "as_of": null,
            "security": {
                "id": "s", "name": "Example", "type": "equity", "ticker": "EXM",
                "cusip": null, "isin": "US0000000001", "sedol": null, "figi": null,
                "currency": "USD", "price": null, "price_as_of": null,
                "identifier_issues": [],
                "instrument": {
                    "id": "i1", "name": "Example", "type": "equity", "currency": "USD",
                    "ticker": "EXM", "figi": null, "isin": "US0000000001", "cusip": null,
                    "sedol": null, "matched_by": "isin", "weak": false,
                    "splits": [{"ratio": "2-for-1", "new": 2, "old": 1,
                                "date": "2026-06-01", "source": "institution"}]
                }
            }
        }))
        .unwrap()
    }

    /// Connection `id`, whose data was last read at `synced` (none: never).
    fn connection(id: &str, synced: Option<&str>) -> crate::portfolio::ConnectionView {
        serde_json::from_value(json!({
            "id": id, "institution": "x", "status": "active", "records_version": 1,
            "freshness": {"as_of": synced, "stale": false, "reason": null, "message": null}
        }))
        .unwrap()
    }

    #[test]
    fn a_holding_read_before_a_split_counts_at_its_adjusted_quantity() {
        let mut portfolio = Portfolio::empty("u".into());
        portfolio.connections = vec![
            // Read after the split: already in new shares.
            connection("c1", Some("2026-06-02T09:00:00Z")),
            // An institution down since before it: its 10 old shares are 20 now.
            connection("c2", Some("2026-05-30T09:00:00Z")),
            // Read on the day it took effect: taken as already split.
            connection("c3", Some("2026-06-01T23:00:00Z")),
        ];
        portfolio.holdings = vec![
            holding("c1", "20", "1000.00"),
            holding("c2", "10", "500.00"),
            holding("c3", "4", "100.00"),
        ];
        let p = positions(&portfolio);
        let [position] = &p.positions[..] else {
            panic!("one instrument, one position: {:?}", p.positions);
        };
        assert_eq!(position.quantity, Decimal::from(44));
        let adjusted: Vec<Option<Decimal>> = position
            .holdings
            .iter()
            .map(|h| h.split_adjusted_quantity)
            .collect();
        assert_eq!(adjusted, [None, Some(Decimal::from(20)), None]);
        assert_eq!(position.holdings[1].quantity, Decimal::from(10), "as sent");
        // 1,600.00 over 44 shares; the older holding's 500.00 over its 20.
        let per_unit = |m: &Option<Money>| m.map(|m| m.amount);
        assert_eq!(
            per_unit(&position.cost_basis_per_unit),
            Some(Decimal::new(36_363_636, 6))
        );
        assert_eq!(
            per_unit(&position.holdings[1].cost_basis_per_unit),
            Some(Decimal::from(25))
        );
    }

    #[test]
    fn data_of_an_unknown_day_or_read_after_every_split_is_not_adjusted() {
        let mut splits = holding("c", "10", "1").security.instrument.unwrap().splits;
        let day = |d: &str| d.parse().ok();
        assert_eq!(split_adjusted(Decimal::TEN, None, &splits), None);
        assert_eq!(split_adjusted(Decimal::TEN, day("2026-07-01"), &[]), None);
        assert_eq!(
            split_adjusted(Decimal::TEN, day("2026-07-01"), &splits),
            None
        );
        assert_eq!(
            split_adjusted(Decimal::TEN, day("2026-01-01"), &splits),
            Some(Decimal::from(20))
        );
        // A detected split is dated when its jump was seen: data read before that
        // day may already have it, so it is not adjusted for.
        splits[0].source = "detected".into();
        assert_eq!(
            split_adjusted(Decimal::TEN, day("2026-01-01"), &splits),
            None
        );
    }
}
