//! `finsync demo`: the whole system in one process on embedded defaults. Starts the
//! sandbox institutions, links three demo users through the real OAuth redirect
//! flow over HTTP, syncs them on the job queue with a progress display, prints their
//! portfolios and two of them as one household in euros, and keeps serving the API, with the [`example_app`] beside it: an
//! advisory app that links its own users through link sessions in a browser.

pub mod example_app;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use secrecy::ExposeSecret;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::app::{self, App, Logging, shutdown_signal};
use crate::cli::render;
use crate::domain::{HouseholdId, UserId};
use crate::portfolio;
use crate::store::{Actor, AuditEntry};
use crate::sync::wait_for_sync;
use example_app::ExampleApp;

pub const DEMO_TENANT: &str = "demo";
pub const DEMO_USERS: [&str; 3] = ["demo-alice", "demo-bob", "demo-carol"];
const DEMO_INSTITUTION: &str = "meridian";
/// Two of the demo users are one family, read as one in one currency.
const DEMO_HOUSEHOLD: &str = "demo-family";
const REPORTING_CURRENCY: &str = "EUR";
const SYNC_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Exit after printing the portfolios.
    #[arg(long)]
    once: bool,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut settings = app::boot(Some("demo"), Logging::Configured, "demo")?;
    let once = args.once;
    // The configured port if free, else any: a second demo must not fail on it.
    let listener = match TcpListener::bind(settings.server.bind).await {
        Ok(l) => l,
        Err(_) => TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the API")?,
    };
    let address = listener.local_addr()?;
    let public_url = url::Url::parse(&format!("http://{address}/"))?;
    settings.server.public_url = public_url.clone();
    // The example app's webhook endpoint is on this machine.
    settings.webhooks.allow_private_targets = true;
    // The status page and the admin API, for the person running the demo: a
    // break-glass token of this run's own (audited as `break-glass`), unless one
    // is configured.
    if settings.server.admin_token.expose_secret().is_empty() {
        settings.server.admin_token = crate::vault::Vault::generate_key();
    }
    let admin_token = settings.server.admin_token.clone();
    let concurrency = settings.sync.worker_concurrency;

    let progress = MultiProgress::new();
    let boot = step(
        &progress,
        "Starting finsync (SQLite, in-process cache, sandbox institutions)…",
    );
    let app = Arc::new(App::build(settings).await?);
    let tenant = match app.ctx.store.tenant_by_name(DEMO_TENANT).await? {
        Some(_) => {
            let audit = AuditEntry::new(Actor::cli(), "tenant.rotate_key");
            app.ctx.store.rotate_api_key(DEMO_TENANT, audit).await?
        }
        None => app.ctx.store.create_tenant(DEMO_TENANT).await?,
    };
    let (tenant, api_key) = tenant;
    let example_base = public_url.join("example-app/")?;
    // What an admin does for an app: register where its users come back to.
    app.ctx
        .store
        .set_tenant_redirect_uris(
            tenant.id,
            &[ExampleApp::return_url(&example_base)?.to_string()],
            AuditEntry::new(Actor::cli(), "tenant.set_redirect_uris"),
        )
        .await?;
    let (example, example_routes) =
        ExampleApp::new(public_url.clone(), api_key.0.clone(), example_base.clone());
    let (stop, stopped) = watch::channel(false);
    let until_stopped = move || {
        let mut rx = stopped.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let server = tokio::spawn({
        let (app, shutdown) = (app.clone(), until_stopped());
        async move { app.serve_with(listener, example_routes, shutdown).await }
    });
    let workers = tokio::spawn({
        let (app, shutdown) = (app.clone(), until_stopped());
        async move { app.run_workers(concurrency, shutdown).await }
    });
    let webhooks = tokio::spawn({
        let (app, shutdown) = (app.clone(), until_stopped());
        async move { app.run_webhooks(shutdown).await }
    });
    example.register_webhooks().await?;
    boot.finish_with_message(format!("finsync is up: API {public_url}"));

    let http = crate::http::client();
    let linked_at = chrono::Utc::now();
    let mut linked = Vec::new();
    for user in DEMO_USERS {
        let bar = step(
            &progress,
            &format!("{user}: linking to Meridian Brokerage over OAuth…"),
        );
        let user = UserId::parse(user)?;
        let connection = app
            .linker
            .link_test_user(&http, tenant.id, &user, DEMO_INSTITUTION)
            .await?;
        bar.set_message(format!("{user}: linked; syncing…"));
        linked.push((user, connection, bar));
    }
    for (user, connection, bar) in &linked {
        match wait_for_sync(&app.ctx.store, *connection, linked_at, SYNC_TIMEOUT).await? {
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
    let rates = step(
        &progress,
        "Fetching exchange rates (the ECB's reference rates, as the sandbox recorded them)…",
    );
    match app.ctx.fx.refresh(&app.ctx.store).await {
        Ok(r) => rates.finish_with_message(format!(
            "Exchange rates: {} currencies, published {}",
            r.currencies,
            r.newest
                .map_or_else(|| "never".to_owned(), |d| d.to_string())
        )),
        Err(e) => rates.abandon_with_message(format!("Exchange rates unavailable: {e}")),
    }
    // What an advisory app does for a family: group its members.
    let family = HouseholdId::parse(DEMO_HOUSEHOLD)?;
    let members = [UserId::parse(DEMO_USERS[0])?, UserId::parse(DEMO_USERS[1])?];
    app.ctx
        .store
        .put_household(tenant.id, &family, "The Demo Family", &members)
        .await?;
    progress.clear().ok();

    for (user, _, _) in &linked {
        let ctx = &app.ctx;
        if let Some(p) =
            portfolio::build(&ctx.store, tenant.id, user, ctx.recent_transactions).await?
        {
            println!("\n{}", render::portfolio(&p));
        }
    }

    let ctx = &app.ctx;
    if let Some(mut household) = portfolio::household(
        &ctx.store,
        &ctx.cache,
        tenant.id,
        &family,
        ctx.recent_transactions,
    )
    .await
    .map_err(|e| anyhow::anyhow!("reading the demo household: {e}"))?
    {
        let rates = ctx.fx.latest(&ctx.store).await?;
        household.reporting = Some(portfolio::in_currency(
            &mut household.positions,
            &household.net_worth,
            household.net_worth_complete,
            rates.as_deref(),
            REPORTING_CURRENCY.parse()?,
        ));
        println!("\n{}", render::household(&household));
    }

    let key = api_key.0.expose_secret();
    println!("API:      {public_url}   (reference: {public_url}docs, {public_url}openapi.json)");
    println!("API key:  {key}   (tenant `{DEMO_TENANT}`; a new key is issued each demo run)");
    println!(
        "Try:      curl -s -H 'Authorization: Bearer {key}' {public_url}v1/users/{}/portfolio",
        DEMO_USERS[0]
    );
    println!(
        "          curl -s -H 'Authorization: Bearer {key}' '{public_url}v1/households/{DEMO_HOUSEHOLD}/positions?currency={REPORTING_CURRENCY}'"
    );
    println!(
        "Example:  {example_base}   (an advisory app linking its own users: open it in a browser)"
    );
    println!(
        "Status:   {public_url}status   (the operators' page; sign in with {}, this run's admin token)",
        admin_token.expose_secret()
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
    Ok(ExitCode::SUCCESS)
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
