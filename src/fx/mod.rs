//! Reporting currencies: where exchange rates come from, keeping them current, and
//! reading the latest for conversions.
//!
//! A [`Provider`] is configured under `[fx]`; the ECB's daily euro reference rates
//! ([`ecb`]) are the default and, for now, the one kind (another is a variant of
//! [`Provider`] with its own fetch). [`Fx::refresh`] fetches and stores them with
//! their date and source; the scheduler runs it on `fx.refresh_secs`, and
//! `finsync fx refresh` on demand. [`Fx`] reads the latest for the API,
//! keeping them a minute in the process (they change once a day), and longer
//! while the database cannot be read.

pub mod ecb;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use chrono::NaiveDate;

use crate::domain::{Rate, RateTable};
use crate::store::{Store, StoreError};

/// How long one process keeps the latest rates before it reads them again.
const RATES_KEPT: Duration = Duration::from_secs(60);

/// A failed refresh is tried again this soon.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(300);

/// Where rates come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Provider {
    /// The ECB's euro reference rates XML at `url` (the ECB's own, or a copy
    /// served elsewhere, like the sandbox's recorded one).
    Ecb { url: String },
}

impl Provider {
    /// The name its rates are stored and shown under.
    pub fn source(&self) -> &'static str {
        match self {
            Self::Ecb { .. } => ecb::SOURCE,
        }
    }

    pub fn url(&self) -> &str {
        match self {
            Self::Ecb { url } => url,
        }
    }

    /// Fetches what the provider publishes now.
    pub async fn fetch(&self, http: &reqwest::Client) -> Result<Vec<Rate>, FxError> {
        let url = self.url();
        let response = http
            .get(url)
            .send()
            .await
            .map_err(|e| FxError::Unreachable(url.to_owned(), e.without_url().to_string()))?;
        let status = response.status();
        if !status.is_success() {
            return Err(FxError::Status(url.to_owned(), status.as_u16()));
        }
        let body = response
            .text()
            .await
            .map_err(|e| FxError::Unreachable(url.to_owned(), e.without_url().to_string()))?;
        match self {
            Self::Ecb { .. } => {
                ecb::parse(&body).map_err(|e| FxError::Malformed(url.to_owned(), e))
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FxError {
    #[error("exchange rates from {0}: unreachable: {1}")]
    Unreachable(String, String),
    #[error("exchange rates from {0}: answered HTTP {1}")]
    Status(String, u16),
    #[error("exchange rates from {0}: {1}")]
    Malformed(String, String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a refresh stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refreshed {
    pub rates: usize,
    pub currencies: usize,
    pub newest: Option<NaiveDate>,
}

/// The latest rates as one process read them: when (none once a refresh stored
/// newer ones), and what.
#[derive(Clone)]
struct Kept {
    at: Option<Instant>,
    table: Option<Arc<RateTable>>,
}

/// The configured provider: refreshed on the scheduler's clock, read by
/// conversions.
#[derive(Clone)]
pub struct Fx {
    pub provider: Arc<Provider>,
    http: reqwest::Client,
    /// How often the scheduler refreshes the rates.
    pub every: Duration,
    kept: Arc<RwLock<Option<Kept>>>,
    /// Moved by each refresh that stored rates: a read begun before it keeps
    /// nothing, so it cannot put older rates back over the refresh.
    generation: Arc<AtomicU64>,
    /// Held by the one request reading the rates from the database once the kept
    /// ones are old.
    reading: Arc<tokio::sync::Mutex<()>>,
}

impl Fx {
    pub fn new(provider: Provider, http: reqwest::Client, every: Duration) -> Self {
        Self {
            provider: Arc::new(provider),
            http,
            every,
            kept: Arc::default(),
            generation: Arc::default(),
            reading: Arc::default(),
        }
    }

    /// Fetches the provider's rates now and stores them; nothing is stored from
    /// a document that does not parse whole.
    pub async fn refresh(&self, store: &Store) -> Result<Refreshed, FxError> {
        let outcome = async {
            let rates = self.provider.fetch(&self.http).await?;
            let stored = store.store_rates(&rates).await?;
            let currencies: std::collections::BTreeSet<_> = rates.iter().map(|r| r.quote).collect();
            Ok(Refreshed {
                rates: stored,
                currencies: currencies.len(),
                newest: rates.iter().map(|r| r.date).max(),
            })
        }
        .await;
        let label = if outcome.is_ok() { "ok" } else { "failed" };
        metrics::counter!("finsync_fx_refreshes_total", "source" => self.provider.source(), "outcome" => label)
            .increment(1);
        if let Ok(refreshed) = &outcome {
            // Read again on the next request; served meanwhile if that read fails.
            if let Ok(mut slot) = self.kept.write() {
                self.generation.fetch_add(1, Ordering::SeqCst);
                if let Some(kept) = slot.as_mut() {
                    kept.at = None;
                }
            }
            // A provider that answers but stops publishing fails no fetch: the
            // age of what it publishes is what alerts (FinsyncExchangeRatesOld).
            if let Some(newest) = refreshed.newest {
                let published = newest
                    .and_time(chrono::NaiveTime::MIN)
                    .and_utc()
                    .timestamp();
                metrics::gauge!("finsync_fx_rates_published_timestamp_seconds", "source" => self.provider.source())
                    .set(published as f64);
            }
        }
        outcome
    }

    /// The latest rates; `None` before the first refresh stored any. While the
    /// database cannot be read, the rates read last keep serving.
    pub async fn latest(&self, store: &Store) -> Result<Option<Arc<RateTable>>, StoreError> {
        let kept = self.kept.read().ok().and_then(|k| k.clone());
        if let Some(kept) = &kept
            && kept.at.is_some_and(|at| at.elapsed() < RATES_KEPT)
        {
            return Ok(kept.table.clone());
        }
        // One request reads them from the database; the others serve what was
        // read last meanwhile, and wait for nothing (a read that fails would only
        // make them fail one after another). With nothing read yet, each reads.
        let _reading = match self.reading.try_lock() {
            Ok(guard) => Some(guard),
            Err(_) => match &kept {
                Some(kept) => return Ok(kept.table.clone()),
                None => None,
            },
        };
        let generation = self.generation.load(Ordering::SeqCst);
        match store.latest_rates(self.provider.source()).await {
            Ok(table) => {
                let table = table.map(Arc::new);
                self.keep(generation, table.clone());
                Ok(table)
            }
            Err(e) => match kept {
                Some(kept) => {
                    tracing::warn!(error = %e, "Reading exchange rates failed; the rates read last keep serving.");
                    // Asked again in a while, not by every request meanwhile.
                    self.keep(generation, kept.table.clone());
                    Ok(kept.table)
                }
                None => Err(e),
            },
        }
    }

    /// Keeps `table`, read now, unless a refresh stored rates since the read began.
    fn keep(&self, generation: u64, table: Option<Arc<RateTable>>) {
        if let Ok(mut slot) = self.kept.write()
            && self.generation.load(Ordering::SeqCst) == generation
        {
            *slot = Some(Kept {
                at: Some(Instant::now()),
                table,
            });
        }
    }

    /// Refreshes the rates every [`Self::every`], sooner again after a failure,
    /// until the task is dropped.
    pub async fn run(&self, store: Store) {
        loop {
            let wait = match self.refresh(&store).await {
                Ok(r) => {
                    tracing::info!(source = self.provider.source(), rates = r.rates, currencies = r.currencies, newest = ?r.newest, "Exchange rates refreshed.");
                    self.every
                }
                Err(e) => {
                    tracing::warn!(error = %e, "Refreshing exchange rates failed; conversions use the rates stored before.");
                    self.every.min(RETRY_AFTER_FAILURE)
                }
            };
            tokio::time::sleep(wait).await;
        }
    }
}
