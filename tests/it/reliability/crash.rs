//! Crash rounds.

use super::*;

/// `SWITCHYARD_CRASH_ROUNDS` (default 5; the soak uses 25) rounds of kill -9
/// at a random moment under sustained ingest and delivery load, restarting
/// each time. At the end every acknowledged event has reached every
/// subscribed endpoint; duplicates and recovery times are printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn crash_rounds() {
    let _g = heavy();
    let rounds: usize = std::env::var("SWITCHYARD_CRASH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let a = Receiver::ok().await;
    let b = Receiver::scripted(|_, _| Reply {
        delay: Duration::from_millis(3),
        ..Reply::status(200)
    })
    .await;
    let config = base_config("")
        + &endpoint(
            "a",
            &a.url("/a"),
            "retry_schedule = [\"200ms\", \"200ms\", \"200ms\", \"500ms\", \"1s\"]",
        )
        + &endpoint(
            "b",
            &b.url("/b"),
            "subscriptions = [\"license.*\"]\nretry_schedule = [\"200ms\", \"200ms\", \"500ms\", \"1s\"]",
        );
    let mut router = Router::start(&config, &[]);
    pin_port(&router, &config);
    let url = router.events_url("acct");
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::<(String, bool)>::new()));
    let refused = Arc::new(AtomicUsize::new(0));
    let mut producers = Vec::new();
    // 8 producers post as fast as the router takes them; a request that
    // fails (router down) is retried with the same Idempotency-Key.
    for w in 0..8 {
        let (url, acked, stop, refused) =
            (url.clone(), acked.clone(), stop.clone(), refused.clone());
        producers.push(tokio::spawn(async move {
            let c = Client::new();
            let mut i = 0usize;
            while !stop.load(Ordering::SeqCst) {
                let license = i % 2 == 0;
                let kind = if license {
                    "license.created"
                } else {
                    "user.created"
                };
                let key = format!("w{w}-{i}");
                let tries = post_until_acked(&c, &url, kind, &key, Duration::from_millis(20)).await;
                refused.fetch_add(tries as usize, Ordering::Relaxed);
                acked.lock().unwrap().push((key, license));
                i += 1;
            }
        }));
    }
    let mut recoveries = Vec::new();
    let mut startups = Vec::new();
    let mut acked_at_kill = Vec::new();
    for round in 0..rounds {
        let wait = rand::thread_rng().gen_range(300..1500);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        acked_at_kill.push(acked.lock().unwrap().len());
        router.kill9();
        // Down for a random moment too, while producers keep trying.
        tokio::time::sleep(Duration::from_millis(rand::thread_rng().gen_range(0..300))).await;
        let seen_a = a.count();
        let seen_b = b.count();
        let spawn_at = Instant::now();
        router.spawn();
        startups.push(spawn_at.elapsed());
        // Recovery: spawn → the first delivery after the restart.
        let deadline = Instant::now() + Duration::from_secs(30);
        while a.count() == seen_a && b.count() == seen_b {
            assert!(
                Instant::now() < deadline,
                "round {round}: no delivery within 30 s of the restart\n{}",
                router.log()
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        recoveries.push(spawn_at.elapsed());
    }
    // Let the load run a little after the last restart, then stop it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    for p in producers {
        p.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    let want_a: HashSet<String> = acked.iter().map(|(k, _)| k.clone()).collect();
    let want_b: HashSet<String> = acked
        .iter()
        .filter(|(_, l)| *l)
        .map(|(k, _)| k.clone())
        .collect();
    assert_eq!(
        want_a.len(),
        acked.len(),
        "each key acknowledged once per producer"
    );
    let t0 = Instant::now();
    let covered = |got: &[Received], want: &HashSet<String>| {
        let have: HashSet<String> = got.iter().filter_map(payload_id).collect();
        want.iter().filter(|k| !have.contains(*k)).count()
    };
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (ma, mb) = (
            covered(&a.received(), &want_a),
            covered(&b.received(), &want_b),
        );
        if ma == 0 && mb == 0 {
            break;
        }
        if Instant::now() > deadline {
            panic!(
                "LOST: {ma} acknowledged event(s) never reached a, {mb} never reached b\n{}",
                router.log()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let drain = t0.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ca = counts_by_payload(&a.received());
    let cb = counts_by_payload(&b.received());
    let dups = |c: &HashMap<String, usize>, want: &HashSet<String>| {
        let extra: usize = want
            .iter()
            .map(|k| c.get(k).copied().unwrap_or(0).saturating_sub(1))
            .sum();
        let with: usize = want
            .iter()
            .filter(|k| c.get(*k).copied().unwrap_or(0) > 1)
            .count();
        let max = want
            .iter()
            .map(|k| c.get(k).copied().unwrap_or(0))
            .max()
            .unwrap_or(0);
        (extra, with, max)
    };
    let (xa, wa, ma) = dups(&ca, &want_a);
    let (xb, wb, mb) = dups(&cb, &want_b);
    let mut rec = recoveries.clone();
    rec.sort();
    let mut st = startups.clone();
    st.sort();
    eprintln!(
        "FIGURES crash_rounds: rounds={rounds} acked={} (license {}) refused_requests_while_down={} \
         lost_a=0 lost_b=0 duplicates_a={xa} (events with dups {wa}, max deliveries of one event {ma}) \
         duplicates_b={xb} (events {wb}, max {mb}) dup_rate={:.4}/delivery \
         startup(spawn->listening) median={:?} max={:?} recovery(spawn->first delivery) median={:?} max={:?} \
         drain_after_load={drain:?} acked_at_kills={acked_at_kill:?}",
        acked.len(),
        want_b.len(),
        refused.load(Ordering::Relaxed),
        (xa + xb) as f64 / (want_a.len() + want_b.len()) as f64,
        st[st.len() / 2],
        st.last().unwrap(),
        rec[rec.len() / 2],
        rec.last().unwrap(),
    );
}
