//! Redaction of a record a connector could not map, before it is kept in quarantine.
//!
//! A quarantined record must let an operator see what was wrong with it without
//! keeping the customer's financial data. The policy:
//!
//! - The record's structure is kept: every key, every array's length, and each
//!   value's JSON type. `true`, `false` and `null` are kept as they are.
//! - Identifiers are kept in clear: the values the connector maps as the record's
//!   own, its account's, its security's or its pending twin's id, and public
//!   security identifiers (ticker, CUSIP, ISIN, SEDOL, FIGI).
//! - The field the refusal names is kept in clear when it is a date, a currency or a
//!   closed vocabulary (an account type, a status): those say nothing about a person.
//!   When it is free text (a name, a description, a mask) or a number (an amount, a
//!   balance, a quantity), only its shape is kept: every digit becomes `0` and every
//!   letter `x`, so `"12,3.4"` reads `"00,0.0"`. The refusal's text gets the same
//!   treatment, since it quotes the value.
//! - Every other string becomes a mask that keeps only its length class (`""`,
//!   `"***"` up to 8 characters, `"******"` up to 64, `"*********"` beyond), and every
//!   other number becomes `0` (or `0.0` when it had a fraction).
//!
//! So names, descriptions, account masks, balances and amounts never survive in
//! clear.

use serde_json::{Number, Value};
use sha2::{Digest, Sha256};

use super::fields::{self, Kind};
use super::mapping::{FieldError, Item, Mapping};

/// Canonical fields whose values identify a record rather than describe a person.
const IDENTIFIERS: &[&str] = &[
    "external_id",
    "account_external_id",
    "security_external_id",
    "pending_external_id",
    "ticker",
    "cusip",
    "isin",
    "sedol",
    "figi",
];

/// A refused record, fit to be stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Redacted {
    /// The record's id at the institution when it could be read (`account:security`
    /// for a holding, as [`crate::domain::Holding::external_id`] writes it), else the SHA-256 of the record: the same record refused twice
    /// has the same key.
    pub key: String,
    /// Why it was refused, with a personal value reduced to its shape.
    pub reason: String,
    /// The record under the policy above.
    pub record: Value,
}

