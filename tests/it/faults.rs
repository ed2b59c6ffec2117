//! The fault suite: a fleet as in production (`serve`, two `worker`s, a `scheduler`
//! and the sandbox, each its own process) on a PostgreSQL server and a Redis server
//! of the suite's own, which it kills, freezes, stops and restarts. Faults come one
//! after another: a worker killed during a sync and during a token refresh, Redis
//! killed and frozen, PostgreSQL restarted and stopped, an institution outage, a
//! 429 storm, revoked grants, malformed records. A reader asks for every user's
//! portfolio all along and checks each answer against what the API promises; after
//! every fault the fleet must recover by itself within a stated bound; at the end
//! every stored record is compared with a fresh sync of the same users.
//!
//! `scripts/test.sh` runs the fast subset (two users per institution, each fault
//! once). `FINSYNC_FAULT_SUITE=full` runs 21 users and every kill three times:
//! `FINSYNC_FAULT_SUITE=full scripts/test.sh faults:: -- --nocapture`. Both print
//! how long each recovery took, counted from the fault.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use finsync::domain::{ConnectionId, ConnectionStatus, Snapshot};
use finsync::store::Store;
use secrecy::SecretString;
use serde_json::{Value, json};

use crate::support::{
    ADMIN_TOKEN, Proc, eventually, eventually_explained, finsync, free_port, link_through_api,
    process_env, spawn, spawn_sandbox_process, unique, wait_ready, wait_until,
};

/// How long the fleet may take to recover from one fault: a killed worker's sync
/// lease (60 s) and job (apalis finds it orphaned within a minute) lapse, then the
/// scheduler's next tick.
const RECOVERY: Duration = Duration::from_secs(180);
/// Every read must be answered within this, whatever is down: far below the pool
/// timeout a read once waited on.
const READ_BOUND: Duration = Duration::from_secs(5);
/// A bank, a brokerage, a custodian, and an institution asked per account (FDX).
const INSTITUTIONS: [&str; 4] = ["meridian", "harbor", "keystone", "pinecrest"];

/// A PostgreSQL server of the suite's own, in a temporary directory, on a free
/// port; stopped and deleted on drop.
struct OwnPostgres {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
}

impl OwnPostgres {
    fn start() -> Self {
        let bin = postgres_bin();
        let dir = std::env::temp_dir().join(unique("finsync-faults-pg"));
        std::fs::create_dir_all(&dir).unwrap();
        if running_as_root() {
            // PostgreSQL refuses to run as root: its files belong to `postgres`.
            assert!(
                Command::new("chown")
                    .args(["-R", "postgres:postgres"])
                    .arg(&dir)
                    .status()
                    .unwrap()
                    .success()
            );
        }
        let server = Self {
            bin,
            dir,
            port: free_port(),
        };
        let data = server.dir.join("data");
        assert!(
            server
                .run(
                    "initdb",
                    &["-U", "postgres", "-A", "trust", "--no-sync", "-D"]
                )
                .arg(&data)
                .stdout(Stdio::null())
                .status()
                .unwrap()
                .success(),
            "initdb"
        );
        server.pg_ctl(&["start", "-w"]);
        let created = server
            .run("createdb", &["-h", "127.0.0.1", "-U", "postgres"])
            .args(["-p", &server.port.to_string(), "finsync"])
            .status()
            .unwrap();
        assert!(created.success(), "createdb");
        server
    }

    /// A command of PostgreSQL's, as the user that owns the server.
    fn run(&self, program: &str, args: &[&str]) -> Command {
        let path = self.bin.join(program);
        let mut command = if running_as_root() {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(path);
            command
        } else {
            Command::new(path)
        };
        command.args(args);
        command
    }

