//! Hostile input.

use super::*;

pub(super) async fn raw_exchange(addr: SocketAddr, request: &[u8]) -> (String, Duration) {
    let start = Instant::now();
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let _ = s.write_all(request).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    (String::from_utf8_lossy(&out).to_string(), start.elapsed())
}

/// Hand-made hostile bodies and requests, each answered with a 4xx JSON:API
/// error, the process unharmed and nothing stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_is_refused() {
    let rx = Receiver::ok().await;
    let config = base_config("max_body = \"64KiB\"\nheader_timeout = \"1s\"")
        + &endpoint("e", &rx.url("/e"), "");
    let mut router = Router::start(&config, &[]);
    let c = Client::new();
    let url = router.events_url("acct");
    let a = auth();
    let ok_headers = [(a.0, a.1.as_str()), ("content-type", "application/json")];
    let deep = format!(
        "{{\"event\":\"a.b\",\"payload\":{{\"x\":{}{}}}}}",
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    let deep_obj = format!(
        "{{\"event\":\"a.b\",\"payload\":{}{}}}",
        "{\"a\":".repeat(10_000),
        "}".repeat(10_000)
    );
    let under = json!({"event": "user.created", "payload": {"data": {"id": "under", "s": "u".repeat(60_000)}}}).to_string();
    let over = json!({"event": "user.created", "payload": {"data": {"s": "o".repeat(70_000)}}})
        .to_string();
    let huge_type = json!({"event": "a".repeat(100_000), "payload": {}}).to_string();
    let mut invalid_utf8 = b"{\"event\":\"user.created\",\"payload\":{\"s\":\"".to_vec();
    invalid_utf8.extend_from_slice(b"\xff\xfe\xc3\x28");
    invalid_utf8.extend_from_slice(b"\"}}");
    let cases: Vec<(&str, Vec<u8>, Vec<(&str, &str)>, u16)> = vec![
        (
            "10,000 nested arrays",
            deep.into_bytes(),
            ok_headers.to_vec(),
            400,
        ),
        (
            "10,000 nested objects",
            deep_obj.into_bytes(),
            ok_headers.to_vec(),
            400,
        ),
        (
            "huge string over the limit",
            over.into_bytes(),
            ok_headers.to_vec(),
            413,
        ),
        (
            "100 KB event type",
            huge_type.into_bytes(),
            ok_headers.to_vec(),
            413,
        ),
        ("invalid UTF-8", invalid_utf8, ok_headers.to_vec(), 400),
        (
            "lone surrogate escape",
            br#"{"event":"user.created","payload":{"s":"\ud800"}}"#.to_vec(),
            ok_headers.to_vec(),
            400,
        ),
        (
            "duplicate top-level event",
            br#"{"event":"user.created","event":"license.created","payload":{}}"#.to_vec(),
            ok_headers.to_vec(),
            400,
        ),
        (
            "duplicate top-level payload",
            br#"{"event":"user.created","payload":{},"payload":{"a":1}}"#.to_vec(),
            ok_headers.to_vec(),
            400,
        ),
        (
            "number out of range",
            br#"{"event":"user.created","payload":{"n":1e999}}"#.to_vec(),
            ok_headers.to_vec(),
            400,
        ),
        (
            "negative number out of range",
            br#"{"event":"user.created","payload":{"n":-1e400}}"#.to_vec(),
            ok_headers.to_vec(),
            400,
        ),
        (
            "event type a number",
            br#"{"event":1e999,"payload":{}}"#.to_vec(),
            ok_headers.to_vec(),
            400,
        ),
        (
            "created out of range",
            br#"{"event":"user.created","payload":{},"created":"99999-01-01T00:00:00Z"}"#.to_vec(),
            ok_headers.to_vec(),
            400,
        ),
        (
            "NUL bytes",
            b"{\"event\":\"user.created\0\",\"payload\":{}}".to_vec(),
            ok_headers.to_vec(),
            400,
        ),
        ("empty body", Vec::new(), ok_headers.to_vec(), 400),
        (
            "text/plain",
            under.clone().into_bytes(),
            vec![(a.0, a.1.as_str()), ("content-type", "text/plain")],
            415,
        ),
        (
            "no content type",
            under.clone().into_bytes(),
            vec![(a.0, a.1.as_str())],
            415,
        ),
        (
            "form content type",
            under.clone().into_bytes(),
            vec![
                (a.0, a.1.as_str()),
                ("content-type", "application/x-www-form-urlencoded"),
            ],
            415,
        ),
        (
            "json look-alike",
            under.clone().into_bytes(),
            vec![(a.0, a.1.as_str()), ("content-type", "application/jsonx")],
            415,
        ),
    ];
    let mut rows = Vec::new();
    for (name, body, headers, status) in cases {
        let t = Instant::now();
        let r = c.request("POST", &url, &headers, body).await;
        assert_jsonapi_error(&r, status, name);
        rows.push(format!("{name}={status} in {:?}", t.elapsed()));
    }
    // Under the limit: a 60 KB string is accepted.
    let r = c.request("POST", &url, &ok_headers, under).await;
    assert_eq!(r.status, 202, "a 60 KB string under the 64 KiB limit");

    // Chunked body over the limit: 413, whatever the chunking.
    let mut req = format!(
        "POST /v1/accounts/acct/events HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {TOKEN}\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
    )
    .into_bytes();
    req.extend_from_slice(b"1a\r\n{\"event\":\"user.created\",\"p\r\n");
    for _ in 0..80 {
        req.extend_from_slice(format!("400\r\n{}\r\n", "x".repeat(1024)).as_bytes());
    }
    req.extend_from_slice(b"0\r\n\r\n");
    let (resp, _) = raw_exchange(router.addr, &req).await;
    assert!(
        resp.starts_with("HTTP/1.1 413"),
        "chunked over the limit: {resp:.200}"
    );
    assert!(resp.contains("\"errors\""), "{resp:.400}");
    rows.push("chunked 80 KiB=413".into());
    // A lying Content-Length (larger than the limit) is refused before reading.
    let req = format!(
        "POST /v1/accounts/acct/events HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {TOKEN}\r\ncontent-type: application/json\r\ncontent-length: 999999999999\r\n\r\n{{"
    );
    let (resp, t) = raw_exchange(router.addr, req.as_bytes()).await;
    assert!(resp.starts_with("HTTP/1.1 413"), "{resp:.200}");
    rows.push(format!("content-length 1 TB=413 in {t:?}"));

    // Slowloris: headers trickled one byte every 200 ms, forever. The
    // connection must be dropped after the 1 s header timeout.
    let start = Instant::now();
    let mut s = tokio::net::TcpStream::connect(router.addr).await.unwrap();
    s.write_all(b"POST /v1/accounts/acct/events HTTP/1.1\r\n")
        .await
        .unwrap();
    let mut closed_after = None;
    for i in 0..100 {
        if s.write_all(b"x-slow-header-").await.is_err()
            || s.write_all(format!("{i}: a\r\n").as_bytes()).await.is_err()
        {
            closed_after = Some(start.elapsed());
            break;
        }
        let mut b = [0u8; 256];
        match tokio::time::timeout(Duration::from_millis(200), s.read(&mut b)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed_after = Some(start.elapsed());
                break;
            }
            Ok(Ok(_)) => {
                // A 408 answer or the like, then the close.
                closed_after = Some(start.elapsed());
                break;
            }
            Err(_) => {}
        }
    }
    let closed_after = closed_after.expect("slowloris connection still open after 20 s");
    assert!(
        closed_after < Duration::from_secs(4),
        "slowloris kept for {closed_after:?}"
    );
    rows.push(format!("slowloris dropped after {closed_after:?}"));

    // The process is unharmed and serves a good event; nothing refused was stored.
    assert!(alive(&mut router));
    let good = c
        .post_event(
            &router,
            "acct",
            &event("user.created", json!({"data": {"id": "good"}})),
        )
        .await;
    assert_eq!(good.status, 202);
    rx.wait_for(Duration::from_secs(5), "under + good", |g| g.len() >= 2)
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        rx.count(),
        2,
        "only the two valid events were stored and delivered"
    );
    let list = c
        .request(
            "GET",
            &router.url("/v1/accounts/acct/webhook-events"),
            &[(a.0, &a.1)],
            "",
        )
        .await;
    assert_eq!(list.json()["data"].as_array().map(|v| v.len()), Some(2));
    eprintln!("FIGURES hostile_input_is_refused: {}", rows.join("; "));
}

