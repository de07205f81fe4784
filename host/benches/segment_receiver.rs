//! The batching benchmark's two loopback programs (issue 13,
//! `host/benches/load/segment.sh`, BENCHMARKS.md):
//!
//! * `serve` (default): a receiver that enforces Segment's HTTP Tracking
//!   API rules, written for the benchmark (not a mock inside the router).
//!   - `POST /v1/batch`: 400 for a body over 500 KB ([`MAX_REQUEST`]), for
//!     malformed JSON or shape (no `batch` array, more than 2,500 calls, a
//!     call that is not an object or has no string `messageId` / `type`, no
//!     `userId` / `anonymousId`, a `track` without `event`), or for any call
//!     over 32 KB ([`MAX_CALL`], its bytes as sent).
//!   - `POST /v1/{track,identify,page,screen,group,alias}`: one call, the
//!     same per-call rules (the type is the path's).
//!   - 429 with `Retry-After` (whole seconds until the next token, at least
//!     1) above the request rate: a token bucket of `RPS` requests/s holding
//!     `BURST` (default a tenth of a second's worth, at least 1); 0 =
//!     unlimited. Changed at runtime with `POST /limit?rps=N[&burst=M]`.
//!   - else 200 `{"success": true}`, as Segment answers.
//!   - `GET /stats`: requests, accepted events, distinct `messageId`s, dedupe
//!     key repeats, largest request, calls per request, answers by status,
//!     the time of the first request and of the last new `messageId`.
//!     `POST /reset` zeroes them.
//!
//!   Env: `LISTEN` (default `127.0.0.1:18300`), `RPS` (default 0), `BURST`.
//! * `post`: posts exactly `EVENTS` copies of `EVENT_FILE` to `URL` with
//!   `TOKEN` over `CONNS` keep-alive connections (default 64) as fast as
//!   answers come back, and prints how many were answered 202 and the rate.
//!
//! ```sh
//! cargo bench -p switchyard --bench segment_receiver --no-run   # then run the executable:
//! LISTEN=127.0.0.1:18300 RPS=50 target/release/deps/segment_receiver-… serve
//! ```

use std::collections::{BTreeMap, HashSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};

/// Segment's limit per request to `/v1/batch` ("500 KB"; read strictly as
/// 500,000 bytes; analytics-python stops at 475,000 bytes of calls).
const MAX_REQUEST: usize = 500_000;
/// Segment's limit per call (analytics-python's `MAX_MSG_SIZE = 32 << 10`).
const MAX_CALL: usize = 32 << 10;
/// Calls per batch (Segment's documented maximum).
const MAX_CALLS: usize = 2_500;
/// Bodies are read up to this many bytes (larger ones are answered 400
/// without reading the rest).
const READ_CAP: usize = 8 << 20;

const SINGLE: [&str; 6] = ["track", "identify", "page", "screen", "group", "alias"];

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn main() {
    let mode = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with("--"))
        .unwrap_or_else(|| "serve".into());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(if mode == "post" { 2 } else { 1 })
        .enable_all()
        .build()
        .expect("tokio runtime");
    match mode.as_str() {
        "serve" => rt.block_on(serve()),
        "post" => rt.block_on(post()),
        other => {
            eprintln!("segment_receiver: unknown mode {other:?}: `serve` or `post`");
            std::process::exit(2);
        }
    }
}

// ---------------------------------------------------------------- receiver

/// A token bucket; `rps == 0` is unlimited.
struct Bucket {
    rps: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn new(rps: f64, burst: Option<f64>) -> Bucket {
        let burst = burst.unwrap_or((rps / 10.0).ceil()).max(1.0);
        Bucket {
            rps,
            burst,
            tokens: burst,
            at: Instant::now(),
        }
    }

