//! `docs/connectors.md`, the admins' reference of the connector file format, stays
//! true: every complete example in it validates, there is a worked example of every
//! paging style and authentication variant, every key of the format and every
//! canonical field is documented, and the validator report it shows is the real one.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use finsync::connectors::fields::{ACCOUNT, HOLDING, Kind, SECURITY, TRANSACTION};
use finsync::connectors::{ClientAuth, Connector, Endpoint, Paging, validate_str};

/// The info string of a fenced block that holds a complete connector file.
const CONNECTOR_FENCE: &str = "```toml connector";

fn read(relative: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {relative}: {e}"))
}

fn doc() -> String {
    read("docs/connectors.md")
}

/// One fenced block: its info string, the line its text starts on, and the text.
struct Block {
    info: String,
    line: usize,
    text: String,
}

fn blocks(doc: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut open: Option<Block> = None;
    for (index, line) in doc.lines().enumerate() {
        match open.take() {
            None => {
                if let Some(info) = line.trim_end().strip_prefix("```") {
                    open = Some(Block {
                        info: info.trim().to_owned(),
                        line: index + 2,
                        text: String::new(),
                    });
                }
            }
            Some(block) if line.trim_end() == "```" => blocks.push(block),
            Some(mut block) => {
                block.text.push_str(line);
                block.text.push('\n');
                open = Some(block);
            }
        }
    }
    assert!(open.is_none(), "a fenced block in the doc is never closed");
    blocks
}

/// Every complete connector example, validated: the connectors, and a report for
/// each one that does not validate.
fn examples() -> (Vec<Connector>, Vec<String>) {
    let doc = doc();
    let mut connectors = Vec::new();
    let mut failures = Vec::new();
    let fence_info = CONNECTOR_FENCE.trim_start_matches('`');
    for block in blocks(&doc).into_iter().filter(|b| b.info == fence_info) {
        let id = block
            .text
            .lines()
            .next()
            .and_then(|first| first.strip_prefix("# file: connectors/"))
            .and_then(|name| name.strip_suffix(".toml"));
        let Some(id) = id else {
            failures.push(format!(
                "docs/connectors.md:{}: the example must start with `# file: connectors/<id>.toml`",
                block.line
            ));
            continue;
        };
        let file = format!("docs/connectors.md:{} (connectors/{id}.toml)", block.line);
        match validate_str(&file, id, &block.text, None) {
            Ok(connector) => connectors.push(connector),
            Err(problems) => failures.push(problems.to_string()),
        }
    }
    (connectors, failures)
}

#[test]
fn every_connector_example_in_the_doc_validates() {
    let (connectors, failures) = examples();
    assert!(
        failures.is_empty(),
        "connector examples in docs/connectors.md do not validate:\n{}",
        failures.join("\n")
    );
    assert!(
        !connectors.is_empty(),
        "no {CONNECTOR_FENCE} block in docs/connectors.md"
    );
}

/// The name the doc gives a paging style. Exhaustive, so that a new style does not
/// compile until it is named here and thereby needs a worked example.
fn paging_style(paging: &Paging) -> &'static str {
    match paging {
        Paging::None => "none",
        Paging::Cursor { .. } => "cursor",
        Paging::Offset { .. } => "offset",
        Paging::Page { .. } => "page",
        Paging::LinkHeader { .. } => "link-header",
        Paging::NextLink { .. } => "next-link",
        Paging::SyncToken { .. } => "sync-token",
    }
}

fn client_auth(auth: ClientAuth) -> &'static str {
    match auth {
        ClientAuth::Basic => "client_auth basic",
        ClientAuth::Post => "client_auth post",
    }
}

fn endpoints(connector: &Connector) -> impl Iterator<Item = &Endpoint> {
    [
        Some(&connector.accounts),
        connector.holdings.as_ref(),
        connector.transactions.as_ref(),
    ]
    .into_iter()
    .flatten()
}

