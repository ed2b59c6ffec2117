//! Incremental syncs: where the last sync of a connection's transactions got to (the
//! [`SyncCursor`], kept on its run). What such a fetch covers, and so what its
//! absences may remove, is a [`crate::domain::Coverage`].
//!
//! A sync-token endpoint resumes from the token the last sync ended with and
//! receives only what changed; a date-window endpoint resumes `lookback_days`
//! before the last day it covered. A fan-out endpoint keeps one position per
//! account: each account resumes where its own last sync got to, and an account
//! seen for the first time starts from the beginning. A cursor written by another
//! version of the connector is ignored: the next sync starts from the beginning.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

/// Where the last successful sync of a connection's transactions got to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncCursor {
    /// The connector version (its file's SHA-256) that wrote the cursor.
    pub connector_hash: String,
    pub position: Position,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Position {
    /// The institution's token after the last page (sync-token paging).
    SyncToken(String),
    /// The last day the date windows covered.
    Through(NaiveDate),
    /// A fan-out endpoint: each account's own position, by its id.
    PerAccount(BTreeMap<String, Position>),
}

impl SyncCursor {
    /// The cursor as stored text.
    pub fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// A stored cursor, if it is one this connector version can resume from.
    pub fn decode(text: &str, connector_hash: &str) -> Option<Self> {
        serde_json::from_str::<Self>(text)
            .ok()
            .filter(|c| c.connector_hash == connector_hash)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, d).unwrap()
    }

    #[test]
    fn a_cursor_from_another_connector_version_is_not_resumed() {
        let cursor = SyncCursor {
            connector_hash: "abc".into(),
            position: Position::SyncToken("tok".into()),
        };
        let text = cursor.encode();
        assert_eq!(SyncCursor::decode(&text, "abc"), Some(cursor));
        assert_eq!(SyncCursor::decode(&text, "def"), None);
        assert_eq!(SyncCursor::decode("not json", "abc"), None);
        let through = SyncCursor {
            connector_hash: "abc".into(),
            position: Position::Through(day(22)),
        };
        assert_eq!(SyncCursor::decode(&through.encode(), "abc"), Some(through));
        let per_account = SyncCursor {
            connector_hash: "abc".into(),
            position: Position::PerAccount(BTreeMap::from([
                ("acc-1".into(), Position::Through(day(22))),
                ("acc-2".into(), Position::SyncToken("t".into())),
            ])),
        };
        assert_eq!(
            SyncCursor::decode(&per_account.encode(), "abc"),
            Some(per_account)
        );
    }
}
