//! Shared harness of the end-to-end tests: start the real `switchyard`
//! binary on a config written for the test, real HTTP receivers on
//! loopback with scripted answers, and a small HTTP client.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};

pub const BIN: &str = env!("CARGO_BIN_EXE_switchyard");
pub const TOKEN: &str = "test-token-aaaa-0001";
pub const SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
/// A fixed Keygen signing seed for tests (RFC 8032 test key 1).
pub const KEYGEN_SEED: &str = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";

/// The directory of a bundled plugin's .wasm (built by host/build.rs).
pub fn dist_plugin(name: &str) -> PathBuf {
    PathBuf::from(env!("SWITCHYARD_PLUGIN_DIST_DIR")).join(format!("{name}.wasm"))
}

/// A test plugin's .wasm (tests/plugins/*).
pub fn test_plugin(name: &str) -> PathBuf {
    PathBuf::from(env!("SWITCHYARD_TEST_PLUGIN_DIR"))
        .join(format!("{}.wasm", name.replace('-', "_")))
}

/// A running router process.
pub struct Router {
    pub child: Option<Child>,
    pub addr: SocketAddr,
    pub dir: PathBuf,
    pub config_path: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    log: Arc<Mutex<Vec<String>>>,
}

/// Config header every test shares: loopback listen on a free port,
/// http/private allowed (receivers are on loopback), account `acct`.
pub fn base_config(extra_server: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
data_dir = "data"
{extra_server}
[plugins]
dir = "plugins"
[delivery]
allow_http = true
allow_private_networks = true
[[accounts]]
id = "acct"
token = "{TOKEN}"
keygen_signing_key = "{KEYGEN_SEED}"
[[accounts]]
id = "other"
token = "other-token-bbbb"
"#
    )
}

/// One `[[endpoints]]` table of account `acct`, signed with [`SECRET`];
/// `extra` adds lines (subscriptions, plugins, retry_schedule, …).
pub fn endpoint(id: &str, url: &str, extra: &str) -> String {
    format!(
        r#"
[[endpoints]]
id = "{id}"
account = "acct"
url = "{url}"
secret = "{SECRET}"
{extra}
"#
    )
}

/// A new, empty database in the test PostgreSQL cluster
/// (`SWITCHYARD_TEST_DATABASE_URL`, started by `tests/ci/postgres.sh`);
/// its URL.
pub fn pg_database() -> String {
    let admin = std::env::var("SWITCHYARD_TEST_DATABASE_URL").unwrap_or_else(|_| {
        panic!(
            "SWITCHYARD_TEST_DATABASE_URL is not set: this test needs a PostgreSQL cluster. \
             Run `eval \"$(bash tests/ci/postgres.sh start)\"` first (tests/run.sh does)"
        )
    });
    let name = format!("it_{}", uuid::Uuid::new_v4().simple());
    let out = Command::new("psql")
        .args([admin.as_str(), "-qc", &format!("CREATE DATABASE {name}")])
        .output()
        .expect("psql must be installed (apt-get install postgresql-client)");
    assert!(
        out.status.success(),
        "creating a test database: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    match admin.rsplit_once('/') {
        Some((base, _)) => format!("{base}/{name}"),
        None => panic!("SWITCHYARD_TEST_DATABASE_URL must end in /<database>: {admin}"),
    }
}

/// A `[store]` section on a fresh PostgreSQL database.
pub fn postgres_store(lease: &str) -> String {
    format!(
        "\n[store]\nbackend = \"postgres\"\nurl = \"{}\"\nlease = \"{lease}\"\n",
        pg_database()
    )
}

/// The end-to-end tests run on sled, or on PostgreSQL when
/// `SWITCHYARD_TEST_BACKEND=postgres` (tests/run.sh runs the delivery
/// tests both ways): a config without a `[store]` section gets one.
fn with_test_backend(config: &str) -> String {
    match std::env::var("SWITCHYARD_TEST_BACKEND").as_deref() {
        Ok("postgres") if !config.contains("[store]") => {
            // A short lease: a router killed and restarted by a test gets
            // its deliveries back within seconds.
            format!("{config}{}", postgres_store("3s"))
        }
        _ => config.to_string(),
    }
}

