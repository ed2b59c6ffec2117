//! Data quality: the checks run over what an institution sent after every sync, and
//! the findings they raise. A finding describes; it never changes a record. Each has
//! a stable code, the account it is about, the record (its subject) and a sentence.
//!
//! A check only speaks about what the sync read: [`Reconciliation::checked`] names
//! each account and part (the account itself, its holdings, its transactions) whose
//! findings the run replaces. A part it did not read keeps what earlier runs found;
//! transactions fetched only as changes since a cursor, or for a date range, add
//! findings but resolve none, since the rest of the history was not looked at (a
//! deep sync re-reads it). An account's value is checked with its holdings and its
//! balance with its transactions, so those findings belong to those parts.

use std::collections::{BTreeMap, BTreeSet};

use foldhash::{HashMap, HashMapExt as _, HashSet, HashSetExt as _};

use chrono::{Days, NaiveDate};
use rust_decimal::Decimal;

use super::model::vocabulary;
use super::{
    Account, AccountType, BalanceMeaning, Currency, Holding, InvestmentType, Snapshot,
    TransactionStatus,
};

vocabulary!(
    /// What a finding says, as a stable code apps and alerts can branch on.
    FindingCode {
        ValueMismatch => "VALUE_MISMATCH",
        HoldingsMismatch => "HOLDINGS_MISMATCH",
        BalanceDiscontinuity => "BALANCE_DISCONTINUITY",
        MissingSecurity => "MISSING_SECURITY",
        DuplicateTransaction => "DUPLICATE_TRANSACTION",
        StalePending => "STALE_PENDING",
        FutureDated => "FUTURE_DATED",
        UnknownCurrency => "UNKNOWN_CURRENCY",
        PossibleUnrecordedSplit => "POSSIBLE_UNRECORDED_SPLIT",
    }
);

vocabulary!(
    /// Which part of an account a finding is about, and so which read resolves it.
    FindingScope {
        Account => "account",
        Holdings => "holdings",
        Transactions => "transactions",
    }
);

/// One thing that does not add up, about one record of one account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub code: FindingCode,
    pub scope: FindingScope,
    /// The institution's id of the account.
    pub account: String,
    /// The record: the account's id, a holding's (`account:security`) or a
    /// transaction's.
    pub subject: String,
    /// What was found, in a sentence with the figures.
    pub detail: String,
}

/// What was stored before a sync wrote what it fetched: the other side of the
/// checks that compare two syncs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Prior {
    /// Each account's current balance (amount, currency) as stored.
    pub balances: HashMap<String, (Decimal, Currency)>,
    /// Each holding's quantity and price as stored, by its external id.
    pub holdings: HashMap<String, (Decimal, Option<Decimal>)>,
    /// The fetched transactions that were already stored, by external id.
    pub known_transactions: HashSet<String>,
}

/// What one sync read, as the checks need it.
#[derive(Debug, Clone)]
pub struct SyncRead<'a> {
    pub snapshot: &'a Snapshot,
    pub prior: &'a Prior,
    /// Accounts whose holdings this sync read.
    pub holdings_read: BTreeSet<&'a str>,
    /// Accounts whose transactions this sync read, and whether the read covers
    /// their whole history or a date range (`true`) rather than changes only.
    pub transactions_read: BTreeMap<&'a str, bool>,
    /// Holdings the institution listed without describing their security:
    /// (account, security id).
    pub undescribed: &'a [(String, String)],
    /// Some holding was set aside (quarantined): no account's holdings can be
    /// added up against its value.
    pub holdings_set_aside: bool,
    /// Some transaction was set aside: no balance can be followed through the
    /// transactions posted since.
    pub transactions_set_aside: bool,
    pub today: NaiveDate,
    /// A transaction pending for more days than this is stale.
    pub pending_days: u32,
}

/// A run's findings, and the parts of accounts whose earlier findings they replace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reconciliation {
    pub findings: Vec<Finding>,
    pub checked: BTreeSet<(String, FindingScope)>,
    /// Splits the read shows, recorded or detected, once per security and day.
    pub splits: Vec<Split>,
}

