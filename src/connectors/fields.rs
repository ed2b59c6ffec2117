//! The catalogue of canonical fields a connector can fill, per endpoint: their kind
//! (which decides how a value is converted) and whether a mapping is required.

use crate::domain::{AccountType, BalanceMeaning, InvestmentType, SecurityType, TransactionStatus};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Text,
    Decimal,
    Date,
    DateTime,
    Currency,
    /// One of a closed vocabulary; `map` translates the institution's words to these.
    Enum(&'static [&'static str]),
}

#[derive(Debug, Clone, Copy)]
pub struct FieldDef {
    pub name: &'static str,
    pub kind: Kind,
    pub required: bool,
}

const fn req(name: &'static str, kind: Kind) -> FieldDef {
    FieldDef {
        name,
        kind,
        required: true,
    }
}

const fn opt(name: &'static str, kind: Kind) -> FieldDef {
    FieldDef {
        name,
        kind,
        required: false,
    }
}

pub const ACCOUNT: &[FieldDef] = &[
    req("external_id", Kind::Text),
    req("account_type", Kind::Enum(AccountType::ALL)),
    opt("subtype", Kind::Text),
    req("name", Kind::Text),
    opt("official_name", Kind::Text),
    opt("mask", Kind::Text),
    req("currency", Kind::Currency),
    req("balance_current", Kind::Decimal),
    opt("balance_available", Kind::Decimal),
    opt("balance_cash", Kind::Decimal),
    opt("balance_meaning", Kind::Enum(BalanceMeaning::ALL)),
    opt("balance_as_of", Kind::DateTime),
];

/// What a per-account details endpoint may fill: every account field but the id,
/// which the accounts list gives; none is required there.
pub const ACCOUNT_DETAILS: &[FieldDef] = &[
    opt("account_type", Kind::Enum(AccountType::ALL)),
    opt("subtype", Kind::Text),
    opt("name", Kind::Text),
    opt("official_name", Kind::Text),
    opt("mask", Kind::Text),
    opt("currency", Kind::Currency),
    opt("balance_current", Kind::Decimal),
    opt("balance_available", Kind::Decimal),
    opt("balance_cash", Kind::Decimal),
    opt("balance_meaning", Kind::Enum(BalanceMeaning::ALL)),
    opt("balance_as_of", Kind::DateTime),
];

pub const HOLDING: &[FieldDef] = &[
    req("account_external_id", Kind::Text),
    req("security_external_id", Kind::Text),
    req("quantity", Kind::Decimal),
    req("currency", Kind::Currency),
    opt("cost_basis", Kind::Decimal),
    opt("price", Kind::Decimal),
    opt("value", Kind::Decimal),
    opt("as_of", Kind::Date),
];

pub const SECURITY: &[FieldDef] = &[
    opt("external_id", Kind::Text),
    opt("ticker", Kind::Text),
    opt("cusip", Kind::Text),
    opt("isin", Kind::Text),
    opt("sedol", Kind::Text),
    opt("figi", Kind::Text),
    req("name", Kind::Text),
    req("security_type", Kind::Enum(SecurityType::ALL)),
    req("currency", Kind::Currency),
    opt("price", Kind::Decimal),
    opt("price_as_of", Kind::Date),
];

pub const TRANSACTION: &[FieldDef] = &[
    req("external_id", Kind::Text),
    req("account_external_id", Kind::Text),
    req("amount", Kind::Decimal),
    req("currency", Kind::Currency),
    req("date", Kind::Date),
    opt("status", Kind::Enum(TransactionStatus::ALL)),
    opt("pending_external_id", Kind::Text),
    req("description", Kind::Text),
    opt("category", Kind::Text),
    opt("investment_type", Kind::Enum(InvestmentType::ALL)),
    opt("security_external_id", Kind::Text),
    opt("quantity", Kind::Decimal),
    opt("price", Kind::Decimal),
];
