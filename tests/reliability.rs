//! Reliability and security proof (issue 6): the real `switchyard` binary
//! under injected faults and hostile input, with real receivers on loopback.
//! Every test prints its figures (`-- --nocapture`); docs/RELIABILITY.md
//! collects them. The quick cases run in CI; the long soaks are
//! `host/benches/soak.sh` (more crash rounds, and the `#[ignore]`d
//! `restart_with_backlog`).
//!
//! One case per row of docs/RELIABILITY.md, each runnable alone:
//! `cargo test --release -p switchyard --test reliability <name> -- --nocapture`.

#[path = "common/mod.rs"]
mod common;

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use rand::Rng;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Timing-sensitive tests (load, latency, crash rounds) take this lock so
/// they do not measure each other on a 2-core machine.
static HEAVY: Mutex<()> = Mutex::new(());

fn heavy() -> std::sync::MutexGuard<'static, ()> {
    HEAVY.lock().unwrap_or_else(|p| p.into_inner())
}

fn auth() -> (&'static str, String) {
    ("authorization", format!("Bearer {TOKEN}"))
}

/// The test-chosen payload id of a delivered Keygen envelope
/// (`data.attributes.payload` is the resource document as a string).
fn payload_id(r: &Received) -> Option<String> {
    let v = r.json();
    let p: Value = serde_json::from_str(v["data"]["attributes"]["payload"].as_str()?).ok()?;
    Some(p["data"]["id"].as_str()?.to_string())
}

fn counts_by_payload(got: &[Received]) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for r in got {
        if let Some(id) = payload_id(r) {
            *m.entry(id).or_insert(0) += 1;
        }
    }
    m
}

/// `GET /v1/accounts/acct/webhook-events/{id}`: the event with its deliveries and attempts.
async fn event_api(c: &Client, router: &Router, id: &str) -> Value {
    let a = auth();
    let r = c
        .request(
            "GET",
            &router.url(&format!("/v1/accounts/acct/webhook-events/{id}")),
            &[(a.0, &a.1)],
            "",
        )
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    r.json()
}

fn delivery_of<'a>(ev: &'a Value, endpoint: &str) -> &'a Value {
    ev["data"]["attributes"]["deliveries"]
        .as_array()
        .and_then(|ds| ds.iter().find(|d| d["endpoint"] == endpoint))
        .unwrap_or_else(|| panic!("no delivery to {endpoint} in {ev}"))
}

