//! Exchange rates and conversion into a reporting currency.
//!
//! A rate says how many units of `quote` one unit of `base` bought on `date`, as
//! `source` published it. A provider publishes every rate against one base (the
//! ECB against the euro), so a conversion between two other currencies crosses
//! through it: `rate = quote-per-base(to) / quote-per-base(from)`, computed in
//! `Decimal` to its 28 significant digits (the rate each figure states is that
//! one). A converted figure is `amount × rate`, rounded once to the target
//! currency's minor unit, half to even ([`ROUNDING`]). A currency without a rate is an error the caller
//! shows, never a zero.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use rust_decimal::{Decimal, RoundingStrategy};

use super::money::{Currency, Money};

/// How every converted figure is rounded, in words, for the API and the docs.
pub const ROUNDING: &str = "amount × rate at full Decimal precision, then rounded once to the \
     reporting currency's minor unit (ISO 4217), half to even";

/// One published rate: one `base` bought `rate` units of `quote` on `date`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rate {
    pub base: Currency,
    pub quote: Currency,
    pub rate: Decimal,
    pub date: NaiveDate,
    pub source: String,
}

/// The rate a conversion used, and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conversion {
    pub from: Currency,
    pub to: Currency,
    /// Units of `to` per unit of `from`, as used (the cross rate through the
    /// provider's base where neither currency is it).
    pub rate: Decimal,
    /// The publication date of the rate; of the older leg for a cross rate.
    pub date: NaiveDate,
    pub source: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConversionError {
    #[error("no exchange rate for {0}")]
    MissingRate(Currency),
    #[error("{0} is beyond the range an exact conversion can hold")]
    OutOfRange(Money),
}

/// The latest rates of one provider, all against its base currency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateTable {
    base: Currency,
    source: String,
    per_base: BTreeMap<Currency, (Decimal, NaiveDate)>,
}

impl RateTable {
    /// The newest rate of each currency among `rates`. Rates against another base
    /// than the first one's, from another source, or not above zero are left out:
    /// they cannot be crossed with the rest.
    pub fn latest(rates: impl IntoIterator<Item = Rate>) -> Option<Self> {
        let mut rates = rates.into_iter().peekable();
        let first = rates.peek()?;
        let mut table = Self {
            base: first.base,
            source: first.source.clone(),
            per_base: BTreeMap::new(),
        };
        for r in rates {
            if r.base != table.base || r.source != table.source || r.rate <= Decimal::ZERO {
                continue;
            }
            let newer = table
                .per_base
                .get(&r.quote)
                .is_none_or(|(_, date)| r.date > *date);
            if newer {
                table.per_base.insert(r.quote, (r.rate, r.date));
            }
        }
        Some(table)
    }

    pub fn base(&self) -> Currency {
        self.base
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// Each currency's rate against the base, with its date, by currency.
    pub fn rates(&self) -> impl Iterator<Item = (Currency, Decimal, NaiveDate)> + '_ {
        self.per_base
            .iter()
            .map(|(currency, (rate, date))| (*currency, *rate, *date))
    }

    /// The newest publication date among the rates.
    pub fn newest_date(&self) -> Option<NaiveDate> {
        self.per_base.values().map(|(_, date)| *date).max()
    }

