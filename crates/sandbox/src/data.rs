//! The sandbox's seeded data: every user's accounts, holdings and transactions as a pure
//! function of `(seed, anchor_date, user_id)`, and of an epoch for data that changes over
//! time ([`portfolio_at`], in the `epochs` submodule).
//!
//! Numbers are kept as exact decimal strings and computed with scaled integers, never `f64`,
//! so the JSON the API serves and the values a test expects agree digit for digit. The same
//! structs serialize to the API's wire shape, numbers emitted as JSON numbers.

use std::fmt;

use chrono::{Datelike, Days, NaiveDate, Weekday};
use serde::{Serialize, Serializer};
use sha2::{Digest, Sha256};

mod epochs;

pub use self::epochs::{Delta, EpochState, portfolio_at};

/// Everything one sandbox user can read from Meridian.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Portfolio {
    pub accounts: Vec<Account>,
    pub holdings: Vec<Holding>,
    /// Newest first, as institutions list them.
    pub transactions: Vec<Transaction>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Account {
    pub account_id: String,
    pub name: String,
    pub official_name: String,
    /// `investment` or `depository`.
    #[serde(rename = "type")]
    pub account_type: String,
    /// `brokerage`, `ira`, `roth`, `checking` or `savings`.
    pub subtype: String,
    pub mask: String,
    pub balances: Balances,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Balances {
    #[serde(serialize_with = "number")]
    pub current: String,
    /// Absent for retirement accounts, which have no spendable balance.
    #[serde(serialize_with = "optional_number")]
    pub available: Option<String>,
    pub iso_currency_code: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Holding {
    pub account_id: String,
    pub security: Security,
    #[serde(serialize_with = "number")]
    pub quantity: String,
    #[serde(serialize_with = "number")]
    pub cost_basis: String,
    #[serde(serialize_with = "number")]
    pub institution_price: String,
    pub institution_price_as_of: NaiveDate,
    /// `quantity × institution_price`, rounded half away from zero to 2 decimals.
    #[serde(serialize_with = "number")]
    pub institution_value: String,
    /// The security's currency, which for a foreign listing differs from the account's.
    pub iso_currency_code: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Security {
    pub security_id: String,
    pub ticker_symbol: String,
    pub cusip: Option<String>,
    pub isin: Option<String>,
    pub name: String,
    /// `equity`, `etf`, `mutual fund`, `fixed income` or `cash`.
    #[serde(rename = "type")]
    pub security_type: String,
    pub iso_currency_code: String,
    #[serde(serialize_with = "number")]
    pub close_price: String,
    pub close_price_as_of: NaiveDate,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Transaction {
    pub transaction_id: String,
    pub account_id: String,
    /// Positive is money out of the account, negative money in (Plaid's convention).
    #[serde(serialize_with = "number")]
    pub amount: String,
    pub iso_currency_code: String,
    pub date: NaiveDate,
    pub pending: bool,
    /// On a posted transaction, the id of the pending one it replaced; that one is gone.
    pub pending_transaction_id: Option<String>,
    pub name: String,
    pub category: Option<String>,
    /// `buy`, `sell`, `dividend`, `fee`, `deposit`, `withdrawal` or (from epoch 3, see
    /// [`portfolio_at`]) `split`; absent on cash activity.
    pub investment_type: Option<String>,
    pub security_id: Option<String>,
    /// Negative on a sell.
    #[serde(serialize_with = "optional_number")]
    pub quantity: Option<String>,
    #[serde(serialize_with = "optional_number")]
    pub price: Option<String>,
}

/// A persona for tests, not a demo client: its cash account holds more than 10^15,
/// to exercise exact decimals end to end.
pub const EXTREME_BALANCE_USER: &str = "test-exact-extremes";

/// Users whose id starts with this have a large portfolio, for benchmarks: a brokerage
/// account, an IRA and a checking account, 15 positions in each investment account
/// (30 holdings) and [`BULK_TRANSACTIONS`] transactions.
pub const BULK_PREFIX: &str = "bulk-";
/// Transactions of a bulk user.
pub const BULK_TRANSACTIONS: usize = 1000;
/// Users whose id starts with this are bulk users with ten times the history
/// ([`DEEP_BULK_TRANSACTIONS`]), for measuring whether a sync's cost follows the
/// history or the changes.
pub const DEEP_BULK_PREFIX: &str = "bulkdeep-";
/// Transactions of a deep bulk user.
pub const DEEP_BULK_TRANSACTIONS: usize = 10_000;
/// New transactions a bulk user gets at each epoch (see [`epochs`]).
pub const BULK_NEW_PER_EPOCH: u64 = 10;
/// Positions in each investment account of a bulk user, the cash sweep included.
const BULK_POSITIONS: usize = 15;
/// Records (accounts, holdings, transactions) of a bulk user at epoch 0.
pub const BULK_RECORDS: usize = 3 + 2 * BULK_POSITIONS + BULK_TRANSACTIONS;
/// Records of a deep bulk user at epoch 0.
pub const DEEP_BULK_RECORDS: usize = 3 + 2 * BULK_POSITIONS + DEEP_BULK_TRANSACTIONS;

/// The transactions a bulk or deep bulk user has at epoch 0; `None` for other users.
pub fn bulk_history(user_id: &str) -> Option<usize> {
    if user_id.starts_with(DEEP_BULK_PREFIX) {
        Some(DEEP_BULK_TRANSACTIONS)
    } else if user_id.starts_with(BULK_PREFIX) {
        Some(BULK_TRANSACTIONS)
    } else {
        None
    }
}

/// Transactions fall in this many days before the anchor date.
const HISTORY_DAYS: u64 = 90;

/// A decimal the generator wrote as text, as the JSON number with exactly its digits
/// (for institutions that send numbers).
pub(crate) fn json_number(text: &str) -> serde_json::Value {
    serde_json::from_str(text).expect("the generator writes plain decimals")
}

/// Builds the portfolio the API serves to `user_id`.
///
/// Dates that would fall before `NaiveDate::MIN` saturate there rather than fail.
pub fn portfolio(seed: u64, anchor_date: NaiveDate, user_id: &str) -> Portfolio {
    Generator::new(seed, anchor_date, user_id).run()
}

/// Serializes decimal text as a JSON number with exactly those digits.
fn number<S: Serializer>(value: &str, serializer: S) -> Result<S::Ok, S::Error> {
    use serde::ser::Error as _;
    // With serde_json's `arbitrary_precision` the text is kept as is, never passing through f64.
    let parsed: serde_json::Number = value.parse().map_err(S::Error::custom)?;
    parsed.serialize(serializer)
}

fn optional_number<S: Serializer>(
    value: &Option<String>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match value {
        Some(text) => number(text, serializer),
        None => serializer.serialize_none(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SecurityKind {
    Equity,
    Etf,
    MutualFund,
    FixedIncome,
    Cash,
}

impl SecurityKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Equity => "equity",
            Self::Etf => "etf",
            Self::MutualFund => "mutual fund",
            Self::FixedIncome => "fixed income",
            Self::Cash => "cash",
        }
    }
}

struct SecurityDef {
    /// Suffix of the security id; ids are the same for every user.
    key: &'static str,
    ticker: &'static str,
    cusip: Option<&'static str>,
    isin: Option<&'static str>,
    name: &'static str,
    kind: SecurityKind,
    currency: &'static str,
    /// Reference price in ten-thousandths; the day's close is drawn around it.
    base_price: i128,
}

/// Real identifiers with valid check digits, so identifier validation downstream is exercised.
#[rustfmt::skip]
const SECURITIES: &[SecurityDef] = &[
    SecurityDef { key: "aapl", ticker: "AAPL", cusip: Some("037833100"), isin: Some("US0378331005"), name: "Apple Inc.", kind: SecurityKind::Equity, currency: "USD", base_price: 1_872_345 },
    SecurityDef { key: "msft", ticker: "MSFT", cusip: Some("594918104"), isin: Some("US5949181045"), name: "Microsoft Corporation", kind: SecurityKind::Equity, currency: "USD", base_price: 4_153_812 },
    SecurityDef { key: "googl", ticker: "GOOGL", cusip: Some("02079K305"), isin: Some("US02079K3059"), name: "Alphabet Inc. Class A", kind: SecurityKind::Equity, currency: "USD", base_price: 1_658_231 },
    SecurityDef { key: "amzn", ticker: "AMZN", cusip: Some("023135106"), isin: Some("US0231351067"), name: "Amazon.com, Inc.", kind: SecurityKind::Equity, currency: "USD", base_price: 1_784_467 },
    SecurityDef { key: "jnj", ticker: "JNJ", cusip: Some("478160104"), isin: Some("US4781601046"), name: "Johnson & Johnson", kind: SecurityKind::Equity, currency: "USD", base_price: 1_552_109 },
    SecurityDef { key: "vti", ticker: "VTI", cusip: Some("922908769"), isin: Some("US9229087690"), name: "Vanguard Total Stock Market ETF", kind: SecurityKind::Etf, currency: "USD", base_price: 2_613_378 },
    SecurityDef { key: "vxus", ticker: "VXUS", cusip: Some("921909768"), isin: Some("US9219097683"), name: "Vanguard Total International Stock ETF", kind: SecurityKind::Etf, currency: "USD", base_price: 613_955 },
    SecurityDef { key: "agg", ticker: "AGG", cusip: Some("464287226"), isin: Some("US4642872265"), name: "iShares Core U.S. Aggregate Bond ETF", kind: SecurityKind::Etf, currency: "USD", base_price: 982_741 },
    SecurityDef { key: "ust-2032", ticker: "T 4.125 11/15/32", cusip: Some("91282CFV8"), isin: Some("US91282CFV81"), name: "United States Treasury Note 4.125% 11/15/2032", kind: SecurityKind::FixedIncome, currency: "USD", base_price: 9_876_543 },
    SecurityDef { key: "vfiax", ticker: "VFIAX", cusip: Some("922908710"), isin: Some("US9229087104"), name: "Vanguard 500 Index Fund Admiral Shares", kind: SecurityKind::MutualFund, currency: "USD", base_price: 4_987_321 },
    SecurityDef { key: "sap", ticker: "SAP", cusip: None, isin: Some("DE0007164600"), name: "SAP SE", kind: SecurityKind::Equity, currency: "EUR", base_price: 1_904_410 },
    SecurityDef { key: "cash-usd", ticker: "CUR:USD", cusip: None, isin: None, name: "Meridian Cash Sweep Program", kind: SecurityKind::Cash, currency: "USD", base_price: 10_000 },
];

/// More real securities, held by bulk users only, so that an account can hold 15
/// positions; the other users' data never changes because of them.
#[rustfmt::skip]
const BULK_SECURITIES: &[SecurityDef] = &[
    SecurityDef { key: "nvda", ticker: "NVDA", cusip: Some("67066G104"), isin: Some("US67066G1040"), name: "NVIDIA Corporation", kind: SecurityKind::Equity, currency: "USD", base_price: 1_354_210 },
    SecurityDef { key: "meta", ticker: "META", cusip: Some("30303M102"), isin: Some("US30303M1027"), name: "Meta Platforms, Inc. Class A", kind: SecurityKind::Equity, currency: "USD", base_price: 5_893_077 },
    SecurityDef { key: "jpm", ticker: "JPM", cusip: Some("46625H100"), isin: Some("US46625H1005"), name: "JPMorgan Chase & Co.", kind: SecurityKind::Equity, currency: "USD", base_price: 2_412_558 },
    SecurityDef { key: "ko", ticker: "KO", cusip: Some("191216100"), isin: Some("US1912161007"), name: "The Coca-Cola Company", kind: SecurityKind::Equity, currency: "USD", base_price: 693_114 },
    SecurityDef { key: "pg", ticker: "PG", cusip: Some("742718109"), isin: Some("US7427181091"), name: "The Procter & Gamble Company", kind: SecurityKind::Equity, currency: "USD", base_price: 1_671_902 },
    SecurityDef { key: "xom", ticker: "XOM", cusip: Some("30231G102"), isin: Some("US30231G1022"), name: "Exxon Mobil Corporation", kind: SecurityKind::Equity, currency: "USD", base_price: 1_182_436 },
    SecurityDef { key: "bnd", ticker: "BND", cusip: Some("921937835"), isin: Some("US9219378356"), name: "Vanguard Total Bond Market ETF", kind: SecurityKind::Etf, currency: "USD", base_price: 728_815 },
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AccountKind {
    Brokerage,
    Ira,
    Roth,
    Checking,
    Savings,
}

impl AccountKind {
    fn is_investment(self) -> bool {
        matches!(self, Self::Brokerage | Self::Ira | Self::Roth)
    }

    fn subtype(self) -> &'static str {
        match self {
            Self::Brokerage => "brokerage",
            Self::Ira => "ira",
            Self::Roth => "roth",
            Self::Checking => "checking",
            Self::Savings => "savings",
        }
    }

    fn names(self) -> (&'static str, &'static str) {
        match self {
            Self::Brokerage => (
                "Individual Brokerage",
                "Meridian Brokerage Individual Taxable Account",
            ),
            Self::Ira => (
                "Traditional IRA",
                "Meridian Brokerage Traditional Individual Retirement Account",
            ),
            Self::Roth => (
                "Roth IRA",
                "Meridian Brokerage Roth Individual Retirement Account",
            ),
            Self::Checking => (
                "Everyday Checking",
                "Meridian Brokerage Cash Management Checking Account",
            ),
            Self::Savings => (
                "High-Yield Savings",
                "Meridian Brokerage High-Yield Savings Account",
            ),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InvestmentKind {
    Buy,
    Sell,
    Dividend,
    Fee,
    Deposit,
    Withdrawal,
}

impl InvestmentKind {
    const ALL: [Self; 6] = [
        Self::Buy,
        Self::Sell,
        Self::Dividend,
        Self::Fee,
        Self::Deposit,
        Self::Withdrawal,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Self::Buy => "buy",
            Self::Sell => "sell",
            Self::Dividend => "dividend",
            Self::Fee => "fee",
            Self::Deposit => "deposit",
            Self::Withdrawal => "withdrawal",
        }
    }
}

struct Merchant {
    name: &'static str,
    category: Option<&'static str>,
    /// Range of the amount in cents.
    cents: (u64, u64),
    inflow: bool,
    /// Interest accrues in fractions of a cent, so those amounts carry more decimals.
    decimals: u32,
}

#[rustfmt::skip]
const MERCHANTS: &[Merchant] = &[
    Merchant { name: "Whole Foods Market", category: Some("Food and Drink:Groceries"), cents: (1_200, 24_000), inflow: false, decimals: 2 },
    Merchant { name: "Blue Bottle Coffee", category: Some("Food and Drink:Coffee Shop"), cents: (350, 1_800), inflow: false, decimals: 2 },
    Merchant { name: "Shell", category: Some("Travel:Gas Stations"), cents: (2_500, 9_500), inflow: false, decimals: 2 },
    Merchant { name: "Netflix", category: Some("Service:Subscription"), cents: (1_549, 2_299), inflow: false, decimals: 2 },
    Merchant { name: "Parkview Apartments", category: Some("Payment:Rent"), cents: (180_000, 320_000), inflow: false, decimals: 2 },
    Merchant { name: "Amazon Marketplace", category: Some("Shops:Digital Purchase"), cents: (899, 45_000), inflow: false, decimals: 2 },
    Merchant { name: "City Utilities", category: Some("Service:Utilities"), cents: (4_500, 21_000), inflow: false, decimals: 2 },
    Merchant { name: "Venmo Transfer", category: None, cents: (1_000, 30_000), inflow: false, decimals: 2 },
    Merchant { name: "Acme Corp Payroll", category: Some("Transfer:Payroll"), cents: (250_000, 650_000), inflow: true, decimals: 2 },
    Merchant { name: "Interest Earned", category: Some("Interest"), cents: (10, 5_000), inflow: true, decimals: 6 },
];

/// A decimal as an integer count of `10^-scale` units: exact, and printed with exactly
/// `scale` decimals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Dec {
    units: i128,
    scale: u32,
}

impl Dec {
    fn new(units: i128, scale: u32) -> Self {
        Self { units, scale }
    }

    fn from_u64(units: u64, scale: u32) -> Self {
        Self::new(i128::from(units), scale)
    }

    fn neg(self) -> Self {
        Self::new(-self.units, self.scale)
    }

    fn add(self, other: Self) -> Self {
        let scale = self.scale.max(other.scale);
        Self::new(self.rescaled(scale) + other.rescaled(scale), scale)
    }

    fn rescaled(self, scale: u32) -> i128 {
        self.units * 10i128.pow(scale.saturating_sub(self.scale))
    }

    /// `self × other` rounded half away from zero to `scale` decimals.
    fn mul_round(self, other: Self, scale: u32) -> Self {
        let (quotient, remainder, divisor) = self.mul_parts(other, scale);
        let bump = if 2 * remainder.abs() >= divisor {
            remainder.signum()
        } else {
            0
        };
        Self::new(quotient + bump, scale)
    }

    /// Whether `self × other` lies exactly halfway between two `scale`-decimal values, where
    /// half-up and half-even rounding disagree.
    fn mul_is_tie(self, other: Self, scale: u32) -> bool {
        let (_, remainder, divisor) = self.mul_parts(other, scale);
        2 * remainder.abs() == divisor
    }

    fn mul_parts(self, other: Self, scale: u32) -> (i128, i128, i128) {
        let product = self.units * other.units;
        let product_scale = self.scale + other.scale;
        if product_scale <= scale {
            (product * 10i128.pow(scale - product_scale), 0, 1)
        } else {
            let divisor = 10i128.pow(product_scale - scale);
            (product / divisor, product % divisor, divisor)
        }
    }
}

impl fmt::Display for Dec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.units < 0 { "-" } else { "" };
        let magnitude = self.units.unsigned_abs();
        if self.scale == 0 {
            return write!(f, "{sign}{magnitude}");
        }
        let one = 10u128.pow(self.scale);
        let width = self.scale as usize;
        write!(f, "{sign}{}.{:0width$}", magnitude / one, magnitude % one)
    }
}

/// SplitMix64: tiny, well studied, and fixed here so the data never changes with a
/// dependency's version.
struct SplitMix64(u64);

impl SplitMix64 {
    /// Seeds from SHA-256 of length-prefixed parts, so distinct inputs never collide by
    /// concatenation.
    fn seeded(parts: &[&[u8]]) -> Self {
        let digest = stable_hash(parts);
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        Self(u64::from_le_bytes(first))
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n`; `n` must be positive.
    fn below(&mut self, n: u64) -> u64 {
        // Multiply-shift: the high half of a 128-bit product, bias-free enough for test data.
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `low..=high`.
    fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.below(high - low + 1)
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

fn stable_hash(parts: &[&[u8]]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    hasher.finalize().into()
}

/// `n` days before `date`, saturating at the earliest representable date.
fn days_before(date: NaiveDate, n: u64) -> NaiveDate {
    date.checked_sub_days(Days::new(n))
        .unwrap_or(NaiveDate::MIN)
}

/// Prices are as of the last trading day before the anchor date.
fn previous_weekday(date: NaiveDate) -> NaiveDate {
    let mut day = days_before(date, 1);
    while matches!(day.weekday(), Weekday::Sat | Weekday::Sun) && day != NaiveDate::MIN {
        day = days_before(day, 1);
    }
    day
}

struct PlannedAccount {
    id: String,
    kind: AccountKind,
    currency: &'static str,
    /// Indices into the generator's securities of the non-cash positions, for trades
    /// and dividends.
    positions: Vec<usize>,
    /// Value of the positions held in the account's own currency.
    invested: Dec,
    /// Value of the cash sweep position, if any.
    swept: Option<Dec>,
}

struct Generator<'a> {
    seed: u64,
    user_id: &'a str,
    anchor: NaiveDate,
    prices_as_of: NaiveDate,
    rng: SplitMix64,
    /// A bulk user's transactions at epoch 0 (see [`bulk_history`]).
    history: Option<usize>,
    /// The securities this user may hold: `SECURITIES`, then for a bulk user
    /// `BULK_SECURITIES`, so that an index means the same for every user.
    securities: Vec<&'static SecurityDef>,
    /// Close price of each of `securities`, the same for every user on a given day.
    closes: Vec<Dec>,
    /// Pending spending, held against the cash account's available balance.
    pending_held: Dec,
}

impl<'a> Generator<'a> {
    fn new(seed: u64, anchor: NaiveDate, user_id: &'a str) -> Self {
        let day = anchor.num_days_from_ce().to_le_bytes();
        let history = bulk_history(user_id);
        let extra: &'static [SecurityDef] = if history.is_some() {
            BULK_SECURITIES
        } else {
            &[]
        };
        let securities: Vec<&'static SecurityDef> = SECURITIES.iter().chain(extra).collect();
        let closes = securities
            .iter()
            .map(|security| {
                if security.kind == SecurityKind::Cash {
                    return Dec::new(security.base_price, 4);
                }
                let mut rng = SplitMix64::seeded(&[
                    b"close",
                    &seed.to_le_bytes(),
                    &day,
                    security.key.as_bytes(),
                ]);
                // Within ±10% of the reference price.
                let factor = i128::from(rng.between(9_000, 11_000));
                Dec::new(security.base_price * factor / 10_000, 4)
            })
            .collect();
        Self {
            seed,
            user_id,
            anchor,
            prices_as_of: previous_weekday(anchor),
            rng: SplitMix64::seeded(&[b"user", &seed.to_le_bytes(), user_id.as_bytes()]),
            history,
            securities,
            closes,
            pending_held: Dec::new(0, 2),
        }
    }

    /// An id that depends only on the inputs and what it names, so it is stable even if
    /// the draws before it change.
    fn stable_id(&self, prefix: &str, kind: &str, index: u64) -> String {
        let digest = stable_hash(&[
            kind.as_bytes(),
            &self.seed.to_le_bytes(),
            self.user_id.as_bytes(),
            &index.to_le_bytes(),
        ]);
        format!("{prefix}{}", hex::encode(&digest[..10]))
    }

    fn run(mut self) -> Portfolio {
        let mut plans = self.plan_accounts();
        let mut holdings = Vec::new();
        for plan in &mut plans {
            if plan.kind.is_investment() {
                holdings.extend(self.holdings_for(plan));
            }
        }
        let transactions = self.transactions(&plans);
        let accounts = plans.iter().map(|plan| self.account(plan)).collect();
        Portfolio {
            accounts,
            holdings,
            transactions,
        }
    }

    fn plan_accounts(&mut self) -> Vec<PlannedAccount> {
        let mut kinds = vec![AccountKind::Brokerage];
        if self.history.is_some() {
            kinds.push(AccountKind::Ira);
        } else if self.rng.below(2) == 1 {
            kinds.push(if self.rng.below(2) == 0 {
                AccountKind::Ira
            } else {
                AccountKind::Roth
            });
        }
        kinds.push(if self.rng.below(2) == 0 {
            AccountKind::Checking
        } else {
            AccountKind::Savings
        });
        kinds
            .into_iter()
            .enumerate()
            .map(|(index, kind)| {
                // Investment accounts are in dollars; the cash account is mostly dollars too.
                let currency = if kind.is_investment() {
                    "USD"
                } else {
                    *self.rng.pick(&["USD", "USD", "EUR", "GBP"])
                };
                PlannedAccount {
                    id: self.stable_id("mer_acc_", "account", index as u64),
                    kind,
                    currency,
                    positions: Vec::new(),
                    invested: Dec::new(0, 2),
                    swept: None,
                }
            })
            .collect()
    }

    /// 3–6 positions; a brokerage account always keeps part of them in the cash sweep.
    fn holdings_for(&mut self, plan: &mut PlannedAccount) -> Vec<Holding> {
        let kind = plan.kind;
        let count = if self.history.is_some() {
            BULK_POSITIONS
        } else {
            self.rng.between(3, 6) as usize
        };
        let securities = &self.securities;
        let mut pool: Vec<usize> = (0..securities.len())
            .filter(|&i| securities[i].kind != SecurityKind::Cash)
            .collect();
        let wanted = if kind == AccountKind::Brokerage {
            count - 1
        } else {
            count
        };
        // Partial Fisher–Yates: the first `wanted` entries become a uniform sample.
        for slot in 0..wanted {
            let swap = slot + self.rng.below((pool.len() - slot) as u64) as usize;
            pool.swap(slot, swap);
        }
        let mut positions = pool[..wanted].to_vec();
        positions.sort_unstable();
        let mut chosen = positions.clone();
        if kind == AccountKind::Brokerage {
            chosen.extend(
                (0..securities.len()).filter(|&i| securities[i].kind == SecurityKind::Cash),
            );
        }
        plan.positions = positions;
        chosen
            .into_iter()
            .map(|index| self.holding(plan, index))
            .collect()
    }

    fn holding(&mut self, plan: &mut PlannedAccount, index: usize) -> Holding {
        let def = self.securities[index];
        let price = self.closes[index];
        let quantity = match def.kind {
            SecurityKind::Cash => Dec::from_u64(self.rng.between(10_000, 2_500_000), 2),
            SecurityKind::FixedIncome => Dec::from_u64(self.rng.between(5, 50), 0),
            _ => self.fractional_quantity(1, 400),
        };
        let quantity = settle_quantity(quantity, price);
        let value = quantity.mul_round(price, 2);
        let cost_basis = if def.kind == SecurityKind::Cash {
            value
        } else {
            value.mul_round(Dec::from_u64(self.rng.between(7_000, 12_000), 4), 2)
        };
        if def.currency == plan.currency {
            plan.invested = plan.invested.add(value);
        }
        if def.kind == SecurityKind::Cash {
            plan.swept = Some(value);
        }
        Holding {
            account_id: plan.id.clone(),
            security: self.security(index),
            quantity: quantity.to_string(),
            cost_basis: cost_basis.to_string(),
            institution_price: price.to_string(),
            institution_price_as_of: self.prices_as_of,
            institution_value: value.to_string(),
            iso_currency_code: def.currency.to_owned(),
        }
    }

    fn security(&self, index: usize) -> Security {
        let def = self.securities[index];
        Security {
            security_id: format!("mer_sec_{}", def.key),
            ticker_symbol: def.ticker.to_owned(),
            cusip: def.cusip.map(str::to_owned),
            isin: def.isin.map(str::to_owned),
            name: def.name.to_owned(),
            security_type: def.kind.as_str().to_owned(),
            iso_currency_code: def.currency.to_owned(),
            close_price: self.closes[index].to_string(),
            close_price_as_of: self.prices_as_of,
        }
    }

    /// A share count with nine decimals, the last one never zero, so every digit matters.
    fn fractional_quantity(&mut self, whole_low: u64, whole_high: u64) -> Dec {
        let whole = self.rng.between(whole_low, whole_high);
        let fraction = self.rng.below(100_000_000) * 10 + self.rng.between(1, 9);
        Dec::from_u64(whole * 1_000_000_000 + fraction, 9)
    }

    fn transactions(&mut self, plans: &[PlannedAccount]) -> Vec<Transaction> {
        let total = match self.history {
            Some(history) => history,
            None => self.rng.between(20, 40) as usize,
        };
        // Fixed entries first so every user shows each case; the rest is a random mix.
        let mut planned = vec![
            TxnPlan::Pending,
            TxnPlan::Pending,
            TxnPlan::PostedFromPending,
        ];
        planned.extend(InvestmentKind::ALL.map(TxnPlan::Investment));
        while planned.len() < total {
            planned.push(if self.rng.below(2) == 0 {
                TxnPlan::Cash
            } else {
                TxnPlan::Investment(*self.rng.pick(&[
                    InvestmentKind::Buy,
                    InvestmentKind::Buy,
                    InvestmentKind::Buy,
                    InvestmentKind::Sell,
                    InvestmentKind::Dividend,
                    InvestmentKind::Dividend,
                    InvestmentKind::Fee,
                    InvestmentKind::Deposit,
                ]))
            });
        }
        let cash_account = plans.iter().find(|plan| !plan.kind.is_investment());
        let investment_accounts: Vec<&PlannedAccount> = plans
            .iter()
            .filter(|plan| plan.kind.is_investment())
            .collect();
        let mut transactions: Vec<Transaction> = planned
            .into_iter()
            .enumerate()
            .filter_map(|(index, plan)| {
                let id = self.stable_id("mer_txn_", "transaction", index as u64);
                match plan {
                    TxnPlan::Investment(kind) => {
                        let account = *self.rng.pick(&investment_accounts);
                        Some(self.investment_transaction(id, account, kind))
                    }
                    TxnPlan::Cash | TxnPlan::Pending | TxnPlan::PostedFromPending => {
                        cash_account.map(|account| self.cash_transaction(id, account, plan))
                    }
                }
            })
            .collect();
        transactions.sort_by(|a, b| {
            b.date
                .cmp(&a.date)
                .then_with(|| a.transaction_id.cmp(&b.transaction_id))
        });
        transactions
    }

    fn cash_transaction(
        &mut self,
        id: String,
        account: &PlannedAccount,
        plan: TxnPlan,
    ) -> Transaction {
        let merchant = if plan == TxnPlan::Cash {
            self.rng.pick(MERCHANTS)
        } else {
            // Pending activity is card spending, not payroll or interest.
            let spending: Vec<&Merchant> = MERCHANTS.iter().filter(|m| !m.inflow).collect();
            *self.rng.pick(&spending)
        };
        let cents = self.rng.between(merchant.cents.0, merchant.cents.1);
        let extra = merchant.decimals.saturating_sub(2);
        let units = cents * 10u64.pow(extra) + self.rng.below(10u64.pow(extra));
        let amount = Dec::from_u64(units, merchant.decimals);
        let (date, pending, pending_transaction_id) = match plan {
            TxnPlan::Pending => {
                self.pending_held = self.pending_held.add(amount);
                (days_before(self.anchor, self.rng.between(1, 3)), true, None)
            }
            TxnPlan::PostedFromPending => (
                days_before(self.anchor, self.rng.between(4, 7)),
                false,
                // Named like a transaction id but never listed: the institution dropped it when it posted.
                Some(self.stable_id("mer_txn_", "posted-pending", 0)),
            ),
            _ => (
                days_before(self.anchor, self.rng.between(1, HISTORY_DAYS)),
                false,
                None,
            ),
        };
        Transaction {
            transaction_id: id,
            account_id: account.id.clone(),
            amount: if merchant.inflow {
                amount.neg()
            } else {
                amount
            }
            .to_string(),
            iso_currency_code: account.currency.to_owned(),
            date,
            pending,
            pending_transaction_id,
            name: merchant.name.to_owned(),
            category: merchant.category.map(str::to_owned),
            investment_type: None,
            security_id: None,
            quantity: None,
            price: None,
        }
    }

    fn investment_transaction(
        &mut self,
        id: String,
        account: &PlannedAccount,
        kind: InvestmentKind,
    ) -> Transaction {
        let date = days_before(self.anchor, self.rng.between(1, HISTORY_DAYS));
        let mut transaction = Transaction {
            transaction_id: id,
            account_id: account.id.clone(),
            amount: String::new(),
            iso_currency_code: account.currency.to_owned(),
            date,
            pending: false,
            pending_transaction_id: None,
            name: String::new(),
            category: None,
            investment_type: Some(kind.as_str().to_owned()),
            security_id: None,
            quantity: None,
            price: None,
        };
        match kind {
            InvestmentKind::Buy | InvestmentKind::Sell | InvestmentKind::Dividend => {
                let index = *self.rng.pick(&account.positions);
                let def = self.securities[index];
                transaction.security_id = Some(format!("mer_sec_{}", def.key));
                transaction.iso_currency_code = def.currency.to_owned();
                if kind == InvestmentKind::Dividend {
                    let label = if def.kind == SecurityKind::FixedIncome {
                        "INTEREST"
                    } else {
                        "DIVIDEND"
                    };
                    transaction.name = format!("{label} {}", def.ticker);
                    transaction.category = Some("Investment:Dividend".to_owned());
                    // Reinvestable income is reported in fractions of a cent: 4–6 decimals.
                    let decimals = self.rng.between(4, 6) as u32;
                    let cents = self.rng.between(100, 50_000);
                    let extra = 10u64.pow(decimals - 2);
                    transaction.amount =
                        Dec::from_u64(cents * extra + self.rng.below(extra), decimals)
                            .neg()
                            .to_string();
                } else {
                    let price = self.closes[index]
                        .mul_round(Dec::from_u64(self.rng.between(9_500, 10_500), 4), 4);
                    let quantity = match def.kind {
                        SecurityKind::FixedIncome => Dec::from_u64(self.rng.between(1, 10), 0),
                        _ => self.fractional_quantity(0, 40),
                    };
                    let quantity = settle_quantity(quantity, price);
                    let amount = quantity.mul_round(price, 2);
                    let (verb, quantity, amount) = if kind == InvestmentKind::Buy {
                        ("BUY", quantity, amount)
                    } else {
                        ("SELL", quantity.neg(), amount.neg())
                    };
                    transaction.name = format!("{verb} {}", def.ticker);
                    transaction.category = Some("Investment:Trade".to_owned());
                    transaction.quantity = Some(quantity.to_string());
                    transaction.price = Some(price.to_string());
                    transaction.amount = amount.to_string();
                }
            }
            InvestmentKind::Fee => {
                transaction.name = "MERIDIAN ADVISORY FEE".to_owned();
                transaction.category = Some("Bank Fees".to_owned());
                transaction.amount = Dec::from_u64(self.rng.between(100, 2_500), 2).to_string();
            }
            InvestmentKind::Deposit => {
                transaction.name = "ACH DEPOSIT FROM LINKED BANK".to_owned();
                transaction.category = Some("Transfer:Deposit".to_owned());
                transaction.amount = Dec::from_u64(self.rng.between(10_000, 1_000_000), 2)
                    .neg()
                    .to_string();
            }
            InvestmentKind::Withdrawal => {
                transaction.name = "ACH WITHDRAWAL TO LINKED BANK".to_owned();
                transaction.category = Some("Transfer:Withdrawal".to_owned());
                transaction.amount = Dec::from_u64(self.rng.between(5_000, 500_000), 2).to_string();
            }
        }
        transaction
    }

    fn account(&mut self, plan: &PlannedAccount) -> Account {
        let (name, official_name) = plan.kind.names();
        let (name, official_name) = if plan.currency == "USD" {
            (name.to_owned(), official_name.to_owned())
        } else {
            (
                format!("{name} ({})", plan.currency),
                format!("{official_name} ({})", plan.currency),
            )
        };
        let mask = format!("{:04}", self.rng.below(10_000));
        let (current, available) = match plan.kind {
            // Positions in another currency are reported in that currency, not converted in.
            AccountKind::Brokerage => (plan.invested, Some(plan.swept.unwrap_or(Dec::new(0, 2)))),
            AccountKind::Ira | AccountKind::Roth => (plan.invested, None),
            AccountKind::Checking | AccountKind::Savings => {
                let current = if self.user_id == EXTREME_BALANCE_USER {
                    // 10^16 .. 2×10^16 with cents: above 10^15 and beyond f64's exact integers.
                    Dec::from_u64(
                        1_000_000_000_000_000_000 + self.rng.below(1_000_000_000_000_000_000),
                        2,
                    )
                } else {
                    Dec::from_u64(self.rng.between(25_000, 4_800_000), 2)
                };
                (current, Some(current.add(self.pending_held.neg())))
            }
        };
        Account {
            account_id: plan.id.clone(),
            name,
            official_name,
            account_type: if plan.kind.is_investment() {
                "investment"
            } else {
                "depository"
            }
            .to_owned(),
            subtype: plan.kind.subtype().to_owned(),
            mask,
            balances: Balances {
                current: current.to_string(),
                available: available.map(|d| d.to_string()),
                iso_currency_code: plan.currency.to_owned(),
            },
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TxnPlan {
    Cash,
    Pending,
    PostedFromPending,
    Investment(InvestmentKind),
}

/// Nudges a quantity off exact half-cent products (and keeps a nine-decimal quantity's last
/// digit non-zero), so the value is the same under every rounding mode a consumer might use.
fn settle_quantity(mut quantity: Dec, price: Dec) -> Dec {
    while quantity.mul_is_tie(price, 2) || (quantity.scale == 9 && quantity.units % 10 == 0) {
        quantity.units += 1;
    }
    quantity
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    const SEED: u64 = 42;
    const DEMO_USERS: [&str; 3] = ["demo-alice", "demo-bob", "demo-carol"];

    fn anchor() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, 20).expect("valid date")
    }

    /// Exact decimal text as integer units of `10^-scale`, parsed independently of `Dec`.
    fn units(text: &str, scale: u32) -> i128 {
        let (negative, digits) = text
            .strip_prefix('-')
            .map_or((false, text), |rest| (true, rest));
        let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
        assert!(
            fraction.len() <= scale as usize,
            "{text} has more than {scale} decimals"
        );
        let padded = format!("{whole}{fraction:0<width$}", width = scale as usize);
        let value: i128 = padded.parse().expect("digits");
        if negative { -value } else { value }
    }

    #[test]
    fn the_same_inputs_give_byte_identical_json() {
        for user in DEMO_USERS {
            let first = serde_json::to_string(&portfolio(SEED, anchor(), user)).expect("json");
            let second = serde_json::to_string(&portfolio(SEED, anchor(), user)).expect("json");
            assert_eq!(first, second);
        }
    }

    #[test]
    fn bulk_users_have_three_accounts_thirty_holdings_and_their_history() {
        for (user, history, records) in [
            ("bulk-0001", BULK_TRANSACTIONS, BULK_RECORDS),
            ("bulk-0002", BULK_TRANSACTIONS, BULK_RECORDS),
            ("bulkdeep-0001", DEEP_BULK_TRANSACTIONS, DEEP_BULK_RECORDS),
        ] {
            let data = portfolio(SEED, anchor(), user);
            assert_eq!(data.accounts.len(), 3, "{user}");
            assert_eq!(data.holdings.len(), 30, "{user}");
            assert_eq!(data.transactions.len(), history, "{user}");
            assert_eq!(
                data.accounts.len() + data.holdings.len() + data.transactions.len(),
                records
            );
            let ids: HashSet<&str> = data
                .transactions
                .iter()
                .map(|t| t.transaction_id.as_str())
                .collect();
            assert_eq!(ids.len(), history, "ids are unique");
            let held: HashSet<(&str, &str)> = data
                .holdings
                .iter()
                .map(|h| (h.account_id.as_str(), h.security.security_id.as_str()))
                .collect();
            assert_eq!(held.len(), 30, "one holding per account and security");
            // They move with the world like everyone else's data, ten new
            // transactions an epoch.
            let next = epochs::portfolio_at(SEED, anchor(), user, 1);
            let before: HashSet<&str> = ids.iter().copied().collect();
            let new = next
                .transactions
                .iter()
                .filter(|t| {
                    !before.contains(t.transaction_id.as_str())
                        && t.pending_transaction_id.is_none()
                })
                .count();
            assert_eq!(new as u64, BULK_NEW_PER_EPOCH, "{user}");
            let later = epochs::portfolio_at(SEED, anchor(), user, 4);
            assert_ne!(later.transactions, data.transactions);
        }
        // Other users are untouched by the bulk securities.
        for user in DEMO_USERS {
            assert!(portfolio(SEED, anchor(), user).holdings.iter().all(|h| {
                SECURITIES
                    .iter()
                    .any(|s| format!("mer_sec_{}", s.key) == h.security.security_id)
            }));
        }
    }

    #[test]
    fn users_and_seeds_get_different_data() {
        let alice = portfolio(SEED, anchor(), "demo-alice");
        assert_ne!(alice, portfolio(SEED, anchor(), "demo-bob"));
        assert_ne!(alice, portfolio(SEED + 1, anchor(), "demo-alice"));
        let bob_ids: HashSet<String> = portfolio(SEED, anchor(), "demo-bob")
            .accounts
            .into_iter()
            .map(|a| a.account_id)
            .collect();
        assert!(
            alice
                .accounts
                .iter()
                .all(|a| !bob_ids.contains(&a.account_id))
        );
    }

    #[test]
    fn institution_value_is_quantity_times_price_rounded_to_cents() {
        for user in DEMO_USERS.into_iter().chain(["zoe", "test-7"]) {
            for holding in portfolio(SEED, anchor(), user).holdings {
                let product = units(&holding.quantity, 9) * units(&holding.institution_price, 4);
                let (cents, remainder) = (product / 10i128.pow(11), product % 10i128.pow(11));
                assert_ne!(
                    remainder * 2,
                    10i128.pow(11),
                    "half-cent tie in {holding:?}"
                );
                let rounded = cents + i128::from(remainder * 2 > 10i128.pow(11));
                assert_eq!(units(&holding.institution_value, 2), rounded, "{holding:?}");
                assert_eq!(
                    holding
                        .institution_value
                        .split_once('.')
                        .map(|(_, f)| f.len()),
                    Some(2)
                );
            }
        }
    }

    #[test]
    fn each_user_has_the_documented_shape() {
        for user in DEMO_USERS {
            let data = portfolio(SEED, anchor(), user);
            assert!((2..=3).contains(&data.accounts.len()), "{user}");
            assert!((20..=40).contains(&data.transactions.len()), "{user}");
            for account in data
                .accounts
                .iter()
                .filter(|a| a.account_type == "investment")
            {
                let held = data
                    .holdings
                    .iter()
                    .filter(|h| h.account_id == account.account_id)
                    .count();
                assert!((3..=6).contains(&held), "{user}: {held} holdings");
            }
            let nano = data.holdings.iter().any(|h| {
                h.quantity
                    .split_once('.')
                    .is_some_and(|(_, f)| f.len() == 9)
            });
            assert!(nano, "{user} has a quantity with nine decimals");

            let window = days_before(anchor(), HISTORY_DAYS)..anchor();
            assert!(data.transactions.iter().all(|t| window.contains(&t.date)));
            assert!(
                data.transactions
                    .windows(2)
                    .all(|pair| pair[0].date >= pair[1].date)
            );
            assert_eq!(
                data.transactions.iter().filter(|t| t.pending).count(),
                2,
                "{user}"
            );

            let ids: HashSet<&str> = data
                .transactions
                .iter()
                .map(|t| t.transaction_id.as_str())
                .collect();
            assert_eq!(ids.len(), data.transactions.len());
            let posted: Vec<&Transaction> = data
                .transactions
                .iter()
                .filter(|t| t.pending_transaction_id.is_some())
                .collect();
            assert_eq!(posted.len(), 1);
            assert!(!posted[0].pending);
            assert!(
                posted[0]
                    .pending_transaction_id
                    .as_deref()
                    .is_some_and(|id| !ids.contains(id))
            );
        }
    }

    #[test]
    fn exactness_is_exercised() {
        let huge = |user: &str| {
            portfolio(SEED, anchor(), user)
                .accounts
                .iter()
                .any(|a| units(&a.balances.current, 2) > 10i128.pow(15 + 2))
        };
        assert!(
            huge(EXTREME_BALANCE_USER),
            "the persona has a balance above 10^15"
        );
        assert!(
            !DEMO_USERS.iter().any(|user| huge(user)),
            "demo clients look like real clients"
        );
        let all: Vec<Portfolio> = DEMO_USERS
            .map(|user| portfolio(SEED, anchor(), user))
            .into();
        let long_amounts = all.iter().flat_map(|p| &p.transactions).any(|t| {
            t.amount
                .split_once('.')
                .is_some_and(|(_, fraction)| (4..=6).contains(&fraction.len()))
        });
        assert!(long_amounts);
        let currencies: HashSet<&str> = all
            .iter()
            .flat_map(|p| &p.holdings)
            .map(|h| h.iso_currency_code.as_str())
            .collect();
        assert!(currencies.contains("EUR") && currencies.contains("USD"));
    }

    #[test]
    fn json_numbers_keep_every_digit() {
        let alice = portfolio(SEED, anchor(), "demo-alice");
        let json = serde_json::to_string(&alice).expect("json");
        for account in &alice.accounts {
            assert!(json.contains(&format!("\"current\":{},", account.balances.current)));
        }
        let value: serde_json::Value = serde_json::from_str(&json).expect("parse");
        assert!(value["holdings"][0]["quantity"].is_number());
        assert_eq!(
            value["holdings"][0]["quantity"].to_string(),
            alice.holdings[0].quantity
        );
    }

    #[test]
    fn security_identifiers_have_valid_check_digits() {
        fn luhn_digits(values: impl Iterator<Item = u32>, double_first: bool) -> u32 {
            let digits: Vec<u32> = values.collect();
            let sum: u32 = digits
                .iter()
                .rev()
                .enumerate()
                .map(|(i, &d)| {
                    if (i % 2 == 0) == double_first {
                        let x = d * 2;
                        x / 10 + x % 10
                    } else {
                        d
                    }
                })
                .sum();
            (10 - sum % 10) % 10
        }
        let value = |c: char| c.to_digit(36).expect("alphanumeric");
        for def in SECURITIES {
            if let Some(cusip) = def.cusip {
                // CUSIP: each character's value, every second one doubled, digit sums added.
                let sum: u32 = cusip
                    .chars()
                    .take(8)
                    .enumerate()
                    .map(|(i, c)| {
                        let v = value(c) * if i % 2 == 1 { 2 } else { 1 };
                        v / 10 + v % 10
                    })
                    .sum();
                assert_eq!(
                    (10 - sum % 10) % 10,
                    value(cusip.chars().nth(8).expect("nine chars")),
                    "{cusip}"
                );
            }
            if let Some(isin) = def.isin {
                // ISIN: letters expand to two digits, then Luhn.
                let expanded: String = isin
                    .chars()
                    .take(11)
                    .map(|c| value(c).to_string())
                    .collect();
                let check = luhn_digits(expanded.chars().filter_map(|c| c.to_digit(10)), true);
                assert_eq!(
                    check,
                    value(isin.chars().nth(11).expect("twelve chars")),
                    "{isin}"
                );
            }
        }
    }

    #[test]
    fn decimals_print_and_round_exactly() {
        assert_eq!(Dec::new(-5, 2).to_string(), "-0.05");
        assert_eq!(Dec::new(1_234_500, 4).to_string(), "123.4500");
        assert_eq!(Dec::new(7, 0).to_string(), "7");
        assert_eq!(
            Dec::new(1_005, 3).mul_round(Dec::new(1, 0), 2),
            Dec::new(101, 2)
        );
        assert_eq!(
            Dec::new(-1_005, 3).mul_round(Dec::new(1, 0), 2),
            Dec::new(-101, 2)
        );
        assert!(Dec::new(1_005, 3).mul_is_tie(Dec::new(1, 0), 2));
    }
}
