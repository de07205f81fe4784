//! Several routers on one PostgreSQL database: shared work, a node killed
//! mid-load, the database stopped under load, an endpoint disabled through
//! one node, and `store copy` from sled. Real binaries, a real cluster
//! (`tests/ci/postgres.sh`), real receivers.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::*;

fn node_config(store: &str, extra_endpoints: &str) -> String {
    format!("{}{store}{extra_endpoints}", base_config(""))
}

/// The producer's key of a delivered event (`data.id` of its payload).
fn key_of(r: &Received) -> String {
    let env = r.json();
    let payload: serde_json::Value = serde_json::from_str(
        env["data"]["attributes"]["payload"]
            .as_str()
            .unwrap_or("null"),
    )
    .unwrap_or_default();
    payload["data"]["id"].as_str().unwrap_or("").to_string()
}

fn psql(url: &str, sql: &str) -> String {
    let out = std::process::Command::new("psql")
        .args([url, "-tAc", sql])
        .output()
        .expect("psql");
    assert!(
        out.status.success(),
        "{sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Runs `tests/ci/postgres.sh <args>`; its standard output.
fn postgres_sh(args: &[&str]) -> String {
    let out = std::process::Command::new("bash")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/ci/postgres.sh"
        ))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "postgres.sh {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn url_of(store: &str) -> String {
    store
        .lines()
        .find_map(|l| l.strip_prefix("url = \""))
        .and_then(|l| l.strip_suffix('"'))
        .expect("a url line")
        .to_string()
}

/// Two nodes started at once on an empty database (each migration applied once),
/// 5,000 events posted alternately to both, one node killed with SIGKILL
/// half-way: every event that got a 202 reaches the endpoint, and no
/// delivery was sent twice while both nodes were alive.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_share_the_work_and_a_killed_node_loses_nothing() {
    let rx = Receiver::ok().await;
    let store = postgres_store("3s");
    let db = url_of(&store);
    let config = node_config(&store, &endpoint("crm", &rx.url("/hook"), ""));
    let (a, b) = {
        let (c1, c2) = (config.clone(), config.clone());
        let ta = std::thread::spawn(move || Router::start(&c1, &[]));
        let tb = std::thread::spawn(move || Router::start(&c2, &[]));
        (ta.join().unwrap(), tb.join().unwrap())
    };
    let mut b = b;
    // Every migration applied once, by one of the two nodes.
    let versions: usize = psql(&db, "SELECT count(*) FROM switchyard_schema")
        .parse()
        .unwrap();
    assert!(versions >= 2, "{versions} schema versions");
    let applied = [a.log(), b.log()]
        .iter()
        .map(|l| l.matches("schema migration applied").count())
        .sum::<usize>();
    assert_eq!(applied, versions, "migrations applied {applied} times");

    let c = Arc::new(Client::new());
    let acked = Arc::new(std::sync::Mutex::new(HashSet::new()));
    let (ua, ub) = (a.events_url("acct"), b.events_url("acct"));
    let killed_at: Arc<std::sync::Mutex<Option<Instant>>> = Default::default();
    let mut tasks = Vec::new();
    for w in 0..8 {
        let (c, acked, ua, ub) = (c.clone(), acked.clone(), ua.clone(), ub.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..625 {
                let n = w * 625 + i;
                let key = format!("lic-{n}");
                let url = if n % 2 == 0 { &ua } else { &ub };
                let body = json!({"event": "license.created", "payload": {"data": {"id": key, "type": "licenses"}}});
                let r = c
                    .request_opt(
                        "POST",
                        url,
                        &[
                            ("authorization", &format!("Bearer {TOKEN}")),
                            ("content-type", "application/json"),
                        ],
                        body.to_string(),
                    )
                    .await;
                if r.is_some_and(|r| r.status == 202) {
                    acked.lock().unwrap().insert(key);
                }
            }
        }));
    }
    // Kill node B half-way through.
    while acked.lock().unwrap().len() < 2500 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    b.kill9();
    *killed_at.lock().unwrap() = Some(Instant::now());
    for t in tasks {
        t.await.unwrap();
    }
    let acked: HashSet<String> = acked.lock().unwrap().clone();
    // Node A kept acknowledging after B died (B's in-flight requests at the
    // kill and its share afterwards are not acknowledged).
    assert!(
        acked.len() > 3000,
        "only {} acknowledged: node A stopped accepting when B died",
        acked.len()
    );
    // The survivor delivers everything acknowledged, B's claims included
    // once they lapse.
    rx.wait_for(Duration::from_secs(90), "every acknowledged event", |got| {
        let keys: HashSet<String> = got.iter().map(key_of).collect();
        acked.iter().all(|k| keys.contains(k))
    })
    .await;
    let killed = killed_at.lock().unwrap().unwrap();
    let mut seen: HashMap<String, Vec<Instant>> = HashMap::new();
    for r in rx.received() {
        seen.entry(r.header("webhook-id").to_string())
            .or_default()
            .push(r.at);
    }
    let twice_alive: Vec<_> = seen
        .iter()
        .filter(|(_, at)| at.iter().filter(|t| **t < killed).count() > 1)
        .map(|(id, _)| id.clone())
        .collect();
    assert!(
        twice_alive.is_empty(),
        "{} deliveries sent twice while both nodes were alive, e.g. {:?}",
        twice_alive.len(),
        twice_alive.first()
    );
    // The store agrees: every delivery of an acknowledged event ends
    // `delivered` (its attempt is recorded just after the receiver got it).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let delivered: usize = psql(
            &db,
            "SELECT count(*) FROM deliveries WHERE status = 'delivered'",
        )
        .parse()
        .unwrap();
        if delivered >= acked.len() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{delivered} deliveries recorded delivered, {} events acknowledged",
            acked.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(a);
}

