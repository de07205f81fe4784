//! End to end for the analytics plugins: events ingested by the real router
//! reach a capture receiver as a valid Segment `/v1/batch` body and a valid
//! Amplitude HTTP V2 body, through two endpoints — one with `redact` in
//! front of `segment` — using the bundled plugins built from source.

use std::time::Duration;

use crate::common::*;
use base64::Engine as _;
use serde_json::{Value, json};

fn fixture(name: &str) -> Value {
    let path = format!(
        "{}/../examples/events/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segment_and_amplitude_receive_their_own_formats() {
    let rx = Receiver::ok().await;
    let config = base_config("")
        + &format!(
            r#"
[[endpoints]]
id = "segment"
account = "acct"
url = "{seg}"
secret = "{SECRET}"
plugins = [
  {{ name = "redact", config = {{ paths = ["/data/attributes/metadata/*"] }} }},
  {{ name = "segment", config = {{ write_key = "wk_test", attributes = ["status", "metadata"] }} }},
]
[[endpoints]]
id = "amplitude"
account = "acct"
url = "{amp}"
secret = "{SECRET}"
subscriptions = ["license.*", "machine.*"]
plugins = [ {{ name = "amplitude", config = {{ api_key = "amp_key_123" }} }} ]
"#,
            seg = rx.url("/v1/batch"),
            amp = rx.url("/2/httpapi"),
        );
    let router = Router::start(
        &config,
        &[
            ("segment", dist_plugin("segment")),
            ("amplitude", dist_plugin("amplitude")),
            ("redact", dist_plugin("redact")),
        ],
    );
    let c = Client::new();
    let mut ids = Vec::new();
    for name in [
        "license.validation.succeeded",
        "user.created",
        "machine.created",
    ] {
        let r = c.post_event(&router, "acct", &fixture(name)).await;
        assert_eq!(
            r.status,
            202,
            "{name}: {}",
            String::from_utf8_lossy(&r.body)
        );
        ids.push((name, r.json()["data"]["id"].as_str().unwrap().to_string()));
    }
    // segment: 3 events; amplitude: license + machine = 2.
    let got = rx
        .wait_for(Duration::from_secs(15), "5 deliveries", |g| g.len() >= 5)
        .await;
    let seg: Vec<_> = got.iter().filter(|r| r.path == "/v1/batch").collect();
    let amp: Vec<_> = got.iter().filter(|r| r.path == "/2/httpapi").collect();
    assert_eq!((seg.len(), amp.len()), (3, 2));

    // Segment: Basic auth with the write key, batch wrapper, messageId = event id.
    let want_auth = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("wk_test:")
    );
    let validation_id = &ids[0].1;
    let track = seg
        .iter()
        .map(|r| {
            assert_eq!(r.header("authorization"), want_auth);
            assert_eq!(r.header("content-type"), "application/json");
            assert!(
                !r.header("webhook-signature").is_empty(),
                "deliveries stay signed"
            );
            r.json()
        })
        .find(|b| b["batch"][0]["messageId"] == json!(validation_id))
        .expect("the validation event's track call");
    let call = &track["batch"][0];
    assert_eq!(call["type"], "track");
    assert_eq!(call["event"], "License Validation Succeeded");
    assert!(call["userId"].is_string() || call["anonymousId"].is_string());
    assert_eq!(call["properties"]["valid"], true);
    assert_eq!(call["context"]["library"]["name"], "switchyard");
    let ts = call["timestamp"].as_str().unwrap();
    assert!(
        ts.starts_with("20") && (ts.ends_with('Z') || ts.contains('+')),
        "{ts}"
    );
    // redact ran first: the metadata the Segment plugin was told to copy
    // arrives emptied of its values.
    let metadata =
        &fixture("license.validation.succeeded")["payload"]["data"]["attributes"]["metadata"];
    assert!(
        metadata.as_object().is_some_and(|m| !m.is_empty()),
        "the fixture has metadata"
    );
    assert_eq!(call["properties"]["metadata"], json!({}), "{call}");
    assert_eq!(call["properties"]["status"], "ACTIVE");
    let identify = seg
        .iter()
        .map(|r| r.json())
        .find(|b| b["batch"][0]["type"] == "identify")
        .expect("user.created becomes identify");
    assert_eq!(identify["batch"][0]["messageId"], json!(ids[1].1));

    // Amplitude: api_key, events[], insert_id = event id, time in ms.
    for r in &amp {
        let b = r.json();
        assert_eq!(b["api_key"], "amp_key_123");
        let e = &b["events"][0];
        assert!(e["event_type"].as_str().unwrap().contains('.'));
        assert!(
            e["time"].as_i64().unwrap() > 1_000_000_000_000,
            "time is in milliseconds"
        );
        assert!(e["user_id"].is_string() || e["device_id"].is_string());
        let id = e["insert_id"].as_str().unwrap();
        assert!(ids.iter().any(|(_, x)| x == id));
    }
    let machine = amp
        .iter()
        .map(|r| r.json())
        .find(|b| b["events"][0]["event_type"] == "machine.created")
        .unwrap();
    let fp = fixture("machine.created")["payload"]["data"]["attributes"]["fingerprint"].clone();
    assert_eq!(machine["events"][0]["device_id"], fp);
}

