//! The operators' view of the fleet, as the status page shows it: per institution,
//! its health as every connection's latest outcome says ([`crate::directory`]), the
//! syncs of the last hour (how many, how many succeeded, the 95th percentile of
//! their duration), its connections by standing and its open quarantine; and the
//! connections failing now, newest first. Everything is read from the database, so
//! every API process shows the same.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::connectors::Registry;
use crate::directory::{self, Health};
use crate::store::{FleetBreaker, Store, StoreError};

/// How far back the sync figures look.
pub const WINDOW: chrono::Duration = chrono::Duration::hours(1);
/// Failing connections listed at most.
const FAILURES_SHOWN: usize = 25;

/// One institution's standing.
#[derive(Debug, Clone, PartialEq)]
pub struct InstitutionStatus {
    pub id: String,
    pub name: String,
    pub health: Health,
    /// Syncs that finished within [`WINDOW`], and of them those that succeeded
    /// (some accounts unread included) and those that failed.
    pub syncs: usize,
    pub succeeded: usize,
    pub failed: usize,
    /// 95th percentile of those syncs' durations.
    pub p95: Option<Duration>,
    pub active: usize,
    /// Active connections whose latest outcome is a failure: their data is stale.
    pub failing: usize,
    pub needs_user: usize,
    pub open_quarantine: u64,
    /// Its circuit breakers across the fleet's workers.
    pub breakers: FleetBreaker,
}

impl InstitutionStatus {
    /// An institution with nothing counted yet.
    fn new(id: &str, name: &str, health: Health) -> Self {
        Self {
            id: id.to_owned(),
            name: name.to_owned(),
            health,
            syncs: 0,
            succeeded: 0,
            failed: 0,
            p95: None,
            active: 0,
            failing: 0,
            needs_user: 0,
            open_quarantine: 0,
            breakers: FleetBreaker::default(),
        }
    }

    /// Share of the window's syncs that succeeded.
    pub fn success_rate(&self) -> Option<f64> {
        (self.syncs > 0).then(|| self.succeeded as f64 / self.syncs as f64)
    }
}

/// A connection failing now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failing {
    pub connection_id: String,
    pub institution: String,
    /// The stable code (`INSTITUTION_UNAVAILABLE`, …).
    pub code: String,
    /// The message fit for people that goes with it.
    pub message: String,
    pub since: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Overview {
    pub institutions: Vec<InstitutionStatus>,
    pub failing: Vec<Failing>,
    /// Webhook deliveries of the last day that used up their attempts.
    pub failed_deliveries: u64,
    pub open_quarantine: u64,
    pub as_of: DateTime<Utc>,
}

/// The fleet as the status page shows it; workers' breaker reports count when
/// younger than `breaker_window`.
pub async fn overview(
    store: &Store,
    registry: &Registry,
    breaker_window: chrono::Duration,
) -> Result<Overview, StoreError> {
    let now = Utc::now();
    let breakers = store.fleet_breakers(now - breaker_window).await?;
    let health = directory::health_all(store, &breakers).await?;
    let standings = store.connection_standings().await?;
    let runs = store.runs_finished_since(now - WINDOW).await?;
    let quarantine = store.open_quarantine_by_connection(None).await?;
    let institution_of: BTreeMap<&str, &str> = standings
        .iter()
        .map(|c| (c.id.as_str(), c.institution_id.as_str()))
        .collect();
    let mut institutions: BTreeMap<String, InstitutionStatus> = registry
        .all()
        .into_iter()
        .map(|served| {
            let c = served.connector;
            let health = health.get(&c.id).copied().unwrap_or(Health::Ok);
            (c.id.clone(), InstitutionStatus::new(&c.id, &c.name, health))
        })
        .collect();
    // An institution no longer in service still has its connections counted.
    for c in &standings {
        institutions
            .entry(c.institution_id.clone())
            .or_insert_with(|| {
                let health = health.get(&c.institution_id).copied();
                InstitutionStatus::new(
                    &c.institution_id,
                    &c.institution_id,
                    health.unwrap_or(Health::Ok),
                )
            });
    }
    let mut durations: BTreeMap<&str, Vec<Duration>> = BTreeMap::new();
    for run in &runs {
        let Some(institution) = institution_of.get(run.connection_id.as_str()) else {
            continue;
        };
        let Some(status) = institutions.get_mut(*institution) else {
            continue;
        };
        status.syncs += 1;
        if run.outcome == "failed" {
            status.failed += 1;
        } else {
            status.succeeded += 1;
        }
        if let Some(finished) = run.finished_at {
            let took = (finished - run.started_at).to_std().unwrap_or_default();
            durations.entry(institution).or_default().push(took);
        }
    }
    for (institution, mut took) in durations {
        if let Some(status) = institutions.get_mut(institution) {
            status.p95 = percentile(&mut took, 0.95);
        }
    }
    let mut failing = Vec::new();
    for c in &standings {
        let Some(status) = institutions.get_mut(&c.institution_id) else {
            continue;
        };
        match c.status.as_str() {
            "active" => {
                status.active += 1;
                let failed_last = match (c.last_failure_at, c.last_synced_at) {
                    (Some(failed), Some(synced)) => failed > synced,
                    (Some(_), None) => true,
                    (None, _) => false,
                };
                if failed_last {
                    status.failing += 1;
                    if let (Some(since), Some(reason)) = (c.last_failure_at, &c.last_failure_reason)
                    {
                        let (code, message) = reason
                            .split_once(':')
                            .map_or((reason.as_str(), ""), |(c, m)| (c, m.trim()));
                        failing.push(Failing {
                            connection_id: c.id.clone(),
                            institution: status.name.clone(),
                            code: code.trim().to_owned(),
                            message: message.to_owned(),
                            since,
                        });
                    }
                }
            }
            "reauth_required" => status.needs_user += 1,
            _ => {}
        }
    }
    let mut open_quarantine = 0;
    for (_, institution, open) in quarantine {
        open_quarantine += open;
        if let Some(status) = institutions.get_mut(&institution) {
            status.open_quarantine += open;
        }
    }
    failing.sort_by_key(|f| std::cmp::Reverse(f.since));
    failing.truncate(FAILURES_SHOWN);
    for (id, fleet) in breakers {
        if let Some(status) = institutions.get_mut(&id) {
            status.breakers = fleet;
        }
    }
    let mut institutions: Vec<InstitutionStatus> = institutions.into_values().collect();
    institutions.sort_by(|a, b| (&a.name, &a.id).cmp(&(&b.name, &b.id)));
    Ok(Overview {
        institutions,
        failing,
        failed_deliveries: store
            .failed_deliveries_since(now - chrono::Duration::days(1))
            .await?,
        open_quarantine,
        as_of: now,
    })
}

/// The `q` quantile of `values` (nearest rank), `None` when there are none.
fn percentile(values: &mut [Duration], q: f64) -> Option<Duration> {
    if values.is_empty() {
        return None;
    }
    values.sort();
    let rank = (q * values.len() as f64).ceil() as usize;
    values.get(rank.saturating_sub(1)).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut v: Vec<Duration> = (1..=20).map(Duration::from_secs).collect();
        assert_eq!(percentile(&mut v, 0.95), Some(Duration::from_secs(19)));
        let mut one = vec![Duration::from_millis(7)];
        assert_eq!(percentile(&mut one, 0.95), Some(Duration::from_millis(7)));
        assert_eq!(percentile(&mut [], 0.95), None);
    }
}
