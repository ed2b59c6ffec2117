//! The generic engine: runs a connector's endpoints against its institution with a
//! user's access token, following the declared paging until the last page, and
//! classifies failures by the connector's error semantics. A fan-out endpoint runs
//! once per account, each from its own incremental position; an account's details
//! are merged into it; records are joined to the lists of their page they refer to.
//! One account's own failure leaves that account's data as stored and is reported
//! in [`Fetched::failures`]; the institution's failures fail the fetch. Transient
//! failures are retried with exponential backoff and jitter; a rate limit waits as
//! long as the institution asks (within reason). Every attempt, retries included,
//! passes through the institution's [`Resilience`]: breaker, pauses, concurrency cap
//! and rate budget.

use std::collections::{BTreeMap, BTreeSet};

use foldhash::{HashMap, HashMapExt as _, HashSet, HashSetExt as _};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use chrono::{NaiveDate, Utc};
use reqwest::header::HeaderMap;
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use serde_json_path::JsonPath;
use tracing::Instrument;

use super::incremental::{Position, SyncCursor};
use super::mapping::{self, FieldError, Item, Layers, Mapping, Parent};
use super::paging::{PageRead, Walk};
use super::record::{Page, Record};
use super::redact;
use super::template::Escape;
use super::{Connector, Endpoint, Header, Paging};
use crate::domain::{Coverage, Snapshot};
use crate::resilience::{BreakerPolicy, Outcome, Quota, Refusal, Resilience};

/// A page loop that has not ended after this many pages is treated as broken paging,
/// not as an institution with that much data.
const MAX_PAGES: usize = 10_000;
/// Longest `Retry-After` honoured inside one run; longer means "try a later run".
const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);
/// Largest response body read from an institution; a bigger one is a fault, and
/// must not exhaust a worker's memory.
const MAX_BODY_BYTES: usize = 32 * 1024 * 1024;
/// The most a response body's buffer is sized for before it arrives.
const PRESIZED_BODY_BYTES: usize = 4 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    #[error("the institution wants the user to re-authenticate (HTTP {status})")]
    Reauth { status: u16 },
    /// A header sends a value the connection's grant did not come with (linked
    /// before the connector kept it, or the institution left it out): a new grant
    /// (a refresh, else the user linking again) may bring it.
    #[error("the connection's grant has no `{0}`, which the connector's requests carry")]
    GrantLacks(String),
    #[error("rate limited by the institution")]
    RateLimited { retry_after: Option<Duration> },
    #[error("the institution is unavailable: {0}")]
    Unavailable(String),
    /// Unavailable, and it said for how long (`Retry-After` on a retry status).
    #[error("the institution is unavailable (HTTP {status}) for {} s", retry_after.as_secs())]
    UnavailableFor { status: u16, retry_after: Duration },
    /// Not asked: its breaker is open after failures in a row, and lets a request
    /// through again in `retry_in`.
    #[error("not asking the institution for now: it kept failing (its breaker lets a request through in {} s)", retry_in.as_secs())]
    CircuitOpen { retry_in: Duration },
    #[error("the institution's response could not be read: {0}")]
    Unreadable(String),
    #[error("the institution rejected {request}: HTTP {status}")]
    Rejected { status: u16, request: String },
    /// Sync-token paging: the data changed while paging; start again.
    #[error("the institution's data changed while paging")]
    Restart,
    /// The connector cannot make the request here (a secret it names is not set):
    /// the deployment's to fix, never counted against the institution.
    #[error("the connector cannot make the request: {0}")]
    Misconfigured(String),
}

impl EngineError {
    fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::Unavailable(_)
                | Self::UnavailableFor { .. }
                | Self::CircuitOpen { .. }
                | Self::RateLimited { .. }
        )
    }
}

/// One record that could not be mapped: why, and the record itself already
/// redacted (see [`redact`]), so no personal value leaves the engine.
#[derive(Debug, Clone)]
pub struct Rejected {
    pub endpoint: &'static str,
    /// The record's id at the institution, or its digest when that is unreadable.
    pub key: String,
    pub reason: String,
    pub record: Value,
}

impl Rejected {
    fn new(
        endpoint: &'static str,
        mappings: &[&Mapping],
        record: &Item,
        error: &FieldError,
    ) -> Self {
        let key_fields: &[&'static str] = if endpoint == "holdings" {
            &["account_external_id", "security_external_id"]
        } else {
            &["external_id"]
        };
        let redacted = redact::redact(mappings, key_fields, record, error);
        Self {
            endpoint,
            key: redacted.key,
            reason: redacted.reason,
            record: redacted.record,
        }
    }
}

/// Every record of one endpoint across its pages (and, fanning out, one account's),
/// and the ids the institution said were removed (sync-token paging).
#[derive(Debug, Default)]
pub struct Pages {
    pub records: Vec<Item>,
    pub removed: Vec<String>,
    pub requests: usize,
    /// Sync-token paging: the token the last page handed back, to resume from.
    pub next_token: Option<String>,
    /// Date windows: the first and last day walked.
    pub dates: Option<(NaiveDate, NaiveDate)>,
}

/// Times a sync-token loop starts again because the data changed under it, before
/// the run gives up until later.
const MAX_RESTARTS: usize = 3;

/// One account's data that could not be read this time: what is stored for it stays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountFailure {
    pub account: String,
    /// `details.<name>`, `holdings` or `transactions`.
    pub endpoint: String,
    /// The whole story, for logs and admins.
    pub reason: String,
    pub trouble: Trouble,
}

/// What kind of failure kept an account's data from being read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trouble {
    /// No answer, or a retry status, after the retries.
    Unavailable,
    /// The institution refused the request with this status.
    Refused(u16),
    /// The answer could not be used.
    Unreadable,
}

impl AccountFailure {
    fn new(account: &str, endpoint: String, error: &EngineError) -> Self {
        let trouble = match error {
            EngineError::Rejected { status, .. } => Trouble::Refused(*status),
            EngineError::Unreadable(_) => Trouble::Unreadable,
            _ => Trouble::Unavailable,
        };
        Self {
            account: account.to_owned(),
            endpoint,
            reason: error.to_string(),
            trouble,
        }
    }
}

/// Everything fetched for one connection, mapped.
#[derive(Debug)]
pub struct Fetched {
    pub snapshot: Snapshot,
    pub rejected: Vec<Rejected>,
    pub requests: usize,
    /// What the fetched transactions stand for (of every account without its own).
    pub coverage: Coverage,
    /// Fan-out transactions: what each account's fetched transactions stand for.
    pub coverage_by_account: BTreeMap<String, Coverage>,
    /// Where the next sync of the transactions resumes from, if it can.
    pub cursor: Option<SyncCursor>,
    /// Deferrable endpoints left for a later sync while the institution struggles.
    pub deferred: Vec<&'static str>,
    /// Accounts some of whose data could not be read, and why.
    pub failures: Vec<AccountFailure>,
    /// Holdings whose security the institution did not describe (set aside with
    /// the rejected): (account, security id).
    pub undescribed: Vec<(String, String)>,
}

impl Default for Fetched {
    fn default() -> Self {
        Self {
            snapshot: Snapshot::default(),
            rejected: Vec::new(),
            requests: 0,
            coverage: Coverage::Partial,
            coverage_by_account: BTreeMap::new(),
            cursor: None,
            deferred: Vec::new(),
            failures: Vec::new(),
            undescribed: Vec::new(),
        }
    }
}

impl Fetched {
    /// Whether every record of `endpoint` mapped: only then is the endpoint's list
    /// complete enough to remove stored records it no longer contains.
    pub fn complete(&self, endpoint: &str) -> bool {
        !self.rejected.iter().any(|r| r.endpoint == endpoint) && !self.deferred.contains(&endpoint)
    }

    /// Accounts whose `endpoint` data could not be read (`details` for any details
    /// endpoint): what is stored of it stays.
    pub fn unread(&self, endpoint: &str) -> BTreeSet<String> {
        self.failures
            .iter()
            .filter(|f| f.endpoint == endpoint || f.endpoint.starts_with(&format!("{endpoint}.")))
            .map(|f| f.account.clone())
            .collect()
    }
}

/// Responses already read in one fetch, by request: an institution that serves an
/// account's balances and holdings in one document is asked for it once.
#[derive(Default)]
struct Memo(std::sync::Mutex<HashMap<String, (HeaderMap, Page)>>);

impl Memo {
    fn get(&self, key: &str) -> Option<(HeaderMap, Page)> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(key)
            .cloned()
    }

    fn put(&self, key: String, page: (HeaderMap, Page)) {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(key, page);
    }
}

/// One request's target: the URL, the parameters the connector builds, and the
/// account it is about.
struct Request<'a> {
    endpoint: &'a Endpoint,
    url: &'a url::Url,
    /// The URL the walk began at: a later one (a `Link` header's) carries its own
    /// parameters.
    first: &'a url::Url,
    params: &'a [(String, String)],
    account: Option<&'a Parent>,
}

/// Whether a failure concerns one fan-out request only (its account's data), rather
/// than the institution or the user's grant as a whole.
fn per_account(error: &EngineError) -> bool {
    matches!(
        error,
        EngineError::Unavailable(_)
            | EngineError::UnavailableFor { .. }
            | EngineError::Unreadable(_)
            | EngineError::Rejected { .. }
    )
}

