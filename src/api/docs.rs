//! The API's contract: the OpenAPI document generated from the handlers'
//! annotations (`/openapi.json`) and a page for people rendered from it (`/docs`),
//! self-contained so it works without internet access.

use std::fmt::Write;

use axum::Router;
use axum::response::Html;
use axum::routing::get;
use utoipa::openapi::path::ParameterIn;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{OpenApi as Document, RefOr};
use utoipa::{Modify, OpenApi};

use super::{
    ApiState, admin, admins, audit, connectors, consents, erasures, health, households,
    inbound_webhooks, institutions, instruments, link_sessions, quarantine, read, syncs, tenants,
    transactions, user_connections, webhooks,
};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "finsync",
        description = "Accounts, holdings and transactions of advisory clients, synced from their institutions. Every answer says how fresh its data is."
    ),
    paths(
        read::get_portfolio, read::get_accounts, read::get_holdings, read::get_positions,
        read::get_transactions, households::put, households::list, households::show,
        households::remove, households::positions,
        read::get_connections, institutions::list, link_sessions::create, link_sessions::show,
        user_connections::disconnect, syncs::request_sync, syncs::get_sync, transactions::annotate,
        admin::create_connection, admin::get_connection, admin::update_connection,
        admin::delete_connection,
        connectors::list_connectors, connectors::get_connector, connectors::put_connector,
        tenants::create_tenant, tenants::list_tenants, tenants::get_institutions, tenants::set_institutions,
        tenants::get_redirect_uris, tenants::set_redirect_uris, tenants::get_tenant,
        tenants::create_key, tenants::list_keys, tenants::revoke_key,
        tenants::list_users, erasures::erase_user, erasures::show, erasures::admin_erase_user,
        erasures::admin_show, consents::list, consents::admin_list, instruments::list_conflicts,
        webhooks::create_endpoint, webhooks::list_endpoints, webhooks::delete_endpoint,
        webhooks::endpoint_deliveries, webhooks::admin_deliveries,
        quarantine::list_quarantine,
        admins::create_admin, admins::list_admins, admins::revoke_admin, audit::list_entries,
        inbound_webhooks::receive, inbound_webhooks::list_events,
        health::healthz, health::ready,
    ),
    modifiers(&Security),
    tags(
        (name = "read", description = "Portfolios for advisory apps (API key, scope `read`)"),
        (name = "households", description = "A tenant's groups of its users, read as one (API key; scope `sync` to change)"),
        (name = "syncs", description = "On-demand syncs (API key, scope `sync` to request)"),
        (name = "connections", description = "A tenant's users' connections (API key, scope `sync`)"),
        (name = "annotations", description = "Users' tags and notes on transactions (API key, scope `sync`)"),
        (name = "webhooks", description = "Signed event deliveries to tenants' endpoints (API key; `sync` scope to change)"),
        (name = "institutions", description = "The institutions an app may offer its users, with their health (API key, scope `read`)"),
        (name = "link sessions", description = "An app links its own users: a session, the hosted link page it opens, and the way back (API key, scope `sync` to create)"),
        (name = "institution webhooks", description = "Webhooks institutions send (signed as each connector file says)"),
        (name = "admin", description = "Tenants, keys, users, connections, connectors, quarantine, institutions' webhooks, admins and the audit trail (an admin credential; each operation lists the roles that may call it)"),
        (name = "health", description = "Liveness and readiness"),
    )
)]
struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut Document) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A tenant's API key (`fsk_…`) with the scopes the operation needs.",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "admin",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A named admin credential (`fsa_…`), or the break-glass `server.admin_token`, which acts as `admin`. \
                         Each operation's requirement lists the roles that may call it (`admin`, `operator`, `auditor`); \
                         another role is refused with 403, and every call is recorded in the audit trail.",
                    ))
                    .build(),
            ),
        );
    }
}

pub fn document() -> Document {
    ApiDoc::openapi()
}

pub fn routes() -> Router<ApiState> {
    let document = document();
    let json = document.to_json().unwrap_or_default();
    let page = render(&document);
    Router::new()
        .route(
            "/openapi.json",
            get(move || {
                let json = json.clone();
                async move {
                    (
                        [(axum::http::header::CONTENT_TYPE, "application/json")],
                        json,
                    )
                }
            }),
        )
        .route("/docs", get(move || std::future::ready(Html(page.clone()))))
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// One section per operation: what it does, its parameters and its answers.
fn render(doc: &Document) -> String {
    let mut html = String::from(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>finsync API</title>\
         <style>body{font:15px/1.5 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}\
         code{background:#f3f3f3;padding:0 .25rem}h2{margin-top:2.5rem;border-bottom:1px solid #ddd}\
         .m{display:inline-block;min-width:4.5rem;font-weight:bold}table{border-collapse:collapse}\
         td,th{border:1px solid #ddd;padding:.2rem .5rem;text-align:left}</style></head><body>",
    );
    let _ = write!(
        html,
        "<h1>{}</h1><p>{}</p><p>The machine-readable contract is <a href=\"/openapi.json\">/openapi.json</a>. \
         Errors are <code>{{\"error\":{{\"code\",\"message\"}},\"request_id\"}}</code>; codes are stable.</p>",
        escape(&doc.info.title),
        escape(doc.info.description.as_deref().unwrap_or_default()),
    );
    for (path, item) in &doc.paths.paths {
        let operations = [
            ("GET", &item.get),
            ("POST", &item.post),
            ("PUT", &item.put),
            ("PATCH", &item.patch),
            ("DELETE", &item.delete),
        ];
        for (method, operation) in operations {
            let Some(op) = operation else { continue };
            let _ = write!(
                html,
                "<h2><span class=\"m\">{method}</span><code>{}</code></h2><p>{}</p>",
                escape(path),
                escape(
                    op.description
                        .as_deref()
                        .or(op.summary.as_deref())
                        .unwrap_or_default()
                ),
            );
            if let Some(parameters) = &op.parameters {
                html.push_str("<table><tr><th>parameter</th><th>in</th><th>required</th><th>meaning</th></tr>");
                for p in parameters {
                    let _ = write!(
                        html,
                        "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td></tr>",
                        escape(&p.name),
                        match p.parameter_in {
                            ParameterIn::Path => "path",
                            ParameterIn::Query => "query",
                            ParameterIn::Header => "header",
                            ParameterIn::Cookie => "cookie",
                        },
                        matches!(p.required, utoipa::openapi::Required::True),
                        escape(p.description.as_deref().unwrap_or_default()),
                    );
                }
                html.push_str("</table>");
            }
            html.push_str("<p>Answers: ");
            let answers: Vec<String> = op
                .responses
                .responses
                .iter()
                .map(|(status, response)| match response {
                    RefOr::T(r) if !r.description.is_empty() => {
                        format!("<code>{status}</code> {}", escape(&r.description))
                    }
                    _ => format!("<code>{status}</code>"),
                })
                .collect();
            html.push_str(&answers.join(", "));
            html.push_str("</p>");
        }
    }
    html.push_str("</body></html>");
    html
}
