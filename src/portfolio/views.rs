//! What the read API shows of a user: the portfolio and its parts, with how fresh
//! each connection's data is. Plain data, serialized as the API's JSON and cached.

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::domain::{
    AccountType, BalanceMeaning, ConnectionStatus, Currency, FindingCode, FindingScope,
    InvestmentType, Money, SecurityType, Transaction, TransactionStatus,
};
use crate::store::Annotations;

/// Why data is not current, as a stable code apps can branch on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum StaleReason {
    /// The first sync has not finished yet.
    SyncPending,
    /// The institution is down or timing out; syncs are retried.
    InstitutionUnavailable,
    /// The user must link the institution again.
    ReauthRequired,
    /// The last sync failed for another reason; it is retried.
    SyncFailed,
    /// The institution asked finsync to slow down; syncs resume later.
    RateLimited,
    /// The connection's access token is being renewed (or a renewal cut short is
    /// being taken up); syncs resume within seconds.
    TokenRefreshPending,
    /// The shared cache is unreachable: the answer was read from the database, and
    /// changes made through other API processes may take a moment to show.
    CacheDegraded,
    /// The user disconnected the institution; nothing is kept.
    ConnectionRevoked,
    /// The database is unreachable: the answer is the cached view, which may not
    /// show a sync that finished since.
    StoreUnavailable,
}

impl StaleReason {
    /// Reads the code a stored failure reason starts with (`CODE: message`).
    pub fn from_stored(reason: &str) -> (Self, &str) {
        let (code, message) = reason.split_once(':').unwrap_or((reason, ""));
        let code = match code.trim() {
            "REAUTH_REQUIRED" => Self::ReauthRequired,
            "INSTITUTION_UNAVAILABLE" => Self::InstitutionUnavailable,
            "RATE_LIMITED" => Self::RateLimited,
            "TOKEN_REFRESH_PENDING" => Self::TokenRefreshPending,
            "SYNC_PENDING" => Self::SyncPending,
            "CONNECTION_REVOKED" => Self::ConnectionRevoked,
            _ => Self::SyncFailed,
        };
        (code, message.trim())
    }
}

/// How fresh the data is. `stale` data is still the last good data: it is served,
/// with the reason, rather than dropped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Freshness {
    /// When the data was last synced successfully.
    pub as_of: Option<DateTime<Utc>>,
    pub stale: bool,
    pub reason: Option<StaleReason>,
    /// The reason in words, for people.
    pub message: Option<String>,
}

impl Freshness {
    pub fn current(as_of: Option<DateTime<Utc>>) -> Self {
        Self {
            as_of,
            stale: false,
            reason: None,
            message: None,
        }
    }

    pub fn stale(as_of: Option<DateTime<Utc>>, reason: StaleReason, message: &str) -> Self {
        Self {
            as_of,
            stale: true,
            reason: Some(reason),
            message: Some(message.to_owned()),
        }
    }

    /// Folds in another part's freshness: the oldest `as_of`, stale if either is
    /// (with the first stale part's reason).
    pub fn combine(&mut self, other: &Freshness) {
        if other.stale && !self.stale {
            self.stale = true;
            self.reason = other.reason;
            self.message = other.message.clone();
        }
        self.as_of = match (self.as_of, other.as_of) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }

    /// Says the answer came from the cache while the database was away; it wins
    /// over every other reason but the data's own staleness is kept.
    pub fn mark_store_unavailable(&mut self) {
        self.reason = Some(StaleReason::StoreUnavailable);
        self.message = Some(
            "the database is unreachable; this is the cached view, which may miss the latest sync"
                .to_owned(),
        );
    }

    /// Marks an answer given while the shared cache is down, unless it already
    /// carries a more important reason.
    pub fn mark_cache_degraded(&mut self) {
        if self.reason.is_none() {
            self.reason = Some(StaleReason::CacheDegraded);
            self.message =
                Some("the shared cache is unavailable; read from the database".to_owned());
        }
    }
}

