//! Connector files: the shipped ones validate; a broken one is reported in full,
//! with the file and the field, by the library and by `finsync connectors validate`.

use std::process::Command;

use finsync::connectors::{validate_file, validate_str};
use proptest::prelude::*;

fn connectors_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("connectors")
}

#[test]
fn every_shipped_connector_validates() {
    let files = finsync::connectors::registry::connector_files(&connectors_dir()).unwrap();
    assert!(!files.is_empty());
    for file in files {
        if let Err(problems) = validate_file(&file, None) {
            panic!("{problems}");
        }
    }
}

#[test]
fn every_problem_in_a_file_is_reported_with_its_field_path() {
    let good = std::fs::read_to_string(connectors_dir().join("meridian.toml")).unwrap();
    let broken = good
        .replace(r#"records = "$.accounts[*]""#, r#"records = "$.accounts[""#)
        .replacen(
            r#"quantity = { path = "$.quantity" }"#,
            r#"quantity = { path = "$.quantity", format = "%Y" }"#,
            1,
        )
        .replace(r#"external_id = { path = "$.transaction_id" }"#, "")
        .replace(
            r#"client_secret = { env = "MERIDIAN_CLIENT_SECRET" }"#,
            r#"client_secret = { env = "hunter2 secret" }"#,
        );
    let problems = validate_str("connectors/meridian.toml", "meridian", &broken, None).unwrap_err();
    let report = problems.to_string();
    assert!(
        !report.contains("hunter2"),
        "a pasted secret is repeated: {report}"
    );
    for expected in [
        "connectors/meridian.toml: endpoints.accounts.records: `$.accounts[` is not a valid JSONPath",
        "endpoints.holdings.fields.quantity.format: only date and date-time fields take a format",
        "endpoints.transactions.fields.external_id: required field has no mapping",
        "auth.client_secret.env: must be the NAME of an environment variable",
    ] {
        assert!(
            report.contains(expected),
            "missing `{expected}` in:\n{report}"
        );
    }
    assert_eq!(problems.0.len(), 4, "{report}");
}

#[test]
fn webhooks_that_could_be_forged_or_replayed_are_refused_with_every_problem() {
    let good = std::fs::read_to_string(connectors_dir().join("meridian.toml")).unwrap();
    let broken = good
        .replace(
            r#"secret = { env = "MERIDIAN_WEBHOOK_SECRET" }"#,
            r#"secret = { env = "whsec_live_123" }"#,
        )
        // An unsigned time: a captured request could be sent again with a new one.
        .replace(
            r#"signed_content = "timestamp.body""#,
            r#"signed_content = "body""#,
        )
        .replace("tolerance_secs = 300", "tolerance_secs = 0")
        .replace(r#"event_type = "$.webhook_code""#, "")
        .replace(
            r#"account_ids = "$.account_ids[*]""#,
            r#"account_ids = "$.account_ids[""#,
        );
    let problems = validate_str("meridian.toml", "meridian", &broken, None).unwrap_err();
    let report = problems.to_string();
    for expected in [
        "webhooks.secret.env: must be the NAME of an environment variable",
        "webhooks.signed_content: a time sent in a header must be signed",
        "webhooks.tolerance_secs: must be 1 to 3600 seconds",
        "webhooks.account_ids: `$.account_ids[` is not a valid JSONPath",
        "webhooks.sync_on: needs `event_type`",
    ] {
        assert!(
            report.contains(expected),
            "missing `{expected}` in:\n{report}"
        );
    }
    assert_eq!(problems.0.len(), 5, "{report}");

    let timeless = good.replace(r#"timestamp_header = "Meridian-Timestamp""#, "");
    let problems = validate_str("meridian.toml", "meridian", &timeless, None).unwrap_err();
    assert!(
        problems
            .to_string()
            .contains("without it a captured request could be replayed"),
        "{problems}"
    );
}

#[test]
fn a_rate_limit_of_zero_is_refused_rather_than_blocking_every_request() {
    let good = std::fs::read_to_string(connectors_dir().join("harbor.toml")).unwrap();
    let broken = good.replace("requests_per_second = 10", "requests_per_second = 0");
    assert_ne!(broken, good);
    let problems = validate_str("harbor.toml", "harbor", &broken, None).unwrap_err();
    assert_eq!(
        problems.to_string(),
        "harbor.toml: limits.requests_per_second: must be at least 1 (leave it out for no limit)"
    );
}

#[test]
fn unknown_keys_are_rejected_with_their_location() {
    let good = std::fs::read_to_string(connectors_dir().join("meridian.toml")).unwrap();
    let broken = good.replace("page_size = 10", "page_size = 10\npage_sise = 11");
    let problems = validate_str("m.toml", "meridian", &broken, None).unwrap_err();
    let report = problems.to_string();
    assert!(
        report.contains("m.toml: limits.page_sise: unknown field `page_sise`"),
        "{report}"
    );
    assert!(report.contains("line"), "{report}");
}

#[test]
fn every_shape_problem_is_reported_at_once() {
    let good = std::fs::read_to_string(connectors_dir().join("meridian.toml")).unwrap();
    let broken = good
        .replace("page_size = 10", "page_size = \"ten\"")
        .replace(
            "pkce = true",
            "pkce = true\npcke = false\ntoken_response = { default_lifetime_secs = \"x\" }",
        )
        // A partial [errors] table keeps the defaults of what it leaves out.
        .replace("retry_statuses = [500, 502, 503, 504]\n", "")
        .replace(r#"records = "$.holdings[*]""#, "")
        .replacen(
            r#"amount = { path = "$.amount" }"#,
            r#"amount = { path = "$.amount", scale = 2 }"#,
            1,
        );
    let problems = validate_str("m.toml", "meridian", &broken, None).unwrap_err();
    let report = problems.to_string();
    for expected in [
        "m.toml: auth.pcke: unknown field `pcke`",
        "m.toml: auth.token_response.default_lifetime_secs: invalid type: string \"x\", expected u64",
        "m.toml: limits.page_size: invalid type: string \"ten\", expected u32",
        "m.toml: endpoints.holdings: missing field `records`",
        "m.toml: endpoints.transactions.fields.amount.scale: unknown field `scale`",
    ] {
        assert!(
            report.contains(expected),
            "missing `{expected}` in:\n{report}"
        );
    }
    assert_eq!(problems.0.len(), 5, "{report}");
    // The first problem in the file also says where it is.
    assert!(problems.0[0].message.contains("line"), "{report}");
}

#[test]
fn the_cli_validates_files_and_fails_on_a_bad_one() {
    let dir = std::env::temp_dir().join(crate::support::unique("finsync-connectors"));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "name = \"x\"\n").unwrap();
    let good = connectors_dir().join("meridian.toml");
    let output = Command::new(env!("CARGO_BIN_EXE_finsync"))
        .args(["connectors", "validate"])
        .arg(&good)
        .arg(&bad)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("ok      ") && stdout.contains("meridian"),
        "{stdout}"
    );
    assert!(
        stdout.contains("invalid ") && stdout.contains("missing field"),
        "{stdout}"
    );
    let ok = Command::new(env!("CARGO_BIN_EXE_finsync"))
        .args(["connectors", "validate"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(ok.status.success());

    // A draft saved under a name that is not an id validates as the connector it is for.
    let draft = dir.join("Harbor (draft).toml");
    std::fs::copy(connectors_dir().join("harbor.toml"), &draft).unwrap();
    let as_is = Command::new(env!("CARGO_BIN_EXE_finsync"))
        .args(["connectors", "validate"])
        .arg(&draft)
        .output()
        .unwrap();
    assert_eq!(as_is.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&as_is.stdout).contains("must be a connector id"));
    let named = Command::new(env!("CARGO_BIN_EXE_finsync"))
        .args(["connectors", "validate", "--id", "harbor"])
        .arg(&draft)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&named.stdout);
    assert!(named.status.success(), "{stdout}");
    assert!(stdout.contains("(harbor: Harbor Savings Bank)"), "{stdout}");
    std::fs::remove_dir_all(dir).unwrap();
}

/// Pieces of connector syntax, so mutations reach past the TOML parser into the
/// connector checks.
const FRAGMENTS: &[&str] = &[
    "\n",
    "[",
    "]",
    "=",
    "\"",
    "{",
    "}",
    ",",
    "$.",
    "[*]",
    "é",
    "\u{0}",
    "type = \"sync-token\"",
    "type = \"date-window\"",
    "paging = { type = \"offset\" }",
    "window = { from_param = \"a\", to_param = \"b\", step_days = 0, history_days = 4294967295 }",
    "format = \"%Q\"",
    "timezone = \"Mars/Olympus\"",
    "minor_units = 99",
    "[endpoints.x]",
    "records = \"$..*\"",
    "path = \"$[?@.a]\"",
    "base_url = \"::\"",
    "= 1e999",
    "for_each = \"accounts\"",
    "for_each = \"holdings\"",
    "when = \"@.x ==\"",
    "{account.external_id}",
    "{account.$..x}",
    "{uuid}",
    "{account.id}",
    "from = \"security\"",
    "from = \"account\"",
    "sign = { path = \"$.s\", map = { D = \"*\" } }",
    "extends = \"fdx\"",
    "extends = \"nope\"",
    "joins = { s = { list = \"$\", key = \"x\", on = \"$.k\" } }",
    "[endpoints.details.x]",
    "headers = { Authorization = \"x\", \"bad name\" = \"{uuid\" }",
    "headers = { Consent-ID = { connection = \"consent_id\" } }",
    "[auth.token_response]\nkeep = [\"consent_id\", \"access_token\", \"\"]",
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    /// Whatever an admin saves, validation answers with a connector or problems,
    /// and never panics.
    #[test]
    fn the_validator_never_panics_on_arbitrary_text(text in any::<String>()) {
        let _ = validate_str("fuzz.toml", "fuzz", &text, None);
    }

    #[test]
    fn the_validator_never_panics_on_mutated_connector_files(
        file in prop::sample::select(vec!["meridian.toml", "harbor.toml", "keystone.toml", "pinecrest.toml"]),
        edits in prop::collection::vec((any::<prop::sample::Index>(), 0usize..40, prop::sample::select(FRAGMENTS)), 1..6),
    ) {
        let Ok(mut text) = std::fs::read_to_string(connectors_dir().join(file)) else {
            return Ok(());
        };
        for (at, cut, fragment) in edits {
            let mut start = at.index(text.len() + 1);
            while !text.is_char_boundary(start) {
                start -= 1;
            }
            let mut end = (start + cut).min(text.len());
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text.replace_range(start..end, fragment);
        }
        match validate_str("fuzz.toml", "fuzz", &text, None) {
            Ok(_) => {}
            Err(problems) => {
                prop_assert!(!problems.0.is_empty());
                let own: toml::Table = toml::from_str(&text).unwrap_or_default();
                let profile = own
                    .get("extends")
                    .and_then(|e| e.as_str())
                    .and_then(finsync::connectors::profiles::shipped);
                for problem in &problems.0 {
                    // Every refusal names the file the admin wrote, and a key the
                    // profile set names the profile.
                    prop_assert_eq!(&problem.file, "fuzz.toml");
                    prop_assert!(!problem.message.is_empty());
                    if let Some(profile) = profile {
                        let base: toml::Table = toml::from_str(profile.text).unwrap();
                        if !problem.path.is_empty()
                            && !finsync::connectors::profiles::sets(&own, &problem.path)
                            && finsync::connectors::profiles::sets(&base, &problem.path)
                        {
                            prop_assert!(
                                problem.message.contains(&format!("profile `{}`", profile.name)),
                                "{}",
                                problem
                            );
                        }
                    }
                }
            }
        }
    }
}
