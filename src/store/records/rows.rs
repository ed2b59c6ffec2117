//! Conversions between canonical records and their rows, exact both ways (money
//! as stored decimals beside its currency).

use chrono::Utc;
use sea_orm::{NotSet, Set};

use crate::domain::{Account, Balances, Currency, Holding, Money, Security, Transaction};
use crate::store::entities::{account, holding, security, transaction};
use crate::store::instruments::Matched;
use crate::store::{DbDecimal, StoreError};

pub(super) fn corrupt(what: &str, value: &str) -> StoreError {
    StoreError::Corrupt(format!("{what} `{value}`"))
}

pub(super) fn currency(value: &str) -> Result<Currency, StoreError> {
    value.parse().map_err(|_| corrupt("currency", value))
}

pub(super) fn account_row(
    conn: &str,
    id: String,
    a: &Account,
    now: chrono::DateTime<Utc>,
) -> account::ActiveModel {
    account::ActiveModel {
        id: Set(id),
        connection_id: Set(conn.to_owned()),
        external_id: Set(a.external_id.clone()),
        account_type: Set(a.account_type.to_string()),
        subtype: Set(a.subtype.clone()),
        name: Set(a.name.clone()),
        official_name: Set(a.official_name.clone()),
        mask: Set(a.mask.clone()),
        currency: Set(a.currency.to_string()),
        balance_current: Set(a.balances.current.amount.into()),
        balance_available: Set(a.balances.available.map(|m| m.amount.into())),
        balance_cash: Set(a.balances.cash.map(|m| m.amount.into())),
        balance_meaning: Set(a.balances.meaning.to_string()),
        balance_as_of: Set(a.balances.as_of),
        updated_at: Set(now),
        // The account's fetch state is the sync's to record, not the record's.
        refreshed_at: NotSet,
        fetch_failed_at: NotSet,
        fetch_failure: NotSet,
    }
}

pub(super) fn account_from_row(r: &account::Model) -> Result<Account, StoreError> {
    let currency = currency(&r.currency)?;
    Ok(Account {
        external_id: r.external_id.clone(),
        account_type: r
            .account_type
            .parse()
            .map_err(|_| corrupt("account type", &r.account_type))?,
        subtype: r.subtype.clone(),
        name: r.name.clone(),
        official_name: r.official_name.clone(),
        mask: r.mask.clone(),
        currency,
        balances: Balances {
            current: Money::new(r.balance_current.0, currency),
            available: r.balance_available.map(|d| Money::new(d.0, currency)),
            cash: r.balance_cash.map(|d| Money::new(d.0, currency)),
            meaning: r
                .balance_meaning
                .parse()
                .map_err(|_| corrupt("balance meaning", &r.balance_meaning))?,
            as_of: r.balance_as_of,
        },
    })
}

pub(super) fn security_row(
    conn: &str,
    id: String,
    s: &Security,
    matched: &Matched,
    now: chrono::DateTime<Utc>,
) -> security::ActiveModel {
    security::ActiveModel {
        id: Set(id),
        connection_id: Set(conn.to_owned()),
        external_id: Set(s.external_id.clone()),
        ticker: Set(s.ticker.clone()),
        cusip: Set(s.cusip.clone()),
        isin: Set(s.isin.clone()),
        sedol: Set(s.sedol.clone()),
        figi: Set(s.figi.clone()),
        name: Set(s.name.clone()),
        security_type: Set(s.security_type.to_string()),
        currency: Set(s.currency.to_string()),
        price: Set(s.price.map(DbDecimal)),
        price_as_of: Set(s.price_as_of),
        updated_at: Set(now),
        instrument_id: Set(matched.instrument_id.clone()),
        matched_by: Set(Some(matched.matched_by.clone())),
        identifier_issues: Set(matched.identifier_issues.clone()),
    }
}

