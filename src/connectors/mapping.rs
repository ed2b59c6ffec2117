//! Mapping: one institution record (JSON) → one canonical record, following the
//! field mappings of a connector file. Numbers are read from the digits the
//! institution sent, never through `f64`.

use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;

use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;
use rust_decimal::Decimal;
use serde_json::Value;
use serde_json_path::JsonPath;

use super::SignConvention;
use crate::domain::{
    Account, Balances, Currency, Holding, InvestmentType, Money, Security, Transaction,
    TransactionStatus,
};

#[derive(Debug, Clone)]
pub enum Source {
    Path(JsonPath),
    Const(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeFormat {
    Iso8601,
    EpochSeconds,
    EpochMillis,
    Pattern(&'static str),
}

impl TimeFormat {
    pub fn parse(raw: &str) -> Result<Self, String> {
        match raw {
            "iso8601" => Ok(Self::Iso8601),
            "epoch_seconds" => Ok(Self::EpochSeconds),
            "epoch_millis" => Ok(Self::EpochMillis),
            pattern if pattern.contains('%') => {
                let items = chrono::format::StrftimeItems::new(pattern);
                if items
                    .clone()
                    .any(|i| matches!(i, chrono::format::Item::Error))
                {
                    return Err(format!("`{pattern}` is not a valid strftime pattern"));
                }
                Ok(Self::Pattern(intern(pattern)))
            }
            other => Err(format!(
                "unknown format `{other}`: use iso8601, epoch_seconds, epoch_millis or a strftime pattern like %m/%d/%Y"
            )),
        }
    }
}

/// The one `'static` copy of a date pattern. Connectors are validated again on
/// every reload, and a pattern is leaked only the first time it is seen, so the
/// compiled format can be `Copy` without memory growing with each reload.
fn intern(pattern: &str) -> &'static str {
    static PATTERNS: std::sync::Mutex<BTreeSet<&'static str>> =
        std::sync::Mutex::new(BTreeSet::new());
    let mut patterns = PATTERNS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    match patterns.get(pattern) {
        Some(known) => known,
        None => {
            let leaked: &'static str = Box::leak(pattern.to_owned().into_boxed_str());
            patterns.insert(leaked);
            leaked
        }
    }
}

#[derive(Debug, Clone)]
pub struct CompiledField {
    pub source: Source,
    pub default: Option<String>,
    pub map: BTreeMap<String, String>,
    pub minor_units: Option<u32>,
    pub format: TimeFormat,
    /// Zone of times sent without an offset; UTC when `None`.
    pub timezone: Option<Tz>,
}

/// Why one record could not be mapped. Never carries the record's values beyond
/// the field's own offending text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldError {
    #[error("`{0}` is missing")]
    Missing(&'static str),
    #[error("`{field}`: {problem}")]
    Invalid {
        field: &'static str,
        problem: String,
    },
}

impl FieldError {
    /// The canonical field the error is about (`record` for a whole-record marker).
    pub fn field(&self) -> &'static str {
        match self {
            Self::Missing(field) | Self::Invalid { field, .. } => field,
        }
    }
}

/// The compiled field mappings of one endpoint.
#[derive(Debug, Clone)]
pub struct Mapping {
    fields: BTreeMap<&'static str, CompiledField>,
}

impl Mapping {
    pub fn new(fields: BTreeMap<&'static str, CompiledField>) -> Self {
        Self { fields }
    }

    /// Where in a record the canonical field `name` is read from, when from a path.
    pub fn path(&self, name: &str) -> Option<&JsonPath> {
        match &self.fields.get(name)?.source {
            Source::Path(path) => Some(path),
            Source::Const(_) => None,
        }
    }

    /// The canonical fields this mapping fills.
    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.fields.keys().copied()
    }

    /// The field's value as text, after defaults and the value map; `None` when the
    /// record has nothing there and no default is declared.
    pub fn text(&self, record: &Value, name: &'static str) -> Result<Option<String>, FieldError> {
        let Some(field) = self.fields.get(name) else {
            return Ok(None);
        };
        let found = match &field.source {
            Source::Const(c) if c.is_empty() => None,
            Source::Const(c) => Some(c.clone()),
            Source::Path(path) => match path.query(record).at_most_one() {
                Ok(Some(Value::Null)) | Ok(None) => None,
                Ok(Some(Value::String(s))) => Some(s.clone()),
                Ok(Some(Value::Number(n))) => Some(n.to_string()),
                Ok(Some(Value::Bool(b))) => Some(b.to_string()),
                Ok(Some(_)) => {
                    return Err(FieldError::Invalid {
                        field: name,
                        problem: "is an object or array, not a value".into(),
                    });
                }
                Err(_) => {
                    return Err(FieldError::Invalid {
                        field: name,
                        problem: "the path matches more than one value".into(),
                    });
                }
            },
        };
        let value = found.or_else(|| field.default.clone());
        Ok(value.map(|v| field.map.get(&v).cloned().unwrap_or(v)))
    }

