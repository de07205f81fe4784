//! Batching end to end (issue 13): the real router, the bundled `segment`
//! plugin (which merges, WIT 0.2.0) and a plugin-less endpoint (JSON
//! array), against real receivers on loopback.

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

fn delivery<'a>(ev: &'a Value, endpoint: &str) -> &'a Value {
    ev["data"]["attributes"]["deliveries"]
        .as_array()
        .and_then(|ds| ds.iter().find(|d| d["endpoint"] == endpoint))
        .unwrap_or_else(|| panic!("no delivery to {endpoint} in {ev}"))
}

async fn post(c: &Client, router: &Router, n: usize, tag: &str) -> Vec<String> {
    c.post_events(router, "acct", n, |i| {
        event(
            "license.validation.succeeded",
            license_doc(&format!("lic-{tag}-{i}"), "ACTIVE"),
        )
    })
    .await
}

fn segment_endpoint(id: &str, url: &str, batch: &str) -> String {
    endpoint(
        id,
        url,
        &format!(
            "batch = {batch}\nplugins = [ {{ name = \"segment\", config = {{ write_key = \"wk_test\" }} }} ]"
        ),
    )
}

/// A receiver answering its first request `status` with `body`, then 200,
/// and a router batching to it by 3 through the `amplitude` plugin with
/// `retry_schedule = [retry]`.
async fn amplitude_answering_first(
    status: u16,
    body: &'static [u8],
    retry: &str,
) -> (Receiver, Router) {
    let rx = Receiver::scripted(move |n, _| {
        let mut r = Reply::status(if n == 0 { status } else { 200 });
        if n == 0 {
            r.body = bytes::Bytes::from_static(body);
        }
        r
    })
    .await;
    let config = base_config("")
        + &endpoint(
            "amp",
            &rx.url("/2/httpapi"),
            &format!(
                "batch = {{ max_events = 3, max_wait = \"10s\" }}\nretry_schedule = [\"{retry}\"]\nplugins = [ {{ name = \"amplitude\", config = {{ api_key = \"amp_key_123\" }} }} ]"
            ),
        );
    let router = Router::start(&config, &[("amplitude", dist_plugin("amplitude"))]);
    (rx, router)
}

fn calls(r: &Received) -> Vec<Value> {
    r.json()["batch"].as_array().cloned().unwrap_or_default()
}