/// The largest split ratio a quantity jump is compared with.
const MAX_SPLIT_RATIO: u32 = 50;

/// Runs every check over what a sync read.
pub fn reconcile(read: &SyncRead<'_>) -> Reconciliation {
    let mut out = Reconciliation::default();
    for account in &read.snapshot.accounts {
        out.checked
            .insert((account.external_id.clone(), FindingScope::Account));
        check_account(read, account, &mut out.findings);
    }
    for account in &read.holdings_read {
        out.checked
            .insert(((*account).to_owned(), FindingScope::Holdings));
    }
    check_holdings(read, &mut out.findings, &mut out.splits);
    for (account, whole) in &read.transactions_read {
        if *whole {
            out.checked
                .insert(((*account).to_owned(), FindingScope::Transactions));
        }
    }
    check_transactions(read, &mut out.findings);
    out
}

fn unknown_currency(
    scope: FindingScope,
    account: &str,
    subject: &str,
    currency: Currency,
) -> Finding {
    Finding {
        code: FindingCode::UnknownCurrency,
        scope,
        account: account.to_owned(),
        subject: subject.to_owned(),
        detail: format!("`{currency}` is not an ISO 4217 currency code"),
    }
}

fn check_account(read: &SyncRead<'_>, account: &Account, findings: &mut Vec<Finding>) {
    let id = account.external_id.as_str();
    // The account's value is checked with its holdings and its balance with its
    // transactions: each finding is resolved by the read that can check it again.
    let finding = |code, scope, detail| Finding {
        code,
        scope,
        account: id.to_owned(),
        subject: id.to_owned(),
        detail,
    };
    if !account.currency.is_iso() {
        findings.push(unknown_currency(
            FindingScope::Account,
            id,
            id,
            account.currency,
        ));
    }
    let current = account.balances.current;
    let unit = current.currency.minor_unit();

    // A cash-only balance says nothing the holdings could be checked against.
    if account.account_type == AccountType::Investment
        && account.balances.meaning != BalanceMeaning::Cash
        && read.holdings_read.contains(id)
        && !read.holdings_set_aside
        && !read.undescribed.iter().any(|(a, _)| a == id)
    {
        let holdings: Vec<_> = read
            .snapshot
            .holdings
            .iter()
            .filter(|h| h.account_external_id == id)
            .collect();
        let in_own_currency = |h: &&&Holding| {
            h.value
                .map_or(h.price.map(|p| p.currency), |v| Some(v.currency))
                .is_none_or(|c| c == current.currency)
        };
        // A whole-account balance holds foreign positions converted at a rate the
        // institution does not send: only an account without them can be checked.
        let checkable = account.balances.meaning != BalanceMeaning::Total
            || holdings.iter().all(|h| in_own_currency(&h));
        // Otherwise positions in another currency are not part of the account's
        // balance; a holding without a value cannot be added up.
        let values: Option<Vec<Decimal>> = holdings
            .iter()
            .filter(in_own_currency)
            .map(|h| h.value.map(|v| v.amount))
            .collect();
        // Cash reported apart from the holdings is part of the value.
        let cash = account.balances.cash.map_or(Decimal::ZERO, |c| c.amount);
        if let Some(values) = values.filter(|v| checkable && !v.is_empty()) {
            let sum = values.iter().try_fold(cash, |sum, v| sum.checked_add(*v));
            if let Some(sum) = sum
                && sum
                    .checked_sub(current.amount)
                    .is_some_and(|gap| gap.abs() >= unit)
            {
                findings.push(finding(
                    FindingCode::HoldingsMismatch,
                    FindingScope::Holdings,
                    format!(
                        "the account's value is {} {} but its {} holdings in {} and its cash of {cash} add up to {sum}",
                        current.amount,
                        current.currency,
                        values.len(),
                        current.currency,
                    ),
                ));
            }
        }
    }

    let sign = match account.account_type {
        AccountType::Depository => Decimal::ONE,
        // What is owed goes down when money comes in.
        AccountType::Credit => Decimal::NEGATIVE_ONE,
        // A loan payment is part interest, which never moves the principal; an
        // investment account's balance moves with prices.
        AccountType::Loan | AccountType::Investment | AccountType::Other => return,
    };
    let Some((before, currency)) = read.prior.balances.get(id) else {
        return;
    };
    if *currency != current.currency
        || !read.transactions_read.contains_key(id)
        || read.transactions_set_aside
    {
        return;
    }
    let posted: Option<Decimal> = read
        .snapshot
        .transactions
        .iter()
        .filter(|t| {
            t.account_external_id == id
                && t.status == TransactionStatus::Posted
                && !read.prior.known_transactions.contains(&t.external_id)
        })
        .map(|t| (t.amount.currency == current.currency).then_some(t.amount.amount))
        .try_fold(Decimal::ZERO, |sum, amount| sum.checked_add(amount?));
    let Some(posted) = posted else { return };
    let Some(expected) = posted.checked_mul(sign).and_then(|p| before.checked_add(p)) else {
        return;
    };
    let Some(gap) = current.amount.checked_sub(expected) else {
        return;
    };
    if gap.abs() >= unit {
        findings.push(finding(
            FindingCode::BalanceDiscontinuity,
            FindingScope::Transactions,
            format!(
                "the balance went from {before} to {} {}; the transactions posted since add up to {posted}, which leaves {gap} unexplained",
                current.amount, current.currency,
            ),
        ));
    }
}

