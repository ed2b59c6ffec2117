//! `finsync audit`: checking that nobody changed the audit trail, and exporting it
//! as JSON lines for an archive or a SIEM.

use std::io::Write;
use std::process::ExitCode;

use chrono::{DateTime, Utc};

use crate::app::{self, Logging};
use crate::store::AuditFilter;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Walks the hash chain from the first entry and names the first one that was
    /// edited, deleted or moved. Exits 1 when the chain is broken.
    Verify {
        /// A head logged earlier (`SEQ:HASH`, from the "Audit trail head." log
        /// line): also checks that the trail still reaches it, so that entries
        /// deleted from the end are noticed.
        #[arg(long, value_parser = parse_head)]
        expect_head: Option<(i64, String)>,
    },
    /// Prints entries as JSON lines, oldest first.
    Export {
        /// From this time (RFC 3339), inclusive.
        #[arg(long)]
        since: Option<DateTime<Utc>>,
        /// Before this time (RFC 3339).
        #[arg(long)]
        until: Option<DateTime<Utc>>,
    },
}

fn parse_head(text: &str) -> Result<(i64, String), String> {
    let (seq, hash) = text
        .split_once(':')
        .ok_or_else(|| format!("`{text}` is not SEQ:HASH"))?;
    let seq = seq
        .parse()
        .map_err(|_| format!("`{seq}` is not an entry number"))?;
    if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("`{hash}` is not a SHA-256 in hex"));
    }
    Ok((seq, hash.to_ascii_lowercase()))
}

/// Entries fetched per query while exporting.
const EXPORT_PAGE: u64 = 1000;

pub async fn run(command: Command) -> anyhow::Result<ExitCode> {
    let settings = app::boot(None, Logging::Configured, "audit")?;
    let store = app::open_store(&settings).await?;
    match command {
        Command::Verify { expect_head } => {
            let expect = expect_head
                .as_ref()
                .map(|(seq, hash)| (*seq, hash.as_str()));
            let vault = crate::vault::Vault::from_settings(&settings.vault)?;
            let sealed_by = |value: &str, seal: &str| {
                vault.keyed_hash_matches(crate::sync::scheduler::AUDIT_SEAL, value, seal)
            };
            let verification = store.verify_audit(expect, &sealed_by).await?;
            match verification.broken {
                None => {
                    match verification.head {
                        Some((seq, hash)) => println!(
                            "The audit trail holds: {} entries{}, head {seq}:{hash}.",
                            verification.verified,
                            verification
                                .purged_through
                                .map_or_else(String::new, |through| {
                                    format!(" (1 to {through} deleted by retention, as recorded)")
                                }),
                        ),
                        None => println!("The audit trail is empty."),
                    }
                    Ok(ExitCode::SUCCESS)
                }
                Some(broken) => {
                    println!(
                        "The audit trail is broken at entry {}: {}. {} entries before it hold.",
                        broken.seq, broken.reason, verification.verified
                    );
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        Command::Export { since, until } => {
            let filter = AuditFilter {
                since,
                until,
                ..AuditFilter::default()
            };
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            let mut after = None;
            loop {
                let entries = store.audit_entries(&filter, after, EXPORT_PAGE).await?;
                let Some(last) = entries.last() else { break };
                after = Some(last.seq);
                for entry in &entries {
                    serde_json::to_writer(&mut out, entry)?;
                    out.write_all(b"\n")?;
                }
            }
            out.flush()?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_head;

    #[test]
    fn a_head_is_a_number_and_a_sha256() {
        let hash = "ab".repeat(32);
        assert_eq!(parse_head(&format!("12:{hash}")), Ok((12, hash.clone())));
        assert!(parse_head("12").is_err());
        assert!(parse_head(&format!("x:{hash}")).is_err());
        assert!(parse_head("12:abc").is_err());
    }
}