pub(in crate::store) fn security_from_row(r: &security::Model) -> Result<Security, StoreError> {
    Ok(Security {
        external_id: r.external_id.clone(),
        ticker: r.ticker.clone(),
        cusip: r.cusip.clone(),
        isin: r.isin.clone(),
        sedol: r.sedol.clone(),
        figi: r.figi.clone(),
        name: r.name.clone(),
        security_type: r
            .security_type
            .parse()
            .map_err(|_| corrupt("security type", &r.security_type))?,
        currency: currency(&r.currency)?,
        price: r.price.map(|d| d.0),
        price_as_of: r.price_as_of,
    })
}

pub(super) fn holding_row(
    conn: &str,
    id: String,
    h: &Holding,
    now: chrono::DateTime<Utc>,
) -> holding::ActiveModel {
    // A holding's amounts share one currency; the canonical record carries it on each.
    let currency = [&h.price, &h.value, &h.cost_basis]
        .into_iter()
        .flatten()
        .map(|m| m.currency.to_string())
        .next()
        .unwrap_or_default();
    holding::ActiveModel {
        id: Set(id),
        connection_id: Set(conn.to_owned()),
        external_id: Set(h.external_id()),
        account_external_id: Set(h.account_external_id.clone()),
        security_external_id: Set(h.security_external_id.clone()),
        quantity: Set(h.quantity.into()),
        cost_basis: Set(h.cost_basis.map(|m| m.amount.into())),
        price: Set(h.price.map(|m| m.amount.into())),
        value: Set(h.value.map(|m| m.amount.into())),
        currency: Set(currency),
        as_of: Set(h.as_of),
        updated_at: Set(now),
    }
}

pub(super) fn holding_from_row(r: &holding::Model) -> Result<Holding, StoreError> {
    let money = |d: Option<DbDecimal>| -> Result<Option<Money>, StoreError> {
        d.map(|d| Ok(Money::new(d.0, currency(&r.currency)?)))
            .transpose()
    };
    Ok(Holding {
        account_external_id: r.account_external_id.clone(),
        security_external_id: r.security_external_id.clone(),
        quantity: r.quantity.0,
        cost_basis: money(r.cost_basis)?,
        price: money(r.price)?,
        value: money(r.value)?,
        as_of: r.as_of,
    })
}

pub(super) fn transaction_row(
    conn: &str,
    id: String,
    t: &Transaction,
    now: chrono::DateTime<Utc>,
) -> transaction::ActiveModel {
    transaction::ActiveModel {
        id: Set(id),
        connection_id: Set(conn.to_owned()),
        external_id: Set(t.external_id.clone()),
        account_external_id: Set(t.account_external_id.clone()),
        amount: Set(t.amount.amount.into()),
        currency: Set(t.amount.currency.to_string()),
        date: Set(t.date),
        status: Set(t.status.to_string()),
        pending_external_id: Set(t.pending_external_id.clone()),
        description: Set(t.description.clone()),
        category: Set(t.category.clone()),
        investment_type: Set(t.investment_type.map(|i| i.to_string())),
        security_external_id: Set(t.security_external_id.clone()),
        quantity: Set(t.quantity.map(DbDecimal)),
        price: Set(t.price.map(DbDecimal)),
        updated_at: Set(now),
        // The user's tags and note: never the institution's to write.
        ..Default::default()
    }
}

pub(in crate::store) fn transaction_from_row(
    r: &transaction::Model,
) -> Result<Transaction, StoreError> {
    Ok(Transaction {
        external_id: r.external_id.clone(),
        account_external_id: r.account_external_id.clone(),
        amount: Money::new(r.amount.0, currency(&r.currency)?),
        date: r.date,
        status: r
            .status
            .parse()
            .map_err(|_| corrupt("transaction status", &r.status))?,
        pending_external_id: r.pending_external_id.clone(),
        description: r.description.clone(),
        category: r.category.clone(),
        investment_type: r
            .investment_type
            .as_deref()
            .map(|i| i.parse().map_err(|_| corrupt("investment type", i)))
            .transpose()?,
        security_external_id: r.security_external_id.clone(),
        quantity: r.quantity.map(|d| d.0),
        price: r.price.map(|d| d.0),
    })
}