/// Where the money is: by security type (holdings' market value) and by account
/// (balances of asset accounts), each weighted within its currency.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Allocation {
    pub by_security_type: Vec<SecurityTypeShare>,
    pub by_account: Vec<AccountShare>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SecurityTypeShare {
    #[serde(rename = "type")]
    pub security_type: SecurityType,
    pub value: Money,
    /// Share of the currency's total, 0 to 1, to six decimal places.
    #[serde(with = "rust_decimal::serde::str")]
    #[schema(value_type = String, example = "0.254")]
    pub weight: Decimal,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AccountShare {
    pub connection_id: String,
    pub account_id: String,
    pub value: Money,
    /// Share of the currency's total, 0 to 1, to six decimal places.
    #[serde(with = "rust_decimal::serde::str")]
    #[schema(value_type = String, example = "0.5")]
    pub weight: Decimal,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Portfolio {
    pub user_id: String,
    pub freshness: Freshness,
    pub connections: Vec<ConnectionView>,
    pub accounts: Vec<AccountView>,
    pub holdings: Vec<HoldingView>,
    pub transactions: Vec<TransactionView>,
    /// Net worth per currency: each account's `value` (its balance and the
    /// positions its balance leaves out) adds, credit and loan balances subtract.
    pub totals: Vec<Money>,
    /// False when a position the totals must add had no value (or a sum left
    /// Decimal's range): the totals are then short of it.
    pub totals_complete: bool,
    pub allocation: Allocation,
}

impl Portfolio {
    /// `user_id`'s portfolio with nothing in it yet.
    pub(super) fn empty(user_id: String) -> Self {
        Self {
            user_id,
            freshness: Freshness::current(None),
            connections: Vec::new(),
            accounts: Vec::new(),
            holdings: Vec::new(),
            transactions: Vec::new(),
            totals: Vec::new(),
            totals_complete: true,
            allocation: Allocation::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ConnectionView {
    pub id: String,
    pub institution: String,
    pub status: ConnectionStatus,
    pub freshness: Freshness,
    /// Moves whenever this connection's accounts, holdings or transactions change
    /// (a sync that changed something, an annotation, a disconnect). The same
    /// value means the same data: an app can skip reading it again.
    pub records_version: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AccountView {
    pub connection_id: String,
    pub id: String,
    pub name: String,
    pub official_name: Option<String>,
    #[serde(rename = "type")]
    pub account_type: AccountType,
    pub subtype: Option<String>,
    pub mask: Option<String>,
    pub currency: Currency,
    pub balances: BalancesView,
    /// What the account is worth: its balance, plus the positions the balance
    /// leaves out (see `balances.meaning`), one amount per currency.
    pub value: Vec<Money>,
    /// False when a position outside the balance had no value.
    pub value_complete: bool,
    /// How fresh this account's data is: a connection's accounts are fetched one
    /// by one, and one may fail while the others are read.
    pub sync: AccountSync,
    /// What reconciliation after the syncs found does not add up in this
    /// account's data, as the institution sent it (nothing here is corrected).
    pub data_quality: Vec<FindingView>,
}

/// One data-quality finding: a stable code, the record it is about, and what was
/// found, with the figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FindingView {
    pub code: FindingCode,
    /// `account`, `holdings` or `transactions`: the part of the account it is about.
    pub scope: FindingScope,
    /// The record, by the institution's id: the account's, a holding's
    /// (`account:security`) or a transaction's.
    pub subject: String,
    pub detail: String,
    pub first_seen_at: DateTime<Utc>,
    /// The last sync that found it; a sync that reads the part again and finds
    /// it no longer removes it.
    pub last_seen_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AccountSync {
    /// When this account's data was last read from the institution (its
    /// connection's last successful sync, unless its own fetch failed since).
    pub refreshed_at: Option<DateTime<Utc>>,
    /// Whether the connection's last successful sync failed to read some of this
    /// account's data (what is shown is what was read before). A sync that fails
    /// as a whole shows on the connection instead.
    pub last_fetch_failed: bool,
    /// The first successful sync that could not read it, while it fails.
    pub failing_since: Option<DateTime<Utc>>,
    /// The part that could not be read and why, with a stable code:
    /// `transactions: INSTITUTION_UNAVAILABLE: …`.
    pub failure: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BalancesView {
    pub current: Money,
    pub available: Option<Money>,
    /// Cash held outside the positions listed as holdings, where the institution
    /// reports it apart.
    pub cash: Option<Money>,
    /// What `current` covers: `total` (the whole account), `account_currency_total`
    /// (cash and the positions valued in the account's currency) or `cash`.
    pub meaning: BalanceMeaning,
    pub as_of: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct HoldingView {
    pub connection_id: String,
    pub account_id: String,
    #[serde(with = "rust_decimal::serde::str")]
    #[schema(value_type = String, example = "10.5")]
    pub quantity: Decimal,
    pub cost_basis: Option<Money>,
    pub price: Option<Money>,
    pub value: Option<Money>,
    pub as_of: Option<NaiveDate>,
    pub security: SecurityView,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SecurityView {
    pub id: String,
    pub name: String,
    #[serde(rename = "type")]
    pub security_type: SecurityType,
    pub ticker: Option<String>,
    pub cusip: Option<String>,
    pub isin: Option<String>,
    pub sedol: Option<String>,
    pub figi: Option<String>,
    pub currency: Currency,
    #[serde(with = "rust_decimal::serde::str_option")]
    #[schema(value_type = Option<String>)]
    pub price: Option<Decimal>,
    pub price_as_of: Option<NaiveDate>,
    /// The one instrument of the securities master this security is, across every
    /// institution and connection; none when nothing could match it.
    pub instrument: Option<InstrumentView>,
    /// Identifiers the institution sent that failed their check digits: shown above
    /// as sent, never used to match.
    pub identifier_issues: Vec<IdentifierIssueView>,
}

/// An instrument of the securities master: identifiers that passed their checks,
/// gathered from every institution that holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct InstrumentView {
    pub id: String,
    /// As the first institution that held it named it.
    pub name: String,
    #[serde(rename = "type")]
    pub security_type: SecurityType,
    pub currency: Currency,
    pub ticker: Option<String>,
    pub figi: Option<String>,
    pub isin: Option<String>,
    pub cusip: Option<String>,
    pub sedol: Option<String>,
    /// What this security was matched by: `figi`, `isin`, `cusip` or `sedol`, or
    /// `ticker` (ticker and currency alone: a weak match).
    #[schema(example = "isin")]
    pub matched_by: String,
    /// Matched by ticker and currency only; two such may be different instruments.
    pub weak: bool,
    /// Its splits recorded against the master, oldest first, from any
    /// connection that saw one.
    pub splits: Vec<SplitView>,
}

/// A split of an instrument.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SplitView {
    /// `new` shares for every `old`, e.g. `2-for-1`.
    #[schema(example = "2-for-1")]
    pub ratio: String,
    pub new: u32,
    pub old: u32,
    /// The day it took effect.
    pub date: NaiveDate,
    /// `institution` (its split transaction) or `detected` (a quantity and
    /// price jump without one).
    #[schema(example = "institution")]
    pub source: String,
}

/// An identifier that failed its check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct IdentifierIssueView {
    /// `figi`, `isin`, `cusip` or `sedol`.
    pub identifier: String,
    /// As the institution sent it.
    pub value: String,
    pub problem: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TransactionView {
    pub connection_id: String,
    pub id: String,
    pub account_id: String,
    pub amount: Money,
    pub date: NaiveDate,
    pub status: TransactionStatus,
    pub pending_transaction_id: Option<String>,
    pub description: String,
    pub category: Option<String>,
    pub investment_type: Option<InvestmentType>,
    pub security_id: Option<String>,
    #[serde(with = "rust_decimal::serde::str_option")]
    #[schema(value_type = Option<String>)]
    pub quantity: Option<Decimal>,
    #[serde(with = "rust_decimal::serde::str_option")]
    #[schema(value_type = Option<String>)]
    pub price: Option<Decimal>,
    /// The user's tags (`PATCH /v1/transactions/{transaction_id}`); a posted
    /// transaction keeps those of the pending one it replaced.
    pub tags: Vec<String>,
    /// The user's note, kept like `tags`.
    pub note: Option<String>,
}

impl TransactionView {
    pub fn from_record(connection_id: String, t: Transaction, annotations: Annotations) -> Self {
        Self {
            connection_id,
            id: t.external_id,
            account_id: t.account_external_id,
            amount: t.amount,
            date: t.date,
            status: t.status,
            pending_transaction_id: t.pending_external_id,
            description: t.description,
            category: t.category,
            investment_type: t.investment_type,
            security_id: t.security_external_id,
            quantity: t.quantity,
            price: t.price,
            tags: annotations.tags,
            note: annotations.note,
        }
    }
}
