//! finsync's database schema, as SeaORM migrations that run on both SQLite and
//! PostgreSQL. Migrations describe tables in their own terms and never import the
//! application's entities, so an old migration keeps meaning what it meant.
//!
//! Money and quantities are stored as exact decimal text (see `DbDecimal` in the
//! application): SQLite has no exact decimal type, and one representation on both
//! databases keeps the entities identical.

pub use sea_orm_migration::prelude::*;

mod m20261122_000001_create_core_tables;
mod m20261122_000002_api_keys_syncs_webhooks;
mod m20261122_000003_connector_versions;
mod m20261122_000004_transaction_annotations;
mod m20261122_000005_quarantine;
mod m20261122_000006_sync_schedules;
mod m20261204_000007_institution_events;
mod m20261204_000008_annotated_transactions;
mod m20261205_000009_connection_sync_state;
mod m20261205_000010_recovery;
mod m20261205_000011_grant_values;
mod m20261205_000012_unread_accounts;
mod m20261206_000013_idempotency_keys;
mod m20261206_000014_tenant_institutions;
mod m20261206_000015_link_sessions;
mod m20261206_000016_run_finish_index;
mod m20261207_000017_admins_and_audit;
mod m20261207_000018_erasures;
mod m20261207_000019_consent_events;
mod m20261207_000020_institution_breakers;
mod m20261208_000021_instruments;
mod m20261208_000022_account_fetches;
mod m20261209_000023_data_quality;
mod m20261210_000024_fx_rates;
mod m20261210_000025_households;
mod m20261210_000026_balance_meaning;
mod m20261210_000027_corporate_actions;
mod m20261211_000028_unannotated_rebuilds;
mod m20261212_000029_newest_transactions;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261122_000001_create_core_tables::Migration),
            Box::new(m20261122_000002_api_keys_syncs_webhooks::Migration),
            Box::new(m20261122_000003_connector_versions::Migration),
            Box::new(m20261122_000004_transaction_annotations::Migration),
            Box::new(m20261122_000005_quarantine::Migration),
            Box::new(m20261122_000006_sync_schedules::Migration),
            Box::new(m20261204_000007_institution_events::Migration),
            Box::new(m20261204_000008_annotated_transactions::Migration),
            Box::new(m20261205_000009_connection_sync_state::Migration),
            Box::new(m20261205_000010_recovery::Migration),
            Box::new(m20261205_000011_grant_values::Migration),
            Box::new(m20261205_000012_unread_accounts::Migration),
            Box::new(m20261206_000013_idempotency_keys::Migration),
            Box::new(m20261206_000014_tenant_institutions::Migration),
            Box::new(m20261206_000015_link_sessions::Migration),
            Box::new(m20261206_000016_run_finish_index::Migration),
            Box::new(m20261207_000017_admins_and_audit::Migration),
            Box::new(m20261207_000018_erasures::Migration),
            Box::new(m20261207_000019_consent_events::Migration),
            Box::new(m20261207_000020_institution_breakers::Migration),
            Box::new(m20261208_000021_instruments::Migration),
            Box::new(m20261208_000022_account_fetches::Migration),
            Box::new(m20261209_000023_data_quality::Migration),
            Box::new(m20261210_000024_fx_rates::Migration),
            Box::new(m20261210_000025_households::Migration),
            Box::new(m20261210_000026_balance_meaning::Migration),
            Box::new(m20261210_000027_corporate_actions::Migration),
            Box::new(m20261211_000028_unannotated_rebuilds::Migration),
            Box::new(m20261212_000029_newest_transactions::Migration),
        ]
    }
}