    /// How many units of `to` one unit of `from` buys; `None` when they are the
    /// same currency (nothing to convert).
    pub fn rate(
        &self,
        from: Currency,
        to: Currency,
    ) -> Result<Option<Conversion>, ConversionError> {
        if from == to {
            return Ok(None);
        }
        let leg = |currency: Currency| {
            if currency == self.base {
                Ok((Decimal::ONE, None))
            } else {
                self.per_base
                    .get(&currency)
                    .map(|(rate, date)| (*rate, Some(*date)))
                    .ok_or(ConversionError::MissingRate(currency))
            }
        };
        let (from_rate, from_date) = leg(from)?;
        let (to_rate, to_date) = leg(to)?;
        // Rates are above zero (see `latest`), so only an overflow fails here.
        let out_of_range = || ConversionError::OutOfRange(Money::new(Decimal::ONE, from));
        let rate = to_rate.checked_div(from_rate).ok_or_else(out_of_range)?;
        let date = match (from_date, to_date) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => a.or(b).ok_or_else(out_of_range)?,
        };
        Ok(Some(Conversion {
            from,
            to,
            rate: rate.normalize(),
            date,
            source: self.source.clone(),
        }))
    }

    /// `money` in `to`, rounded as [`ROUNDING`] says, with the rate used (`None`
    /// when it already was in `to`).
    pub fn convert(
        &self,
        money: Money,
        to: Currency,
    ) -> Result<(Money, Option<Conversion>), ConversionError> {
        let Some(conversion) = self.rate(money.currency, to)? else {
            return Ok((money, None));
        };
        let amount = money
            .amount
            .checked_mul(conversion.rate)
            .ok_or(ConversionError::OutOfRange(money))?
            .round_dp_with_strategy(to.minor_digits(), RoundingStrategy::MidpointNearestEven);
        Ok((Money::new(amount, to), Some(conversion)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(c: &str) -> Currency {
        c.parse().unwrap()
    }

    fn dec(t: &str) -> Decimal {
        t.parse().unwrap()
    }

    fn rate(quote: &str, value: &str, day: u32) -> Rate {
        Rate {
            base: code("EUR"),
            quote: code(quote),
            rate: dec(value),
            date: NaiveDate::from_ymd_opt(2022, 4, day).unwrap(),
            source: "ecb".into(),
        }
    }

    fn table() -> RateTable {
        RateTable::latest([
            rate("USD", "1.0540", 29),
            rate("USD", "1.0500", 28),
            rate("GBP", "0.83908", 29),
            rate("JPY", "137.01", 28),
        ])
        .unwrap()
    }

    #[test]
    fn the_newest_rate_of_each_currency_is_used() {
        let usd = table().rate(code("EUR"), code("USD")).unwrap().unwrap();
        assert_eq!(usd.rate, dec("1.054"));
        assert_eq!(usd.date, NaiveDate::from_ymd_opt(2022, 4, 29).unwrap());
    }

    #[test]
    fn conversions_cross_through_the_base_and_round_half_to_even_once() {
        let t = table();
        // 1000 USD → EUR: 1000 / 1.0540 = 948.766603415559772296015180…
        let (eur, used) = t
            .convert(Money::new(dec("1000.00"), code("USD")), code("EUR"))
            .unwrap();
        assert_eq!(eur, Money::new(dec("948.77"), code("EUR")));
        assert_eq!(used.unwrap().from, code("USD"));
        // 1000 USD → GBP: 1000 × 0.83908 / 1.0540 = 796.0910815939278937381404…
        let (gbp, used) = t
            .convert(Money::new(dec("1000.00"), code("USD")), code("GBP"))
            .unwrap();
        assert_eq!(gbp, Money::new(dec("796.09"), code("GBP")));
        assert_eq!(used.unwrap().rate, dec("0.7960910815939278937381404175"));
        // JPY has no minor unit: 100 EUR → 13701 JPY exactly.
        let (jpy, _) = t
            .convert(Money::new(dec("100"), code("EUR")), code("JPY"))
            .unwrap();
        assert_eq!(jpy.amount, dec("13701"));
        // Ties go to the even digit: 0.0125 EUR at 10 SEK is 0.125 SEK → 0.12,
        // 0.0135 EUR is 0.135 SEK → 0.14.
        let sek = RateTable::latest([rate("SEK", "10", 29)]).unwrap();
        let to_sek = |amount: &str| {
            sek.convert(Money::new(dec(amount), code("EUR")), code("SEK"))
                .unwrap()
                .0
                .amount
        };
        assert_eq!(to_sek("0.0125"), dec("0.12"));
        assert_eq!(to_sek("0.0135"), dec("0.14"));
    }

    #[test]
    fn a_missing_rate_is_an_error_never_a_zero() {
        let t = table();
        assert_eq!(
            t.convert(Money::new(dec("5"), code("CHF")), code("EUR")),
            Err(ConversionError::MissingRate(code("CHF")))
        );
        assert_eq!(
            t.convert(Money::new(dec("5"), code("EUR")), code("CHF")),
            Err(ConversionError::MissingRate(code("CHF")))
        );
        let (same, used) = t
            .convert(Money::new(dec("5.123"), code("CHF")), code("CHF"))
            .unwrap();
        assert_eq!((same.amount, used), (dec("5.123"), None));
    }

    #[test]
    fn figures_beyond_decimal_range_fail_instead_of_panicking() {
        let t = table();
        let huge = Money::new(Decimal::MAX, code("EUR"));
        assert!(matches!(
            t.convert(huge, code("JPY")),
            Err(ConversionError::OutOfRange(_))
        ));
    }
}
