//! Connector files: the shipped ones validate; a broken one is reported in full,
//! with the file and the field, by the library and by `finsync connectors validate`.

use std::process::Command;

use finsync::connectors::{validate_file, validate_str};

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
    for expected in [
        "connectors/meridian.toml: endpoints.accounts.records: `$.accounts[` is not a valid JSONPath",
        "endpoints.holdings.fields.quantity.format: only date and date-time fields take a format",
        "endpoints.transactions.fields.external_id: required field has no mapping",
        "auth.client_secret.env: `hunter2 secret` must be the NAME of an environment variable",
    ] {
        assert!(
            report.contains(expected),
            "missing `{expected}` in:\n{report}"
        );
    }
    assert_eq!(problems.0.len(), 4, "{report}");
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
    std::fs::remove_dir_all(dir).unwrap();
}