impl Router {
    /// Writes `config` into a fresh directory, copies `plugins` (name, wasm
    /// path) into its plugin folder, and starts `switchyard serve`.
    pub fn start(config: &str, plugins: &[(&str, PathBuf)]) -> Router {
        let config = &with_test_backend(config);
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().to_path_buf();
        std::fs::create_dir_all(dir.join("plugins")).unwrap();
        for (name, path) in plugins {
            std::fs::copy(path, dir.join("plugins").join(format!("{name}.wasm")))
                .unwrap_or_else(|e| panic!("copying {}: {e}", path.display()));
        }
        std::fs::write(dir.join("router.toml"), config).unwrap();
        let mut r = Router {
            child: None,
            addr: "127.0.0.1:0".parse().unwrap(),
            config_path: dir.join("router.toml"),
            dir,
            _tmp: Some(tmp),
            log: Arc::new(Mutex::new(Vec::new())),
        };
        r.spawn();
        r
    }

    /// Starts `switchyard serve` in an existing directory that already
    /// holds `router.toml` (and `plugins/`); the caller owns the directory.
    pub fn start_in(dir: PathBuf) -> Router {
        let mut r = Router {
            child: None,
            addr: "127.0.0.1:0".parse().unwrap(),
            config_path: dir.join("router.toml"),
            dir,
            _tmp: None,
            log: Arc::new(Mutex::new(Vec::new())),
        };
        r.spawn();
        r
    }

    /// Starts (again) the process on the same directory.
    pub fn spawn(&mut self) {
        let mut child = Command::new(BIN)
            .args(["serve", "-c"])
            .arg(&self.config_path)
            .current_dir(&self.dir)
            .env(
                "RUST_LOG",
                std::env::var("TEST_RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn switchyard");
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = self.log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                log.lock().unwrap().push(line);
            }
        });
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("listening on ") {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(addr.to_string());
                    }
                }
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "switchyard did not start; its log:\n{}",
                    self.log.lock().unwrap().join("\n")
                );
            }
        };
        self.addr = addr.parse().unwrap();
        self.child = Some(child);
    }

    /// SIGKILL: a crash.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait: a graceful stop.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("running");
        unsafe_sigterm(c.id());
        c.wait().unwrap()
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn events_url(&self, account: &str) -> String {
        self.url(&format!("/v1/accounts/{account}/events"))
    }
}

fn unsafe_sigterm(pid: u32) {
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
}

impl Drop for Router {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// One request a receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub headers: HashMap<String, String>,
    pub body: Bytes,
    pub at: Instant,
}

impl Received {
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).map(String::as_str).unwrap_or("")
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// What a receiver answers: status, extra headers, delay before answering.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub delay: Duration,
    pub body: Bytes,
}

impl Reply {
    pub fn status(status: u16) -> Reply {
        Reply {
            status,
            headers: vec![],
            delay: Duration::ZERO,
            body: Bytes::new(),
        }
    }
}

type Script = dyn Fn(usize, &Received) -> Reply + Send + Sync;

