//! The delivery loop: claims due deliveries (a lease in the delivery log, so any
//! number of worker processes can run it), POSTs each signed with its endpoint's
//! secret, and records the attempt: delivered on a 2xx, otherwise retried after an
//! exponential, jittered backoff until the attempts run out. Delivery is at least
//! once: a receiver may see a delivery twice (a lost answer, an expired lease) and
//! should use the `finsync-delivery` header or the payload's `id` to tell.

use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use chrono::Utc;
use futures::FutureExt;
use reqwest::header::CONTENT_TYPE;
use secrecy::SecretString;
use tracing::Instrument;

use super::{DELIVERY_HEADER, EVENT_HEADER, SIGNATURE_HEADER, sign};
use crate::store::{Attempt, ClaimedDelivery, NextStep, Store, StoreError};
use crate::vault::{Vault, webhook_secret_context};

/// A claim outlives the slowest attempt by this much, so it never expires under
/// an attempt still in flight (which would let another loop send it too).
const LEASE_MARGIN: Duration = Duration::from_secs(60);

/// How deliveries are sent and retried; from `[webhooks]`.
#[derive(Debug, Clone)]
pub struct DeliveryPolicy {
    pub max_attempts: u32,
    pub timeout: Duration,
    pub poll_interval: Duration,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    pub batch_size: u64,
    /// Deliver to private and loopback addresses too (see [`super::target`]).
    pub allow_private_targets: bool,
}

impl DeliveryPolicy {
    /// The wait after the `failed`-th failed attempt: the base doubled per earlier
    /// failure up to the maximum, plus a random jitter of up to as much again.
    pub fn backoff(&self, failed: u32) -> Duration {
        ExponentialBuilder::new()
            .with_min_delay(self.backoff_base)
            .with_max_delay(self.backoff_max)
            .with_jitter()
            .without_max_times()
            .build()
            .nth(usize::try_from(failed.saturating_sub(1)).unwrap_or(usize::MAX))
            .unwrap_or(self.backoff_max)
    }

    /// What follows an attempt that was the `attempt`-th.
    fn next_step(&self, attempt: u32, delivered: bool, now: chrono::DateTime<Utc>) -> NextStep {
        if delivered {
            NextStep::Delivered
        } else if attempt >= self.max_attempts {
            NextStep::Failed
        } else {
            let wait =
                chrono::Duration::from_std(self.backoff(attempt)).unwrap_or(chrono::Duration::MAX);
            NextStep::RetryAt(now + wait)
        }
    }
}

/// Everything the delivery loop needs, built once per process.
#[derive(Clone)]
pub struct Deliverer {
    pub store: Store,
    /// Opens endpoints' signing secrets, only for the moment of signing.
    pub vault: Arc<Vault>,
    /// The shared client ([`crate::http::client`]): redirects are not followed,
    /// so a receiver cannot bounce a signed delivery elsewhere.
    pub http: reqwest::Client,
    pub policy: DeliveryPolicy,
}

/// How one attempt went.
enum Sent {
    /// The receiver answered 2xx.
    Delivered(u16),
    /// It answered something else.
    Refused(u16),
    /// No answer (or nothing could be sent); the text is safe to store and log.
    Failed(String),
}

impl Deliverer {
    /// One pass: claims up to a batch of due deliveries, sends them concurrently
    /// and records each attempt; returns how many were claimed.
    pub async fn deliver_due(&self) -> Result<usize, StoreError> {
        let now = Utc::now();
        // Unique per claim: the store finds the rows it leased by it.
        let owner = format!("webhooks:{}", uuid::Uuid::new_v4());
        let lease = chrono::Duration::from_std(self.policy.timeout + LEASE_MARGIN)
            .unwrap_or(chrono::Duration::MAX);
        let claimed = self
            .store
            .claim_webhook_deliveries(&owner, now, now + lease, self.policy.batch_size)
            .await?;
        let count = claimed.len();
        futures::future::join_all(claimed.into_iter().map(|c| {
            let span = tracing::info_span!(
                "webhook",
                delivery = %c.delivery.id,
                endpoint = %c.endpoint.id,
                event = %c.delivery.event,
                attempt = c.delivery.attempts + 1
            );
            self.attempt(c, &owner).instrument(span)
        }))
        .await;
        Ok(count)
    }

