//! `finsync migrate`: brings the database's schema up to date.

use std::process::ExitCode;

use crate::app::{self, Logging};

pub async fn run() -> anyhow::Result<ExitCode> {
    let settings = app::boot(None, Logging::Configured, "migrate")?;
    app::open_store(&settings).await?;
    println!("Database is up to date.");
    Ok(ExitCode::SUCCESS)
}
