//! (f) The API of the fleet (a) synced, read closed-loop: `readers` clients, each
//! sending its next request as soon as the last one is answered, either to the
//! trivial `GET /healthz` or to the cached portfolios of every user (in turn, so
//! the reads spread over all of them, as an advisory app's would). The two take
//! turns in half-second slices, in rounds of trivial, portfolio, portfolio,
//! trivial: this machine's speed moves by a fifth or more from one ten-second
//! stretch to the next, and slices that short put both endpoints in every
//! stretch alike, where long series each caught a stretch of their own. The
//! rounds' own ratios are summed up too (median, lowest, highest), as the
//! spread. They start once the machine
//! has settled after (a) (under a fifth of its cores busy over a second, or after
//! a minute). The worker wrote each portfolio to Redis when it synced it; the API
//! reads it from there once, then from its own memory until it changes. The
//! clients ask for gzip, as HTTP clients do, and get the view as the cache keeps
//! it; they do not inflate it, which would be their own machine's work, not the
//! server's.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use comfy_table::{Cell, Table, presets::UTF8_FULL_CONDENSED};
use indicatif::MultiProgress;
use secrecy::{ExposeSecret, SecretString};

use super::{Fleet, SyncBench, bar, right, verdict};

/// What one slice's clients got.
#[derive(Default, Clone, Copy)]
struct Tally {
    answered: u64,
    failed: u64,
    /// Body bytes of the answers.
    bytes: u64,
    elapsed: Duration,
}

