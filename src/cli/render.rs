//! Output laid out for a person: a portfolio as tables, amounts aligned, colours
//! only when the output is a terminal.

use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{Attribute, Cell, CellAlignment, Color, ContentArrangement, Table};
use rust_decimal::Decimal;

use crate::domain::Money;
use crate::portfolio::Portfolio;

/// Transactions shown per portfolio.
const SHOWN_TRANSACTIONS: usize = 8;

fn table(headers: &[&str]) -> Table {
    let mut table = Table::new();
    table
        .load_preset(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(
            headers
                .iter()
                .map(|h| Cell::new(h).add_attribute(Attribute::Bold)),
        );
    table
}

fn amount(value: &Money) -> Cell {
    let cell = Cell::new(format!("{} {}", group(value.amount), value.currency))
        .set_alignment(CellAlignment::Right);
    if value.amount.is_sign_negative() {
        cell.fg(Color::Red)
    } else {
        cell
    }
}

fn number(value: Decimal) -> Cell {
    Cell::new(group(value)).set_alignment(CellAlignment::Right)
}

/// `1234567.891` → `1,234,567.891`: every digit kept, thousands grouped.
pub fn group(value: Decimal) -> String {
    let text = value.to_string();
    let (sign, digits) = text
        .strip_prefix('-')
        .map_or(("", text.as_str()), |d| ("-", d));
    let (int, frac) = digits
        .split_once('.')
        .map_or((digits, None), |(i, f)| (i, Some(f)));
    let mut grouped = String::with_capacity(int.len() + int.len() / 3);
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    match frac {
        Some(f) => format!("{sign}{grouped}.{f}"),
        None => format!("{sign}{grouped}"),
    }
}

/// The whole portfolio as text: accounts, positions (one row per instrument, with
/// the accounts holding it), recent transactions, totals.
pub fn portfolio(p: &Portfolio) -> String {
    let mut out = String::new();
    let freshness = match (&p.freshness.as_of, p.freshness.stale) {
        (Some(at), false) => format!("fresh as of {}", at.format("%Y-%m-%d %H:%M:%S UTC")),
        (Some(at), true) => format!(
            "STALE (last good {}): {}",
            at.format("%Y-%m-%d %H:%M:%S UTC"),
            p.freshness.message.as_deref().unwrap_or("")
        ),
        (None, _) => format!(
            "not synced yet: {}",
            p.freshness.message.as_deref().unwrap_or("")
        ),
    };
    out.push_str(&format!("{}  —  {}\n", p.user_id, freshness));

    if p.accounts.is_empty() {
        out.push_str("  (no accounts yet)\n");
        return out;
    }
    let mut accounts = table(&["Account", "Type", "Mask", "Current", "Available"]);
    for a in &p.accounts {
        accounts.add_row(vec![
            Cell::new(&a.name),
            Cell::new(format!(
                "{}{}",
                a.account_type,
                a.subtype
                    .as_deref()
                    .map(|s| format!(" / {s}"))
                    .unwrap_or_default()
            )),
            Cell::new(a.mask.as_deref().unwrap_or("")),
            amount(&a.balances.current),
            a.balances.available.as_ref().map_or_else(
                || Cell::new("—").set_alignment(CellAlignment::Right),
                amount,
            ),
        ]);
    }
    out.push_str(&format!("{accounts}\n"));

    // One row per instrument, however many accounts hold it, saying which.
    let positions = crate::portfolio::positions(p);
    if !positions.positions.is_empty() {
        let mut table = table(&["Position", "Ticker", "ISIN", "Quantity", "Value", "Held in"]);
        for position in &positions.positions {
            let instrument = position.instrument.as_ref();
            let value: Vec<String> = position
                .value
                .iter()
                .map(|m| format!("{} {}", group(m.amount), m.currency))
                .collect();
            let held_in: Vec<String> = if position.holdings.len() == 1 {
                vec![position.holdings[0].account_name.clone()]
            } else {
                position
                    .holdings
                    .iter()
                    .map(|h| format!("{} ({})", h.account_name, group(h.quantity)))
                    .collect()
            };
            table.add_row(vec![
                Cell::new(&position.name),
                Cell::new(instrument.and_then(|i| i.ticker.as_deref()).unwrap_or("")),
                Cell::new(instrument.and_then(|i| i.isin.as_deref()).unwrap_or("")),
                number(position.quantity),
                Cell::new(value.join("  |  ")).set_alignment(CellAlignment::Right),
                Cell::new(held_in.join(", ")),
            ]);
        }
        out.push_str(&format!("{table}\n"));
    }

    if !p.transactions.is_empty() {
        let mut transactions = table(&["Date", "Description", "Status", "Amount"]);
        for t in p.transactions.iter().take(SHOWN_TRANSACTIONS) {
            transactions.add_row(vec![
                Cell::new(t.date),
                Cell::new(&t.description),
                Cell::new(t.status),
                amount(&t.amount),
            ]);
        }
        out.push_str(&format!(
            "{transactions}\n  ({} of {} recent transactions shown)\n",
            p.transactions.len().min(SHOWN_TRANSACTIONS),
            p.transactions.len()
        ));
    }
    let totals: Vec<String> = p
        .totals
        .iter()
        .map(|m| format!("{} {}", group(m.amount), m.currency))
        .collect();
    // Balances and the positions they leave out: what the client is worth.
    let short = if p.totals_complete {
        ""
    } else {
        "  (short of positions without a value)"
    };
    out.push_str(&format!("  Net worth: {}{short}\n", totals.join("  |  ")));
    out
}

/// The report of `finsync connectors check`: one row per endpoint (and account, for
/// an endpoint asked once per account), then the field problems with examples.
pub fn check(reports: &[crate::sync::check::EndpointReport]) -> String {
    let mut table = table(&[
        "endpoint", "account", "requests", "fetched", "mapped", "result",
    ]);
    let mut details = String::new();
    for r in reports {
        let never = &r.never_filled;
        let result = match &r.failure {
            Some(failure) => Cell::new(format!("failed: {failure}")).fg(Color::Red),
            None if r.mapped < r.fetched => {
                Cell::new(format!("{} not mapped", r.fetched - r.mapped)).fg(Color::Yellow)
            }
            None if !never.is_empty() => {
                Cell::new(format!("ok; never filled: {}", never.join(", "))).fg(Color::Yellow)
            }
            None => Cell::new("ok").fg(Color::Green),
        };
        let at = match &r.account {
            Some(account) => format!("{} [{account}]", r.endpoint),
            None => r.endpoint.clone(),
        };
        table.add_row(vec![
            Cell::new(&r.endpoint),
            Cell::new(r.account.as_deref().unwrap_or("all")),
            Cell::new(r.requests.map_or("?".to_owned(), |n| n.to_string()))
                .set_alignment(CellAlignment::Right),
            Cell::new(r.fetched).set_alignment(CellAlignment::Right),
            Cell::new(r.mapped).set_alignment(CellAlignment::Right),
            result,
        ]);
        for (field, (count, examples)) in &r.unparsable {
            details.push_str(&format!(
                "\n{at}.{field}: {count} record(s) not mapped, e.g. {}",
                examples.join("; ")
            ));
        }
        for (field, count) in &r.absent {
            let warning = if never.contains(field) {
                " (in every record of the endpoint: is its path right?)"
            } else {
                ""
            };
            details.push_str(&format!(
                "\n{at}.{field}: empty in {count} of {} record(s){warning}",
                r.fetched
            ));
        }
    }
    format!("{table}{details}")
}

/// The report of `finsync sync replay --quarantined`: one row per connection.
pub fn replayed(replayed: &[crate::sync::replay::Replayed]) -> String {
    if replayed.is_empty() {
        return "No connection has records in quarantine: nothing to replay.".into();
    }
    let mut table = table(&["connection", "institution", "open entries", "sync"]);
    for r in replayed {
        table.add_row(vec![
            Cell::new(r.connection_id),
            Cell::new(&r.institution),
            Cell::new(r.open).set_alignment(CellAlignment::Right),
            if r.queued {
                Cell::new("queued").fg(Color::Green)
            } else {
                Cell::new("already waiting")
            },
        ]);
    }
    table.to_string()
}

/// What `finsync webhooks replay` did, event by event, oldest first.
pub fn replayed_events(replayed: &[crate::webhooks::inbound::Replayed]) -> String {
    if replayed.is_empty() {
        return "No stored institution webhook matches: nothing to replay.".into();
    }
    let mut table = table(&[
        "institution",
        "event",
        "type",
        "received (UTC)",
        "was",
        "now",
        "syncs",
        "detail",
    ]);
    for r in replayed {
        let e = &r.event;
        let (now, syncs, detail) = match &r.handled {
            Some(h) => {
                let colour = match h.status {
                    crate::store::EventStatus::Queued => Color::Green,
                    crate::store::EventStatus::Coalesced => Color::Reset,
                    _ => Color::Yellow,
                };
                (
                    Cell::new(h.status).fg(colour),
                    h.connections.len().to_string(),
                    h.detail.clone().unwrap_or_default(),
                )
            }
            None => (
                Cell::new("skipped").fg(Color::Yellow),
                "0".to_owned(),
                format!("no connector `{}` in service", e.institution_id),
            ),
        };
        table.add_row(vec![
            Cell::new(&e.institution_id),
            Cell::new(&e.event_id),
            Cell::new(e.event_type.as_deref().unwrap_or("")),
            Cell::new(e.received_at.format("%Y-%m-%d %H:%M:%S")),
            Cell::new(e.status),
            now,
            Cell::new(syncs).set_alignment(CellAlignment::Right),
            Cell::new(detail),
        ]);
    }
    table.to_string()
}

/// Admin credentials as a table: name, role, prefix, who issued it, when, state.
pub fn admins(admins: &[crate::store::AdminRecord]) -> String {
    if admins.is_empty() {
        return "No admins yet: `finsync admins create NAME --role admin` issues the first.\n"
            .to_owned();
    }
    let mut table = table(&["Name", "Role", "Credential", "Issued by", "Issued", "State"]);
    for admin in admins {
        table.add_row(vec![
            Cell::new(&admin.name),
            Cell::new(admin.role),
            Cell::new(format!("fsa_{}_…", admin.prefix)),
            Cell::new(&admin.created_by),
            Cell::new(admin.created_at.format("%Y-%m-%d %H:%M UTC")),
            match admin.revoked_at {
                Some(at) => {
                    Cell::new(format!("revoked {}", at.format("%Y-%m-%d %H:%M"))).fg(Color::Red)
                }
                None => Cell::new("live"),
            },
        ]);
    }
    format!("{table}\n")
}

/// The open data-quality findings: how many per institution and code, then each
/// one with the record it is about and what was found.
/// A household's positions in its reporting currency: one row per instrument
/// with the members and accounts that hold it, the total, and every rate used.
pub fn household(h: &crate::portfolio::HouseholdPositions) -> String {
    let mut out = format!(
        "Household `{}` ({}): {}\n",
        h.household_id,
        h.name,
        h.members.join(", ")
    );
    if !h.members_without_data.is_empty() {
        out.push_str(&format!(
            "  (no linked institution yet: {})\n",
            h.members_without_data.join(", ")
        ));
    }
    let Some(reporting) = &h.reporting else {
        return out;
    };
    let to = reporting.currency;
    let in_to = format!("Value in {to}");
    let mut rows = table(&[
        "Position",
        "ISIN",
        "Quantity",
        "Value as held",
        &in_to,
        "Held by",
    ]);
    for position in &h.positions {
        let held: Vec<String> = position
            .value
            .iter()
            .map(|m| format!("{} {}", group(m.amount), m.currency))
            .collect();
        let by: Vec<String> = position
            .holdings
            .iter()
            .map(|p| format!("{}: {} ({})", p.user_id, p.account_name, group(p.quantity)))
            .collect();
        let converted = position.reporting.as_ref().and_then(|r| r.value.as_ref());
        rows.add_row(vec![
            Cell::new(&position.name),
            Cell::new(
                position
                    .instrument
                    .as_ref()
                    .and_then(|i| i.isin.as_deref())
                    .unwrap_or(""),
            ),
            number(position.quantity),
            Cell::new(held.join("  |  ")).set_alignment(CellAlignment::Right),
            converted.map_or_else(
                || {
                    Cell::new("no rate")
                        .fg(Color::Yellow)
                        .set_alignment(CellAlignment::Right)
                },
                amount,
            ),
            Cell::new(by.join("\n")),
        ]);
    }
    out.push_str(&format!("{rows}\n"));
    let missing = || {
        reporting
            .missing_rates
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    match &reporting.total_value {
        Some(total) => out.push_str(&format!(
            "  Positions: {} {}\n",
            group(total.amount),
            total.currency
        )),
        None => out.push_str(&format!("  No total: no rate for {}\n", missing())),
    }
    // Cash and the accounts' own values too, credit and loans subtracted.
    match &reporting.net_worth {
        Some(worth) => out.push_str(&format!(
            "  Household net worth: {} {}   (as held: {})\n",
            group(worth.amount),
            worth.currency,
            h.net_worth
                .iter()
                .map(|m| format!("{} {}", group(m.amount), m.currency))
                .collect::<Vec<_>>()
                .join(" + ")
        )),
        None if !h.net_worth_complete => {
            out.push_str("  No household net worth: a member's totals are incomplete\n");
        }
        None => out.push_str(&format!(
            "  No household net worth: no rate for {}\n",
            missing()
        )),
    }
    for rate in &reporting.rates {
        out.push_str(&format!(
            "  1 {} = {} {} ({}, published {})\n",
            rate.from,
            rate.rate.round_dp(6),
            rate.to,
            rate.source,
            rate.date
        ));
    }
    out.push_str(&format!(
        "  Rates shown to 6 places; conversions use them in full: {}.\n",
        reporting.rounding
    ));
    out
}

/// The latest exchange rates: one row per currency, against the provider's base.
pub fn rates(latest: &crate::domain::RateTable) -> String {
    let per = format!("per 1 {}", latest.base());
    let mut out = table(&["currency", &per, "published", "source"]);
    for (currency, rate, date) in latest.rates() {
        out.add_row(vec![
            Cell::new(currency),
            Cell::new(rate).set_alignment(CellAlignment::Right),
            Cell::new(date),
            Cell::new(latest.source()),
        ]);
    }
    out.to_string()
}

pub fn findings(report: &[crate::store::ReportedFinding]) -> String {
    if report.is_empty() {
        return "No data-quality findings: everything synced adds up.".into();
    }
    let mut counts: std::collections::BTreeMap<(&str, &str), usize> =
        std::collections::BTreeMap::new();
    for r in report {
        *counts
            .entry((r.institution_id.as_str(), r.finding.code.as_str()))
            .or_default() += 1;
    }
    let mut summary = table(&["institution", "code", "findings"]);
    for ((institution, code), n) in &counts {
        summary.add_row(vec![
            Cell::new(institution),
            Cell::new(code).fg(Color::Yellow),
            Cell::new(n).set_alignment(CellAlignment::Right),
        ]);
    }
    let mut each = table(&[
        "institution",
        "connection",
        "account",
        "code",
        "record",
        "found",
        "since (UTC)",
    ]);
    for r in report {
        let f = &r.finding;
        each.add_row(vec![
            Cell::new(&r.institution_id),
            Cell::new(&f.connection_id),
            Cell::new(&f.account_id),
            Cell::new(f.code).fg(Color::Yellow),
            Cell::new(&f.subject),
            Cell::new(&f.detail),
            Cell::new(f.first_seen_at.format("%Y-%m-%d %H:%M")),
        ]);
    }
    let accounts: std::collections::BTreeSet<(&str, &str)> = report
        .iter()
        .map(|r| {
            (
                r.finding.connection_id.as_str(),
                r.finding.account_id.as_str(),
            )
        })
        .collect();
    format!(
        "{} data-quality finding(s) in {} account(s)\n{summary}\n{each}",
        report.len(),
        accounts.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grouping_keeps_every_digit() {
        assert_eq!(
            group("12345678901234567.89".parse().unwrap()),
            "12,345,678,901,234,567.89"
        );
        assert_eq!(group("-1234.5".parse().unwrap()), "-1,234.5");
        assert_eq!(group("0.000000001".parse().unwrap()), "0.000000001");
        assert_eq!(group("123".parse().unwrap()), "123");
    }
}
