//! A user's positions: the portfolio's holdings summed per instrument of the
//! securities master, across every account and connection, each with the holdings
//! it is made of; and where the value sits by asset class, currency and account.
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
use crate::domain::{Conversion, Currency, Money, ROUNDING, RateTable, SecurityType};
use crate::store::Household;

/// What `GET /v1/users/{user_id}/positions` answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Positions {
    pub user_id: String,
    pub freshness: Freshness,
    pub positions: Vec<Position>,
    pub allocation: PositionAllocation,
    /// With `?currency=`: the value in that one currency, and how it was converted.
    pub reporting: Option<Reporting>,
}

/// The positions in one reporting currency.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Reporting {
    pub currency: Currency,
    /// How every converted figure was computed and rounded.
    pub rounding: String,
    /// Every rate used below, one per currency converted from.
    pub rates: Vec<RateUsed>,
    /// Currencies whose figures could not be converted (no rate is known, or a
    /// figure beyond Decimal's range): what is valued in them is in no
    /// reporting-currency figure, and `complete` is false.
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
    /// Sum of the holdings' quantities, exact.
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
    pub value: Option<Money>,
    pub cost_basis: Option<Money>,
    /// `cost_basis` over `quantity`, to six decimal places, half to even.
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
        reporting: None,
    }
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
            let mut value = Sums::default();
            let mut cost = Sums::default();
            let mut quantity = Decimal::ZERO;
            for h in &holdings {
                quantity = quantity.checked_add(h.quantity).unwrap_or(quantity);
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
                    .map(|h| PositionHolding {
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
                        value: h.value,
                        cost_basis: h.cost_basis,
                        cost_basis_per_unit: h.cost_basis.and_then(|c| per_unit(c, h.quantity)),
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

/// Adds every figure of `positions` in `to`, converted with `rates` (none: no
/// rate is known yet, and only what is already in `to` counts), and returns
/// their total and allocation in `to`.
pub fn in_currency(
    positions: &mut [Position],
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
            let converted = match rates {
                Some(table) => table.convert(money, to).ok(),
                None if money.currency == to => Some((money, None)),
                None => None,
            };
            match converted {
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
