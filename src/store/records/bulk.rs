//! Statements over many rows whose text does not depend on how many rows they
//! carry: new rows go through `COPY` where the transaction allows it (an account's
//! records on PostgreSQL, [`RecordsTxn`]); otherwise they, like lists of ids, travel
//! as one JSON document in one parameter.
//!
//! A statement with a placeholder per value has a different text for every batch
//! size, so the server parses and plans each anew, and every pooled connection's
//! statement cache fills with them: a thousand-row insert's text and its sixteen
//! thousand parameter types, once per size seen, in each connection. That made a
//! worker's memory grow with the connections it had synced. With one parameter,
//! there is one statement per table, prepared once per connection.

use std::fmt::Write as _;

use sea_orm::sea_query::{Expr, SimpleExpr};
use sea_orm::sqlx::encode::IsNull;
use sea_orm::sqlx::postgres::PgArgumentBuffer;
use sea_orm::sqlx::{Encode, Postgres};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseBackend, DatabaseTransaction,
    EntityName, EntityTrait, IdenStatic, Iterable, Statement, Value,
};

use crate::store::StoreError;

use super::txn::{PgTxn, RecordsTxn};

/// Rows one statement (or one message of a `COPY`) carries.
pub(super) const BATCH: usize = 1000;

/// The most a `COPY` message is sized for up front (it grows past it).
const MAX_RESERVED_DATA: usize = 8 << 20;

/// What begins `COPY`'s binary format: its signature, no flags, and no header
/// extension.
const COPY_BINARY_HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";

/// What ends it: a row of -1 fields.
const COPY_BINARY_TRAILER: i16 = -1;

/// A transaction rows are inserted through in bulk.
pub(super) trait Bulk: ConnectionTrait {
    /// The transaction to `COPY` into, where this one can.
    fn copy_target(&self) -> Option<&PgTxn>;
}

impl Bulk for DatabaseTransaction {
    fn copy_target(&self) -> Option<&PgTxn> {
        None
    }
}

impl Bulk for RecordsTxn {
    fn copy_target(&self) -> Option<&PgTxn> {
        match self {
            Self::Postgres(txn) => Some(txn),
            Self::Other(_) => None,
        }
    }
}