#[test]
fn the_doc_has_a_worked_example_of_every_paging_style_and_auth_variant() {
    let (connectors, _) = examples();
    let mut shown = BTreeSet::new();
    for connector in &connectors {
        for endpoint in endpoints(connector) {
            shown.insert(paging_style(&endpoint.paging));
            if endpoint.window.is_some() && matches!(endpoint.paging, Paging::LinkHeader { .. }) {
                shown.insert("date window + link-header");
            }
        }
        let auth = &connector.auth;
        shown.insert(client_auth(auth.client_auth));
        shown.insert(if auth.pkce { "pkce on" } else { "pkce off" });
        shown.insert(if auth.rotating_refresh_tokens {
            "rotating refresh tokens"
        } else {
            "non-rotating refresh tokens"
        });
        if auth.scope_separator != " " {
            shown.insert("a scope separator other than a space");
        }
        if auth.token_response.nested_under.is_some() {
            shown.insert("a nested token response");
        }
        if auth.token_response.default_lifetime_secs
            != finsync::connectors::TokenResponseSpec::default().default_lifetime_secs
        {
            shown.insert("a declared default token lifetime");
        }
    }
    let wanted = [
        "none",
        "cursor",
        "offset",
        "page",
        "link-header",
        "next-link",
        "sync-token",
        "date window + link-header",
        client_auth(ClientAuth::Basic),
        client_auth(ClientAuth::Post),
        "pkce on",
        "pkce off",
        "rotating refresh tokens",
        "non-rotating refresh tokens",
        "a scope separator other than a space",
        "a nested token response",
        "a declared default token lifetime",
    ];
    let missing: Vec<_> = wanted.iter().filter(|w| !shown.contains(*w)).collect();
    assert!(
        missing.is_empty(),
        "docs/connectors.md has no valid worked example of: {missing:?}"
    );
}

/// The keys of the connector file: every field of the serde structs in `spec.rs`,
/// found as `pub name: Type` lines and as the `name: Type` lines of the paging
/// enum's variants (whose fields cannot be `pub`).
fn spec_keys() -> BTreeSet<String> {
    read("src/connectors/spec.rs")
        .lines()
        .filter_map(|line| {
            let line = line.trim_start();
            let line = line.strip_prefix("pub ").unwrap_or(line);
            let (name, rest) = line.split_once(": ")?;
            let is_key = !name.is_empty()
                && !rest.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
            is_key.then(|| name.to_owned())
        })
        .collect()
}

#[test]
fn every_key_of_the_format_is_documented() {
    let keys = spec_keys();
    // The scan itself must keep finding keys, top level and paging alike.
    for known in ["base_url", "nested_under", "cursor_param", "restart_codes"] {
        assert!(
            keys.contains(known),
            "spec.rs scan lost `{known}`: {keys:?}"
        );
    }
    let doc = doc();
    let undocumented: Vec<_> = keys
        .iter()
        .filter(|key| !doc.contains(&format!("`{key}`")))
        .collect();
    assert!(
        undocumented.is_empty(),
        "keys of src/connectors/spec.rs missing from docs/connectors.md: {undocumented:?}"
    );
}

#[test]
fn every_canonical_field_and_word_is_documented() {
    let doc = doc();
    let mut undocumented = Vec::new();
    for (endpoint, defs) in [
        ("accounts", ACCOUNT),
        ("holdings", HOLDING),
        ("holdings security", SECURITY),
        ("transactions", TRANSACTION),
    ] {
        for def in defs {
            if !doc.contains(&format!("| `{}` |", def.name)) {
                undocumented.push(format!("{endpoint} field `{}`", def.name));
            }
            if let Kind::Enum(words) = def.kind {
                for word in words {
                    if !doc.contains(&format!("`{word}`")) {
                        undocumented.push(format!("{endpoint} `{}` value `{word}`", def.name));
                    }
                }
            }
        }
    }
    assert!(
        undocumented.is_empty(),
        "missing from docs/connectors.md: {undocumented:?}"
    );
}

/// The doc shows `finsync connectors validate` on a broken file; that report must be
/// what the command prints for that file today.
#[test]
fn the_validator_report_in_the_doc_is_the_real_one() {
    let doc = doc();
    let blocks = blocks(&doc);
    let report_at = blocks
        .iter()
        .position(|b| b.info == "text" && b.text.starts_with("invalid connectors/broken-bank.toml"))
        .expect("the doc shows the validator's report on connectors/broken-bank.toml");
    let broken = blocks[..report_at]
        .iter()
        .rev()
        .find(|b| b.info == "toml")
        .expect("the broken file precedes its report");

    let dir = std::env::temp_dir().join(crate::support::unique("finsync-docs"));
    std::fs::create_dir_all(dir.join("connectors")).unwrap();
    std::fs::write(dir.join("connectors/broken-bank.toml"), &broken.text).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_finsync"))
        .args(["connectors", "validate", "connectors/broken-bank.toml"])
        .current_dir(&dir)
        .output()
        .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        blocks[report_at].text,
        "docs/connectors.md:{}: the report differs from what the validator prints",
        blocks[report_at].line
    );
}

