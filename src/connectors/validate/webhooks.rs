//! `[webhooks]`: how an institution signs what it sends, and where an event says
//! what it is; refused when a captured request could be replayed.

use super::*;

impl Validator {
    pub(super) fn webhooks(&mut self, spec: &WebhooksSpec) -> Option<Webhooks> {
        self.secret_env("webhooks.secret.env", &spec.secret.env);
        self.header_name("webhooks.signature_header", &spec.signature_header);
        if spec.signature_prefix.as_deref() == Some("") {
            self.report(
                "webhooks.signature_prefix",
                "must not be empty (leave it out)",
            );
        }
        let timestamp = match (&spec.timestamp_header, &spec.timestamp_path) {
            (Some(header), None) => {
                self.header_name("webhooks.timestamp_header", header);
                if spec.signed_content == SignedContent::Body {
                    // An unsigned time could be replaced on a captured request.
                    self.report(
                        "webhooks.signed_content",
                        "a time sent in a header must be signed: use `timestamp.body` (or timestamp_path for a time in the body)",
                    );
                }
                Some(Timestamp::Header(header.clone()))
            }
            (None, Some(path)) => {
                if spec.signed_content == SignedContent::TimestampDotBody {
                    self.report(
                        "webhooks.signed_content",
                        "`timestamp.body` signs the timestamp header's value: set timestamp_header, or sign `body` with the time in it",
                    );
                }
                self.json_path("webhooks.timestamp_path", path)
                    .map(Timestamp::Body)
            }
            (Some(_), Some(_)) => {
                self.report(
                    "webhooks",
                    "give either timestamp_header or timestamp_path, not both",
                );
                None
            }
            (None, None) => {
                self.report(
                    "webhooks",
                    "say where the time the event was sent is (timestamp_header or timestamp_path): without it a captured request could be replayed for ever",
                );
                None
            }
        };
        if !(1..=3600).contains(&spec.tolerance_secs) {
            self.report(
                "webhooks.tolerance_secs",
                "must be 1 to 3600 seconds (an hour)",
            );
        }
        let event_id = self.json_path("webhooks.event_id", &spec.event_id);
        let event_type = spec
            .event_type
            .as_deref()
            .map(|p| self.json_path("webhooks.event_type", p));
        let account_ids = self.json_path("webhooks.account_ids", &spec.account_ids);
        if let Some(types) = &spec.sync_on {
            if types.is_empty() {
                self.report(
                    "webhooks.sync_on",
                    "list at least one event type (leave it out to sync on every event)",
                );
            }
            if spec.event_type.is_none() {
                self.report(
                    "webhooks.sync_on",
                    "needs `event_type`: where the event's type is",
                );
            }
        }
        Some(Webhooks {
            secret_env: spec.secret.env.clone(),
            signature_header: spec.signature_header.clone(),
            signature_prefix: spec.signature_prefix.clone(),
            encoding: spec.signature_encoding,
            signed: spec.signed_content,
            timestamp: timestamp?,
            tolerance: std::time::Duration::from_secs(spec.tolerance_secs),
            event_id: event_id?,
            event_type: match event_type {
                Some(path) => Some(path?),
                None => None,
            },
            account_ids: account_ids?,
            sync_on: spec.sync_on.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{MERIDIAN, changed, has, problems};

    #[test]
    fn a_replayable_webhook_setup_is_refused() {
        let found = problems(&changed(
            MERIDIAN,
            "timestamp_header = \"Meridian-Timestamp\"\n",
            "",
        ));
        has(&found, "webhooks", "could be replayed");
    }

    #[test]
    fn the_tolerance_is_bounded() {
        let found = problems(&changed(
            MERIDIAN,
            "tolerance_secs = 300",
            "tolerance_secs = 0",
        ));
        has(&found, "webhooks.tolerance_secs", "1 to 3600");
    }
}
