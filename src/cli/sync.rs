//! `finsync sync`: syncs on demand.

use std::process::ExitCode;

use crate::app::{self, Logging};
use crate::cli::render;
use crate::store::{Actor, AuditEntry};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Enqueues a sync of every connection with records in quarantine, so they are
    /// fetched and mapped again by the connector now in service (run it after a
    /// connector fix). The workers do the syncs; entries that map are resolved.
    Replay {
        /// Replay the records in quarantine (the only kind of replay there is).
        #[arg(long, required = true)]
        quarantined: bool,
        /// Only connections of this connector (institution id).
        #[arg(long)]
        connector: Option<String>,
    },
}

pub async fn run(command: Command) -> anyhow::Result<ExitCode> {
    let Command::Replay {
        quarantined: _,
        connector,
    } = command;
    let settings = app::boot(None, Logging::Configured, "sync")?;
    let store = app::open_store(&settings).await?;
    let queue = crate::sync::Queue::setup(&store).await?;
    let replayed =
        crate::sync::replay::replay_quarantined(&store, &queue, connector.as_deref()).await?;
    let connections: Vec<String> = replayed
        .iter()
        .map(|r| r.connection_id.to_string())
        .collect();
    store
        .record(
            AuditEntry::new(Actor::cli(), "quarantine.replay")
                .detail(serde_json::json!({ "connector": connector, "connections": connections })),
        )
        .await?;
    println!("{}", render::replayed(&replayed));
    Ok(ExitCode::SUCCESS)
}
