//! `finsync connectors`: validates connector files, and checks a connector against
//! its live institution ([`crate::sync::check`]).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;

use crate::app::{self, App, Logging};
use crate::cli::render;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Validates connector files and reports every problem in each. A file's id is
    /// its stem, unless `--id` says which connector a draft (one file) is for.
    Validate {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// The connector id a draft under another name is for (one file only).
        #[arg(long)]
        id: Option<String>,
    },
    /// Links the institution's test user and runs every endpoint of connector ID
    /// once: records fetched and mapped, fields missing or unparsable. Stores nothing.
    Check {
        id: String,
        /// The institution's test user (it must approve this user without a login page).
        #[arg(long, default_value = "test-check")]
        user: String,
        /// Check this file as connector ID instead of the version in service.
        #[arg(long)]
        file: Option<PathBuf>,
    },
}

pub async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Validate { files, id } => Ok(validate(&files, id.as_deref())),
        Command::Check { id, user, file } => check(id, user, file).await,
    }
}

async fn check(id: String, user: String, file: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let settings = app::boot(None, Logging::Quiet, "connectors")?;
    let app = App::build(settings).await?;
    let registry = app.catalog.registry();
    let connector = match file {
        Some(path) => {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            match registry.validate(&path.display().to_string(), &id, &text) {
                Ok(connector) => Arc::new(connector),
                Err(problems) => {
                    println!("{problems}");
                    return Ok(ExitCode::from(1));
                }
            }
        }
        None => registry.get(&id)?,
    };
    let secret = registry.client_secret(&connector)?;
    let redirect = app.settings.server.public_url.join("oauth/callback")?;
    println!(
        "Checking {} ({}) as `{user}`…",
        connector.name, connector.id
    );
    let secrets: crate::connectors::engine::Secrets = {
        let registry = registry.clone();
        Arc::new(move |connector: &crate::connectors::Connector, env: &str| {
            registry.secret(connector, env).ok()
        })
    };
    let reports = crate::sync::check::check(
        &connector,
        secret,
        secrets,
        &redirect,
        &user,
        crate::http::client(),
    )
    .await?;
    println!("{}", render::check(&reports));
    Ok(if reports.iter().all(|r| r.is_clean()) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn validate(files: &[PathBuf], id: Option<&str>) -> ExitCode {
    if id.is_some() && files.len() > 1 {
        println!("--id names the connector of one draft; give one file with it");
        return ExitCode::from(2);
    }
    let mut failed = 0;
    for file in files {
        let validated = match id {
            None => crate::connectors::validate_file(file, None),
            Some(id) => match std::fs::read_to_string(file) {
                Ok(text) => {
                    crate::connectors::validate_str(&file.display().to_string(), id, &text, None)
                }
                Err(e) => Err(crate::connectors::Problems(vec![
                    crate::connectors::Problem {
                        file: file.display().to_string(),
                        path: String::new(),
                        message: format!("cannot read: {e}"),
                    },
                ])),
            },
        };
        match validated {
            Ok(c) => println!("ok      {}  ({}: {})", file.display(), c.id, c.name),
            Err(problems) => {
                failed += 1;
                println!(
                    "invalid {}  ({} problem{})",
                    file.display(),
                    problems.0.len(),
                    if problems.0.len() == 1 { "" } else { "s" }
                );
                for problem in &problems.0 {
                    println!(
                        "  - {}{}",
                        if problem.path.is_empty() {
                            String::new()
                        } else {
                            format!("{}: ", problem.path)
                        },
                        problem.message
                    );
                }
            }
        }
    }
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