/// Count: 7 events, `max_events = 3` and a long `max_wait` → requests of
/// 3 and 3 calls at once (the 7th waits for its time). Time: 2 events,
/// `max_wait = 400ms` → one request of 2 calls after about 400 ms. Bytes:
/// 6 events, `max_bytes = "1500B"` → several requests, each under 1,500
/// bytes of calls. Every call carries its event's `messageId`; the events
/// API shows each attempt's batch id and size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_fills_by_count_by_bytes_and_by_time() {
    let rx = Receiver::ok().await;
    let mut config = base_config("");
    config += &segment_endpoint(
        "count",
        &rx.url("/count/v1/batch"),
        r#"{ max_events = 3, max_wait = "20s" }"#,
    );
    let router = Router::start(&config, &[("segment", dist_plugin("segment"))]);
    let c = Client::new();
    let ids = post(&c, &router, 7, "count").await;
    let got = rx
        .wait_for(Duration::from_secs(10), "two full batches", |g| {
            g.len() >= 2
        })
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rx.count(), 2, "the 7th event waits in the open batch");
    let mut seen: Vec<String> = Vec::new();
    for r in &got {
        assert_eq!(r.path, "/count/v1/batch");
        assert_eq!(r.header("authorization"), "Basic d2tfdGVzdDo=");
        let calls = calls(r);
        assert_eq!(calls.len(), 3, "{}", r.json());
        for call in calls {
            assert_eq!(call["type"], "track");
            seen.push(call["messageId"].as_str().unwrap().to_string());
        }
    }
    // One call per event (attempts run concurrently: the order inside a
    // batch is the order they joined it, not ingest order).
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 6, "six distinct events in two batches");
    assert!(seen.iter().all(|s| ids.contains(s)));
    // The events API: the events of each request name the same batch, of
    // size 3; the two requests are two batches.
    let batch_of = |ev: &Value| delivery(ev, "count")["attempts"][0]["batch"].clone();
    let first: Vec<String> = calls(&got[0])
        .iter()
        .map(|c| c["messageId"].as_str().unwrap().to_string())
        .collect();
    let second = calls(&got[1])[0]["messageId"].as_str().unwrap().to_string();
    let b0 = batch_of(&event_api(&c, &router, &first[0]).await);
    assert_eq!(b0["size"], 3, "{b0}");
    assert_eq!(batch_of(&event_api(&c, &router, &first[2]).await), b0);
    assert_ne!(
        batch_of(&event_api(&c, &router, &second).await)["id"],
        b0["id"]
    );
    drop(router);

    // By time and by bytes, on a fresh router.
    let rx = Receiver::ok().await;
    let mut config = base_config("");
    config += &segment_endpoint(
        "time",
        &rx.url("/time"),
        r#"{ max_events = 100, max_wait = "400ms" }"#,
    );
    config += &endpoint(
        "bytes",
        &rx.url("/bytes"),
        "batch = { max_events = 100, max_bytes = \"3000B\", max_wait = \"20s\" }",
    );
    let router = Router::start(&config, &[("segment", dist_plugin("segment"))]);
    let started = Instant::now();
    let ids = post(&c, &router, 2, "time").await;
    let got = rx
        .wait_for(Duration::from_secs(10), "the timed batch", |g| {
            g.iter().any(|r| r.path == "/time")
        })
        .await;
    let timed = got.iter().find(|r| r.path == "/time").unwrap();
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(380), "{waited:?}");
    let mut timed_ids: Vec<String> = calls(timed)
        .iter()
        .map(|c| c["messageId"].as_str().unwrap().to_string())
        .collect();
    timed_ids.sort();
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(timed_ids, expected, "both events in one request");
    // Plugin-less endpoint: a JSON array of default envelopes. With
    // `max_events = 100` and `max_wait = "20s"`, only `max_bytes` can close
    // a batch within the test: requests arrive, each within 3000 bytes.
    post(&c, &router, 6, "bytes").await;
    let got = rx
        .wait_for(Duration::from_secs(8), "byte-closed batches", |g| {
            g.iter().any(|r| r.path == "/bytes")
        })
        .await;
    assert!(started.elapsed() < Duration::from_secs(15));
    for r in got.iter().filter(|r| r.path == "/bytes") {
        let arr = r.json().as_array().cloned().unwrap_or_default();
        assert!(!arr.is_empty(), "{}", String::from_utf8_lossy(&r.body));
        // The bodies (≤ 3000 bytes), commas and brackets.
        assert!(
            r.body.len() <= 3000 + arr.len() + 1,
            "{} bytes",
            r.body.len()
        );
        for e in &arr {
            assert_eq!(e["data"]["type"], "webhook-events", "{e}");
        }
    }
}

/// 429 with `Retry-After: 1`: the batch's deliveries wait at least a
/// second, then go again (together), with the same `messageId`s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_with_retry_after_is_honoured_for_the_whole_batch() {
    let rx = Receiver::scripted(|n, _| {
        if n == 0 {
            let mut r = Reply::status(429);
            r.headers.push(("retry-after".into(), "1".into()));
            r
        } else {
            Reply::status(200)
        }
    })
    .await;
    let mut config = base_config("");
    config += &segment_endpoint(
        "seg",
        &rx.url("/v1/batch"),
        r#"{ max_events = 3, max_wait = "200ms" }"#,
    );
    config += "retry_schedule = [\"50ms\", \"50ms\"]\n";
    let router = Router::start(&config, &[("segment", dist_plugin("segment"))]);
    let c = Client::new();
    let ids = post(&c, &router, 3, "429").await;
    let got = rx
        .wait_for(Duration::from_secs(15), "the retried batch", |g| {
            g.iter().map(|r| calls(r).len()).sum::<usize>() >= 6
        })
        .await;
    let first: Vec<Value> = calls(&got[0])
        .iter()
        .map(|c| c["messageId"].clone())
        .collect();
    assert_eq!(first.len(), 3);
    let mut retried: Vec<Value> = got[1..]
        .iter()
        .flat_map(|r| calls(r))
        .map(|c| c["messageId"].clone())
        .collect();
    retried.sort_by_key(|v| v.to_string());
    let mut expected: Vec<Value> = ids.iter().map(|i| json!(i)).collect();
    expected.sort_by_key(|v| v.to_string());
    assert_eq!(retried, expected, "same dedupe keys on the retry");
    let gap = got[1].at.duration_since(got[0].at);
    assert!(
        gap >= Duration::from_millis(950),
        "Retry-After honoured: {gap:?}"
    );
    let ev = event_api(&c, &router, &ids[0]).await;
    let d = delivery(&ev, "seg");
    assert_eq!(d["status"], "delivered", "{d}");
    assert_eq!(d["attempts"][0]["status"], 429);
    assert_eq!(d["attempts"][0]["batch"]["size"], 3);
}

