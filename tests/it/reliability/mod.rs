//! Reliability and security proof (issue 6): the real `switchyard` binary
//! under injected faults and hostile input, with real receivers on loopback.
//! Every test prints its figures (`-- --nocapture`); docs/RELIABILITY.md
//! collects them. The quick cases run in CI; the long soaks are
//! `host/benches/soak.sh` (more crash rounds, and the `#[ignore]`d
//! `restart_with_backlog`).
//!
//! One case per row of docs/RELIABILITY.md, each runnable alone:
//! `cargo test --release -p switchyard --test it reliability::<name> -- --nocapture`.

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use crate::common::*;
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

mod auth;
mod crash;
mod full_disk;
mod hostile_input;
mod noisy_neighbour;
mod plugin_faults;
mod plugin_output;
mod receiver_faults;
mod soak;
mod ssrf;