/// The conversions the doc walks through are what the examples do to a record.
#[test]
fn the_examples_convert_records_as_the_doc_says() {
    let (connectors, failures) = examples();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let transactions = |id: &str| {
        connectors
            .iter()
            .find(|c| c.id == id)
            .and_then(|c| c.transactions.clone())
            .unwrap_or_else(|| panic!("the doc has no `{id}` example with transactions"))
    };
    let map = |endpoint: &Endpoint, record: serde_json::Value| {
        let record = finsync::connectors::mapping::Item::plain(record);
        finsync::connectors::mapping::transaction(&endpoint.fields, endpoint.sign, &record)
            .unwrap_or_else(|e| panic!("{e}"))
    };

    // Cents as a string, positive for money out, US dates: "1999" is 19.99 out.
    let tidewater = map(
        &transactions("tidewater"),
        serde_json::json!({
            "id": "t1", "accountNumberId": "a1", "amountCents": "1999", "currency": "usd",
            "postingDate": "11/20/2026", "status": "P", "description": "Coffee",
        }),
    );
    assert_eq!(tidewater.amount.amount.to_string(), "-19.99");
    assert_eq!(tidewater.amount.currency.as_str(), "USD");
    assert_eq!(tidewater.date.to_string(), "2026-11-20");
    assert_eq!(tidewater.status.as_str(), "pending");

    // 03:00 UTC on 20 November 2026 is still the 19th in New York.
    let granite = map(
        &transactions("granite"),
        serde_json::from_str(
            r#"{"activityId": "g1", "accountId": "a1", "netAmount": 1.5e3,
                "tradeTime": 1795143600000, "description": "Dividend", "activityType": "DV"}"#,
        )
        .unwrap(),
    );
    assert_eq!(granite.date.to_string(), "2026-11-19");
    assert_eq!(granite.amount.amount.to_string(), "1500");
    assert_eq!(
        granite.investment_type.map(|t| t.as_str()),
        Some("dividend")
    );

    // Thistle (UK Open Banking's shape): an unsigned amount and its indicator; an
    // indicator the file does not map is refused with its name.
    let thistle = transactions("thistle");
    let debit = |indicator: &str| {
        let record = finsync::connectors::mapping::Item::plain(serde_json::json!({
            "TransactionId": "t9", "Amount": {"Amount": "42.10", "Currency": "GBP"},
            "CreditDebitIndicator": indicator, "BookingDateTime": "2026-11-20T09:30:00+00:00",
            "Status": "Booked", "TransactionInformation": "Card payment",
        }));
        let mut record = record;
        record.account = Some(std::sync::Arc::new(finsync::connectors::mapping::Parent {
            external_id: "acc-1".into(),
            record: serde_json::json!({"AccountId": "acc-1"}),
        }));
        finsync::connectors::mapping::transaction(&thistle.fields, thistle.sign, &record)
    };
    let booked = debit("Debit").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(booked.amount.amount.to_string(), "-42.10");
    assert_eq!(booked.account_external_id, "acc-1");
    assert_eq!(booked.status.as_str(), "posted");
    let doc = doc();
    let refused = debit("Reversal").unwrap_err().to_string();
    assert!(
        doc.contains(&format!("`` {refused} ``")),
        "the doc quotes the reason `{refused}`"
    );
}

/// Every shipped profile has a complete example in the doc that extends it, and that
/// example validates.
#[test]
fn every_shipped_profile_has_a_worked_example() {
    let (connectors, failures) = examples();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    for profile in finsync::connectors::profiles::SHIPPED {
        assert!(
            connectors
                .iter()
                .any(|c| c.profile.as_deref() == Some(profile.name)),
            "docs/connectors.md has no valid example that extends `{}`",
            profile.name
        );
    }
}
