//! Admin identities and the audit trail: every admin route refuses the roles its
//! contract does not name and leaves exactly one entry; a change is recorded with
//! what it changed and never with a secret; a revoked credential stops at once;
//! and `audit verify` names the entry someone edited, deleted or moved in SQL.

use std::time::Duration;

use finsync::store::{AUDIT_GENESIS, Actor, AdminName, AuditEntry, AuditFilter, Role, Store};
use sea_orm::ConnectionTrait;
use secrecy::ExposeSecret;
use serde_json::{Value, json};

use crate::support::{ADMIN_TOKEN, Backend, TestApp, by_test, finsync, migrated_store};

/// Issues a credential with `role` straight through the store, as
/// `finsync admins create` does.
async fn credential(store: &Store, name: &str, role: Role) -> String {
    let (_, credential) = store
        .create_admin(
            &AdminName::parse(name).unwrap(),
            role,
            "cli",
            AuditEntry::new(Actor::cli(), "admin.create"),
        )
        .await
        .unwrap();
    credential.0.expose_secret().to_owned()
}

/// The entries one request left, by its request id.
async fn entries_of(store: &Store, request_id: &str) -> Vec<finsync::store::AuditRecord> {
    store
        .audit_entries(&AuditFilter::default(), None, 100_000)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.request_id.as_deref() == Some(request_id))
        .collect()
}

