//! `finsync tokens`: the token vault's keys.

use std::process::ExitCode;

use secrecy::ExposeSecret;

use crate::app::{self, Logging};
use crate::store::{Actor, AuditEntry};
use crate::vault::Vault;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Prints a new random vault key (base64 of 32 bytes) for `vault.key`.
    GenerateKey,
    /// Re-seals every stored token under the current `vault.key`. Run it after
    /// moving the old key to `vault.previous_keys`; it can run while the fleet
    /// serves, and running it twice does nothing the second time.
    RotateKey,
}

pub async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::GenerateKey => {
            println!("{}", Vault::generate_key().expose_secret());
            Ok(ExitCode::SUCCESS)
        }
        Command::RotateKey => rotate_key().await,
    }
}

async fn rotate_key() -> anyhow::Result<ExitCode> {
    let settings = app::boot(None, Logging::Configured, "tokens")?;
    let store = app::open_store(&settings).await?;
    let vault = Vault::from_settings(&settings.vault)?;
    let report = crate::tokens::rotate::reseal_all(&store, &vault).await?;
    // Recorded after the work: re-sealing commits row by row, and what it did is
    // what the entry says.
    store
        .record(
            AuditEntry::new(Actor::cli(), "vault.rotate_key")
                .target(format!("vault_key:{}", vault.current_key_id()))
                .detail(serde_json::json!({
                    "connections": report.connections,
                    "pending_links": report.states,
                    "webhook_secrets": report.webhook_secrets,
                    "idempotent_answers": report.idempotent_answers,
                    "skipped": report.skipped,
                    "unreadable": report.unreadable,
                })),
        )
        .await?;
    println!(
        "Re-sealed {} connection(s), {} pending link(s), {} webhook secret(s) and {} kept idempotent answer(s) under key {}; {} already were current.",
        report.connections,
        report.states,
        report.webhook_secrets,
        report.idempotent_answers,
        vault.current_key_id(),
        report.current
    );
    if report.skipped > 0 {
        println!(
            "{} changed while this ran: run it again until none does.",
            report.skipped
        );
    }
    if report.unreadable > 0 {
        println!(
            "{} could not be opened with any configured key (see the log).",
            report.unreadable
        );
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}
