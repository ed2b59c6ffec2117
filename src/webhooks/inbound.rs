//! Webhooks from institutions, turned into syncs. An event that passed its
//! connector's checks is stored once (a repeated delivery is recognised by the
//! institution's event id), matched to the connections that hold the accounts it
//! names, and each of those gets one sync: every event for a connection within
//! the same coalescing window shares one job, whichever API process received it.
//! Operators replay stored events with [`replay`].

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::connectors::{Connector, Notice};
use crate::domain::{ConnectionId, ConnectionStatus};
use crate::store::{EventFilter, EventStatus, InstitutionEvent, NewEvent, StoreError};
use crate::sync::{Env, QueueError, SyncConnection};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InboundError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Queue(#[from] QueueError),
}

/// What one delivery of an event came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// The event as stored after this delivery.
    pub event: InstitutionEvent,
    /// Whether this delivery acted on the event; false for a repeat of one that
    /// was acted on, or is being acted on.
    pub acted: bool,
}

/// Stores a verified event and acts on it. A repeated delivery changes nothing
/// but its count, unless the first one was stored and never acted on (its
/// process stopped, or the queue failed): then this one acts on it. Of several
/// deliveries racing, in any processes, exactly one acts.
pub async fn receive(
    ctx: &Env,
    connector: &Connector,
    notice: &Notice,
    body: &str,
    window: Duration,
) -> Result<Receipt, InboundError> {
    let mut event = ctx
        .store
        .record_event(NewEvent {
            institution_id: &connector.id,
            event_id: &notice.event_id,
            event_type: notice.event_type.as_deref(),
            sent_at: notice.sent_at,
            body,
        })
        .await?;
    let acted = event.status == EventStatus::Received && ctx.store.claim_event(&event.id).await?;
    if acted {
        let handled = process(ctx, connector, &event, window, false).await?;
        event.status = handled.status;
        event.connections = handled.connections;
        event.detail = handled.detail;
        event.processed_at = Some(Utc::now());
    }
    let outcome = if acted { "accepted" } else { "duplicate" };
    metrics::counter!("finsync_institution_webhooks_total", "institution" => connector.id.clone(), "outcome" => outcome)
        .increment(1);
    Ok(Receipt { event, acted })
}

/// What acting on an event did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handled {
    pub status: EventStatus,
    pub connections: Vec<ConnectionId>,
    pub detail: Option<String>,
}

/// Acts on a stored event with `connector` as it is now: reads the event's type
/// and accounts, finds their connections and queues one sync each, then records
/// the outcome on the event.
async fn process(
    ctx: &Env,
    connector: &Connector,
    event: &InstitutionEvent,
    window: Duration,
    replayed: bool,
) -> Result<Handled, InboundError> {
    let handled = decide(ctx, connector, event, window).await?;
    ctx.store
        .settle_event(
            &event.id,
            handled.status,
            &handled.connections,
            handled.detail.as_deref(),
            replayed,
        )
        .await?;
    tracing::info!(
        institution = %connector.id,
        event = %event.event_id,
        status = %handled.status,
        connections = handled.connections.len(),
        "Institution webhook handled."
    );
    Ok(handled)
}

