//! The plugin contract's versions end to end (issues 13 and 17): a plugin
//! built against `switchyard:plugin@0.1.0` loads and runs unchanged next
//! to 0.2.0 plugins, and a 0.2.0 plugin's `rejected` error fails the
//! delivery at once while `bad-input` is retried.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::*;

async fn event_api(c: &Client, router: &Router, id: &str) -> Value {
    let r = c
        .request(
            "GET",
            &router.url(&format!("/v1/accounts/acct/webhook-events/{id}")),
            &[("authorization", &format!("Bearer {TOKEN}"))],
            "",
        )
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    r.json()
}

async fn wait_delivery(
    c: &Client,
    router: &Router,
    id: &str,
    endpoint: &str,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ev = event_api(c, router, id).await;
        let d = ev["data"]["attributes"]["deliveries"]
            .as_array()
            .and_then(|ds| ds.iter().find(|d| d["endpoint"] == endpoint))
            .cloned()
            .unwrap_or_else(|| panic!("no delivery to {endpoint} in {ev}"));
        if pred(&d) {
            return d;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting on the delivery to {endpoint}: {d}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A component built with wit-bindgen against `wit/v0.1.0` (not the SDK)
/// is checked as a 0.1.0 plugin, and the real router delivers its body,
/// next to an SDK-built (0.2.0) plugin on another endpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_built_against_contract_0_1_0_loads_and_runs() {
    let wasm = test_plugin("contract-v1");
    let check = switchyard::plugins::cli::cli_check(&wasm, Default::default()).unwrap();
    assert_eq!(check["world"], "switchyard:plugin/plugin@0.1.0", "{check}");
    assert_eq!(check["exports"], json!(["configure", "handle"]));

    let rx = Receiver::ok().await;
    let mut config = base_config("");
    config += &endpoint(
        "old",
        &rx.url("/old"),
        r#"plugins = [ { name = "contract-v1" } ]"#,
    );
    config += &endpoint(
        "new",
        &rx.url("/new"),
        r#"plugins = [ { name = "misbehave", config = { mode = "replace", tag = "v2" } } ]"#,
    );
    config += &endpoint(
        "old-failing",
        &rx.url("/old-failing"),
        "retry_schedule = [\"100ms\", \"100ms\"]\nplugins = [ { name = \"contract-v1\", config = { fail = \"bad-input\" } } ]",
    );
    let router = Router::start(
        &config,
        &[
            ("contract-v1", wasm.clone()),
            ("misbehave", test_plugin("misbehave")),
        ],
    );
    let c = Client::new();
    let r = c
        .post_event(
            &router,
            "acct",
            &event("license.created", license_doc("lic-1", "ACTIVE")),
        )
        .await;
    assert_eq!(r.status, 202);
    let id = r.json()["data"]["id"].as_str().unwrap().to_string();
    let got = rx
        .wait_for(Duration::from_secs(15), "both deliveries", |g| g.len() >= 2)
        .await;
    let old = got
        .iter()
        .find(|r| r.path == "/old")
        .expect("the 0.1.0 plugin's delivery");
    assert_eq!(
        old.json(),
        json!({"contract": "0.1.0", "event": "license.created", "id": id})
    );
    let new = got
        .iter()
        .find(|r| r.path == "/new")
        .expect("the 0.2.0 plugin's delivery");
    assert_eq!(new.json()["tag"], "v2");
    // A 0.1.0 plugin's bad-input error is retried as before.
    let d = wait_delivery(&c, &router, &id, "old-failing", |d| d["status"] == "failed").await;
    assert_eq!(d["attemptCount"], 3, "{d}");
    assert!(
        d["lastError"].as_str().unwrap_or("").contains("bad_input"),
        "{d}"
    );
    assert!(
        router
            .log()
            .contains("contract 0.1.0 plugin saw license.created"),
        "the 0.1.0 plugin's log import works"
    );
}

/// `rejected` (0.2.0) fails the delivery after one attempt, with the
/// plugin's reason; `bad-input` on the same schedule is retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_error_fails_the_delivery_at_once() {
    let rx = Receiver::ok().await;
    let mut config = base_config("");
    let schedule = "retry_schedule = [\"200ms\", \"200ms\", \"200ms\"]\n";
    config += &endpoint(
        "rejected",
        &rx.url("/rejected"),
        &format!(
            "{schedule}plugins = [ {{ name = \"misbehave\", config = {{ mode = \"rejected\" }} }} ]"
        ),
    );
    config += &endpoint(
        "bad-input",
        &rx.url("/bad-input"),
        &format!(
            "{schedule}plugins = [ {{ name = \"misbehave\", config = {{ mode = \"error\" }} }} ]"
        ),
    );
    let router = Router::start(&config, &[("misbehave", test_plugin("misbehave"))]);
    let c = Client::new();
    let r = c
        .post_event(
            &router,
            "acct",
            &event("license.created", license_doc("lic-2", "ACTIVE")),
        )
        .await;
    assert_eq!(r.status, 202);
    let id = r.json()["data"]["id"].as_str().unwrap().to_string();
    let d = wait_delivery(&c, &router, &id, "rejected", |d| d["status"] == "failed").await;
    assert_eq!(d["attemptCount"], 1, "{d}");
    let err = d["lastError"].as_str().unwrap_or("");
    assert!(
        err.contains("rejected") && err.contains("misbehave rejects this event for good"),
        "{d}"
    );
    let d = wait_delivery(&c, &router, &id, "bad-input", |d| d["status"] == "failed").await;
    assert_eq!(d["attemptCount"], 4, "bad-input is retried: {d}");
    assert_eq!(rx.count(), 0, "nothing was sent");
}
