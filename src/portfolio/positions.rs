//! A user's positions: the portfolio's holdings summed per instrument of the
//! securities master, across every account and connection, each with the holdings
//! it is made of; and where the value sits by asset class, currency and account.
//! Sums are exact; amounts in different currencies are never added together (each
//! figure is a list with one amount per currency), and a sum that some holding
//! could not contribute to says so (`*_complete: false`) instead of looking whole.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::views::{Freshness, HoldingView, InstrumentView, Portfolio};
use crate::domain::{Currency, Money, SecurityType};

/// What `GET /v1/users/{user_id}/positions` answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Positions {
    pub user_id: String,
    pub freshness: Freshness,
    pub positions: Vec<Position>,
    pub allocation: PositionAllocation,
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
    /// The holdings it is made of, account by account.
    pub holdings: Vec<PositionHolding>,
}

/// One account's part of a position.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PositionHolding {
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
    pub price: Option<Money>,
    pub as_of: Option<chrono::NaiveDate>,
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
            Position {
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
                        price: h.price,
                        as_of: h.as_of,
                    })
                    .collect(),
            }
        })
        .collect();
    positions.sort_by(|a, b| a.name.cmp(&b.name));
    let allocation = allocation(&portfolio.holdings);
    Positions {
        user_id: portfolio.user_id.clone(),
        freshness: portfolio.freshness.clone(),
        positions,
        allocation,
    }
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
