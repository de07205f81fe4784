//! Shape check against the official Segment SDK: runs
//! `tests/ecosystem/capture_sdks.py` (segment-analytics-python against a local
//! capture server, for calls equivalent to our sample events) and compares
//! field names, JSON types and nesting of the plugin's output with what the
//! SDK sent. Needs `pip install -r tests/ecosystem/requirements.txt`; set
//! `SWITCHYARD_ALLOW_NO_PYTHON=1` to skip (loudly) where Python is missing.

use std::path::PathBuf;
use std::process::Command;

use serde_json::{Value, json};
use switchyard_guest::testing::{event_from_json, rfc3339_to_ms, shape};
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
                "\n!!!!!!!! SKIPPED the Segment SDK shape check (SWITCHYARD_ALLOW_NO_PYTHON=1): {why}\n"
            );
            return None;
        }
        panic!(
            "the Segment SDK shape check needs python3 with the official SDKs:\n    \
             pip install segment-analytics-python amplitude-analytics\n\
             (pinned: pip install -r tests/ecosystem/requirements.txt), or set \
             SWITCHYARD_ALLOW_NO_PYTHON=1 to skip it.\n{why}"
        );
    }
    let text = std::fs::read_to_string(&out).expect("capture output");
    Some(serde_json::from_str(&text).expect("capture output is JSON"))
}

/// Our body and headers for a sample event.
fn ours(fixture: &str) -> (Value, Vec<(String, String)>) {
    let mut plugin =
        switchyard_guest::configure::<segment::Segment>(r#"{"write_key": "wk_test"}"#).unwrap();
    let text = std::fs::read_to_string(repo().join("examples/events").join(fixture)).unwrap();
    match plugin.handle(&event_from_json(&text).unwrap()).unwrap() {
        Outcome::Replace(r) => (serde_json::from_slice(&r.body).unwrap(), r.headers),
        other => panic!("expected Replace, got {other:?}"),
    }
}

fn compare(sdk_request: &Value, fixture: &str) {
    let sdk = &sdk_request["body"];
    let (body, headers) = ours(fixture);

    // Auth: the same Basic header from the same write key.
    assert_eq!(
        headers,
        vec![(
            "authorization".to_string(),
            sdk_request["headers"]["authorization"]
                .as_str()
                .unwrap()
                .to_string()
        )]
    );

    // Batch wrapper: the SDK adds `sentAt` and `writeKey`, which we leave out
    // on purpose (see the crate docs); everything else is the same.
    let mut sdk_top = sdk.as_object().unwrap().clone();
    assert!(sdk_top.remove("sentAt").is_some_and(|v| v.is_string()));
    assert_eq!(sdk_top.remove("writeKey"), Some(json!("wk_test")));
    assert_eq!(
        body.as_object().unwrap().keys().collect::<Vec<_>>(),
        sdk_top.keys().collect::<Vec<_>>()
    );

    let sdk_call = sdk["batch"][0].as_object().unwrap().clone();
    let our_call = body["batch"][0].as_object().unwrap().clone();
    assert_eq!(body["batch"].as_array().unwrap().len(), 1);

    // The SDK always sends `integrations: {}` and the unused id as null; we
    // omit both. Every other field must match in name, type and nesting.
    let mut sdk_cmp = sdk_call.clone();
    assert_eq!(sdk_cmp.remove("integrations"), Some(json!({})));
    sdk_cmp.retain(|_, v| !v.is_null());
    assert_eq!(
        shape(&Value::Object(our_call.clone())),
        shape(&Value::Object(sdk_cmp)),
        "\nours: {our_call:#?}\nsdk:  {sdk_call:#?}"
    );

    // Same values where they mean the same thing.
    for key in [
        "type",
        "userId",
        "messageId",
        "event",
        "properties",
        "traits",
    ] {
        assert_eq!(our_call.get(key), sdk_call.get(key), "{key}");
    }
    // Timestamps: ISO 8601 strings for the same instant.
    let ts = |c: &serde_json::Map<String, Value>| rfc3339_to_ms(c["timestamp"].as_str().unwrap());
    assert!(ts(&our_call).is_some() && ts(&our_call) == ts(&sdk_call));
    // context.library names the sender: analytics-python there, switchyard here.
    assert_eq!(sdk_call["context"]["library"]["name"], "analytics-python");
    assert_eq!(our_call["context"]["library"]["name"], "switchyard");
}

#[test]
fn segment_output_has_the_official_sdk_shape() {
    let Some(captured) = capture("segment") else {
        return;
    };
    let sdk = &captured["segment"];
    assert_eq!(sdk["identify"]["path"], "/v1/batch");
    compare(&sdk["identify"], "user.created.json");
    compare(&sdk["track"], "license.validation.succeeded.json");
}

/// Several events per request: the plugin's `merge` of its per-event
/// bodies for user.created and license.validation.succeeded, against the
/// one `/v1/batch` request segment-analytics-python sent for the same two
/// calls in its own (asynchronous, batching) mode.
#[test]
fn a_merged_batch_has_the_official_sdk_request_shape() {
    let Some(captured) = capture("segment-batch") else {
        return;
    };
    let sdk = &captured["segment"]["batched"];
    assert_eq!(sdk["path"], "/v1/batch");
    let sdk_calls = sdk["body"]["batch"].as_array().unwrap();
    assert_eq!(sdk_calls.len(), 2, "the SDK sent both calls in one request");
    let fixtures = ["user.created.json", "license.validation.succeeded.json"];
    let mut plugin =
        switchyard_guest::configure::<segment::Segment>(r#"{"write_key": "wk_test"}"#).unwrap();
    let items: Vec<Vec<u8>> = fixtures
        .iter()
        .map(|f| serde_json::to_vec(&ours(f).0).unwrap())
        .collect();
    let merged = plugin.merge(items).unwrap();
    assert!(merged.refused.is_empty());
    let body: Value = serde_json::from_slice(&merged.body).unwrap();
    assert_eq!(body["batch"].as_array().unwrap().len(), 2);
    // Each call, in its own one-call request as `compare` expects: the
    // same checks as for single events (auth, wrapper, call shape, values).
    for (i, fixture) in fixtures.iter().enumerate() {
        let mut one = sdk.clone();
        one["body"]["batch"] = json!([sdk_calls[i].clone()]);
        compare(&one, fixture);
        assert_eq!(body["batch"][i], ours(fixture).0["batch"][0]);
    }
    assert_eq!(
        merged.headers,
        vec![(
            "authorization".to_string(),
            sdk["headers"]["authorization"]
                .as_str()
                .unwrap()
                .to_string()
        )]
    );
}
