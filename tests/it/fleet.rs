//! Fleet mode: `sandbox`, `serve` and two `worker`s as separate processes on
//! PostgreSQL and Redis. A user linked through the admin API and the real OAuth
//! redirect is synced by a worker and served by the API, value for value.

use std::time::Duration;

use finsync_sandbox::SandboxConfig;
use secrecy::SecretString;
use serde_json::{Value, json};

use crate::support::{
    ADMIN_TOKEN, Backend, RedisPrefix, TestDb, VAULT_KEY, assert_matches_sandbox, eventually,
    finsync, free_port, link_through_api, process_env, redis_url, requested_sync, spawn,
    spawn_sandbox_process, tenant_via_cli, unique, wait_ready, wait_until,
};

/// The API's address and the environment every process of a test fleet shares: this
/// test's database and Redis prefix, a free port for `serve`, and every sandbox
/// institution at `sandbox_url`.
fn fleet_env(
    db: &TestDb,
    prefix: &RedisPrefix,
    sandbox_url: &str,
) -> (String, Vec<(&'static str, String)>) {
    let port = free_port();
    let api = format!("http://127.0.0.1:{port}");
    let mut env = process_env(&db.url, sandbox_url);
    env.retain(|(key, _)| *key != "FINSYNC__REDIS__URL");
    env.extend([
        ("FINSYNC__REDIS__URL", redis_url()),
        ("FINSYNC__REDIS__KEY_PREFIX", prefix.0.clone()),
        ("FINSYNC__SERVER__ADMIN_TOKEN", ADMIN_TOKEN.to_owned()),
        ("FINSYNC__SERVER__BIND", format!("127.0.0.1:{port}")),
        ("FINSYNC__SERVER__PUBLIC_URL", api.clone()),
    ]);
    (api, env)
}

#[tokio::test]
async fn serve_worker_and_sandbox_as_separate_processes_sync_a_user_end_to_end() {
    let db = TestDb::new(Backend::Postgres).await;
    let prefix = RedisPrefix(unique("finsync_fleet"));

    let (_sandbox, sandbox_url) = spawn_sandbox_process();

    let (api, env) = fleet_env(&db, &prefix, &sandbox_url);

    assert!(finsync(&env).arg("migrate").status().unwrap().success());
    let api_key = tenant_via_cli(&env, "fleet-advisor");

    let _serve = spawn("serve", finsync(&env).arg("serve"));
    let _worker_1 = spawn(
        "worker-1",
        finsync(&env).args(["worker", "--concurrency", "2"]),
    );
    let _worker_2 = spawn(
        "worker-2",
        finsync(&env).args(["worker", "--concurrency", "2"]),
    );
    wait_ready(&format!("{api}/readyz")).await;

    let http = finsync::http::client();
    let link = link_through_api(&api, "fleet-advisor", "demo-alice", "meridian").await;
    let authorize = link["authorize_url"].as_str().expect("authorize_url");
    assert!(authorize.starts_with(&sandbox_url), "{authorize}");

    // A worker process syncs it; the API process serves it.
    let url = format!("{api}/v1/users/demo-alice/portfolio");
    let body = eventually("a synced portfolio", Duration::from_secs(60), || async {
        let response = http.get(&url).bearer_auth(&api_key).send().await.unwrap();
        let body: Value = response.json().await.unwrap();
        (body["freshness"]["stale"] == false).then_some(body)
    })
    .await;

    let expected =
        finsync_sandbox::data::portfolio(42, SandboxConfig::default().anchor_date, "demo-alice");
    assert_eq!(
        body["accounts"].as_array().unwrap().len(),
        expected.accounts.len()
    );
    for account in &expected.accounts {
        let served = body["accounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["id"] == account.account_id.as_str())
            .unwrap();
        assert_eq!(
            served["balances"]["current"]["amount"],
            account.balances.current.as_str()
        );
    }
    let store = finsync::store::Store::connect(&SecretString::from(db.url.clone()), 2)
        .await
        .unwrap();
    let connection_id = link["connection_id"].as_str().unwrap().parse().unwrap();
    assert_matches_sandbox(
        &store.full_snapshot(connection_id).await.unwrap(),
        &expected,
    );

    // The worker wrote the portfolio view to Redis under this deployment's prefix.
    let client = redis::Client::open(redis_url()).unwrap();
    let mut redis = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:portfolio:*", prefix.0))
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(keys.len(), 1, "{keys:?}");

    // Read after sync across processes: the API process holds the view; a worker
    // runs a requested sync; once the API says it is done, a read shows it.
    let status = requested_sync(&api, &api_key, "demo-alice", Default::default()).await;
    assert_eq!(status["status"], "succeeded", "{status}");
    let synced_at = store
        .connection(link["connection_id"].as_str().unwrap().parse().unwrap())
        .await
        .unwrap()
        .last_synced_at
        .unwrap();
    let after: Value = http
        .get(&url)
        .bearer_auth(&api_key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        after["freshness"]["as_of"]
            .as_str()
            .unwrap()
            .parse::<chrono::DateTime<chrono::Utc>>()
            .unwrap(),
        synced_at,
        "the first read after the sync reports done shows it"
    );

    // The tokens the sandbox issued appear nowhere: not in any table of the
    // database (ours or the queue's), not in anything the processes logged.
    let record = store.connection(connection_id).await.unwrap();
    let vault = finsync::vault::Vault::single(VAULT_KEY).unwrap();
    let tokens: Vec<String> = [
        ("access_token", record.tokens.access_token),
        ("refresh_token", record.tokens.refresh_token),
    ]
    .into_iter()
    .map(|(field, sealed)| {
        let opened = vault
            .open(
                &finsync::vault::seal_context(connection_id, field),
                &sealed.unwrap(),
            )
            .unwrap();
        secrecy::ExposeSecret::expose_secret(&opened).to_owned()
    })
    .collect();
    let dump = crate::support::dump_database(&store).await;
    assert!(dump.len() > 1000, "the dump has the synced data");
    let logs: String = [&_serve, &_worker_1, &_worker_2]
        .iter()
        .map(|p| std::fs::read_to_string(&p.log).unwrap())
        .collect();
    assert!(
        logs.contains("Sync finished."),
        "the workers' logs were captured"
    );
    for token in &tokens {
        assert!(token.len() > 16);
        assert!(
            !dump.contains(token.as_str()),
            "a token is stored in plaintext"
        );
        assert!(!logs.contains(token.as_str()), "a token was logged");
    }
}

/// An admin adds a fourth institution to a running fleet (API, worker, scheduler as
/// separate processes) by dropping its connector file into the connectors directory:
/// every process picks it up, a user links there, and the scheduler's next round
/// syncs that user again.
#[tokio::test]
async fn a_fourth_institution_joins_a_running_fleet_with_a_new_file_only() {
    let db = TestDb::new(Backend::Postgres).await;
    let prefix = RedisPrefix(unique("finsync_fleet4"));
    let (_sandbox, sandbox_url) = spawn_sandbox_process();
    let connectors = std::env::temp_dir().join(unique("finsync-fleet-connectors"));
    std::fs::create_dir_all(&connectors).unwrap();
    let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("connectors");
    for file in finsync::connectors::registry::connector_files(&shipped).unwrap() {
        std::fs::copy(&file, connectors.join(file.file_name().unwrap())).unwrap();
    }

    let (api, mut env) = fleet_env(&db, &prefix, &sandbox_url);
    env.extend([
        ("FINSYNC__CONNECTORS__DIR", connectors.display().to_string()),
        ("FINSYNC__CONNECTORS__RELOAD_MS", "300".to_owned()),
        ("FINSYNC__SYNC__INTERVAL_SECS", "2".to_owned()),
        ("FINSYNC__SYNC__SCHEDULER_TICK_SECS", "1".to_owned()),
    ]);
    assert!(finsync(&env).arg("migrate").status().unwrap().success());
    let _serve = spawn("serve", finsync(&env).arg("serve"));
    let _worker = spawn(
        "worker",
        finsync(&env).args(["worker", "--concurrency", "2"]),
    );
    let _scheduler = spawn("scheduler", finsync(&env).arg("scheduler"));
    wait_ready(&format!("{api}/readyz")).await;

    let http = finsync::http::client();
    let listed = || async {
        let body: Value = http
            .get(format!("{api}/admin/connectors"))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        body["connectors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["id"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        listed().await,
        [
            "albion",
            "harbor",
            "keystone",
            "larkspur",
            "meridian",
            "pinecrest"
        ]
    );

    // The admin's whole change: one new file.
    std::fs::copy(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/connectors/northwind.toml"),
        connectors.join("northwind.toml"),
    )
    .unwrap();
    wait_until(
        "northwind to be listed",
        Duration::from_secs(30),
        || async { listed().await.iter().any(|id| id == "northwind") },
    )
    .await;

    let created = http
        .post(format!("{api}/admin/tenants"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({ "name": "fleet-advisor" }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let link = link_through_api(&api, "fleet-advisor", "demo-dave", "northwind").await;
    let authorize = link["authorize_url"].as_str().expect("authorize_url");
    assert!(
        authorize.starts_with(&format!("{sandbox_url}/northwind/")),
        "{authorize}"
    );

    // The worker syncs it once on linking; the scheduler's next round syncs it again.
    let store = finsync::store::Store::connect(&SecretString::from(db.url.clone()), 2)
        .await
        .unwrap();
    let connection = link["connection_id"].as_str().unwrap().parse().unwrap();
    let runs = eventually("a scheduled sync", Duration::from_secs(60), || async {
        let runs = store.runs(connection).await.unwrap();
        runs.iter()
            .any(|r| r.idempotency_key.starts_with("schedule:") && r.outcome == "succeeded")
            .then_some(runs)
    })
    .await;
    assert!(
        runs.iter()
            .any(|r| r.idempotency_key.starts_with("schedule:") && r.outcome == "succeeded"),
        "no scheduled sync succeeded: {runs:?}"
    );
    assert!(runs.iter().all(|r| r.outcome == "succeeded"), "{runs:?}");
    let stored = store.full_snapshot(connection).await.unwrap();
    let defaults = SandboxConfig::default();
    let expected = finsync_sandbox::institution_portfolio(
        defaults.seed,
        defaults.anchor_date,
        finsync_sandbox::Institution::Northwind,
        "demo-dave",
        0,
    );
    assert_eq!(stored.accounts.len(), expected.accounts.len());
    assert_eq!(stored.transactions.len(), expected.transactions.len());
    let _ = std::fs::remove_dir_all(&connectors);
}

/// Two schedulers and three workers as separate processes on PostgreSQL: every
/// connection is synced once per schedule slot, never twice, slot after slot.
#[tokio::test]
async fn two_schedulers_and_three_workers_sync_each_slot_once() {
    let db = TestDb::new(Backend::Postgres).await;
    let prefix = RedisPrefix(unique("finsync_slots"));
    let (_sandbox, sandbox_url) = spawn_sandbox_process();
    let (api, mut env) = fleet_env(&db, &prefix, &sandbox_url);
    env.extend([
        ("FINSYNC__SYNC__INTERVAL_SECS", "3".to_owned()),
        ("FINSYNC__SYNC__SCHEDULER_TICK_SECS", "1".to_owned()),
    ]);
    assert!(finsync(&env).arg("migrate").status().unwrap().success());
    let _serve = spawn("serve", finsync(&env).arg("serve"));
    let _workers: Vec<_> = ["worker-a", "worker-b", "worker-c"]
        .into_iter()
        .map(|name| spawn(name, finsync(&env).args(["worker", "--concurrency", "2"])))
        .collect();
    let _schedulers: Vec<_> = ["scheduler-a", "scheduler-b"]
        .into_iter()
        .map(|name| spawn(name, finsync(&env).arg("scheduler")))
        .collect();
    wait_ready(&format!("{api}/readyz")).await;

    let http = finsync::http::client();
    let created = http
        .post(format!("{api}/admin/tenants"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({ "name": "slots-advisor" }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let mut connections = Vec::new();
    for user in ["demo-s1", "demo-s2", "demo-s3", "demo-s4"] {
        let link = link_through_api(&api, "slots-advisor", user, "harbor").await;
        connections.push(
            link["connection_id"]
                .as_str()
                .unwrap()
                .parse::<finsync::domain::ConnectionId>()
                .unwrap(),
        );
    }

    // Wait until every connection has had at least three scheduled syncs.
    let store = finsync::store::Store::connect(&SecretString::from(db.url.clone()), 2)
        .await
        .unwrap();
    let scheduled = |runs: &[finsync::store::entities::sync_run::Model]| {
        runs.iter()
            .filter(|r| r.idempotency_key.starts_with("schedule:"))
            .count()
    };
    wait_until(
        "three scheduled syncs each",
        Duration::from_secs(60),
        || async {
            let mut enough = true;
            for connection in &connections {
                enough &= scheduled(&store.runs(*connection).await.unwrap()) >= 3;
            }
            enough
        },
    )
    .await;
    for connection in &connections {
        let runs = store.runs(*connection).await.unwrap();
        assert!(scheduled(&runs) >= 3, "{runs:?}");
        // One run per slot: no scheduled key ran twice, and no two runs of the
        // connection overlapped.
        let mut keys: Vec<_> = runs
            .iter()
            .filter(|r| r.idempotency_key.starts_with("schedule:"))
            .map(|r| r.idempotency_key.clone())
            .collect();
        let total = keys.len();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), total, "a slot synced twice: {runs:?}");
        let mut spans: Vec<_> = runs
            .iter()
            .filter_map(|r| r.finished_at.map(|f| (r.started_at, f)))
            .collect();
        spans.sort();
        for pair in spans.windows(2) {
            assert!(pair[0].1 <= pair[1].0, "two syncs overlapped: {runs:?}");
        }
        assert!(runs.iter().all(|r| r.outcome != "failed"), "{runs:?}");
    }
}

/// A sandbox process serves the data of the day it is told (`--anchor-date`, else
/// `sandbox.anchor_date`), so that processes started on either side of midnight
/// serve the same data.
#[tokio::test]
async fn a_sandbox_process_serves_the_data_of_the_day_it_is_told() {
    let setting = ("FINSYNC__SANDBOX__ANCHOR_DATE", "2024-02-29".to_owned());
    for (args, expected) in [
        (&[][..], "2024-02-29"),
        (&["--anchor-date", "2023-07-01"][..], "2023-07-01"),
    ] {
        let (_sandbox, url) =
            crate::support::spawn_sandbox_process_with(std::slice::from_ref(&setting), args);
        let world: Value = finsync::http::client()
            .get(format!("{url}/sandbox/admin/world"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(world["anchor_date"], expected, "{args:?}: {world}");
    }
}
