//! `finsync fx`: the exchange rates reporting currencies are converted at: fetch
//! them now from the configured provider, or show the latest stored.

use std::process::ExitCode;

use crate::app::{self, App, Logging};
use crate::cli::render;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Fetches the provider's rates now and stores them (the scheduler does so
    /// every `fx.refresh_secs`), then shows the latest.
    Refresh,
    /// Shows the latest stored rate of each currency, with its date and source.
    Rates,
}

pub async fn run(command: Command) -> anyhow::Result<ExitCode> {
    let settings = app::boot(None, Logging::Configured, "fx")?;
    let app = App::build(settings).await?;
    let fx = &app.ctx.fx;
    let store = &app.ctx.store;
    if matches!(command, Command::Refresh) {
        let refreshed = fx.refresh(store).await?;
        println!(
            "Stored {} rates of {} currencies from {} (newest {}).",
            refreshed.rates,
            refreshed.currencies,
            fx.provider.url(),
            refreshed
                .newest
                .map_or_else(|| "none".to_owned(), |d| d.to_string()),
        );
    }
    match fx.latest(store).await? {
        Some(table) => println!("{}", render::rates(&table)),
        None => println!(
            "No exchange rates stored yet from `{}`: run `finsync fx refresh`.",
            fx.provider.source()
        ),
    }
    Ok(ExitCode::SUCCESS)
}