/// What a connection lends its requests: the user's access token and the values the
/// institution granted with it (`[auth.token_response] keep`) for headers that name
/// them. Nothing of it is ever logged.
pub struct Grant {
    pub access_token: SecretString,
    pub values: BTreeMap<String, SecretString>,
}

impl Grant {
    /// A grant that is an access token and nothing else.
    pub fn bearer(access_token: SecretString) -> Self {
        Self {
            access_token,
            values: BTreeMap::new(),
        }
    }
}

impl std::fmt::Debug for Grant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grant")
            .field("values", &self.values.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// Resolves the secrets that headers name.
pub type Secrets = std::sync::Arc<dyn Fn(&Connector, &str) -> Option<SecretString> + Send + Sync>;

/// Runs connectors over one shared HTTP client.
#[derive(Clone)]
pub struct Engine {
    http: reqwest::Client,
    resilience: Resilience,
    secrets: Option<Secrets>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("resilience", &self.resilience)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// An engine whose budgets and breakers are this process's alone.
    pub fn new(http: reqwest::Client) -> Self {
        Self::with_resilience(http, Resilience::local(BreakerPolicy::default()))
    }

    pub fn with_resilience(http: reqwest::Client, resilience: Resilience) -> Self {
        Self {
            http,
            resilience,
            secrets: None,
        }
    }

    /// Where the secrets that connectors' headers name are read.
    pub fn with_secrets(mut self, secrets: Secrets) -> Self {
        self.secrets = Some(secrets);
        self
    }

    pub fn resilience(&self) -> &Resilience {
        &self.resilience
    }

    /// Fetches and maps every endpoint of the connector; transactions resume from
    /// `resume` when it is this connector version's (see [`super::incremental`]). A
    /// record that does not map is set aside with its reason; a page that cannot be
    /// read fails the whole fetch, unless it was one account's (a fan-out request):
    /// then only that account's data is left as stored, and the fetch says so.
    pub async fn fetch(
        &self,
        connector: &Connector,
        grant: &Grant,
        resume: Option<&SyncCursor>,
    ) -> Result<Fetched, EngineError> {
        // Before any request: a grant that cannot make them asks the institution
        // nothing, and counts against nothing of it.
        if let Some(name) = connector
            .grant_values_needed()
            .into_iter()
            .find(|name| !grant.values.contains_key(*name))
        {
            return Err(EngineError::GrantLacks(name.to_owned()));
        }
        let mut out = Fetched::default();
        let fetched_at = Utc::now();
        let memo = Memo::default();

        let pages = self
            .fetch_from(connector, &connector.accounts, grant, None, None, &memo)
            .await?;
        out.requests += pages.requests;
        let mut parents: Vec<Arc<Parent>> = Vec::new();
        let mut unread_details = Vec::new();
        for item in &pages.records {
            let details = match self
                .account_details(connector, grant, item, &memo, &mut out)
                .await?
            {
                Ok(details) => details,
                // Its details could not be read: it stays as stored.
                Err(error) => {
                    unread_details.push(error);
                    continue;
                }
            };
            let mut layers = vec![(&connector.accounts.fields, item)];
            layers.extend(details.iter().map(|(mapping, item)| (*mapping, item)));
            let mappings: Vec<&Mapping> = layers.iter().map(|(m, _)| *m).collect();
            match checked(connector, &item.record)
                .and_then(|()| mapping::account(&Layers(layers), fetched_at))
            {
                Ok(account) => {
                    parents.push(Arc::new(Parent {
                        external_id: account.external_id.clone(),
                        record: item.record.to_value(),
                    }));
                    out.snapshot.accounts.push(account);
                }
                Err(reason) => out
                    .rejected
                    .push(Rejected::new("accounts", &mappings, item, &reason)),
            }
        }

        // No account's details could be read: that is the institution's failure,
        // not the accounts'.
        if !unread_details.is_empty() && unread_details.len() == pages.records.len() {
            return Err(unread_details.remove(0));
        }

        let struggling = self.resilience.is_degraded(&connector.id);
        let deferred = |endpoint: &Endpoint| struggling && endpoint.deferrable;
        if connector.holdings.as_ref().is_some_and(deferred) {
            out.deferred.push("holdings");
        } else if let Some(endpoint) = &connector.holdings {
            let security_mapping = endpoint.security.as_ref().unwrap_or(&endpoint.fields);
            let mut items = Vec::new();
            for (_, pages) in self
                .fan_out(
                    connector, endpoint, grant, &parents, None, &memo, &mut out, "holdings",
                )
                .await?
            {
                out.requests += pages.requests;
                items.extend(pages.records);
            }
            for item in &items {
                match checked(connector, &item.record)
                    .and_then(|()| mapping::holding(&endpoint.fields, security_mapping, item))
                {
                    Ok((holding, Err(reason))) => {
                        // Set aside like any record that does not map, and named
                        // for reconciliation: the account is missing a position.
                        out.undescribed.push((
                            holding.account_external_id.clone(),
                            holding.security_external_id.clone(),
                        ));
                        out.rejected.push(Rejected::new(
                            "holdings",
                            &[&endpoint.fields, security_mapping],
                            item,
                            &reason,
                        ));
                    }
                    Ok((holding, Ok(security))) => {
                        if !out
                            .snapshot
                            .securities
                            .iter()
                            .any(|s| s.external_id == security.external_id)
                        {
                            out.snapshot.securities.push(security);
                        }
                        out.snapshot.holdings.push(holding);
                    }
                    Err(reason) => out.rejected.push(Rejected::new(
                        "holdings",
                        &[&endpoint.fields, security_mapping],
                        item,
                        &reason,
                    )),
                }
            }
        }

        if connector.transactions.as_ref().is_some_and(deferred) {
            // Stored transactions stay, and the next sync resumes where the last did.
            out.deferred.push("transactions");
            out.cursor = resume.cloned();
        } else if let Some(endpoint) = &connector.transactions {
            let resume = resume.filter(|c| c.connector_hash == connector.hash);
            let position = resume.map(|c| &c.position);
            let fetched = self
                .fan_out(
                    connector,
                    endpoint,
                    grant,
                    &parents,
                    position,
                    &memo,
                    &mut out,
                    "transactions",
                )
                .await?;
            let mut reached: BTreeMap<String, Position> = BTreeMap::new();
            let mut single = None;
            for (account, pages) in fetched {
                out.requests += pages.requests;
                let rejected_before = out.rejected.len();
                let removed = pages.removed.clone();
                let coverage_dates = pages.dates;
                let next_token = pages.next_token.clone();
                map_transactions(connector, endpoint, pages, &mut out);
                let mapped = out.rejected.len() == rejected_before;
                let resumed_from = match (&account, position) {
                    (Some(account), Some(Position::PerAccount(by))) => by.get(account),
                    (None, Some(p)) if !matches!(p, Position::PerAccount(_)) => Some(p),
                    _ => None,
                };
                let resumed = matches!(resumed_from, Some(Position::SyncToken(_)));
                let coverage = match coverage_dates {
                    // Explicit removals stand even when a changed record did not map.
                    _ if resumed => Coverage::Changes { removed },
                    _ if !mapped => Coverage::Partial,
                    Some((from, to)) => Coverage::Dated { from, to },
                    None => Coverage::Everything,
                };
                // A record that did not map is fetched again next time: the cursor
                // only moves past what was stored.
                let got_to = match (next_token, coverage_dates) {
                    (Some(token), _) => Some(Position::SyncToken(token)),
                    (None, Some((_, to))) => Some(Position::Through(to)),
                    (None, None) => None,
                };
                let position = if mapped {
                    got_to
                } else {
                    resumed_from.cloned()
                };
                match account {
                    Some(account) => {
                        if let Some(position) = position {
                            reached.insert(account.clone(), position);
                        }
                        out.coverage_by_account.insert(account, coverage);
                    }
                    None => {
                        out.coverage = coverage;
                        single = position;
                    }
                }
            }
            let unread_accounts = out.unread("details");
            if endpoint.fan_out.is_some() {
                // An account whose transactions (or details) could not be read resumes
                // where it was.
                if let Some(Position::PerAccount(before)) = position {
                    for account in out
                        .unread("transactions")
                        .into_iter()
                        .chain(unread_accounts)
                    {
                        if let Some(was) = before.get(&account) {
                            reached.insert(account, was.clone());
                        }
                    }
                }
                single = (!reached.is_empty()).then_some(Position::PerAccount(reached));
                // Every account has its own coverage; one not asked, or not read,
                // removes nothing.
                for account in &out.snapshot.accounts {
                    out.coverage_by_account
                        .entry(account.external_id.clone())
                        .or_insert(Coverage::Partial);
                }
                out.coverage = Coverage::Everything;
            } else if !unread_accounts.is_empty() {
                // The transactions of an account that could not be read are not stored
                // this time: nothing goes, and the next sync reads from where this began.
                out.coverage = Coverage::Partial;
                single = position.cloned();
            }
            out.cursor = single.map(|position| SyncCursor {
                connector_hash: connector.hash.clone(),
                position,
            });
        } else {
            out.coverage = Coverage::Everything;
        }
        Ok(out)
    }

    /// One account's records from every details endpoint that asks for it, or (the
    /// failure noted in `out`) why one could not be read.
    async fn account_details<'c>(
        &self,
        connector: &'c Connector,
        grant: &Grant,
        item: &Item,
        memo: &Memo,
        out: &mut Fetched,
    ) -> Result<Result<Vec<(&'c Mapping, Item)>, EngineError>, EngineError> {
        if connector.details.is_empty() {
            return Ok(Ok(Vec::new()));
        }
        // Details are asked for by the account's id; without one the record is
        // refused when it is mapped.
        let Ok(Some(external_id)) = connector.accounts.fields.text(item, "external_id") else {
            return Ok(Ok(Vec::new()));
        };
        let parent = Arc::new(Parent {
            external_id: external_id.clone(),
            record: item.record.to_value(),
        });
        let mut details = Vec::new();
        for (name, endpoint) in &connector.details {
            if !endpoint.asks_for(&parent.record) {
                continue;
            }
            let failed = |error: &EngineError| {
                AccountFailure::new(&external_id, format!("details.{name}"), error)
            };
            match self
                .fetch_from(connector, endpoint, grant, None, Some(&parent), memo)
                .await
            {
                Ok(pages) => {
                    out.requests += pages.requests;
                    let mut records = pages.records;
                    match records.len() {
                        1 => details.push((&endpoint.fields, records.remove(0))),
                        n => {
                            let error = EngineError::Unreadable(format!(
                                "details.{name} of account {external_id}: its records path selected {n} records, not the account's one"
                            ));
                            out.failures.push(failed(&error));
                            return Ok(Err(error));
                        }
                    }
                }
                Err(error) if per_account(&error) => {
                    tracing::warn!(institution = %connector.id, endpoint = %format!("details.{name}"), %error, "An account's details could not be read; what is stored of it stays.");
                    out.failures.push(failed(&error));
                    return Ok(Err(error));
                }
                Err(error) => return Err(error),
            }
        }
        Ok(Ok(details))
    }

    /// An endpoint's records: once, or once per account it asks for (each from its
    /// own place in `resume`), as `(account, pages)`. An account whose request fails
    /// for itself alone is noted in `out` and left out; when every account's did, the
    /// first failure fails the fetch.
    #[allow(clippy::too_many_arguments)]
    async fn fan_out(
        &self,
        connector: &Connector,
        endpoint: &Endpoint,
        grant: &Grant,
        accounts: &[Arc<Parent>],
        resume: Option<&Position>,
        memo: &Memo,
        out: &mut Fetched,
        name: &str,
    ) -> Result<Vec<(Option<String>, Pages)>, EngineError> {
        if endpoint.fan_out.is_none() {
            let resume = resume.filter(|p| !matches!(p, Position::PerAccount(_)));
            let pages = self
                .fetch_from(connector, endpoint, grant, resume, None, memo)
                .await?;
            return Ok(vec![(None, pages)]);
        }
        let mut fetched = Vec::new();
        let mut first_failure = None;
        let mut failed = 0;
        let mut asked = 0;
        for parent in accounts {
            if !endpoint.asks_for(&parent.record) {
                continue;
            }
            asked += 1;
            let from = match resume {
                Some(Position::PerAccount(by)) => by.get(&parent.external_id),
                _ => None,
            };
            match self
                .fetch_from(connector, endpoint, grant, from, Some(parent), memo)
                .await
            {
                Ok(pages) => fetched.push((Some(parent.external_id.clone()), pages)),
                Err(error) if per_account(&error) => {
                    tracing::warn!(institution = %connector.id, endpoint = name, %error, "One account's data could not be read; what is stored of it stays.");
                    out.failures.push(AccountFailure::new(
                        &parent.external_id,
                        name.to_owned(),
                        &error,
                    ));
                    failed += 1;
                    first_failure.get_or_insert(error);
                }
                Err(error) => return Err(error),
            }
        }
        // Every account failing is the institution's (or the connector's) failure,
        // not the accounts'.
        match first_failure {
            Some(error) if failed == asked => Err(error),
            _ => Ok(fetched),
        }
    }
}

