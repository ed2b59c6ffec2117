//! The institution directory apps read: the institutions a tenant may offer its
//! users (every one in service, or the tenant's list), what each is, and how it is
//! doing as the fleet sees it. Health is read from every connection's latest outcome
//! in the database, so every process answers the same whatever its own breakers
//! say: connections whose latest outcome is a failure that is the institution's
//! (however long ago: a long outage backs syncs off for an hour) against those that
//! synced within [`HEALTH_WINDOW`]. Only failing is `down`, both is `degraded`,
//! otherwise `ok` (no news included). The workers' circuit breakers, as they
//! report them to the fleet, can make it worse, never better: open in every
//! worker that reported is `down`; open, probing or in adaptive mode in some is
//! `degraded`. So an outage shows before a connection's sync has failed.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::connectors::Registry;
use crate::domain::TenantId;
use crate::store::{FleetBreaker, RecentOutcome, Store, StoreError};

/// How far back an institution's health looks.
pub const HEALTH_WINDOW: chrono::Duration = chrono::Duration::minutes(30);

/// The failure reasons that are the institution's, not one connection's (a user
/// to ask again, our own trouble).
const INSTITUTION_REASONS: [&str; 3] = [
    "INSTITUTION_UNAVAILABLE",
    "INSTITUTION_ERROR",
    "RATE_LIMITED",
];

/// Ordered from good to bad.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// Syncing, or nothing says otherwise.
    Ok,
    /// Some connections failed for the institution's reasons while others synced,
    /// or some workers' breakers are open, probing, or in adaptive mode.
    Degraded,
    /// Every connection that tried lately failed for the institution's reasons,
    /// or the breaker is open in every worker that reported.
    Down,
}

/// One institution as apps see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub id: String,
    pub name: String,
    pub country: String,
    pub products: Vec<String>,
    /// Up to two letters from the name, for a badge where there is no logo.
    pub initials: String,
    pub health: Health,
}

/// A page of the directory: institutions whose name or id contains `search`,
/// serving every one of `products`, from after `after`, at most `limit`.
#[derive(Debug, Clone, Copy)]
pub struct Wanted<'a> {
    pub search: Option<&'a str>,
    pub products: &'a [String],
    pub after: Option<&'a After>,
    pub limit: usize,
}

/// Where a page of the directory resumes: after this name and id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct After {
    pub name: String,
    pub id: String,
}

/// The institutions `tenant` may offer, by name, as `wanted` asks (search in any
/// case), with their health; workers' breaker reports count when younger than
/// `breaker_window`.
pub async fn list(
    store: &Store,
    registry: &Registry,
    tenant: TenantId,
    wanted: Wanted<'_>,
    breaker_window: chrono::Duration,
) -> Result<Vec<Listed>, StoreError> {
    let Wanted {
        search,
        products,
        after,
        limit,
    } = wanted;
    let offered = store.tenant_institutions(tenant).await?;
    let needle = search
        .map(|s| s.trim().to_lowercase())
        .filter(|s| !s.is_empty());
    let mut served: Vec<_> = registry
        .all()
        .into_iter()
        .map(|served| served.connector)
        .filter(|c| offered.as_ref().is_none_or(|ids| ids.contains(&c.id)))
        .filter(|c| products.iter().all(|p| c.products.contains(p)))
        .filter(|c| {
            needle.as_ref().is_none_or(|n| {
                c.name.to_lowercase().contains(n) || c.id.to_lowercase().contains(n)
            })
        })
        .collect();
    served.sort_by(|a, b| (&a.name, &a.id).cmp(&(&b.name, &b.id)));
    let served: Vec<_> = served
        .into_iter()
        .filter(|c| after.is_none_or(|a| (&c.name, &c.id) > (&a.name, &a.id)))
        .take(limit)
        .collect();
    if served.is_empty() {
        return Ok(Vec::new());
    }
    let breakers = store.fleet_breakers(Utc::now() - breaker_window).await?;
    let health = health_all(store, &breakers).await?;
    Ok(served
        .into_iter()
        .map(|c| Listed {
            health: health.get(&c.id).copied().unwrap_or(Health::Ok),
            initials: initials(&c.name),
            id: c.id.clone(),
            name: c.name.clone(),
            country: c.country.clone(),
            products: c.products.clone(),
        })
        .collect())
}

/// How `institution` is doing as the fleet sees it; workers' breaker reports
/// count when younger than `breaker_window`.
pub async fn health_of(
    store: &Store,
    institution: &str,
    breaker_window: chrono::Duration,
) -> Result<Health, StoreError> {
    let breakers = store.fleet_breakers(Utc::now() - breaker_window).await?;
    Ok(health_all(store, &breakers)
        .await?
        .get(institution)
        .copied()
        .unwrap_or(Health::Ok))
}

/// How every institution with news is doing (the others are `ok`), from the
/// connections' outcomes and the workers' `breakers`.
pub async fn health_all(
    store: &Store,
    breakers: &BTreeMap<String, FleetBreaker>,
) -> Result<BTreeMap<String, Health>, StoreError> {
    let since = Utc::now() - HEALTH_WINDOW;
    let mut health = health(&store.recent_outcomes(since).await?, since);
    for (institution, breaker) in breakers {
        let seen = breaker_health(breaker);
        let entry = health.entry(institution.clone()).or_insert(Health::Ok);
        *entry = (*entry).max(seen);
    }
    Ok(health)
}