/// The database stopped for 10 s under load: ingest answers 503 with
/// Retry-After (not 500, not a hang), /readyz fails, nothing acknowledged
/// is lost, and delivery resumes by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_database_outage_answers_503_and_loses_nothing() {
    // Its own cluster: this test stops it.
    let env = postgres_sh(&["start"]);
    let var = |name: &str| {
        env.lines()
            .find_map(|l| l.strip_prefix(&format!("export {name}=")))
            .unwrap()
            .to_string()
    };
    let (admin, dir) = (
        var("SWITCHYARD_TEST_DATABASE_URL"),
        var("SWITCHYARD_TEST_PG_DIR"),
    );
    struct Stop(String);
    impl Drop for Stop {
        fn drop(&mut self) {
            let _ = std::process::Command::new("bash")
                .arg(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/../tests/ci/postgres.sh"
                ))
                .args(["stop", &self.0])
                .status();
        }
    }
    let _stop = Stop(dir.clone());
    let ctl = |what: &str| {
        postgres_sh(&[what, &dir]);
    };
    let rx = Receiver::ok().await;
    let store = format!("\n[store]\nbackend = \"postgres\"\nurl = \"{admin}\"\nlease = \"3s\"\n");
    let router = Router::start(
        &node_config(&store, &endpoint("crm", &rx.url("/hook"), "")),
        &[],
    );
    let c = Arc::new(Client::new());
    let acked = Arc::new(std::sync::Mutex::new(HashSet::new()));
    let refused = Arc::new(std::sync::Mutex::new(Vec::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for w in 0..4 {
        let (c, acked, refused, stop) = (c.clone(), acked.clone(), refused.clone(), stop.clone());
        let url = router.events_url("acct");
        tasks.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                n += 1;
                let key = format!("w{w}-{n}");
                let body = json!({"event": "license.created", "payload": {"data": {"id": key, "type": "licenses"}}});
                let started = Instant::now();
                let r = tokio::time::timeout(
                    Duration::from_secs(15),
                    c.request_opt(
                        "POST",
                        &url,
                        &[
                            ("authorization", &format!("Bearer {TOKEN}")),
                            ("content-type", "application/json"),
                        ],
                        body.to_string(),
                    ),
                )
                .await
                .expect("an ingest request hung for 15 s");
                let r = r.expect("the router closed the connection");
                match r.status {
                    202 => {
                        acked.lock().unwrap().insert(key);
                    }
                    503 => {
                        let retry = r
                            .headers
                            .get("retry-after")
                            .map(|v| v.to_str().unwrap_or("").to_string());
                        refused.lock().unwrap().push((retry, started.elapsed()));
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    s => panic!("ingest answered {s}: {}", String::from_utf8_lossy(&r.body)),
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    ctl("pause");
    let paused = Instant::now();
    // /readyz fails while the database is away.
    let mut unready = false;
    while paused.elapsed() < Duration::from_secs(10) {
        let r = c.request("GET", &router.url("/readyz"), &[], "").await;
        unready |= r.status == 503;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    ctl("resume");
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for t in tasks {
        t.await.unwrap();
    }
    assert!(
        unready,
        "/readyz stayed ready while the database was stopped"
    );
    let refused = refused.lock().unwrap().clone();
    assert!(
        !refused.is_empty(),
        "no request was refused during the outage"
    );
    assert!(
        refused.iter().all(|(r, _)| r.as_deref() == Some("1")),
        "a 503 without Retry-After"
    );
    let slowest = refused.iter().map(|(_, d)| *d).max().unwrap();
    assert!(
        slowest < Duration::from_secs(12),
        "a refusal took {slowest:?}"
    );
    let acked: HashSet<String> = acked.lock().unwrap().clone();
    assert!(!acked.is_empty());
    rx.wait_for(Duration::from_secs(60), "every acknowledged event", |got| {
        let keys: HashSet<String> = got.iter().map(key_of).collect();
        acked.iter().all(|k| keys.contains(k))
    })
    .await;
    let r = c.request("GET", &router.url("/readyz"), &[], "").await;
    assert_eq!(r.status, 200, "not ready again after the outage");
}

/// An endpoint created through node A's API is delivered to by node B
/// within about a second; disabled through A, B stops delivering to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_endpoint_changed_on_one_node_takes_effect_on_the_other() {
    let rx = Receiver::ok().await;
    let store = postgres_store("3s");
    let config = node_config(&store, "");
    let a = Router::start(&config, &[]);
    let b = Router::start(&config, &[]);
    let c = Client::new();
    let doc = json!({"data": {"type": "webhook-endpoints", "id": "shared",
        "attributes": {"url": rx.url("/shared"), "secret": SECRET}}});
    let r = api(
        &c,
        &a,
        "POST",
        "/v1/accounts/acct/webhook-endpoints",
        TOKEN,
        Some(doc),
    )
    .await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    // B learns of it within about a second.
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let r = api(
            &c,
            &b,
            "GET",
            "/v1/accounts/acct/webhook-endpoints/shared",
            TOKEN,
            None,
        )
        .await;
        if r.status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node B does not see the endpoint created on A; its log:\n{}",
            b.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = c
        .post_event(
            &b,
            "acct",
            &event(
                "license.created",
                json!({"data": {"id": "first", "type": "licenses"}}),
            ),
        )
        .await;
    assert_eq!(r.status, 202);
    rx.wait_for(Duration::from_secs(10), "the first delivery", |g| {
        g.len() == 1
    })
    .await;
    // Disabled through A.
    let patch = json!({"data": {"type": "webhook-endpoints", "id": "shared", "attributes": {"enabled": false}}});
    let r = api(
        &c,
        &a,
        "PATCH",
        "/v1/accounts/acct/webhook-endpoints/shared",
        TOKEN,
        Some(patch),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for i in 0..20 {
        let r = c
            .post_event(
                &b,
                "acct",
                &event(
                    "license.created",
                    json!({"data": {"id": format!("after-{i}"), "type": "licenses"}}),
                ),
            )
            .await;
        assert_eq!(r.status, 202);
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        rx.count(),
        1,
        "node B delivered to an endpoint disabled on node A"
    );
}

/// `store copy` moves a sled installation with pending deliveries to
/// PostgreSQL; a router on PostgreSQL then delivers them, and the history
/// (earlier attempts) is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn store_copy_moves_pending_deliveries_to_postgres() {
    // The endpoint fails first (500), so deliveries stay pending with an
    // attempt each.
    let failing = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let f = failing.clone();
    let rx = Receiver::scripted(move |_, _| {
        Reply::status(if f.load(std::sync::atomic::Ordering::SeqCst) {
            500
        } else {
            200
        })
    })
    .await;
    let ep = endpoint("crm", &rx.url("/hook"), "retry_schedule = [\"1h\"]");
    let mut sled = Router::start(&format!("{}{ep}", base_config("")), &[]);
    let c = Client::new();
    let mut ids = Vec::new();
    for i in 0..50 {
        let r = c
            .post_event(
                &sled,
                "acct",
                &event(
                    "license.created",
                    json!({"data": {"id": format!("k{i}"), "type": "licenses"}}),
                ),
            )
            .await;
        assert_eq!(r.status, 202);
        ids.push(r.json()["data"]["id"].as_str().unwrap().to_string());
    }
    rx.wait_for(Duration::from_secs(20), "a first attempt each", |g| {
        g.len() >= 50
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(sled.stop().success());
    let store = postgres_store("3s");
    let url = url_of(&store);
    let out = std::process::Command::new(BIN)
        .args(["store", "copy", "--from"])
        .arg(sled.dir.join("data"))
        .args(["--to", &url])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("50 events, 50 deliveries (50 pending)"),
        "{said}"
    );
    // A second copy into the same database is refused.
    let again = std::process::Command::new(BIN)
        .args(["store", "copy", "--from"])
        .arg(sled.dir.join("data"))
        .args(["--to", &url])
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already holds events"));

    failing.store(false, std::sync::atomic::Ordering::SeqCst);
    let pg = Router::start(&format!("{}{store}{ep}", base_config("")), &[]);
    // Due in an hour; a manual retry of each makes them due now.
    for id in &ids {
        let r = api(
            &c,
            &pg,
            "POST",
            &format!("/v1/accounts/acct/webhook-events/{id}/actions/retry"),
            TOKEN,
            None,
        )
        .await;
        assert!(
            r.status < 300,
            "retry {id}: {} {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        );
    }
    rx.wait_for(Duration::from_secs(30), "every copied delivery", |g| {
        g.iter()
            .filter(|r| r.at > Instant::now() - Duration::from_secs(60))
            .count()
            >= 100
    })
    .await;
    let r = api(
        &c,
        &pg,
        "GET",
        &format!("/v1/accounts/acct/webhook-events/{}", ids[0]),
        TOKEN,
        None,
    )
    .await;
    assert_eq!(r.status, 200);
    let text = String::from_utf8_lossy(&r.body);
    assert!(
        text.contains("500"),
        "the attempt from before the copy is gone: {text}"
    );
}

/// `rate_limit` holds for the cluster: two routers on one database, an
/// endpoint limited to 20 requests/s, 40 events posted alternately to
/// both. Each router sends at 10/s, so the receiver sees the 40 requests
/// over about 2 s (at 20/s each, it would be about 1 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_is_shared_by_the_nodes() {
    let rx = Receiver::ok().await;
    let store = postgres_store("3s");
    let config = node_config(
        &store,
        &endpoint("paced", &rx.url("/paced"), "rate_limit = \"20/s\""),
    );
    let a = Router::start(&config, &[]);
    let b = Router::start(&config, &[]);
    // Both have seen each other's heartbeat.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let c = Client::new();
    for i in 0..40 {
        let node = if i % 2 == 0 { &a } else { &b };
        let r = c
            .post_event(
                node,
                "acct",
                &event("license.created", json!({"data": {"id": format!("r{i}")}})),
            )
            .await;
        assert_eq!(r.status, 202);
    }
    let got = rx
        .wait_for(Duration::from_secs(15), "40 paced deliveries", |g| {
            g.len() >= 40
        })
        .await;
    let span = got[39].at.duration_since(got[0].at);
    eprintln!("FIGURES rate_limit 20/s on two nodes: 40 requests over {span:?}");
    assert!(
        span >= Duration::from_millis(1600) && span <= Duration::from_secs(5),
        "40 requests at 20/s in all take about 2 s: {span:?}"
    );
}
