//! Erasing a tenant's user on request: every grant revoked at its institution,
//! every record of the user deleted (synced data, quarantined records,
//! institutions' events, runs, requests, link sessions, outgoing webhook payloads,
//! the cached views in Redis and in every process), and only a pseudonym left in
//! the audit trail.
//!
//! The request is recorded first ([`request`]) and answered at once; the work runs
//! in steps that can each be repeated ([`run`]): disconnecting what is still
//! connected, one transaction that deletes the rest, dropping the cached view
//! everywhere, closing the request. A run holds a lease it renews; a run that
//! crashed or failed leaves the request pending, and the scheduler's erasure loop
//! runs it again ([`run_due`]). Nothing is half-erased without saying so: the
//! request says `pending`, with the last run's error.

use chrono::Utc;

use super::Env;
use crate::domain::{ConnectionStatus, ErasureId, TenantId, UserId};
use crate::store::{Actor, AuditEntry, ErasureRecord, ErasureResult, StoreError};
use crate::tokens::TokenError;
use crate::vault::VaultError;

/// How long one run may take before another process may take the erasure over.
const LEASE: chrono::Duration = chrono::Duration::minutes(10);
/// How long after a failed run the next one starts.
const RETRY_AFTER: chrono::Duration = chrono::Duration::seconds(30);

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ErasureError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Tokens(#[from] TokenError),
    #[error(transparent)]
    Vault(#[from] VaultError),
    #[error("the cached view could not be dropped everywhere (Redis did not confirm)")]
    CacheKept,
    #[error("the erasure's lease ran out and another run took it over")]
    LeaseLost,
}

/// Records a request to erase `user` of `tenant` (with `audit`, the requester's
/// entry) and starts it in this process. An erasure of the same user already
/// under way is returned instead of a second one.
pub async fn request(
    ctx: &Env,
    tenant: TenantId,
    user: &UserId,
    audit: AuditEntry,
) -> Result<ErasureRecord, ErasureError> {
    let pseudonym = ctx.tokens.vault.pseudonym(user.as_str())?;
    let (record, new) = ctx
        .store
        .request_erasure(tenant, user, &pseudonym, audit)
        .await?;
    if new {
        tracing::info!(erasure = %record.id, tenant = %tenant, "Erasure requested.");
        let ctx = ctx.clone();
        let id = record.id;
        tokio::spawn(async move { run_logged(&ctx, id).await });
    }
    Ok(record)
}

/// Runs every erasure that is due (new, or whose last run crashed or failed).
pub async fn resume(ctx: &Env) -> Result<usize, StoreError> {
    let due = ctx.store.due_erasures(Utc::now()).await?;
    let mut ran = 0;
    for id in due {
        if run_logged(ctx, id).await {
            ran += 1;
        }
    }
    Ok(ran)
}

/// Runs due erasures every `every` until the task is dropped: beside the
/// scheduler's ticks, so a long erasure holds up no sync.
pub async fn run_due(ctx: Env, every: std::time::Duration) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        match resume(&ctx).await {
            Ok(0) => {}
            Ok(erased) => tracing::info!(erased, "Resumed erasures finished."),
            Err(e) => {
                ctx.store.note(&e);
                tracing::warn!(error = %e, "Could not look for erasures to resume.");
            }
        }
    }
}

/// [`run`] as one owner, its failure recorded on the erasure for the next run;
/// whether it finished.
async fn run_logged(ctx: &Env, id: ErasureId) -> bool {
    let owner = uuid::Uuid::new_v4().to_string();
    match run(ctx, id, &owner).await {
        Ok(finished) => finished,
        Err(error) => {
            tracing::warn!(erasure = %id, %error, "Erasure stopped short; it will run again.");
            if let Err(e) = ctx
                .store
                .erasure_failed(id, &owner, &error.to_string(), Utc::now() + RETRY_AFTER)
                .await
            {
                tracing::error!(erasure = %id, error = %e, "Could not note an erasure's failure.");
            }
            false
        }
    }
}

/// Carries out one erasure as `owner` if nobody else is: disconnects each of the
/// user's connections still connected (revoking the grant at the institution),
/// deletes what is left of the user, drops their cached view everywhere (a view
/// that cannot be dropped fails the run), then closes the request. Each step can
/// be repeated; the lease is renewed after each connection. Returns whether this
/// run finished it.
pub async fn run(ctx: &Env, id: ErasureId, owner: &str) -> Result<bool, ErasureError> {
    let Some((erasure, user)) = ctx
        .store
        .claim_erasure(id, owner, Utc::now() + LEASE)
        .await?
    else {
        return Ok(false);
    };
    let tenant = erasure.tenant_id;
    let mut result = ErasureResult::default();
    for connection in ctx.store.user_connections(tenant, &user).await? {
        result.connections += 1;
        if connection.status == ConnectionStatus::Revoked {
            result.already_disconnected += 1;
            continue;
        }
        let audit = AuditEntry::new(Actor::system(), "connection.disconnect")
            .detail(serde_json::json!({ "erasure": id }));
        let done = ctx.tokens.disconnect(connection.id, audit).await?;
        let institution = connection.institution_id.clone();
        if done.revoked_at_institution {
            result.revoked_at.push(institution);
        } else {
            result.not_confirmed.push(institution);
        }
        if !ctx
            .store
            .renew_erasure(id, owner, Utc::now() + LEASE)
            .await?
        {
            return Err(ErasureError::LeaseLost);
        }
    }
    ctx.store.erase_user_rows(tenant, &user).await?;
    // After the rows: a reader rebuilding the view now finds nobody to show.
    if !ctx
        .cache
        .invalidate_confirmed(&crate::portfolio::cache_key(tenant, &user))
        .await
    {
        return Err(ErasureError::CacheKept);
    }
    let audit = AuditEntry::new(Actor::system(), "user.erased")
        .target(format!("tenant:{tenant}/user:{}", erasure.user_pseudonym))
        .detail(serde_json::json!({
            "erasure": id,
            "connections": result.connections,
            "not_confirmed": result.not_confirmed,
        }));
    ctx.store.close_erasure(id, owner, &result, audit).await?;
    tracing::info!(erasure = %id, connections = result.connections, "User erased.");
    Ok(true)
}