    /// `Ok` with a token taken, or `Err(seconds until the next token)`.
    fn take(&mut self) -> Result<(), f64> {
        if self.rps <= 0.0 {
            return Ok(());
        }
        let now = Instant::now();
        self.tokens =
            (self.tokens + now.duration_since(self.at).as_secs_f64() * self.rps).min(self.burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err((1.0 - self.tokens) / self.rps)
        }
    }
}

#[derive(Default)]
struct Stats {
    requests: u64,
    /// Calls in requests answered 200.
    events: u64,
    ids: HashSet<String>,
    /// Calls answered 200 whose `messageId` had been accepted before.
    repeats: u64,
    largest_request: usize,
    largest_accepted_request: usize,
    most_calls: usize,
    by_status: BTreeMap<u16, u64>,
    by_path: BTreeMap<String, u64>,
    first_request_ms: u64,
    last_new_id_ms: u64,
    /// The first reasons for 400s (up to 5), to see what was wrong.
    reasons: Vec<String>,
}

struct Receiver {
    bucket: Mutex<Bucket>,
    stats: Mutex<Stats>,
}

#[derive(Deserialize)]
struct BatchBody<'a> {
    #[serde(borrow)]
    batch: Option<Vec<&'a RawValue>>,
}

#[derive(Deserialize)]
struct Call {
    #[serde(rename = "messageId")]
    message_id: Option<Value>,
    #[serde(rename = "type")]
    kind: Option<Value>,
    #[serde(rename = "userId")]
    user_id: Option<Value>,
    #[serde(rename = "anonymousId")]
    anonymous_id: Option<Value>,
    event: Option<Value>,
}

/// Checks one call (its bytes as sent); its `messageId`.
fn check_call(raw: &str, path_type: Option<&str>) -> Result<String, String> {
    if raw.len() > MAX_CALL {
        return Err(format!(
            "a {}-byte call, over the 32 KB per-call limit",
            raw.len()
        ));
    }
    let call: Call = serde_json::from_str(raw).map_err(|e| format!("a call: {e}"))?;
    let id = match call.message_id {
        Some(Value::String(s)) if !s.is_empty() && s.len() < 100 => s,
        _ => return Err("a call without a string messageId (under 100 chars)".into()),
    };
    let kind = match (path_type, &call.kind) {
        (Some(t), _) => t.to_string(),
        (None, Some(Value::String(t))) if SINGLE.contains(&t.as_str()) => t.clone(),
        _ => return Err(format!("call {id}: no valid `type`")),
    };
    let has = |v: &Option<Value>| matches!(v, Some(Value::String(s)) if !s.is_empty());
    if !has(&call.user_id) && !has(&call.anonymous_id) {
        return Err(format!("call {id}: neither userId nor anonymousId"));
    }
    if kind == "track" && !has(&call.event) {
        return Err(format!("call {id}: a track without `event`"));
    }
    Ok(id)
}

/// The `messageId`s of a valid body, or why it is a 400.
fn check(path: &str, body: &[u8]) -> Result<Vec<String>, String> {
    if body.len() > MAX_REQUEST {
        return Err(format!(
            "a {}-byte request, over the 500 KB limit",
            body.len()
        ));
    }
    let text = std::str::from_utf8(body).map_err(|_| "the body is not UTF-8".to_string())?;
    if path == "/v1/batch" {
        let parsed: BatchBody = serde_json::from_str(text).map_err(|e| format!("JSON: {e}"))?;
        let calls = parsed.batch.ok_or_else(|| "no `batch` array".to_string())?;
        if calls.len() > MAX_CALLS {
            return Err(format!("{} calls, over 2,500 per batch", calls.len()));
        }
        calls
            .iter()
            .map(|raw| check_call(raw.get(), None))
            .collect()
    } else {
        let kind = path.trim_start_matches("/v1/");
        let raw: &RawValue = serde_json::from_str(text).map_err(|e| format!("JSON: {e}"))?;
        Ok(vec![check_call(raw.get(), Some(kind))?])
    }
}

