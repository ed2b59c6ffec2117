//! `finsync worker`: sync workers and webhook deliveries; run as many as needed.

use std::process::ExitCode;

use crate::app::{self, App, Logging, roles};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Syncs run at the same time by this process.
    #[arg(long)]
    concurrency: Option<usize>,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut settings = app::boot(None, Logging::Configured, "worker")?;
    super::separate_role_allowed(&settings, "worker")?;
    // A worker serves no reads: the views it writes are for the API processes,
    // through Redis, and a copy in this process would only hold memory.
    if settings.redis_url().is_some() {
        settings.cache.l1_capacity = 0;
    }
    let concurrency = args
        .concurrency
        .unwrap_or(settings.sync.worker_concurrency)
        .max(1);
    let app = App::build(settings).await?;
    roles::worker(&app, concurrency).await?;
    Ok(ExitCode::SUCCESS)
}
