//! Synced records: applying a fetched snapshot as a diff ([`apply`]: only what
//! changed is written, one database transaction per account), the conversions
//! between canonical values and rows ([`rows`]), and reading a connection's records
//! back ([`reads`]: a portfolio, a full snapshot, a page of transactions).

mod apply;
mod reads;
mod rows;

pub(super) use apply::{lock_connected, records_changed};
pub use reads::{PagedTransaction, TransactionFilter, TransactionPosition};
pub(super) use rows::transaction_from_row;

use crate::domain::Coverage;

/// What applying a snapshot changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ApplyCounts {
    pub added: u32,
    pub modified: u32,
    pub removed: u32,
    pub unchanged: u32,
    /// Records that point at an account the institution did not return.
    pub orphaned: u32,
}

/// Which stored records a snapshot may remove. A list is only complete — and its
/// absences only mean "removed at the institution" — when every record in it was
/// read and mapped; otherwise what is stored stays. Transactions may also be only
/// the ones of some dates, or only what changed (see [`Coverage`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removals {
    pub accounts: bool,
    pub holdings: bool,
    pub transactions: Coverage,
}

impl Removals {
    /// The snapshot is everything the institution has.
    pub fn all() -> Self {
        Self {
            accounts: true,
            holdings: true,
            transactions: Coverage::Everything,
        }
    }
}
