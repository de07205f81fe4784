//! Property tests ("fuzzing" bounded for CI) over the two parsers that read
//! untrusted or hand-written text: the ingest body parser
//! (`switchyard::ingest::parse`) and the configuration parser
//! (`switchyard::config::Config::parse`).
//!
//! Properties: no panic, no hang (every call is timed and the whole run has
//! a watchdog), and errors are well formed (a 4xx JSON:API error with a
//! title and a detail; config errors with a location and a message). An
//! accepted event is checked too: a valid event type, a JSON object payload.
//!
//! Cases per property: `PROPTEST_CASES` (default 2,000 here, about 10-20 s
//! in release on 2 cores). Run longer: `PROPTEST_CASES=200000 cargo test
//! --release -p switchyard --test it fuzz_props::`.

use std::path::Path;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{Config as PtConfig, TestRunner};
use serde_json::{Value, json};

use switchyard::config::{Config, Env};
use switchyard::ingest;

/// Slowest acceptable single parse (a hang or a quadratic blow-up fails).
const MAX_CALL: Duration = Duration::from_secs(2);

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2000)
}

/// Runs `f` on a thread and fails if it does not finish in `limit`.
fn with_watchdog(name: &str, limit: Duration, f: impl FnOnce() + Send + 'static) {
    let (tx, rx) = std::sync::mpsc::channel();
    let h = std::thread::Builder::new()
        .name(name.into())
        .stack_size(64 << 20)
        .spawn(move || {
            f();
            let _ = tx.send(());
        })
        .unwrap();
    match rx.recv_timeout(limit) {
        Ok(()) => h.join().unwrap(),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            // The property failed (panicked): surface its message.
            if let Err(e) = h.join() {
                std::panic::resume_unwind(e);
            }
        }
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            panic!("{name}: no answer within {limit:?} (a hang)")
        }
    }
}

// ---- ingest -----------------------------------------------------------------

fn check_ingest(body: &[u8]) -> Result<(), TestCaseError> {
    let start = Instant::now();
    let r = ingest::parse(body);
    let took = start.elapsed();
    prop_assert!(
        took < MAX_CALL,
        "parse took {took:?} on {} bytes",
        body.len()
    );
    match r {
        Ok(ev) => {
            prop_assert!(
                ingest::check_event_type(&ev.event_type, "/event").is_ok(),
                "accepted a bad type {:?}",
                ev.event_type
            );
            let v: Value = serde_json::from_slice(&ev.payload)
                .map_err(|e| TestCaseError::fail(format!("payload not JSON: {e}")))?;
            prop_assert!(v.is_object(), "payload is not an object: {v}");
            if let Some(id) = &ev.source_id {
                prop_assert!(!id.is_empty() && id.len() <= 255);
            }
        }
        Err(e) => {
            prop_assert!(e.status.is_client_error(), "status {}", e.status);
            prop_assert!(!e.title.is_empty() && !e.detail.is_empty());
            let resp = e.to_response();
            prop_assert_eq!(resp.status(), e.status);
            if let Some(p) = &e.pointer {
                prop_assert!(p.starts_with('/'), "pointer {p:?}");
            }
        }
    }
    Ok(())
}

/// Valid bodies of both forms, the seeds of the mutation strategy.
fn seeds() -> Vec<Vec<u8>> {
    let doc = json!({"data": {"id": "l1", "type": "licenses", "attributes": {"name": "Pro", "uses": 3, "metadata": {"a": [1, 2.5, null, true]}}}});
    vec![
        json!({"event": "license.created", "payload": doc, "id": "evt_1", "created": "2024-01-02T03:04:05Z"}).to_string().into_bytes(),
        json!({"event": "user.created", "payload": {"data": {}}}).to_string().into_bytes(),
        json!({"data": {"id": "wh1", "type": "webhook-events",
            "attributes": {"event": "license.expired", "payload": doc.to_string(), "created": "2024-01-02T03:04:05.123Z"},
            "meta": {"idempotencyToken": "tok"}}})
        .to_string()
        .into_bytes(),
    ]
}

#[derive(Debug, Clone)]
enum Edit {
    Replace(usize, u8),
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
    Duplicate(usize, usize),
}

fn edit_strategy() -> impl Strategy<Value = Edit> {
    let interesting = prop::sample::select(vec![
        b"{".to_vec(),
        b"}".to_vec(),
        b"[".to_vec(),
        b"]".to_vec(),
        b"\"".to_vec(),
        b"\\".to_vec(),
        b",".to_vec(),
        b":".to_vec(),
        b"\\u0000".to_vec(),
        b"\\ud800".to_vec(),
        b"1e999".to_vec(),
        b"-0".to_vec(),
        b"18446744073709551616".to_vec(),
        b"\xff".to_vec(),
        b"\xc3".to_vec(),
        b"null".to_vec(),
        b"\"event\":\"a.b\",".to_vec(),
        b"\"data\":{},".to_vec(),
        b"\"payload\":{},".to_vec(),
    ]);
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Edit::Replace(i, b)),
        (any::<usize>(), interesting).prop_map(|(i, s)| Edit::Insert(i, s)),
        (any::<usize>(), 1usize..8).prop_map(|(i, n)| Edit::Delete(i, n)),
        (any::<usize>(), 1usize..32).prop_map(|(i, n)| Edit::Duplicate(i, n)),
    ]
}