/// Maps one request's (or one account's) transactions into `out`: a later page's
/// version of a transaction (sync-token `modified`) replaces an earlier one; a
/// removed one goes.
fn map_transactions(connector: &Connector, endpoint: &Endpoint, pages: Pages, out: &mut Fetched) {
    let start = out.snapshot.transactions.len();
    let mut at: HashMap<String, usize> = HashMap::new();
    for item in &pages.records {
        match checked(connector, &item.record)
            .and_then(|()| mapping::transaction(&endpoint.fields, endpoint.sign, item))
        {
            Ok(transaction) => match at.get(&transaction.external_id) {
                Some(&i) => out.snapshot.transactions[i] = transaction,
                None => {
                    at.insert(
                        transaction.external_id.clone(),
                        out.snapshot.transactions.len(),
                    );
                    out.snapshot.transactions.push(transaction);
                }
            },
            Err(reason) => out.rejected.push(Rejected::new(
                "transactions",
                &[&endpoint.fields],
                item,
                &reason,
            )),
        }
    }
    let gone: HashSet<&str> = pages.removed.iter().map(String::as_str).collect();
    let mut i = start;
    while i < out.snapshot.transactions.len() {
        if gone.contains(out.snapshot.transactions[i].external_id.as_str()) {
            out.snapshot.transactions.remove(i);
        } else {
            i += 1;
        }
    }
}

impl Engine {
    /// Every record of one endpoint that does not fan out, across all its pages and
    /// date windows.
    pub async fn fetch_records(
        &self,
        connector: &Connector,
        endpoint: &Endpoint,
        grant: &Grant,
    ) -> Result<Pages, EngineError> {
        self.fetch_from(connector, endpoint, grant, None, None, &Memo::default())
            .await
    }

    /// The records of one endpoint for one account (a fan-out endpoint), across all
    /// its pages and date windows.
    pub async fn fetch_for(
        &self,
        connector: &Connector,
        endpoint: &Endpoint,
        grant: &Grant,
        account: &Arc<Parent>,
    ) -> Result<Pages, EngineError> {
        self.fetch_from(
            connector,
            endpoint,
            grant,
            None,
            Some(account),
            &Memo::default(),
        )
        .await
    }

    /// The records of one endpoint (for one account, fanning out) from where a
    /// previous sync got to: after a sync token, or from `lookback_days` before the
    /// last day covered; from the beginning without one.
    async fn fetch_from(
        &self,
        connector: &Connector,
        endpoint: &Endpoint,
        grant: &Grant,
        resume: Option<&Position>,
        account: Option<&Arc<Parent>>,
        memo: &Memo,
    ) -> Result<Pages, EngineError> {
        let Some(window) = &endpoint.window else {
            let mut fixed = Vec::new();
            if let (Paging::SyncToken { token_param, .. }, Some(Position::SyncToken(from))) =
                (&endpoint.paging, resume)
            {
                fixed.push((token_param.clone(), from.clone()));
            }
            return self
                .walk(connector, endpoint, grant, fixed, account, memo)
                .await;
        };
        let today = Utc::now().date_naive();
        let steps = match resume {
            Some(Position::Through(through)) => {
                window.steps_from(window.resume_from(*through, today), today)
            }
            _ => window.steps(today),
        };
        let mut out = Pages {
            dates: steps.first().zip(steps.last()).map(|(f, l)| (f.0, l.1)),
            ..Pages::default()
        };
        for (from, to) in steps {
            let range = vec![
                (
                    window.from_param.clone(),
                    from.format(&window.format).to_string(),
                ),
                (
                    window.to_param.clone(),
                    to.format(&window.to_format).to_string(),
                ),
            ];
            let pages = self
                .walk(connector, endpoint, grant, range, account, memo)
                .await?;
            out.records.extend(pages.records);
            out.removed.extend(pages.removed);
            out.requests += pages.requests;
        }
        Ok(out)
    }

