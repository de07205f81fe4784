//! `rate_limit = "500/s"`: a token bucket per endpoint that paces requests
//! (batched and unbatched alike) before they are sent. Each router process
//! keeps its own bucket at its share of the rate (the rate divided by the
//! live nodes, `Dispatcher::rate_share`), so the nodes together stay within
//! it (docs/ARCHITECTURE.md, "Batching").

use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::endpoint::EndpointShared;
use crate::registry::LiveEndpoint;

/// One endpoint's bucket. Reservations: a request that finds no token takes
/// one from the future and sleeps until it is due, so waiting requests go
/// out in order at the rate, never in a burst.
#[derive(Default)]
pub(super) struct RateLimiter {
    state: Mutex<Option<(f64, Instant)>>,
}

impl RateLimiter {
    /// The time to wait before sending one request at `per_sec`; takes its
    /// token. The bucket holds a tenth of a second's worth (at least one).
    pub(super) fn reserve(&self, per_sec: f64) -> Duration {
        let per_sec = per_sec.max(1e-3);
        let burst = (per_sec / 10.0).max(1.0);
        let now = Instant::now();
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (tokens, last) = s.get_or_insert((burst, now));
        let refill = now.saturating_duration_since(*last).as_secs_f64() * per_sec;
        *tokens = (*tokens + refill).min(burst) - 1.0;
        *last = now;
        if *tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-*tokens / per_sec)
        }
    }
}

impl super::Dispatcher {
    /// Waits for the endpoint's next request slot under its `rate_limit`
    /// (the limit in force now, at this node's share), counting a request
    /// that had to wait. The wait is slept in steps and ends early once a
    /// reload removes the limit: requests already waiting go at once.
    pub(super) async fn pace(&self, ep: &EndpointShared, live: &LiveEndpoint) {
        let Some(rate) = live.spec.rate_limit else {
            return;
        };
        let wait = ep.rate.reserve(self.rate_share(rate));
        if wait.is_zero() {
            return;
        }
        self.inner
            .metrics
            .rate_limited(&live.spec.account, &live.spec.id);
        const STEP: Duration = Duration::from_millis(100);
        let until = tokio::time::Instant::now() + wait;
        loop {
            let now = tokio::time::Instant::now();
            if now >= until || ep.live().spec.rate_limit.is_none() {
                return;
            }
            tokio::time::sleep((until - now).min(STEP)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_paces_requests_at_the_rate() {
        let r = RateLimiter::default();
        // 50/s: a burst of 5, then one every 20 ms (reserved in order).
        let waits: Vec<Duration> = (0..10).map(|_| r.reserve(50.0)).collect();
        assert!(waits[..4].iter().all(|w| w.is_zero()), "{waits:?}");
        let last = waits[9].as_secs_f64();
        assert!((0.09..0.12).contains(&last), "{waits:?}");
        assert!(waits.windows(2).all(|w| w[1] >= w[0]));
    }
}
