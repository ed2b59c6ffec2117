//! Mapping: one institution record (JSON) → one canonical record, following the
//! field mappings of a connector file. Numbers are read from the digits the
//! institution sent, never through `f64`. A record is read as an [`Item`]: with the
//! elements of its response's joined lists it refers to, and the account a fan-out
//! request was for, which fields may read from too; an account may be assembled
//! from several endpoints' records ([`account`] takes them in layers).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::{Arc, LazyLock};

use chrono::format::{Item as FormatItem, Parsed, StrftimeItems};
use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;
use foldhash::HashMap;
use rust_decimal::Decimal;
use serde_json::Value;
use serde_json_path::JsonPath;

use super::SignConvention;
use super::record::{ManyValues, Node, NotScalar, Record};
use crate::domain::{
    Account, BalanceMeaning, Balances, Currency, Holding, InvestmentType, Money, Security,
    Transaction, TransactionStatus,
};

#[derive(Debug, Clone)]
pub enum Source {
    Path(FieldPath),
    Const(String),
    /// The institution's id of the account a fan-out request was for.
    AccountId,
}

/// A field's JSONPath. The common case, a chain of member names (`$.a.b`), is
/// read by looking the names up: the general query allocates a list of nodes for
/// every field of every record, which profiles of first syncs showed among the
/// worker's costliest work.
#[derive(Debug, Clone)]
pub struct FieldPath {
    path: JsonPath,
    /// The member names, when the path is nothing but `$` and `.name`s.
    names: Option<Vec<String>>,
}

impl FieldPath {
    /// `path`, parsed from `raw`.
    pub fn new(path: JsonPath, raw: &str) -> Self {
        Self {
            names: member_names(raw),
            path,
        }
    }

    pub fn json_path(&self) -> &JsonPath {
        &self.path
    }

    /// The one value the path selects in `node`, if any; `Err` when it selects
    /// more than one.
    pub fn at_most_one<'r>(&self, node: &Node<'r>) -> Result<Option<Node<'r>>, ManyValues> {
        match &self.names {
            Some(names) => Ok(names
                .iter()
                .try_fold(node.clone(), |node, name| node.get(name))),
            None => node.select(&self.path),
        }
    }
}

/// The names of a path written as `$.a.b…` with names in the shorthand RFC 9535
/// allows unquoted (ASCII letters, digits and `_`, not starting with a digit);
/// `None` for any other path, which the general query reads.
pub(super) fn member_names(raw: &str) -> Option<Vec<String>> {
    let rest = raw.strip_prefix("$.")?;
    rest.split('.')
        .map(|name| {
            let mut chars = name.chars();
            let first = chars.next()?;
            (first.is_ascii_alphabetic() || first == '_')
                .then_some(())
                .filter(|()| chars.all(|c| c.is_ascii_alphanumeric() || c == '_'))
                .map(|()| name.to_owned())
        })
        .collect()
}

/// Where a field's path is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// The record itself.
    Record,
    /// The record of the account a fan-out request was for.
    Account,
    /// The element of the named joined list the record refers to.
    Join(String),
}

/// A decimal whose sign is carried by another field.
#[derive(Debug, Clone)]
pub struct SignFrom {
    pub path: FieldPath,
    /// Indicator value → whether the canonical value is negative.
    pub negative: BTreeMap<String, bool>,
}

/// The account a fan-out request was for.
#[derive(Debug, Clone, PartialEq)]
pub struct Parent {
    pub external_id: String,
    /// Its record as the accounts endpoint returned it.
    pub record: Value,
}

/// One record as an endpoint fetched it, with what it may read besides itself.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub record: Record,
    /// Join name → the element the record refers to, or why there is none.
    pub joined: BTreeMap<String, Result<Value, String>>,
    /// The account a fan-out request was for.
    pub account: Option<Arc<Parent>>,
}

impl Item {
    /// A record that reads nothing besides itself.
    pub fn plain(record: Value) -> Self {
        Self::read(Record::Tree(record))
    }