fn check_holdings(read: &SyncRead<'_>, findings: &mut Vec<Finding>, splits: &mut Vec<Split>) {
    let snapshot = read.snapshot;
    // Split transactions of this read: (account, security) → (date, shares added).
    let split_transactions: HashMap<(&str, &str), (NaiveDate, Option<Decimal>)> = snapshot
        .transactions
        .iter()
        .filter(|t| t.investment_type == Some(InvestmentType::Split))
        .filter_map(|t| {
            let key = (
                t.account_external_id.as_str(),
                t.security_external_id.as_deref()?,
            );
            Some((key, (t.date, t.quantity)))
        })
        .collect();
    let mut seen: HashSet<(String, NaiveDate)> = HashSet::new();
    let mut note = |split: Split| {
        if seen.insert((split.security_external_id.clone(), split.date)) {
            splits.push(split);
        }
    };
    // A split transaction explains a jump; so may a trade read in the same sync.
    let split_recorded: HashSet<(&str, &str)> = snapshot
        .transactions
        .iter()
        .filter(|t| {
            matches!(
                t.investment_type,
                Some(
                    InvestmentType::Split
                        | InvestmentType::Buy
                        | InvestmentType::Sell
                        | InvestmentType::Transfer
                )
            )
        })
        .filter_map(|t| {
            Some((
                t.account_external_id.as_str(),
                t.security_external_id.as_deref()?,
            ))
        })
        .collect();
    for (account, security) in read.undescribed {
        if read.holdings_read.contains(account.as_str()) {
            findings.push(Finding {
                code: FindingCode::MissingSecurity,
                scope: FindingScope::Holdings,
                account: account.clone(),
                subject: format!("{account}:{security}"),
                detail: format!(
                    "the institution lists a holding of `{security}` without describing the security; the holding is set aside until it does"
                ),
            });
        }
    }
    for h in &snapshot.holdings {
        let account = h.account_external_id.as_str();
        if !read.holdings_read.contains(account) {
            continue;
        }
        let subject = h.external_id();
        let finding = |code, detail| Finding {
            code,
            scope: FindingScope::Holdings,
            account: account.to_owned(),
            subject: subject.clone(),
            detail,
        };
        let security = snapshot
            .securities
            .iter()
            .find(|s| s.external_id == h.security_external_id);
        if security.is_none() {
            findings.push(finding(
                FindingCode::MissingSecurity,
                format!(
                    "the holding names security `{}`, which the institution did not describe",
                    h.security_external_id
                ),
            ));
        }
        let currencies = [h.value, h.price, h.cost_basis]
            .into_iter()
            .flatten()
            .map(|m| m.currency)
            .chain(security.map(|s| s.currency));
        if let Some(bad) = currencies.into_iter().find(|c| !c.is_iso()) {
            findings.push(unknown_currency(
                FindingScope::Holdings,
                account,
                &subject,
                bad,
            ));
        }
        if let (Some(price), Some(value)) = (h.price, h.value)
            && price.currency == value.currency
            && let Some(product) = h.quantity.checked_mul(price.amount)
        {
            // Within half a unit: the institution rounded the product to its unit.
            let unit = value.currency.minor_unit();
            let off = product
                .checked_sub(value.amount)
                .and_then(|gap| gap.abs().checked_mul(Decimal::TWO));
            if off.is_some_and(|off| off > unit) {
                findings.push(finding(
                    FindingCode::ValueMismatch,
                    format!(
                        "{} × {} is {product} but the institution says the holding is worth {} {}",
                        h.quantity, price.amount, value.amount, value.currency
                    ),
                ));
            }
        }
        // The holding's own price, as the stored side has it.
        let price_now = h.price.map(|p| p.amount);
        let prior = read.prior.holdings.get(&subject);
        if let Some((date, added)) =
            split_transactions.get(&(account, h.security_external_id.as_str()))
        {
            // The ratio from the quantity before and after: the stored one, else
            // what the transaction says it added.
            let before = prior
                .map(|(q, _)| *q)
                .or_else(|| added.and_then(|a| h.quantity.checked_sub(a)));
            if let Some(ratio) = before.and_then(|b| split_ratio(b, h.quantity, None, None)) {
                note(Split {
                    security_external_id: h.security_external_id.clone(),
                    ratio,
                    date: *date,
                    source: SplitSource::Institution,
                });
            }
        } else if let Some((before, price_before)) = prior
            && !split_recorded.contains(&(account, h.security_external_id.as_str()))
            && let Some(ratio) = split_ratio(*before, h.quantity, *price_before, price_now)
        {
            findings.push(finding(
                FindingCode::PossibleUnrecordedSplit,
                format!(
                    "the quantity went from {before} to {} ({ratio}) with no split transaction",
                    h.quantity
                ),
            ));
            // Recorded against the master, for every tenant, only where the
            // price moved the other way too: a doubling alone may be a purchase.
            if price_before.is_some() && price_now.is_some() {
                note(Split {
                    security_external_id: h.security_external_id.clone(),
                    ratio,
                    date: h.as_of.unwrap_or(read.today),
                    source: SplitSource::Detected,
                });
            }
        }
    }
}