#[tokio::test]
async fn every_admin_route_refuses_the_roles_it_does_not_name_and_leaves_one_entry() {
    let app = TestApp::builder().tenant("advisor").build().await;
    let store = &app.app.ctx.store;
    let roles = [
        (Role::Admin, credential(store, "ada", Role::Admin).await),
        (
            Role::Operator,
            credential(store, "otto", Role::Operator).await,
        ),
        (
            Role::Auditor,
            credential(store, "audrey", Role::Auditor).await,
        ),
    ];
    let document: Value = reqwest::get(format!("{}/openapi.json", app.address))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let http = finsync::http::client();
    let mut walked = 0;
    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let Some(requirement) = operation["security"]
                .as_array()
                .and_then(|s| s.iter().find_map(|r| r.get("admin")))
            else {
                continue;
            };
            let allowed: Vec<&str> = requirement
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r.as_str().unwrap())
                .collect();
            assert!(!allowed.is_empty(), "{method} {path} names no role");
            let operation_id = operation["operationId"].as_str().unwrap();
            // Path parameters that name nothing: a refusal must come before any
            // lookup, and an allowed call must not change anything real.
            let url = format!("{}{}", app.address, path)
                .replace("{tenant_id}", "00000000-0000-0000-0000-000000000000")
                .replace("{connection_id}", "00000000-0000-0000-0000-000000000000")
                .replace("{key_id}", "nokey")
                .replace("{user_id}", "nobody")
                .replace("{connector_id}", "nowhere")
                .replace("{admin_name}", "nobody");
            for (role, bearer) in &roles {
                let request_id = uuid::Uuid::new_v4().to_string();
                let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
                let mut request = http
                    .request(method.clone(), &url)
                    .bearer_auth(bearer)
                    .header("x-request-id", &request_id);
                if method != reqwest::Method::GET && method != reqwest::Method::DELETE {
                    request = request.json(&json!({}));
                }
                let response = request.send().await.unwrap();
                let status = response.status().as_u16();
                let may = allowed.contains(&role.as_str());
                if may {
                    assert!(
                        status != 401 && status != 403,
                        "{role} may call {method} {path} but got {status}"
                    );
                } else {
                    assert_eq!(status, 403, "{role} must be refused {method} {path}");
                    let body: Value = response.json().await.unwrap();
                    assert_eq!(body["error"]["code"], "FORBIDDEN");
                }
                let entries = entries_of(store, &request_id).await;
                let own: Vec<_> = entries
                    .iter()
                    .filter(|e| e.action == operation_id)
                    .collect();
                assert_eq!(
                    own.len(),
                    1,
                    "{role} calling {method} {path} left {entries:?}"
                );
                let expected = if may {
                    if (200..300).contains(&status) {
                        "ok"
                    } else {
                        "failed"
                    }
                } else {
                    "denied"
                };
                assert_eq!(
                    serde_json::to_value(own[0].outcome).unwrap(),
                    expected,
                    "{role} {method} {path}"
                );
                assert!(own[0].actor.ends_with(&format!(
                    ":{}",
                    match role {
                        Role::Admin => "ada",
                        Role::Operator => "otto",
                        Role::Auditor => "audrey",
                    }
                )));
                walked += 1;
            }
        }
    }
    assert!(walked >= 3 * 25, "only {walked} calls walked");

    // Without a credential nothing is attributed, and nothing is written.
    let before = store.audit_head().await.unwrap();
    let anonymous = http
        .get(format!("{}/admin/tenants", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    assert_eq!(store.audit_head().await.unwrap(), before);
}

#[tokio::test]
async fn admin_changes_are_recorded_with_what_they_changed_and_no_secret() {
    let app = TestApp::builder()
        .postgres()
        .tenant("advisor")
        .build()
        .await;
    let store = &app.app.ctx.store;
    let http = finsync::http::client();
    let admin = credential(store, "ada", Role::Admin).await;
    let api = |method: reqwest::Method, path: &str| {
        http.request(method, format!("{}{path}", app.address))
            .bearer_auth(&admin)
    };

    // An admin issues an operator, who cannot issue anyone.
    let created: Value = api(reqwest::Method::POST, "/admin/admins")
        .json(&json!({ "name": "otto", "role": "operator" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let operator = created["credential"].as_str().unwrap().to_owned();
    assert!(operator.starts_with("fsa_"));
    let refused = http
        .post(format!("{}/admin/admins", app.address))
        .bearer_auth(&operator)
        .json(&json!({ "name": "eve", "role": "admin" }))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    let again = api(reqwest::Method::POST, "/admin/admins")
        .json(&json!({ "name": "otto", "role": "auditor" }))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 409, "names are never reused");

    // A tenant and a key: each recorded with its target and the key's prefix only.
    let tenant: Value = api(reqwest::Method::POST, "/admin/tenants")
        .json(&json!({ "name": "northbank" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let tenant_id = tenant["tenant"]["id"].as_str().unwrap().to_owned();
    let first_key = tenant["api_key"]["secret"].as_str().unwrap().to_owned();
    let key: Value = api(
        reqwest::Method::POST,
        &format!("/admin/tenants/{tenant_id}/keys"),
    )
    .json(&json!({ "scopes": ["read"] }))
    .send()
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let key_id = key["id"].as_str().unwrap().to_owned();
    let second_key = key["secret"].as_str().unwrap().to_owned();
    let revoked = api(
        reqwest::Method::DELETE,
        &format!("/admin/tenants/{tenant_id}/keys/{key_id}"),
    )
    .send()
    .await
    .unwrap();
    assert!(revoked.status().is_success());

    let trail: Value = api(
        reqwest::Method::GET,
        &format!("/admin/audit?actor=admin:ada&target=tenant:{tenant_id}"),
    )
    .send()
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let entries = trail["entries"].as_array().unwrap();
    let actions: Vec<&str> = entries
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["create_tenant"], "{trail}");
    assert_eq!(entries[0]["outcome"], "ok");
    assert_eq!(
        entries[0]["detail"]["key_prefix"],
        first_key.split('_').nth(1).unwrap()
    );
    let keys: Value = api(
        reqwest::Method::GET,
        &format!("/admin/audit?target=tenant:{tenant_id}/key:{key_id}"),
    )
    .send()
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let actions: Vec<&str> = keys["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["create_key", "revoke_key"], "{keys}");

    // The auditor reads the trail, and only the trail.
    let auditor = credential(store, "audrey", Role::Auditor).await;
    let read = http
        .get(format!("{}/admin/audit?action=create_admin", app.address))
        .bearer_auth(&auditor)
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200);
    let read: Value = read.json().await.unwrap();
    assert_eq!(read["entries"][0]["target"], "admin:otto");
    assert_eq!(read["entries"][0]["actor"], "admin:ada");

    // Paging walks the trail oldest first without repeating an entry.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/admin/audit?limit=2&cursor={c}"),
            None => "/admin/audit?limit=2".to_owned(),
        };
        let page: Value = api(reqwest::Method::GET, &path)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        seen.extend(
            page["entries"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["seq"].as_i64().unwrap()),
        );
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert!(seen.windows(2).all(|w| w[1] == w[0] + 1), "{seen:?}");

    // A revoked credential stops at once.
    let revoke = api(reqwest::Method::DELETE, "/admin/admins/otto")
        .send()
        .await
        .unwrap();
    assert_eq!(revoke.status(), 200);
    let after = http
        .get(format!("{}/admin/quarantine", app.address))
        .bearer_auth(&operator)
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), 401);

    // The break-glass token still works, and says so in the trail.
    let glass = http
        .get(format!("{}/admin/tenants", app.address))
        .bearer_auth(ADMIN_TOKEN)
        .header("x-request-id", "break-glass-read")
        .send()
        .await
        .unwrap();
    assert_eq!(glass.status(), 200);
    let entry = &entries_of(store, "break-glass-read").await[0];
    assert_eq!(entry.actor, "break-glass");

    // A request id that is not plain text is replaced, in the answer and the trail.
    let odd = "<script>".repeat(4);
    let answer = http
        .get(format!("{}/admin/tenants", app.address))
        .bearer_auth(&admin)
        .header("x-request-id", &odd)
        .send()
        .await
        .unwrap();
    let given = answer.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_ne!(given, odd);
    assert_eq!(entries_of(store, &given).await.len(), 1);
    assert!(entries_of(store, &odd).await.is_empty());

    // No credential, key or token anywhere in the trail.
    let dump = crate::support::dump_database(store).await;
    let audit_rows: String = dump
        .lines()
        .filter(|l| l.contains("ada") || l.contains("break-glass"))
        .collect();
    assert!(!audit_rows.is_empty());
    for secret in [&admin, &operator, &auditor, &first_key, &second_key] {
        assert!(
            !dump.contains(secret.as_str()),
            "a secret is stored in clear"
        );
    }
    assert!(!dump.contains(ADMIN_TOKEN));
    assert!(broken_now(store).await.is_none());
}

/// Where `verify` finds the trail broken now, and why; `None` when it holds.
async fn broken_now(store: &Store) -> Option<(i64, String)> {
    store
        .verify_audit(None, &crate::support::audit_seals)
        .await
        .unwrap()
        .broken
        .map(|b| (b.seq, b.reason))
}

/// Five entries, `thing:1` to `thing:5`.
async fn five_entries(store: &Store) {
    for n in 1..=5 {
        store
            .record(by_test().target(format!("thing:{n}")))
            .await
            .unwrap();
    }
}

/// Five entries, then one tampering at a time: each is named by `verify`.
#[tokio::test]
async fn audit_verify_names_the_entry_edited_deleted_or_moved() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let (db, store) = migrated_store(backend, 2).await;
        five_entries(&store).await;
        let clean = store
            .verify_audit(None, &crate::support::audit_seals)
            .await
            .unwrap();
        assert_eq!(clean.verified, 5);
        assert!(clean.broken.is_none());
        let (head_seq, head_hash) = clean.head.clone().unwrap();
        let sql = |statement: &str| {
            let statement = statement.to_owned();
            let store = store.clone();
            async move { store.db().execute_unprepared(&statement).await.unwrap() }
        };

        // Edited: the entry's own hash no longer matches.
        sql("UPDATE audit_log SET target = 'thing:x' WHERE seq = 3").await;
        let (seq, reason) = broken_now(&store).await.unwrap();
        assert_eq!(seq, 3, "{backend:?}: {reason}");
        assert!(reason.contains("altered"), "{reason}");
        sql("UPDATE audit_log SET target = 'thing:3' WHERE seq = 3").await;
        assert!(broken_now(&store).await.is_none());

        // Edited and rehashed by someone who knows the scheme (SHA-256 of the
        // fields and the previous hash as one JSON array): entry 3 holds, entry 4
        // no longer follows it.
        let entries = store
            .audit_entries(&AuditFilter::default(), None, 10)
            .await
            .unwrap();
        let (second, third) = (&entries[1], &entries[2]);
        let forged = json!([
            third.seq,
            third
                .at
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            third.actor,
            third.action,
            "thing:forged",
            "ok",
            third.request_id,
            third.detail.as_ref().map(|d| d.to_string()),
            second.hash,
        ]);
        let forged_hash = finsync::fingerprint::sha256_hex(forged.to_string().as_bytes());
        sql(&format!(
            "UPDATE audit_log SET target = 'thing:forged', hash = '{forged_hash}' WHERE seq = 3"
        ))
        .await;
        let (seq, reason) = broken_now(&store).await.unwrap();
        assert_eq!(seq, 4, "{reason}");
        assert!(reason.contains("does not follow"), "{reason}");
        sql(&format!(
            "UPDATE audit_log SET target = 'thing:3', hash = '{}' WHERE seq = 3",
            third.hash
        ))
        .await;
        assert!(broken_now(&store).await.is_none());

        // A row slipped in below the numbering is caught too.
        sql(&format!(
            "INSERT INTO audit_log (seq, at, actor, action, target, outcome, request_id, detail, prev_hash, hash) \
             VALUES (0, '{}', 'cli', 'test', NULL, 'ok', NULL, NULL, '{AUDIT_GENESIS}', '{AUDIT_GENESIS}')",
            third.at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        ))
        .await;
        let (seq, _) = broken_now(&store).await.unwrap();
        assert_eq!(seq, 0);
        sql("DELETE FROM audit_log WHERE seq = 0").await;

        // Deleted: a gap.
        let saved = store
            .audit_entries(&AuditFilter::default(), Some(1), 1)
            .await
            .unwrap()
            .remove(0);
        sql("DELETE FROM audit_log WHERE seq = 2").await;
        let (seq, reason) = broken_now(&store).await.unwrap();
        assert_eq!(seq, 2, "{reason}");
        assert!(reason.contains("missing"), "{reason}");

        // Moved: entry 4 renumbered into the gap.
        sql("UPDATE audit_log SET seq = 2 WHERE seq = 4").await;
        let (seq, _) = broken_now(&store).await.unwrap();
        assert_eq!(seq, 2);
        sql("UPDATE audit_log SET seq = 4 WHERE seq = 2").await;
        sql(&format!(
            "INSERT INTO audit_log (seq, at, actor, action, target, outcome, request_id, detail, prev_hash, hash) \
             VALUES (2, '{}', '{}', '{}', '{}', 'ok', NULL, NULL, '{}', '{}')",
            saved.at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            saved.actor,
            saved.action,
            saved.target.clone().unwrap(),
            store
                .audit_entries(&AuditFilter::default(), None, 1)
                .await
                .unwrap()[0]
                .hash,
            saved.hash,
        ))
        .await;
        assert!(broken_now(&store).await.is_none(), "{backend:?}: restored");

        // Cut from the end: the chain holds, the logged head does not.
        sql("DELETE FROM audit_log WHERE seq = 5").await;
        assert!(broken_now(&store).await.is_none());
        let cut = store
            .verify_audit(Some((head_seq, &head_hash)), &crate::support::audit_seals)
            .await
            .unwrap()
            .broken
            .unwrap();
        let (seq, reason) = (cut.seq, cut.reason);
        assert_eq!(seq, 5, "{reason}");

        // The command says the same, and exits 1.
        let output = finsync(&[
            ("FINSYNC__DATABASE__URL", db.url.clone()),
            ("FINSYNC__VAULT__KEY", crate::support::VAULT_KEY.to_owned()),
        ])
        .args([
            "audit",
            "verify",
            "--expect-head",
            &format!("{head_seq}:{head_hash}"),
        ])
        .output()
        .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert_eq!(output.status.code(), Some(1), "{stdout}");
        assert!(stdout.contains("broken at entry 5"), "{stdout}");
        sql("UPDATE audit_log SET action = 'nothing' WHERE seq = 1").await;
        let output = finsync(&[
            ("FINSYNC__DATABASE__URL", db.url.clone()),
            ("FINSYNC__VAULT__KEY", crate::support::VAULT_KEY.to_owned()),
        ])
        .args(["audit", "verify"])
        .output()
        .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert_eq!(output.status.code(), Some(1), "{stdout}");
        assert!(stdout.contains("broken at entry 1"), "{stdout}");
    }
}

