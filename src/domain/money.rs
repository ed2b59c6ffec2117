//! Money: an exact `Decimal` amount beside an ISO 4217 currency code.

use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// An ISO 4217 alphabetic currency code, parsed so that it can only hold three
/// upper-case ASCII letters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Currency([u8; 3]);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("`{0}` is not an ISO 4217 currency code (three letters, e.g. USD)")]
pub struct CurrencyError(pub String);

impl Currency {
    pub fn as_str(&self) -> &str {
        // Built only from ASCII letters, so always valid UTF-8.
        std::str::from_utf8(&self.0).unwrap_or("XXX")
    }

    /// ISO 4217 knows the code (three letters alone do not make a currency).
    pub fn is_iso(self) -> bool {
        iso_currency::Currency::from_code(self.as_str()).is_some()
    }

    /// The currency's smallest unit (0.01 for USD, 1 for JPY, 0.001 for KWD); 0.01
    /// where ISO 4217 gives none.
    pub fn minor_unit(self) -> Decimal {
        Decimal::new(1, self.minor_digits())
    }

    /// Decimal places of the currency's minor unit (2 for USD, 0 for JPY).
    pub fn minor_digits(self) -> u32 {
        iso_currency::Currency::from_code(self.as_str())
            .and_then(|c| c.exponent())
            .map_or(2, u32::from)
            .min(28)
    }
}

impl FromStr for Currency {
    type Err = CurrencyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let trimmed = s.trim();
        let bytes = trimmed.as_bytes();
        if bytes.len() != 3 || !bytes.iter().all(u8::is_ascii_alphabetic) {
            return Err(CurrencyError(s.to_owned()));
        }
        let mut code = [0u8; 3];
        for (slot, byte) in code.iter_mut().zip(bytes) {
            *slot = byte.to_ascii_uppercase();
        }
        Ok(Self(code))
    }
}

impl TryFrom<String> for Currency {
    type Error = CurrencyError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        value.parse()
    }
}

impl From<Currency> for String {
    fn from(value: Currency) -> Self {
        value.as_str().to_owned()
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An exact amount of one currency. Serialized with the amount as a string so that
/// no JSON reader turns it into a float on the way.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Money {
    /// Exact decimal, to the last digit the institution sent.
    #[serde(with = "rust_decimal::serde::str")]
    pub amount: Decimal,
    pub currency: Currency,
}

impl Money {
    pub fn new(amount: Decimal, currency: Currency) -> Self {
        Self { amount, currency }
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.amount, self.currency)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn currency_codes_are_normalized_and_checked() {
        assert_eq!(
            "usd".parse::<Currency>().map(|c| c.to_string()),
            Ok("USD".into())
        );
        assert!("US".parse::<Currency>().is_err());
        assert!("U$D".parse::<Currency>().is_err());
    }

    #[test]
    fn iso_4217_is_checked_by_its_list_not_its_shape() {
        let code = |c: &str| c.parse::<Currency>().unwrap();
        assert!(code("USD").is_iso());
        assert!(code("KWD").is_iso());
        assert!(!code("ZZZ").is_iso());
        assert_eq!(code("JPY").minor_unit(), Decimal::ONE);
        assert_eq!(code("KWD").minor_unit(), Decimal::new(1, 3));
        assert_eq!(code("EUR").minor_unit(), Decimal::new(1, 2));
    }

    #[test]
    fn money_serializes_amount_as_exact_text() {
        let money = Money::new(
            "12345678901234567.89".parse().unwrap(),
            "USD".parse().unwrap(),
        );
        let json = serde_json::to_string(&money).unwrap();
        assert_eq!(
            json,
            r#"{"amount":"12345678901234567.89","currency":"USD"}"#
        );
    }
}
