//! Plugin faults under load.

use super::noisy_neighbour::measure_phase;
use super::*;

/// Three endpoints whose plugin panics, loops, or exhausts its memory on
/// every event while a fourth endpoint takes the same events at full rate;
/// the faulty deliveries fail and retry; replacing the plugin files (same
/// names, same endpoint config) with a fixed build heals every pending one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn plugin_faults_under_load_then_hot_fix() {
    let _g = heavy();
    let healthy = Receiver::ok().await;
    let sick = Receiver::ok().await;
    let mut schedule = vec!["300ms"; 60];
    schedule.push("1s");
    let schedule = format!("retry_schedule = {:?}", schedule);
    let modes = ["panic", "loop", "alloc"];
    let mut config = base_config("") + &endpoint("healthy", &healthy.url("/h"), "");
    for m in modes {
        config += &endpoint(
            &format!("sick-{m}"),
            &sick.url(&format!("/{m}")),
            &format!(
                "subscriptions = [\"license.*\"]\n{schedule}\nplugins = [ {{ name = \"faulty-{m}\", config = {{ mode = \"{m}\" }} }} ]"
            ),
        );
    }
    let misbehave = test_plugin("misbehave");
    let plugins: Vec<(String, std::path::PathBuf)> = modes
        .iter()
        .map(|m| (format!("faulty-{m}"), misbehave.clone()))
        .collect();
    let plugin_refs: Vec<(&str, std::path::PathBuf)> = plugins
        .iter()
        .map(|(n, p)| (n.as_str(), p.clone()))
        .collect();
    let router = Router::start(&config, &plugin_refs);
    let c = Client::new();
    for i in 0..30 {
        c.post_event(
            &router,
            "acct",
            &event("user.created", json!({"data": {"id": format!("warm{i}")}})),
        )
        .await;
    }
    healthy
        .wait_for(Duration::from_secs(10), "warm-up", |g| g.len() >= 30)
        .await;
    let alone = measure_phase(&router, &healthy, "user.created", "alone").await;
    let faulty = measure_phase(&router, &healthy, "license.created", "faulty").await;
    let faulty_events = 150 + 1000;
    assert_eq!(sick.count(), 0, "nothing passes a failing plugin");
    let stats = c.request("GET", &router.url("/metrics"), &[], "").await;
    let metrics = String::from_utf8_lossy(&stats.body).to_string();
    let plugin_errors: Vec<&str> = metrics
        .lines()
        .filter(|l| l.contains("plugin_errors") && !l.starts_with('#'))
        .collect();
    // Hot fix: the same file names, now a fixed build that accepts the same config.
    let fixed = test_plugin("well-behaved");
    let healed_at = Instant::now();
    for m in modes {
        let dest = router.dir.join("plugins").join(format!("faulty-{m}.wasm"));
        let tmp = router.dir.join(format!("faulty-{m}.wasm.tmp"));
        std::fs::copy(&fixed, &tmp).unwrap();
        std::fs::rename(&tmp, &dest).unwrap();
    }
    sick.wait_for(
        Duration::from_secs(90),
        "every pending faulty delivery after the fix",
        |g| {
            let mut per: HashMap<String, HashSet<String>> = HashMap::new();
            for r in g {
                let v = r.json();
                if v["healed"] == true {
                    per.entry(r.path.clone())
                        .or_default()
                        .insert(v["id"].as_str().unwrap_or("").to_string());
                }
            }
            modes.iter().all(|m| {
                per.get(&format!("/{m}"))
                    .is_some_and(|s| s.len() >= faulty_events)
            })
        },
    )
    .await;
    let heal_time = healed_at.elapsed();
    eprintln!(
        "FIGURES plugin_faults_under_load_then_hot_fix: healthy alone p50={:?} p99={:?} {:.0}/s | with 3 faulty endpoints (panic, loop 50 ms deadline, alloc 32 MiB cap) p50={:?} p99={:?} {:.0}/s \
         (ratio {:.2}x) | faulty deliveries pending={} per endpoint, lost=0, all delivered {heal_time:?} after the plugin files were replaced | plugin error metrics: {plugin_errors:?}",
        alone.p50,
        alone.p99,
        alone.throughput,
        faulty.p50,
        faulty.p99,
        faulty.throughput,
        faulty.throughput / alone.throughput,
        faulty_events,
    );
    // Before the per-endpoint plugin circuit breaker (delivery/mod.rs), three
    // endpoints whose plugins burn their deadline or trap on every event
    // saturated the 2 cores and the healthy endpoint fell from 1,782/s to
    // 32/s (0.02x). With it, a failing plugin's calls go one at a time with a
    // growing pause. The "alone" phase stores one delivery per event, the
    // faulty phase four per license event (and their failed attempts), so
    // part of the drop is fan-out cost, not starvation: measured 0.89x and,
    // once the delivery path got faster, 0.59x. The bound guards against the
    // collapse.
    assert!(
        faulty.throughput >= alone.throughput * 0.3,
        "healthy throughput dropped: {:.0} -> {:.0}/s",
        alone.throughput,
        faulty.throughput
    );
}