/// 413: the receiver takes at most 2 calls per request. A batch of 4 is
/// split into halves that go through; each delivery records the attempt
/// of the half it went in (batch size 2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_413_splits_the_batch_and_sends_the_halves() {
    let rx = Receiver::scripted(|_, r| {
        if calls(r).len() > 2 {
            Reply::status(413)
        } else {
            Reply::status(200)
        }
    })
    .await;
    let mut config = base_config("");
    config += &segment_endpoint(
        "seg",
        &rx.url("/v1/batch"),
        r#"{ max_events = 4, max_wait = "10s" }"#,
    );
    let router = Router::start(&config, &[("segment", dist_plugin("segment"))]);
    let c = Client::new();
    let ids = post(&c, &router, 4, "413").await;
    let got = rx
        .wait_for(Duration::from_secs(15), "the batch and its halves", |g| {
            g.len() >= 3
        })
        .await;
    let sizes: Vec<usize> = got.iter().map(|r| calls(r).len()).collect();
    assert_eq!(sizes, vec![4, 2, 2], "one 413, then the halves");
    let mut delivered: Vec<String> = got[1..]
        .iter()
        .flat_map(|r| calls(r))
        .map(|c| c["messageId"].as_str().unwrap().to_string())
        .collect();
    delivered.sort();
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(delivered, expected);
    for id in &ids {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let ev = event_api(&c, &router, id).await;
            let d = delivery(&ev, "seg").clone();
            if d["status"] == "delivered" {
                assert_eq!(d["attemptCount"], 1, "{d}");
                assert_eq!(d["attempts"][0]["batch"]["size"], 2, "{d}");
                break;
            }
            assert!(Instant::now() < deadline, "{d}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Amplitude's partial 400: the answer names event 1 of the request as
/// invalid. That delivery fails for good with the reason; the other two
/// are sent again at once and delivered, with the same `insert_id`s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_amplitude_partial_400_fails_only_the_named_events() {
    let (rx, router) = amplitude_answering_first(400, br#"{"code":400,"error":"Request missing required field","events_with_invalid_fields":{"user_id":[1]},"events_with_missing_fields":{}}"#, "10s").await;
    let c = Client::new();
    let fixture: Value = serde_json::from_str(
        &std::fs::read_to_string(format!(
            "{}/../examples/events/license.validation.succeeded.json",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap(),
    )
    .unwrap();
    for _ in 0..3 {
        let mut ev = fixture.clone();
        ev.as_object_mut().unwrap().remove("id");
        let r = c.post_event(&router, "acct", &ev).await;
        assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    }
    let got = rx
        .wait_for(Duration::from_secs(15), "the batch and the resend", |g| {
            g.len() >= 2
        })
        .await;
    let events = |r: &Received| r.json()["events"].as_array().cloned().unwrap_or_default();
    let first = events(&got[0]);
    assert_eq!(first.len(), 3);
    assert_eq!(got[0].json()["api_key"], "amp_key_123");
    let refused = first[1]["insert_id"].as_str().unwrap().to_string();
    let resent: Vec<Value> = events(&got[1])
        .iter()
        .map(|e| e["insert_id"].clone())
        .collect();
    assert_eq!(
        resent,
        vec![first[0]["insert_id"].clone(), first[2]["insert_id"].clone()],
        "the others, resent at once with the same insert_ids"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let ev = event_api(&c, &router, &refused).await;
        let d = delivery(&ev, "amp").clone();
        if d["status"] == "failed" {
            assert_eq!(d["attemptCount"], 1, "not retried: {d}");
            let err = d["lastError"].as_str().unwrap_or("");
            assert!(err.contains("invalid field `user_id`"), "{d}");
            break;
        }
        assert!(Instant::now() < deadline, "{d}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rx.count(), 2, "no third request");
}

/// `rate_limit = "20/s"` on an unbatched endpoint and on a batched one
/// (`max_events = 1`, so every event is its own request): 20 events take
/// about a second to go out on each (a burst of 2, then one per 50 ms), the
/// unlimited control endpoint gets them at once, and `/metrics` counts the
/// delayed requests and the batches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_paces_batched_and_unbatched_endpoints() {
    let rx = Receiver::ok().await;
    let mut config = base_config("");
    config += &endpoint("slow", &rx.url("/slow"), "rate_limit = \"20/s\"");
    config += &segment_endpoint(
        "slow-batched",
        &rx.url("/slow-batched"),
        r#"{ max_events = 1, max_wait = "10ms" }"#,
    );
    config += "rate_limit = \"20/s\"\n";
    config += &endpoint("fast", &rx.url("/fast"), "");
    let router = Router::start(&config, &[("segment", dist_plugin("segment"))]);
    let c = Client::new();
    post(&c, &router, 20, "rate").await;
    let got = rx
        .wait_for(Duration::from_secs(20), "all 60 requests", |g| {
            g.len() >= 60
        })
        .await;
    let span = |path: &str| {
        let at: Vec<Instant> = got
            .iter()
            .filter(|r| r.path == path)
            .map(|r| r.at)
            .collect();
        assert_eq!(at.len(), 20, "{path}");
        *at.iter().max().unwrap() - *at.iter().min().unwrap()
    };
    let (slow, batched, fast) = (span("/slow"), span("/slow-batched"), span("/fast"));
    assert!(
        slow >= Duration::from_millis(800),
        "unbatched paced: {slow:?}"
    );
    assert!(
        batched >= Duration::from_millis(800),
        "batched paced: {batched:?}"
    );
    assert!(fast < slow, "control not paced: {fast:?} vs {slow:?}");
    let metrics = String::from_utf8_lossy(
        &c.request("GET", &router.url("/metrics"), &[], "")
            .await
            .body,
    )
    .to_string();
    let value = |name: &str, ep: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(name) && l.contains(&format!("endpoint=\"{ep}\"")))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    assert!(
        value("switchyard_rate_limited_requests_total", "slow") >= 10.0,
        "{metrics}"
    );
    assert!(value("switchyard_rate_limited_requests_total", "slow-batched") >= 10.0);
    assert_eq!(value("switchyard_rate_limited_requests_total", "fast"), 0.0);
    assert_eq!(
        value("switchyard_batch_requests_total", "slow-batched"),
        20.0
    );
    assert_eq!(
        value("switchyard_batched_deliveries_total", "slow-batched"),
        20.0
    );
    eprintln!(
        "FIGURES rate_limit 20/s: 20 requests over {slow:?} (unbatched), {batched:?} (batched), {fast:?} unlimited"
    );
}

/// kill -9 with events waiting in an open batch, then with a batch in
/// flight (the receiver holds the request): after each restart every
/// acknowledged event is delivered (dedupe keys may repeat, none missing),
/// and the batch in flight is noted in its events' attempt logs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_no_batched_event() {
    let rx = Receiver::scripted(|n, _| {
        let mut r = Reply::status(200);
        if n == 0 {
            // The first request (case 2) hangs until the router is killed.
            r.delay = Duration::from_secs(30);
        }
        r
    })
    .await;
    let mut config = base_config("");
    config += &segment_endpoint(
        "seg",
        &rx.url("/v1/batch"),
        r#"{ max_events = 100, max_wait = "1500ms" }"#,
    );
    let mut router = Router::start(&config, &[("segment", dist_plugin("segment"))]);
    let c = Client::new();

    // 1. Events waiting in an open batch (max_wait not reached): crash.
    let open = post(&c, &router, 5, "open").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rx.count(), 0, "still in the open batch");
    router.kill9();
    router.spawn();

    // 2. Those five go again in a batch whose request hangs (the first
    // request the receiver gets); more events join; crash while in flight.
    let got = rx
        .wait_for(Duration::from_secs(15), "the hanging request", |g| {
            !g.is_empty()
        })
        .await;
    assert_eq!(calls(&got[0]).len(), 5);
    let in_flight = post(&c, &router, 3, "flight").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    router.kill9();
    router.spawn();

    // After the restart everything acknowledged arrives (answered 200).
    let expected: Vec<String> = open.iter().chain(&in_flight).cloned().collect();
    let got = rx
        .wait_for(Duration::from_secs(20), "every acknowledged event", |g| {
            let seen: std::collections::HashSet<String> = g[1..]
                .iter()
                .flat_map(|r| calls(r))
                .filter_map(|c| c["messageId"].as_str().map(str::to_string))
                .collect();
            expected.iter().all(|id| seen.contains(id))
        })
        .await;
    let delivered: usize = got[1..].iter().map(|r| calls(r).len()).sum();
    // The request in flight at the crash was recorded before it went out:
    // each of its five events has an attempt naming that request (its
    // `webhook-id`) and saying the receiver may have received it, then
    // the successful one.
    let hung = got[0].header("webhook-id").to_string();
    for id in &open {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let ev = event_api(&c, &router, id).await;
            let d = delivery(&ev, "seg").clone();
            let attempts = d["attempts"].as_array().cloned().unwrap_or_default();
            let noted = attempts.iter().find(|a| a["batch"]["id"] == hung.as_str());
            // On PostgreSQL a live node notes a dead node's batch once the
            // node is seen dead (3 s), maybe after the event went again.
            if let (Some(noted), "delivered") = (noted, d["status"].as_str().unwrap_or("")) {
                assert_eq!(noted["batch"]["size"], 5, "{d}");
                let err = noted["error"].as_str().unwrap_or("");
                assert!(err.contains("was in flight"), "{d}");
                assert!(
                    attempts.iter().any(|a| a["status"] == 200),
                    "then delivered: {d}"
                );
                break;
            }
            assert!(
                Instant::now() < deadline,
                "delivered, with an attempt of batch {hung}: {d}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    eprintln!(
        "FIGURES kill -9 batching: {} acknowledged, {} calls received after the crashes ({} requests), none missing",
        expected.len(),
        delivered,
        got.len() - 1
    );
}

/// Amplitude's 429 naming throttled events (`throttled_events: [1]`, no
/// `Retry-After`): events 0 and 2 are sent again at once with the same
/// `insert_id`s; event 1 waits 30 s (Amplitude's advice), not the 1 s of
/// the endpoint's schedule, and its log shows the 429.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_amplitude_429_pauses_only_the_throttled_events_for_30s() {
    let (rx, router) = amplitude_answering_first(429, br#"{"code":429,"error":"Too many requests for some devices and users","eps_threshold":30,"throttled_devices":{},"throttled_users":{"lic-t-1":31},"throttled_events":[1]}"#, "1s").await;
    let c = Client::new();
    let ids = post(&c, &router, 3, "t").await;
    let got = rx
        .wait_for(Duration::from_secs(15), "the batch and the resend", |g| {
            g.len() >= 2
        })
        .await;
    let events = |r: &Received| r.json()["events"].as_array().cloned().unwrap_or_default();
    let first = events(&got[0]);
    assert_eq!(first.len(), 3);
    let resent: Vec<Value> = events(&got[1])
        .iter()
        .map(|e| e["insert_id"].clone())
        .collect();
    assert_eq!(
        resent,
        vec![first[0]["insert_id"].clone(), first[2]["insert_id"].clone()],
        "the unthrottled events, resent at once with the same insert_ids"
    );
    // The throttled one: which of our events it is, by its insert_id.
    let throttled_insert = first[1]["insert_id"].as_str().unwrap().to_string();
    let mut throttled = None;
    for id in &ids {
        let ev = event_api(&c, &router, id).await;
        let d = delivery(&ev, "amp").clone();
        if d["status"] == "failing" {
            throttled = Some(d);
        }
    }
    let d = throttled.expect("one delivery waits");
    assert_eq!(d["lastStatus"], 429, "{d}");
    assert!(
        throttled_insert.len() > 8,
        "the plugin wrote an insert_id: {throttled_insert}"
    );
    let next = time::OffsetDateTime::parse(
        d["nextAttempt"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let wait = (next - time::OffsetDateTime::now_utc()).as_seconds_f64();
    assert!(
        (20.0..=31.0).contains(&wait),
        "waits ~30 s, not 1 s: {wait} {d}"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(rx.count(), 2, "nothing more within the schedule's 1 s");
}

/// `batch` and `rateLimit` through the endpoints API: set on create, shown,
/// validated with a pointer, kept across a restart, and removed by PATCH
/// `null`. A plugin-less batched endpoint sends a JSON array.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_and_rate_limit_are_set_through_the_api_and_persist() {
    let rx = Receiver::ok().await;
    let mut router = Router::start(&base_config(""), &[]);
    let c = Client::new();
    const BASE: &str = "/v1/accounts/acct/webhook-endpoints";
    let doc = |attrs: Value| json!({"data": {"type": "webhook-endpoints", "id": "an", "attributes": attrs}});
    let r = api(
        &c,
        &router,
        "POST",
        BASE,
        TOKEN,
        Some(doc(
            json!({"url": rx.url("/an"), "batch": {"maxEvents": 0}}),
        )),
    )
    .await;
    assert_eq!(r.status, 422, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        r.json()["errors"][0]["source"]["pointer"],
        "/data/attributes/batch/maxEvents"
    );
    let r = api(
        &c,
        &router,
        "POST",
        BASE,
        TOKEN,
        Some(doc(json!({"url": rx.url("/an"), "rateLimit": "fast"}))),
    )
    .await;
    assert_eq!(r.status, 422);
    assert_eq!(
        r.json()["errors"][0]["source"]["pointer"],
        "/data/attributes/rateLimit"
    );
    let r = api(
        &c,
        &router,
        "POST",
        BASE,
        TOKEN,
        Some(doc(json!({
            "url": rx.url("/an"),
            "batch": {"maxEvents": 3, "maxBytes": "450KB", "maxWait": "20s"},
            "rateLimit": "50/m",
        }))),
    )
    .await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let attrs = r.json()["data"]["attributes"].clone();
    assert_eq!(
        attrs["batch"],
        json!({"maxEvents": 3, "maxBytes": 450000, "maxWait": "20s"})
    );
    assert_eq!(attrs["rateLimit"], "50/m");

    // Kept across a restart, and in force: 3 events → one JSON array.
    router.stop();
    router.spawn();
    let shown = api(&c, &router, "GET", &format!("{BASE}/an"), TOKEN, None)
        .await
        .json();
    assert_eq!(shown["data"]["attributes"]["batch"]["maxEvents"], 3);
    assert_eq!(shown["data"]["attributes"]["rateLimit"], "50/m");
    post(&c, &router, 3, "api").await;
    let got = rx
        .wait_for(Duration::from_secs(10), "one batch of three", |g| {
            !g.is_empty()
        })
        .await;
    let batch = got[0].json();
    assert_eq!(batch.as_array().map(|a| a.len()), Some(3), "{batch}");

    // PATCH null: no batching, no limit; the next event goes alone at once.
    let r = api(
        &c,
        &router,
        "PATCH",
        &format!("{BASE}/an"),
        TOKEN,
        Some(json!({"data": {"type": "webhook-endpoints", "attributes": {"batch": null, "rateLimit": null}}})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["data"]["attributes"]["batch"], Value::Null);
    assert_eq!(r.json()["data"]["attributes"]["rateLimit"], Value::Null);
    post(&c, &router, 1, "single").await;
    let got = rx
        .wait_for(Duration::from_secs(5), "the unbatched event", |g| {
            g.len() >= 2
        })
        .await;
    assert!(got[1].json().is_object(), "one envelope, not an array");
}

/// A reload that lifts `rate_limit` applies at once to the deliveries the
/// router has already taken into memory, not only to later ones: 30 events
/// at 2/s would take 15 s; after the limit is removed from `router.toml`
/// the rest arrive within a few seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_lifts_the_rate_limit_applies_to_deliveries_already_taken() {
    let rx = Receiver::ok().await;
    let config = base_config("") + &endpoint("slow", &rx.url("/slow"), "rate_limit = \"2/s\"");
    let router = Router::start(&config, &[]);
    let c = Client::new();
    post(&c, &router, 30, "reload").await;
    rx.wait_for(Duration::from_secs(10), "the first paced requests", |g| {
        g.len() >= 2
    })
    .await;
    let written = std::fs::read_to_string(&router.config_path).unwrap();
    assert!(written.contains("rate_limit = \"2/s\""));
    std::fs::write(
        &router.config_path,
        written.replace("rate_limit = \"2/s\"", ""),
    )
    .unwrap();
    let lifted = Instant::now();
    rx.wait_for(Duration::from_secs(6), "the other events, unpaced", |g| {
        g.len() >= 30
    })
    .await;
    eprintln!(
        "FIGURES rate_limit lifted by a reload: the rest arrived {:?} after the edit",
        lifted.elapsed()
    );
}
