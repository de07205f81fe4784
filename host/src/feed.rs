//! Delivery outcomes as they happen, for the dashboard: a
//! `tokio::sync::broadcast` of every recorded attempt (the live tail) and,
//! per endpoint, a ring of per-minute and per-hour buckets (counts by
//! outcome, a log-scale latency histogram) for the overview's success rate,
//! p50/p99 and deliveries-per-minute chart.
//!
//! Fed from one place, `Dispatcher::record` (every attempt, filter and
//! failure the dispatcher stores passes there), through
//! `Metrics::feed`. The cost on the hot path is one short uncontended
//! mutex and a few additions per attempt; the broadcast message is only
//! built when a tail is open. Nothing here is persisted: the figures start
//! empty at each start.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;
use uuid::Uuid;

/// One recorded attempt (or plugin filter) of a delivery.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub account: String,
    pub endpoint: String,
    pub endpoint_uid: Uuid,
    pub event: Uuid,
    /// delivered, attempt_failed, failed, filtered, disabled.
    pub outcome: &'static str,
    pub http_status: Option<u16>,
    pub error: Option<String>,
    pub latency_us: u64,
    pub at_ms: i64,
    pub attempt: u32,
}

/// The outcome classes counted per bucket, in chart order.
pub const OUTCOMES: [&str; 5] = [
    "delivered",
    "attempt_failed",
    "failed",
    "disabled",
    "filtered",
];

/// Latency histogram: bucket `i` holds latencies up to `BASE_US * 2^(i/2)`.
const LAT_BUCKETS: usize = 44;
const BASE_US: f64 = 100.0;

fn lat_bucket(us: u64) -> usize {
    if us as f64 <= BASE_US {
        return 0;
    }
    let i = (2.0 * (us as f64 / BASE_US).log2()).ceil() as usize;
    i.min(LAT_BUCKETS - 1)
}

/// Upper bound of a latency bucket, in milliseconds.
fn lat_bound_ms(i: usize) -> f64 {
    BASE_US * 2f64.powf(i as f64 / 2.0) / 1000.0
}

#[derive(Clone, Copy)]
struct Bucket {
    /// Minute (or hour) number since the epoch this bucket counts; a bucket
    /// whose number is not the current one for its slot is stale.
    at: i64,
    counts: [u32; 5],
    lat: [u32; LAT_BUCKETS],
}

const EMPTY: Bucket = Bucket {
    at: -1,
    counts: [0; 5],
    lat: [0; LAT_BUCKETS],
};

struct Ring {
    minutes: [Bucket; 60],
    hours: [Bucket; 24],
}

impl Ring {
    fn add(&mut self, at_ms: i64, kind: usize, latency_us: Option<u64>) {
        for (slot, unit) in [
            (&mut self.minutes[..], 60_000i64),
            (&mut self.hours[..], 3_600_000i64),
        ] {
            let n = at_ms.div_euclid(unit);
            let b = &mut slot[n.rem_euclid(slot.len() as i64) as usize];
            if b.at != n {
                *b = EMPTY;
                b.at = n;
            }
            b.counts[kind] += 1;
            if let Some(us) = latency_us {
                b.lat[lat_bucket(us)] += 1;
            }
        }
    }
}

/// Success rate and latency of one endpoint over a window.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WindowStats {
    /// Attempts by outcome (`OUTCOMES` order).
    pub counts: [u64; 5],
    /// Latency percentiles (upper bound of the bucket, ms) of the attempts
    /// that reached the receiver; `None` without any.
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

impl WindowStats {
    /// Delivered over every HTTP attempt (filtered not counted).
    pub fn success_rate(&self) -> Option<f64> {
        let tried: u64 = self.counts[..4].iter().sum();
        (tried > 0).then(|| self.counts[0] as f64 / tried as f64)
    }

    fn from_buckets<'a>(it: impl Iterator<Item = &'a Bucket>) -> WindowStats {
        let mut counts = [0u64; 5];
        let mut lat = [0u64; LAT_BUCKETS];
        for b in it {
            for (c, x) in counts.iter_mut().zip(b.counts) {
                *c += x as u64;
            }
            for (c, x) in lat.iter_mut().zip(b.lat) {
                *c += x as u64;
            }
        }
        let total: u64 = lat.iter().sum();
        let pct = |p: f64| -> Option<f64> {
            if total == 0 {
                return None;
            }
            let rank = ((total as f64) * p).ceil().max(1.0) as u64;
            let mut seen = 0;
            for (i, n) in lat.iter().enumerate() {
                seen += n;
                if seen >= rank {
                    return Some(lat_bound_ms(i));
                }
            }
            Some(lat_bound_ms(LAT_BUCKETS - 1))
        };
        WindowStats {
            counts,
            p50_ms: pct(0.5),
            p99_ms: pct(0.99),
        }
    }
}

/// The dashboard's feed of delivery outcomes.
pub struct Feed {
    tx: broadcast::Sender<Arc<Outcome>>,
    rings: Mutex<HashMap<Uuid, Box<Ring>>>,
}

impl Default for Feed {
    fn default() -> Self {
        Feed {
            tx: broadcast::channel(1024).0,
            rings: Mutex::new(HashMap::new()),
        }
    }
}