/// Retention deletes the oldest entries and records where the trail now starts:
/// the rest still verifies, and deleting that record is caught.
#[tokio::test]
async fn retention_keeps_the_trail_verifiable() {
    let (_db, store) = migrated_store(Backend::Postgres, 2).await;
    five_entries(&store).await;
    let entries = store
        .audit_entries(&AuditFilter::default(), None, 10)
        .await
        .unwrap();
    // Everything appended before entry 4.
    assert_eq!(
        store
            .purge_audit(entries[3].at, &crate::support::audit_seal)
            .await
            .unwrap(),
        3
    );
    let left = store
        .audit_entries(&AuditFilter::default(), None, 10)
        .await
        .unwrap();
    let seqs: Vec<i64> = left.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, [4, 5, 6]);
    assert_eq!(left[2].action, "audit.purged");
    assert_eq!(left[2].detail.as_ref().unwrap()["through_seq"], 3);
    let verified = store
        .verify_audit(None, &crate::support::audit_seals)
        .await
        .unwrap();
    assert_eq!(verified.broken, None);
    assert_eq!(verified.purged_through, Some(3));
    assert_eq!(verified.verified, 3);
    // Nothing is old enough now.
    assert_eq!(
        store
            .purge_audit(entries[0].at, &crate::support::audit_seal)
            .await
            .unwrap(),
        0
    );
    // A purge record written by someone without the vault's key is no record.
    let forged = |_: &str, _: &str| false;
    let broken = store
        .verify_audit(None, &forged)
        .await
        .unwrap()
        .broken
        .unwrap();
    assert_eq!(broken.seq, 1, "{}", broken.reason);

    // Entries deleted without a purge's record are missing, not purged.
    store
        .db()
        .execute_unprepared("DELETE FROM audit_log WHERE seq = 4")
        .await
        .unwrap();
    let broken = store
        .verify_audit(None, &crate::support::audit_seals)
        .await
        .unwrap()
        .broken
        .unwrap();
    assert_eq!(broken.seq, 1, "{}", broken.reason);
    assert!(
        broken.reason.contains("no purge recorded"),
        "{}",
        broken.reason
    );
}