impl Tally {
    fn add(&mut self, other: Tally) {
        self.answered += other.answered;
        self.failed += other.failed;
        self.bytes += other.bytes;
        self.elapsed += other.elapsed;
    }

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

/// One round's slices, in order: a trend within a round weighs on both alike.
const ROUND: [Endpoint; 4] = [
    Endpoint::Trivial,
    Endpoint::Portfolio,
    Endpoint::Portfolio,
    Endpoint::Trivial,
];
const SLICE: Duration = Duration::from_millis(500);

/// Both endpoints' tallies over one round.
#[derive(Default, Clone, Copy)]
struct Round {
    trivial: Tally,
    portfolio: Tally,
}

impl Round {
    fn ratio(&self) -> f64 {
        self.portfolio.per_second() / self.trivial.per_second().max(f64::EPSILON)
    }
}

pub(super) struct Reads {
    rounds: Vec<Round>,
    users: usize,
    /// The machine's busy share over the second before (f) began.
    busy_before: Option<f64>,
}

impl Reads {
    fn total(&self) -> Round {
        self.rounds.iter().fold(Round::default(), |mut sum, r| {
            sum.trivial.add(r.trivial);
            sum.portfolio.add(r.portfolio);
            sum
        })
    }
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
    anyhow::ensure!(!users.is_empty(), "(f) needs users to read portfolios of");
    let readers = Readers {
        client: finsync::http::client(),
        key: Arc::from(key.expose_secret()),
        portfolios: users
            .iter()
            .map(|user| format!("{}/v1/users/{user}/portfolio", fleet.address))
            .collect(),
        trivial: format!("{}/healthz", fleet.address).into(),
        next: AtomicUsize::new(0),
        count: bench.readers.max(1),
    };
    let readers = Arc::new(readers);
    let busy_before = crate::support::settled(SETTLED, SETTLE_WITHIN).await;
    // A round gives each endpoint two slices.
    let count = (Duration::from_secs(bench.read_seconds.max(1)).as_millis()
        / (2 * SLICE.as_millis()))
    .max(1);
    let bar = bar(
        progress,
        "(f) cached portfolios and /healthz, in turn",
        usize::try_from(count).unwrap_or(usize::MAX),
    );
    let mut rounds = Vec::new();
    for _ in 0..count {
        let mut round = Round::default();
        for endpoint in ROUND {
            let tally = readers.clone().slice(endpoint).await?;
            match endpoint {
                Endpoint::Trivial => round.trivial.add(tally),
                Endpoint::Portfolio => round.portfolio.add(tally),
            }
        }
        rounds.push(round);
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(Reads {
        rounds,
        users: users.len(),
        busy_before,
    })
}

/// The clients, kept from slice to slice with their connections.
struct Readers {
    client: reqwest::Client,
    key: Arc<str>,
    portfolios: Vec<String>,
    trivial: Arc<str>,
    /// The next portfolio to read, shared so that the clients walk every user.
    next: AtomicUsize,
    count: usize,
}

impl Readers {
    /// `count` clients reading `endpoint` closed-loop for a [`SLICE`]; what they
    /// had in flight at its end is waited for and counted.
    async fn slice(self: Arc<Self>, endpoint: Endpoint) -> anyhow::Result<Tally> {
        let answered = Arc::new(AtomicU64::new(0));
        let bytes = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let start = Instant::now();
        let deadline = start + SLICE;
        let mut clients = tokio::task::JoinSet::new();
        for _ in 0..self.count {
            let (answered, failed, bytes) = (answered.clone(), failed.clone(), bytes.clone());
            let readers = self.clone();
            clients.spawn(async move {
                while Instant::now() < deadline {
                    let url = match endpoint {
                        Endpoint::Trivial => &*readers.trivial,
                        Endpoint::Portfolio => {
                            let i = readers.next.fetch_add(1, Ordering::Relaxed);
                            &readers.portfolios[i % readers.portfolios.len()]
                        }
                    };
                    let request = readers
                        .client
                        .get(url)
                        .bearer_auth(&readers.key)
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
        while let Some(joined) = clients.join_next().await {
            joined.context("an (f) client stopped")?;
        }
        Ok(Tally {
            answered: answered.load(Ordering::Relaxed),
            bytes: bytes.load(Ordering::Relaxed),
            failed: failed.load(Ordering::Relaxed),
            elapsed: start.elapsed(),
        })
    }
}

fn is_gzip(response: &reqwest::Response) -> bool {
    response
        .headers()
        .get(reqwest::header::CONTENT_ENCODING)
        .is_some_and(|v| v == "gzip")
}

pub(super) fn print(bench: &SyncBench, r: &Reads) {
    let total = r.total();
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED).set_header([
        "(f) closed loop, slices in turn",
        "slices",
        "answered",
        "failed",
        "seconds",
        "answered/s",
        "bytes/answer (gzip)",
    ]);
    let slices = 2 * r.rounds.len();
    for (endpoint, tally) in [
        (Endpoint::Trivial, total.trivial),
        (Endpoint::Portfolio, total.portfolio),
    ] {
        table.add_row([
            Cell::new(endpoint.label()),
            right(slices.to_string()),
            right(tally.answered.to_string()),
            right(tally.failed.to_string()),
            right(format!("{:.2}", tally.elapsed.as_secs_f64())),
            right(format!("{:.0}", tally.per_second())),
            right(format!(
                "{:.0}",
                tally.bytes as f64 / tally.answered.max(1) as f64
            )),
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
        "(f): {} clients reading closed-loop from the API that served (a), {} users' portfolios, \
         in {} rounds of {} ms slices (trivial, portfolio, portfolio, trivial); {settled}\n{table}\n",
        bench.readers,
        r.users,
        r.rounds.len(),
        SLICE.as_millis()
    );
    let ratio = total.ratio();
    // Failed reads, or none answered, make the ratio meaningless.
    let clean =
        total.trivial.answered > 0 && total.portfolio.failed == 0 && total.trivial.failed == 0;
    let mut per_round: Vec<f64> = r.rounds.iter().map(Round::ratio).collect();
    per_round.sort_by(f64::total_cmp);
    let spread = match (per_round.first(), per_round.last()) {
        (Some(low), Some(high)) => {
            let half = per_round.len() / 2;
            let median = if per_round.len().is_multiple_of(2) {
                f64::midpoint(per_round[half - 1], per_round[half])
            } else {
                per_round[half]
            };
            format!("; per round: median {median:.2}, from {low:.2} to {high:.2}")
        }
        _ => String::new(),
    };
    println!(
        "(f) cached portfolio / trivial, answered/s = {ratio:.2} ({:.0} vs {:.0}; target at least 0.7: {}){spread}\n",
        total.portfolio.per_second(),
        total.trivial.per_second(),
        verdict(clean && ratio >= 0.7)
    );
}
