//! `finsync scheduler`: enqueues due syncs and refreshes; safe to run more than one.

use std::process::ExitCode;

use crate::app::{self, App, Logging, roles};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Run one pass and exit.
    #[arg(long)]
    once: bool,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let settings = app::boot(None, Logging::Configured, "scheduler")?;
    super::separate_role_allowed(&settings, "scheduler")?;
    let app = App::build(settings).await?;
    if args.once {
        let enqueued = crate::sync::scheduler::tick(&app.ctx).await?;
        println!("Enqueued {enqueued} due sync(s).");
    } else {
        roles::scheduler(&app).await?;
    }
    Ok(ExitCode::SUCCESS)
}
