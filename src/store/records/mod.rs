//! Synced records: applying a fetched snapshot as a diff ([`apply`]: only what
//! changed is written, each account whole in one database transaction ([`txn`]),
//! new rows through `COPY` or in statements whose text is the same for any number
//! of rows, [`bulk`]), the conversions
//! between canonical values and rows ([`rows`]), and reading a connection's records
//! back ([`reads`]: a portfolio, what a portfolio view shows of a connection, a full
//! snapshot, a page of transactions).

mod apply;
mod bulk;
mod reads;
mod rows;
mod txn;

pub(super) use apply::{lock_connected, records_changed};
pub use reads::{PagedTransaction, PortfolioRecords, TransactionFilter, TransactionPosition};
pub(in crate::store) use rows::security_from_row;
pub(super) use rows::transaction_from_row;

use std::collections::{BTreeMap, BTreeSet};

use crate::domain::{Coverage, Prior};

/// What applying a snapshot changed, and what was stored before of what it read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyCounts {
    pub added: u32,
    pub modified: u32,
    pub removed: u32,
    pub unchanged: u32,
    /// Records that point at an account the institution did not return.
    pub orphaned: u32,
    /// The stored side of the checks that compare two syncs, read on the way.
    pub prior: Prior,
}

/// Which stored records a snapshot may remove. A list is only complete — and its
/// absences only mean "removed at the institution" — when every record in it was
/// read and mapped; otherwise what is stored stays. Transactions may also be only
/// the ones of some dates, or only what changed (see [`Coverage`]). An endpoint
/// asked once per account may have read some accounts and not others: what could
/// not be read of an account stays as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removals {
    pub accounts: bool,
    pub holdings: bool,
    pub transactions: Coverage,
    /// Accounts whose own details could not be read: the stored account and all its
    /// records stay as they are.
    pub accounts_kept: BTreeSet<String>,
    /// Accounts whose holdings could not be read.
    pub holdings_kept: BTreeSet<String>,
    /// Per-account coverage of the transactions, over `transactions`.
    pub transactions_by_account: BTreeMap<String, Coverage>,
}

impl Removals {
    /// The snapshot is everything the institution has.
    pub fn all() -> Self {
        Self {
            accounts: true,
            holdings: true,
            transactions: Coverage::Everything,
            accounts_kept: BTreeSet::new(),
            holdings_kept: BTreeSet::new(),
            transactions_by_account: BTreeMap::new(),
        }
    }

    /// Whether the holdings of `account` may be removed.
    pub fn holdings_of(&self, account: &str) -> bool {
        self.holdings && !self.holdings_kept.contains(account)
    }

    /// What the fetched transactions of `account` stand for.
    pub fn transactions_of(&self, account: &str) -> &Coverage {
        self.transactions_by_account
            .get(account)
            .unwrap_or(&self.transactions)
    }

    /// Whether every holding and transaction of every account was read, so that a
    /// security nothing refers to any more is gone.
    fn everything_read(&self) -> bool {
        self.holdings
            && self.holdings_kept.is_empty()
            && self.accounts_kept.is_empty()
            && self.transactions != Coverage::Partial
            && !self
                .transactions_by_account
                .values()
                .any(|c| *c == Coverage::Partial)
    }
}
