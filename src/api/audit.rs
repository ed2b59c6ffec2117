//! The admin API's audit: a layer that sees that every `/admin/*` request whose
//! caller identified itself leaves exactly one entry in the trail, and the
//! auditors' view of the trail (`GET /admin/audit`).
//!
//! A handler that changes something records its entry itself, in the change's
//! transaction ([`super::auth::Admin::audit`] hands it the entry); the layer then
//! checks the entry is there (a change that rolled back left none). For everything
//! else (reads, refusals by role, failures) the layer appends the entry once the
//! answer is known. Such an entry is written after the answer is made: if the
//! database cannot take it, the request is logged and counted
//! (`finsync_audit_write_failures_total`), not undone. An entry's action is the route's `operationId` in the OpenAPI
//! document; its target names the route's path parameters, a user only by a keyed
//! pseudonym.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use axum::extract::{MatchedPath, RawPathParams, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::get;
use axum::{Json, RequestExt, Router};
use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::auth::{Admin, Audit};
use super::error::ErrorBody;
use super::extract::Query;
use super::{ApiError, ApiState, REQUEST_ID, paging};
use crate::store::{Actor, AuditEntry, AuditFilter, AuditRecord, Outcome};

pub(super) fn routes() -> Router<ApiState> {
    Router::new().route("/admin/audit", get(list_entries))
}

/// The admin operations by method and route template, named by their ids.
static OPERATIONS: LazyLock<HashMap<(String, String), String>> = LazyLock::new(|| {
    let document = super::document();
    let mut operations = HashMap::new();
    for (path, item) in &document.paths.paths {
        let methods = [
            ("GET", &item.get),
            ("POST", &item.post),
            ("PUT", &item.put),
            ("PATCH", &item.patch),
            ("DELETE", &item.delete),
        ];
        for (method, operation) in methods {
            if let Some(id) = operation.as_ref().and_then(|o| o.operation_id.clone()) {
                operations.insert((method.to_owned(), path.clone()), id);
            }
        }
    }
    operations
});

/// What one admin request has to say to the audit layer.
#[derive(Clone, Default)]
pub(super) struct AuditSlot(Arc<Mutex<Slot>>);

#[derive(Default)]
struct Slot {
    action: String,
    target: Option<String>,
    request_id: Option<String>,
    actor: Option<Actor>,
    denied: bool,
    handed_over: bool,
}

impl AuditSlot {
    fn lock(&self) -> std::sync::MutexGuard<'_, Slot> {
        // A panic while holding this lock leaves plain data behind: still usable.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(super) fn identified(&self, actor: Actor) {
        self.lock().actor = Some(actor);
    }

    pub(super) fn denied(&self) {
        self.lock().denied = true;
    }

    /// The entry for the handler to record with its change.
    pub(super) fn handed_over(&self) -> AuditEntry {
        let mut slot = self.lock();
        slot.handed_over = true;
        entry(&slot)
    }
}

fn entry(slot: &Slot) -> AuditEntry {
    let mut entry = AuditEntry::new(
        slot.actor.clone().unwrap_or_else(Actor::system),
        slot.action.clone(),
    )
    .request_id(slot.request_id.clone());
    if let Some(target) = &slot.target {
        entry = entry.target(target.clone());
    }
    entry
}

/// `tenant:…/key:…` from the route's path parameters (`tenant_id` → `tenant`); a
/// user id becomes its pseudonym, as the trail outlives users.
fn target(state: &ApiState, params: &RawPathParams) -> Option<String> {
    let parts: Vec<String> = params
        .iter()
        .map(|(name, value)| {
            let kind = name
                .strip_suffix("_id")
                .or_else(|| name.strip_suffix("_name"))
                .unwrap_or(name);
            let value = if kind == "user" {
                state
                    .linker
                    .vault
                    .pseudonym(value)
                    .unwrap_or_else(|_| "unknown".to_owned())
            } else {
                // Decoded from the path: whatever a caller sent, printable.
                value
                    .chars()
                    .map(|c| if c.is_control() { '?' } else { c })
                    .collect()
            };
            format!("{kind}:{value}")
        })
        .collect();
    (!parts.is_empty()).then(|| parts.join("/"))
}

