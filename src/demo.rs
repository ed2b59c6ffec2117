//! `finsync demo`: the whole system in one process on embedded defaults. Starts the
//! sandbox institutions, links three demo users through the real OAuth redirect
//! flow over HTTP, syncs them on the job queue with a progress display, prints their
//! portfolios and keeps serving the API.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use reqwest::StatusCode;
use reqwest::header::LOCATION;
use secrecy::ExposeSecret;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::Settings;
use crate::domain::{ConnectionId, ConnectionStatus, TenantId, UserId};
use crate::startup::{App, shutdown_signal};
use crate::{portfolio, render};

pub const DEMO_TENANT: &str = "demo";
pub const DEMO_USERS: [&str; 3] = ["demo-alice", "demo-bob", "demo-carol"];
const DEMO_INSTITUTION: &str = "meridian";
const SYNC_TIMEOUT: Duration = Duration::from_secs(120);

pub async fn run(settings: Settings, once: bool) -> anyhow::Result<()> {
    // The configured port if free, else any: a second demo must not fail on it.
    let listener = match TcpListener::bind(settings.server.bind).await {
        Ok(l) => l,
        Err(_) => TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the API")?,
    };
    let address = listener.local_addr()?;
    let public_url = url::Url::parse(&format!("http://{address}/"))?;
    let concurrency = settings.sync.worker_concurrency;

    let progress = MultiProgress::new();
    let boot = step(
        &progress,
        "Starting finsync (SQLite, in-process cache, sandbox institutions)…",
    );
    let app = Arc::new(App::build(settings, public_url.clone()).await?);
    let (stop, stopped) = watch::channel(false);
    let until_stopped = move || {
        let mut rx = stopped.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let server = tokio::spawn({
        let (app, shutdown) = (app.clone(), until_stopped());
        async move { app.serve(listener, shutdown).await }
    });
    let workers = tokio::spawn({
        let (app, shutdown) = (app.clone(), until_stopped());
        async move { app.run_workers(concurrency, shutdown).await }
    });
    let webhooks = tokio::spawn({
        let (app, shutdown) = (app.clone(), until_stopped());
        async move { app.run_webhooks(shutdown).await }
    });
    boot.finish_with_message(format!("finsync is up: API {public_url}"));

    let tenant = match app.ctx.store.tenant_by_name(DEMO_TENANT).await? {
        Some(_) => app.ctx.store.rotate_api_key(DEMO_TENANT).await?,
        None => app.ctx.store.create_tenant(DEMO_TENANT).await?,
    };
    let (tenant, api_key) = tenant;

    let http = crate::http::client();
    let linked_at = chrono::Utc::now();
    let mut linked = Vec::new();
    for user in DEMO_USERS {
        let bar = step(
            &progress,
            &format!("{user}: linking to Meridian Brokerage over OAuth…"),
        );
        let user = UserId::parse(user)?;
        let connection = link_over_http(&app, &http, tenant.id, &user, DEMO_INSTITUTION).await?;
        bar.set_message(format!("{user}: linked; syncing…"));
        linked.push((user, connection, bar));
    }
    for (user, connection, bar) in &linked {
        match wait_for_sync(&app, *connection, linked_at).await? {
            Ok(()) => {
                let snapshot = app.ctx.store.full_snapshot(*connection).await?;
                bar.finish_with_message(format!(
                    "{user}: synced {} accounts, {} holdings, {} transactions",
                    snapshot.accounts.len(),
                    snapshot.holdings.len(),
                    snapshot.transactions.len()
                ));
            }
            Err(reason) => {
                bar.abandon_with_message(format!("{user}: sync failed: {reason}"));
            }
        }
    }
    progress.clear().ok();

    for (user, _, _) in &linked {
        let ctx = &app.ctx;
        if let Some(p) =
            portfolio::build(&ctx.store, tenant.id, user, ctx.recent_transactions).await?
        {
            println!("\n{}", render::portfolio(&p));
        }
    }

    let key = api_key.0.expose_secret();
    println!("API:      {public_url}   (reference: {public_url}docs, {public_url}openapi.json)");
    println!("API key:  {key}   (tenant `{DEMO_TENANT}`; a new key is issued each demo run)");
    println!(
        "Try:      curl -s -H 'Authorization: Bearer {key}' {public_url}v1/users/{}/portfolio",
        DEMO_USERS[0]
    );
    if let Some(sandbox) = &app.sandbox {
        println!(
            "Sandbox:  {0}   (curl -s -X POST {0}/sandbox/admin/advance moves its data on; Meridian then posts a webhook to the API and the demo users sync)",
            sandbox.base_url()
        );
    }

    if !once {
        println!("\nServing until Ctrl-C.");
        let scheduler = tokio::spawn({
            let (app, shutdown) = (app.clone(), until_stopped());
            async move { app.run_scheduler(shutdown).await }
        });
        shutdown_signal().await;
        let _ = stop.send(true);
        scheduler.await?;
    } else {
        let _ = stop.send(true);
    }
    server.await??;
    workers.await??;
    webhooks.await?;
    Ok(())
}

fn step(progress: &MultiProgress, message: &str) -> ProgressBar {
    let bar = progress.add(ProgressBar::new_spinner());
    bar.set_style(
        ProgressStyle::with_template("{spinner:.cyan} {msg} {elapsed:.dim}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(Duration::from_millis(100));
    bar.set_message(message.to_owned());
    bar
}

/// Links a user to `institution` the way a browser would: the authorization URL
/// answers with a redirect to our callback (the sandbox approves demo users without
/// a login page, as do test authorization servers), and following it completes the
/// link and enqueues the first sync.
pub async fn link_over_http(
    app: &App,
    http: &reqwest::Client,
    tenant: TenantId,
    user: &UserId,
    institution: &str,
) -> anyhow::Result<ConnectionId> {
    let start = app.linker.start(tenant, user, institution).await?;
    let consent = http
        .get(start.authorize_url.clone())
        .send()
        .await
        .context("opening the authorization URL")?;
    if consent.status() != StatusCode::FOUND && consent.status() != StatusCode::SEE_OTHER {
        bail!(
            "the institution answered {} instead of redirecting back",
            consent.status()
        );
    }
    let callback = consent
        .headers()
        .get(LOCATION)
        .and_then(|l| l.to_str().ok())
        .context("the institution's redirect has no Location")?
        .to_owned();
    let done = http
        .get(&callback)
        .send()
        .await
        .context("following the redirect to the callback")?;
    if !done.status().is_success() {
        bail!(
            "the callback answered {}: {}",
            done.status(),
            done.text().await.unwrap_or_default()
        );
    }
    Ok(start.connection_id)
}

/// Waits for a sync that started after `since` to finish (its data and the cached
/// view in place); `Err(reason)` if it failed or the connection left `active`.
pub async fn wait_for_sync(
    app: &App,
    connection: ConnectionId,
    since: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<Result<(), String>> {
    let deadline = tokio::time::Instant::now() + SYNC_TIMEOUT;
    loop {
        let record = app.ctx.store.connection(connection).await?;
        // Done when a run that started since then has finished: only then are its
        // data and the cached view in place.
        let runs = app.ctx.store.runs_since(connection, since).await?;
        if runs.iter().any(|r| r.outcome == "succeeded") {
            return Ok(Ok(()));
        }
        let running = runs.iter().any(|r| r.finished_at.is_none());
        if record.status != ConnectionStatus::Active && !running {
            return Ok(Err(record
                .last_failure_reason
                .unwrap_or_else(|| record.status.to_string())));
        }
        // A failed run whose reason reached the connection; a database failure
        // leaves none and its job is retried.
        if let Some(reason) = record.last_failure_reason
            && runs.iter().any(|r| r.outcome == "failed")
        {
            return Ok(Err(reason));
        }
        if tokio::time::Instant::now() > deadline {
            bail!("the sync did not finish within {}s", SYNC_TIMEOUT.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
