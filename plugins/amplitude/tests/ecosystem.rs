//! Shape check against the official Amplitude SDK: runs
//! `tests/ecosystem/capture_sdks.py` (amplitude-analytics against a local
//! capture server, for events equivalent to our sample events) and compares
//! field names, JSON types and nesting of the plugin's output with what the
//! SDK sent. Needs `pip install -r tests/ecosystem/requirements.txt`; set
//! `SWITCHYARD_ALLOW_NO_PYTHON=1` to skip (loudly) where Python is missing.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;
use switchyard_guest::testing::{event_from_json, shape};
use switchyard_guest::{Outcome, Plugin};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs the capture script; `None` when skipping is allowed and Python or
/// the SDKs are missing.
fn capture(name: &str) -> Option<Value> {
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-sdk-capture.json"));
    let script = repo().join("tests/ecosystem/capture_sdks.py");
    let result = Command::new("python3").arg(&script).arg(&out).output();
    let failure = match &result {
        Ok(o) if o.status.success() => None,
        Ok(o) => Some(format!(
            "{} exited with {}:\n{}",
            script.display(),
            o.status,
            String::from_utf8_lossy(&o.stderr)
        )),
        Err(e) => Some(format!("cannot run python3: {e}")),
    };
    if let Some(why) = failure {
        if std::env::var("SWITCHYARD_ALLOW_NO_PYTHON").as_deref() == Ok("1") {
            // Straight to the process's stderr: the test harness captures
            // eprintln!, and this skip must be seen.
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "\n!!!!!!!! SKIPPED the Amplitude SDK shape check (SWITCHYARD_ALLOW_NO_PYTHON=1): {why}\n"
            );
            return None;
        }
        panic!(
            "the Amplitude SDK shape check needs python3 with the official SDKs:\n    \
             pip install segment-analytics-python amplitude-analytics\n\
             (pinned: pip install -r tests/ecosystem/requirements.txt), or set \
             SWITCHYARD_ALLOW_NO_PYTHON=1 to skip it.\n{why}"
        );
    }
    let text = std::fs::read_to_string(&out).expect("capture output");
    Some(serde_json::from_str(&text).expect("capture output is JSON"))
}

/// Our body for a sample event, configured like the SDK client in the script.
fn ours(fixture: &str) -> Value {
    let config = r#"{"api_key": "amp_key", "min_id_length": 5, "user_properties": ["name"]}"#;
    let mut plugin = switchyard_guest::configure::<amplitude::Amplitude>(config).unwrap();
    let text = std::fs::read_to_string(repo().join("examples/events").join(fixture)).unwrap();
    match plugin.handle(&event_from_json(&text).unwrap()).unwrap() {
        Outcome::Replace(r) => {
            assert_eq!(r.content_type, "application/json");
            serde_json::from_slice(&r.body).unwrap()
        }
        other => panic!("expected Replace, got {other:?}"),
    }
}

#[test]
fn amplitude_output_has_the_official_sdk_shape() {
    let Some(captured) = capture("amplitude") else {
        return;
    };
    let request = &captured["amplitude"]["events"];
    assert_eq!(request["path"], "/2/httpapi");
    let sdk = &request["body"];
    let sdk_events = sdk["events"].as_array().unwrap();
    assert_eq!(sdk_events.len(), 2);

    for (fixture, sdk_event) in ["license.validation.succeeded.json", "machine.created.json"]
        .iter()
        .zip(sdk_events)
    {
        let body = ours(fixture);
        // Body: api_key, events[], options.min_id_length, nothing else.
        let mut skeleton = body.clone();
        skeleton["events"] = Value::Array(vec![]);
        let mut sdk_skeleton = sdk.clone();
        sdk_skeleton["events"] = Value::Array(vec![]);
        assert_eq!(
            shape(&skeleton),
            shape(&sdk_skeleton),
            "{fixture}: request body"
        );
        assert_eq!(body["api_key"], sdk["api_key"]);
        assert_eq!(body["options"], sdk["options"]);

        // Event: the same field names, types (time: integer ms) and nesting.
        let ours = &body["events"][0];
        assert_eq!(
            shape(ours),
            shape(sdk_event),
            "{fixture}\nours: {ours:#}\nsdk:  {sdk_event:#}"
        );
        assert_eq!(shape(&ours["time"]), "integer");
        for key in [
            "event_type",
            "user_id",
            "device_id",
            "time",
            "insert_id",
            "platform",
            "event_properties",
            "user_properties",
        ] {
            assert_eq!(ours.get(key), sdk_event.get(key), "{fixture}: {key}");
        }
        // `library` names the sender: amplitude-python there, switchyard here.
        assert!(
            sdk_event["library"]
                .as_str()
                .unwrap()
                .starts_with("amplitude-python/")
        );
        assert!(ours["library"].as_str().unwrap().starts_with("switchyard/"));
    }
}

/// Several events per request: the plugin's `merge` of its two per-event
/// bodies is the request amplitude-analytics sent for the same two events
/// (one request, `flush_queue_size` not reached): same top level, the
/// events in order, each with the SDK's shape.
#[test]
fn a_merged_batch_has_the_official_sdk_request_shape() {
    let Some(captured) = capture("amplitude-batch") else {
        return;
    };
    let sdk = &captured["amplitude"]["events"]["body"];
    let config = r#"{"api_key": "amp_key", "min_id_length": 5, "user_properties": ["name"]}"#;
    let mut plugin = switchyard_guest::configure::<amplitude::Amplitude>(config).unwrap();
    let fixtures = ["license.validation.succeeded.json", "machine.created.json"];
    let items: Vec<Vec<u8>> = fixtures
        .iter()
        .map(|f| serde_json::to_vec(&ours(f)).unwrap())
        .collect();
    let merged = plugin.merge(items).unwrap();
    assert!(merged.refused.is_empty());
    let body: Value = serde_json::from_slice(&merged.body).unwrap();
    let mut skeleton = body.clone();
    skeleton["events"] = Value::Array(vec![]);
    let mut sdk_skeleton = sdk.clone();
    sdk_skeleton["events"] = Value::Array(vec![]);
    assert_eq!(shape(&skeleton), shape(&sdk_skeleton), "request body");
    assert_eq!(body["api_key"], sdk["api_key"]);
    assert_eq!(body["options"], sdk["options"]);
    let ours = body["events"].as_array().unwrap();
    let theirs = sdk["events"].as_array().unwrap();
    assert_eq!(ours.len(), theirs.len());
    for (o, t) in ours.iter().zip(theirs) {
        assert_eq!(shape(o), shape(t), "\nours: {o:#}\nsdk:  {t:#}");
        assert_eq!(
            o["insert_id"], t["insert_id"],
            "same dedupe key, same order"
        );
    }
}