    /// A record as its page held it, reading nothing besides itself.
    pub fn read(record: Record) -> Self {
        Self {
            record,
            joined: BTreeMap::new(),
            account: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeFormat {
    Iso8601,
    EpochSeconds,
    EpochMillis,
    Pattern(&'static Pattern),
}

/// A strftime pattern, read into chrono's items once: every date and time of
/// every record is parsed with it, and reading the pattern again for each was
/// about as much work as the parse.
#[derive(Debug)]
pub struct Pattern {
    text: &'static str,
    items: Box<[FormatItem<'static>]>,
}

impl Pattern {
    fn new(text: &'static str) -> Self {
        let items = StrftimeItems::new(text).collect();
        Self { text, items }
    }

    /// The fields `text` gives, or why it does not fit.
    fn read(&self, text: &str) -> chrono::ParseResult<Parsed> {
        let mut parsed = Parsed::new();
        chrono::format::parse(&mut parsed, text, self.items.iter())?;
        Ok(parsed)
    }

    // What chrono's `parse_from_str`s make of the fields.
    fn date(&self, text: &str) -> Option<NaiveDate> {
        self.read(text).and_then(|p| p.to_naive_date()).ok()
    }

    fn date_time(&self, text: &str) -> Option<NaiveDateTime> {
        self.read(text)
            .and_then(|p| p.to_naive_datetime_with_offset(0))
            .ok()
    }

    fn with_offset(&self, text: &str) -> Option<DateTime<chrono::FixedOffset>> {
        self.read(text).and_then(|p| p.to_datetime()).ok()
    }
}

/// Patterns are the same when their text is.
impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Eq for Pattern {}

/// ISO 8601's date and local date-time, as patterns.
static ISO_DATE: LazyLock<Pattern> = LazyLock::new(|| Pattern::new("%Y-%m-%d"));
static ISO_LOCAL: LazyLock<Pattern> = LazyLock::new(|| Pattern::new("%Y-%m-%dT%H:%M:%S"));

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
fn intern(pattern: &str) -> &'static Pattern {
    static PATTERNS: std::sync::Mutex<BTreeMap<&'static str, &'static Pattern>> =
        std::sync::Mutex::new(BTreeMap::new());
    let mut patterns = PATTERNS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    match patterns.get(pattern) {
        Some(known) => known,
        None => {
            let text: &'static str = Box::leak(pattern.to_owned().into_boxed_str());
            let leaked: &'static Pattern = Box::leak(Box::new(Pattern::new(text)));
            patterns.insert(text, leaked);
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
    pub scope: Scope,
    pub sign: Option<SignFrom>,
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
    /// Hashed: every field of every record is looked up here by name.
    fields: HashMap<&'static str, CompiledField>,
}

impl Mapping {
    pub fn new(fields: BTreeMap<&'static str, CompiledField>) -> Self {
        Self {
            fields: fields.into_iter().collect(),
        }
    }

    /// Where in a record the canonical field `name` is read from, when from a path.
    pub fn path(&self, name: &str) -> Option<&JsonPath> {
        match &self.fields.get(name)?.source {
            Source::Path(path) => Some(path.json_path()),
            Source::Const(_) | Source::AccountId => None,
        }
    }

    /// The canonical fields this mapping fills, in no particular order.
    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.fields.keys().copied()
    }

    /// Whether this mapping fills the canonical field `name`.
    pub fn declares(&self, name: &str) -> bool {
        self.fields.contains_key(name)
    }

    /// The node a field's paths are read in: the record, the fan-out account's
    /// record, or the joined element; `None` when there is none to read.
    fn node<'i>(
        item: &'i Item,
        field: &CompiledField,
        name: &'static str,
    ) -> Result<Option<Node<'i>>, FieldError> {
        match &field.scope {
            Scope::Record => Ok(Some(item.record.node())),
            Scope::Account => Ok(item
                .account
                .as_deref()
                .map(|parent| Node::Tree(&parent.record))),
            Scope::Join(join) => match item.joined.get(join) {
                Some(Ok(element)) => Ok(Some(Node::Tree(element))),
                Some(Err(why)) => Err(FieldError::Invalid {
                    field: name,
                    problem: why.clone(),
                }),
                None => Ok(None),
            },
        }
    }

    /// The single value a path found, as text; `None` for nothing or null.
    fn one<'v>(
        found: Result<Option<Node<'v>>, ManyValues>,
        name: &'static str,
    ) -> Result<Option<Cow<'v, str>>, FieldError> {
        match found {
            Ok(None) => Ok(None),
            Ok(Some(node)) => node.scalar().map_err(|NotScalar| FieldError::Invalid {
                field: name,
                problem: "is an object or array, not a value".into(),
            }),
            Err(ManyValues) => Err(FieldError::Invalid {
                field: name,
                problem: "the path matches more than one value (a filter must select exactly one)"
                    .into(),
            }),
        }
    }

    /// The field's value as text, after defaults and the value map; `None` when the
    /// record has nothing there and no default is declared.
    pub fn text(&self, item: &Item, name: &'static str) -> Result<Option<String>, FieldError> {
        Ok(self.borrowed(item, name)?.map(Cow::into_owned))
    }

    /// [`Self::text`], borrowed from the record or the connector: most fields are
    /// parsed (amounts, dates, codes), and copying each one's text first was a good
    /// part of mapping a first sync.
    fn borrowed<'i>(
        &'i self,
        item: &'i Item,
        name: &'static str,
    ) -> Result<Option<Cow<'i, str>>, FieldError> {
        let Some(field) = self.fields.get(name) else {
            return Ok(None);
        };
        let found = match &field.source {
            Source::Const(c) if c.is_empty() => None,
            Source::Const(c) => Some(Cow::Borrowed(c.as_str())),
            Source::AccountId => item
                .account
                .as_ref()
                .map(|p| Cow::Borrowed(p.external_id.as_str())),
            Source::Path(path) => match Self::node(item, field, name)? {
                Some(node) => Self::one(path.at_most_one(&node), name)?,
                None => None,
            },
        };
        let value = found.or(field.default.as_deref().map(Cow::Borrowed));
        Ok(value.map(|v| match field.map.get(v.as_ref()) {
            Some(mapped) => Cow::Borrowed(mapped.as_str()),
            None => v,
        }))
    }

    pub fn required_text(&self, record: &Item, name: &'static str) -> Result<String, FieldError> {
        self.text(record, name)?.ok_or(FieldError::Missing(name))
    }

    pub fn decimal(
        &self,
        record: &Item,
        name: &'static str,
    ) -> Result<Option<Decimal>, FieldError> {
        let Some(text) = self.borrowed(record, name)? else {
            return Ok(None);
        };
        let invalid = |problem: String| FieldError::Invalid {
            field: name,
            problem,
        };
        let parsed =
            parse_decimal(&text).map_err(|e| invalid(format!("`{text}` is not a number ({e})")))?;
        let Some(field) = self.fields.get(name) else {
            return Ok(Some(parsed));
        };
        let mut amount = parsed;
        if let Some(scale) = field.minor_units {
            if parsed.scale() != 0 {
                return Err(invalid(format!(
                    "`{text}` should be a whole number of minor units"
                )));
            }
            amount
                .set_scale(scale)
                .map_err(|e| invalid(e.to_string()))?;
        }
        if let Some(sign) = &field.sign {
            let indicator = match Self::node(record, field, name)? {
                Some(node) => Self::one(sign.path.at_most_one(&node), name)?,
                None => None,
            };
            let indicator = indicator
                .ok_or_else(|| invalid("the field that carries its sign is missing".to_owned()))?;
            let negative = *sign.negative.get(indicator.as_ref()).ok_or_else(|| {
                let known: Vec<&str> = sign.negative.keys().map(String::as_str).collect();
                invalid(format!(
                    "sign indicator `{indicator}` is not one the connector maps ({})",
                    known.join(", ")
                ))
            })?;
            amount.set_sign_positive(true);
            // Zero stays unsigned: "-0.00" is not something the institution sent.
            if negative && !amount.is_zero() {
                amount.set_sign_negative(true);
            }
        }
        Ok(Some(amount))
    }

    pub fn required_decimal(
        &self,
        record: &Item,
        name: &'static str,
    ) -> Result<Decimal, FieldError> {
        self.decimal(record, name)?.ok_or(FieldError::Missing(name))
    }

    pub fn date(&self, record: &Item, name: &'static str) -> Result<Option<NaiveDate>, FieldError> {
        let Some(text) = self.borrowed(record, name)? else {
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
        record: &Item,
        name: &'static str,
    ) -> Result<Option<DateTime<Utc>>, FieldError> {
        let Some(text) = self.borrowed(record, name)? else {
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

    pub fn currency(&self, record: &Item, name: &'static str) -> Result<Currency, FieldError> {
        let text = self
            .borrowed(record, name)?
            .ok_or(FieldError::Missing(name))?;
        text.parse()
            .map_err(|e: crate::domain::CurrencyError| FieldError::Invalid {
                field: name,
                problem: e.to_string(),
            })
    }

    pub fn parsed<T: FromStr<Err = String>>(
        &self,
        record: &Item,
        name: &'static str,
    ) -> Result<Option<T>, FieldError> {
        match self.borrowed(record, name)? {
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
        TimeFormat::Iso8601 => ISO_DATE.date(text).or_else(|| {
            DateTime::parse_from_rfc3339(text)
                .ok()
                .map(|d| d.with_timezone(&zone).date_naive())
        }),
        TimeFormat::Pattern(p) => p.date(text).or_else(|| {
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
            .or_else(|| ISO_LOCAL.date_time(text).and_then(local))
            .or_else(|| {
                ISO_DATE
                    .date(text)
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
        TimeFormat::Pattern(p) => p
            .with_offset(text)
            .map(|d| d.with_timezone(&Utc))
            .or_else(|| p.date_time(text).and_then(local))
            .or_else(|| {
                p.date(text)
                    .and_then(|d| d.and_hms_opt(0, 0, 0))
                    .and_then(local)
            }),
    }
}

/// One account's records from several endpoints: the accounts list's first, then
/// each details endpoint's. A field is read from the last layer that maps it.
pub struct Layers<'a>(pub Vec<(&'a Mapping, &'a Item)>);

impl<'a> Layers<'a> {
    /// An account read from one record.
    pub fn one(mapping: &'a Mapping, item: &'a Item) -> Self {
        Self(vec![(mapping, item)])
    }

    /// The layer that maps `name`; the first when none does (so that what is missing
    /// is reported as missing).
    fn pick(&self, name: &str) -> (&'a Mapping, &'a Item) {
        self.0
            .iter()
            .rev()
            .find(|(m, _)| m.declares(name))
            .or(self.0.first())
            .copied()
            .expect("an account has at least the accounts list's record")
    }

    fn text(&self, name: &'static str) -> Result<Option<String>, FieldError> {
        let (m, item) = self.pick(name);
        m.text(item, name)
    }

    fn required_text(&self, name: &'static str) -> Result<String, FieldError> {
        self.text(name)?.ok_or(FieldError::Missing(name))
    }

    fn decimal(&self, name: &'static str) -> Result<Option<Decimal>, FieldError> {
        let (m, item) = self.pick(name);
        m.decimal(item, name)
    }
}

pub fn account(layers: &Layers<'_>, fetched_at: DateTime<Utc>) -> Result<Account, FieldError> {
    let (m, item) = layers.pick("currency");
    let currency = m.currency(item, "currency")?;
    let (m, item) = layers.pick("account_type");
    let account_type = m
        .parsed(item, "account_type")?
        .ok_or(FieldError::Missing("account_type"))?;
    let (m, item) = layers.pick("balance_as_of");
    let as_of = m.date_time(item, "balance_as_of")?.unwrap_or(fetched_at);
    let (m, item) = layers.pick("balance_meaning");
    let meaning = m
        .parsed(item, "balance_meaning")?
        .unwrap_or(BalanceMeaning::Total);
    Ok(Account {
        external_id: layers.required_text("external_id")?,
        account_type,
        subtype: layers.text("subtype")?,
        name: layers.required_text("name")?,
        official_name: layers.text("official_name")?,
        mask: layers.text("mask")?,
        currency,
        balances: Balances {
            current: Money::new(
                layers
                    .decimal("balance_current")?
                    .ok_or(FieldError::Missing("balance_current"))?,
                currency,
            ),
            available: layers
                .decimal("balance_available")?
                .map(|a| Money::new(a, currency)),
            cash: layers
                .decimal("balance_cash")?
                .map(|a| Money::new(a, currency)),
            meaning,
            as_of,
        },
    })
}

/// A holding and the security it holds (embedded in the same record).
/// A holding, and its security where the institution described it: a holding
/// whose own fields map is kept apart from a security that does not, so that the
/// one can be reported without the other being lost from sight.
pub fn holding(
    m: &Mapping,
    security: &Mapping,
    record: &Item,
) -> Result<(Holding, Result<Security, FieldError>), FieldError> {
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
    let security = self::security(security, record, &holding.security_external_id);
    Ok((holding, security))
}

fn security(security: &Mapping, record: &Item, held: &str) -> Result<Security, FieldError> {
    Ok(Security {
        external_id: security
            .text(record, "external_id")?
            .unwrap_or_else(|| held.to_owned()),
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
    })
}

pub fn transaction(
    m: &Mapping,
    sign: SignConvention,
    record: &Item,
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
    use crate::connectors::record::Page;

    /// `record` both ways a page holds one: parsed, and kept as the page's text.
    fn both_ways(record: &Value) -> [Item; 2] {
        let page = serde_json::json!({ "records": [record] }).to_string();
        let lists = [vec!["records".to_owned()]];
        let mut kept = Page::parse(&page, Some(&lists)).unwrap().records.unwrap();
        assert_eq!(kept.len(), 1, "{record} is kept as text");
        [
            Item::plain(record.clone()),
            Item::read(Record::Text(kept.remove(0))),
        ]
    }

    fn field(path: &str) -> CompiledField {
        CompiledField {
            source: Source::Path(FieldPath::new(JsonPath::parse(path).unwrap(), path)),
            default: None,
            map: BTreeMap::new(),
            minor_units: None,
            format: TimeFormat::Iso8601,
            timezone: None,
            scope: Scope::Record,
            sign: None,
        }
    }

    /// Names looked up directly select what the general query selects, on every
    /// kind of node; any other path is left to the query.
    #[test]
    fn member_name_paths_read_what_the_query_reads() {
        let doc: Value = serde_json::from_str(
            r#"{"a": {"b": 1, "c_2": [1, 2], "n": null}, "s": "x", "list": [{"b": 3}],
               "_u": true, "A9": {"b": {"c": "deep"}}}"#,
        )
        .unwrap();
        for raw in [
            "$.a",
            "$.a.b",
            "$.a.c_2",
            "$.a.n",
            "$.a.missing",
            "$.s",
            "$.s.b",
            "$.list.b",
            "$._u",
            "$.A9.b.c",
            "$.missing.b",
        ] {
            let path = FieldPath::new(JsonPath::parse(raw).unwrap(), raw);
            assert!(path.names.is_some(), "{raw} is read by name");
            for node in [&doc, &doc["a"], &doc["list"], &Value::Null] {
                let general = path.path.query(node).at_most_one().map_err(|_| ManyValues);
                let general = general.map(|found| found.cloned());
                // Read in the tree, and in the value's text as a page keeps it.
                let text = node.to_string();
                for read in [Node::Tree(node), Node::Text(&text)] {
                    let found = path.at_most_one(&read);
                    let found = found.map(|found| found.map(|node| node.to_value()));
                    assert_eq!(found, general, "{raw} in {node}");
                }
            }
        }
        for raw in [
            "$", "$['a']", "$.a[0]", "$..b", "$.a.*", "$.1a", "$.a-b", "$.a..b", "$.a.", "$[?@.b]",
            "$.é",
        ] {
            assert_eq!(member_names(raw), None, "{raw} is left to the query");
        }
    }

    #[test]
    fn json_numbers_keep_every_digit() {
        let m = Mapping::new(BTreeMap::from([
            ("a", field("$.a")),
            ("q", field("$.q")),
            ("s", field("$.s")),
        ]));
        let record =
            serde_json::from_str(r#"{"a": 12345678901234567.89, "q": 0.000000001, "s": "1e-9"}"#)
                .unwrap();
        for record in both_ways(&record) {
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
    }

    #[test]
    fn minor_units_take_the_declared_scale() {
        let record = Item::plain(serde_json::json!({"cents": "-152337"}));
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

    /// A pattern read once parses every text as chrono's `parse_from_str`s do,
    /// and a pattern seen again (a reload) is the one already kept.
    #[test]
    fn patterns_read_once_parse_as_chrono_does() {
        let texts = [
            "2026-11-20",
            "2026-11-20 ",
            " 2026-11-20",
            "2026-1-2",
            "2026-02-30",
            "11/20/2026",
            "11/20/2026 09:30",
            "2026-11-20T09:30:00",
            "2026-11-20T09:30:00+0100",
            "20.11.2026",
            "",
            "not a date",
        ];
        for text in [
            "%Y-%m-%d",
            "%m/%d/%Y",
            "%m/%d/%Y %H:%M",
            "%Y-%m-%dT%H:%M:%S",
            "%Y-%m-%dT%H:%M:%S%z",
            "%d.%m.%Y",
        ] {
            let TimeFormat::Pattern(pattern) = TimeFormat::parse(text).unwrap() else {
                panic!("{text} is a pattern");
            };
            for input in texts {
                assert_eq!(
                    pattern.date(input),
                    NaiveDate::parse_from_str(input, text).ok(),
                    "{text} on {input:?}"
                );
                assert_eq!(
                    pattern.date_time(input),
                    NaiveDateTime::parse_from_str(input, text).ok(),
                    "{text} on {input:?}"
                );
                assert_eq!(
                    pattern.with_offset(input),
                    DateTime::parse_from_str(input, text).ok(),
                    "{text} on {input:?}"
                );
            }
            let TimeFormat::Pattern(again) = TimeFormat::parse(text).unwrap() else {
                panic!("{text} is a pattern");
            };
            assert!(std::ptr::eq(pattern, again), "{text} kept once");
        }
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
        let mut status = field("$.pending");
        status.map = BTreeMap::from([
            ("true".into(), "pending".into()),
            ("false".into(), "posted".into()),
        ]);
        let mut kind = field("$.kind");
        kind.default = Some("other".into());
        let m = Mapping::new(BTreeMap::from([("status", status), ("kind", kind)]));
        for record in both_ways(&serde_json::json!({"pending": true})) {
            assert_eq!(
                m.text(&record, "status").unwrap().as_deref(),
                Some("pending")
            );
            assert_eq!(m.text(&record, "kind").unwrap().as_deref(), Some("other"));
        }
    }

    fn signed(path: &str, indicator: &str) -> CompiledField {
        let mut amount = field(path);
        amount.sign = Some(SignFrom {
            path: FieldPath::new(JsonPath::parse(indicator).unwrap(), indicator),
            negative: BTreeMap::from([
                ("CREDIT".into(), false),
                ("DEBIT".into(), true),
                ("MEMO".into(), true),
            ]),
        });
        amount
    }

    #[test]
    fn a_sign_comes_from_its_indicator_and_an_unknown_one_is_refused() {
        let m = Mapping::new(BTreeMap::from([(
            "amount",
            signed("$.amount", "$.debitCreditMemo"),
        )]));
        // Read from the tree and from the text alike.
        let amount = |record: Value| {
            let [tree, text] = both_ways(&record);
            let amount = m.required_decimal(&tree, "amount");
            let shown = |a: &Result<Decimal, FieldError>| {
                a.as_ref()
                    .map(Decimal::to_string)
                    .map_err(FieldError::clone)
            };
            assert_eq!(shown(&amount), shown(&m.required_decimal(&text, "amount")));
            amount
        };
        let out = amount(serde_json::json!({"amount": 12.5, "debitCreditMemo": "DEBIT"}));
        assert_eq!(out.unwrap().to_string(), "-12.5");
        // The institution's own sign is dropped: the indicator decides.
        let out = amount(serde_json::json!({"amount": "-3.10", "debitCreditMemo": "CREDIT"}));
        assert_eq!(out.unwrap().to_string(), "3.10");
        let out = amount(serde_json::json!({"amount": "0.00", "debitCreditMemo": "MEMO"}));
        assert_eq!(out.unwrap().to_string(), "0.00");
        let refused = amount(serde_json::json!({"amount": 1, "debitCreditMemo": "REVERSAL"}))
            .unwrap_err()
            .to_string();
        assert!(
            refused.contains("`REVERSAL` is not one the connector maps (CREDIT, DEBIT, MEMO)"),
            "{refused}"
        );
        let refused = amount(serde_json::json!({"amount": 1}))
            .unwrap_err()
            .to_string();
        assert!(refused.contains("carries its sign is missing"), "{refused}");
    }

    #[test]
    fn a_filter_that_selects_two_elements_is_an_error_not_a_pick() {
        let m = Mapping::new(BTreeMap::from([(
            "balance_current",
            field("$.Balance[?@.Type == 'InterimBooked'].Amount"),
        )]));
        let one = serde_json::json!({"Balance": [
            {"Type": "InterimAvailable", "Amount": "10.00"},
            {"Type": "InterimBooked", "Amount": "7.25"},
        ]});
        let two = serde_json::json!({"Balance": [
            {"Type": "InterimBooked", "Amount": "10.00"},
            {"Type": "InterimBooked", "Amount": "7.25"},
        ]});
        for (one, two) in both_ways(&one).iter().zip(&both_ways(&two)) {
            assert_eq!(
                m.required_decimal(one, "balance_current")
                    .unwrap()
                    .to_string(),
                "7.25"
            );
            let refused = m.required_decimal(two, "balance_current").unwrap_err();
            assert!(
                refused.to_string().contains("more than one value"),
                "{refused}"
            );
        }
    }

    #[test]
    fn fields_read_from_the_joined_element_and_the_fan_out_account() {
        let mut name = field("$.name");
        name.scope = Scope::Join("security".into());
        let mut category = field("$.category");
        category.scope = Scope::Account;
        let m = Mapping::new(BTreeMap::from([
            ("name", name),
            ("category", category),
            (
                "account_external_id",
                CompiledField {
                    source: Source::AccountId,
                    ..field("$")
                },
            ),
        ]));
        let mut item = Item::plain(serde_json::json!({"security_id": "s1"}));
        item.account = Some(Arc::new(Parent {
            external_id: "acc-1".into(),
            record: serde_json::json!({"category": "INVESTMENT_ACCOUNT"}),
        }));
        item.joined
            .insert("security".into(), Ok(serde_json::json!({"name": "Acme"})));
        assert_eq!(m.text(&item, "name").unwrap().as_deref(), Some("Acme"));
        assert_eq!(
            m.text(&item, "category").unwrap().as_deref(),
            Some("INVESTMENT_ACCOUNT")
        );
        assert_eq!(
            m.text(&item, "account_external_id").unwrap().as_deref(),
            Some("acc-1")
        );
        item.joined
            .insert("security".into(), Err("no `security` has key `s1`".into()));
        let refused = m.text(&item, "name").unwrap_err();
        assert_eq!(refused.field(), "name");
        assert!(refused.to_string().contains("no `security` has key `s1`"));
    }

    #[test]
    fn an_account_reads_each_field_from_the_last_layer_that_maps_it() {
        let list = Mapping::new(BTreeMap::from([
            ("external_id", field("$.id")),
            ("account_type", field("$.type")),
            ("name", field("$.name")),
            ("currency", field("$.ccy")),
            ("balance_current", field("$.stale")),
        ]));
        let details = Mapping::new(BTreeMap::from([(
            "balance_current",
            signed("$.amount", "$.indicator"),
        )]));
        let listed = Item::plain(serde_json::json!({
            "id": "a1", "type": "depository", "name": "Everyday", "ccy": "GBP", "stale": "1.00"
        }));
        let balances = Item::plain(serde_json::json!({"amount": "42.10", "indicator": "DEBIT"}));
        let layers = Layers(vec![(&list, &listed), (&details, &balances)]);
        let account = account(&layers, Utc::now()).unwrap();
        assert_eq!(account.external_id, "a1");
        assert_eq!(account.balances.current.amount.to_string(), "-42.10");
    }
}