async fn decide(
    ctx: &Env,
    connector: &Connector,
    event: &InstitutionEvent,
    window: Duration,
) -> Result<Handled, InboundError> {
    let nothing = |status, detail: String| Handled {
        status,
        connections: Vec::new(),
        detail: Some(detail),
    };
    let Some(webhooks) = &connector.webhooks else {
        return Ok(nothing(
            EventStatus::Ignored,
            format!("connector `{}` no longer declares webhooks", connector.id),
        ));
    };
    let (event_type, accounts) = match webhooks.reread(&event.body) {
        Ok(read) => read,
        Err(e) => return Ok(nothing(EventStatus::Ignored, e.to_string())),
    };
    if !webhooks.syncs_on(event_type.as_deref()) {
        return Ok(nothing(
            EventStatus::Ignored,
            format!(
                "event type `{}` asks for no sync",
                event_type.as_deref().unwrap_or("")
            ),
        ));
    }
    let holders = ctx
        .store
        .connections_with_accounts(&connector.id, &accounts)
        .await?;
    if holders.is_empty() {
        return Ok(nothing(
            EventStatus::Unmatched,
            if accounts.is_empty() {
                "the event names no account".to_owned()
            } else {
                format!("no connection holds account(s) {}", accounts.join(", "))
            },
        ));
    }
    let (active, inactive): (Vec<_>, Vec<_>) = holders
        .into_iter()
        .partition(|c| c.status == ConnectionStatus::Active);
    if active.is_empty() {
        let statuses: Vec<String> = inactive
            .iter()
            .map(|c| format!("{} is {}", c.id, c.status))
            .collect();
        return Ok(nothing(
            EventStatus::Ignored,
            format!("no active connection: {}", statuses.join(", ")),
        ));
    }
    let (slot, starts_in) = slot(Utc::now(), window);
    let mut queued = false;
    let mut connections = Vec::with_capacity(active.len());
    for connection in active {
        let mut added = enqueue(ctx, connection.id, slot, starts_in).await?;
        if !added && ctx.queue.waiting_for(connection.id, "sync").await? == 0 {
            // The window's sync already started: this process's clock is behind the
            // one that queued it, and that sync may have read before the change.
            added = enqueue(ctx, connection.id, slot + 1, starts_in + window).await?;
        }
        queued |= added;
        connections.push(connection.id);
    }
    Ok(Handled {
        status: if queued {
            EventStatus::Queued
        } else {
            EventStatus::Coalesced
        },
        connections,
        detail: None,
    })
}

/// Queues the sync of `connection` for window `slot`, unless it is queued already.
async fn enqueue(
    ctx: &Env,
    connection: ConnectionId,
    slot: i64,
    after: Duration,
) -> Result<bool, QueueError> {
    let job = SyncConnection {
        connection_id: connection,
        idempotency_key: format!("webhook:{connection}:{slot}"),
    };
    ctx.queue.enqueue_after(job, after).await
}

/// The coalescing window `now` falls in (its number since the epoch) and how long
/// until it ends: the sync runs then, once, for every event of the window.
fn slot(now: DateTime<Utc>, window: Duration) -> (i64, Duration) {
    let width = i64::try_from(window.as_millis()).unwrap_or(i64::MAX).max(1);
    let millis = now.timestamp_millis();
    let slot = millis.div_euclid(width);
    let left = width - millis.rem_euclid(width);
    (slot, Duration::from_millis(left.unsigned_abs()))
}

/// One event an operator replayed, before and after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replayed {
    pub event: InstitutionEvent,
    /// What the replay did; `None` when the event's connector is not in service.
    pub handled: Option<Handled>,
}

/// Events a replay reads at a time.
const REPLAY_PAGE: u64 = 500;

/// Acts again on the stored events `filter` selects, oldest first, with the
/// connectors now in service: after an outage of the queue, or once the accounts
/// an event named are known, or after a connector fix. Syncs coalesce as for new
/// events. A `received` event another process is acting on is left to it.
pub async fn replay(
    ctx: &Env,
    filter: &EventFilter,
    window: Duration,
) -> Result<Vec<Replayed>, InboundError> {
    let mut out = Vec::new();
    let mut after: Option<(DateTime<Utc>, String)> = None;
    loop {
        let page = ctx
            .store
            .institution_events_after(
                filter,
                after.as_ref().map(|(at, id)| (*at, id.as_str())),
                REPLAY_PAGE,
            )
            .await?;
        let Some(last) = page.last() else {
            break;
        };
        after = Some((last.received_at, last.id.clone()));
        for event in page {
            if event.status == EventStatus::Received && !ctx.store.claim_event(&event.id).await? {
                continue;
            }
            let handled = match ctx.registry.get(&event.institution_id) {
                Ok(connector) => Some(process(ctx, &connector, &event, window, true).await?),
                Err(_) => None,
            };
            out.push(Replayed { event, handled });
        }
    }
    if !out.is_empty() {
        tracing::info!(events = out.len(), "Replayed institution webhooks.");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_in_one_window_share_a_slot_that_starts_when_it_ends() {
        let window = Duration::from_secs(2);
        let at = |ms: i64| DateTime::from_timestamp_millis(ms).unwrap();
        assert_eq!(slot(at(10_000), window), (5, Duration::from_millis(2000)));
        assert_eq!(slot(at(11_999), window), (5, Duration::from_millis(1)));
        assert_eq!(slot(at(12_000), window).0, 6);
        // A zero window still yields a slot per millisecond, never a division by zero.
        assert_eq!(slot(at(7), Duration::ZERO), (7, Duration::from_millis(1)));
    }
}