/// 10,000 idle connections (some with half a request line) while other
/// clients keep sending events: every event is accepted and delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_idle_connections() {
    let _g = heavy();
    let (soft, hard) = nofile_limits();
    eprintln!("RLIMIT_NOFILE of the test process: soft={soft} hard={hard}");
    let rx = Receiver::ok().await;
    // All clients are on 127.0.0.1 here: lift the per-client cap (and the
    // total) so the test measures holding 10,000 connections.
    let config = base_config(
        "header_timeout = \"30s\"\nmax_connections = 20000\nmax_connections_per_client = 20000",
    ) + &endpoint("e", &rx.url("/e"), "");
    let mut router = Router::start(&config, &[]);
    let router_limit =
        std::fs::read_to_string(format!("/proc/{}/limits", pid(&router))).unwrap_or_default();
    let router_nofile = router_limit
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap_or("")
        .to_string();
    let target = 10_000usize;
    if soft < target as u64 + 500 {
        eprintln!(
            "*** the soft RLIMIT_NOFILE ({soft}) is under 10,500; opening as many as it allows ***"
        );
    }
    let n = target.min(soft.saturating_sub(500) as usize);
    let addr = router.addr;
    let mut idle = Vec::with_capacity(n);
    let t = Instant::now();
    for i in 0..n {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
            Ok(mut s) => {
                if i % 10 == 0 {
                    let _ = s.write_all(b"POST /v1/accounts/acct/events HTTP/1.1\r\n");
                }
                idle.push(s);
            }
            Err(e) => panic!("connection {i} failed: {e}"),
        }
    }
    let opened_in = t.elapsed();
    let c = Client::new();
    let mut lat = Vec::new();
    for i in 0..200 {
        let t = Instant::now();
        let r = c
            .post_event(
                &router,
                "acct",
                &event("user.created", json!({"data": {"id": format!("busy{i}")}})),
            )
            .await;
        assert_eq!(r.status, 202);
        lat.push(t.elapsed());
    }
    rx.wait_for(
        Duration::from_secs(20),
        "200 events with 10,000 idle connections open",
        |g| counts_by_payload(g).len() >= 200,
    )
    .await;
    lat.sort();
    // The idle ones are still there (header timeout 30 s), the router lives.
    let mut still_open = 0;
    for s in idle.iter_mut().take(100) {
        s.set_nonblocking(true).unwrap();
        let mut b = [0u8; 1];
        match s.read(&mut b) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => still_open += 1,
            _ => {}
        }
    }
    assert!(alive(&mut router));
    let (rss, hwm) = rss_kib(pid(&router));
    drop(idle);
    eprintln!(
        "FIGURES ten_thousand_idle_connections: idle={n} opened in {opened_in:?} (1 in 10 with half a request line); router {router_nofile:?}; \
         200 events accepted and delivered meanwhile, ingest p50={:?} p99={:?}; of 100 sampled idle connections {still_open} still open; router RSS={} MiB peak={} MiB",
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        rss >> 10,
        hwm >> 10
    );
}

fn nofile_limits() -> (u64, u64) {
    let s = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let line = s
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap_or("");
    let nums: Vec<u64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    (
        nums.first().copied().unwrap_or(0),
        nums.get(1).copied().unwrap_or(0),
    )
}
