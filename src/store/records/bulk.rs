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
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseBackend, DatabaseTransaction,
    EntityName, EntityTrait, IdenStatic, Iterable, Statement, Value,
};

use crate::store::StoreError;

use super::txn::{PgTxn, RecordsTxn};

/// Rows one statement (or one message of a `COPY`) carries.
pub(super) const BATCH: usize = 1000;

/// The most a `COPY` message's text is sized for up front (it grows past it).
const MAX_RESERVED_TEXT: usize = 8 << 20;

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
        let statement = format!("COPY \"{table}\" ({}) FROM STDIN", names.join(", "));
        let mut rows = rows.into_iter().peekable();
        let mut times = Times::default();
        let chunks = std::iter::from_fn(|| {
            rows.peek()?;
            let in_chunk = rows.len().min(BATCH);
            let mut text = String::new();
            for (n, mut row) in rows.by_ref().take(BATCH).enumerate() {
                for (i, column) in columns.iter().enumerate() {
                    if i > 0 {
                        text.push('\t');
                    }
                    let written = take(&mut row, *column, &table)
                        .and_then(|value| copy_field(value, &mut times, &mut text));
                    if let Err(error) = written {
                        return Some(Err(error));
                    }
                }
                text.push('\n');
                if n == 0 {
                    // Sized from the first row, with an eighth to spare: grown by
                    // doubling, the text was copied about once over. Capped, as one
                    // long first row says little about the others.
                    let estimate = (text.len() + text.len() / 8).saturating_mul(in_chunk - 1);
                    text.reserve(estimate.min(MAX_RESERVED_TEXT));
                }
            }
            Some(Ok(text))
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

/// The text of the last time written: the rows of one write share the moment
/// they were written at, and formatting it again for every row of a first sync
/// was a measurable part of building the rows.
#[derive(Default)]
struct Times(Option<(chrono::DateTime<chrono::Utc>, String)>);

impl Times {
    fn text(&mut self, time: chrono::DateTime<chrono::Utc>) -> &str {
        let (last, text) = self.0.get_or_insert_with(|| (time, pg_time(time)));
        if *last != time {
            *last = time;
            *text = pg_time(time);
        }
        text
    }
}

/// A time as PostgreSQL reads it back exactly: UTC, to the microsecond.
fn pg_time(time: chrono::DateTime<chrono::Utc>) -> String {
    time.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// A value in `COPY`'s text format, the same text [`json`] puts in the JSON
/// document (a test holds the two to that): `\N` for NULL, and in text the
/// characters that end a field or a line escaped.
fn copy_field(value: Value, times: &mut Times, out: &mut String) -> Result<(), StoreError> {
    match value {
        Value::String(None)
        | Value::Bool(None)
        | Value::Int(None)
        | Value::BigInt(None)
        | Value::ChronoDate(None)
        | Value::ChronoDateTimeUtc(None) => out.push_str("\\N"),
        Value::String(Some(text)) if !text.contains(['\\', '\t', '\n', '\r']) => {
            out.push_str(&text);
        }
        Value::String(Some(text)) => {
            for c in text.chars() {
                match c {
                    '\\' => out.push_str("\\\\"),
                    '\t' => out.push_str("\\t"),
                    '\n' => out.push_str("\\n"),
                    '\r' => out.push_str("\\r"),
                    c => out.push(c),
                }
            }
        }
        Value::Bool(Some(b)) => out.push(if b { 't' } else { 'f' }),
        Value::Int(Some(n)) => written(write!(out, "{n}"))?,
        Value::BigInt(Some(n)) => written(write!(out, "{n}"))?,
        Value::ChronoDate(Some(date)) => written(write!(out, "{date}"))?,
        Value::ChronoDateTimeUtc(Some(time)) => out.push_str(times.text(time)),
        other => return Err(uncarried(&other)),
    }
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

    /// What `COPY` reads back as the JSON document's value: `\N` for null, text
    /// with the field and line ends escaped, booleans as `t`/`f`, numbers as written.
    fn copy_text_of(json: serde_json::Value) -> String {
        match json {
            serde_json::Value::Null => "\\N".to_owned(),
            serde_json::Value::String(text) => text
                .replace('\\', "\\\\")
                .replace('\t', "\\t")
                .replace('\n', "\\n")
                .replace('\r', "\\r"),
            serde_json::Value::Bool(b) => if b { "t" } else { "f" }.to_owned(),
            other => other.to_string(),
        }
    }

    #[test]
    fn copy_text_carries_what_the_json_document_carries_for_every_column_type() {
        let moment = Utc.with_ymd_and_hms(2026, 12, 7, 5, 4, 3).unwrap()
            + chrono::Duration::microseconds(120_450);
        let values = [
            Value::String(Some("tab\there, back\\slash, \\N, line\nend\r".into())),
            Value::String(Some(String::new())),
            Value::String(None),
            Value::Bool(Some(true)),
            Value::Bool(Some(false)),
            Value::Bool(None),
            Value::Int(Some(-42)),
            Value::Int(None),
            Value::BigInt(Some(9_007_199_254_740_993)),
            Value::BigInt(None),
            Value::ChronoDate(Some(NaiveDate::from_ymd_opt(2024, 2, 29).unwrap())),
            Value::ChronoDate(None),
            Value::ChronoDateTimeUtc(Some(moment)),
            Value::ChronoDateTimeUtc(None),
        ];
        let mut times = Times::default();
        for value in values {
            let expected = copy_text_of(json(value.clone(), DatabaseBackend::Postgres).unwrap());
            let mut written = String::new();
            copy_field(value.clone(), &mut times, &mut written).unwrap();
            assert_eq!(written, expected, "{value:?}");
        }
        assert_eq!(times.text(moment), "2026-12-07T05:04:03.120450Z");
    }
}
