//! The `finsync` command line: one module per subcommand, each with its arguments
//! and a `run` that boots what it needs ([`crate::app::boot`]) and calls a use case.
//! [`render`] lays out what the commands print.

pub mod admins;
pub mod audit;
pub mod connectors;
pub mod demo;
pub mod fx;
pub mod migrate;
pub mod reconcile;
pub mod render;
pub mod sandbox;
pub mod scheduler;
pub mod serve;
pub mod sync;
pub mod tenants;
pub mod tokens;
pub mod webhooks;
pub mod worker;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "finsync",
    version,
    about = "Financial data aggregation: connectors, tokens, scheduled syncs, a cached read API."
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Everything in one process on embedded defaults: links demo users to the
    /// sandbox, syncs them, prints their portfolios and keeps serving the API.
    Demo(demo::Args),
    /// The HTTP API (read API, admin API, OAuth callback, health). In embedded mode
    /// (SQLite) it also runs the workers, the webhook deliveries and the scheduler.
    Serve,
    /// Sync workers and webhook deliveries; run as many as needed.
    Worker(worker::Args),
    /// Enqueues due syncs; safe to run more than one.
    Scheduler(scheduler::Args),
    /// The sandbox institutions on their own.
    Sandbox(sandbox::Args),
    /// Runs database migrations and exits.
    Migrate,
    /// Named admin credentials and their roles.
    #[command(subcommand)]
    Admins(admins::Command),
    /// The audit trail: verify its hash chain, export it.
    #[command(subcommand)]
    Audit(audit::Command),
    /// Connector files.
    #[command(subcommand)]
    Connectors(connectors::Command),
    /// Exchange rates for reporting currencies: fetch now, show the latest.
    #[command(subcommand)]
    Fx(fx::Command),
    /// What reconciliation after the syncs found that does not add up (data
    /// quality), as a table.
    Reconcile(reconcile::Args),
    /// Tenants (advisory apps) and their API keys.
    #[command(subcommand)]
    Tenants(tenants::Command),
    /// The token vault.
    #[command(subcommand)]
    Tokens(tokens::Command),
    /// Syncs on demand.
    #[command(subcommand)]
    Sync(sync::Command),
    /// Webhooks institutions sent.
    #[command(subcommand)]
    Webhooks(webhooks::Command),
}

/// Runs the parsed command; the exit code says whether what it checked passed.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Demo(args) => demo::run(args).await,
        Command::Serve => serve::run().await,
        Command::Worker(args) => worker::run(args).await,
        Command::Scheduler(args) => scheduler::run(args).await,
        Command::Sandbox(args) => sandbox::run(args).await,
        Command::Migrate => migrate::run().await,
        Command::Admins(command) => admins::run(command).await,
        Command::Audit(command) => audit::run(command).await,
        Command::Connectors(command) => connectors::run(command).await,
        Command::Fx(command) => fx::run(command).await,
        Command::Reconcile(args) => reconcile::run(args).await,
        Command::Tenants(command) => tenants::run(command).await,
        Command::Tokens(command) => tokens::run(command).await,
        Command::Sync(command) => sync::run(command).await,
        Command::Webhooks(command) => webhooks::run(command).await,
    }
}

/// A worker or scheduler of its own needs the institutions the API process talks
/// to: with the sandbox inside `serve`'s process, it would talk to another one.
fn separate_role_allowed(settings: &crate::app::Settings, role: &str) -> anyhow::Result<()> {
    if settings.sandbox.in_process {
        anyhow::bail!(
            "`finsync {role}` runs on its own only against shared institutions: with the embedded \
             defaults, `finsync serve` already runs the workers and the scheduler. Run the sandbox \
             with `finsync sandbox` and set FINSYNC__SANDBOX__IN_PROCESS=false (or use FINSYNC_ENV=production)."
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        super::Cli::command().debug_assert();
    }
}
