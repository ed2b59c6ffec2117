//! `finsync sandbox`: the sandbox institutions on their own, for development, tests
//! and benchmarks.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use finsync_sandbox::{self as sandbox, SandboxConfig};
use tokio::net::TcpListener;

use crate::app::{self, Logging, shutdown_signal};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[arg(long, default_value_t = 8091)]
    port: u16,
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    #[arg(long)]
    seed: Option<u64>,
    /// Access-token lifetime in seconds.
    #[arg(long)]
    token_ttl: Option<u64>,
    /// The data's "today" (YYYY-MM-DD); default `sandbox.anchor_date`, else two
    /// days before now.
    #[arg(long)]
    anchor_date: Option<chrono::NaiveDate>,
    /// Where an institution sends its webhooks, as `INSTITUTION=URL` (only
    /// meridian sends any), e.g. `meridian=http://127.0.0.1:8080/webhooks/meridian`.
    #[arg(long = "webhook", value_parser = parse_webhook)]
    webhooks: Vec<(String, String)>,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let settings = app::boot(None, Logging::Configured, "sandbox")?;
    let listener = TcpListener::bind((args.host.as_str(), args.port))
        .await
        .with_context(|| format!("binding {}:{}", args.host, args.port))?;
    let configured = settings.sandbox.config();
    let config = SandboxConfig {
        seed: args.seed.unwrap_or(configured.seed),
        access_token_ttl: args
            .token_ttl
            .map_or(configured.access_token_ttl, Duration::from_secs),
        anchor_date: args.anchor_date.unwrap_or(configured.anchor_date),
        webhook_urls: args.webhooks.into_iter().collect(),
        ..configured
    };
    let sandbox = sandbox::spawn(config, listener).await?;
    println!("Sandbox institutions at {}", sandbox.base_url());
    for institution in sandbox::Institution::ALL {
        println!(
            "  {}: {}",
            institution.name(),
            sandbox.api_base(institution)
        );
    }
    shutdown_signal().await;
    sandbox.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

/// `INSTITUTION=URL`, for `--webhook`.
fn parse_webhook(text: &str) -> Result<(String, String), String> {
    let (institution, url) = text
        .split_once('=')
        .ok_or_else(|| format!("`{text}` is not INSTITUTION=URL"))?;
    let institution: sandbox::Institution = institution.parse().map_err(|e| format!("{e}"))?;
    if institution != sandbox::Institution::Meridian {
        return Err(format!(
            "{} sends no webhooks; only meridian does",
            institution.name()
        ));
    }
    url::Url::parse(url).map_err(|e| format!("`{url}` is not a URL: {e}"))?;
    Ok((institution.id().to_owned(), url.to_owned()))
}
