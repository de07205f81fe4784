//! Paced load generator for the ingest latency target ("p99 ≤ 10 ms at
//! 20,000 events/s"): wrk measures latency at saturation (its connections
//! send as fast as answers come back), so its p99 is queueing at full load.
//! This sends at a fixed rate instead, spread over 64 keep-alive
//! connections, and reports the latency percentiles at that rate.
//!
//! ```sh
//! URL=http://127.0.0.1:18686/v1/accounts/bench/events TOKEN=… EVENT_FILE=host/benches/load/event.json \
//!   RATE=20000 SECS=10 cargo bench -p switchyard --bench ingest_paced
//! ```
//! (`host/benches/load/run.sh` runs it against a fresh router when
//! `PACED_RATE` is set.)

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

#[tokio::main]
async fn main() {
    let Some(url) = env("URL") else {
        eprintln!(
            "ingest_paced: set URL, TOKEN, EVENT_FILE (and RATE, SECS, CONNS) to run; skipping"
        );
        return;
    };
    let token = env("TOKEN").unwrap_or_default();
    let body = Bytes::from(
        std::fs::read(env("EVENT_FILE").expect("EVENT_FILE")).expect("read EVENT_FILE"),
    );
    let rate: f64 = env("RATE").and_then(|r| r.parse().ok()).unwrap_or(20_000.0);
    let secs: u64 = env("SECS").and_then(|r| r.parse().ok()).unwrap_or(10);
    let conns: usize = env("CONNS").and_then(|r| r.parse().ok()).unwrap_or(64);
    let per_conn = Duration::from_secs_f64(conns as f64 / rate);
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(conns)
        .build_http();
    let start = Instant::now();
    let end = start + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for i in 0..conns {
        let (client, url, token, body) = (client.clone(), url.clone(), token.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut late = Vec::new();
            let mut errors = 0u64;
            // Stagger the connections over one period.
            let mut next = start + per_conn.mul_f64(i as f64 / conns as f64);
            while next < end {
                // Was this connection held up by the server (its last answer
                // came after this send's time), or idle until now?
                let held_up = Instant::now() >= next;
                tokio::time::sleep_until(next.into()).await;
                let req = http::Request::post(&url)
                    .header("content-type", "application/json")
                    .header("authorization", format!("Bearer {token}"))
                    .body(Full::new(body.clone()))
                    .expect("request");
                // A send held up by the server's last answer counts from its
                // scheduled time (no coordinated omission). An idle
                // connection counts from when it actually sent: tokio's timer
                // ticks every millisecond, so it wakes up to 1 ms after
                // `next`, and that lag is the generator's, not the server's
                // (it is reported separately below).
                let scheduled = if held_up {
                    next
                } else {
                    late.push(next.elapsed());
                    Instant::now()
                };
                match client.request(req).await {
                    Ok(resp) => {
                        let ok = resp.status().as_u16() == 202;
                        let _ = resp.into_body().collect().await;
                        if ok {
                            lat.push(scheduled.elapsed());
                        } else {
                            errors += 1;
                        }
                    }
                    Err(_) => errors += 1,
                }
                next += per_conn;
            }
            (lat, late, errors)
        }));
    }
    let mut all = Vec::new();
    let mut lateness = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, late, e) = t.await.expect("task");
        all.extend(l);
        lateness.extend(late);
        errors += e;
    }
    all.sort();
    lateness.sort();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    println!(
        "paced ingest: target {rate:.0}/s over {conns} connections for {secs} s: {} accepted ({:.0}/s), {errors} errors; latency p50 {:?} p90 {:?} p99 {:?} p99.9 {:?} max {:?}",
        all.len(),
        all.len() as f64 / secs as f64,
        pct(0.50),
        pct(0.90),
        pct(0.99),
        pct(0.999),
        all.last().copied().unwrap_or_default()
    );
    let late = |p: f64| {
        lateness
            .get(((lateness.len() as f64 * p) as usize).min(lateness.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    println!(
        "generator: {} of {} sends on an idle connection, its timer woke p50 {:?} p99 {:?} after the scheduled time (not counted); the others waited for the server and count from their scheduled time",
        lateness.len(),
        all.len() as u64 + errors,
        late(0.5),
        late(0.99),
    );
}