    fn pg_ctl(&self, action: &[&str]) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
            self.port,
            self.dir.display()
        );
        let status = self
            .run("pg_ctl", action)
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-o", &options, "-l"])
            .arg(self.dir.join("log"))
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "pg_ctl {action:?}");
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/finsync", self.port)
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let _ = self
            .run("pg_ctl", &["stop", "-m", "immediate", "-D"])
            .arg(self.dir.join("data"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

/// Where PostgreSQL's server programs are: on the PATH, else Debian's place.
fn postgres_bin() -> PathBuf {
    if let Ok(output) = Command::new("sh")
        .args(["-c", "command -v initdb"])
        .output()
        && output.status.success()
    {
        let path = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
        let resolved = std::fs::canonicalize(&path).unwrap_or(path);
        return resolved.parent().unwrap().to_owned();
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL's server programs (Debian: postgresql); scripts/test.sh installs them")
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    found.sort();
    found.pop().expect("initdb under /usr/lib/postgresql")
}

/// A Redis server of the suite's own, keeping nothing on disk.
struct OwnRedis {
    port: u16,
    process: Option<Proc>,
}

impl OwnRedis {
    async fn start() -> Self {
        let mut redis = Self {
            port: free_port(),
            process: None,
        };
        redis.restart().await;
        redis
    }

    async fn restart(&mut self) {
        self.process = Some(spawn(
            "redis",
            Command::new("redis-server")
                .args(["--port", &self.port.to_string()])
                .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]),
        ));
        let url = self.url();
        wait_until("Redis to answer", Duration::from_secs(30), || {
            let url = url.clone();
            async move {
                redis::Client::open(url)
                    .and_then(|c| c.get_connection())
                    .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
                    .is_ok()
            }
        })
        .await;
    }

    /// `kill -9`.
    fn kill(&mut self) {
        self.process = None;
    }

    /// Stops (`SIGSTOP`) or resumes (`SIGCONT`) the server: connections stay open
    /// and nothing answers.
    fn signal(&self, signal: &str) {
        let pid = self.process.as_ref().unwrap().child.id().to_string();
        assert!(
            Command::new("kill")
                .args([signal, &pid])
                .status()
                .unwrap()
                .success()
        );
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

/// What the reader saw of one answer.
#[derive(Debug, Clone)]
struct Read {
    phase: &'static str,
    user: String,
    status: u16,
    reason: Option<String>,
    retry_after: bool,
    took: Duration,
    /// Account ids and balances, holdings and recent transactions as served.
    data: Option<String>,
}

/// The fleet under test and what it needs to run.
struct Fleet {
    env: Vec<(&'static str, String)>,
    api: String,
    sandbox_url: String,
    api_key: String,
    serve: Option<Proc>,
    workers: [Option<Proc>; 2],
    scheduler: Option<Proc>,
    postgres: OwnPostgres,
    redis: OwnRedis,
    store: Store,
    phase: Arc<Mutex<&'static str>>,
    reads: Arc<Mutex<Vec<Read>>>,
    http: reqwest::Client,
}

impl Fleet {
    async fn start(sandbox_url: String) -> Self {
        let postgres = OwnPostgres::start();
        let redis = OwnRedis::start().await;
        let port = free_port();
        let api = format!("http://127.0.0.1:{port}");
        let mut env = process_env(&postgres.url(), &sandbox_url);
        env.retain(|(key, _)| *key != "FINSYNC__REDIS__URL");
        env.extend([
            ("FINSYNC__REDIS__URL", redis.url()),
            ("FINSYNC__REDIS__KEY_PREFIX", unique("faults")),
            ("FINSYNC__SERVER__ADMIN_TOKEN", ADMIN_TOKEN.to_owned()),
            ("FINSYNC__SERVER__BIND", format!("127.0.0.1:{port}")),
            ("FINSYNC__SERVER__PUBLIC_URL", api.clone()),
            (
                "FINSYNC__SERVER__SYNC_REQUEST_INTERVAL_SECS",
                "1".to_owned(),
            ),
            ("FINSYNC__SERVER__RATE_LIMIT_PER_SECOND", "1000".to_owned()),
            ("FINSYNC__SERVER__RATE_LIMIT_BURST", "1000".to_owned()),
            ("FINSYNC__SYNC__SCHEDULER_TICK_SECS", "1".to_owned()),
            ("FINSYNC__SYNC__INTERVAL_SECS", "60".to_owned()),
        ]);
        assert!(finsync(&env).arg("migrate").status().unwrap().success());
        let api_key = crate::support::tenant_via_cli(&env, "faults");
        let store = Store::connect(&SecretString::from(postgres.url()), 4)
            .await
            .unwrap();
        let mut fleet = Self {
            env,
            api,
            sandbox_url,
            api_key,
            serve: None,
            workers: [None, None],
            scheduler: None,
            postgres,
            redis,
            store,
            phase: Arc::new(Mutex::new("baseline")),
            reads: Arc::new(Mutex::new(Vec::new())),
            http: finsync::http::client(),
        };
        fleet.serve = Some(spawn("serve", finsync(&fleet.env).arg("serve")));
        fleet.restart_worker(0);
        fleet.restart_worker(1);
        fleet.scheduler = Some(spawn("scheduler", finsync(&fleet.env).arg("scheduler")));
        wait_ready(&format!("{}/readyz", fleet.api)).await;
        fleet
    }

    fn restart_worker(&mut self, index: usize) {
        let name = ["worker-1", "worker-2"][index];
        self.workers[index] = Some(spawn(
            name,
            finsync(&self.env).args(["worker", "--concurrency", "2"]),
        ));
    }

    /// `kill -9` of a worker, and a new one in its place.
    fn kill_worker(&mut self, index: usize) {
        self.workers[index] = None;
        self.restart_worker(index);
    }

    fn enter(&self, phase: &'static str) -> DateTime<Utc> {
        *self.phase.lock().unwrap() = phase;
        eprintln!("fault suite: {phase}");
        Utc::now()
    }

    async fn sandbox(&self, method: reqwest::Method, path: &str, body: Option<Value>) {
        let mut request = self
            .http
            .request(method, format!("{}/sandbox/admin/{path}", self.sandbox_url));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        assert!(response.status().is_success(), "sandbox admin {path}");
    }

    async fn faults(&self, institution: &str, faults: Value) {
        self.sandbox(
            reqwest::Method::PUT,
            &format!("faults/{institution}"),
            Some(faults),
        )
        .await;
    }

    /// Asks for a sync of every user, as an app would: a `429` (a sync of the user
    /// finished within the last second) is asked again until it is taken.
    async fn request_syncs(&self, users: &[String]) {
        for user in users {
            let url = format!("{}/v1/users/{user}/sync", self.api);
            eventually(
                &format!("a sync request for {user} to be taken"),
                RECOVERY,
                || async {
                    let response = self
                        .http
                        .post(&url)
                        .bearer_auth(&self.api_key)
                        .send()
                        .await
                        .ok()?;
                    match response.status().as_u16() {
                        202 => Some(()),
                        429 | 503 => None,
                        status => panic!("sync request for {user}: {status}"),
                    }
                },
            )
            .await;
        }
    }

    /// Waits until a sync of some connection at `institution` has failed since
    /// `since` with a reason starting with `code`: the fault reached the fleet.
    async fn failed_since(
        &self,
        connections: &BTreeMap<ConnectionId, (String, &'static str)>,
        institution: &str,
        code: &str,
        since: DateTime<Utc>,
    ) {
        let store = &self.store;
        eventually(
            &format!("a {code} failure at {institution}"),
            RECOVERY,
            || async {
                for (id, (_, at)) in connections {
                    if *at != institution {
                        continue;
                    }
                    let runs = store.runs_since(*id, since).await.ok()?;
                    if runs.iter().any(|r| r.outcome == "failed")
                        && store
                            .connection(*id)
                            .await
                            .ok()?
                            .last_failure_reason
                            .is_some_and(|r| r.starts_with(code))
                    {
                        return Some(());
                    }
                }
                None
            },
        )
        .await;
    }

    /// Waits until every connection of `institutions` has synced since `since`
    /// and is active; returns how long that took. On timeout the failure names
    /// each connection's state.
    async fn recovered(
        &self,
        what: &str,
        connections: &BTreeMap<ConnectionId, (String, &'static str)>,
        institutions: &[&str],
        since: DateTime<Utc>,
    ) -> Duration {
        self.until(what, connections, institutions, |record| {
            record.status == ConnectionStatus::Active
                && record.last_synced_at.is_some_and(|at| at > since)
        })
        .await;
        // From when the fault began, not from when this wait did.
        (Utc::now() - since).to_std().unwrap_or_default()
    }

    /// Waits until `done` holds for every connection of `institutions`.
    async fn until(
        &self,
        what: &str,
        connections: &BTreeMap<ConnectionId, (String, &'static str)>,
        institutions: &[&str],
        done: impl Fn(&finsync::store::ConnectionRecord) -> bool,
    ) {
        let started = Instant::now();
        let store = &self.store;
        let done = &done;
        eventually_explained(what, RECOVERY, || async move {
            let mut states = Vec::new();
            let mut all = true;
            for (id, (user, institution)) in connections {
                if !institutions.contains(institution) {
                    continue;
                }
                match store.connection(*id).await {
                    Ok(record) => {
                        all &= done(&record);
                        states.push(format!(
                            "{user}: {} synced {:?} next {:?} failure {:?}",
                            record.status,
                            record.last_synced_at,
                            record.next_sync_at,
                            record.last_failure_reason
                        ));
                    }
                    Err(e) => {
                        all = false;
                        states.push(format!("{user}: {e}"));
                    }
                }
            }
            if all { Ok(()) } else { Err(states.join("\n")) }
        })
        .await;
        eprintln!("fault suite: {what} after {:?}", started.elapsed());
    }

    /// Reads every user's portfolio over and over until stopped, recording what
    /// came back and how long it took.
    fn start_reader(&self, users: Vec<String>) -> tokio::task::JoinHandle<()> {
        let (http, api, key) = (self.http.clone(), self.api.clone(), self.api_key.clone());
        let (phase, reads) = (Arc::clone(&self.phase), Arc::clone(&self.reads));
        tokio::spawn(async move {
            loop {
                for user in &users {
                    let phase = *phase.lock().unwrap();
                    let started = Instant::now();
                    let sent = http
                        .get(format!("{api}/v1/users/{user}/portfolio"))
                        .bearer_auth(&key)
                        .timeout(Duration::from_secs(30))
                        .send()
                        .await;
                    let took = started.elapsed();
                    let read = match sent {
                        Ok(response) => {
                            let status = response.status().as_u16();
                            let retry_after = response.headers().contains_key("retry-after");
                            let body: Value = response.json().await.unwrap_or(Value::Null);
                            Read {
                                phase,
                                user: user.clone(),
                                status,
                                reason: body["freshness"]["reason"].as_str().map(str::to_owned),
                                retry_after,
                                took,
                                data: (status == 200).then(|| served_data(&body)),
                            }
                        }
                        Err(_) => Read {
                            phase,
                            user: user.clone(),
                            status: 0,
                            reason: None,
                            retry_after: false,
                            took,
                            data: None,
                        },
                    };
                    reads.lock().unwrap().push(read);
                }
            }
        })
    }

    /// Waits until the reader has answered `count` more reads in this phase.
    async fn reads_in_phase(&self, phase: &'static str, count: usize) {
        let reads = Arc::clone(&self.reads);
        wait_until(
            &format!("{count} reads during {phase}"),
            Duration::from_secs(60),
            || {
                let reads = Arc::clone(&reads);
                async move {
                    reads
                        .lock()
                        .unwrap()
                        .iter()
                        .filter(|r| r.phase == phase)
                        .count()
                        >= count
                }
            },
        )
        .await;
    }
}

/// What a portfolio answer says about the data, freshness aside.
fn served_data(body: &Value) -> String {
    let mut body = body.clone();
    // How fresh each account is moves with every sync; its data must not.
    if let Some(accounts) = body["accounts"].as_array_mut() {
        for account in accounts {
            if let Some(account) = account.as_object_mut() {
                account.remove("sync");
            }
        }
    }
    ["accounts", "holdings", "transactions"]
        .map(|part| body[part].to_string())
        .join("\n")
}

/// A connection's records as the institution sent them (finsync's own ids and
/// times are not in them): what two syncs of the same data must agree on, exactly.
fn records(snapshot: &Snapshot) -> Vec<String> {
    fn json<T: serde::Serialize>(record: &T) -> String {
        let mut value = serde_json::to_value(record).unwrap();
        // When finsync read a balance is finsync's, not the institution's.
        if let Some(balances) = value.get_mut("balances").and_then(Value::as_object_mut) {
            balances.remove("as_of");
        }
        value.to_string()
    }
    let mut records: Vec<String> = snapshot
        .accounts
        .iter()
        .map(json)
        .chain(snapshot.securities.iter().map(json))
        .chain(snapshot.holdings.iter().map(json))
        .chain(snapshot.transactions.iter().map(json))
        .collect();
    records.sort();
    records
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_recovers_from_every_fault_without_losing_or_changing_a_record() {
    let full = std::env::var("FINSYNC_FAULT_SUITE").is_ok_and(|v| v == "full");
    let (per_institution, rounds) = if full { (7, 3) } else { (2, 1) };
    let (_sandbox, sandbox_url) = spawn_sandbox_process();
    let mut fleet = Fleet::start(sandbox_url).await;

    // Baseline: every user linked through the real redirect and synced once.
    let mut connections: BTreeMap<ConnectionId, (String, &'static str)> = BTreeMap::new();
    let mut users = Vec::new();
    for institution in INSTITUTIONS {
        for n in 0..per_institution {
            let user = format!("test-fault-{institution}-{n}");
            let link = link_through_api(&fleet.api, "faults", &user, institution).await;
            let id = link["connection_id"].as_str().unwrap().parse().unwrap();
            connections.insert(id, (user.clone(), institution));
            users.push(user);
        }
    }
    fleet.enter("baseline");
    fleet
        .recovered(
            "every user synced",
            &connections,
            &INSTITUTIONS,
            DateTime::UNIX_EPOCH,
        )
        .await;
    let mut baseline = BTreeMap::new();
    for id in connections.keys() {
        baseline.insert(*id, records(&fleet.store.full_snapshot(*id).await.unwrap()));
    }
    let reader = fleet.start_reader(users.clone());
    fleet.reads_in_phase("baseline", users.len()).await;
    let served: BTreeMap<String, String> = fleet
        .reads
        .lock()
        .unwrap()
        .iter()
        .filter_map(|r| r.data.clone().map(|d| (r.user.clone(), d)))
        .collect();
    assert_eq!(
        served.len(),
        users.len(),
        "every user's portfolio is served"
    );

    let mut bounds: Vec<(String, Duration)> = Vec::new();
    for round in 0..rounds {
        // A worker killed while syncs run.
        let since = fleet.enter("worker killed during sync");
        fleet.request_syncs(&users).await;
        let store = &fleet.store;
        wait_until("a sync to be running", Duration::from_secs(60), || async {
            let mut running = false;
            for id in connections.keys() {
                running |= store
                    .connection(*id)
                    .await
                    .is_ok_and(|c| c.sync_lease_until.is_some());
            }
            running
        })
        .await;
        fleet.kill_worker(round % 2);
        let took = fleet
            .recovered(
                "recovered from a worker killed during sync",
                &connections,
                &INSTITUTIONS,
                since,
            )
            .await;
        bounds.push(("worker killed during sync".into(), took));

        // A worker killed while a refresh waits on the institution's answer, at an
        // institution with a reuse grace period: nobody has to link again.
        let since = fleet.enter("worker killed during refresh");
        fleet
            .faults("harbor", json!({ "token_delay_ms": 4000 }))
            .await;
        fleet
            .sandbox(reqwest::Method::POST, "harbor/expire-tokens", None)
            .await;
        let harbor_users: Vec<String> = connections
            .values()
            .filter(|(_, i)| *i == "harbor")
            .map(|(u, _)| u.clone())
            .collect();
        fleet.request_syncs(&harbor_users).await;
        let store = &fleet.store;
        wait_until(
            "a refresh to be in flight",
            Duration::from_secs(60),
            || async {
                let mut pending = false;
                for (id, (_, institution)) in &connections {
                    pending |= *institution == "harbor"
                        && store
                            .connection(*id)
                            .await
                            .is_ok_and(|c| c.refresh_started_at.is_some());
                }
                pending
            },
        )
        .await;
        fleet.kill_worker(0);
        fleet.kill_worker(1);
        fleet.faults("harbor", json!({})).await;
        let took = fleet
            .recovered(
                "recovered from workers killed during refresh",
                &connections,
                &["harbor"],
                since,
            )
            .await;
        bounds.push(("workers killed during refresh".into(), took));
        for (id, (_, institution)) in &connections {
            if *institution == "harbor" {
                let record = fleet.store.connection(*id).await.unwrap();
                assert_eq!(
                    record.refresh_started_at, None,
                    "every refresh's outcome is recorded"
                );
            }
        }
    }

    // Redis killed, then back.
    let since = fleet.enter("redis killed");
    fleet.redis.kill();
    fleet.request_syncs(&users).await;
    fleet.reads_in_phase("redis killed", users.len() * 2).await;
    let took = fleet
        .recovered("synced without Redis", &connections, &INSTITUTIONS, since)
        .await;
    bounds.push(("Redis killed".into(), took));
    fleet.enter("redis restarted");
    fleet.redis.restart().await;
    fleet.reads_in_phase("redis restarted", users.len()).await;

    // Redis frozen: connections open, nothing answers.
    fleet.enter("redis frozen");
    fleet.redis.signal("-STOP");
    fleet.reads_in_phase("redis frozen", users.len() * 2).await;
    fleet.redis.signal("-CONT");

    // PostgreSQL restarted while syncs run.
    let since = fleet.enter("postgres restarted");
    fleet.request_syncs(&users).await;
    fleet.postgres.pg_ctl(&["restart", "-m", "fast", "-w"]);
    let took = fleet
        .recovered(
            "recovered from a PostgreSQL restart",
            &connections,
            &INSTITUTIONS,
            since,
        )
        .await;
    bounds.push(("PostgreSQL restarted".into(), took));

    // PostgreSQL stopped: cached reads go on, the rest is refused fast.
    // Every portfolio cached first (a Redis just restarted holds none until they are
    // read or synced again), so that what the outage may serve is known.
    fleet.enter("caching");
    let (http, key) = (&fleet.http, &fleet.api_key);
    for user in &users {
        let url = format!("{}/v1/users/{user}/portfolio", fleet.api);
        wait_until(
            &format!("{user}'s portfolio to be cached"),
            Duration::from_secs(60),
            || async {
                http.get(&url).bearer_auth(key).send().await.is_ok_and(|r| {
                    r.headers()
                        .get("x-cache")
                        .is_some_and(|v| v == "l1" || v == "l2")
                })
            },
        )
        .await;
    }
    // While it stops and until the API has noticed (it probes the database every
    // second), either answer is right; a portfolio marked STORE_UNAVAILABLE says
    // it has.
    fleet.enter("postgres stopping");
    fleet.postgres.pg_ctl(&["stop", "-m", "immediate"]);
    let portfolio = format!("{}/v1/users/{}/portfolio", fleet.api, users[0]);
    wait_until(
        "the API to notice the database is away",
        Duration::from_secs(30),
        || async {
            let Ok(response) = http.get(&portfolio).bearer_auth(key).send().await else {
                return false;
            };
            let body: Value = response.json().await.unwrap_or(Value::Null);
            body["freshness"]["reason"] == "STORE_UNAVAILABLE"
        },
    )
    .await;
    let readyz = http
        .get(format!("{}/readyz", fleet.api))
        .send()
        .await
        .unwrap();
    assert_eq!(readyz.status(), 503, "/readyz says the database is away");
    fleet.enter("postgres stopped");
    fleet
        .reads_in_phase("postgres stopped", users.len() * 2)
        .await;
    let since = fleet.enter("postgres starting");
    fleet.postgres.pg_ctl(&["start", "-w"]);
    wait_ready(&format!("{}/readyz", fleet.api)).await;
    fleet.enter("postgres started");
    fleet.request_syncs(&users).await;
    let took = fleet
        .recovered(
            "recovered from PostgreSQL stopped",
            &connections,
            &INSTITUTIONS,
            since,
        )
        .await;
    bounds.push(("PostgreSQL stopped".into(), took));

    // An institution outage, then a 429 storm at another: both reach the fleet,
    // and the fleet is back soon after they end. The outage outlasts the 30 s a
    // run waits out a `Retry-After`, so runs fail and come back when it said.
    let since = fleet.enter("institution outage");
    fleet
        .faults("meridian", json!({ "outage": { "for_secs": 40 } }))
        .await;
    fleet.request_syncs(&users).await;
    fleet
        .failed_since(&connections, "meridian", "INSTITUTION_UNAVAILABLE", since)
        .await;
    let took = fleet
        .recovered(
            "recovered from Meridian's outage",
            &connections,
            &["meridian"],
            since,
        )
        .await;
    bounds.push(("institution outage (40 s)".into(), took));
    fleet.faults("meridian", json!({})).await;

    let since = fleet.enter("429 storm");
    fleet
        .faults(
            "keystone",
            json!({ "rate_limit_rate": 1.0, "retry_after_secs": 2 }),
        )
        .await;
    fleet.request_syncs(&users).await;
    fleet
        .failed_since(&connections, "keystone", "RATE_LIMITED", since)
        .await;
    fleet.faults("keystone", json!({})).await;
    let took = fleet
        .recovered(
            "recovered from Keystone's 429 storm",
            &connections,
            &["keystone"],
            since,
        )
        .await;
    bounds.push(("429 storm".into(), took));

    // Malformed records: set aside, the rest stored, nothing already stored lost.
    let since = fleet.enter("malformed records");
    fleet
        .faults("meridian", json!({ "malformed_rate": 0.3 }))
        .await;
    fleet.request_syncs(&users).await;
    fleet
        .recovered(
            "synced around malformed records",
            &connections,
            &["meridian"],
            since,
        )
        .await;
    let mut set_aside = 0;
    for (id, (_, institution)) in &connections {
        if *institution == "meridian" {
            for run in fleet.store.runs_since(*id, since).await.unwrap() {
                set_aside += run.quarantined;
            }
        }
    }
    assert!(
        set_aside > 0,
        "the malformed records reached the fleet and were set aside"
    );
    fleet.faults("meridian", json!({})).await;
    let since = fleet.enter("malformed records gone");
    fleet.request_syncs(&users).await;
    fleet
        .recovered(
            "synced after malformed records",
            &connections,
            &["meridian"],
            since,
        )
        .await;

    // Revoked grants need the user: the connections say so, and a relink repairs them.
    let since = fleet.enter("grants revoked");
    fleet
        .sandbox(reqwest::Method::POST, "harbor/revoke-grants", None)
        .await;
    fleet
        .sandbox(reqwest::Method::POST, "harbor/expire-tokens", None)
        .await;
    fleet.request_syncs(&users).await;
    let store = &fleet.store;
    eventually(
        "Harbor's connections to ask for the user",
        RECOVERY,
        || async {
            for (id, (_, institution)) in &connections {
                if *institution == "harbor"
                    && store.connection(*id).await.ok()?.status != ConnectionStatus::ReauthRequired
                {
                    return None;
                }
            }
            Some(())
        },
    )
    .await;
    for (user, institution) in connections.values() {
        if *institution == "harbor" {
            link_through_api(&fleet.api, "faults", user, institution).await;
        }
    }
    fleet
        .recovered(
            "relinked after revoked grants",
            &connections,
            &["harbor"],
            since,
        )
        .await;
    fleet.enter("done");
    reader.abort();

    // Every read answered as promised.
    let reads = fleet.reads.lock().unwrap().clone();
    for read in &reads {
        assert!(
            read.took < READ_BOUND,
            "a read took {:?}: {read:?}",
            read.took
        );
        match read.status {
            200 => {
                assert_eq!(
                    read.data.as_ref(),
                    served.get(&read.user),
                    "a portfolio served during {} differs from the baseline",
                    read.phase
                );
                if read.phase == "postgres stopped" {
                    assert_eq!(
                        read.reason.as_deref(),
                        Some("STORE_UNAVAILABLE"),
                        "{read:?}"
                    );
                }
            }
            503 => {
                assert!(
                    [
                        "postgres restarted",
                        "postgres stopping",
                        "postgres stopped",
                        "postgres starting"
                    ]
                    .contains(&read.phase),
                    "503 outside an outage: {read:?}"
                );
                assert!(read.retry_after, "a 503 says when to come back: {read:?}");
            }
            _ => panic!("a read answered {}: {read:?}", read.status),
        }
    }
    assert!(
        reads
            .iter()
            .any(|r| r.phase == "postgres stopped" && r.status == 200),
        "cached portfolios are served while PostgreSQL is stopped"
    );

    // Nothing lost, duplicated or changed: what the faulted fleet holds is what it
    // held before, and what a fresh sync of the same users under another tenant gets.
    crate::support::tenant_via_cli(&fleet.env, "fresh");
    let mut fresh = BTreeMap::new();
    for (user, institution) in connections.values() {
        let link = link_through_api(&fleet.api, "fresh", user, institution).await;
        let id: ConnectionId = link["connection_id"].as_str().unwrap().parse().unwrap();
        fresh.insert(id, (user.clone(), *institution));
    }
    fleet
        .recovered("fresh syncs", &fresh, &INSTITUTIONS, DateTime::UNIX_EPOCH)
        .await;
    let by_user: BTreeMap<(String, &str), ConnectionId> = fresh
        .iter()
        .map(|(id, (u, i))| ((u.clone(), *i), *id))
        .collect();
    for (id, (user, institution)) in &connections {
        let faulted = records(&fleet.store.full_snapshot(*id).await.unwrap());
        let fresh_id = by_user[&(user.clone(), *institution)];
        let fresh = records(&fleet.store.full_snapshot(fresh_id).await.unwrap());
        assert_eq!(
            faulted, fresh,
            "{user} at {institution}: faulted fleet vs a fresh sync"
        );
        assert_eq!(
            faulted, baseline[id],
            "{user} at {institution}: changed since the baseline"
        );
    }
    eprintln!("fault suite: recovery times");
    for (fault, took) in &bounds {
        eprintln!("  {fault:<32} {took:>10.1?}");
    }
}