/// A real HTTP server on loopback that records what it gets.
pub struct Receiver {
    pub addr: SocketAddr,
    pub got: Arc<Mutex<Vec<Received>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Receiver {
    /// Answers 200 to everything.
    pub async fn ok() -> Receiver {
        Receiver::scripted(|_, _| Reply::status(200)).await
    }

    /// `script(n, request)` decides the answer to the n-th request (0-based).
    pub async fn scripted(
        script: impl Fn(usize, &Received) -> Reply + Send + Sync + 'static,
    ) -> Receiver {
        Receiver::on("127.0.0.1:0".parse().unwrap(), script).await
    }

    pub async fn on(
        addr: SocketAddr,
        script: impl Fn(usize, &Received) -> Reply + Send + Sync + 'static,
    ) -> Receiver {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .expect("bind receiver");
        let addr = listener.local_addr().unwrap();
        let got: Arc<Mutex<Vec<Received>>> = Arc::new(Mutex::new(Vec::new()));
        let script: Arc<Script> = Arc::new(script);
        let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
        let g = got.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = tokio::select! {
                    r = listener.accept() => match r { Ok(x) => x, Err(_) => continue },
                    _ = &mut stop_rx => return,
                };
                let g = g.clone();
                let script = script.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let g = g.clone();
                        let script = script.clone();
                        async move {
                            let path = req.uri().path().to_string();
                            let headers = req
                                .headers()
                                .iter()
                                .map(|(k, v)| {
                                    (k.as_str().to_string(), v.to_str().unwrap_or("").to_string())
                                })
                                .collect();
                            let body = req
                                .into_body()
                                .collect()
                                .await
                                .map(|c| c.to_bytes())
                                .unwrap_or_default();
                            let rec = Received {
                                path,
                                headers,
                                body,
                                at: Instant::now(),
                            };
                            let n = {
                                let mut v = g.lock().unwrap();
                                v.push(rec.clone());
                                v.len() - 1
                            };
                            let reply = script(n, &rec);
                            if !reply.delay.is_zero() {
                                tokio::time::sleep(reply.delay).await;
                            }
                            let mut resp = hyper::Response::new(Full::new(reply.body));
                            *resp.status_mut() = hyper::StatusCode::from_u16(reply.status).unwrap();
                            for (k, v) in reply.headers {
                                resp.headers_mut().insert(
                                    hyper::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                                    v.parse().unwrap(),
                                );
                            }
                            Ok::<_, std::convert::Infallible>(resp)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Receiver {
            addr,
            got,
            stop: Some(stop_tx),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn received(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.got.lock().unwrap().len()
    }

    /// Waits until `pred` holds on what was received, or panics after `timeout`.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&[Received]) -> bool,
    ) -> Vec<Received> {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.received();
            if pred(&got) {
                return got;
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out waiting for {what}; received {} request(s): {:?}",
                    got.len(),
                    got.iter().map(|r| &r.path).collect::<Vec<_>>()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn close(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.close();
    }
}

/// A keep-alive HTTP client.
pub struct Client {
    inner: hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        Full<Bytes>,
    >,
}

pub struct Resp {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&self.body)))
    }
}

impl Default for Client {
    fn default() -> Self {
        Client::new()
    }
}

impl Client {
    pub fn new() -> Client {
        Client {
            inner: hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    pub async fn request(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Resp {
        let body: Bytes = body.into();
        let build = || {
            let mut req = http::Request::builder().method(method).uri(url);
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            req.body(Full::new(body.clone())).unwrap()
        };
        // A pooled keep-alive connection can be closed by the server (after
        // an error answer) just as the next request goes out on it; that is
        // the client's race, not the server's answer: retry once on a new
        // connection. A dead server fails the retry too.
        let resp = match self.inner.request(build()).await {
            Ok(r) => r,
            Err(first) => self
                .inner
                .request(build())
                .await
                .unwrap_or_else(|e| panic!("{method} {url}: {e} (first try: {first})")),
        };
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        Resp {
            status,
            headers,
            body,
        }
    }

    /// Like `request`, but `None` when the connection fails (server killed).
    pub async fn request_opt(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Option<Resp> {
        let mut req = http::Request::builder().method(method).uri(url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Full::new(body.into())).ok()?;
        let resp = self.inner.request(req).await.ok()?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.ok()?.to_bytes();
        Some(Resp {
            status,
            headers,
            body,
        })
    }

    /// POSTs an event with the test token.
    pub async fn post_event(
        &self,
        router: &Router,
        account: &str,
        body: &serde_json::Value,
    ) -> Resp {
        self.request(
            "POST",
            &router.events_url(account),
            &[
                ("authorization", &format!("Bearer {TOKEN}")),
                ("content-type", "application/json"),
            ],
            body.to_string(),
        )
        .await
    }

    /// POSTs `n` events to `account`, `body(i)` the i-th, each answered
    /// 202; returns their ids in order.
    pub async fn post_events(
        &self,
        router: &Router,
        account: &str,
        n: usize,
        body: impl Fn(usize) -> serde_json::Value,
    ) -> Vec<String> {
        let mut ids = Vec::with_capacity(n);
        for i in 0..n {
            let r = self.post_event(router, account, &body(i)).await;
            assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
            ids.push(r.json()["data"]["id"].as_str().unwrap().to_string());
        }
        ids
    }
}

/// Posts `{"event": kind, "payload": {"data": {"id": key}}}` with the test
/// token and `Idempotency-Key: key` until the router answers 202 — as a
/// producer does while the router is down or restarting — pausing between
/// tries. Returns how many tries were refused.
pub async fn post_until_acked(
    c: &Client,
    url: &str,
    kind: &str,
    key: &str,
    pause: Duration,
) -> u64 {
    let body = serde_json::json!({"event": kind, "payload": {"data": {"id": key}}}).to_string();
    let headers = [
        ("authorization", "Bearer test-token-aaaa-0001"),
        ("content-type", "application/json"),
        ("idempotency-key", key),
    ];
    let mut refused = 0;
    loop {
        match c.request_opt("POST", url, &headers, body.clone()).await {
            Some(r) if r.status == 202 => return refused,
            _ => {
                refused += 1;
                tokio::time::sleep(pause).await;
            }
        }
    }
}

/// A realistic ~1 KB Keygen license document.
pub fn license_doc(id: &str, status: &str) -> serde_json::Value {
    serde_json::json!({
        "data": {
            "id": id,
            "type": "licenses",
            "attributes": {
                "name": "Pro license", "key": "C1B6DE-39A6E3-DE1529-8559A0-4AF593-V3",
                "expiry": "2027-01-01T00:00:00.000Z", "status": status, "uses": 3,
                "suspended": false, "scheme": null, "encrypted": false, "strict": true,
                "maxMachines": 5, "maxUsers": 1, "maxCores": null, "requireHeartbeat": false,
                "metadata": {"tier": "gold", "email": "ada@example.com"},
                "created": "2026-01-01T00:00:00.000Z", "updated": "2026-01-02T00:00:00.000Z"
            },
            "relationships": {
                "account": {"data": {"type": "accounts", "id": "4b0a1c5c-0a7d-4d1b-9d0e-6f1f2b7c8a90"}},
                "product": {"data": {"type": "products", "id": "9c1e2f4a-3b5d-4c6e-8f7a-1b2c3d4e5f60"}},
                "policy": {"data": {"type": "policies", "id": "1a2b3c4d-5e6f-4a8b-9c0d-1e2f3a4b5c6d"}},
                "owner": {"data": {"type": "users", "id": "7e8f9a0b-1c2d-4e3f-8a5b-6c7d8e9f0a1b"}}
            },
            "links": {"self": format!("/v1/accounts/4b0a1c5c-0a7d-4d1b-9d0e-6f1f2b7c8a90/licenses/{id}")}
        }
    })
}

pub fn event(event_type: &str, doc: serde_json::Value) -> serde_json::Value {
    serde_json::json!({"event": event_type, "payload": doc})
}

/// Runs a Python check script from tests/ecosystem with JSON on stdin.
pub fn python_check(script: &str, input: &serde_json::Value) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/ecosystem")
        .join(script);
    let mut child = Command::new("python3")
        .arg(&path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 must be installed (apt-get install python3)");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        out.status.success(),
        "{script} failed (install the test clients with `pip install -r tests/ecosystem/requirements.txt`):\n{stdout}\n{stderr}"
    );
    stdout
}

/// A JSON:API request with a bearer token (and a JSON body when given).
pub async fn api(
    c: &Client,
    r: &Router,
    method: &str,
    path: &str,
    token: &str,
    body: Option<serde_json::Value>,
) -> Resp {
    let auth = format!("Bearer {token}");
    let mut h = vec![("authorization", auth.as_str())];
    if body.is_some() {
        h.push(("content-type", "application/vnd.api+json"));
    }
    c.request(
        method,
        &r.url(path),
        &h,
        body.map(|b| b.to_string()).unwrap_or_default(),
    )
    .await
}
