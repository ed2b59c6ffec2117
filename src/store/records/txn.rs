//! The transaction accounts' records are written in. On PostgreSQL it runs on a
//! pooled connection the store holds itself, not in a sea-orm transaction, whose
//! connection sea-orm keeps to itself: `COPY … FROM STDIN` needs the connection,
//! and a first sync's hundreds of thousands of new rows cost the database about
//! half as much through it as through an `INSERT` (BENCHMARKS.md). Every other
//! statement is sea-orm's, run as sea-orm runs it, with its errors. On SQLite it
//! is sea-orm's own transaction.

use sea_orm::sea_query::Values;
use sea_orm::sqlx::pool::PoolConnection;
use sea_orm::sqlx::{self, Executor as _, Postgres};
use sea_orm::{
    ConnectionTrait, DatabaseTransaction, DbBackend, DbErr, ExecResult, QueryResult, RuntimeErr,
    Statement,
};
use sea_query_sqlx::SqlxValues;
use tokio::sync::Mutex;

use crate::store::{Store, StoreError};

/// A write transaction of accounts' records; dropped uncommitted, it rolls back.
pub(super) enum RecordsTxn {
    Postgres(PgTxn),
    /// SQLite: sea-orm's transaction, begun as [`Store::begin_write`] begins one.
    Other(DatabaseTransaction),
}

/// A PostgreSQL transaction on a connection of the store's pool. The lock only
/// serialises one writer's statements, as sea-orm's transaction does.
pub(super) struct PgTxn(Mutex<Held>);

/// The pooled connection, in a transaction until committed.
struct Held {
    conn: PoolConnection<Postgres>,
    committed: bool,
}

impl Drop for Held {
    /// Uncommitted, the connection is closed, which ends its transaction, rather
    /// than returned to the pool: the write failed or was dropped part-way (its
    /// sync's lease lost, the worker stopping), maybe in the middle of a `COPY`,
    /// from where sqlx cannot bring a connection back, and the next statement on
    /// it would read this one's answers. A failed write is rare; a new connection
    /// is cheap beside it.
    fn drop(&mut self) {
        if !self.committed {
            self.conn.close_on_drop();
        }
    }
}

impl Store {
    /// Starts a transaction accounts' records are written in.
    pub(super) async fn begin_records_write(&self) -> Result<RecordsTxn, StoreError> {
        if self.is_postgres() {
            let conn = self
                .db()
                .get_postgres_connection_pool()
                .acquire()
                .await
                .map_err(acquire_err)?;
            let mut held = Held {
                conn,
                committed: false,
            };
            held.conn
                .execute("BEGIN")
                .await
                .map_err(|e| StoreError::from(query_db_err(e)))?;
            Ok(RecordsTxn::Postgres(PgTxn(Mutex::new(held))))
        } else {
            Ok(RecordsTxn::Other(self.begin_write().await?))
        }
    }
}

impl RecordsTxn {
    pub(super) async fn commit(self) -> Result<(), StoreError> {
        match self {
            Self::Postgres(PgTxn(held)) => {
                let mut held = held.into_inner();
                held.conn
                    .execute("COMMIT")
                    .await
                    .map_err(|e| StoreError::from(query_db_err(e)))?;
                held.committed = true;
            }
            Self::Other(txn) => txn.commit().await?,
        }
        Ok(())
    }
}

impl PgTxn {
    /// Runs `statement`, a `COPY … FROM STDIN`, with the data `chunks` give, in
    /// the order given. After a failure, whether the database's or a chunk's, the
    /// transaction can only be dropped.
    pub(super) async fn copy_in(
        &self,
        statement: &str,
        chunks: impl Iterator<Item = Result<Vec<u8>, StoreError>>,
    ) -> Result<(), StoreError> {
        let mut held = self.0.lock().await;
        let mut copy = held.conn.copy_in_raw(statement).await.map_err(exec_err)?;
        for chunk in chunks {
            match chunk {
                Ok(data) => {
                    copy.send(data).await.map_err(exec_err)?;
                }
                Err(error) => {
                    // The server answers an aborted copy with an error, which is
                    // expected here: the caller's error is the one to report.
                    let _ = copy.abort("the rows could not be written").await;
                    return Err(error);
                }
            }
        }
        copy.finish().await.map_err(exec_err)?;
        Ok(())
    }
}