fn json_response(status: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

impl Receiver {
    fn stats_json(&self) -> Value {
        let s = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        let b = self.bucket.lock().unwrap_or_else(|p| p.into_inner());
        json!({
            "requests": s.requests,
            "events": s.events,
            "distinct": s.ids.len(),
            "repeats": s.repeats,
            "largest_request": s.largest_request,
            "largest_accepted_request": s.largest_accepted_request,
            "most_calls": s.most_calls,
            "by_status": s.by_status.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
            "by_path": s.by_path,
            "first_request_ms": s.first_request_ms,
            "last_new_id_ms": s.last_new_id_ms,
            "reasons": s.reasons,
            "limit": {"rps": b.rps, "burst": b.burst},
        })
    }

    async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let path = req.uri().path().to_string();
        let query = req.uri().query().unwrap_or("").to_string();
        match (req.method().as_str(), path.as_str()) {
            ("GET", "/stats") => return json_response(StatusCode::OK, &self.stats_json()),
            ("POST", "/reset") => {
                *self.stats.lock().unwrap_or_else(|p| p.into_inner()) = Stats::default();
                return json_response(StatusCode::OK, &json!({"reset": true}));
            }
            ("POST", "/limit") => {
                let arg = |k: &str| {
                    query
                        .split('&')
                        .filter_map(|kv| kv.split_once('='))
                        .find(|(name, _)| *name == k)
                        .and_then(|(_, v)| v.parse::<f64>().ok())
                };
                let Some(rps) = arg("rps") else {
                    return json_response(
                        StatusCode::BAD_REQUEST,
                        &json!({"error": "POST /limit?rps=N[&burst=M] (0 = unlimited)"}),
                    );
                };
                *self.bucket.lock().unwrap_or_else(|p| p.into_inner()) =
                    Bucket::new(rps, arg("burst"));
                return json_response(StatusCode::OK, &self.stats_json()["limit"]);
            }
            _ => {}
        }
        let known = path == "/v1/batch"
            || path
                .strip_prefix("/v1/")
                .is_some_and(|t| SINGLE.contains(&t));
        if req.method() != hyper::Method::POST || !known {
            return json_response(StatusCode::NOT_FOUND, &json!({"error": "not found"}));
        }
        let started = now_ms();
        // Read the whole body (the connection stays usable), up to a cap.
        let body = Limited::new(req.into_body(), READ_CAP).collect().await;
        let (status, answer, ids, size) = match body {
            Err(_) => (
                StatusCode::BAD_REQUEST,
                json!({"success": false, "error": "request too large"}),
                None,
                READ_CAP + 1,
            ),
            Ok(b) => {
                let b = b.to_bytes();
                let limited = self.bucket.lock().unwrap_or_else(|p| p.into_inner()).take();
                match limited {
                    Err(wait) => (
                        StatusCode::TOO_MANY_REQUESTS,
                        json!({"success": false, "error": "rate limited", "retry_after": wait.ceil().max(1.0)}),
                        None,
                        b.len(),
                    ),
                    Ok(()) => match check(&path, &b) {
                        Ok(ids) => (StatusCode::OK, json!({"success": true}), Some(ids), b.len()),
                        Err(reason) => (
                            StatusCode::BAD_REQUEST,
                            json!({"success": false, "error": reason}),
                            None,
                            b.len(),
                        ),
                    },
                }
            }
        };
        {
            let mut s = self.stats.lock().unwrap_or_else(|p| p.into_inner());
            if s.requests == 0 {
                s.first_request_ms = started;
            }
            s.requests += 1;
            *s.by_status.entry(status.as_u16()).or_default() += 1;
            *s.by_path.entry(path.clone()).or_default() += 1;
            s.largest_request = s.largest_request.max(size);
            match ids {
                Some(ids) => {
                    s.largest_accepted_request = s.largest_accepted_request.max(size);
                    s.most_calls = s.most_calls.max(ids.len());
                    s.events += ids.len() as u64;
                    let mut new = false;
                    for id in ids {
                        if s.ids.insert(id) {
                            new = true;
                        } else {
                            s.repeats += 1;
                        }
                    }
                    if new {
                        s.last_new_id_ms = now_ms();
                    }
                }
                None if status == StatusCode::BAD_REQUEST => {
                    if s.reasons.len() < 5 {
                        s.reasons.push(answer["error"].to_string());
                    }
                }
                None => {}
            }
        }
        let mut r = json_response(status, &answer);
        if status == StatusCode::TOO_MANY_REQUESTS {
            let secs = answer["retry_after"].as_f64().unwrap_or(1.0) as u64;
            r.headers_mut().insert(
                hyper::header::RETRY_AFTER,
                hyper::header::HeaderValue::from(secs),
            );
        }
        r
    }
}

