//! Soak: restart with a backlog (not in CI).

use super::*;

/// `SWITCHYARD_BACKLOG` (default 1,000,000) deliveries pending (the receiver
/// accepts connections but never answers; one attempt at a time), then
/// kill -9, the receiver comes back, restart: time to first delivery and
/// peak RSS of the restarted router, and the drain rate for 30 s.
/// `cargo test --release -p switchyard --test it reliability::soak::restart_with_backlog -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "soak: minutes; run by host/benches/soak.sh"]
async fn restart_with_backlog() {
    let _g = heavy();
    let n: usize = std::env::var("SWITCHYARD_BACKLOG")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    // A black hole: accepts, reads, never answers.
    let hole = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = hole.local_addr().unwrap().port();
    let hole_task = tokio::spawn(async move {
        let mut keep = Vec::new();
        while let Ok((s, _)) = hole.accept().await {
            keep.push(s);
        }
    });
    let config = base_config("")
        + &endpoint(
            "e",
            &format!("http://127.0.0.1:{port}/e"),
            "timeout = \"5m\"\nmax_in_flight = 1\nretry_schedule = [\"1s\"]",
        );
    let mut router = Router::start(&config, &[]);
    pin_port(&router, &config);
    let url = router.events_url("acct");
    let t = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let (url, next) = (url.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let c = Client::new();
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= n {
                    break;
                }
                let body =
                    json!({"event": "user.created", "payload": {"data": {"id": format!("bk{i}")}}})
                        .to_string();
                let r = c
                    .request(
                        "POST",
                        &url,
                        &[
                            ("authorization", "Bearer test-token-aaaa-0001"),
                            ("content-type", "application/json"),
                        ],
                        body,
                    )
                    .await;
                assert_eq!(r.status, 202);
            }
        }));
    }
    let mut last = Instant::now();
    for task in tasks {
        while !task.is_finished() {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if last.elapsed() > Duration::from_secs(15) {
                last = Instant::now();
                let (rss, _) = rss_kib(pid(&router));
                eprintln!(
                    "backlog: {} / {n} ingested after {:?}, RSS {} MiB",
                    next.load(Ordering::SeqCst).min(n),
                    t.elapsed(),
                    rss >> 10
                );
            }
        }
        task.await.unwrap();
    }
    let ingest_time = t.elapsed();
    let (_, hwm_ingest) = rss_kib(pid(&router));
    router.kill9();
    let store_bytes = dir_size(&router.dir.join("data"));
    hole_task.abort();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rx = Receiver::on(format!("127.0.0.1:{port}").parse().unwrap(), |_, _| {
        Reply::status(200)
    })
    .await;
    // Restart with the default concurrency (32 in flight) to see the drain rate.
    let restart_config = base_config("")
        + &endpoint(
            "e",
            &format!("http://127.0.0.1:{port}/e"),
            "retry_schedule = [\"1s\"]",
        );
    pin_port(&router, &restart_config);
    let spawn_at = Instant::now();
    router.spawn();
    let listening = spawn_at.elapsed();
    let deadline = Instant::now() + Duration::from_secs(600);
    while rx.count() == 0 {
        assert!(
            Instant::now() < deadline,
            "no delivery within 10 minutes of the restart"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let first = spawn_at.elapsed();
    let mut peak = 0;
    let drain_start = Instant::now();
    while drain_start.elapsed() < Duration::from_secs(30) {
        peak = peak.max(rss_kib(pid(&router)).1);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let drained = rx.count();
    eprintln!(
        "FIGURES restart_with_backlog: pending={n} ingested in {ingest_time:?} ({:.0}/s), store {} MiB, RSS peak while ingesting {} MiB | \
         restart: listening after {listening:?}, first delivery after {first:?}; peak RSS of the restarted router {} MiB; \
         drained {drained} in 30 s ({:.0}/s, max_in_flight 32)",
        n as f64 / ingest_time.as_secs_f64(),
        store_bytes >> 20,
        hwm_ingest >> 10,
        peak >> 10,
        drained as f64 / 30.0,
    );
}

fn dir_size(p: &std::path::Path) -> u64 {
    let mut n = 0;
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            let m = e.metadata().unwrap();
            n += if m.is_dir() {
                dir_size(&e.path())
            } else {
                m.len()
            };
        }
    }
    n
}
