//! Noisy neighbour.

use super::*;

pub(super) struct Phase {
    pub(super) p50: Duration,
    pub(super) p99: Duration,
    pub(super) throughput: f64,
}

/// Paced latency (100 events at ~100/s, send → receipt) then throughput
/// (1,000 events from 16 producers, first send → last receipt) of the
/// `healthy` endpoint for events of `kind`.
pub(super) async fn measure_phase(router: &Router, rx: &Receiver, kind: &str, tag: &str) -> Phase {
    let c = Client::new();
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::new(Mutex::new(HashMap::new()));
    let n_paced = 150;
    for i in 0..n_paced {
        let key = format!("{tag}-p{i}");
        sent.lock().unwrap().insert(key.clone(), Instant::now());
        let r = c
            .post_event(router, "acct", &event(kind, json!({"data": {"id": key}})))
            .await;
        assert_eq!(r.status, 202);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let want = |g: &[Received], prefix: &str, n: usize| {
        g.iter()
            .filter(|r| payload_id(r).is_some_and(|p| p.starts_with(prefix)))
            .count()
            >= n
    };
    let prefix = format!("{tag}-p");
    rx.wait_for(Duration::from_secs(20), "paced events", |g| {
        want(g, &prefix, n_paced)
    })
    .await;
    let mut lat: Vec<Duration> = rx
        .received()
        .iter()
        .filter_map(|r| {
            let p = payload_id(r)?;
            let s = *sent.lock().unwrap().get(&p)?;
            Some(r.at.saturating_duration_since(s))
        })
        .collect();
    lat.sort();
    // Throughput.
    let n_blast = 1000;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..16 {
        let url = router.events_url("acct");
        let kind = kind.to_string();
        let tag = tag.to_string();
        tasks.push(tokio::spawn(async move {
            let c = Client::new();
            for i in (w..n_blast).step_by(16) {
                let body =
                    json!({"event": kind, "payload": {"data": {"id": format!("{tag}-b{i}")}}})
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
    for t in tasks {
        t.await.unwrap();
    }
    let prefix = format!("{tag}-b");
    rx.wait_for(Duration::from_secs(60), "blast events", |g| {
        want(g, &prefix, n_blast)
    })
    .await;
    let took = start.elapsed();
    Phase {
        p50: percentile(&lat, 0.5),
        p99: percentile(&lat, 0.99),
        throughput: n_blast as f64 / took.as_secs_f64(),
    }
}

/// One endpoint dead (connection refused, retries every second) and one slow (answers
/// after 5 s, timeout 1 s) while a third is healthy: the healthy endpoint's
/// p99 latency stays within 2x of its latency alone and its throughput holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn noisy_neighbour_isolation() {
    let _g = heavy();
    let healthy = Receiver::ok().await;
    let slow = Receiver::scripted(|_, _| Reply {
        delay: Duration::from_secs(5),
        ..Reply::status(200)
    })
    .await;
    let dead_port = free_port();
    // Retries every second: far faster than the default schedule (minutes
    // to days), so every phase sees several retries of each failed event.
    let schedule = "retry_schedule = [\"1s\", \"1s\", \"1s\", \"1s\", \"1s\", \"1s\", \"1s\", \"1s\", \"1s\", \"1s\"]";
    let fine = Receiver::ok().await;
    let config = base_config("")
        + &endpoint("healthy", &healthy.url("/h"), "")
        + &endpoint("fine1", &fine.url("/f1"), "subscriptions = [\"user.*\"]")
        + &endpoint("fine2", &fine.url("/f2"), "subscriptions = [\"user.*\"]")
        + &endpoint(
            "dead",
            &format!("http://127.0.0.1:{dead_port}/d"),
            &format!("subscriptions = [\"license.*\"]\n{schedule}"),
        )
        + &endpoint(
            "slow",
            &slow.url("/s"),
            &format!("subscriptions = [\"license.*\"]\ntimeout = \"1s\"\n{schedule}"),
        );
    let router = Router::start(&config, &[]);
    // Warm up connections and the process.
    let c = Client::new();
    for i in 0..50 {
        c.post_event(
            &router,
            "acct",
            &event(
                "machine.created",
                json!({"data": {"id": format!("warm{i}")}}),
            ),
        )
        .await;
    }
    healthy
        .wait_for(Duration::from_secs(10), "warm-up", |g| g.len() >= 50)
        .await;
    // Timing on a shared 2-core machine is noisy (other builds run): up to
    // 3 rounds of the three phases; the bounds must hold in one round, and
    // every round's figures are printed.
    let mut failures = Vec::new();
    for round in 0..3 {
        let tag = format!("r{round}");
        // Alone: machine.* events only reach `healthy`.
        let alone =
            measure_phase(&router, &healthy, "machine.created", &format!("{tag}alone")).await;
        // Healthy neighbours: user.* events fan out to healthy + 2 fine
        // endpoints (the same store work per event as the noisy phase).
        let neighbours =
            measure_phase(&router, &healthy, "user.created", &format!("{tag}fine")).await;
        // Noisy: license.* events reach healthy + dead + slow, which fail and retry.
        let noisy =
            measure_phase(&router, &healthy, "license.created", &format!("{tag}noisy")).await;
        let dead_attempts = router.log().matches("attempt failed").count();
        eprintln!(
            "FIGURES noisy_neighbour_isolation round {round}: alone p50={:?} p99={:?} throughput={:.0}/s | with 2 healthy neighbours (3 deliveries/event) p50={:?} p99={:?} {:.0}/s | \
             with dead+slow neighbours (3 deliveries/event) p50={:?} p99={:?} throughput={:.0}/s | \
             noisy/alone p99={:.2}x, noisy/healthy-neighbours throughput={:.2}x (noisy/alone {:.2}x) | neighbour failed attempts logged={dead_attempts} slow receiver got={}",
            alone.p50,
            alone.p99,
            alone.throughput,
            neighbours.p50,
            neighbours.p99,
            neighbours.throughput,
            noisy.p50,
            noisy.p99,
            noisy.throughput,
            noisy.p99.as_secs_f64() / alone.p99.as_secs_f64().max(1e-9),
            noisy.throughput / neighbours.throughput,
            noisy.throughput / alone.throughput,
            slow.count(),
        );
        // A 2 ms floor: below it, scheduler noise dominates any ratio.
        let bound = (alone.p99 * 2).max(alone.p99 + Duration::from_millis(2));
        let mut why = Vec::new();
        if noisy.p99 > bound {
            why.push(format!(
                "healthy p99 {:?} > 2x alone {:?}",
                noisy.p99, alone.p99
            ));
        }
        // Throughput is compared at equal fan-out (3 deliveries per event):
        // storing more deliveries per event is not the neighbour's fault.
        if noisy.throughput < neighbours.throughput * 0.8 {
            why.push(format!(
                "healthy throughput dropped: {:.0}/s with healthy neighbours -> {:.0}/s with failing ones",
                neighbours.throughput, noisy.throughput
            ));
        }
        if why.is_empty() {
            return;
        }
        failures.push(format!("round {round}: {}", why.join("; ")));
    }
    panic!(
        "isolation bounds not met in 3 rounds:\n{}",
        failures.join("\n")
    );
}
