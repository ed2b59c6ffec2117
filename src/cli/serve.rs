//! `finsync serve`: the HTTP API (and, embedded, every other loop).

use std::process::ExitCode;

use anyhow::Context as _;
use tokio::net::TcpListener;

use crate::app::{self, App, Logging, roles};

pub async fn run() -> anyhow::Result<ExitCode> {
    let settings = app::boot(None, Logging::Configured, "serve")?;
    let listener = TcpListener::bind(settings.server.bind)
        .await
        .with_context(|| format!("binding {}", settings.server.bind))?;
    let embedded = !settings.is_postgres();
    let app = App::build(settings).await?;
    tracing::info!(address = %listener.local_addr()?, embedded, "Serving the API.");
    roles::serve(&app, listener).await?;
    Ok(ExitCode::SUCCESS)
}
