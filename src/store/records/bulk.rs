//! Statements over many rows whose text does not depend on how many rows they
//! carry: the rows (or ids) travel as one JSON document in one parameter.
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
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseBackend, EntityName, EntityTrait,
    IdenStatic, Iterable, Statement, Value,
};

use crate::store::StoreError;

/// Rows one statement carries.
pub(super) const BATCH: usize = 1000;

/// Inserts `rows` (every one with the same columns set), [`BATCH`] at a time: on
/// PostgreSQL as `INSERT … SELECT … FROM json_populate_recordset`, which takes each
/// value's type from the table; on SQLite as `INSERT … SELECT … FROM json_each`.
pub(super) async fn insert_all<A, C>(db: &C, rows: Vec<A>) -> Result<(), StoreError>
where
    A: ActiveModelTrait + Send,
    C: ConnectionTrait,
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
                let value = row.take(*column).into_value().ok_or_else(|| {
                    StoreError::Corrupt(format!("{table}.{} not set", column.as_str()))
                })?;
                if i > 0 {
                    text.push(',');
                }
                text.push('"');
                text.push_str(column.as_str());
                text.push_str("\":");
                write!(text, "{}", json(value, backend)?)
                    .map_err(|e| StoreError::Corrupt(e.to_string()))?;
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
/// The value is taken, not borrowed: a sync writes hundreds of thousands of texts,
/// and each is moved into the document rather than copied.
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
                DatabaseBackend::Postgres => t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                // As sqlx writes SQLite's times.
                _ => t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, false),
            })
        }),
        other => {
            return Err(StoreError::Corrupt(format!(
                "a bulk insert cannot carry {other:?}"
            )));
        }
    })
}