    /// Follows the endpoint's paging from the first page to the last, with `fixed`
    /// parameters on every request the connector builds.
    async fn walk(
        &self,
        connector: &Connector,
        endpoint: &Endpoint,
        grant: &Grant,
        fixed: Vec<(String, String)>,
        account: Option<&Arc<Parent>>,
        memo: &Memo,
    ) -> Result<Pages, EngineError> {
        let parent = account.map(Arc::as_ref);
        let first_url = endpoint.url(parent).map_err(EngineError::Unreadable)?;
        let mut own = Vec::new();
        for (key, value) in &endpoint.query {
            let value = value
                .render(parent, Escape::None)
                .map_err(EngineError::Unreadable)?;
            own.push((key.clone(), value));
        }
        own.extend(fixed);
        let first_params = endpoint
            .paging
            .first_params(connector.limits.page_size, own);
        // Only a request that always answers the same document is asked once.
        let memoized = endpoint.method == reqwest::Method::GET
            && matches!(endpoint.paging, Paging::None)
            && endpoint
                .query
                .iter()
                .all(|(_, t)| t.is_fixed() || t.names_account());

        let mut out = Pages::default();
        let mut restarts = 0;
        'restart: loop {
            let mut records = Vec::new();
            let mut removed = Vec::new();
            let mut walk = Walk::new(&endpoint.paging, &first_url, first_params.clone());
            for number in 1..=MAX_PAGES {
                let request = Request {
                    endpoint,
                    url: walk.url(),
                    first: &first_url,
                    params: walk.params(),
                    account: parent,
                };
                let key = memoized.then(|| memo_key(&request));
                let cached = key.as_deref().and_then(|k| memo.get(k));
                let answer = match cached {
                    Some(page) => Ok(page),
                    None => {
                        out.requests += 1;
                        self.get_page(connector, &request, grant).await
                    }
                };
                let (headers, mut page) = match answer {
                    Err(EngineError::Restart) if restarts < MAX_RESTARTS => {
                        restarts += 1;
                        tracing::info!(institution = %connector.id, restarts, "The data changed while paging; starting again.");
                        continue 'restart;
                    }
                    Err(EngineError::Restart) => {
                        return Err(EngineError::Unavailable(format!(
                            "the data kept changing while paging ({restarts} restarts)"
                        )));
                    }
                    other => other?,
                };
                if let Some(key) = key {
                    memo.put(key, (headers.clone(), page.clone()));
                }
                let body = &page.body;
                if let Some(container) = &endpoint.records_container
                    && !matches!(
                        container.query(body).at_most_one(),
                        Ok(Some(Value::Array(_)))
                    )
                {
                    return Err(EngineError::Unreadable(format!(
                        "page {number} of {} has no list of records where the connector says",
                        first_url.path()
                    )));
                }
                if let Some(path) = &endpoint.removed {
                    removed.extend(
                        path.query(body)
                            .all()
                            .into_iter()
                            .filter_map(|id| match id {
                                Value::String(s) => Some(s.clone()),
                                Value::Number(n) => Some(n.to_string()),
                                _ => None,
                            }),
                    );
                }
                let located = Located::on(endpoint, &page);
                let count = located.count();
                let more = walk.advance(&PageRead {
                    number,
                    headers: &headers,
                    body: &page.body,
                    count,
                    so_far: records.len() + count,
                })?;
                let found = located.take(endpoint, &mut page);
                records.extend(joined(endpoint, &page.body, found, account));
                if !more {
                    out.records = records;
                    out.removed = removed;
                    out.next_token = walk.next_token();
                    return Ok(out);
                }
            }
            return Err(EngineError::Unreadable(format!(
                "paging did not end after {MAX_PAGES} pages"
            )));
        }
    }

    async fn get_page(
        &self,
        connector: &Connector,
        request: &Request<'_>,
        grant: &Grant,
    ) -> Result<(HeaderMap, Page), EngineError> {
        let attempt = || async {
            let pass = self
                .resilience
                .admit(&connector.id, quota(connector), MAX_RETRY_AFTER)
                .await
                .map_err(|refusal| match refusal {
                    // The sync comes back when the breaker lets a probe through.
                    Refusal::CircuitOpen { retry_in } => EngineError::CircuitOpen { retry_in },
                    Refusal::Wait(wait) => EngineError::RateLimited {
                        retry_after: Some(wait),
                    },
                })?;
            let started = std::time::Instant::now();
            // A client span per request: its traceparent goes to the institution.
            let span = tracing::info_span!(
                "institution request",
                otel.kind = "client",
                otel.name = %format_args!("{} {}", request.endpoint.method, connector.id),
                institution = %connector.id,
                outcome = tracing::field::Empty,
            );
            let result = self
                .send(connector, request, grant)
                .instrument(span.clone())
                .await;
            let (outcome, label) = match &result {
                Err(EngineError::Unavailable(_) | EngineError::UnavailableFor { .. }) => {
                    (Outcome::Unavailable, "unavailable")
                }
                Err(EngineError::RateLimited { retry_after }) => {
                    (Outcome::RateLimited(*retry_after), "rate_limited")
                }
                Ok(_) => (Outcome::Answered, "ok"),
                Err(_) => (Outcome::Answered, "refused"),
            };
            // Bounded labels: the institution and what became of the request,
            // never a user, a connection or a URL.
            metrics::histogram!(
                "finsync_institution_request_duration_seconds",
                "institution" => connector.id.clone(),
                "outcome" => label
            )
            .record(started.elapsed().as_secs_f64());
            span.record("outcome", label);
            self.resilience.settle(pass, outcome).await;
            result
        };
        attempt
            .retry(ExponentialBuilder::default().with_jitter().with_min_delay(Duration::from_millis(200)).with_max_times(3))
            // While the breaker is not closed a retry would only be refused or add load.
            .when(|error| error.is_transient() && self.resilience.is_closed(&connector.id))
            .adjust(|error, planned| {
                // `None`: the retries are used up, whatever the institution asked.
                let planned = planned?;
                match error {
                    EngineError::RateLimited { retry_after: Some(wait) }
                    | EngineError::UnavailableFor { retry_after: wait, .. }
                        if *wait > MAX_RETRY_AFTER => None,
                    EngineError::RateLimited { retry_after: Some(wait) }
                    | EngineError::UnavailableFor { retry_after: wait, .. } => Some(*wait),
                    _ => Some(planned),
                }
            })
            .notify(|error, wait| {
                tracing::warn!(institution = %connector.id, error = %error, wait_ms = wait.as_millis() as u64, "Retrying a request.");
            })
            .await
    }

    /// One request, its answer classified.
    async fn send(
        &self,
        connector: &Connector,
        request: &Request<'_>,
        grant: &Grant,
    ) -> Result<(HeaderMap, Page), EngineError> {
        let endpoint = request.endpoint;
        let url = request.url;
        let mut builder = self
            .http
            .request(endpoint.method.clone(), url.clone())
            .timeout(Duration::from_secs(connector.limits.timeout_secs));
        let mut trace = HeaderMap::new();
        crate::tracecontext::inject(&tracing::Span::current(), &mut trace);
        builder = builder.headers(trace);
        if connector.auth.access_token_param.is_none() {
            builder = builder.bearer_auth(grant.access_token.expose_secret());
        }
        for (name, header) in &endpoint.headers {
            let value = match header {
                Header::Text(template) => template
                    .render(request.account, Escape::None)
                    .map_err(EngineError::Unreadable)?,
                Header::Secret(env) => self
                    .secrets
                    .as_ref()
                    .and_then(|secrets| secrets(connector, env))
                    .ok_or_else(|| {
                        EngineError::Misconfigured(format!(
                            "the secret `{env}` a header of the connector names is not set"
                        ))
                    })?
                    .expose_secret()
                    .to_owned(),
                Header::Connection(kept) => grant
                    .values
                    .get(kept)
                    .ok_or_else(|| EngineError::GrantLacks(kept.clone()))?
                    .expose_secret()
                    .to_owned(),
            };
            builder = builder.header(name.clone(), value);
        }
        // A next link (Link-header paging) already carries every parameter but the
        // token, which never appears in a link.
        let mut params: Vec<(&str, &str)> = if url == request.first {
            request
                .params
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect()
        } else {
            Vec::new()
        };
        let token_param = connector.auth.access_token_param.as_deref();
        if endpoint.method == reqwest::Method::POST {
            let mut body = json_body(&params);
            if let (Some(param), Value::Object(members)) = (token_param, &mut body) {
                // Text, whatever it looks like.
                members.insert(
                    param.to_owned(),
                    Value::String(grant.access_token.expose_secret().to_owned()),
                );
            }
            builder = builder.json(&body);
        } else {
            if let Some(param) = token_param {
                params.push((param, grant.access_token.expose_secret()));
            }
            if !params.is_empty() {
                builder = builder.query(&params);
            }
        }
        let response = builder.send().await.map_err(|e| {
            // reqwest's error text names the URL but never the headers.
            EngineError::Unavailable(e.without_url().to_string())
        })?;
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = read_body(response).await?;
        let described = format!("{} {}", endpoint.method, url.path());
        if !status.is_success() {
            return Err(classify(
                connector,
                &endpoint.paging,
                &described,
                status.as_u16(),
                &headers,
                &bytes,
            ));
        }
        // The page is checked to be UTF-8 once, whole: parsed from bytes, every
        // string in it was checked on its own, at many times the cost.
        let page = std::str::from_utf8(&bytes)
            .map_err(|e| e.to_string())
            .and_then(|text| Page::parse(text, endpoint.text_lists()).map_err(|e| e.to_string()))
            .map_err(|e| {
                EngineError::Unreadable(format!("{described} did not answer JSON: {e}"))
            })?;
        Ok((headers, page))
    }
}

/// What makes two requests the same document: the URL, the parameters, and the
/// headers that are not fresh per request.
fn memo_key(request: &Request<'_>) -> String {
    let headers: Vec<String> = request
        .endpoint
        .headers
        .iter()
        .filter_map(|(name, header)| match header {
            Header::Text(template) if !template.is_fresh() => template
                .render(request.account, Escape::None)
                .ok()
                .map(|value| format!("{name}: {value}")),
            Header::Text(_) => None,
            Header::Secret(env) => Some(format!("{name}: <{env}>")),
            // One grant per fetch: the same value on every request of it.
            Header::Connection(kept) => Some(format!("{name}: <connection.{kept}>")),
        })
        .collect();
    format!("{} {:?} {headers:?}", request.url, request.params)
}

/// Where an endpoint's pages hold their records: the records, then the modified
/// ones if the endpoint lists them apart.
fn record_paths(endpoint: &Endpoint) -> impl Iterator<Item = &JsonPath> {
    std::iter::once(&endpoint.records).chain(endpoint.modified.as_ref())
}