/// The ratio of a split: `new` shares for every `old` (2-for-1, or 1-for-3 when
/// shares are consolidated).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SplitRatio {
    pub new: u32,
    pub old: u32,
}

impl std::fmt::Display for SplitRatio {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-for-{}", self.new, self.old)
    }
}

/// Where a split was learnt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SplitSource {
    /// The institution's own split transaction.
    Institution,
    /// A quantity and price jump with no split transaction
    /// (`POSSIBLE_UNRECORDED_SPLIT`).
    Detected,
}

impl SplitSource {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Institution => "institution",
            Self::Detected => "detected",
        }
    }
}

/// A split one sync saw, of a security as the institution names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    pub security_external_id: String,
    pub ratio: SplitRatio,
    /// The day it took effect: the split transaction's date, else the day the
    /// jump was seen (the holding's date, or the sync's).
    pub date: NaiveDate,
    pub source: SplitSource,
}

/// The ratio when the quantity moved by a whole ratio and the price, where both
/// are known, moved the other way by about as much.
fn split_ratio(
    before: Decimal,
    after: Decimal,
    price_before: Option<Decimal>,
    price_after: Option<Decimal>,
) -> Option<SplitRatio> {
    if before <= Decimal::ZERO || after <= Decimal::ZERO || before == after {
        return None;
    }
    let (large, small, forward) = if after > before {
        (after, before, true)
    } else {
        (before, after, false)
    };
    let ratio = large.checked_div(small)?;
    let k = ratio.round();
    // Institutions round split quantities to their own precision.
    let close = (ratio - k).abs() <= k.checked_mul(Decimal::new(1, 6))?;
    if k < Decimal::TWO || k > Decimal::from(MAX_SPLIT_RATIO) || !close {
        return None;
    }
    if let (Some(p0), Some(p1)) = (price_before, price_after)
        && p0 > Decimal::ZERO
        && p1 > Decimal::ZERO
    {
        // Prices move between syncs too: within a quarter of the inverse ratio.
        let implied = if forward {
            p0.checked_div(p1)?
        } else {
            p1.checked_div(p0)?
        };
        let drift = implied.checked_div(k)?;
        if drift < Decimal::new(75, 2) || drift > Decimal::new(125, 2) {
            return None;
        }
    }
    let k = u32::try_from(k.mantissa() / 10i128.pow(k.scale())).ok()?;
    Some(if forward {
        SplitRatio { new: k, old: 1 }
    } else {
        SplitRatio { new: 1, old: k }
    })
}