/// Polls the API until the delivery to `endpoint` satisfies `pred`.
async fn wait_delivery(
    c: &Client,
    router: &Router,
    id: &str,
    endpoint: &str,
    timeout: Duration,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let ev = event_api(c, router, id).await;
        let d = delivery_of(&ev, endpoint).clone();
        if pred(&d) {
            return d;
        }
        if Instant::now() > deadline {
            panic!("timed out waiting on the delivery to {endpoint}: {d}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// VmRSS and VmHWM (peak) of a process, in KiB.
fn rss_kib(pid: u32) -> (u64, u64) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        s.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn pid(router: &Router) -> u32 {
    router.child.as_ref().expect("running").id()
}

fn alive(router: &mut Router) -> bool {
    router
        .child
        .as_mut()
        .is_some_and(|c| c.try_wait().ok().flatten().is_none())
}

/// Checks a JSON:API error document.
fn assert_jsonapi_error(r: &Resp, status: u16, what: &str) {
    assert_eq!(
        r.status,
        status,
        "{what}: {}",
        String::from_utf8_lossy(&r.body)
    );
    let v = r.json();
    let e = &v["errors"][0];
    assert_eq!(e["status"], status.to_string(), "{what}: {v}");
    assert!(
        e["title"].is_string() && e["detail"].is_string() && e["code"].is_string(),
        "{what}: {v}"
    );
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Pins the router to the port it got, so a restart comes back on it.
fn pin_port(router: &Router, config: &str) -> String {
    let pinned = config.replacen("127.0.0.1:0", &router.addr.to_string(), 1);
    std::fs::write(&router.config_path, &pinned).unwrap();
    pinned
}

// ---- a raw TCP receiver for faults hyper would not produce --------------------

/// What a raw receiver does with one connection.
#[derive(Clone, Copy, Debug)]
enum RawAct {
    /// Read the request headers, then close the socket (no answer).
    ResetAfterHeaders,
    /// Answer `status` with a body of `body_len` bytes (streamed).
    Answer { status: u16, body_len: usize },
}

struct RawServer {
    addr: SocketAddr,
    requests: Arc<AtomicUsize>,
    bytes_sent: Arc<AtomicUsize>,
}

impl RawServer {
    async fn start(act: impl Fn(usize) -> RawAct + Send + Sync + 'static) -> RawServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(AtomicUsize::new(0));
        let bytes_sent = Arc::new(AtomicUsize::new(0));
        let act = Arc::new(act);
        let (rq, bs) = (requests.clone(), bytes_sent.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    continue;
                };
                let (rq, bs, act) = (rq.clone(), bs.clone(), act.clone());
                tokio::spawn(async move {
                    loop {
                        // Read one request: headers, then Content-Length bytes.
                        let mut buf = Vec::new();
                        let mut tmp = [0u8; 8192];
                        let head_end = loop {
                            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                                break i + 4;
                            }
                            match s.read(&mut tmp).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&tmp[..n]),
                            }
                        };
                        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
                        let n = rq.fetch_add(1, Ordering::SeqCst);
                        match act(n) {
                            RawAct::ResetAfterHeaders => {
                                #[allow(deprecated)]
                                let _ = s.set_linger(Some(Duration::ZERO));
                                return;
                            }
                            RawAct::Answer { status, body_len } => {
                                let len: usize = head
                                    .lines()
                                    .find_map(|l| l.strip_prefix("content-length:"))
                                    .and_then(|v| v.trim().parse().ok())
                                    .unwrap_or(0);
                                let mut have = buf.len() - head_end;
                                while have < len {
                                    match s.read(&mut tmp).await {
                                        Ok(0) | Err(_) => return,
                                        Ok(n) => have += n,
                                    }
                                }
                                let head = format!(
                                    "HTTP/1.1 {status} X\r\ncontent-length: {body_len}\r\ncontent-type: text/plain\r\n\r\n"
                                );
                                if s.write_all(head.as_bytes()).await.is_err() {
                                    return;
                                }
                                let chunk = vec![b'z'; 1 << 20];
                                let mut left = body_len;
                                while left > 0 {
                                    let k = left.min(chunk.len());
                                    match s.write(&chunk[..k]).await {
                                        Ok(0) | Err(_) => return,
                                        Ok(w) => {
                                            bs.fetch_add(w, Ordering::Relaxed);
                                            left -= w;
                                        }
                                    }
                                }
                            }
                        }
                    }
                });
            }
        });
        RawServer {
            addr,
            requests,
            bytes_sent,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

// =============================================================================
// Crash rounds
// =============================================================================

/// `SWITCHYARD_CRASH_ROUNDS` (default 5; the soak uses 25) rounds of kill -9
/// at a random moment under sustained ingest and delivery load, restarting
/// each time. At the end every acknowledged event has reached every
/// subscribed endpoint; duplicates and recovery times are printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn crash_rounds() {
    let _g = heavy();
    let rounds: usize = std::env::var("SWITCHYARD_CRASH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let a = Receiver::ok().await;
    let b = Receiver::scripted(|_, _| Reply {
        delay: Duration::from_millis(3),
        ..Reply::status(200)
    })
    .await;
    let config = base_config("")
        + &endpoint(
            "a",
            &a.url("/a"),
            "retry_schedule = [\"200ms\", \"200ms\", \"200ms\", \"500ms\", \"1s\"]",
        )
        + &endpoint(
            "b",
            &b.url("/b"),
            "subscriptions = [\"license.*\"]\nretry_schedule = [\"200ms\", \"200ms\", \"500ms\", \"1s\"]",
        );
    let mut router = Router::start(&config, &[]);
    pin_port(&router, &config);
    let url = router.events_url("acct");
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::<(String, bool)>::new()));
    let refused = Arc::new(AtomicUsize::new(0));
    let mut producers = Vec::new();
    // 8 producers post as fast as the router takes them; a request that
    // fails (router down) is retried with the same Idempotency-Key.
    for w in 0..8 {
        let (url, acked, stop, refused) =
            (url.clone(), acked.clone(), stop.clone(), refused.clone());
        producers.push(tokio::spawn(async move {
            let c = Client::new();
            let mut i = 0usize;
            while !stop.load(Ordering::SeqCst) {
                let license = i % 2 == 0;
                let kind = if license {
                    "license.created"
                } else {
                    "user.created"
                };
                let key = format!("w{w}-{i}");
                let tries = post_until_acked(&c, &url, kind, &key, Duration::from_millis(20)).await;
                refused.fetch_add(tries as usize, Ordering::Relaxed);
                acked.lock().unwrap().push((key, license));
                i += 1;
            }
        }));
    }
    let mut recoveries = Vec::new();
    let mut startups = Vec::new();
    let mut acked_at_kill = Vec::new();
    for round in 0..rounds {
        let wait = rand::thread_rng().gen_range(300..1500);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        acked_at_kill.push(acked.lock().unwrap().len());
        router.kill9();
        // Down for a random moment too, while producers keep trying.
        tokio::time::sleep(Duration::from_millis(rand::thread_rng().gen_range(0..300))).await;
        let seen_a = a.count();
        let seen_b = b.count();
        let spawn_at = Instant::now();
        router.spawn();
        startups.push(spawn_at.elapsed());
        // Recovery: spawn → the first delivery after the restart.
        let deadline = Instant::now() + Duration::from_secs(30);
        while a.count() == seen_a && b.count() == seen_b {
            assert!(
                Instant::now() < deadline,
                "round {round}: no delivery within 30 s of the restart\n{}",
                router.log()
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        recoveries.push(spawn_at.elapsed());
    }
    // Let the load run a little after the last restart, then stop it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    for p in producers {
        p.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    let want_a: HashSet<String> = acked.iter().map(|(k, _)| k.clone()).collect();
    let want_b: HashSet<String> = acked
        .iter()
        .filter(|(_, l)| *l)
        .map(|(k, _)| k.clone())
        .collect();
    assert_eq!(
        want_a.len(),
        acked.len(),
        "each key acknowledged once per producer"
    );
    let t0 = Instant::now();
    let covered = |got: &[Received], want: &HashSet<String>| {
        let have: HashSet<String> = got.iter().filter_map(payload_id).collect();
        want.iter().filter(|k| !have.contains(*k)).count()
    };
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (ma, mb) = (
            covered(&a.received(), &want_a),
            covered(&b.received(), &want_b),
        );
        if ma == 0 && mb == 0 {
            break;
        }
        if Instant::now() > deadline {
            panic!(
                "LOST: {ma} acknowledged event(s) never reached a, {mb} never reached b\n{}",
                router.log()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let drain = t0.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ca = counts_by_payload(&a.received());
    let cb = counts_by_payload(&b.received());
    let dups = |c: &HashMap<String, usize>, want: &HashSet<String>| {
        let extra: usize = want
            .iter()
            .map(|k| c.get(k).copied().unwrap_or(0).saturating_sub(1))
            .sum();
        let with: usize = want
            .iter()
            .filter(|k| c.get(*k).copied().unwrap_or(0) > 1)
            .count();
        let max = want
            .iter()
            .map(|k| c.get(k).copied().unwrap_or(0))
            .max()
            .unwrap_or(0);
        (extra, with, max)
    };
    let (xa, wa, ma) = dups(&ca, &want_a);
    let (xb, wb, mb) = dups(&cb, &want_b);
    let mut rec = recoveries.clone();
    rec.sort();
    let mut st = startups.clone();
    st.sort();
    eprintln!(
        "FIGURES crash_rounds: rounds={rounds} acked={} (license {}) refused_requests_while_down={} \
         lost_a=0 lost_b=0 duplicates_a={xa} (events with dups {wa}, max deliveries of one event {ma}) \
         duplicates_b={xb} (events {wb}, max {mb}) dup_rate={:.4}/delivery \
         startup(spawn->listening) median={:?} max={:?} recovery(spawn->first delivery) median={:?} max={:?} \
         drain_after_load={drain:?} acked_at_kills={acked_at_kill:?}",
        acked.len(),
        want_b.len(),
        refused.load(Ordering::Relaxed),
        (xa + xb) as f64 / (want_a.len() + want_b.len()) as f64,
        st[st.len() / 2],
        st.last().unwrap(),
        rec[rec.len() / 2],
        rec.last().unwrap(),
    );
}

// =============================================================================
// Receiver faults
// =============================================================================

/// The receiver is down (connection refused) for 1.5 s, then comes back:
/// every event is delivered once it is up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receiver_down_then_back() {
    let port = free_port();
    let config = base_config("")
        + &endpoint(
            "e",
            &format!("http://127.0.0.1:{port}/e"),
            "retry_schedule = [\"300ms\", \"300ms\", \"300ms\", \"300ms\", \"300ms\", \"300ms\", \"300ms\", \"300ms\"]",
        );
    let router = Router::start(&config, &[]);
    let c = Client::new();
    let n = 50;
    for i in 0..n {
        let r = c
            .post_event(
                &router,
                "acct",
                &event("user.created", json!({"data": {"id": format!("d{i}")}})),
            )
            .await;
        assert_eq!(r.status, 202);
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let up = Receiver::on(format!("127.0.0.1:{port}").parse().unwrap(), |_, _| {
        Reply::status(200)
    })
    .await;
    let t = Instant::now();
    up.wait_for(
        Duration::from_secs(10),
        "every event after the receiver is back",
        |g| counts_by_payload(g).len() >= n,
    )
    .await;
    let dups = up.count() - counts_by_payload(&up.received()).len();
    eprintln!(
        "FIGURES receiver_down_then_back: events={n} lost=0 duplicates={dups} delivered_within={:?} of the receiver coming back",
        t.elapsed()
    );
}

/// The receiver answers after the endpoint's timeout twice, then in time:
/// the slow attempts are recorded as timeouts, the event is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receiver_slow_beyond_timeout() {
    let rx = Receiver::scripted(|n, _| Reply {
        delay: if n < 2 {
            Duration::from_secs(3)
        } else {
            Duration::ZERO
        },
        ..Reply::status(200)
    })
    .await;
    let config = base_config("")
        + &endpoint(
            "slow",
            &rx.url("/s"),
            "timeout = \"300ms\"\nretry_schedule = [\"100ms\", \"100ms\", \"100ms\"]",
        );
    let router = Router::start(&config, &[]);
    let c = Client::new();
    let r = c
        .post_event(
            &router,
            "acct",
            &event("user.created", json!({"data": {"id": "slow-1"}})),
        )
        .await;
    assert_eq!(r.status, 202);
    let id = r.json()["data"]["id"].as_str().unwrap().to_string();
    let d = wait_delivery(&c, &router, &id, "slow", Duration::from_secs(10), |d| {
        d["status"] == "delivered"
    })
    .await;
    let ev = event_api(&c, &router, &id).await;
    let attempts = delivery_of(&ev, "slow")["attempts"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(attempts.len(), 3, "{d}");
    for a in &attempts[..2] {
        assert!(
            a["error"].as_str().unwrap_or("").contains("timed out"),
            "{a}"
        );
    }
    assert_eq!(attempts[2]["status"], 200);
    eprintln!(
        "FIGURES receiver_slow_beyond_timeout: attempts={} (2 timed out at 300 ms), delivered, lost=0",
        attempts.len()
    );
}

/// The receiver reads the request headers and closes the connection (3
/// times), then answers 200: the resets are failed attempts with an error,
/// and the event is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receiver_resets_mid_request() {
    let raw = RawServer::start(|n| {
        if n < 3 {
            RawAct::ResetAfterHeaders
        } else {
            RawAct::Answer {
                status: 200,
                body_len: 2,
            }
        }
    })
    .await;
    let config = base_config("")
        + &endpoint(
            "reset",
            &raw.url("/r"),
            "retry_schedule = [\"100ms\", \"100ms\", \"100ms\", \"100ms\", \"100ms\"]",
        );
    let router = Router::start(&config, &[]);
    let c = Client::new();
    let r = c
        .post_event(
            &router,
            "acct",
            &event("user.created", json!({"data": {"id": "reset-1"}})),
        )
        .await;
    let id = r.json()["data"]["id"].as_str().unwrap().to_string();
    let d = wait_delivery(&c, &router, &id, "reset", Duration::from_secs(10), |d| {
        d["status"] == "delivered"
    })
    .await;
    let ev = event_api(&c, &router, &id).await;
    let attempts = delivery_of(&ev, "reset")["attempts"]
        .as_array()
        .unwrap()
        .clone();
    let failed: Vec<&Value> = attempts.iter().filter(|a| a["status"] != 200).collect();
    assert!(
        !failed.is_empty(),
        "the resets show as failed attempts: {d}"
    );
    for a in &failed {
        assert!(
            a["error"].is_string(),
            "a reset is recorded with an error: {a}"
        );
    }
    eprintln!(
        "FIGURES receiver_resets_mid_request: connections reset=3, requests seen={}, attempts recorded={} ({} failed, error e.g. {:?}), delivered, lost=0",
        raw.requests.load(Ordering::SeqCst),
        attempts.len(),
        failed.len(),
        failed[0]["error"]
    );
}

/// 500, 500, then 200: two failed attempts with their status, then delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receiver_500_then_200() {
    let rx = Receiver::scripted(|n, _| {
        if n < 2 {
            Reply {
                body: "db down".into(),
                ..Reply::status(500)
            }
        } else {
            Reply::status(200)
        }
    })
    .await;
    let config = base_config("")
        + &endpoint(
            "e",
            &rx.url("/e"),
            "retry_schedule = [\"100ms\", \"100ms\", \"100ms\"]",
        );
    let router = Router::start(&config, &[]);
    let c = Client::new();
    let r = c
        .post_event(
            &router,
            "acct",
            &event("user.created", json!({"data": {"id": "x"}})),
        )
        .await;
    let id = r.json()["data"]["id"].as_str().unwrap().to_string();
    wait_delivery(&c, &router, &id, "e", Duration::from_secs(10), |d| {
        d["status"] == "delivered"
    })
    .await;
    let ev = event_api(&c, &router, &id).await;
    let st: Vec<Value> = delivery_of(&ev, "e")["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["status"].clone())
        .collect();
    assert_eq!(st, vec![json!(500), json!(500), json!(200)]);
    assert_eq!(
        delivery_of(&ev, "e")["attempts"][0]["responseBody"],
        "db down"
    );
    assert_eq!(rx.count(), 3);
    eprintln!(
        "FIGURES receiver_500_then_200: attempts=[500,500,200] delivered once, lost=0 duplicates=0"
    );
}

/// The receiver answers with a 100 MB body (500 twice, then 200): the
/// attempt log keeps 4 KiB, the router stops reading, its memory stays bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receiver_huge_response_body() {
    const BIG: usize = 100 << 20;
    let raw = RawServer::start(|n| RawAct::Answer {
        status: if n < 2 { 500 } else { 200 },
        body_len: BIG,
    })
    .await;
    let config = base_config("")
        + &endpoint(
            "big",
            &raw.url("/big"),
            "retry_schedule = [\"100ms\", \"100ms\"]\ntimeout = \"5s\"",
        );
    let router = Router::start(&config, &[]);
    let c = Client::new();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (rss0, _) = rss_kib(pid(&router));
    let mut ids = Vec::new();
    for i in 0..5 {
        let r = c
            .post_event(
                &router,
                "acct",
                &event("user.created", json!({"data": {"id": format!("big{i}")}})),
            )
            .await;
        ids.push(r.json()["data"]["id"].as_str().unwrap().to_string());
    }
    for id in &ids {
        wait_delivery(&c, &router, id, "big", Duration::from_secs(20), |d| {
            d["status"] == "delivered"
        })
        .await;
    }
    let ev = event_api(&c, &router, &ids[0]).await;
    let body = delivery_of(&ev, "big")["attempts"][0]["responseBody"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(body.len(), 4096, "the attempt log keeps 4 KiB");
    let (rss1, hwm) = rss_kib(pid(&router));
    let sent = raw.bytes_sent.load(Ordering::Relaxed);
    eprintln!(
        "FIGURES receiver_huge_response_body: responses={} of 100 MiB each; receiver managed to write {} MiB in total \
         (the router stops reading after 4 KiB); router RSS before={} MiB after={} MiB peak={} MiB; excerpt kept={} bytes",
        raw.requests.load(Ordering::SeqCst),
        sent >> 20,
        rss0 >> 10,
        rss1 >> 10,
        hwm >> 10,
        body.len()
    );
    assert!(
        hwm < rss0 + 64 * 1024,
        "peak RSS grew by more than 64 MiB: {rss0} -> {hwm} KiB"
    );
    assert!(
        sent < 5 * BIG,
        "the router read whole 100 MB bodies ({sent} bytes)"
    );
}

/// 301/302/307/308 are failures and are never followed: the redirect target
/// receives nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receiver_redirects_are_not_followed() {
    let target = Receiver::ok().await;
    let loc = target.url("/stolen");
    let rx = Receiver::scripted(move |n, _| {
        let status = [301, 302, 307, 308][n % 4];
        Reply {
            headers: vec![("location".into(), loc.clone())],
            ..Reply::status(status)
        }
    })
    .await;
    let config = base_config("")
        + &endpoint(
            "redir",
            &rx.url("/r"),
            "retry_schedule = [\"100ms\", \"100ms\", \"100ms\"]",
        );
    let router = Router::start(&config, &[]);
    let c = Client::new();
    let r = c
        .post_event(
            &router,
            "acct",
            &event("user.created", json!({"data": {"id": "r1"}})),
        )
        .await;
    let id = r.json()["data"]["id"].as_str().unwrap().to_string();
    let d = wait_delivery(&c, &router, &id, "redir", Duration::from_secs(10), |d| {
        d["status"] == "failed"
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(target.count(), 0, "the redirect target got a request");
    let st: Vec<Value> = d["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["status"].clone())
        .collect();
    assert_eq!(st, vec![json!(301), json!(302), json!(307), json!(308)]);
    eprintln!(
        "FIGURES receiver_redirects_are_not_followed: attempts={st:?} all failed, target received 0"
    );
}

// =============================================================================
// Noisy neighbour
// =============================================================================

struct Phase {
    p50: Duration,
    p99: Duration,
    throughput: f64,
}

/// Paced latency (100 events at ~100/s, send → receipt) then throughput
/// (1,000 events from 16 producers, first send → last receipt) of the
/// `healthy` endpoint for events of `kind`.
async fn measure_phase(router: &Router, rx: &Receiver, kind: &str, tag: &str) -> Phase {
    let c = Client::new();
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::new(Mutex::new(HashMap::new()));
    let n_paced = 150;
    for i in 0..n_paced {
        let key = format!("{tag}-p{i}");
        sent.lock().unwrap().insert(key.clone(), Instant::now());
        let r = c
            .post_event(router, "acct", &event(kind, json!({"data": {"id": key}})))
            .await;
        assert_eq!(r.status, 202);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let want = |g: &[Received], prefix: &str, n: usize| {
        g.iter()
            .filter(|r| payload_id(r).is_some_and(|p| p.starts_with(prefix)))
            .count()
            >= n
    };
    let prefix = format!("{tag}-p");
    rx.wait_for(Duration::from_secs(20), "paced events", |g| {
        want(g, &prefix, n_paced)
    })
    .await;
    let mut lat: Vec<Duration> = rx
        .received()
        .iter()
        .filter_map(|r| {
            let p = payload_id(r)?;
            let s = *sent.lock().unwrap().get(&p)?;
            Some(r.at.saturating_duration_since(s))
        })
        .collect();
    lat.sort();
    // Throughput.
    let n_blast = 1000;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..16 {
        let url = router.events_url("acct");
        let kind = kind.to_string();
        let tag = tag.to_string();
        tasks.push(tokio::spawn(async move {
            let c = Client::new();
            for i in (w..n_blast).step_by(16) {
                let body =
                    json!({"event": kind, "payload": {"data": {"id": format!("{tag}-b{i}")}}})
                        .to_string();
                let r = c
                    .request(
                        "POST",
                        &url,
                        &[
                            ("authorization", "Bearer test-token-aaaa"),
                            ("content-type", "application/json"),
                        ],
                        body,
                    )
                    .await;
                assert_eq!(r.status, 202);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let prefix = format!("{tag}-b");
    rx.wait_for(Duration::from_secs(60), "blast events", |g| {
        want(g, &prefix, n_blast)
    })
    .await;
    let took = start.elapsed();
    Phase {
        p50: percentile(&lat, 0.5),
        p99: percentile(&lat, 0.99),
        throughput: n_blast as f64 / took.as_secs_f64(),
    }
}

/// One endpoint dead (connection refused, retries every second) and one slow (answers
/// after 5 s, timeout 1 s) while a third is healthy: the healthy endpoint's
/// p99 latency stays within 2x of its latency alone and its throughput holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn noisy_neighbour_isolation() {
    let _g = heavy();
    let healthy = Receiver::ok().await;
    let slow = Receiver::scripted(|_, _| Reply {
        delay: Duration::from_secs(5),
        ..Reply::status(200)
    })
    .await;
    let dead_port = free_port();
    // Retries every second: far faster than the default schedule (minutes
    // to days), so every phase sees several retries of each failed event.
    let schedule = "retry_schedule = [\"1s\", \"1s\", \"1s\", \"1s\", \"1s\", \"1s\", \"1s\", \"1s\", \"1s\", \"1s\"]";
    let fine = Receiver::ok().await;
    let config = base_config("")
        + &endpoint("healthy", &healthy.url("/h"), "")
        + &endpoint("fine1", &fine.url("/f1"), "subscriptions = [\"user.*\"]")
        + &endpoint("fine2", &fine.url("/f2"), "subscriptions = [\"user.*\"]")
        + &endpoint(
            "dead",
            &format!("http://127.0.0.1:{dead_port}/d"),
            &format!("subscriptions = [\"license.*\"]\n{schedule}"),
        )
        + &endpoint(
            "slow",
            &slow.url("/s"),
            &format!("subscriptions = [\"license.*\"]\ntimeout = \"1s\"\n{schedule}"),
        );
    let router = Router::start(&config, &[]);
    // Warm up connections and the process.
    let c = Client::new();
    for i in 0..50 {
        c.post_event(
            &router,
            "acct",
            &event(
                "machine.created",
                json!({"data": {"id": format!("warm{i}")}}),
            ),
        )
        .await;
    }
    healthy
        .wait_for(Duration::from_secs(10), "warm-up", |g| g.len() >= 50)
        .await;
    // Timing on a shared 2-core machine is noisy (other builds run): up to
    // 3 rounds of the three phases; the bounds must hold in one round, and
    // every round's figures are printed.
    let mut failures = Vec::new();
    for round in 0..3 {
        let tag = format!("r{round}");
        // Alone: machine.* events only reach `healthy`.
        let alone =
            measure_phase(&router, &healthy, "machine.created", &format!("{tag}alone")).await;
        // Healthy neighbours: user.* events fan out to healthy + 2 fine
        // endpoints (the same store work per event as the noisy phase).
        let neighbours =
            measure_phase(&router, &healthy, "user.created", &format!("{tag}fine")).await;
        // Noisy: license.* events reach healthy + dead + slow, which fail and retry.
        let noisy =
            measure_phase(&router, &healthy, "license.created", &format!("{tag}noisy")).await;
        let dead_attempts = router.log().matches("attempt failed").count();
        eprintln!(
            "FIGURES noisy_neighbour_isolation round {round}: alone p50={:?} p99={:?} throughput={:.0}/s | with 2 healthy neighbours (3 deliveries/event) p50={:?} p99={:?} {:.0}/s | \
             with dead+slow neighbours (3 deliveries/event) p50={:?} p99={:?} throughput={:.0}/s | \
             noisy/alone p99={:.2}x, noisy/healthy-neighbours throughput={:.2}x (noisy/alone {:.2}x) | neighbour failed attempts logged={dead_attempts} slow receiver got={}",
            alone.p50,
            alone.p99,
            alone.throughput,
            neighbours.p50,
            neighbours.p99,
            neighbours.throughput,
            noisy.p50,
            noisy.p99,
            noisy.throughput,
            noisy.p99.as_secs_f64() / alone.p99.as_secs_f64().max(1e-9),
            noisy.throughput / neighbours.throughput,
            noisy.throughput / alone.throughput,
            slow.count(),
        );
        // A 2 ms floor: below it, scheduler noise dominates any ratio.
        let bound = (alone.p99 * 2).max(alone.p99 + Duration::from_millis(2));
        let mut why = Vec::new();
        if noisy.p99 > bound {
            why.push(format!(
                "healthy p99 {:?} > 2x alone {:?}",
                noisy.p99, alone.p99
            ));
        }
        // Throughput is compared at equal fan-out (3 deliveries per event):
        // storing more deliveries per event is not the neighbour's fault.
        if noisy.throughput < neighbours.throughput * 0.8 {
            why.push(format!(
                "healthy throughput dropped: {:.0}/s with healthy neighbours -> {:.0}/s with failing ones",
                neighbours.throughput, noisy.throughput
            ));
        }
        if why.is_empty() {
            return;
        }
        failures.push(format!("round {round}: {}", why.join("; ")));
    }
    panic!(
        "isolation bounds not met in 3 rounds:\n{}",
        failures.join("\n")
    );
}

// =============================================================================
// Plugin faults under load
// =============================================================================

/// Three endpoints whose plugin panics, loops, or exhausts its memory on
/// every event while a fourth endpoint takes the same events at full rate;
/// the faulty deliveries fail and retry; replacing the plugin files (same
/// names, same endpoint config) with a fixed build heals every pending one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn plugin_faults_under_load_then_hot_fix() {
    let _g = heavy();
    let healthy = Receiver::ok().await;
    let sick = Receiver::ok().await;
    let mut schedule = vec!["300ms"; 60];
    schedule.push("1s");
    let schedule = format!("retry_schedule = {:?}", schedule);
    let modes = ["panic", "loop", "alloc"];
    let mut config = base_config("") + &endpoint("healthy", &healthy.url("/h"), "");
    for m in modes {
        config += &endpoint(
            &format!("sick-{m}"),
            &sick.url(&format!("/{m}")),
            &format!(
                "subscriptions = [\"license.*\"]\n{schedule}\nplugins = [ {{ name = \"faulty-{m}\", config = {{ mode = \"{m}\" }} }} ]"
            ),
        );
    }
    let misbehave = test_plugin("misbehave");
    let plugins: Vec<(String, std::path::PathBuf)> = modes
        .iter()
        .map(|m| (format!("faulty-{m}"), misbehave.clone()))
        .collect();
    let plugin_refs: Vec<(&str, std::path::PathBuf)> = plugins
        .iter()
        .map(|(n, p)| (n.as_str(), p.clone()))
        .collect();
    let router = Router::start(&config, &plugin_refs);
    let c = Client::new();
    for i in 0..30 {
        c.post_event(
            &router,
            "acct",
            &event("user.created", json!({"data": {"id": format!("warm{i}")}})),
        )
        .await;
    }
    healthy
        .wait_for(Duration::from_secs(10), "warm-up", |g| g.len() >= 30)
        .await;
    let alone = measure_phase(&router, &healthy, "user.created", "alone").await;
    let faulty = measure_phase(&router, &healthy, "license.created", "faulty").await;
    let faulty_events = 150 + 1000;
    assert_eq!(sick.count(), 0, "nothing passes a failing plugin");
    let stats = c.request("GET", &router.url("/metrics"), &[], "").await;
    let metrics = String::from_utf8_lossy(&stats.body).to_string();
    let plugin_errors: Vec<&str> = metrics
        .lines()
        .filter(|l| l.contains("plugin_errors") && !l.starts_with('#'))
        .collect();
    // Hot fix: the same file names, now a fixed build that accepts the same config.
    let fixed = test_plugin("well-behaved");
    let healed_at = Instant::now();
    for m in modes {
        let dest = router.dir.join("plugins").join(format!("faulty-{m}.wasm"));
        let tmp = router.dir.join(format!("faulty-{m}.wasm.tmp"));
        std::fs::copy(&fixed, &tmp).unwrap();
        std::fs::rename(&tmp, &dest).unwrap();
    }
    sick.wait_for(
        Duration::from_secs(90),
        "every pending faulty delivery after the fix",
        |g| {
            let mut per: HashMap<String, HashSet<String>> = HashMap::new();
            for r in g {
                let v = r.json();
                if v["healed"] == true {
                    per.entry(r.path.clone())
                        .or_default()
                        .insert(v["id"].as_str().unwrap_or("").to_string());
                }
            }
            modes.iter().all(|m| {
                per.get(&format!("/{m}"))
                    .is_some_and(|s| s.len() >= faulty_events)
            })
        },
    )
    .await;
    let heal_time = healed_at.elapsed();
    eprintln!(
        "FIGURES plugin_faults_under_load_then_hot_fix: healthy alone p50={:?} p99={:?} {:.0}/s | with 3 faulty endpoints (panic, loop 50 ms deadline, alloc 32 MiB cap) p50={:?} p99={:?} {:.0}/s \
         (ratio {:.2}x) | faulty deliveries pending={} per endpoint, lost=0, all delivered {heal_time:?} after the plugin files were replaced | plugin error metrics: {plugin_errors:?}",
        alone.p50,
        alone.p99,
        alone.throughput,
        faulty.p50,
        faulty.p99,
        faulty.throughput,
        faulty.throughput / alone.throughput,
        faulty_events,
    );
    // Before the per-endpoint plugin circuit breaker (delivery/mod.rs), three
    // endpoints whose plugins burn their deadline or trap on every event
    // saturated the 2 cores and the healthy endpoint fell from 1,782/s to
    // 32/s (0.02x). With it, a failing plugin's calls go one at a time with a
    // growing pause. The "alone" phase stores one delivery per event, the
    // faulty phase four per license event (and their failed attempts), so
    // part of the drop is fan-out cost, not starvation: measured 0.89x and,
    // once the delivery path got faster, 0.59x. The bound guards against the
    // collapse.
    assert!(
        faulty.throughput >= alone.throughput * 0.3,
        "healthy throughput dropped: {:.0} -> {:.0}/s",
        alone.throughput,
        faulty.throughput
    );
}

// =============================================================================
// Storage: full disk
// =============================================================================

/// The data directory on an 8 MiB tmpfs, filled up: ingest answers 503 with
/// a JSON:API error and acknowledges nothing it could not store; the process
/// lives on; when space returns it accepts again; every 202 is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_full_disk() {
    let rx = Receiver::ok().await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let out = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=8m", "tmpfs"])
        .arg(&data)
        .output()
        .unwrap();
    if !out.status.success() {
        eprintln!(
            "\n\n*** SKIPPED storage_full_disk: cannot mount a tmpfs here ({}). This case is NOT covered on this machine. ***\n\n",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        return;
    }
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .status();
        }
    }
    let _unmount = Unmount(data.clone());
    let config = base_config("")
        + &endpoint(
            "e",
            &rx.url("/e"),
            "retry_schedule = [\"200ms\", \"200ms\", \"200ms\", \"200ms\", \"200ms\", \"1s\", \"1s\", \"1s\", \"1s\", \"1s\", \"5s\", \"5s\", \"5s\", \"5s\"]",
        );
    std::fs::create_dir_all(dir.join("plugins")).unwrap();
    std::fs::write(dir.join("router.toml"), &config).unwrap();
    let mut router = Router::start_in(dir.clone());
    pin_port(&router, &config);
    let c = Client::new();
    let url = router.events_url("acct");
    // Some events while there is space.
    let mut acked: Vec<String> = Vec::new();
    for i in 0..20 {
        let r = post_disk(&c, &url, i).await;
        assert_eq!(r.status, 202);
        acked.push(format!("disk{i}"));
    }
    rx.wait_for(
        Duration::from_secs(10),
        "events before the disk fills",
        |g| g.len() >= 20,
    )
    .await;
    // Fill the filesystem.
    let filler = data.join("filler");
    {
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 64 << 10];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.sync_all();
    }
    let mut first_503 = None;
    let mut n503 = 0;
    let mut other = Vec::new();
    let mut refused_keys = Vec::new();
    for i in 20..400 {
        let r = post_disk(&c, &url, i).await;
        match r.status {
            202 => acked.push(format!("disk{i}")),
            503 => {
                assert_jsonapi_error(&r, 503, "full disk");
                n503 += 1;
                refused_keys.push(format!("disk{i}"));
                first_503.get_or_insert(i);
            }
            s => other.push(s),
        }
        if n503 >= 20 {
            break;
        }
    }
    assert!(
        other.is_empty(),
        "unexpected statuses on a full disk: {other:?}"
    );
    assert!(n503 > 0, "the disk never filled up?");
    assert!(
        alive(&mut router),
        "the router crashed on a full disk\n{}",
        router.log()
    );
    let h = c.request("GET", &router.url("/healthz"), &[], "").await;
    assert_eq!(h.status, 200);
    let ready = c.request("GET", &router.url("/readyz"), &[], "").await;
    assert_eq!(
        ready.status,
        503,
        "readyz must report the failing store: {}",
        String::from_utf8_lossy(&ready.body)
    );
    assert!(ready.json()["store_error"].is_string());
    // Delivery pauses while attempts cannot be recorded: no resend storm.
    let during = rx.count();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let storm = rx.count() - during;
    // Space returns.
    std::fs::remove_file(&filler).unwrap();
    let freed_at = Instant::now();
    let mut recovered_without_restart = false;
    let mut i = 1000;
    while freed_at.elapsed() < Duration::from_secs(5) {
        let r = post_disk(&c, &url, i).await;
        if r.status == 202 {
            acked.push(format!("disk{i}"));
            recovered_without_restart = true;
            break;
        }
        i += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut restarted = false;
    if !recovered_without_restart {
        // The store refuses writes after an I/O error until restart (see
        // RELIABILITY.md); /readyz says so. A restart brings it back.
        let ready = c.request("GET", &router.url("/readyz"), &[], "").await;
        eprintln!(
            "after space returned, readyz={} {}",
            ready.status,
            String::from_utf8_lossy(&ready.body)
        );
        router.stop();
        router.spawn();
        restarted = true;
        let r = post_disk(&c, &url, 2000).await;
        assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
        acked.push("disk2000".into());
    }
    // The producer retries the refused events, as a 503 asks it to.
    for k in &refused_keys {
        let i: usize = k.trim_start_matches("disk").parse().unwrap();
        let r = post_disk(&c, &url, i).await;
        assert_eq!(r.status, 202);
        acked.push(k.clone());
    }
    let want: HashSet<String> = acked.iter().cloned().collect();
    rx.wait_for(Duration::from_secs(60), "every acknowledged event", |g| {
        let have: HashSet<String> = g.iter().filter_map(payload_id).collect();
        want.iter().all(|k| have.contains(k))
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let dups = rx.count() - counts_by_payload(&rx.received()).len();
    eprintln!(
        "FIGURES storage_full_disk: tmpfs 8 MiB; acked={} (all delivered, lost=0); 503s={n503} (first at request #{}), other statuses={other:?}; \
         process alive; readyz 503 with store_error; deliveries sent in 2 s while full={storm}; \
         recovered when space returned without restart={recovered_without_restart} (restart needed={restarted}); duplicates={dups}",
        want.len(),
        first_503.unwrap_or(0),
    );
    assert!(
        storm <= 40,
        "deliveries kept being resent while the store could not record them: {storm} in 2 s"
    );
    assert!(
        dups <= want.len(),
        "too many duplicates: {dups} for {} events",
        want.len()
    );
}

async fn post_disk(c: &Client, url: &str, i: usize) -> Resp {
    let body = json!({"event": "user.created", "payload": {"data": {"id": format!("disk{i}"), "pad": "p".repeat(4000)}}}).to_string();
    let key = format!("disk{i}");
    let a = auth();
    c.request(
        "POST",
        url,
        &[
            (a.0, &a.1),
            ("content-type", "application/json"),
            ("idempotency-key", &key),
        ],
        body,
    )
    .await
}

// =============================================================================
// Hostile input
// =============================================================================

async fn raw_exchange(addr: SocketAddr, request: &[u8]) -> (String, Duration) {
    let start = Instant::now();
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let _ = s.write_all(request).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    (String::from_utf8_lossy(&out).to_string(), start.elapsed())
}

/// Hand-made hostile bodies and requests, each answered with a 4xx JSON:API
/// error, the process unharmed and nothing stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_is_refused() {
    let rx = Receiver::ok().await;
    let config = base_config("max_body = \"64KiB\"\nheader_timeout = \"1s\"")
        + &endpoint("e", &rx.url("/e"), "");
    let mut router = Router::start(&config, &[]);
    let c = Client::new();
    let url = router.events_url("acct");
    let a = auth();
    let ok_headers = [(a.0, a.1.as_str()), ("content-type", "application/json")];
    let deep = format!(
        "{{\"event\":\"a.b\",\"payload\":{{\"x\":{}{}}}}}",
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    let deep_obj = format!(
        "{{\"event\":\"a.b\",\"payload\":{}{}}}",
        "{\"a\":".repeat(10_000),
        "}".repeat(10_000)
    );
    let under = json!({"event": "user.created", "payload": {"data": {"id": "under", "s": "u".repeat(60_000)}}}).to_string();
    let over = json!({"event": "user.created", "payload": {"data": {"s": "o".repeat(70_000)}}})
        .to_string();
    let huge_type = json!({"event": "a".repeat(100_000), "payload": {}}).to_string();
    let mut invalid_utf8 = b"{\"event\":\"user.created\",\"payload\":{\"s\":\"".to_vec();
    invalid_utf8.extend_from_slice(b"\xff\xfe\xc3\x28");
    invalid_utf8.extend_from_slice(b"\"}}");
    let cases: Vec<(&str, Vec<u8>, Vec<(&str, &str)>, u16)> = vec![
        (
            "10,000 nested arrays",
            deep.into_bytes(),
            ok_headers.to_vec(),
            400,
        ),
        (
            "10,000 nested objects",
            deep_obj.into_bytes(),
            ok_headers.to_vec(),
            400,
        ),
        (
            "huge string over the limit",
            over.into_bytes(),
            ok_headers.to_vec(),
            413,
        ),
        (
            "100 KB event type",
            huge_type.into_bytes(),
            ok_headers.to_vec(),
            413,
        ),
        ("invalid UTF-8", invalid_utf8, ok_headers.to_vec(), 400),
        (
            "lone surrogate escape",
            br#"{"event":"user.created","payload":{"s":"\ud800"}}"#.to_vec(),
            ok_headers.to_vec(),
            400,
        ),
        (
            "duplicate top-level event",
            br#"{"event":"user.created","event":"license.created","payload":{}}"#.to_vec(),
            ok_headers.to_vec(),
            400,
        ),
        (
            "duplicate top-level payload",
            br#"{"event":"user.created","payload":{},"payload":{"a":1}}"#.to_vec(),
            ok_headers.to_vec(),
            400,
        ),
        (
            "number out of range",
            br#"{"event":"user.created","payload":{"n":1e999}}"#.to_vec(),
            ok_headers.to_vec(),
            400,
        ),
        (
            "negative number out of range",
            br#"{"event":"user.created","payload":{"n":-1e400}}"#.to_vec(),
            ok_headers.to_vec(),
            400,
        ),
        (
            "event type a number",
            br#"{"event":1e999,"payload":{}}"#.to_vec(),
            ok_headers.to_vec(),
            400,
        ),
        (
            "created out of range",
            br#"{"event":"user.created","payload":{},"created":"99999-01-01T00:00:00Z"}"#.to_vec(),
            ok_headers.to_vec(),
            400,
        ),
        (
            "NUL bytes",
            b"{\"event\":\"user.created\0\",\"payload\":{}}".to_vec(),
            ok_headers.to_vec(),
            400,
        ),
        ("empty body", Vec::new(), ok_headers.to_vec(), 400),
        (
            "text/plain",
            under.clone().into_bytes(),
            vec![(a.0, a.1.as_str()), ("content-type", "text/plain")],
            415,
        ),
        (
            "no content type",
            under.clone().into_bytes(),
            vec![(a.0, a.1.as_str())],
            415,
        ),
        (
            "form content type",
            under.clone().into_bytes(),
            vec![
                (a.0, a.1.as_str()),
                ("content-type", "application/x-www-form-urlencoded"),
            ],
            415,
        ),
        (
            "json look-alike",
            under.clone().into_bytes(),
            vec![(a.0, a.1.as_str()), ("content-type", "application/jsonx")],
            415,
        ),
    ];
    let mut rows = Vec::new();
    for (name, body, headers, status) in cases {
        let t = Instant::now();
        let r = c.request("POST", &url, &headers, body).await;
        assert_jsonapi_error(&r, status, name);
        rows.push(format!("{name}={status} in {:?}", t.elapsed()));
    }
    // Under the limit: a 60 KB string is accepted.
    let r = c.request("POST", &url, &ok_headers, under).await;
    assert_eq!(r.status, 202, "a 60 KB string under the 64 KiB limit");

    // Chunked body over the limit: 413, whatever the chunking.
    let mut req = format!(
        "POST /v1/accounts/acct/events HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {TOKEN}\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
    )
    .into_bytes();
    req.extend_from_slice(b"1a\r\n{\"event\":\"user.created\",\"p\r\n");
    for _ in 0..80 {
        req.extend_from_slice(format!("400\r\n{}\r\n", "x".repeat(1024)).as_bytes());
    }
    req.extend_from_slice(b"0\r\n\r\n");
    let (resp, _) = raw_exchange(router.addr, &req).await;
    assert!(
        resp.starts_with("HTTP/1.1 413"),
        "chunked over the limit: {resp:.200}"
    );
    assert!(resp.contains("\"errors\""), "{resp:.400}");
    rows.push("chunked 80 KiB=413".into());
    // A lying Content-Length (larger than the limit) is refused before reading.
    let req = format!(
        "POST /v1/accounts/acct/events HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {TOKEN}\r\ncontent-type: application/json\r\ncontent-length: 999999999999\r\n\r\n{{"
    );
    let (resp, t) = raw_exchange(router.addr, req.as_bytes()).await;
    assert!(resp.starts_with("HTTP/1.1 413"), "{resp:.200}");
    rows.push(format!("content-length 1 TB=413 in {t:?}"));

    // Slowloris: headers trickled one byte every 200 ms, forever. The
    // connection must be dropped after the 1 s header timeout.
    let start = Instant::now();
    let mut s = tokio::net::TcpStream::connect(router.addr).await.unwrap();
    s.write_all(b"POST /v1/accounts/acct/events HTTP/1.1\r\n")
        .await
        .unwrap();
    let mut closed_after = None;
    for i in 0..100 {
        if s.write_all(b"x-slow-header-").await.is_err()
            || s.write_all(format!("{i}: a\r\n").as_bytes()).await.is_err()
        {
            closed_after = Some(start.elapsed());
            break;
        }
        let mut b = [0u8; 256];
        match tokio::time::timeout(Duration::from_millis(200), s.read(&mut b)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed_after = Some(start.elapsed());
                break;
            }
            Ok(Ok(_)) => {
                // A 408 answer or the like, then the close.
                closed_after = Some(start.elapsed());
                break;
            }
            Err(_) => {}
        }
    }
    let closed_after = closed_after.expect("slowloris connection still open after 20 s");
    assert!(
        closed_after < Duration::from_secs(4),
        "slowloris kept for {closed_after:?}"
    );
    rows.push(format!("slowloris dropped after {closed_after:?}"));

    // The process is unharmed and serves a good event; nothing refused was stored.
    assert!(alive(&mut router));
    let good = c
        .post_event(
            &router,
            "acct",
            &event("user.created", json!({"data": {"id": "good"}})),
        )
        .await;
    assert_eq!(good.status, 202);
    rx.wait_for(Duration::from_secs(5), "under + good", |g| g.len() >= 2)
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        rx.count(),
        2,
        "only the two valid events were stored and delivered"
    );
    let list = c
        .request(
            "GET",
            &router.url("/v1/accounts/acct/webhook-events"),
            &[(a.0, &a.1)],
            "",
        )
        .await;
    assert_eq!(list.json()["data"].as_array().map(|v| v.len()), Some(2));
    eprintln!("FIGURES hostile_input_is_refused: {}", rows.join("; "));
}

/// 10,000 idle connections (some with half a request line) while other
/// clients keep sending events: every event is accepted and delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_idle_connections() {
    let _g = heavy();
    let (soft, hard) = nofile_limits();
    eprintln!("RLIMIT_NOFILE of the test process: soft={soft} hard={hard}");
    let rx = Receiver::ok().await;
    let config = base_config("header_timeout = \"30s\"") + &endpoint("e", &rx.url("/e"), "");
    let mut router = Router::start(&config, &[]);
    let router_limit =
        std::fs::read_to_string(format!("/proc/{}/limits", pid(&router))).unwrap_or_default();
    let router_nofile = router_limit
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap_or("")
        .to_string();
    let target = 10_000usize;
    if soft < target as u64 + 500 {
        eprintln!(
            "*** the soft RLIMIT_NOFILE ({soft}) is under 10,500; opening as many as it allows ***"
        );
    }
    let n = target.min(soft.saturating_sub(500) as usize);
    let addr = router.addr;
    let mut idle = Vec::with_capacity(n);
    let t = Instant::now();
    for i in 0..n {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
            Ok(mut s) => {
                if i % 10 == 0 {
                    let _ = s.write_all(b"POST /v1/accounts/acct/events HTTP/1.1\r\n");
                }
                idle.push(s);
            }
            Err(e) => panic!("connection {i} failed: {e}"),
        }
    }
    let opened_in = t.elapsed();
    let c = Client::new();
    let mut lat = Vec::new();
    for i in 0..200 {
        let t = Instant::now();
        let r = c
            .post_event(
                &router,
                "acct",
                &event("user.created", json!({"data": {"id": format!("busy{i}")}})),
            )
            .await;
        assert_eq!(r.status, 202);
        lat.push(t.elapsed());
    }
    rx.wait_for(
        Duration::from_secs(20),
        "200 events with 10,000 idle connections open",
        |g| counts_by_payload(g).len() >= 200,
    )
    .await;
    lat.sort();
    // The idle ones are still there (header timeout 30 s), the router lives.
    let mut still_open = 0;
    for s in idle.iter_mut().take(100) {
        s.set_nonblocking(true).unwrap();
        let mut b = [0u8; 1];
        match s.read(&mut b) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => still_open += 1,
            _ => {}
        }
    }
    assert!(alive(&mut router));
    let (rss, hwm) = rss_kib(pid(&router));
    drop(idle);
    eprintln!(
        "FIGURES ten_thousand_idle_connections: idle={n} opened in {opened_in:?} (1 in 10 with half a request line); router {router_nofile:?}; \
         200 events accepted and delivered meanwhile, ingest p50={:?} p99={:?}; of 100 sampled idle connections {still_open} still open; router RSS={} MiB peak={} MiB",
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        rss >> 10,
        hwm >> 10
    );
}

fn nofile_limits() -> (u64, u64) {
    let s = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let line = s
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap_or("");
    let nums: Vec<u64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    (
        nums.first().copied().unwrap_or(0),
        nums.get(1).copied().unwrap_or(0),
    )
}

// =============================================================================
// Plugin output rules end to end
// =============================================================================

/// A plugin cannot set Host, Content-Length, Transfer-Encoding, Connection,
/// webhook-* or Keygen-* headers, nor CR/LF in values, nor return 10 MB:
/// the delivery fails with a clear recorded error and nothing is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_output_rules_end_to_end() {
    let rx = Receiver::ok().await;
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "host",
            r#"{ mode = "replace", headers = [["Host", "evil.example"]] }"#.into(),
            "reserved",
        ),
        (
            "content-length",
            r#"{ mode = "replace", headers = [["Content-Length", "1"]] }"#.into(),
            "reserved",
        ),
        (
            "transfer-encoding",
            r#"{ mode = "replace", headers = [["Transfer-Encoding", "chunked"]] }"#.into(),
            "reserved",
        ),
        (
            "connection",
            r#"{ mode = "replace", headers = [["Connection", "close"]] }"#.into(),
            "reserved",
        ),
        (
            "webhook-signature",
            r#"{ mode = "replace", headers = [["Webhook-Signature", "v1,forged"]] }"#.into(),
            "reserved",
        ),
        (
            "webhook-id",
            r#"{ mode = "replace", headers = [["webhook-id", "msg_forged"]] }"#.into(),
            "reserved",
        ),
        (
            "keygen-signature",
            r#"{ mode = "replace", headers = [["Keygen-Signature", "forged"]] }"#.into(),
            "reserved",
        ),
        (
            "crlf",
            r#"{ mode = "replace", headers = [["X-Note", "a\r\nInjected: 1"]] }"#.into(),
            "CR",
        ),
        (
            "lf",
            r#"{ mode = "replace", headers = [["X-Note", "a\nInjected: 1"]] }"#.into(),
            "CR",
        ),
        (
            "bad-name",
            r#"{ mode = "replace", headers = [["X Bad", "1"]] }"#.into(),
            "not a valid",
        ),
        ("huge", r#"{ mode = "huge" }"#.into(), "limit"),
    ];
    let mut config = base_config("");
    for (name, cfg, _) in &cases {
        config += &endpoint(
            name,
            &rx.url(&format!("/{name}")),
            &format!(
                "retry_schedule = [\"100ms\"]\nplugins = [ {{ name = \"misbehave\", config = {cfg} }} ]"
            ),
        );
    }
    config += &endpoint(
        "control",
        &rx.url("/control"),
        r#"plugins = [ { name = "misbehave", config = { mode = "replace", headers = [["X-Fine", "yes"]] } } ]"#,
    );
    let router = Router::start(&config, &[("misbehave", test_plugin("misbehave"))]);
    let c = Client::new();
    let r = c
        .post_event(
            &router,
            "acct",
            &event("user.created", json!({"data": {"id": "p"}})),
        )
        .await;
    assert_eq!(r.status, 202);
    let id = r.json()["data"]["id"].as_str().unwrap().to_string();
    let mut rows = Vec::new();
    for (name, _, needle) in &cases {
        let d = wait_delivery(&c, &router, &id, name, Duration::from_secs(15), |d| {
            d["status"] == "failed"
        })
        .await;
        let err = d["lastError"].as_str().unwrap_or("").to_string();
        assert!(err.contains(needle), "{name}: {err}");
        assert!(
            err.contains("invalid") || err.contains("output") || err.contains("misbehave"),
            "{name}: {err}"
        );
        rows.push(format!("{name}: {err:.110}"));
    }
    let got = rx
        .wait_for(Duration::from_secs(5), "the control delivery", |g| {
            !g.is_empty()
        })
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let paths: Vec<String> = rx.received().iter().map(|r| r.path.clone()).collect();
    assert_eq!(
        paths,
        vec!["/control".to_string()],
        "only the well-behaved output was sent"
    );
    assert_eq!(got[0].header("x-fine"), "yes");
    eprintln!(
        "FIGURES plugin_output_rules_end_to_end: {} refused, nothing sent; errors: {}",
        cases.len(),
        rows.join(" | ")
    );
}

// =============================================================================
// SSRF
// =============================================================================

/// Host names that resolve to 127.0.0.1 without being an IP literal to the
/// URL check: a trailing-dot localhost, decimal, hex, short and octal forms.
const NAMES: [&str; 5] = [
    "localhost.",
    "2130706433",
    "0x7f000001",
    "127.1",
    "0177.0.0.1",
];

/// Endpoint hosts that are (or resolve to) loopback, private, link-local or
/// metadata addresses are refused unless `allow_private_networks`: literals
/// by the config check (file and API), names at connect time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssrf_targets_are_refused() {
    let literals = [
        ("v4-loopback", "https://127.0.0.1/x"),
        ("v6-loopback", "https://[::1]/x"),
        ("v4-mapped-v6", "https://[::ffff:127.0.0.1]/x"),
        ("v4-mapped-hex", "https://[::ffff:7f00:1]/x"),
        ("private-10", "https://10.0.0.7/x"),
        ("private-192", "https://192.168.1.1/x"),
        ("metadata", "https://169.254.169.254/latest/meta-data"),
        ("mapped-metadata", "https://[::ffff:169.254.169.254]/x"),
        ("unspecified", "https://0.0.0.0/x"),
        ("localhost", "https://localhost/x"),
    ];
    let mut text = String::from("[[accounts]]\nid = \"acct\"\ntoken = \"test-token-aaaa\"\n");
    for (id, url) in literals {
        text += &format!(
            "[[endpoints]]\nid = \"{id}\"\naccount = \"acct\"\nurl = \"{url}\"\nsecret = \"{SECRET}\"\n"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("router.toml");
    std::fs::write(&path, &text).unwrap();
    let out = std::process::Command::new(BIN)
        .args(["config", "check", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    for (id, _) in literals {
        assert!(
            err.contains(&format!("\"{id}\"")),
            "{id} not refused:\n{err}"
        );
    }

    // Names that resolve to loopback, with receivers on 127.0.0.1 and [::1].
    let rx4 = Receiver::ok().await;
    let rx6 = Receiver::on(
        format!("[::1]:{}", rx4.addr.port()).parse().unwrap(),
        |_, _| Reply::status(200),
    )
    .await;
    let port = rx4.addr.port();
    let config = format!(
        r#"
[server]
listen = "127.0.0.1:0"
data_dir = "data"
admin_token = "admin-token-0123456789"
[plugins]
dir = "plugins"
[delivery]
allow_http = true
[[accounts]]
id = "acct"
token = "test-token-aaaa"
"#
    ) + &NAMES
        .iter()
        .enumerate()
        .map(|(i, h)| {
            endpoint(
                &format!("name{i}"),
                &format!("http://{h}:{port}/x"),
                "retry_schedule = [\"100ms\"]",
            )
        })
        .collect::<String>();
    let router = Router::start(&config, &[]);
    let c = Client::new();
    // The API applies the same rule to endpoints it creates.
    let mut api_refused = 0;
    for (id, url) in literals {
        let body = json!({"data": {"type": "webhook-endpoints", "id": format!("api-{id}"), "attributes": {"url": url.replace("https", "http")}}});
        let r = c
            .request(
                "POST",
                &router.url("/v1/accounts/acct/webhook-endpoints"),
                &[
                    ("authorization", "Bearer test-token-aaaa"),
                    ("content-type", "application/vnd.api+json"),
                ],
                body.to_string(),
            )
            .await;
        assert!(
            (400..500).contains(&r.status),
            "API accepted {url}: {}",
            String::from_utf8_lossy(&r.body)
        );
        let detail = String::from_utf8_lossy(&r.body).to_string();
        assert!(
            detail.contains("allow_private_networks"),
            "refused for the address: {detail}"
        );
        api_refused += 1;
    }
    let r = c
        .post_event(&router, "acct", &event("user.created", json!({"data": {}})))
        .await;
    assert_eq!(r.status, 202);
    let id = r.json()["data"]["id"].as_str().unwrap().to_string();
    let mut errors = Vec::new();
    for i in 0..NAMES.len() {
        let d = wait_delivery(
            &c,
            &router,
            &id,
            &format!("name{i}"),
            Duration::from_secs(10),
            |d| d["status"] == "failed",
        )
        .await;
        errors.push(d["lastError"].as_str().unwrap_or("").to_string());
    }
    assert_eq!(
        rx4.count() + rx6.count(),
        0,
        "a loopback receiver was reached"
    );
    for e in &errors {
        assert!(e.contains("non-public") || e.contains("resolve"), "{e}");
    }
    eprintln!(
        "FIGURES ssrf_targets_are_refused: {} literal URLs refused by config check, {api_refused} by the API; {} names resolving to loopback refused at connect \
         (0 requests reached 127.0.0.1/[::1]); e.g. {:?}",
        literals.len(),
        NAMES.len(),
        errors[0]
    );
}

// =============================================================================
// Auth
// =============================================================================

/// Every route with a missing, malformed, wrong or other-account token: 401
/// (or 404 for another account's token, which must not learn the account
/// exists), always a JSON:API error, and nothing happens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_on_every_route() {
    let rx = Receiver::ok().await;
    let config =
        base_config("admin_token = \"admin-token-0123456789\"") + &endpoint("e", &rx.url("/e"), "");
    let router = Router::start(&config, &[]);
    let c = Client::new();
    let good = c
        .post_event(
            &router,
            "acct",
            &event("user.created", json!({"data": {"id": "a"}})),
        )
        .await;
    let ev = good.json()["data"]["id"].as_str().unwrap().to_string();
    let ep_body = json!({"data": {"type": "webhook-endpoints", "id": "new", "attributes": {"url": rx.url("/new")}}}).to_string();
    let ev_body = event("user.created", json!({"data": {"id": "b"}})).to_string();
    let routes: Vec<(&str, String, String)> = vec![
        ("POST", "/v1/accounts/acct/events".into(), ev_body.clone()),
        (
            "GET",
            "/v1/accounts/acct/webhook-endpoints".into(),
            String::new(),
        ),
        (
            "POST",
            "/v1/accounts/acct/webhook-endpoints".into(),
            ep_body.clone(),
        ),
        (
            "GET",
            "/v1/accounts/acct/webhook-endpoints/e".into(),
            String::new(),
        ),
        (
            "PATCH",
            "/v1/accounts/acct/webhook-endpoints/e".into(),
            json!({"data": {"type": "webhook-endpoints", "attributes": {"enabled": false}}})
                .to_string(),
        ),
        (
            "DELETE",
            "/v1/accounts/acct/webhook-endpoints/e".into(),
            String::new(),
        ),
        (
            "POST",
            "/v1/accounts/acct/webhook-endpoints/e/actions/rotate-secret".into(),
            String::new(),
        ),
        (
            "POST",
            "/v1/accounts/acct/webhook-endpoints/e/actions/ping".into(),
            String::new(),
        ),
        (
            "POST",
            "/v1/accounts/acct/webhook-endpoints/e/actions/recover".into(),
            String::new(),
        ),
        (
            "GET",
            "/v1/accounts/acct/webhook-events".into(),
            String::new(),
        ),
        (
            "GET",
            format!("/v1/accounts/acct/webhook-events/{ev}"),
            String::new(),
        ),
        (
            "POST",
            format!("/v1/accounts/acct/webhook-events/{ev}/actions/retry"),
            String::new(),
        ),
        (
            "GET",
            "/v1/accounts/acct/no-such-route".into(),
            String::new(),
        ),
        ("GET", "/v1/plugins".into(), String::new()),
    ];
    let bad_tokens: Vec<(&str, Option<&str>, u16, u16)> = vec![
        // (what, Authorization value, status on account routes, status on /v1/plugins)
        ("missing", None, 401, 401),
        ("empty", Some(""), 401, 401),
        ("scheme only", Some("Bearer"), 401, 401),
        ("blank token", Some("Bearer    "), 401, 401),
        (
            "basic scheme",
            Some("Basic dGVzdC10b2tlbi1hYWFhOg=="),
            401,
            401,
        ),
        ("token without scheme", Some("test-token-aaaa"), 401, 401),
        ("wrong token", Some("Bearer test-token-aaab"), 401, 401),
        (
            "prefix of the token",
            Some("Bearer test-token-aaa"),
            401,
            401,
        ),
        (
            "token plus a char",
            Some("Bearer test-token-aaaaa"),
            401,
            401,
        ),
        (
            "other account's token",
            Some("Bearer other-token-bbbb"),
            404,
            401,
        ),
        (
            "account token on an admin route",
            Some("Bearer test-token-aaaa"),
            0,
            401,
        ),
    ];
    let mut checked = 0;
    for (method, path, body) in &routes {
        for (what, value, acct_status, admin_status) in &bad_tokens {
            let expected = if path == "/v1/plugins" {
                *admin_status
            } else {
                *acct_status
            };
            if expected == 0 {
                continue;
            }
            let mut h: Vec<(&str, &str)> = vec![("content-type", "application/vnd.api+json")];
            if let Some(v) = value {
                h.push(("authorization", v));
            }
            let r = c.request(method, &router.url(path), &h, body.clone()).await;
            assert_jsonapi_error(&r, expected, &format!("{method} {path} with {what}"));
            if expected == 401 {
                assert_eq!(
                    r.headers
                        .get("www-authenticate")
                        .map(|v| v.to_str().unwrap()),
                    Some("Bearer"),
                    "{method} {path} {what}"
                );
            }
            checked += 1;
        }
        // A non-UTF-8 header value (raw request, hyper's client would refuse it).
        let req = format!(
            "{method} {path} HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\nconnection: close\r\nauthorization: Bearer \u{00e9}\u{00ff}\r\n\r\n"
        );
        let mut bytes = req.into_bytes();
        // Latin-1 bytes, not UTF-8.
        let pos = bytes.windows(7).position(|w| w == b"Bearer ").unwrap() + 7;
        bytes.splice(pos..pos + 4, [0xe9u8, 0xff]);
        let (resp, _) = raw_exchange(router.addr, &bytes).await;
        assert!(
            resp.starts_with("HTTP/1.1 401"),
            "{method} {path} with a non-UTF-8 token: {resp:.200}"
        );
        checked += 1;
    }
    // Nothing happened: the endpoint still exists, only the first event was stored.
    let a = auth();
    let show = c
        .request(
            "GET",
            &router.url("/v1/accounts/acct/webhook-endpoints/e"),
            &[(a.0, &a.1)],
            "",
        )
        .await;
    assert_eq!(show.status, 200);
    let list = c
        .request(
            "GET",
            &router.url("/v1/accounts/acct/webhook-events"),
            &[(a.0, &a.1)],
            "",
        )
        .await;
    assert_eq!(list.json()["data"].as_array().map(|v| v.len()), Some(1));
    // The admin token works everywhere.
    let p = c
        .request(
            "GET",
            &router.url("/v1/plugins"),
            &[("authorization", "Bearer admin-token-0123456789")],
            "",
        )
        .await;
    assert_eq!(p.status, 200);
    eprintln!(
        "FIGURES auth_on_every_route: {} routes x {} bad credentials = {checked} requests refused, 0 side effects",
        routes.len(),
        bad_tokens.len() + 1
    );
}

/// Token comparison is constant time by construction: both sides are hashed
/// (SHA-256) and the digests compared with `subtle::ConstantTimeEq`, so the
/// work does not depend on how many leading characters match (or on the
/// lengths). This checks the function's contract; `api::authorize_account`
/// and `api::authorize_admin` compare every token through it.
#[test]
fn token_comparison_is_constant_time_by_construction() {
    use switchyard::signing::constant_time_eq;
    let t = "test-token-aaaa";
    assert!(constant_time_eq(t, t));
    for wrong in [
        "",
        "t",
        "test-token-aaa",
        "test-token-aaab",
        "test-token-aaaaa",
        "xest-token-aaaa",
        "TEST-TOKEN-AAAA",
    ] {
        assert!(!constant_time_eq(t, wrong), "{wrong}");
        assert!(!constant_time_eq(wrong, t), "{wrong}");
    }
    // The same work for every candidate: a digest of each side, then a fixed
    // 32-byte comparison (no early exit). Timings are printed, not asserted.
    let secret = "s".repeat(32);
    let candidates = [
        ("no match", "x".repeat(32)),
        ("31 of 32 match", format!("{}x", "s".repeat(31))),
        ("short", "s".into()),
    ];
    for (what, cand) in candidates {
        let t = Instant::now();
        for _ in 0..200_000 {
            std::hint::black_box(constant_time_eq(
                std::hint::black_box(&secret),
                std::hint::black_box(&cand),
            ));
        }
        eprintln!(
            "constant_time_eq {what}: {:?} per call",
            t.elapsed() / 200_000
        );
    }
}

// =============================================================================
// Soak: restart with a backlog (not in CI)
// =============================================================================

/// `SWITCHYARD_BACKLOG` (default 1,000,000) deliveries pending (the receiver
/// accepts connections but never answers; one attempt at a time), then
/// kill -9, the receiver comes back, restart: time to first delivery and
/// peak RSS of the restarted router, and the drain rate for 30 s.
/// `cargo test --release -p switchyard --test reliability restart_with_backlog -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "soak: minutes; run by host/benches/soak.sh"]
async fn restart_with_backlog() {
    let _g = heavy();
    let n: usize = std::env::var("SWITCHYARD_BACKLOG")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    // A black hole: accepts, reads, never answers.
    let hole = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = hole.local_addr().unwrap().port();
    let hole_task = tokio::spawn(async move {
        let mut keep = Vec::new();
        while let Ok((s, _)) = hole.accept().await {
            keep.push(s);
        }
    });
    let config = base_config("")
        + &endpoint(
            "e",
            &format!("http://127.0.0.1:{port}/e"),
            "timeout = \"1h\"\nmax_in_flight = 1\nretry_schedule = [\"1s\"]",
        );
    let mut router = Router::start(&config, &[]);
    pin_port(&router, &config);
    let url = router.events_url("acct");
    let t = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let (url, next) = (url.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let c = Client::new();
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= n {
                    break;
                }
                let body =
                    json!({"event": "user.created", "payload": {"data": {"id": format!("bk{i}")}}})
                        .to_string();
                let r = c
                    .request(
                        "POST",
                        &url,
                        &[
                            ("authorization", "Bearer test-token-aaaa"),
                            ("content-type", "application/json"),
                        ],
                        body,
                    )
                    .await;
                assert_eq!(r.status, 202);
            }
        }));
    }
    let mut last = Instant::now();
    for task in tasks {
        while !task.is_finished() {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if last.elapsed() > Duration::from_secs(15) {
                last = Instant::now();
                let (rss, _) = rss_kib(pid(&router));
                eprintln!(
                    "backlog: {} / {n} ingested after {:?}, RSS {} MiB",
                    next.load(Ordering::SeqCst).min(n),
                    t.elapsed(),
                    rss >> 10
                );
            }
        }
        task.await.unwrap();
    }
    let ingest_time = t.elapsed();
    let (_, hwm_ingest) = rss_kib(pid(&router));
    router.kill9();
    let store_bytes = dir_size(&router.dir.join("data"));
    hole_task.abort();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rx = Receiver::on(format!("127.0.0.1:{port}").parse().unwrap(), |_, _| {
        Reply::status(200)
    })
    .await;
    // Restart with the default concurrency (32 in flight) to see the drain rate.
    let restart_config = base_config("")
        + &endpoint(
            "e",
            &format!("http://127.0.0.1:{port}/e"),
            "retry_schedule = [\"1s\"]",
        );
    pin_port(&router, &restart_config);
    let spawn_at = Instant::now();
    router.spawn();
    let listening = spawn_at.elapsed();
    let deadline = Instant::now() + Duration::from_secs(600);
    while rx.count() == 0 {
        assert!(
            Instant::now() < deadline,
            "no delivery within 10 minutes of the restart"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let first = spawn_at.elapsed();
    let mut peak = 0;
    let drain_start = Instant::now();
    while drain_start.elapsed() < Duration::from_secs(30) {
        peak = peak.max(rss_kib(pid(&router)).1);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let drained = rx.count();
    eprintln!(
        "FIGURES restart_with_backlog: pending={n} ingested in {ingest_time:?} ({:.0}/s), store {} MiB, RSS peak while ingesting {} MiB | \
         restart: listening after {listening:?}, first delivery after {first:?}; peak RSS of the restarted router {} MiB; \
         drained {drained} in 30 s ({:.0}/s, max_in_flight 32)",
        n as f64 / ingest_time.as_secs_f64(),
        store_bytes >> 20,
        hwm_ingest >> 10,
        peak >> 10,
        drained as f64 / 30.0,
    );
}

fn dir_size(p: &std::path::Path) -> u64 {
    let mut n = 0;
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            let m = e.metadata().unwrap();
            n += if m.is_dir() {
                dir_size(&e.path())
            } else {
                m.len()
            };
        }
    }
    n
}