/// Where a page's records lie, found once per page: for the count paging needs,
/// and then to take them.
enum Located {
    /// In the endpoint's plain lists ([`Endpoint::record_lists`]), this many.
    Lists(usize),
    /// At these JSON pointers, in page order.
    Pointers(Vec<String>),
}

impl Located {
    fn on(endpoint: &Endpoint, page: &Page) -> Self {
        if let Some(records) = &page.records {
            return Self::Lists(records.len());
        }
        let body = &page.body;
        if let Some(lists) = endpoint.record_lists.as_ref() {
            let mut count = 0;
            let mut plain = true;
            for names in lists {
                match names.iter().try_fold(body, |node, name| node.get(name)) {
                    Some(Value::Array(items)) => count += items.len(),
                    // `[*]` selects an object's members: the general query says which.
                    Some(Value::Object(_)) => plain = false,
                    // Nothing there, or a value `[*]` selects nothing in.
                    _ => {}
                }
            }
            if plain {
                return Self::Lists(count);
            }
        }
        Self::Pointers(record_pointers(endpoint, body))
    }

    fn count(&self) -> usize {
        match self {
            Self::Lists(count) => *count,
            Self::Pointers(pointers) => pointers.len(),
        }
    }

    /// The records, in page order, moved out of the page where nothing reads it
    /// again for them ([`page_records`]).
    fn take(self, endpoint: &Endpoint, page: &mut Page) -> Vec<Record> {
        if let Some(records) = page.records.take() {
            return records.into_iter().map(Record::Text).collect();
        }
        let body = &mut page.body;
        let count = match self {
            Self::Pointers(pointers) => {
                return page_records(endpoint, body, &pointers)
                    .into_iter()
                    .map(Record::Tree)
                    .collect();
            }
            Self::Lists(count) => count,
        };
        let mut records = Vec::with_capacity(count);
        for names in endpoint.record_lists.iter().flatten() {
            let list = names
                .iter()
                .try_fold(&mut *body, |node, name| node.get_mut(name.as_str()));
            if let Some(Value::Array(items)) = list {
                records.extend(items.drain(..).map(Record::Tree));
            }
        }
        records
    }
}

/// Where a page's records lie, as JSON pointers, in page order: the paths are
/// evaluated once per page, for the count paging needs and for taking the records.
fn record_pointers(endpoint: &Endpoint, body: &Value) -> Vec<String> {
    record_paths(endpoint)
        .flat_map(|path| path.query_located(body).into_iter())
        .map(|node| node.location().to_json_pointer())
        .collect()
}

/// The page's records at `pointers` ([`record_pointers`]). They are moved out of
/// the page (most syncs read thousands, and copying each one's fields cost more
/// than mapping them) unless the page is read again for them: by a join, or
/// because one record lies inside another.
fn page_records(endpoint: &Endpoint, body: &mut Value, pointers: &[String]) -> Vec<Value> {
    if !endpoint.joins.is_empty() || overlapping(pointers) {
        return pointers
            .iter()
            .filter_map(|pointer| body.pointer(pointer).cloned())
            .collect();
    }
    // Every pointer resolves: each was just read from this page, and none is taken
    // with another.
    pointers
        .iter()
        .filter_map(|pointer| body.pointer_mut(pointer).map(Value::take))
        .collect()
}

/// Whether a record is selected twice, or lies inside another. A `/` in a pointer
/// always starts a segment (one in a key is written `~1`), so a record lies inside
/// another exactly when a prefix of its pointer ending before a `/` is another
/// record's pointer.
fn overlapping(pointers: &[String]) -> bool {
    let mut selected = HashSet::new();
    let twice = pointers.iter().any(|p| !selected.insert(p.as_str()));
    twice
        || pointers.iter().any(|p| {
            p.match_indices('/')
                .any(|(end, _)| selected.contains(&p[..end]))
        })
}

/// The page's records as items: with, for each of the endpoint's joins, the element
/// of the joined list each refers to, or why there is none.
fn joined(
    endpoint: &Endpoint,
    body: &Value,
    records: Vec<Record>,
    account: Option<&Arc<Parent>>,
) -> Vec<Item> {
    let text = |value: &Value| match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    };
    let indexes: Vec<(&super::Join, HashMap<String, Vec<&Value>>)> = endpoint
        .joins
        .iter()
        .map(|join| {
            let mut index: HashMap<String, Vec<&Value>> = HashMap::new();
            for element in join.list.query(body).all() {
                if let Ok(Some(key)) = join.key.query(element).at_most_one()
                    && let Some(key) = text(key)
                {
                    index.entry(key).or_default().push(element);
                }
            }
            (join, index)
        })
        .collect();
    records
        .into_iter()
        .map(|record| {
            let mut item = Item::read(record);
            item.account = account.cloned();
            for (join, index) in &indexes {
                let key = item.record.node().select(&join.on);
                let found = match key.map(|key| key.map(|key| key.to_value())) {
                    // No key: the record refers to nothing, and what it would have
                    // read from the join is empty (missing, if required).
                    Ok(None | Some(Value::Null)) => continue,
                    Ok(Some(key)) => match text(&key) {
                        Some(key) => match index.get(&key).map(Vec::as_slice) {
                            Some([one]) => Ok((*one).clone()),
                            Some(many) => Err(format!(
                                "join `{}`: {} elements of `{}` have the key `{key}`",
                                join.name,
                                many.len(),
                                join.list
                            )),
                            None => Err(format!(
                                "join `{}`: no element of `{}` has the key `{key}`",
                                join.name, join.list
                            )),
                        },
                        None => Err(format!(
                            "join `{}`: the key at `{}` is not text or a number",
                            join.name, join.on
                        )),
                    },
                    Err(_) => Err(format!(
                        "join `{}`: the record has more than one key at `{}`",
                        join.name, join.on
                    )),
                };
                item.joined.insert(join.name.clone(), found);
            }
            item
        })
        .collect()
}

/// The connector's `[limits]` as the resilience layer takes them.
fn quota(connector: &Connector) -> Quota {
    Quota {
        per_second: connector
            .limits
            .requests_per_second
            .and_then(NonZeroU32::new),
        per_minute: connector
            .limits
            .requests_per_minute
            .and_then(NonZeroU32::new),
        per_day: connector.limits.requests_per_day.and_then(NonZeroU32::new),
        concurrency: connector.limits.concurrency,
        // Half the time a request is allowed: a sign the institution struggles.
        slow: Duration::from_secs(connector.limits.timeout_secs) / 2,
    }
}