    pub fn required_text(&self, record: &Value, name: &'static str) -> Result<String, FieldError> {
        self.text(record, name)?.ok_or(FieldError::Missing(name))
    }

    pub fn decimal(
        &self,
        record: &Value,
        name: &'static str,
    ) -> Result<Option<Decimal>, FieldError> {
        let Some(text) = self.text(record, name)? else {
            return Ok(None);
        };
        let invalid = |problem: String| FieldError::Invalid {
            field: name,
            problem,
        };
        let parsed =
            parse_decimal(&text).map_err(|e| invalid(format!("`{text}` is not a number ({e})")))?;
        match self.fields.get(name).and_then(|f| f.minor_units) {
            None => Ok(Some(parsed)),
            Some(scale) => {
                if parsed.scale() != 0 {
                    return Err(invalid(format!(
                        "`{text}` should be a whole number of minor units"
                    )));
                }
                let mut amount = parsed;
                amount
                    .set_scale(scale)
                    .map_err(|e| invalid(e.to_string()))?;
                Ok(Some(amount))
            }
        }
    }

    pub fn required_decimal(
        &self,
        record: &Value,
        name: &'static str,
    ) -> Result<Decimal, FieldError> {
        self.decimal(record, name)?.ok_or(FieldError::Missing(name))
    }

    pub fn date(
        &self,
        record: &Value,
        name: &'static str,
    ) -> Result<Option<NaiveDate>, FieldError> {
        let Some(text) = self.text(record, name)? else {
            return Ok(None);
        };
        let (format, zone) = self.time_format(name);
        parse_date(&text, format, zone)
            .map(Some)
            .ok_or_else(|| FieldError::Invalid {
                field: name,
                problem: format!("`{text}` is not a date in the declared format"),
            })
    }

    pub fn date_time(
        &self,
        record: &Value,
        name: &'static str,
    ) -> Result<Option<DateTime<Utc>>, FieldError> {
        let Some(text) = self.text(record, name)? else {
            return Ok(None);
        };
        let (format, zone) = self.time_format(name);
        parse_date_time(&text, format, zone)
            .map(Some)
            .ok_or_else(|| FieldError::Invalid {
                field: name,
                problem: format!("`{text}` is not a date-time in the declared format"),
            })
    }

    fn time_format(&self, name: &str) -> (TimeFormat, Tz) {
        self.fields
            .get(name)
            .map_or((TimeFormat::Iso8601, Tz::UTC), |f| {
                (f.format, f.timezone.unwrap_or(Tz::UTC))
            })
    }

    pub fn currency(&self, record: &Value, name: &'static str) -> Result<Currency, FieldError> {
        let text = self.required_text(record, name)?;
        text.parse()
            .map_err(|e: crate::domain::CurrencyError| FieldError::Invalid {
                field: name,
                problem: e.to_string(),
            })
    }

    pub fn parsed<T: FromStr<Err = String>>(
        &self,
        record: &Value,
        name: &'static str,
    ) -> Result<Option<T>, FieldError> {
        match self.text(record, name)? {
            None => Ok(None),
            Some(text) => text
                .parse()
                .map(Some)
                .map_err(|problem| FieldError::Invalid {
                    field: name,
                    problem,
                }),
        }
    }
}

/// Exact decimal from an institution's text: plain (`-12.50`) or scientific (`1e-9`).
pub fn parse_decimal(text: &str) -> Result<Decimal, rust_decimal::Error> {
    let text = text.trim();
    if text.contains(['e', 'E']) {
        Decimal::from_scientific(text)
    } else {
        Decimal::from_str_exact(text)
    }
}

/// A date as the institution meant it: a time with an offset or an epoch timestamp
/// falls on its date in the declared zone.
fn parse_date(text: &str, format: TimeFormat, zone: Tz) -> Option<NaiveDate> {
    match format {
        TimeFormat::Iso8601 => NaiveDate::parse_from_str(text, "%Y-%m-%d")
            .ok()
            .or_else(|| {
                DateTime::parse_from_rfc3339(text)
                    .ok()
                    .map(|d| d.with_timezone(&zone).date_naive())
            }),
        TimeFormat::Pattern(p) => NaiveDate::parse_from_str(text, p).ok().or_else(|| {
            parse_date_time(text, format, zone).map(|d| d.with_timezone(&zone).date_naive())
        }),
        TimeFormat::EpochSeconds | TimeFormat::EpochMillis => {
            parse_date_time(text, format, zone).map(|d| d.with_timezone(&zone).date_naive())
        }
    }
}