/// Redacts `record`, refused with `error`, as read through `mappings` (a holding's
/// record is read through its own and its security's mapping). `key_fields` are the
/// canonical fields that together identify the record.
pub fn redact(
    mappings: &[&Mapping],
    key_fields: &[&'static str],
    item: &Item,
    error: &FieldError,
) -> Redacted {
    let tree = item.record.to_value();
    let record = &tree;
    let mut out = masked(record);
    let scalar_at = |name: &str| -> Vec<String> {
        mappings
            .iter()
            .filter_map(|m| m.path(name))
            .flat_map(|p| {
                p.query_located(record)
                    .into_iter()
                    .filter(|n| !n.node().is_array() && !n.node().is_object())
                    .map(|n| n.location().to_json_pointer())
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    for pointer in IDENTIFIERS.iter().flat_map(|name| scalar_at(name)) {
        restore(&mut out, record, &pointer, Value::clone);
    }
    let field = error.field();
    let mut reason = error.to_string();
    if IDENTIFIERS.contains(&field) || !personal(field) {
        for pointer in scalar_at(field) {
            restore(&mut out, record, &pointer, Value::clone);
        }
    } else {
        for pointer in scalar_at(field) {
            if let Some(text) = record.pointer(&pointer).and_then(scalar_text)
                && !text.is_empty()
            {
                reason = reason.replace(&text, &shape(&text));
            }
            restore(&mut out, record, &pointer, |v| {
                scalar_text(v).map_or(Value::Null, |t| Value::String(shape(&t)))
            });
        }
    }
    Redacted {
        key: key(mappings, key_fields, item),
        reason,
        record: out,
    }
}

fn key(mappings: &[&Mapping], key_fields: &[&'static str], item: &Item) -> String {
    let parts: Option<Vec<String>> = key_fields
        .iter()
        .map(|name| {
            mappings
                .iter()
                .find_map(|m| m.text(item, name).ok().flatten())
                .filter(|id| !id.is_empty())
        })
        .collect();
    match parts {
        Some(parts) if !parts.is_empty() => parts.join(":"),
        _ => {
            let digest = Sha256::digest(item.record.to_value().to_string().as_bytes());
            digest.iter().map(|b| format!("{b:02x}")).collect()
        }
    }
}

/// Whether a field's value may describe a person or their money: free text and
/// numbers. Unknown names (such as `record`) count as personal.
fn personal(field: &str) -> bool {
    [
        fields::ACCOUNT,
        fields::HOLDING,
        fields::SECURITY,
        fields::TRANSACTION,
    ]
    .iter()
    .flat_map(|defs| defs.iter())
    .find(|def| def.name == field)
    .is_none_or(|def| matches!(def.kind, Kind::Text | Kind::Decimal))
}

fn restore(out: &mut Value, record: &Value, pointer: &str, keep: impl Fn(&Value) -> Value) {
    if let (Some(slot), Some(original)) = (out.pointer_mut(pointer), record.pointer(pointer)) {
        *slot = keep(original);
    }
}

fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn masked(value: &Value) -> Value {
    match value {
        Value::String(s) => Value::String(mask(s).into()),
        Value::Number(n) if n.is_i64() || n.is_u64() => Value::Number(0.into()),
        Value::Number(_) => Number::from_f64(0.0).map_or(Value::Null, Value::Number),
        Value::Array(items) => Value::Array(items.iter().map(masked).collect()),
        Value::Object(members) => Value::Object(
            members
                .iter()
                .map(|(k, v)| (k.clone(), masked(v)))
                .collect(),
        ),
        Value::Bool(_) | Value::Null => value.clone(),
    }
}

fn mask(text: &str) -> &'static str {
    match text.chars().count() {
        0 => "",
        1..=8 => "***",
        9..=64 => "******",
        _ => "*********",
    }
}

/// Digits become `0` and letters `x`; punctuation and spaces stay.
fn shape(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_numeric() {
                '0'
            } else if c.is_alphabetic() {
                'x'
            } else {
                c
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn harbor() -> crate::connectors::Connector {
        let text = include_str!("../../connectors/harbor.toml");
        crate::connectors::validate_str("harbor.toml", "harbor", text, None)
            .expect("the Harbor connector is valid")
    }

    #[test]
    fn a_refused_transaction_keeps_its_ids_and_the_shape_of_the_bad_amount_only() {
        let connector = harbor();
        let endpoint = connector.transactions.as_ref().expect("transactions");
        let record = json!({
            "transaction_id": "txn-81",
            "account_number": "acc-7",
            "amount": "12,3.4",
            "currency": "USD",
            "memo": "TRANSFER TO JANE Q CUSTOMER 4421",
            "merchant": {"name": "Corner Pharmacy", "mcc": 5912},
            "balance_after": 1834.22,
            "pending": false,
            "tags": ["rent", "march"],
        });
        let error = FieldError::Invalid {
            field: "amount",
            problem: "`12,3.4` is not a number (invalid)".into(),
        };
        let redacted = redact(
            &[&endpoint.fields],
            &["external_id"],
            &Item::plain(record.clone()),
            &error,
        );
        let text = redacted.record.to_string();
        for secret in [
            "JANE", "CUSTOMER", "4421", "Corner", "Pharmacy", "5912", "1834", "rent", "12,3.4",
        ] {
            assert!(!text.contains(secret), "{secret} survived: {text}");
            assert!(
                !redacted.reason.contains(secret),
                "{secret} survived: {}",
                redacted.reason
            );
        }
        assert_eq!(redacted.key, "txn-81");
        assert_eq!(redacted.record["transaction_id"], "txn-81");
        assert_eq!(redacted.record["account_number"], "acc-7");
        assert_eq!(redacted.record["amount"], "00,0.0");
        assert_eq!(redacted.record["merchant"]["mcc"], 0);
        assert_eq!(redacted.record["balance_after"].to_string(), "0.0");
        assert_eq!(redacted.record["pending"], false);
        assert_eq!(redacted.record["tags"], json!(["***", "***"]));
        assert!(redacted.reason.contains("00,0.0"), "{}", redacted.reason);
    }

    #[test]
    fn a_closed_vocabulary_value_named_in_the_reason_stays_readable() {
        let connector = harbor();
        let record = json!({"account_number": "a1", "product_code": "SAVNGS", "nickname": "Jane's savings", "last_four": "4421", "ledger_balance": 183422});
        let error = FieldError::Invalid {
            field: "account_type",
            problem: "`SAVNGS` is not a known value".into(),
        };
        let redacted = redact(
            &[&connector.accounts.fields],
            &["external_id"],
            &Item::plain(record),
            &error,
        );
        let text = redacted.record.to_string();
        for secret in ["Jane", "4421", "183422"] {
            assert!(!text.contains(secret), "{secret} survived: {text}");
        }
        assert_eq!(redacted.record["product_code"], "SAVNGS");
        assert!(redacted.reason.contains("SAVNGS"));
    }

    #[test]
    fn a_record_without_a_readable_id_is_keyed_by_its_digest() {
        let connector = harbor();
        let endpoint = connector.transactions.as_ref().expect("transactions");
        let record = json!({"amount": "1.00", "memo": "Rent"});
        let error = FieldError::Missing("external_id");
        let once = redact(
            &[&endpoint.fields],
            &["external_id"],
            &Item::plain(record.clone()),
            &error,
        );
        let again = redact(
            &[&endpoint.fields],
            &["external_id"],
            &Item::plain(record.clone()),
            &error,
        );
        assert_eq!(once.key.len(), 64);
        assert_eq!(once.key, again.key);
        assert_eq!(once.record, json!({"amount": "***", "memo": "***"}));
    }
}