/// What `Feed::publish` is told about an attempt (borrowed, so nothing is
/// allocated unless a tail is listening).
pub struct Report<'a> {
    pub account: &'a str,
    pub endpoint: &'a str,
    pub endpoint_uid: Uuid,
    pub event: Uuid,
    pub outcome: &'static str,
    pub http_status: Option<u16>,
    pub error: Option<&'a str>,
    /// `None` when no HTTP request was made (plugin filter or failure).
    pub latency_us: Option<u64>,
    pub at_ms: i64,
    pub attempt: u32,
}

impl Feed {
    /// Records one outcome: counted in its endpoint's ring, and sent to the
    /// open tails.
    pub fn publish(&self, r: Report<'_>) {
        let kind = OUTCOMES.iter().position(|o| *o == r.outcome).unwrap_or(2);
        {
            let mut rings = self.rings.lock().unwrap_or_else(|p| p.into_inner());
            rings
                .entry(r.endpoint_uid)
                .or_insert_with(|| {
                    Box::new(Ring {
                        minutes: [EMPTY; 60],
                        hours: [EMPTY; 24],
                    })
                })
                .add(r.at_ms, kind, r.latency_us);
        }
        if self.tx.receiver_count() > 0 {
            let _ = self.tx.send(Arc::new(Outcome {
                account: r.account.to_string(),
                endpoint: r.endpoint.to_string(),
                endpoint_uid: r.endpoint_uid,
                event: r.event,
                outcome: r.outcome,
                http_status: r.http_status,
                error: r.error.map(str::to_string),
                latency_us: r.latency_us.unwrap_or(0),
                at_ms: r.at_ms,
                attempt: r.attempt,
            }));
        }
    }

    /// A receiver of every outcome from now on (the caller filters by
    /// account and endpoint).
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Outcome>> {
        self.tx.subscribe()
    }

    /// Stats of an endpoint over the last hour (60 minute buckets) and the
    /// last day (24 hour buckets), as of `now_ms`.
    pub fn window(&self, endpoint_uid: Uuid, now_ms: i64) -> (WindowStats, WindowStats) {
        let rings = self.rings.lock().unwrap_or_else(|p| p.into_inner());
        let Some(r) = rings.get(&endpoint_uid) else {
            return Default::default();
        };
        let minute = now_ms.div_euclid(60_000);
        let hour = now_ms.div_euclid(3_600_000);
        let last_hour = r
            .minutes
            .iter()
            .filter(|b| b.at > minute - 60 && b.at <= minute);
        let last_day = r.hours.iter().filter(|b| b.at > hour - 24 && b.at <= hour);
        (
            WindowStats::from_buckets(last_hour),
            WindowStats::from_buckets(last_day),
        )
    }

    /// Deliveries per minute by outcome over the last 60 minutes, summed
    /// over `endpoints`: index 0 is the oldest minute.
    pub fn per_minute(&self, endpoints: &[Uuid], now_ms: i64) -> Vec<[u64; 5]> {
        let minute = now_ms.div_euclid(60_000);
        let mut out = vec![[0u64; 5]; 60];
        let rings = self.rings.lock().unwrap_or_else(|p| p.into_inner());
        for uid in endpoints {
            let Some(r) = rings.get(uid) else { continue };
            for b in &r.minutes {
                let age = minute - b.at;
                if (0..60).contains(&age) {
                    let row = &mut out[59 - age as usize];
                    for (c, x) in row.iter_mut().zip(b.counts) {
                        *c += x as u64;
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(uid: Uuid, outcome: &'static str, at_ms: i64, latency_ms: u64) -> Report<'static> {
        Report {
            account: "a",
            endpoint: "e",
            endpoint_uid: uid,
            event: Uuid::nil(),
            outcome,
            http_status: Some(200),
            error: None,
            latency_us: Some(latency_ms * 1000),
            at_ms,
            attempt: 1,
        }
    }

    #[test]
    fn windows_count_and_expire() {
        let feed = Feed::default();
        let uid = Uuid::new_v4();
        let t0 = 1_700_000_000_000i64;
        for i in 0..98 {
            feed.publish(report(uid, "delivered", t0 + i, 10));
        }
        feed.publish(report(uid, "attempt_failed", t0, 900));
        feed.publish(report(uid, "attempt_failed", t0, 900));
        let (h, d) = feed.window(uid, t0 + 1000);
        assert_eq!(h.counts, [98, 2, 0, 0, 0]);
        assert_eq!(h.success_rate(), Some(0.98));
        let p50 = h.p50_ms.unwrap();
        assert!((10.0..15.0).contains(&p50), "{p50}");
        assert!(h.p99_ms.unwrap() >= 900.0, "{:?}", h.p99_ms);
        assert_eq!(d.counts, h.counts);
        // Two hours later the hour window is empty, the day still counts.
        let (h, d) = feed.window(uid, t0 + 2 * 3_600_000);
        assert_eq!(h.counts, [0; 5]);
        assert_eq!(d.counts[0], 98);
        assert_eq!(h.p50_ms, None);
        let chart = feed.per_minute(&[uid], t0 + 60_000);
        assert_eq!(chart[58], [98, 2, 0, 0, 0]);
        assert_eq!(chart[59], [0; 5]);
        // Another endpoint's figures are not summed in.
        assert_eq!(feed.per_minute(&[Uuid::new_v4()], t0)[59], [0; 5]);
    }
}
