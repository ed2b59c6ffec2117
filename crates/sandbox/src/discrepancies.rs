//! Faults in what an institution's data says rather than in how it answers: each
//! leaves an answer well-formed but not adding up, as a real institution's data
//! sometimes does, so that a client's reconciliation has something to find. They
//! act on Plaid-shaped records (Meridian's field names: `balances.current`,
//! `security`, `institution_value`, `transaction_id`, `pending`, `date`,
//! `investment_type`, `iso_currency_code`); other shapes pass through untouched.

use chrono::{Days, NaiveDate};
use serde_json::{Map, Value};

use crate::data::json_number;

/// A currency code of three letters that ISO 4217 does not list.
pub(crate) const UNKNOWN_CURRENCY: &str = "ZZZ";

/// How far the date faults move a transaction.
const DAYS_MOVED: u64 = 30;

/// Which discrepancies one answer gets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Discrepancies {
    /// Every account's current balance raised by this many units of its currency.
    pub drift: Option<u64>,
    pub rekeyed_transactions: bool,
    pub missing_security: bool,
    pub unrecorded_splits: bool,
    pub misvalued_holdings: bool,
    pub stale_pending: bool,
    pub future_dated: bool,
    pub unknown_currency: bool,
}

impl Discrepancies {
    pub(crate) fn any(&self) -> bool {
        *self != Self::default()
    }
}

/// Applies `d` to the records of one answer; `today` dates the future-dated one.
pub(crate) fn inject(records: &mut Vec<Value>, d: Discrepancies, today: NaiveDate) {
    if d.unrecorded_splits {
        records.retain(|r| r.get("investment_type").and_then(Value::as_str) != Some("split"));
    }
    let posted = |r: &Map<String, Value>| {
        r.contains_key("transaction_id") && r.get("pending") == Some(&Value::Bool(false))
    };
    if d.rekeyed_transactions
        && let Some(copy) = records
            .iter()
            .filter_map(Value::as_object)
            .find(|r| posted(r))
            .cloned()
            .map(|mut r| {
                // The same transaction again, under the id a re-keyed system gave it.
                if let Some(Value::String(id)) = r.get_mut("transaction_id") {
                    id.push_str("-rekeyed");
                }
                Value::Object(r)
            })
    {
        records.push(copy);
    }
    let mut future_done = !d.future_dated;
    let mut currency_done = !d.unknown_currency;
    let mut security_done = !d.missing_security;
    let mut value_done = !d.misvalued_holdings;
    for record in records.iter_mut().filter_map(Value::as_object_mut) {
        if let Some(step) = d.drift
            && let Some(current) = record
                .get_mut("balances")
                .and_then(|b| b.get_mut("current"))
            && let Some(moved) = plus(current, step)
        {
            *current = moved;
        }
        if !security_done && let Some(Value::Object(security)) = record.get_mut("security") {
            security.retain(|key, _| key == "security_id");
            security_done = true;
        }
        if !value_done
            && let Some(value) = record.get_mut("institution_value")
            && let Some(wrong) = plus(value, 1)
        {
            *value = wrong;
            value_done = true;
        }
        if !record.contains_key("transaction_id") {
            continue;
        }
        if !currency_done {
            record.insert("iso_currency_code".into(), UNKNOWN_CURRENCY.into());
            currency_done = true;
        }
        let pending = record.get("pending") == Some(&Value::Bool(true));
        let date = record
            .get("date")
            .and_then(Value::as_str)
            .and_then(|d| d.parse::<NaiveDate>().ok());
        let moved = match date {
            Some(date) if pending && d.stale_pending => {
                date.checked_sub_days(Days::new(DAYS_MOVED))
            }
            Some(_) if !pending && !future_done => {
                future_done = true;
                today.checked_add_days(Days::new(DAYS_MOVED))
            }
            _ => None,
        };
        if let Some(moved) = moved {
            record.insert("date".into(), moved.to_string().into());
        }
    }
}

