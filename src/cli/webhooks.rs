//! `finsync webhooks`: the webhooks institutions sent.

use std::process::ExitCode;
use std::time::Duration;

use crate::app::{self, App, Logging};
use crate::cli::render;
use crate::store::{Actor, AuditEntry, EventFilter, EventStatus};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Acts again on stored institution webhooks, with the connectors in service
    /// now: each event's connections get a sync (coalesced as for new events). By
    /// default the events of the last 7 days that were never acted on (`received`)
    /// or named accounts no connection held (`unmatched`).
    Replay {
        /// Only this institution's events.
        #[arg(long)]
        institution: Option<String>,
        /// Only this event (finsync's id or the institution's).
        #[arg(long)]
        event: Option<String>,
        /// Only events in these statuses (received, queued, coalesced, unmatched,
        /// ignored); repeat the flag or separate with commas.
        #[arg(long, value_delimiter = ',', default_values = ["received", "unmatched"])]
        status: Vec<EventStatus>,
        /// Only events received within this long before now (e.g. 30m, 24h, 7d).
        #[arg(long, default_value = "7d")]
        since: humantime::Duration,
    },
}

pub async fn run(command: Command) -> anyhow::Result<ExitCode> {
    let Command::Replay {
        institution,
        event,
        status,
        since,
    } = command;
    let settings = app::boot(None, Logging::Configured, "webhooks")?;
    let window = Duration::from_millis(settings.institution_webhooks.coalesce_ms);
    let since = chrono::Duration::from_std(*since)
        .ok()
        .and_then(|ago| chrono::Utc::now().checked_sub_signed(ago));
    let app = App::build(settings).await?;
    let filter = EventFilter {
        institution,
        statuses: status,
        since,
        event,
    };
    let replayed = crate::webhooks::inbound::replay(&app.ctx, &filter, window).await?;
    app.ctx
        .store
        .record(
            AuditEntry::new(Actor::cli(), "institution_webhooks.replay").detail(
                serde_json::json!({ "institution": filter.institution, "events": replayed.len() }),
            ),
        )
        .await?;
    println!("{}", render::replayed_events(&replayed));
    Ok(ExitCode::SUCCESS)
}
