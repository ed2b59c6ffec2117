//! Canonical records. The connector engine produces these from an institution's JSON;
//! the store keeps them; the read API serves them. Every record carries the
//! institution's own id, which together with the connection is its identity.

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::money::{Currency, Money};

/// Declares a closed vocabulary: its wire names, parsing and display in one place.
macro_rules! vocabulary {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(
            Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash,
            ::serde::Serialize, ::serde::Deserialize,
        )]
        pub enum $name {
            $($(#[$vdoc])* #[serde(rename = $text)] $variant),+
        }

        impl $name {
            pub const ALL: &'static [&'static str] = &[$($text),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text),+
                }
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = String;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok(Self::$variant),)+
                    other => Err(format!(
                        "`{other}` is not one of: {}",
                        Self::ALL.join(", ")
                    )),
                }
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

pub(super) use vocabulary;

vocabulary!(
    /// Where a connection stands; anything but `Active` means syncs are not attempted.
    ConnectionStatus {
        Pending => "pending",
        Active => "active",
        ReauthRequired => "reauth_required",
        Revoked => "revoked",
        Error => "error",
    }
);

vocabulary!(AccountType {
    Depository => "depository",
    Investment => "investment",
    Credit => "credit",
    Loan => "loan",
    Other => "other",
});

vocabulary!(SecurityType {
    Equity => "equity",
    Etf => "etf",
    MutualFund => "mutual_fund",
    FixedIncome => "fixed_income",
    Option => "option",
    Crypto => "crypto",
    Cash => "cash",
    Other => "other",
});

vocabulary!(
    /// What an account's current balance is worth. Institutions disagree: most
    /// (Plaid, FDX `currentValue`) report the whole account, many private banks
    /// only its cash. Totals follow it so that no position is left out or counted
    /// twice.
    BalanceMeaning {
        /// The whole account (cash and every position), in its currency.
        Total => "total",
        /// Cash and the positions valued in the account's currency; positions
        /// valued in another currency are outside it, in their own.
        AccountCurrencyTotal => "account_currency_total",
        /// Cash only: every position is outside it.
        Cash => "cash",
    }
);

vocabulary!(TransactionStatus {
    Pending => "pending",
    Posted => "posted",
});

vocabulary!(InvestmentType {
    Buy => "buy",
    Sell => "sell",
    Dividend => "dividend",
    Interest => "interest",
    Fee => "fee",
    Transfer => "transfer",
    Deposit => "deposit",
    Withdrawal => "withdrawal",
    Split => "split",
    Other => "other",
});

vocabulary!(
    /// What a tenant's webhook endpoint can subscribe to; the names are the wire
    /// names tenants see in payloads and headers.
    WebhookEvent {
        SyncCompleted => "sync.completed",
        ConnectionReauthRequired => "connection.reauth_required",
        ConnectionRepaired => "connection.repaired",
        ConnectionLinked => "connection.linked",
    }
);

vocabulary!(
    /// Where a link session stands: `pending` until a browser opens its link,
    /// `open` while the user is in the link page or at the institution, then one
    /// of the outcomes the app is sent back with, or `expired` when nobody finished.
    LinkSessionStatus {
        Pending => "pending",
        Open => "open",
        Linked => "linked",
        Repaired => "repaired",
        Denied => "denied",
        Failed => "failed",
        Expired => "expired",
    }
);

vocabulary!(
    /// Where one webhook delivery stands: `pending` until it is delivered (a 2xx
    /// answer) or has used up its attempts (`failed`).
    DeliveryStatus {
        Pending => "pending",
        Delivered => "delivered",
        Failed => "failed",
    }
);

/// An institution, as described by its connector file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Institution {
    /// The connector file's stem.
    pub id: String,
    pub name: String,
    pub country: String,
    /// Fingerprint of the connector file in service.
    pub connector_hash: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Balances {
    pub current: Money,
    pub available: Option<Money>,
    /// Cash held in the account outside the positions it lists as holdings, where
    /// the institution reports it apart (FDX's `availableCashBalance`). An account
    /// whose cash is a holding of its own (a sweep fund) has none here.
    pub cash: Option<Money>,
    /// What `current` covers; `total` unless the connector says otherwise.
    pub meaning: BalanceMeaning,
    pub as_of: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub external_id: String,
    pub account_type: AccountType,
    pub subtype: Option<String>,
    pub name: String,
    pub official_name: Option<String>,
    pub mask: Option<String>,
    pub currency: Currency,
    pub balances: Balances,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Security {
    pub external_id: String,
    pub ticker: Option<String>,
    pub cusip: Option<String>,
    pub isin: Option<String>,
    pub sedol: Option<String>,
    pub figi: Option<String>,
    pub name: String,
    pub security_type: SecurityType,
    pub currency: Currency,
    pub price: Option<Decimal>,
    pub price_as_of: Option<NaiveDate>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holding {
    pub account_external_id: String,
    pub security_external_id: String,
    pub quantity: Decimal,
    pub cost_basis: Option<Money>,
    pub price: Option<Money>,
    pub value: Option<Money>,
    pub as_of: Option<NaiveDate>,
}

impl Holding {
    /// Institutions rarely give holdings an id of their own: a position is the pair
    /// (account, security).
    pub fn external_id(&self) -> String {
        format!("{}:{}", self.account_external_id, self.security_external_id)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transaction {
    pub external_id: String,
    pub account_external_id: String,
    /// Normalized sign: money into the account is positive.
    pub amount: Money,
    pub date: NaiveDate,
    pub status: TransactionStatus,
    /// The pending transaction this posted one replaces, by the institution's id.
    pub pending_external_id: Option<String>,
    pub description: String,
    pub category: Option<String>,
    pub investment_type: Option<InvestmentType>,
    pub security_external_id: Option<String>,
    pub quantity: Option<Decimal>,
    pub price: Option<Decimal>,
}

/// Everything one sync fetched for one connection, already normalized.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub accounts: Vec<Account>,
    pub securities: Vec<Security>,
    pub holdings: Vec<Holding>,
    pub transactions: Vec<Transaction>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vocabularies_round_trip_and_explain_rejections() {
        assert_eq!(
            "mutual_fund".parse::<SecurityType>(),
            Ok(SecurityType::MutualFund)
        );
        let err = "bond".parse::<SecurityType>().unwrap_err();
        assert!(err.contains("fixed_income"), "{err}");
        assert_eq!(
            ConnectionStatus::ReauthRequired.to_string(),
            "reauth_required"
        );
    }
}