/// An instant; a time without an offset is read in the declared zone.
fn parse_date_time(text: &str, format: TimeFormat, zone: Tz) -> Option<DateTime<Utc>> {
    let local = |naive: NaiveDateTime| {
        zone.from_local_datetime(&naive)
            .earliest()
            .map(|d| d.with_timezone(&Utc))
    };
    match format {
        TimeFormat::Iso8601 => DateTime::parse_from_rfc3339(text)
            .ok()
            .map(|d| d.with_timezone(&Utc))
            .or_else(|| {
                NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S")
                    .ok()
                    .and_then(local)
            })
            .or_else(|| {
                NaiveDate::parse_from_str(text, "%Y-%m-%d")
                    .ok()
                    .and_then(|d| d.and_hms_opt(0, 0, 0))
                    .and_then(local)
            }),
        TimeFormat::EpochSeconds => text
            .parse::<i64>()
            .ok()
            .and_then(|s| DateTime::from_timestamp(s, 0)),
        TimeFormat::EpochMillis => text
            .parse::<i64>()
            .ok()
            .and_then(DateTime::from_timestamp_millis),
        TimeFormat::Pattern(p) => DateTime::parse_from_str(text, p)
            .ok()
            .map(|d| d.with_timezone(&Utc))
            .or_else(|| NaiveDateTime::parse_from_str(text, p).ok().and_then(local))
            .or_else(|| {
                NaiveDate::parse_from_str(text, p)
                    .ok()
                    .and_then(|d| d.and_hms_opt(0, 0, 0))
                    .and_then(local)
            }),
    }
}

pub fn account(
    m: &Mapping,
    record: &Value,
    fetched_at: DateTime<Utc>,
) -> Result<Account, FieldError> {
    let currency = m.currency(record, "currency")?;
    Ok(Account {
        external_id: m.required_text(record, "external_id")?,
        account_type: m
            .parsed(record, "account_type")?
            .ok_or(FieldError::Missing("account_type"))?,
        subtype: m.text(record, "subtype")?,
        name: m.required_text(record, "name")?,
        official_name: m.text(record, "official_name")?,
        mask: m.text(record, "mask")?,
        currency,
        balances: Balances {
            current: Money::new(m.required_decimal(record, "balance_current")?, currency),
            available: m
                .decimal(record, "balance_available")?
                .map(|a| Money::new(a, currency)),
            as_of: m.date_time(record, "balance_as_of")?.unwrap_or(fetched_at),
        },
    })
}

/// A holding and the security it holds (embedded in the same record).
pub fn holding(
    m: &Mapping,
    security: &Mapping,
    record: &Value,
) -> Result<(Holding, Security), FieldError> {
    let currency = m.currency(record, "currency")?;
    let money = |name| {
        m.decimal(record, name)
            .map(|d| d.map(|a| Money::new(a, currency)))
    };
    let holding = Holding {
        account_external_id: m.required_text(record, "account_external_id")?,
        security_external_id: m.required_text(record, "security_external_id")?,
        quantity: m.required_decimal(record, "quantity")?,
        cost_basis: money("cost_basis")?,
        price: money("price")?,
        value: money("value")?,
        as_of: m.date(record, "as_of")?,
    };
    let security = Security {
        external_id: security
            .text(record, "external_id")?
            .unwrap_or_else(|| holding.security_external_id.clone()),
        ticker: security.text(record, "ticker")?,
        cusip: security.text(record, "cusip")?,
        isin: security.text(record, "isin")?,
        sedol: security.text(record, "sedol")?,
        figi: security.text(record, "figi")?,
        name: security.required_text(record, "name")?,
        security_type: security
            .parsed(record, "security_type")?
            .ok_or(FieldError::Missing("security_type"))?,
        currency: security.currency(record, "currency")?,
        price: security.decimal(record, "price")?,
        price_as_of: security.date(record, "price_as_of")?,
    };
    Ok((holding, security))
}