/// Sees that an identified `/admin/*` request leaves one entry: the handler's,
/// recorded with its change, or one appended here with how the request ended.
pub(super) async fn record(
    State(state): State<ApiState>,
    mut request: Request,
    next: Next,
) -> Response {
    let Some(route) = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .filter(|route| route.starts_with("/admin/"))
    else {
        return next.run(request).await;
    };
    // HEAD runs the GET handler.
    let method = match request.method().as_str() {
        "HEAD" => "GET",
        other => other,
    };
    let action = OPERATIONS
        .get(&(method.to_owned(), route.clone()))
        .cloned()
        .unwrap_or_else(|| format!("{} {route}", request.method()));
    let params = request.extract_parts::<RawPathParams>().await.ok();
    let slot = AuditSlot(Arc::new(Mutex::new(Slot {
        action,
        target: params.as_ref().and_then(|p| target(&state, p)),
        request_id: request
            .headers()
            .get(&REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        ..Slot::default()
    })));
    request.extensions_mut().insert(slot.clone());
    let started = Utc::now().trunc_subsecs(6);
    let response = next.run(request).await;
    let status = response.status();
    let (handed_over, request_id, action) = {
        let slot = slot.lock();
        (
            slot.handed_over,
            slot.request_id.clone(),
            slot.action.clone(),
        )
    };
    // The handler's entry commits with its change, or not at all; whatever the
    // answer says after it, the trail is asked.
    if handed_over && let Some(request_id) = &request_id {
        match state
            .env
            .store
            .audit_recorded(request_id, &action, started)
            .await
        {
            Ok(true) => return response,
            Ok(false) => {}
            Err(e) => {
                state.env.store.note(&e);
                tracing::error!(error = %e, "Could not check an admin request's audit entry.");
            }
        }
    }
    let pending = {
        let slot = slot.lock();
        match &slot.actor {
            // Nobody identified: nothing to attribute (and no way to flood the trail).
            None => None,
            Some(_) => {
                let outcome = if slot.denied {
                    Outcome::Denied
                } else if status.is_success() {
                    Outcome::Ok
                } else {
                    Outcome::Failed
                };
                let mut entry = entry(&slot).outcome(outcome);
                if outcome != Outcome::Ok {
                    entry = entry.detail(serde_json::json!({ "status": status.as_u16() }));
                }
                Some(entry)
            }
        }
    };
    if let Some(entry) = pending
        && let Err(e) = state.env.store.record(entry).await
    {
        state.env.store.note(&e);
        metrics::counter!("finsync_audit_write_failures_total").increment(1);
        tracing::error!(error = %e, "Admin request not audited.");
    }
    response
}

/// Which entries to list; every filter narrows, exactly.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct AuditQuery {
    /// Who acted: `admin:<name>`, `break-glass`, `key:<prefix>`, `cli`, `system`
    /// or `user`.
    actor: Option<String>,
    /// What was done: an admin operation's id (`create_tenant`) or an event
    /// (`connection.linked`, `consent.expired`).
    action: Option<String>,
    /// What it was done to, as entries name it (`tenant:<id>`, `connection:<id>`).
    target: Option<String>,
    /// From this time (RFC 3339), inclusive.
    since: Option<DateTime<Utc>>,
    /// Before this time (RFC 3339).
    until: Option<DateTime<Utc>>,
    /// Entries per page, 1 to 500, 100 by default.
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// A page of the audit trail, oldest first.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct AuditPage {
    entries: Vec<AuditRecord>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_cursor: Option<String>,
}

/// The audit trail, oldest first: who did what to what, when, and how it ended.
/// `finsync audit verify` checks that nobody changed it.
#[utoipa::path(
    get, path = "/admin/audit", tag = "admin",
    params(AuditQuery),
    responses(
        (status = 200, body = AuditPage), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
    ),
    security(("admin" = ["admin", "auditor"]))
)]
pub(super) async fn list_entries(
    State(state): State<ApiState>,
    _: Admin<Audit>,
    Query(query): Query<AuditQuery>,
) -> Result<Json<AuditPage>, ApiError> {
    let limit = paging::limit(query.limit, 100, 500)?;
    if let (Some(since), Some(until)) = (query.since, query.until)
        && since >= until
    {
        return Err(ApiError::invalid("`since` must be before `until`"));
    }
    let filter = AuditFilter {
        actor: query.actor,
        action: query.action,
        target: query.target,
        since: query.since,
        until: query.until,
    };
    let after: Option<i64> = query.cursor.as_deref().map(paging::position).transpose()?;
    let entries = state
        .env
        .store
        .audit_entries(&filter, after, u64::from(limit) + 1)
        .await?;
    let (entries, next_cursor) = paging::page(entries, limit, |e| e.seq);
    Ok(Json(AuditPage {
        entries,
        next_cursor,
    }))
}