/// Appends from many tasks at once still make one unbroken chain, numbered
/// without gaps: the advisory lock serialises them.
#[tokio::test]
async fn concurrent_appends_make_one_chain() {
    let (_db, store) = migrated_store(Backend::Postgres, 8).await;
    let tasks: Vec<_> = (0..40)
        .map(|n| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .record(by_test().target(format!("thing:{n}")))
                    .await
                    .unwrap()
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let verification = store
        .verify_audit(None, &crate::support::audit_seals)
        .await
        .unwrap();
    assert!(verification.broken.is_none(), "{verification:?}");
    assert_eq!(verification.verified, 40);
}

/// `finsync admins create` bootstraps the first admin; its credential works on
/// the API and the command leaves an entry; `audit export` prints JSON lines.
#[tokio::test]
async fn the_first_admin_comes_from_the_command_line() {
    let app = TestApp::builder().postgres().build().await;
    let env = [("FINSYNC__DATABASE__URL", app.db().url.clone())];
    let output = finsync(&env)
        .args(["admins", "create", "root", "--role", "admin"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let credential = stdout
        .lines()
        .find_map(|l| l.strip_prefix("credential: "))
        .unwrap()
        .trim()
        .to_owned();
    let answer = finsync::http::client()
        .get(format!("{}/admin/admins", app.address))
        .bearer_auth(&credential)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let listed: Value = answer.json().await.unwrap();
    assert_eq!(listed["admins"][0]["name"], "root");
    assert_eq!(listed["admins"][0]["created_by"], "cli");
    assert!(!listed.to_string().contains(&credential));

    let refused = finsync(&env)
        .args(["admins", "create", "Root!", "--role", "admin"])
        .output()
        .unwrap();
    assert!(!refused.status.success());

    let list = finsync(&env).args(["admins", "list"]).output().unwrap();
    let table = String::from_utf8_lossy(&list.stdout);
    assert!(table.contains("root") && table.contains("live"), "{table}");

    let export = finsync(&env).args(["audit", "export"]).output().unwrap();
    assert!(export.status.success());
    let lines: Vec<Value> = String::from_utf8_lossy(&export.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        lines
            .iter()
            .any(|e| e["action"] == "admin.create" && e["target"] == "admin:root")
    );
    assert!(lines.iter().any(|e| e["action"] == "list_admins"));
    let revoke = finsync(&env)
        .args(["admins", "revoke", "root"])
        .output()
        .unwrap();
    assert!(revoke.status.success());
    crate::support::wait_until(
        "the revoked credential is refused",
        Duration::from_secs(5),
        || {
            let credential = credential.clone();
            let address = app.address.clone();
            async move {
                finsync::http::client()
                    .get(format!("{address}/admin/admins"))
                    .bearer_auth(&credential)
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == 401)
            }
        },
    )
    .await;
}
