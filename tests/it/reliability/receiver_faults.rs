//! Receiver faults.

use super::*;

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