/// The parameters of a POST request as a JSON object: whole numbers (page sizes,
/// offsets, page numbers) as numbers, everything else as strings.
fn json_body(params: &[(&str, &str)]) -> Value {
    params
        .iter()
        .map(|(k, v)| {
            let value = v
                .parse::<u64>()
                .map_or_else(|_| Value::String((*v).to_owned()), Value::from);
            ((*k).to_owned(), value)
        })
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// The response body, refusing one larger than `MAX_BODY_BYTES`.
async fn read_body(mut response: reqwest::Response) -> Result<Vec<u8>, EngineError> {
    if response
        .content_length()
        .is_some_and(|n| n > MAX_BODY_BYTES as u64)
    {
        return Err(EngineError::Unreadable(format!(
            "the response is larger than {MAX_BODY_BYTES} bytes"
        )));
    }
    // Sized from the declared length, up to a typical page's: grown by doubling,
    // a page was copied about twice over. A declared length is not trusted for
    // more before the bytes come.
    let declared = response.content_length().unwrap_or(0);
    let mut body =
        Vec::with_capacity(usize::try_from(declared).map_or(0, |n| n.min(PRESIZED_BODY_BYTES)));
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| EngineError::Unavailable(e.without_url().to_string()))?
    {
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(EngineError::Unreadable(format!(
                "the response is larger than {MAX_BODY_BYTES} bytes"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// What a failed response means, by the connector's declared error semantics.
fn classify(
    connector: &Connector,
    paging: &Paging,
    request: &str,
    status: u16,
    headers: &HeaderMap,
    body: &[u8],
) -> EngineError {
    let spec = &connector.errors.spec;
    let code = connector.errors.code_path.as_ref().and_then(|path| {
        let body: Value = serde_json::from_slice(body).ok()?;
        match path.query(&body).at_most_one().ok()?? {
            Value::String(s) => Some(s.clone()),
            other => Some(other.to_string()),
        }
    });
    let has_code = |codes: &[String]| code.as_ref().is_some_and(|c| codes.contains(c));
    if let Paging::SyncToken {
        restart_statuses,
        restart_codes,
        ..
    } = paging
        && (restart_statuses.contains(&status) || has_code(restart_codes))
    {
        EngineError::Restart
    } else if spec.reauth_statuses.contains(&status) || has_code(&spec.reauth_codes) {
        EngineError::Reauth { status }
    } else if spec.rate_limited_statuses.contains(&status) || has_code(&spec.rate_limited_codes) {
        EngineError::RateLimited {
            retry_after: retry_after(headers, &spec.retry_after_header),
        }
    } else if spec.retry_statuses.contains(&status) || has_code(&spec.retry_codes) {
        match retry_after(headers, &spec.retry_after_header) {
            Some(retry_after) => EngineError::UnavailableFor {
                status,
                retry_after,
            },
            None => EngineError::Unavailable(format!("{request} answered HTTP {status}")),
        }
    } else {
        EngineError::Rejected {
            status,
            request: request.to_owned(),
        }
    }
}

/// Whether the institution marked this record as one it could not produce.
fn checked(connector: &Connector, record: &Record) -> Result<(), FieldError> {
    let Some(path) = &connector.errors.record_error else {
        return Ok(());
    };
    match path
        .at_most_one(&record.node())
        .map(|marker| marker.map(|m| m.to_value()))
    {
        Ok(None | Some(Value::Null | Value::Bool(false))) => Ok(()),
        Ok(Some(Value::String(s))) if s.is_empty() => Ok(()),
        Ok(Some(marker)) => Err(FieldError::Invalid {
            field: "record",
            problem: format!("the institution marked it as bad ({marker})"),
        }),
        Err(_) => Err(FieldError::Invalid {
            field: "record",
            problem: "the record-error path matches more than one value".into(),
        }),
    }
}

const TEN_YEARS_SECS: i64 = 10 * 366 * 24 * 3600;

/// `Retry-After` as seconds or an HTTP date (RFC 9110 §10.2.3), or a reset moment in
/// epoch seconds.
fn retry_after(headers: &HeaderMap, name: &str) -> Option<Duration> {
    let value = headers.get(name)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<i64>() {
        // Headers such as `X-RateLimit-Reset` send the moment as epoch seconds; no
        // institution asks for a wait of more than ten years.
        if seconds > TEN_YEARS_SECS {
            return (chrono::DateTime::from_timestamp(seconds, 0)? - Utc::now())
                .to_std()
                .ok();
        }
        return u64::try_from(seconds).ok().map(Duration::from_secs);
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    (at.with_timezone(&Utc) - Utc::now()).to_std().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    use axum::extract::{Query, State};
    use axum::response::IntoResponse;
    use reqwest::header::{HeaderValue, LINK};

    /// A connector for an institution at `base`, with one transactions endpoint given
    /// as TOML lines.
    fn connector(base: &str, transactions: &str) -> Connector {
        let text = format!(
            r#"
name = "Test"
country = "US"
products = ["accounts", "transactions"]
base_url = "{base}"
[auth]
type = "oauth2"
authorize_url = "authorize"
token_url = "token"
client_id = "c"
client_secret = {{ env = "TEST_SECRET" }}
scopes = ["all"]
[errors]
reauth_statuses = [401]
rate_limited_statuses = [429]
retry_statuses = [503]
retry_after_header = "Retry-After"
code_path = "$.error"
record_error = "$.error"
[endpoints.accounts]
path = "accounts"
records = "$.accounts[*]"
[endpoints.accounts.fields]
external_id = {{ path = "$.id" }}
account_type = {{ value = "depository" }}
name = {{ path = "$.id" }}
currency = {{ value = "USD" }}
balance_current = {{ value = "0" }}
[endpoints.transactions]
{transactions}
[endpoints.transactions.fields]
external_id = {{ path = "$.id" }}
account_external_id = {{ value = "a1" }}
amount = {{ path = "$.amount" }}
currency = {{ value = "USD" }}
date = {{ path = "$.date" }}
description = {{ path = "$.name" }}
"#
        );
        match crate::connectors::validate_str("test.toml", "test", &text, None) {
            Ok(c) => c,
            Err(problems) => panic!("{problems}"),
        }
    }

    async fn serve(router: axum::Router) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}/", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await });
        base
    }

    fn txn(id: &str, amount: &str, date: &str) -> Value {
        serde_json::json!({"id": id, "amount": amount, "date": date, "name": format!("txn {id}")})
    }

    fn ids(fetched: &Fetched) -> Vec<(String, String)> {
        let mut ids: Vec<_> = fetched
            .snapshot
            .transactions
            .iter()
            .map(|t| (t.external_id.clone(), t.amount.amount.to_string()))
            .collect();
        ids.sort();
        ids
    }

    /// A page's records come out as the connector's paths select them, in order,
    /// whether they are taken out of plain lists, moved out one by one, or (nested
    /// or selected twice) copied.
    #[test]
    fn page_records_are_what_the_paths_select_in_page_order() {
        let page = serde_json::json!({
            "added": [txn("t1", "1.00", "2024-01-01"), txn("t2", "2.00", "2024-01-02")],
            "modified": [txn("t3", "3.00", "2024-01-03")],
            "data": {"items": [txn("t4", "4.00", "2024-01-04")], "count": 1},
            "none": null,
            "held": {"id": "h1", "inner": {"id": "h2"}},
            "held-2": {"id": "h3"},
            "next": "cursor-2",
        });
        let selected = |endpoint: &Endpoint| -> Vec<Value> {
            record_paths(endpoint)
                .flat_map(|path| path.query(&page).all())
                .cloned()
                .collect()
        };
        const PAGING: &str = r#"paging = { type = "sync-token", token_param = "cursor", next_token = "$.next", has_more = "$.more" }"#;
        for (lines, plain) in [
            // Taken list by list: the page keeps what is not a record.
            (
                "path = \"t\"\nrecords = \"$.added[*]\"\nmodified = \"$.modified[*]\"\n{PAGING}",
                true,
            ),
            (
                "path = \"t\"\nrecords = \"$.data.items[*]\"\nmodified = \"$.absent[*]\"\n{PAGING}",
                true,
            ),
            // `[*]` selects nothing in null or a string.
            (
                "path = \"t\"\nrecords = \"$.added[*]\"\nmodified = \"$.none[*]\"\n{PAGING}",
                true,
            ),
            (
                "path = \"t\"\nrecords = \"$.added[*]\"\nmodified = \"$.next[*]\"\n{PAGING}",
                true,
            ),
            // `[*]` on an object selects its members: moved out one by one.
            ("path = \"t\"\nrecords = \"$.held[*]\"\n{PAGING}", false),
            // The list itself and its first element: one record lies in another.
            (
                "path = \"t\"\nrecords = \"$.added\"\nmodified = \"$.added[0]\"\n{PAGING}",
                false,
            ),
            // The same records twice.
            (
                "path = \"t\"\nrecords = \"$.added[*]\"\nmodified = \"$.added[*]\"\n{PAGING}",
                false,
            ),
            // Records inside others, whose pointers do not sort next to each other
            // (`/held`, `/held-2`, `/held/inner`).
            ("path = \"t\"\nrecords = \"$..[?@.id]\"\n{PAGING}", false),
        ] {
            let lines = lines.replace("{PAGING}", PAGING);
            let connector = connector("http://127.0.0.1:1/", &lines);
            let endpoint = connector.transactions.as_ref().unwrap();
            // Parsed as `send` parses it: plain lists' records kept as text where
            // nothing else reads into them.
            let mut parsed = Page::parse(&page.to_string(), endpoint.text_lists()).unwrap();
            let located = Located::on(endpoint, &parsed);
            assert_eq!(matches!(located, Located::Lists(_)), plain, "{lines}");
            assert_eq!(located.count(), selected(endpoint).len(), "{lines}");
            let taken: Vec<Value> = located
                .take(endpoint, &mut parsed)
                .iter()
                .map(Record::to_value)
                .collect();
            assert_eq!(taken, selected(endpoint), "{lines}");
            assert_eq!(parsed.body["next"], "cursor-2", "{lines}");
        }
    }

    /// Sync-token pages: added, modified and removed merge into one list; a 409 in
    /// the middle starts the loop again from the first token.
    #[tokio::test]
    async fn sync_token_paging_merges_changes_and_restarts_when_the_data_moves() {
        #[derive(Default)]
        struct Institution {
            requests: Vec<Option<String>>,
            conflicted: bool,
        }
        let state = Arc::new(Mutex::new(Institution::default()));
        async fn sync(
            State(state): State<Arc<Mutex<Institution>>>,
            Query(query): Query<std::collections::HashMap<String, String>>,
        ) -> axum::response::Response {
            let mut state = state.lock().unwrap();
            let cursor = query.get("cursor").cloned();
            state.requests.push(cursor.clone());
            let page = |added: Vec<Value>,
                        modified: Vec<Value>,
                        removed: &[&str],
                        next: &str,
                        more: bool| {
                axum::Json(serde_json::json!({
                    "added": added,
                    "modified": modified,
                    "removed": removed.iter().map(|id| serde_json::json!({"id": id})).collect::<Vec<_>>(),
                    "next": next,
                    "has_more": more,
                }))
                .into_response()
            };
            match cursor.as_deref() {
                None => page(
                    vec![
                        txn("t1", "1.10", "2026-11-01"),
                        txn("t2", "2.20", "2026-11-02"),
                    ],
                    vec![],
                    &[],
                    "c1",
                    true,
                ),
                Some("c1") if !state.conflicted => {
                    state.conflicted = true;
                    (
                        axum::http::StatusCode::CONFLICT,
                        axum::Json(serde_json::json!({"error": "mutation_during_pagination"})),
                    )
                        .into_response()
                }
                Some("c1") => page(
                    vec![txn("t3", "-3.000000001", "2026-11-03")],
                    vec![txn("t1", "1.15", "2026-11-01")],
                    &["t2"],
                    "c2",
                    false,
                ),
                Some(other) => panic!("unexpected cursor {other}"),
            }
        }
        let base = serve(
            axum::Router::new()
                .route("/sync", axum::routing::get(sync))
                .with_state(Arc::clone(&state)),
        )
        .await;
        let connector = connector(
            &base,
            r#"path = "sync"
records = "$.added[*]"
modified = "$.modified[*]"
removed = "$.removed[*].id"
paging = { type = "sync-token", token_param = "cursor", next_token = "$.next", has_more = "$.has_more", restart_statuses = [409] }"#,
        );
        let endpoint = connector.transactions.clone().unwrap();
        let engine = Engine::new(crate::http::client());
        let token = Grant::bearer(SecretString::from("t"));
        let pages = engine
            .fetch_records(&connector, &endpoint, &token)
            .await
            .unwrap();
        assert_eq!(pages.removed, vec!["t2".to_owned()]);
        assert_eq!(
            state.lock().unwrap().requests,
            vec![None, Some("c1".into()), None, Some("c1".into())]
        );
        let mut fetched = Fetched::default();
        let mapping = &endpoint.fields;
        let mut at: HashMap<String, usize> = HashMap::new();
        for record in &pages.records {
            let t = mapping::transaction(mapping, endpoint.sign, record).unwrap();
            match at.get(&t.external_id) {
                Some(&i) => fetched.snapshot.transactions[i] = t,
                None => {
                    at.insert(t.external_id.clone(), fetched.snapshot.transactions.len());
                    fetched.snapshot.transactions.push(t);
                }
            }
        }
        fetched
            .snapshot
            .transactions
            .retain(|t| !pages.removed.contains(&t.external_id));
        assert_eq!(
            ids(&fetched),
            vec![
                ("t1".into(), "1.15".into()),
                ("t3".into(), "-3.000000001".into())
            ]
        );
    }

    /// A date window walks the whole history in steps, each step paged by Link
    /// headers, and every record arrives exactly once.
    #[tokio::test]
    async fn date_windows_cover_the_history_once_each_paged_by_link_headers() {
        let today = Utc::now().date_naive();
        let all: Vec<Value> = (0..12u64)
            .map(|i| {
                let date = today - chrono::Days::new(i);
                txn(&format!("t{i}"), &format!("{i}.01"), &date.to_string())
            })
            .collect();
        /// Every request's window and page offset.
        type Seen = Arc<Mutex<Vec<(String, String, usize)>>>;
        let seen: Seen = Arc::default();
        let state = (Arc::new(all), Arc::clone(&seen));
        async fn window(
            State((all, seen)): State<(Arc<Vec<Value>>, Seen)>,
            Query(query): Query<std::collections::HashMap<String, String>>,
        ) -> axum::response::Response {
            let (from, to) = (query["start"].clone(), query["end"].clone());
            let skip: usize = query.get("skip").map_or(0, |s| s.parse().unwrap());
            seen.lock().unwrap().push((from.clone(), to.clone(), skip));
            let parse = |d: &str| chrono::NaiveDate::parse_from_str(d, "%Y%m%d").unwrap();
            let (from_date, to_date) = (parse(&from), parse(&to));
            let inside: Vec<&Value> = all
                .iter()
                .filter(|t| {
                    let d: chrono::NaiveDate = t["date"].as_str().unwrap().parse().unwrap();
                    (from_date..=to_date).contains(&d)
                })
                .collect();
            let page: Vec<&Value> = inside.iter().skip(skip).take(2).copied().collect();
            let mut response = axum::Json(serde_json::json!({ "items": page })).into_response();
            if skip + 2 < inside.len() {
                let link = format!(
                    "</window?start={from}&end={to}&skip={}>; rel=\"next\"",
                    skip + 2
                );
                response
                    .headers_mut()
                    .insert(LINK, HeaderValue::from_str(&link).unwrap());
            }
            response
        }
        let base = serve(
            axum::Router::new()
                .route("/window", axum::routing::get(window))
                .with_state(state),
        )
        .await;
        let connector = connector(
            &base,
            r#"path = "window"
records = "$.items[*]"
paging = { type = "link-header" }
window = { from_param = "start", to_param = "end", format = "%Y%m%d", step_days = 4, history_days = 10 }"#,
        );
        let endpoint = connector.transactions.clone().unwrap();
        let engine = Engine::new(crate::http::client());
        let pages = engine
            .fetch_records(
                &connector,
                &endpoint,
                &Grant::bearer(SecretString::from("t")),
            )
            .await
            .unwrap();
        // Days 0..=10 back are in the history; day 11 is not.
        let mut got: Vec<String> = pages
            .records
            .iter()
            .map(|r| r.record.to_value()["id"].as_str().unwrap().to_owned())
            .collect();
        got.sort();
        let mut want: Vec<String> = (0..=10).map(|i| format!("t{i}")).collect();
        want.sort();
        assert_eq!(got, want);
        let windows: std::collections::BTreeSet<(String, String)> = seen
            .lock()
            .unwrap()
            .iter()
            .map(|(f, t, _)| (f.clone(), t.clone()))
            .collect();
        let fmt = |d: chrono::NaiveDate| d.format("%Y%m%d").to_string();
        let expected: std::collections::BTreeSet<(String, String)> = [(10, 7), (6, 3), (2, 0)]
            .into_iter()
            .map(|(from, to)| {
                (
                    fmt(today - chrono::Days::new(from)),
                    fmt(today - chrono::Days::new(to)),
                )
            })
            .collect();
        assert_eq!(windows, expected);
        assert_eq!(pages.requests, seen.lock().unwrap().len());
    }

    #[tokio::test]
    async fn records_the_institution_marks_bad_are_set_aside() {
        async fn list() -> axum::Json<Value> {
            axum::Json(serde_json::json!({"items": [
                txn("t1", "1.00", "2026-11-01"),
                {"id": "t2", "error": "DATA_UNAVAILABLE"},
            ], "accounts": [{"id": "a1"}]}))
        }
        let base = serve(
            axum::Router::new()
                .route("/list", axum::routing::get(list))
                .route("/accounts", axum::routing::get(list)),
        )
        .await;
        let connector = connector(&base, "path = \"list\"\nrecords = \"$.items[*]\"");
        let fetched = Engine::new(crate::http::client())
            .fetch(&connector, &Grant::bearer(SecretString::from("t")), None)
            .await
            .unwrap();
        assert_eq!(ids(&fetched), vec![("t1".into(), "1.00".into())]);
        assert_eq!(fetched.rejected.len(), 1);
        assert!(
            fetched.rejected[0]
                .reason
                .to_string()
                .contains("DATA_UNAVAILABLE"),
            "{:?}",
            fetched.rejected
        );
        assert!(!fetched.complete("transactions"));
    }

    /// While the institution struggles, a deferrable endpoint is not asked for: the
    /// fetch says so, keeps the stored records (incomplete) and the cursor.
    #[tokio::test]
    async fn deferrable_endpoints_wait_while_the_institution_struggles() {
        async fn list() -> axum::Json<Value> {
            axum::Json(
                serde_json::json!({"items": [txn("t1", "1.00", "2026-11-01")], "accounts": [{"id": "a1"}]}),
            )
        }
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = {
            let calls = Arc::clone(&calls);
            move || {
                calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                list()
            }
        };
        let base = serve(
            axum::Router::new()
                .route("/list", axum::routing::get(counted))
                .route("/accounts", axum::routing::get(list)),
        )
        .await;
        let connector = connector(
            &base,
            "path = \"list\"\nrecords = \"$.items[*]\"\ndeferrable = true",
        );
        let resilience = Resilience::local(BreakerPolicy::default());
        for _ in 0..10 {
            let pass = resilience
                .admit(&connector.id, quota(&connector), MAX_RETRY_AFTER)
                .await
                .unwrap();
            resilience.settle(pass, Outcome::RateLimited(None)).await;
        }
        let engine = Engine::with_resilience(crate::http::client(), resilience);
        let fetched = engine
            .fetch(&connector, &Grant::bearer(SecretString::from("t")), None)
            .await
            .unwrap();
        assert_eq!(fetched.deferred, ["transactions"]);
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 0);
        assert!(!fetched.complete("transactions"));
        assert_eq!(fetched.coverage, Coverage::Partial);
        assert_eq!(fetched.snapshot.accounts.len(), 1);
    }

    /// An institution that keeps answering 429 with a short `Retry-After` is asked
    /// four times in all (the request and three retries), then the run ends
    /// rate limited: a `Retry-After` shapes the wait, never the number of tries.
    #[tokio::test]
    async fn a_429_that_never_ends_is_retried_three_times_then_given_up() {
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let refuse = {
            let calls = Arc::clone(&calls);
            move || {
                calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                async {
                    (
                        axum::http::StatusCode::TOO_MANY_REQUESTS,
                        [("retry-after", "0")],
                        "slow down",
                    )
                }
            }
        };
        let base = serve(axum::Router::new().route("/accounts", axum::routing::get(refuse))).await;
        let connector = connector(&base, "path = \"list\"\nrecords = \"$.items[*]\"");
        let engine = Engine::with_resilience(
            crate::http::client(),
            Resilience::local(BreakerPolicy::default()),
        );
        let error = engine
            .fetch(&connector, &Grant::bearer(SecretString::from("t")), None)
            .await
            .unwrap_err();
        assert!(matches!(error, EngineError::RateLimited { .. }), "{error}");
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 4);
    }

    /// A POST endpoint gets its parameters as a JSON body, numbers as numbers.
    #[tokio::test]
    async fn post_endpoints_send_their_parameters_as_json() {
        async fn search(axum::Json(body): axum::Json<Value>) -> axum::Json<Value> {
            let offset = body["offset"].as_u64().expect("offset is a number");
            assert_eq!(body["account"], "a1");
            assert_eq!(body["limit"], 100);
            let items: Vec<Value> = if offset == 0 {
                vec![txn("t1", "1.00", "2026-11-01")]
            } else {
                Vec::new()
            };
            axum::Json(serde_json::json!({ "items": items }))
        }
        let base = serve(axum::Router::new().route("/search", axum::routing::post(search))).await;
        let connector = connector(
            &base,
            r#"method = "POST"
path = "search"
query = { account = "a1" }
records = "$.items[*]"
paging = { type = "offset", offset_param = "offset", limit_param = "limit" }"#,
        );
        let endpoint = connector.transactions.clone().unwrap();
        let pages = Engine::new(crate::http::client())
            .fetch_records(
                &connector,
                &endpoint,
                &Grant::bearer(SecretString::from("t")),
            )
            .await
            .unwrap();
        assert_eq!(pages.records.len(), 1);
        assert_eq!(pages.requests, 2);
    }

    #[test]
    fn retry_after_accepts_an_epoch_reset_moment() {
        let mut headers = HeaderMap::new();
        let at = Utc::now().timestamp() + 3600;
        headers.insert(
            "X-RateLimit-Reset",
            HeaderValue::from_str(&at.to_string()).unwrap(),
        );
        let wait = retry_after(&headers, "X-RateLimit-Reset").unwrap();
        // Minutes of scheduling delay would still leave it within the bounds.
        assert!(
            wait <= Duration::from_secs(3600) && wait >= Duration::from_secs(3000),
            "{wait:?}"
        );
    }

    #[test]
    fn retry_after_accepts_seconds() {
        let mut headers = HeaderMap::new();
        headers.insert("Retry-After", HeaderValue::from_static("7"));
        assert_eq!(
            retry_after(&headers, "Retry-After"),
            Some(Duration::from_secs(7))
        );
    }

    /// Holdings that name a security listed beside them: each is joined to its own;
    /// one whose security is not listed is set aside alone, and the rest of the page
    /// is stored. The access token travels in the JSON body, never as a header.
    #[tokio::test]
    async fn holdings_are_joined_to_their_securities_and_a_missing_one_quarantines_only_its_holding()
     {
        async fn holdings(
            headers: axum::http::HeaderMap,
            axum::Json(body): axum::Json<Value>,
        ) -> axum::Json<Value> {
            assert_eq!(body["access_token"], "123456", "{body}");
            assert!(headers.get("authorization").is_none());
            axum::Json(serde_json::json!({
                "holdings": [
                    {"account_id": "a1", "security_id": "s1", "quantity": 2, "iso_currency_code": "USD"},
                    {"account_id": "a1", "security_id": "s2", "quantity": 3, "iso_currency_code": "USD"},
                    {"account_id": "a1", "security_id": "s9", "quantity": 4, "iso_currency_code": "USD"},
                ],
                "securities": [
                    {"security_id": "s1", "name": "Acme", "type": "equity", "iso_currency_code": "USD"},
                    {"security_id": "s2", "name": "Bonds", "type": "etf", "iso_currency_code": "USD"},
                ],
            }))
        }
        async fn accounts(axum::Json(body): axum::Json<Value>) -> axum::Json<Value> {
            assert_eq!(body["access_token"], "123456");
            axum::Json(serde_json::json!({"accounts": [{"id": "a1"}]}))
        }
        let base = serve(
            axum::Router::new()
                .route("/accounts", axum::routing::post(accounts))
                .route("/holdings", axum::routing::post(holdings)),
        )
        .await;
        let text = format!(
            r#"
name = "Test"
country = "US"
products = ["accounts", "holdings"]
base_url = "{base}"
[auth]
type = "oauth2"
authorize_url = "authorize"
token_url = "token"
client_id = "c"
client_secret = {{ env = "TEST_SECRET" }}
scopes = ["all"]
access_token_param = "access_token"
[endpoints.accounts]
method = "POST"
path = "accounts"
records = "$.accounts[*]"
[endpoints.accounts.fields]
external_id = {{ path = "$.id" }}
account_type = {{ value = "investment" }}
name = {{ path = "$.id" }}
currency = {{ value = "USD" }}
balance_current = {{ value = "0" }}
[endpoints.holdings]
method = "POST"
path = "holdings"
records = "$.holdings[*]"
joins = {{ security = {{ list = "$.securities[*]", key = "$.security_id", on = "$.security_id" }} }}
[endpoints.holdings.fields]
account_external_id = {{ path = "$.account_id" }}
security_external_id = {{ path = "$.security_id" }}
quantity = {{ path = "$.quantity" }}
currency = {{ path = "$.iso_currency_code" }}
[endpoints.holdings.security_fields]
name = {{ path = "$.name", from = "security" }}
security_type = {{ path = "$.type", from = "security" }}
currency = {{ path = "$.iso_currency_code", from = "security" }}
"#
        );
        let connector = crate::connectors::validate_str("test.toml", "test", &text, None)
            .unwrap_or_else(|problems| panic!("{problems}"));
        let fetched = Engine::new(crate::http::client())
            .fetch(
                &connector,
                &Grant::bearer(SecretString::from("123456")),
                None,
            )
            .await
            .unwrap();
        let mut held: Vec<_> = fetched
            .snapshot
            .holdings
            .iter()
            .map(|h| h.security_external_id.as_str())
            .collect();
        held.sort_unstable();
        assert_eq!(held, ["s1", "s2"]);
        let names: Vec<_> = fetched
            .snapshot
            .securities
            .iter()
            .map(|s| s.name.as_str())
            .collect();
        assert!(
            names.contains(&"Acme") && names.contains(&"Bonds"),
            "{names:?}"
        );
        assert_eq!(fetched.rejected.len(), 1, "{:?}", fetched.rejected);
        let refused = &fetched.rejected[0];
        assert_eq!(refused.key, "a1:s9");
        assert!(
            refused
                .reason
                .contains("join `security`: no element of `$.securities[*]` has the key `s9`"),
            "{}",
            refused.reason
        );
    }

    /// Transactions read in one call for all accounts, and one account's details
    /// unreadable: its transactions are not stored this time, so nothing of the
    /// transactions may go and the cursor stays where this sync began.
    #[tokio::test]
    async fn an_account_whose_details_fail_holds_back_the_cursor_of_shared_transactions() {
        async fn accounts() -> axum::Json<Value> {
            axum::Json(serde_json::json!({"accounts": [{"id": "a1"}, {"id": "a2"}]}))
        }
        async fn detail(
            axum::extract::Path(id): axum::extract::Path<String>,
        ) -> axum::response::Response {
            if id == "a2" {
                return axum::http::StatusCode::SERVICE_UNAVAILABLE.into_response();
            }
            axum::Json(serde_json::json!({"balance": "12.50"})).into_response()
        }
        async fn list() -> axum::Json<Value> {
            let today = Utc::now().date_naive().to_string();
            axum::Json(serde_json::json!({"items": [txn("t1", "1.00", &today)]}))
        }
        let base = serve(
            axum::Router::new()
                .route("/accounts", axum::routing::get(accounts))
                .route("/details/{id}", axum::routing::get(detail))
                .route("/list", axum::routing::get(list)),
        )
        .await;
        let mut connector = connector(
            &base,
            "path = \"list\"\nrecords = \"$.items[*]\"\nwindow = { from_param = \"from\", to_param = \"to\", step_days = 30, history_days = 30 }",
        );
        let details = format!(
            r#"
name = "Test"
country = "US"
products = ["accounts"]
base_url = "{base}"
[auth]
type = "oauth2"
authorize_url = "authorize"
token_url = "token"
client_id = "c"
client_secret = {{ env = "TEST_SECRET" }}
scopes = ["all"]
[errors]
retry_statuses = [503]
[endpoints.accounts]
path = "accounts"
records = "$.accounts[*]"
[endpoints.accounts.fields]
external_id = {{ path = "$.id" }}
account_type = {{ value = "depository" }}
name = {{ path = "$.id" }}
currency = {{ value = "USD" }}
[endpoints.details.balances]
for_each = "accounts"
path = "details/{{account.external_id}}"
records = "$"
[endpoints.details.balances.fields]
balance_current = {{ path = "$.balance" }}
"#
        );
        let with_details = crate::connectors::validate_str("d.toml", "d", &details, None)
            .unwrap_or_else(|problems| panic!("{problems}"));
        connector.details = with_details.details;
        connector.accounts = with_details.accounts;
        let resume = SyncCursor {
            connector_hash: connector.hash.clone(),
            position: Position::Through(Utc::now().date_naive() - chrono::Days::new(3)),
        };
        let fetched = Engine::new(crate::http::client())
            .fetch(
                &connector,
                &Grant::bearer(SecretString::from("t")),
                Some(&resume),
            )
            .await
            .unwrap();
        assert_eq!(fetched.snapshot.accounts.len(), 1);
        assert_eq!(fetched.unread("details"), BTreeSet::from(["a2".to_owned()]));
        assert_eq!(fetched.coverage, Coverage::Partial);
        assert_eq!(fetched.cursor, Some(resume));
    }
}