/// What the workers' breakers say: open in every worker that reported is `down`,
/// anything but closed and steady in some is `degraded`.
fn breaker_health(breaker: &FleetBreaker) -> Health {
    if breaker.processes > 0 && breaker.open == breaker.processes {
        Health::Down
    } else if breaker.open + breaker.half_open + breaker.degraded > 0 {
        Health::Degraded
    } else {
        Health::Ok
    }
}

/// Each institution's health from its connections' latest outcomes.
fn health(outcomes: &[RecentOutcome], since: DateTime<Utc>) -> BTreeMap<String, Health> {
    let mut tally: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for outcome in outcomes {
        let (failing, syncing) = tally.entry(&outcome.institution).or_default();
        let synced_last = outcome
            .last_synced_at
            .is_some_and(|at| at >= since && outcome.last_failure_at.is_none_or(|f| at >= f));
        if last_failed_for_institution(outcome) {
            *failing += 1;
        } else if synced_last {
            *syncing += 1;
        }
    }
    tally
        .into_iter()
        .map(|(institution, counts)| {
            let health = match counts {
                (0, _) => Health::Ok,
                (_, 0) => Health::Down,
                _ => Health::Degraded,
            };
            (institution.to_owned(), health)
        })
        .collect()
}

/// Whether the connection's latest outcome is a failure that is the institution's.
fn last_failed_for_institution(outcome: &RecentOutcome) -> bool {
    let latest_failure = match (outcome.last_failure_at, outcome.last_synced_at) {
        (Some(failed), Some(synced)) => failed > synced,
        (Some(_), None) => true,
        (None, _) => false,
    };
    latest_failure
        && outcome
            .last_failure_reason
            .as_deref()
            .is_some_and(|r| INSTITUTION_REASONS.iter().any(|code| r.starts_with(code)))
}

/// "Meridian Brokerage" → "MB"; "Albion" → "AL".
fn initials(name: &str) -> String {
    let words: Vec<&str> = name
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty() && w.chars().next().is_some_and(char::is_uppercase))
        .collect();
    let letters: String = match words.as_slice() {
        [] => name
            .chars()
            .filter(|c| c.is_alphanumeric())
            .take(2)
            .collect(),
        [one] => one.chars().take(2).collect(),
        [first, second, ..] => first
            .chars()
            .take(1)
            .chain(second.chars().take(1))
            .collect(),
    };
    letters.to_uppercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(
        institution: &str,
        synced: Option<i64>,
        failed: Option<(i64, &str)>,
    ) -> RecentOutcome {
        let at = |minutes_ago: i64| Utc::now() - chrono::Duration::minutes(minutes_ago);
        RecentOutcome {
            institution: institution.into(),
            last_synced_at: synced.map(at),
            last_failure_at: failed.map(|(m, _)| at(m)),
            last_failure_reason: failed.map(|(_, r)| format!("{r}: …")),
        }
    }

    #[test]
    fn health_follows_the_latest_outcome_of_each_connection() {
        let since = Utc::now() - HEALTH_WINDOW;
        let found = health(
            &[
                // Down: every connection's latest is the institution failing.
                outcome("a", Some(20), Some((5, "INSTITUTION_UNAVAILABLE"))),
                outcome("a", None, Some((3, "RATE_LIMITED"))),
                // Degraded: one fails, one synced after its failure.
                outcome("b", None, Some((2, "INSTITUTION_ERROR"))),
                outcome("b", Some(1), Some((4, "INSTITUTION_UNAVAILABLE"))),
                // Ok: a user to ask again is not the institution's fault.
                outcome("c", Some(10), Some((1, "REAUTH_REQUIRED"))),
                // Down: failing for hours, backed off; a success long ago is no news.
                outcome("d", None, Some((300, "INSTITUTION_UNAVAILABLE"))),
                outcome("d", Some(600), Some((1, "REAUTH_REQUIRED"))),
            ],
            since,
        );
        assert_eq!(found["a"], Health::Down);
        assert_eq!(found["b"], Health::Degraded);
        assert_eq!(found["c"], Health::Ok);
        assert_eq!(found["d"], Health::Down);
    }

    #[test]
    fn the_workers_breakers_can_only_make_health_worse() {
        let breaker = |processes, open, half_open, degraded| FleetBreaker {
            processes,
            open,
            half_open,
            degraded,
        };
        assert_eq!(breaker_health(&breaker(3, 3, 0, 0)), Health::Down);
        assert_eq!(breaker_health(&breaker(3, 2, 0, 0)), Health::Degraded);
        assert_eq!(breaker_health(&breaker(3, 0, 1, 0)), Health::Degraded);
        assert_eq!(breaker_health(&breaker(3, 0, 0, 1)), Health::Degraded);
        assert_eq!(breaker_health(&breaker(3, 0, 0, 0)), Health::Ok);
        assert!(Health::Ok < Health::Degraded && Health::Degraded < Health::Down);
    }

    #[test]
    fn initials_come_from_the_first_two_words() {
        assert_eq!(initials("Meridian Brokerage"), "MB");
        assert_eq!(initials("Keystone Trust & Custody"), "KT");
        assert_eq!(initials("Albion"), "AL");
        assert_eq!(initials("harbor savings"), "HA");
    }
}