async fn serve() {
    let listen: SocketAddr = env("LISTEN")
        .unwrap_or_else(|| "127.0.0.1:18300".into())
        .parse()
        .expect("LISTEN: an address like 127.0.0.1:18300");
    let rps: f64 = env("RPS").and_then(|v| v.parse().ok()).unwrap_or(0.0);
    let burst: Option<f64> = env("BURST").and_then(|v| v.parse().ok());
    let rx = Arc::new(Receiver {
        bucket: Mutex::new(Bucket::new(rps, burst)),
        stats: Mutex::new(Stats::default()),
    });
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .unwrap_or_else(|e| panic!("bind {listen}: {e}"));
    println!("segment receiver listening on {listen} (rps {rps}; 0 = unlimited)");
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let rx = rx.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let rx = rx.clone();
                async move { Ok::<_, Infallible>(rx.handle(req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

// ------------------------------------------------------------------ client

async fn post() {
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    let url = env("URL").expect("URL: the router's events URL");
    let token = env("TOKEN").unwrap_or_default();
    let body = Bytes::from(
        std::fs::read(env("EVENT_FILE").expect("EVENT_FILE")).expect("read EVENT_FILE"),
    );
    let events: u64 = env("EVENTS")
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let conns: usize = env("CONNS").and_then(|v| v.parse().ok()).unwrap_or(64);
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(conns)
        .build_http();
    let next = Arc::new(AtomicU64::new(0));
    let accepted = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let (client, url, token, body, next, accepted) = (
            client.clone(),
            url.clone(),
            token.clone(),
            body.clone(),
            next.clone(),
            accepted.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut errors = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < events {
                // An event not answered 202 is posted again (a post is only
                // counted once the router acknowledged it).
                let mut tries = 0;
                loop {
                    tries += 1;
                    let req = http::Request::post(&url)
                        .header("content-type", "application/json")
                        .header("authorization", format!("Bearer {token}"))
                        .body(Full::new(body.clone()))
                        .expect("request");
                    match client.request(req).await {
                        Ok(r) => {
                            let status = r.status();
                            let _ = r.into_body().collect().await;
                            if status == StatusCode::ACCEPTED {
                                accepted.fetch_add(1, Ordering::Relaxed);
                                break;
                            }
                            errors.push(format!("HTTP {status}"));
                        }
                        Err(e) => errors.push(e.to_string()),
                    }
                    if tries >= 5 {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            errors
        }));
    }
    let mut errors = Vec::new();
    for t in tasks {
        errors.extend(t.await.unwrap_or_default());
    }
    let secs = start.elapsed().as_secs_f64();
    let n = accepted.load(Ordering::Relaxed);
    println!(
        "posted {n} of {events} events answered 202 in {secs:.2} s ({:.0}/s over {conns} connections); {} failed posts{}",
        n as f64 / secs,
        errors.len(),
        errors
            .first()
            .map(|e| format!(" (first: {e})"))
            .unwrap_or_default()
    );
}