pub fn transaction(
    m: &Mapping,
    sign: SignConvention,
    record: &Value,
) -> Result<Transaction, FieldError> {
    let currency = m.currency(record, "currency")?;
    let raw = m.required_decimal(record, "amount")?;
    let mut amount = match sign {
        SignConvention::InflowPositive => raw,
        SignConvention::OutflowPositive => -raw,
    };
    // Flipping 0.00 must not produce a "-0.00" the institution never sent.
    if amount.is_zero() {
        amount.set_sign_positive(true);
    }
    Ok(Transaction {
        external_id: m.required_text(record, "external_id")?,
        account_external_id: m.required_text(record, "account_external_id")?,
        amount: Money::new(amount, currency),
        date: m.date(record, "date")?.ok_or(FieldError::Missing("date"))?,
        status: m
            .parsed(record, "status")?
            .unwrap_or(TransactionStatus::Posted),
        pending_external_id: m.text(record, "pending_external_id")?,
        description: m.required_text(record, "description")?,
        category: m.text(record, "category")?,
        investment_type: m.parsed::<InvestmentType>(record, "investment_type")?,
        security_external_id: m.text(record, "security_external_id")?,
        quantity: m.decimal(record, "quantity")?,
        price: m.decimal(record, "price")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(path: &str) -> CompiledField {
        CompiledField {
            source: Source::Path(JsonPath::parse(path).unwrap()),
            default: None,
            map: BTreeMap::new(),
            minor_units: None,
            format: TimeFormat::Iso8601,
            timezone: None,
        }
    }

    #[test]
    fn json_numbers_keep_every_digit() {
        let record: Value =
            serde_json::from_str(r#"{"a": 12345678901234567.89, "q": 0.000000001, "s": "1e-9"}"#)
                .unwrap();
        let m = Mapping::new(BTreeMap::from([
            ("a", field("$.a")),
            ("q", field("$.q")),
            ("s", field("$.s")),
        ]));
        assert_eq!(
            m.required_decimal(&record, "a").unwrap().to_string(),
            "12345678901234567.89"
        );
        assert_eq!(
            m.required_decimal(&record, "q").unwrap().to_string(),
            "0.000000001"
        );
        assert_eq!(
            m.required_decimal(&record, "s").unwrap().to_string(),
            "0.000000001"
        );
    }

    #[test]
    fn minor_units_take_the_declared_scale() {
        let record: Value = serde_json::from_str(r#"{"cents": "-152337"}"#).unwrap();
        let mut cents = field("$.cents");
        cents.minor_units = Some(2);
        let m = Mapping::new(BTreeMap::from([("amount", cents)]));
        assert_eq!(
            m.required_decimal(&record, "amount").unwrap().to_string(),
            "-1523.37"
        );
    }

    #[test]
    fn dates_in_declared_formats() {
        let utc = Tz::UTC;
        assert_eq!(
            parse_date("11/20/2026", TimeFormat::parse("%m/%d/%Y").unwrap(), utc),
            NaiveDate::from_ymd_opt(2026, 11, 20)
        );
        assert_eq!(
            parse_date("1795132800", TimeFormat::EpochSeconds, utc),
            NaiveDate::from_ymd_opt(2026, 11, 20)
        );
        assert!(TimeFormat::parse("dd/mm").is_err());
    }

    #[test]
    fn time_zones_decide_dates_and_instants() {
        let new_york: Tz = "America/New_York".parse().unwrap();
        // 2026-11-20T03:00:00Z is still the 19th in New York.
        assert_eq!(
            parse_date("1795143600", TimeFormat::EpochSeconds, new_york),
            NaiveDate::from_ymd_opt(2026, 11, 19)
        );
        assert_eq!(
            parse_date("1795143600000", TimeFormat::EpochMillis, Tz::UTC),
            NaiveDate::from_ymd_opt(2026, 11, 20)
        );
        // A local time without an offset is read in the declared zone (EST, UTC-5).
        let pattern = TimeFormat::parse("%m/%d/%Y %H:%M").unwrap();
        assert_eq!(
            parse_date_time("11/20/2026 09:30", pattern, new_york).map(|d| d.to_rfc3339()),
            Some("2026-11-20T14:30:00+00:00".to_owned())
        );
        // An explicit offset wins over the zone.
        assert_eq!(
            parse_date_time("2026-11-20T09:30:00+01:00", TimeFormat::Iso8601, new_york)
                .map(|d| d.to_rfc3339()),
            Some("2026-11-20T08:30:00+00:00".to_owned())
        );
    }

    #[test]
    fn value_maps_and_defaults_apply() {
        let record: Value = serde_json::from_str(r#"{"pending": true}"#).unwrap();
        let mut status = field("$.pending");
        status.map = BTreeMap::from([
            ("true".into(), "pending".into()),
            ("false".into(), "posted".into()),
        ]);
        let mut kind = field("$.kind");
        kind.default = Some("other".into());
        let m = Mapping::new(BTreeMap::from([("status", status), ("kind", kind)]));
        assert_eq!(
            m.text(&record, "status").unwrap().as_deref(),
            Some("pending")
        );
        assert_eq!(m.text(&record, "kind").unwrap().as_deref(), Some("other"));
    }
}
