//! How a finsync process starts and what it runs: [`config`] (layered settings),
//! [`telemetry`] (logging and the metrics recorder), [`startup`] (the shared parts,
//! built once per process) and [`roles`] (which loops each kind of process runs).
//! [`run_to_exit`] is every binary's `main`; [`boot`] is the first step of every
//! command.

pub mod config;
pub mod roles;
pub mod startup;
pub mod telemetry;

pub use self::config::Settings;
pub use self::roles::shutdown_signal;
pub use self::startup::App;

/// Runs a command's future on a multi-threaded runtime and turns its outcome into
/// the process's exit code, printing the error chain when it failed: the body of
/// every binary's `main`.
pub fn run_to_exit<F>(command: F) -> std::process::ExitCode
where
    F: std::future::Future<Output = anyhow::Result<std::process::ExitCode>>,
{
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(command);
    telemetry::shutdown();
    match outcome {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// How much a command logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logging {
    /// As configured (`log.filter`, `RUST_LOG`).
    Configured,
    /// Problems only: for commands whose output is a table or progress on the
    /// terminal.
    Quiet,
}

/// Loads the settings (`FINSYNC_ENV`, else `default_env`, else the base layer) and
/// starts logging and tracing for the command `service`.
pub fn boot(
    default_env: Option<&str>,
    logging: Logging,
    service: &str,
) -> anyhow::Result<Settings> {
    let mut settings = Settings::load(default_env)?;
    if logging == Logging::Quiet {
        settings.log.filter = "warn".into();
    }
    telemetry::init(&settings.log, &settings.tracing, service)?;
    Ok(settings)
}

/// The database the settings name, migrated: for commands that need only the store.
pub async fn open_store(settings: &Settings) -> anyhow::Result<crate::store::Store> {
    let store = crate::store::Store::connect(&settings.database.url, 2).await?;
    store.migrate().await?;
    Ok(store)
}