#[async_trait::async_trait]
impl ConnectionTrait for RecordsTxn {
    fn get_database_backend(&self) -> DbBackend {
        match self {
            Self::Postgres(_) => DbBackend::Postgres,
            Self::Other(txn) => txn.get_database_backend(),
        }
    }

    async fn execute_raw(&self, stmt: Statement) -> Result<ExecResult, DbErr> {
        match self {
            Self::Postgres(PgTxn(held)) => {
                let mut held = held.lock().await;
                query(&stmt)
                    .execute(&mut *held.conn)
                    .await
                    .map(ExecResult::from)
                    .map_err(exec_db_err)
            }
            Self::Other(txn) => txn.execute_raw(stmt).await,
        }
    }

    async fn execute_unprepared(&self, sql: &str) -> Result<ExecResult, DbErr> {
        match self {
            Self::Postgres(PgTxn(held)) => {
                let mut held = held.lock().await;
                held.conn
                    .execute(sqlx::AssertSqlSafe(sql.to_owned()))
                    .await
                    .map(ExecResult::from)
                    .map_err(exec_db_err)
            }
            Self::Other(txn) => txn.execute_unprepared(sql).await,
        }
    }

    async fn query_one_raw(&self, stmt: Statement) -> Result<Option<QueryResult>, DbErr> {
        match self {
            Self::Postgres(PgTxn(held)) => {
                let mut held = held.lock().await;
                query(&stmt)
                    .fetch_optional(&mut *held.conn)
                    .await
                    .map(|row| row.map(QueryResult::from))
                    .map_err(query_db_err)
            }
            Self::Other(txn) => txn.query_one_raw(stmt).await,
        }
    }

    async fn query_all_raw(&self, stmt: Statement) -> Result<Vec<QueryResult>, DbErr> {
        match self {
            Self::Postgres(PgTxn(held)) => {
                let mut held = held.lock().await;
                query(&stmt)
                    .fetch_all(&mut *held.conn)
                    .await
                    .map(|rows| rows.into_iter().map(QueryResult::from).collect())
                    .map_err(query_db_err)
            }
            Self::Other(txn) => txn.query_all_raw(stmt).await,
        }
    }

    fn support_returning(&self) -> bool {
        match self {
            Self::Postgres(_) => true,
            Self::Other(txn) => txn.support_returning(),
        }
    }
}

/// A sea-orm statement as the sqlx query sea-orm would run for it.
fn query(stmt: &Statement) -> sqlx::query::Query<'_, Postgres, SqlxValues> {
    let values = stmt.values.clone().unwrap_or(Values(Vec::new()));
    sqlx::query_with(sqlx::AssertSqlSafe(stmt.sql.as_str()), SqlxValues(values))
}

// sqlx's errors wrapped as sea-orm wraps them, so that callers tell an outage, a
// conflict or a bad statement apart the same way whichever transaction ran it.

fn exec_db_err(error: sqlx::Error) -> DbErr {
    DbErr::Exec(RuntimeErr::SqlxError(error.into()))
}

fn query_db_err(error: sqlx::Error) -> DbErr {
    DbErr::Query(RuntimeErr::SqlxError(error.into()))
}

fn exec_err(error: sqlx::Error) -> StoreError {
    exec_db_err(error).into()
}

fn acquire_err(error: sqlx::Error) -> StoreError {
    use sea_orm::ConnAcquireErr;
    match error {
        sqlx::Error::PoolTimedOut => DbErr::ConnectionAcquire(ConnAcquireErr::Timeout),
        sqlx::Error::PoolClosed => DbErr::ConnectionAcquire(ConnAcquireErr::ConnectionClosed),
        other => DbErr::Conn(RuntimeErr::SqlxError(other.into())),
    }
    .into()
}