/// Inserts `rows` (every one with the same columns set): through one `COPY` where
/// the transaction can, sent [`BATCH`] rows at a time; else [`BATCH`] at a time on
/// PostgreSQL as `INSERT … SELECT … FROM json_populate_recordset`, which takes each
/// value's type from the table, and on SQLite as `INSERT … SELECT … FROM json_each`.
pub(super) async fn insert_all<A, C>(db: &C, rows: Vec<A>) -> Result<(), StoreError>
where
    A: ActiveModelTrait + Send,
    C: Bulk,
{
    let Some(first) = rows.first() else {
        return Ok(());
    };
    // The columns the rows set; the others take their defaults, as in an INSERT
    // that leaves them out.
    let columns: Vec<<A::Entity as EntityTrait>::Column> =
        <A::Entity as EntityTrait>::Column::iter()
            .filter(|c| first.get(*c).is_set())
            .collect();
    let names: Vec<String> = columns
        .iter()
        .map(|c| format!("\"{}\"", c.as_str()))
        .collect();
    let table = A::Entity::default().table_name().to_owned();
    let backend = db.get_database_backend();
    if let Some(txn) = db.copy_target() {
        let statement = format!(
            "COPY \"{table}\" ({}) FROM STDIN (FORMAT binary)",
            names.join(", ")
        );
        let fields = i16::try_from(columns.len())
            .map_err(|_| StoreError::Defect(format!("{table} has too many columns to copy")))?;
        let mut rows = rows.into_iter().peekable();
        let mut first = true;
        let chunks = std::iter::from_fn(|| {
            rows.peek()?;
            let in_chunk = rows.len().min(BATCH);
            let mut data = PgArgumentBuffer::default();
            if std::mem::take(&mut first) {
                data.extend_from_slice(COPY_BINARY_HEADER);
            }
            for (n, mut row) in rows.by_ref().take(BATCH).enumerate() {
                let start = data.len();
                data.extend_from_slice(&fields.to_be_bytes());
                for column in &columns {
                    let written = take(&mut row, *column, &table)
                        .and_then(|value| copy_field(value, &mut data));
                    if let Err(error) = written {
                        return Some(Err(error));
                    }
                }
                if n == 0 {
                    // Sized from the first row, with an eighth to spare: grown by
                    // doubling, the data was copied about once over. Capped, as one
                    // long first row says little about the others.
                    let row = data.len() - start;
                    let estimate = (row + row / 8).saturating_mul(in_chunk - 1);
                    data.reserve(estimate.min(MAX_RESERVED_DATA));
                }
            }
            if rows.peek().is_none() {
                data.extend_from_slice(&COPY_BINARY_TRAILER.to_be_bytes());
            }
            Some(Ok(std::mem::take(&mut *data)))
        });
        return txn.copy_in(&statement, chunks).await;
    }
    let sql = match backend {
        DatabaseBackend::Postgres => format!(
            "INSERT INTO \"{table}\" ({list}) SELECT {list} \
             FROM json_populate_recordset(NULL::\"{table}\", $1::json)",
            list = names.join(", ")
        ),
        _ => format!(
            "INSERT INTO \"{table}\" ({list}) SELECT {fields} FROM json_each(?)",
            list = names.join(", "),
            fields = columns
                .iter()
                .map(|c| format!("json_extract(value, '$.{}')", c.as_str()))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut rows = rows.into_iter().peekable();
    let mut text = String::new();
    while rows.peek().is_some() {
        // The document is written as text straight away: no map per row.
        text.clear();
        text.push('[');
        for (n, mut row) in rows.by_ref().take(BATCH).enumerate() {
            text.push_str(if n == 0 { "{" } else { ",{" });
            for (i, column) in columns.iter().enumerate() {
                let value = take_json(&mut row, *column, &table, backend)?;
                if i > 0 {
                    text.push(',');
                }
                text.push('"');
                text.push_str(column.as_str());
                text.push_str("\":");
                written(write!(text, "{value}"))?;
            }
            text.push('}');
        }
        text.push(']');
        db.execute_raw(Statement::from_sql_and_values(
            backend,
            &sql,
            [text.as_str().into()],
        ))
        .await?;
    }
    Ok(())
}

/// A row's value for `column`, taken out of it.
fn take<A: ActiveModelTrait>(
    row: &mut A,
    column: <A::Entity as EntityTrait>::Column,
    table: &str,
) -> Result<Value, StoreError> {
    row.take(column)
        .into_value()
        .ok_or_else(|| StoreError::Defect(format!("{table}.{} not set", column.as_str())))
}

/// A row's value for `column`, taken out of it, as [`json`] writes it.
fn take_json<A: ActiveModelTrait>(
    row: &mut A,
    column: <A::Entity as EntityTrait>::Column,
    table: &str,
    backend: DatabaseBackend,
) -> Result<serde_json::Value, StoreError> {
    json(take(row, column, table)?, backend)
}

/// A time as PostgreSQL reads it back exactly: UTC, to the microsecond.
fn pg_time(time: chrono::DateTime<chrono::Utc>) -> String {
    time.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// A value as a field of `COPY`'s binary format: its length, then the value's
/// binary form as sqlx sends it when it binds a parameter; a length of -1 for
/// NULL. Times and dates travel as numbers, so the server parses no text for
/// them. Unlike text, the binary form is not converted: each value must be of
/// its column's own type (a `String` for a text or varchar column, a date for a
/// date column, a time in UTC for a timestamptz column).
fn copy_field(value: Value, out: &mut PgArgumentBuffer) -> Result<(), StoreError> {
    let at = out.len();
    out.extend_from_slice(&[0; 4]);
    let encoded = match &value {
        Value::String(None)
        | Value::Bool(None)
        | Value::Int(None)
        | Value::BigInt(None)
        | Value::ChronoDate(None)
        | Value::ChronoDateTimeUtc(None) => Ok(IsNull::Yes),
        Value::String(Some(text)) => Encode::<Postgres>::encode_by_ref(text, out),
        Value::Bool(Some(b)) => Encode::<Postgres>::encode_by_ref(b, out),
        Value::Int(Some(n)) => Encode::<Postgres>::encode_by_ref(n, out),
        Value::BigInt(Some(n)) => Encode::<Postgres>::encode_by_ref(n, out),
        Value::ChronoDate(Some(date)) => Encode::<Postgres>::encode_by_ref(date, out),
        Value::ChronoDateTimeUtc(Some(time)) => Encode::<Postgres>::encode_by_ref(time, out),
        other => return Err(uncarried(other)),
    }
    .map_err(|e| {
        StoreError::Defect(format!(
            "a value could not be put in COPY's binary form: {e}"
        ))
    })?;
    let length = match encoded {
        IsNull::Yes => {
            out.truncate(at + 4);
            -1
        }
        IsNull::No => i32::try_from(out.len() - at - 4)
            .map_err(|_| StoreError::Defect("a value is too long for COPY".into()))?,
    };
    out[at..at + 4].copy_from_slice(&length.to_be_bytes());
    Ok(())
}

fn written(result: std::fmt::Result) -> Result<(), StoreError> {
    result.map_err(|e| StoreError::Defect(format!("a value's text could not be written: {e}")))
}

/// A column type no record table has: a programming error, reported as such.
fn uncarried(value: &Value) -> StoreError {
    StoreError::Defect(format!("a bulk insert cannot carry {value:?}"))
}

/// `column IN (the ids)`, the ids bound as one JSON array.
pub(super) fn one_of(
    backend: DatabaseBackend,
    column: impl ColumnTrait,
    ids: &[&str],
) -> SimpleExpr {
    let list = serde_json::to_string(ids).unwrap_or_else(|_| "[]".to_owned());
    let name = column.as_str();
    match backend {
        DatabaseBackend::Postgres => Expr::cust_with_values(
            // `= ANY` of an array the planner sees as one value: an index lookup
            // per id. (`IN (SELECT …)` over the JSON let it scan every row of the
            // connection and join.)
            format!("\"{name}\" = ANY(ARRAY(SELECT json_array_elements_text($1::json)))"),
            [list],
        ),
        _ => Expr::cust_with_values(
            format!("\"{name}\" IN (SELECT value FROM json_each(?))"),
            [list],
        ),
    }
}

/// A column's value as the JSON the database reads back into that column, as sqlx
/// would have bound it: text as text (decimals are stored as their exact text),
/// times to the microsecond on PostgreSQL and as sqlx's text on SQLite.
/// The value is taken, not borrowed: a first sync on SQLite writes hundreds of
/// thousands of texts, and each is moved into the document rather than copied.
fn json(value: Value, backend: DatabaseBackend) -> Result<serde_json::Value, StoreError> {
    use serde_json::Value as J;
    Ok(match value {
        Value::String(v) => v.map_or(J::Null, J::String),
        Value::Bool(v) => v.map_or(J::Null, J::Bool),
        Value::Int(v) => v.map_or(J::Null, J::from),
        Value::BigInt(v) => v.map_or(J::Null, J::from),
        Value::ChronoDate(v) => v.map_or(J::Null, |d| J::String(d.to_string())),
        Value::ChronoDateTimeUtc(v) => v.map_or(J::Null, |t| {
            J::String(match backend {
                DatabaseBackend::Postgres => pg_time(t),
                // As sqlx writes SQLite's times.
                _ => t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, false),
            })
        }),
        other => return Err(uncarried(&other)),
    })
}

#[cfg(test)]
mod tests {
    use chrono::{NaiveDate, TimeZone, Utc};

    use super::*;

    /// The fields `copy_field` wrote, each as its length and bytes.
    fn fields(mut data: &[u8]) -> Vec<(i32, Vec<u8>)> {
        let mut fields = Vec::new();
        while !data.is_empty() {
            let length = i32::from_be_bytes(data[..4].try_into().unwrap());
            let bytes = usize::try_from(length).unwrap_or(0);
            fields.push((length, data[4..4 + bytes].to_vec()));
            data = &data[4 + bytes..];
        }
        fields
    }

    #[test]
    fn copy_fields_are_framed_in_the_binary_format_for_every_column_type() {
        let text = "tab\there, back\\slash, \\N, Café";
        let first_microsecond =
            Utc.with_ymd_and_hms(2000, 1, 1, 0, 0, 0).unwrap() + chrono::Duration::microseconds(1);
        let cases: [(Value, i32, Vec<u8>); 14] = [
            (
                Value::String(Some(text.into())),
                text.len() as i32,
                text.as_bytes().to_vec(),
            ),
            (Value::String(Some(String::new())), 0, vec![]),
            (Value::String(None), -1, vec![]),
            (Value::Bool(Some(true)), 1, vec![1]),
            (Value::Bool(None), -1, vec![]),
            (Value::Int(Some(-2)), 4, (-2i32).to_be_bytes().to_vec()),
            (Value::Int(None), -1, vec![]),
            (
                Value::BigInt(Some(9_007_199_254_740_993)),
                8,
                9_007_199_254_740_993i64.to_be_bytes().to_vec(),
            ),
            (Value::BigInt(None), -1, vec![]),
            // Days and microseconds from PostgreSQL's epoch, 2000-01-01.
            (
                Value::ChronoDate(NaiveDate::from_ymd_opt(1999, 12, 31)),
                4,
                (-1i32).to_be_bytes().to_vec(),
            ),
            (
                Value::ChronoDate(NaiveDate::from_ymd_opt(2000, 1, 2)),
                4,
                1i32.to_be_bytes().to_vec(),
            ),
            (Value::ChronoDate(None), -1, vec![]),
            (
                Value::ChronoDateTimeUtc(Some(first_microsecond)),
                8,
                1i64.to_be_bytes().to_vec(),
            ),
            (Value::ChronoDateTimeUtc(None), -1, vec![]),
        ];
        let mut data = PgArgumentBuffer::default();
        for (value, _, _) in &cases {
            copy_field(value.clone(), &mut data).unwrap();
        }
        let expected: Vec<(i32, Vec<u8>)> = cases
            .into_iter()
            .map(|(_, length, bytes)| (length, bytes))
            .collect();
        assert_eq!(fields(&data), expected);
        assert_eq!(COPY_BINARY_HEADER.len(), 19);
    }
}