/// `number + whole`, digit for digit: `1234.56 + 3` is `1237.56`.
fn plus(number: &Value, whole: u64) -> Option<Value> {
    let text = match number {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        _ => return None,
    };
    let (negative, digits) = text
        .strip_prefix('-')
        .map_or((false, text.as_str()), |d| (true, d));
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let scale = u32::try_from(frac.len()).ok()?;
    let units: i128 = format!("{int}{frac}").parse().ok()?;
    let units = if negative { -units } else { units };
    let sum = units.checked_add(i128::from(whole).checked_mul(10i128.checked_pow(scale)?)?)?;
    let magnitude = sum.unsigned_abs().to_string();
    let padded = format!("{magnitude:0>width$}", width = scale as usize + 1);
    let (int, frac) = padded.split_at(padded.len() - scale as usize);
    let sign = if sum < 0 { "-" } else { "" };
    let text = if frac.is_empty() {
        format!("{sign}{int}")
    } else {
        format!("{sign}{int}.{frac}")
    };
    Some(match number {
        Value::String(_) => Value::String(text),
        _ => json_number(&text),
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn today() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 12, 6).unwrap()
    }

    #[test]
    fn numbers_move_by_whole_units_digit_for_digit() {
        assert_eq!(
            plus(&json_number("1234.56"), 3),
            Some(json_number("1237.56"))
        );
        assert_eq!(plus(&json_number("-0.50"), 1), Some(json_number("0.50")));
        assert_eq!(
            plus(&json_number("12.000000001"), 1),
            Some(json_number("13.000000001"))
        );
        assert_eq!(plus(&json!("7"), 2), Some(json!("9")));
    }

    #[test]
    fn each_discrepancy_changes_only_what_it_names() {
        let page = || {
            vec![
                json!({"transaction_id": "t1", "pending": false, "date": "2026-12-01", "iso_currency_code": "USD", "investment_type": "split"}),
                json!({"transaction_id": "t2", "pending": true, "date": "2026-12-04", "iso_currency_code": "USD"}),
                json!({"transaction_id": "t3", "pending": false, "date": "2026-12-02", "iso_currency_code": "USD"}),
            ]
        };
        let mut records = page();
        inject(
            &mut records,
            Discrepancies {
                unrecorded_splits: true,
                ..Default::default()
            },
            today(),
        );
        assert_eq!(records, page()[1..].to_vec());

        let mut records = page();
        inject(
            &mut records,
            Discrepancies {
                rekeyed_transactions: true,
                ..Default::default()
            },
            today(),
        );
        assert_eq!(records.len(), 4);
        assert_eq!(records[3]["transaction_id"], "t1-rekeyed");
        assert_eq!(records[3]["date"], records[0]["date"]);

        let mut records = page();
        inject(
            &mut records,
            Discrepancies {
                stale_pending: true,
                future_dated: true,
                unknown_currency: true,
                ..Default::default()
            },
            today(),
        );
        assert_eq!(records[0]["date"], "2027-01-05");
        assert_eq!(records[0]["iso_currency_code"], UNKNOWN_CURRENCY);
        assert_eq!(records[1]["date"], "2026-11-04");
        assert_eq!(records[2], page()[2]);

        let mut holdings = vec![
            json!({"security": {"security_id": "s1", "name": "Acme"}, "institution_value": 10.5}),
            json!({"security": {"security_id": "s2", "name": "Beta"}, "institution_value": 3}),
        ];
        inject(
            &mut holdings,
            Discrepancies {
                missing_security: true,
                misvalued_holdings: true,
                ..Default::default()
            },
            today(),
        );
        assert_eq!(holdings[0]["security"], json!({"security_id": "s1"}));
        assert_eq!(holdings[0]["institution_value"], json_number("11.5"));
        assert_eq!(holdings[1]["security"]["name"], "Beta");

        let mut accounts = vec![json!({"balances": {"current": 100.25}})];
        inject(
            &mut accounts,
            Discrepancies {
                drift: Some(2),
                ..Default::default()
            },
            today(),
        );
        assert_eq!(accounts[0]["balances"]["current"], json_number("102.25"));
    }
}
