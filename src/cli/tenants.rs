//! `finsync tenants`: advisory apps and their API keys.

use std::process::ExitCode;

use secrecy::ExposeSecret;

use crate::app::{self, Logging};
use crate::store::{Actor, AuditEntry};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Creates a tenant and prints its API key (shown only this once).
    Create { name: String },
    /// Issues a new API key for a tenant; the old one stops working.
    RotateKey { name: String },
}

pub async fn run(command: Command) -> anyhow::Result<ExitCode> {
    let settings = app::boot(None, Logging::Configured, "tenants")?;
    let store = app::open_store(&settings).await?;
    let (tenant, key) = match command {
        Command::Create { name } => store.create_tenant(&name).await?,
        Command::RotateKey { name } => {
            let audit = AuditEntry::new(Actor::cli(), "tenant.rotate_key");
            store.rotate_api_key(&name, audit).await?
        }
    };
    println!("tenant:  {} ({})", tenant.name, tenant.id);
    println!("api key: {}", key.0.expose_secret());
    println!("Store the key now: finsync keeps only its hash.");
    Ok(ExitCode::SUCCESS)
}
