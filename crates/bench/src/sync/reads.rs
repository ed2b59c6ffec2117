//! (f) The API of the fleet (a) synced, read closed-loop: `readers` clients, each
//! sending its next request as soon as the last one is answered, for
//! `read_seconds`, once to the trivial `GET /healthz` and once to the cached
//! portfolios of every user (in turn, so the reads spread over all of them, as an
//! advisory app's would), in the order trivial, portfolio, portfolio, trivial, so
//! that a machine growing warmer or busier weighs on both alike. They start once
//! the machine has settled after (a) (under a fifth of its cores busy over a
//! second, or after a minute), since a busy spell early in (f) is no linear trend
//! that the order cancels. The worker wrote
//! each portfolio to Redis when it synced it; the API reads it from there once, then
//! from its own memory until it changes. The clients ask for gzip, as HTTP clients
//! do, and get the view as the cache keeps it; they do not inflate it, which would
//! be their own machine's work, not the server's.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use comfy_table::{Cell, Table, presets::UTF8_FULL_CONDENSED};
use indicatif::MultiProgress;
use secrecy::{ExposeSecret, SecretString};

use super::{Fleet, SyncBench, bar, right, verdict};

/// What one series' clients got.
pub(super) struct Series {
    endpoint: Endpoint,
    answered: u64,
    failed: u64,
    /// Body bytes of the answers.
    bytes: u64,
    elapsed: Duration,
}

impl Series {
    fn per_second(&self) -> f64 {
        self.answered as f64 / self.elapsed.as_secs_f64().max(f64::EPSILON)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Trivial,
    Portfolio,
}

impl Endpoint {
    fn label(self) -> &'static str {
        match self {
            Self::Trivial => "/healthz (trivial)",
            Self::Portfolio => "portfolio (cached), every user in turn",
        }
    }
}

pub(super) struct Reads {
    series: Vec<Series>,
    users: usize,
    /// The machine's busy share over the second before (f) began.
    busy_before: Option<f64>,
}

/// The busy share (f) waits for, and for how long at most.
const SETTLED: f64 = 0.2;
const SETTLE_WITHIN: Duration = Duration::from_secs(60);

pub(super) async fn run(
    bench: &SyncBench,
    fleet: &Fleet,
    key: &SecretString,
    users: &[String],
    progress: &MultiProgress,
) -> anyhow::Result<Reads> {
    let paths: Arc<Vec<String>> = Arc::new(
        users
            .iter()
            .map(|user| format!("{}/v1/users/{user}/portfolio", fleet.address))
            .collect(),
    );
    let busy_before = crate::support::settled(SETTLED, SETTLE_WITHIN).await;
    let mut series = Vec::new();
    for endpoint in [
        Endpoint::Trivial,
        Endpoint::Portfolio,
        Endpoint::Portfolio,
        Endpoint::Trivial,
    ] {
        series.push(closed_loop(bench, fleet, key, &paths, endpoint, progress).await?);
    }
    Ok(Reads {
        series,
        users: users.len(),
        busy_before,
    })
}

async fn closed_loop(
    bench: &SyncBench,
    fleet: &Fleet,
    key: &SecretString,
    portfolios: &Arc<Vec<String>>,
    endpoint: Endpoint,
    progress: &MultiProgress,
) -> anyhow::Result<Series> {
    let seconds = bench.read_seconds.max(1);
    let bar = bar(
        progress,
        &format!("(f) {}, closed loop", endpoint.label()),
        usize::try_from(seconds).unwrap_or(usize::MAX),
    );
    let client = finsync::http::client();
    let answered = Arc::new(AtomicU64::new(0));
    let bytes = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    // The next portfolio to read, shared so that the clients walk every user.
    let next = Arc::new(AtomicUsize::new(0));
    let trivial = format!("{}/healthz", fleet.address);
    let start = Instant::now();
    let deadline = start + Duration::from_secs(seconds);
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..bench.readers.max(1) {
        let (client, key) = (client.clone(), key.expose_secret().to_owned());
        let (answered, failed, next) = (answered.clone(), failed.clone(), next.clone());
        let bytes = bytes.clone();
        let (portfolios, trivial) = (portfolios.clone(), trivial.clone());
        clients.spawn(async move {
            while Instant::now() < deadline {
                let url = match endpoint {
                    Endpoint::Trivial => &trivial,
                    Endpoint::Portfolio => {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        &portfolios[i % portfolios.len().max(1)]
                    }
                };
                let request = client
                    .get(url)
                    .bearer_auth(&key)
                    .header(reqwest::header::ACCEPT_ENCODING, "gzip");
                let ok = match request.send().await {
                    Ok(response)
                        if response.status().is_success()
                            && (endpoint == Endpoint::Trivial || is_gzip(&response)) =>
                    {
                        match response.bytes().await {
                            Ok(body) => {
                                bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
                                true
                            }
                            Err(_) => false,
                        }
                    }
                    _ => false,
                };
                let counter = if ok { &answered } else { &failed };
                counter.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    while !clients.is_empty() {
        tokio::select! {
            _ = clients.join_next() => {}
            () = tokio::time::sleep(Duration::from_secs(1)) => {
                bar.set_position(start.elapsed().as_secs());
            }
        }
    }
    bar.finish_and_clear();
    Ok(Series {
        endpoint,
        answered: answered.load(Ordering::Relaxed),
        bytes: bytes.load(Ordering::Relaxed),
        failed: failed.load(Ordering::Relaxed),
        elapsed: start.elapsed(),
    })
}

fn is_gzip(response: &reqwest::Response) -> bool {
    response
        .headers()
        .get(reqwest::header::CONTENT_ENCODING)
        .is_some_and(|v| v == "gzip")
}

pub(super) fn print(bench: &SyncBench, r: &Reads) {
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED).set_header([
        "(f) closed loop, in this order",
        "answered",
        "failed",
        "seconds",
        "answered/s",
        "bytes/answer (gzip)",
    ]);
    for s in &r.series {
        table.add_row([
            Cell::new(s.endpoint.label()),
            right(s.answered.to_string()),
            right(s.failed.to_string()),
            right(format!("{:.2}", s.elapsed.as_secs_f64())),
            right(format!("{:.0}", s.per_second())),
            right(format!("{:.0}", s.bytes as f64 / s.answered.max(1) as f64)),
        ]);
    }
    let settled = match r.busy_before {
        Some(busy) if busy < SETTLED => {
            format!("started with the machine {:.0}% busy", busy * 100.0)
        }
        Some(busy) => format!(
            "the machine was still {:.0}% busy after {} s",
            busy * 100.0,
            SETTLE_WITHIN.as_secs()
        ),
        None => "the machine's load is not readable here".to_owned(),
    };
    println!(
        "(f): {} clients reading closed-loop from the API that served (a), {} users' portfolios; {settled}\n{table}\n",
        bench.readers, r.users
    );
    let rate = |endpoint: Endpoint| {
        let (answered, secs) = r
            .series
            .iter()
            .filter(|s| s.endpoint == endpoint)
            .fold((0, 0.0), |(n, t), s| {
                (n + s.answered, t + s.elapsed.as_secs_f64())
            });
        answered as f64 / f64::max(secs, f64::EPSILON)
    };
    let ratio = rate(Endpoint::Portfolio) / rate(Endpoint::Trivial).max(f64::EPSILON);
    println!(
        "(f) cached portfolio / trivial, answered/s = {ratio:.2} ({:.0} vs {:.0}; target at least 0.7: {})\n",
        rate(Endpoint::Portfolio),
        rate(Endpoint::Trivial),
        verdict(ratio >= 0.7)
    );
}
