//! `finsync reconcile`: what reconciliation after the syncs found that does not add
//! up, as a table per finding with a count per institution and code.

use std::process::ExitCode;

use crate::app::{self, App, Logging};
use crate::cli::render;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only this institution's connections (a connector id, e.g. `meridian`).
    #[arg(long)]
    institution: Option<String>,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let settings = app::boot(None, Logging::Configured, "reconcile")?;
    let app = App::build(settings).await?;
    if let Some(id) = &args.institution
        && app.ctx.registry.get(id).is_err()
    {
        let known: Vec<String> = app
            .ctx
            .registry
            .all()
            .iter()
            .map(|s| s.connector.id.clone())
            .collect();
        anyhow::bail!(
            "no institution `{id}` is in service; known: {}",
            known.join(", ")
        );
    }
    let report = app
        .ctx
        .store
        .findings_report(args.institution.as_deref())
        .await?;
    println!("{}", render::findings(&report));
    Ok(ExitCode::SUCCESS)
}