    async fn attempt(&self, claimed: ClaimedDelivery, owner: &str) {
        let ClaimedDelivery { delivery, endpoint } = claimed;
        let number = delivery.attempts + 1;
        let sent = if endpoint.disabled_at.is_some() {
            Sent::Failed("ENDPOINT_DISABLED: the endpoint was disabled before delivery".into())
        } else {
            match self.vault.open(
                &webhook_secret_context(endpoint.id),
                &endpoint.sealed_secret,
            ) {
                Ok(secret) => {
                    match super::target::check_resolved(
                        &endpoint.url,
                        self.policy.allow_private_targets,
                    )
                    .await
                    {
                        Ok(()) => self.send(&delivery, &endpoint.url, &secret).await,
                        Err(refused) => Sent::Failed(refused),
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "Webhook secret cannot be opened.");
                    Sent::Failed("the endpoint's signing secret cannot be opened".into())
                }
            }
        };
        let at = Utc::now();
        let (status_code, error) = match &sent {
            Sent::Delivered(code) => (Some(*code), None),
            Sent::Refused(code) => (Some(*code), Some(format!("the receiver answered {code}"))),
            Sent::Failed(reason) => (None, Some(reason.clone())),
        };
        let next = if endpoint.disabled_at.is_some() {
            NextStep::Failed
        } else {
            self.policy
                .next_step(number, matches!(sent, Sent::Delivered(_)), at)
        };
        let outcome = match next {
            NextStep::Delivered => "delivered",
            NextStep::RetryAt(_) => "retrying",
            NextStep::Failed => "failed",
        };
        // One count per attempt, by what it led to.
        metrics::counter!("finsync_webhook_deliveries_total", "outcome" => outcome).increment(1);
        match next {
            NextStep::Delivered => {
                tracing::info!(status_code, "Webhook delivered.");
            }
            NextStep::RetryAt(retry_at) => {
                tracing::warn!(status_code, error, %retry_at, "Webhook attempt failed; retrying later.");
            }
            NextStep::Failed => {
                tracing::warn!(status_code, error, "Webhook delivery failed for good.");
            }
        }
        let attempt = Attempt {
            at,
            status_code,
            error,
            next,
        };
        match self
            .store
            .record_webhook_attempt(delivery.id, owner, attempt)
            .await
        {
            Ok(true) => {}
            // Disabled meanwhile, or our lease ran out and another loop took it.
            Ok(false) => {
                tracing::info!("Webhook attempt not recorded: the delivery changed meanwhile.")
            }
            // The lease expires and the delivery is sent again: at least once.
            Err(e) => tracing::error!(error = %e, "Webhook attempt could not be recorded."),
        }
    }

    async fn send(
        &self,
        delivery: &crate::store::WebhookDelivery,
        url: &str,
        secret: &SecretString,
    ) -> Sent {
        let signature = sign(secret, Utc::now().timestamp(), delivery.payload.as_bytes());
        let response = self
            .http
            .post(url)
            .timeout(self.policy.timeout)
            .header(CONTENT_TYPE, "application/json")
            .header(SIGNATURE_HEADER, signature)
            .header(EVENT_HEADER, delivery.event.as_str())
            .header(DELIVERY_HEADER, delivery.id.to_string())
            .body(delivery.payload.clone())
            .send()
            .await;
        match response {
            Ok(r) if r.status().is_success() => Sent::Delivered(r.status().as_u16()),
            Ok(r) => Sent::Refused(r.status().as_u16()),
            // The URL stays out of the text: a tenant's URL may carry a token in
            // its query, and this text is stored and logged.
            Err(e) if e.is_timeout() => Sent::Failed(format!(
                "no answer within {} ms",
                self.policy.timeout.as_millis()
            )),
            Err(e) if e.is_connect() => Sent::Failed("the receiver could not be reached".into()),
            Err(e) => Sent::Failed(format!("the request failed: {}", e.without_url())),
        }
    }
}

/// Delivers until `shutdown` resolves: a pass, then a pause of `poll_interval`
/// unless the pass found a full batch (more are probably due). A pass in flight
/// is finished, not cut short, so no attempt is left half-recorded.
pub async fn run(deliverer: Deliverer, shutdown: impl std::future::Future<Output = ()>) {
    tokio::pin!(shutdown);
    loop {
        let claimed = match deliverer.deliver_due().await {
            Ok(claimed) => claimed,
            Err(e) => {
                tracing::error!(error = %e, "Webhook delivery pass failed.");
                0
            }
        };
        if u64::try_from(claimed).unwrap_or(u64::MAX) >= deliverer.policy.batch_size {
            if shutdown.as_mut().now_or_never().is_some() {
                return;
            }
            continue;
        }
        tokio::select! {
            _ = &mut shutdown => return,
            _ = tokio::time::sleep(deliverer.policy.poll_interval) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> DeliveryPolicy {
        DeliveryPolicy {
            max_attempts: 4,
            timeout: Duration::from_secs(1),
            poll_interval: Duration::from_secs(1),
            backoff_base: Duration::from_secs(10),
            backoff_max: Duration::from_secs(60),
            batch_size: 10,
            allow_private_targets: false,
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_maximum_with_bounded_jitter() {
        let policy = policy();
        for (failed, floor) in [(1, 10), (2, 20), (3, 40), (4, 60), (9, 60)] {
            for _ in 0..50 {
                let wait = policy.backoff(failed);
                let floor = Duration::from_secs(floor);
                assert!(
                    wait >= floor && wait < floor * 2,
                    "after {failed} failures: {wait:?}"
                );
            }
        }
    }

    #[test]
    fn attempts_end_delivered_or_failed_after_the_last() {
        let policy = policy();
        let now = Utc::now();
        assert_eq!(policy.next_step(4, true, now), NextStep::Delivered);
        assert_eq!(policy.next_step(4, false, now), NextStep::Failed);
        let NextStep::RetryAt(at) = policy.next_step(3, false, now) else {
            panic!("a third failure out of four is retried");
        };
        assert!(at >= now + chrono::Duration::seconds(40));
    }
}
