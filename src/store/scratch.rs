//! Stores for unit tests that need a real database: SQLite in memory, and
//! PostgreSQL on a database of the test's own on the test server
//! (`FINSYNC_TEST_DATABASE_URL`), dropped afterwards whether the test passed or not.

use std::future::Future;

use sea_orm::{ConnectionTrait, Database};
use secrecy::SecretString;

use super::Store;

/// A store on an in-memory SQLite database, not migrated. One connection: an
/// in-memory database lives as long as its connection.
pub(crate) async fn sqlite() -> Store {
    Store::connect(&SecretString::from("sqlite::memory:"), 1)
        .await
        .unwrap()
}

/// Runs `check` with a store on a new PostgreSQL database (not migrated) and drops
/// the database after; a panic in `check` fails the test once the database is gone.
pub(crate) async fn on_postgres<F, Fut>(check: F)
where
    F: FnOnce(Store) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let admin_url = std::env::var("FINSYNC_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let name = format!("finsync_unit_{}", uuid::Uuid::new_v4().simple());
    let admin = Database::connect(&admin_url).await.unwrap();
    admin
        .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
        .await
        .unwrap();
    let mut url = url::Url::parse(&admin_url).unwrap();
    url.set_path(&format!("/{name}"));
    let store = Store::connect(&SecretString::from(url.to_string()), 2)
        .await
        .unwrap();
    // Run as a task, so the database is dropped whether it passed or not.
    let checked = tokio::spawn(async move {
        let db = store.db().clone();
        check(store).await;
        db.close().await
    })
    .await;
    admin
        .execute_unprepared(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
        .await
        .unwrap();
    if let Err(e) = checked {
        std::panic::resume_unwind(e.into_panic());
    }
}