fn check_transactions(read: &SyncRead<'_>, findings: &mut Vec<Finding>) {
    let future = read.today.checked_add_days(Days::new(1));
    let stale = read
        .today
        .checked_sub_days(Days::new(u64::from(read.pending_days)));
    // Same account, date, amount, status and description under different ids.
    type Key<'k> = (
        &'k str,
        NaiveDate,
        Decimal,
        TransactionStatus,
        &'k str,
        Option<&'k str>,
    );
    let mut seen: HashMap<Key<'_>, &str> = HashMap::new();
    let mut transactions: Vec<_> = read
        .snapshot
        .transactions
        .iter()
        .filter(|t| {
            read.transactions_read
                .contains_key(t.account_external_id.as_str())
        })
        .collect();
    transactions.sort_by(|a, b| a.external_id.cmp(&b.external_id));
    // The same few currencies recur on every transaction, and asking ISO 4217
    // about one is a long string match: each of the first few is asked once.
    const REMEMBERED: usize = 8;
    let mut iso: Vec<(Currency, bool)> = Vec::new();
    for t in transactions {
        let account = t.account_external_id.as_str();
        let finding = |code, detail| Finding {
            code,
            scope: FindingScope::Transactions,
            account: account.to_owned(),
            subject: t.external_id.clone(),
            detail,
        };
        let currency = t.amount.currency;
        let known = match iso.iter().find(|(c, _)| *c == currency) {
            Some(&(_, known)) => known,
            None => {
                let known = currency.is_iso();
                if iso.len() < REMEMBERED {
                    iso.push((currency, known));
                }
                known
            }
        };
        if !known {
            findings.push(unknown_currency(
                FindingScope::Transactions,
                account,
                &t.external_id,
                t.amount.currency,
            ));
        }
        match t.status {
            TransactionStatus::Posted if future.is_some_and(|f| t.date > f) => {
                findings.push(finding(
                    FindingCode::FutureDated,
                    format!("posted with a date in the future ({})", t.date),
                ));
            }
            TransactionStatus::Pending if stale.is_some_and(|s| t.date < s) => {
                findings.push(finding(
                    FindingCode::StalePending,
                    format!(
                        "pending since {}, more than {} days",
                        t.date, read.pending_days
                    ),
                ));
            }
            _ => {}
        }
        let key = (
            account,
            t.date,
            t.amount.amount,
            t.status,
            t.description.as_str(),
            t.security_external_id.as_deref(),
        );
        match seen.get(&key) {
            Some(first) => findings.push(finding(
                FindingCode::DuplicateTransaction,
                format!(
                    "same date, amount and description as `{first}`: the institution may have sent it twice under different ids"
                ),
            )),
            None => {
                seen.insert(key, &t.external_id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(text: &str) -> Decimal {
        text.parse().unwrap()
    }

    #[test]
    fn whole_quantity_jumps_with_an_opposite_price_move_look_like_splits() {
        let some = |t: &str| Some(dec(t));
        assert_eq!(
            split_ratio(dec("10"), dec("20"), some("100"), some("50.8"))
                .map(|r| r.to_string())
                .as_deref(),
            Some("2-for-1")
        );
        assert_eq!(
            split_ratio(dec("30"), dec("10"), some("10"), some("29.5"))
                .map(|r| r.to_string())
                .as_deref(),
            Some("1-for-3")
        );
        assert_eq!(
            split_ratio(dec("10"), dec("20"), None, None)
                .map(|r| r.to_string())
                .as_deref(),
            Some("2-for-1")
        );
        // A purchase doubling the position at an unchanged price is no split.
        assert_eq!(
            split_ratio(dec("10"), dec("20"), some("100"), some("99")),
            None
        );
        // Neither is a move by a ratio that is not whole.
        assert_eq!(split_ratio(dec("10"), dec("25"), None, None), None);
        assert_eq!(split_ratio(dec("10"), dec("10"), None, None), None);
    }

    fn snapshot_with_split(added: Option<&str>) -> Snapshot {
        use crate::domain::{Holding, Money, Security, SecurityType, Transaction};
        let usd: Currency = "USD".parse().unwrap();
        Snapshot {
            securities: vec![Security {
                external_id: "s".into(),
                ticker: None,
                cusip: None,
                isin: None,
                sedol: None,
                figi: None,
                name: "S".into(),
                security_type: SecurityType::Equity,
                currency: usd,
                price: None,
                price_as_of: None,
            }],
            holdings: vec![Holding {
                account_external_id: "a".into(),
                security_external_id: "s".into(),
                quantity: dec("20"),
                cost_basis: None,
                price: None,
                value: None,
                as_of: None,
            }],
            transactions: vec![Transaction {
                external_id: "t".into(),
                account_external_id: "a".into(),
                amount: Money::new(Decimal::ZERO, usd),
                date: NaiveDate::from_ymd_opt(2026, 12, 4).unwrap(),
                status: TransactionStatus::Posted,
                pending_external_id: None,
                description: "2-FOR-1 STOCK SPLIT".into(),
                category: None,
                investment_type: Some(InvestmentType::Split),
                security_external_id: Some("s".into()),
                quantity: added.map(dec),
                price: None,
            }],
            ..Snapshot::default()
        }
    }

    fn read(snapshot: &Snapshot, prior: &Prior) -> Reconciliation {
        reconcile(&SyncRead {
            snapshot,
            prior,
            holdings_read: BTreeSet::from(["a"]),
            transactions_read: BTreeMap::new(),
            undescribed: &[],
            holdings_set_aside: false,
            transactions_set_aside: false,
            today: NaiveDate::from_ymd_opt(2026, 12, 5).unwrap(),
            pending_days: 10,
        })
    }

    #[test]
    fn a_split_transaction_gives_its_ratio_from_the_quantities() {
        let expected = Split {
            security_external_id: "s".into(),
            ratio: SplitRatio { new: 2, old: 1 },
            date: NaiveDate::from_ymd_opt(2026, 12, 4).unwrap(),
            source: SplitSource::Institution,
        };
        // First sync: the shares the transaction added say what there was before.
        let first = read(&snapshot_with_split(Some("10")), &Prior::default());
        assert_eq!(first.splits, vec![expected.clone()]);
        assert!(first.findings.is_empty(), "{:?}", first.findings);
        // Later: the quantity stored before says it, whatever the transaction says.
        let mut prior = Prior::default();
        prior.holdings.insert("a:s".into(), (dec("10"), None));
        assert_eq!(
            read(&snapshot_with_split(None), &prior).splits,
            vec![expected]
        );
        // A 2.5× move is no ratio of whole shares: nothing recorded.
        prior.holdings.insert("a:s".into(), (dec("8"), None));
        assert!(read(&snapshot_with_split(None), &prior).splits.is_empty());
    }
}