fn apply(mut body: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for e in edits {
        let len = body.len().max(1);
        match e {
            Edit::Replace(i, b) => {
                if !body.is_empty() {
                    let i = i % body.len();
                    body[i] = *b;
                }
            }
            Edit::Insert(i, s) => {
                let i = i % (body.len() + 1);
                body.splice(i..i, s.iter().copied());
            }
            Edit::Delete(i, n) => {
                let i = i % len;
                let end = (i + n).min(body.len());
                if i < end {
                    body.drain(i..end);
                }
            }
            Edit::Duplicate(i, n) => {
                let i = i % len;
                let end = (i + n).min(body.len());
                if i < end {
                    let chunk = body[i..end].to_vec();
                    body.splice(end..end, chunk);
                }
            }
        }
    }
    body
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        ".{0,40}".prop_map(Value::String),
    ];
    leaf.prop_recursive(6, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::btree_map("[a-z]{0,8}", inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

#[test]
fn ingest_parse_never_panics_on_arbitrary_bytes() {
    with_watchdog("ingest-bytes", Duration::from_secs(240), || {
        let mut r = TestRunner::new(PtConfig {
            cases: cases(),
            failure_persistence: None,
            ..PtConfig::default()
        });
        r.run(&prop::collection::vec(any::<u8>(), 0..4096), |b| {
            check_ingest(&b)
        })
        .unwrap();
    });
}

#[test]
fn ingest_parse_never_panics_on_mutated_events() {
    with_watchdog("ingest-mutations", Duration::from_secs(240), || {
        let seeds = seeds();
        let mut r = TestRunner::new(PtConfig {
            cases: cases(),
            failure_persistence: None,
            ..PtConfig::default()
        });
        let strat = (
            0..seeds.len(),
            prop::collection::vec(edit_strategy(), 1..12),
        );
        r.run(&strat, |(s, edits)| {
            check_ingest(&apply(seeds[s].clone(), &edits))
        })
        .unwrap();
    });
}

#[test]
fn ingest_parse_structured_events() {
    with_watchdog("ingest-structured", Duration::from_secs(240), || {
        let mut r = TestRunner::new(PtConfig {
            cases: cases(),
            failure_persistence: None,
            ..PtConfig::default()
        });
        // Arbitrary members under the accepted names and arbitrary values.
        let strat = (
            prop::option::of(prop_oneof![
                "[a-z.\\-_]{0,140}".prop_map(Value::String),
                json_value()
            ]),
            prop::option::of(json_value()),
            prop::option::of(json_value()),
            prop::option::of(prop_oneof![
                "[0-9TZ:.\\-+]{0,40}".prop_map(Value::String),
                json_value()
            ]),
            prop::option::of(json_value()),
        );
        r.run(&strat, |(event, payload, id, created, data)| {
            let mut m = serde_json::Map::new();
            for (k, v) in [
                ("event", event),
                ("payload", payload),
                ("id", id),
                ("created", created),
                ("data", data),
            ] {
                if let Some(v) = v {
                    m.insert(k.into(), v);
                }
            }
            check_ingest(Value::Object(m).to_string().as_bytes())
        })
        .unwrap();
    });
}

#[test]
fn ingest_parse_deep_nesting_and_huge_members() {
    with_watchdog("ingest-deep", Duration::from_secs(120), || {
        let mut r = TestRunner::new(PtConfig {
            cases: cases().min(200),
            failure_persistence: None,
            ..PtConfig::default()
        });
        let strat = (
            1usize..50_000,
            prop::sample::select(vec!["[", "{\"a\":", "[{\"b\":["]),
            any::<bool>(),
        );
        r.run(&strat, |(depth, open, close)| {
            let mut s = String::from("{\"event\":\"a.b\",\"payload\":{\"x\":");
            s.push_str(&open.repeat(depth));
            if close {
                s.push('1');
            }
            check_ingest(s.as_bytes())
        })
        .unwrap();
        // A 10,000-level payload is refused (serde_json's recursion limit), not a stack overflow.
        let deep = format!(
            "{{\"event\":\"a.b\",\"payload\":{}{}}}",
            "[".repeat(10_000),
            "]".repeat(10_000)
        );
        assert!(ingest::parse(deep.as_bytes()).is_err());
    });
}

// ---- config -----------------------------------------------------------------

struct NoEnv;
impl Env for NoEnv {
    fn var(&self, name: &str) -> Option<String> {
        (name == "SET_VAR").then(|| "value-from-env-0123456789".to_string())
    }
}

fn check_config(text: &str) -> Result<(), TestCaseError> {
    let start = Instant::now();
    let r = Config::parse(Path::new("fuzz.toml"), text, &NoEnv);
    let took = start.elapsed();
    prop_assert!(took < MAX_CALL, "Config::parse took {took:?}");
    match r {
        Ok(c) => {
            // A semaphore of more permits than tokio allows would panic at start.
            let max = tokio::sync::Semaphore::MAX_PERMITS;
            prop_assert!(c.delivery.max_in_flight >= 1 && c.delivery.max_in_flight <= max);
            for e in &c.endpoints {
                prop_assert!(
                    e.max_in_flight >= 1 && e.max_in_flight <= max,
                    "max_in_flight {}",
                    e.max_in_flight
                );
            }
        }
        Err(errs) => {
            prop_assert!(!errs.errors.is_empty(), "an Err without errors");
            for e in &errs.errors {
                prop_assert!(!e.location.is_empty() && !e.message.is_empty(), "{e:?}");
            }
            let shown = errs.to_string();
            prop_assert!(shown.contains("fuzz.toml"));
        }
    }
    Ok(())
}

const CONFIG_SEED: &str = r#"
[server]
listen = "127.0.0.1:8686"
data_dir = "./data"
max_body = "1MiB"
header_timeout = "10s"
retention = "30d"
admin_token = "0123456789abcdef0123"
[plugins]
dir = "plugins/dist"
deadline = "50ms"
memory_limit = "32MiB"
max_output = "5MiB"
[delivery]
allow_http = true
allow_private_networks = false
timeout = "15s"
max_in_flight = 32
retry_schedule = ["1s", "1m", "1h"]
max_retry_after = "1h"
[[accounts]]
id = "demo"
token = "demo-token-change-me"
keygen_signing_key = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"
[[endpoints]]
id = "local"
account = "demo"
url = "https://example.com/webhooks"
subscriptions = ["*", "license.*"]
secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
signatures = ["standard", "keygen"]
retry_schedule = ["5s", "30s"]
timeout = "2s"
max_in_flight = 4
[[endpoints.plugins]]
name = "event-filter"
config = { include = ["license.*"] }
"#;

#[test]
fn config_parse_never_panics_on_arbitrary_text() {
    with_watchdog("config-text", Duration::from_secs(240), || {
        let mut r = TestRunner::new(PtConfig {
            cases: cases(),
            failure_persistence: None,
            ..PtConfig::default()
        });
        r.run(&".{0,2000}", |s| check_config(&s)).unwrap();
    });
}

#[test]
fn config_parse_never_panics_on_mutated_configs() {
    with_watchdog("config-mutations", Duration::from_secs(240), || {
        let mut r = TestRunner::new(PtConfig {
            cases: cases(),
            failure_persistence: None,
            ..PtConfig::default()
        });
        r.run(&prop::collection::vec(edit_strategy(), 1..16), |edits| {
            let bytes = apply(CONFIG_SEED.as_bytes().to_vec(), &edits);
            let text = String::from_utf8_lossy(&bytes);
            check_config(&text)
        })
        .unwrap();
    });
}

#[test]
fn config_parse_hostile_values() {
    with_watchdog("config-values", Duration::from_secs(240), || {
        let mut r = TestRunner::new(PtConfig {
            cases: cases(),
            failure_persistence: None,
            ..PtConfig::default()
        });
        // Replace one value of the seed with something hostile.
        let keys = vec![
            "listen",
            "max_body",
            "header_timeout",
            "retention",
            "deadline",
            "memory_limit",
            "max_output",
            "timeout",
            "max_in_flight",
            "max_retry_after",
            "url",
            "secret",
            "id",
            "account",
            "token",
            "keygen_signing_key",
            "admin_token",
        ];
        let values = prop_oneof![
            "\"[ -~]{0,60}\"".prop_map(|s| s),
            any::<i64>().prop_map(|n| n.to_string()),
            Just("\"18446744073709551615MiB\"".to_string()),
            Just("\"99999999999999999999d\"".to_string()),
            Just("\"https://[::ffff:127.0.0.1]/x\"".to_string()),
            Just("\"https://0x7f.1/x\"".to_string()),
            Just("9223372036854775807".to_string()),
            Just("-1".to_string()),
            Just("[]".to_string()),
            Just("{}".to_string()),
            Just("true".to_string()),
        ];
        r.run(&(prop::sample::select(keys), values), |(key, value)| {
            let mut out = String::new();
            let mut replaced = false;
            for line in CONFIG_SEED.lines() {
                if !replaced && line.starts_with(&format!("{key} =")) {
                    out.push_str(&format!("{key} = {value}\n"));
                    replaced = true;
                } else {
                    out.push_str(line);
                    out.push('\n');
                }
            }
            check_config(&out)
        })
        .unwrap();
    });
}