/// What segment-analytics-python and amplitude-analytics send for the same
/// events (tests/ecosystem/capture_sdks.py: the SDKs pointed at a capture
/// server), as JSON.
fn sdk_capture() -> Value {
    let out = tempfile::NamedTempFile::new().unwrap();
    let script = format!(
        "{}/../tests/ecosystem/capture_sdks.py",
        env!("CARGO_MANIFEST_DIR")
    );
    let run = std::process::Command::new("python3")
        .arg(&script)
        .arg(out.path())
        .output()
        .expect("python3 must be installed");
    assert!(
        run.status.success(),
        "{script} failed (install the SDKs: pip install -r tests/ecosystem/requirements.txt):\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    serde_json::from_str(&std::fs::read_to_string(out.path()).unwrap()).unwrap()
}

/// Batching end to end against the official SDKs: the router batches two
/// events per request to a Segment and an Amplitude endpoint, and each
/// request has the shape of the one request the SDK's own batching sent
/// for the same two events — the same wrapper (Segment: less `sentAt` and
/// `writeKey`, which we leave out on purpose), and per call the same field
/// names, types and nesting (Segment: less `integrations: {}` and nulls).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_requests_have_the_official_sdks_shape() {
    let sdk = sdk_capture();
    let rx = Receiver::ok().await;
    let config = base_config("")
        + &format!(
            r#"
[[endpoints]]
id = "segment"
account = "acct"
url = "{seg}"
secret = "{SECRET}"
subscriptions = ["user.created", "license.validation.succeeded"]
batch = {{ max_events = 2, max_wait = "10s" }}
plugins = [ {{ name = "segment", config = {{ write_key = "wk_test" }} }} ]
[[endpoints]]
id = "amplitude"
account = "acct"
url = "{amp}"
secret = "{SECRET}"
subscriptions = ["license.validation.succeeded", "machine.created"]
batch = {{ max_events = 2, max_wait = "10s" }}
plugins = [ {{ name = "amplitude", config = {{ api_key = "amp_key", min_id_length = 5, user_properties = ["name"] }} }} ]
"#,
            seg = rx.url("/v1/batch"),
            amp = rx.url("/2/httpapi"),
        );
    let router = Router::start(
        &config,
        &[
            ("segment", dist_plugin("segment")),
            ("amplitude", dist_plugin("amplitude")),
        ],
    );
    let c = Client::new();
    for name in [
        "user.created",
        "license.validation.succeeded",
        "machine.created",
    ] {
        let r = c.post_event(&router, "acct", &fixture(name)).await;
        assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    }
    let got = rx
        .wait_for(Duration::from_secs(15), "one batch per endpoint", |g| {
            g.len() >= 2
        })
        .await;
    use switchyard_guest::testing::shape;

    // Segment: one request with both calls.
    let ours = got.iter().find(|r| r.path == "/v1/batch").unwrap().json();
    let theirs = &sdk["segment"]["batched"]["body"];
    let mut top = theirs.as_object().unwrap().clone();
    assert!(top.remove("sentAt").is_some());
    assert_eq!(top.remove("writeKey"), Some(json!("wk_test")));
    assert_eq!(
        ours.as_object().unwrap().keys().collect::<Vec<_>>(),
        top.keys().collect::<Vec<_>>()
    );
    let calls = ours["batch"].as_array().unwrap();
    let sdk_calls = theirs["batch"].as_array().unwrap();
    assert_eq!((calls.len(), sdk_calls.len()), (2, 2));
    for kind in ["identify", "track"] {
        let o = calls.iter().find(|c| c["type"] == kind).unwrap();
        let mut t = sdk_calls
            .iter()
            .find(|c| c["type"] == kind)
            .unwrap()
            .as_object()
            .unwrap()
            .clone();
        assert_eq!(t.remove("integrations"), Some(json!({})));
        t.retain(|_, v| !v.is_null());
        assert_eq!(
            shape(o),
            shape(&Value::Object(t.clone())),
            "{kind}\nours: {o:#}\nsdk:  {t:#?}"
        );
        for key in ["userId", "event", "properties", "traits"] {
            assert_eq!(o.get(key), t.get(key), "{kind}: {key}");
        }
    }

    // Amplitude: one request with both events.
    let ours = got.iter().find(|r| r.path == "/2/httpapi").unwrap().json();
    let theirs = &sdk["amplitude"]["events"]["body"];
    let skeleton = |v: &Value| {
        let mut s = v.clone();
        s["events"] = json!([]);
        shape(&s)
    };
    assert_eq!(skeleton(&ours), skeleton(theirs));
    assert_eq!(ours["api_key"], theirs["api_key"]);
    assert_eq!(ours["options"], theirs["options"]);
    let events = ours["events"].as_array().unwrap();
    let sdk_events = theirs["events"].as_array().unwrap();
    assert_eq!((events.len(), sdk_events.len()), (2, 2));
    for o in events {
        let t = sdk_events
            .iter()
            .find(|t| t["event_type"] == o["event_type"])
            .unwrap();
        assert_eq!(shape(o), shape(t), "\nours: {o:#}\nsdk:  {t:#}");
        for key in [
            "user_id",
            "device_id",
            "time",
            "platform",
            "event_properties",
            "user_properties",
        ] {
            assert_eq!(o.get(key), t.get(key), "{}: {key}", o["event_type"]);
        }
    }
}
