//! When to try again: the retry schedule (default: 15 retries over about 3
//! days, exponential with ±10% jitter), and how `Retry-After` bends it.

use std::time::Duration;

use rand::Rng;

/// Longest delay between two attempts (router.toml and the API alike).
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(7 * 86400);

/// Checks one retry delay against [`MAX_RETRY_DELAY`].
pub fn check_delay(d: Duration) -> Result<(), String> {
    if d > MAX_RETRY_DELAY {
        return Err(format!(
            "{} is longer than the longest retry delay, 7 days",
            humantime::format_duration(d)
        ));
    }
    Ok(())
}

/// Milliseconds of `d` as an `i64`, saturating (for adding to a timestamp).
pub fn millis_i64(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Delays between attempts. `delays[n]` is the wait after failed attempt
/// `n + 1`; when they run out the delivery has failed for good.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RetrySchedule {
    pub delays: Vec<Duration>,
    /// Spread each delay by ±10% so retries of many deliveries do not
    /// arrive at a recovering receiver all at once.
    pub jitter: bool,
}

impl RetrySchedule {
    /// 15 retries: 15 s doubling each time, capped at 16 h — 2.7 days in
    /// all, the "about 3 days" of Keygen's guide.
    pub fn keygen_default() -> Self {
        let cap = Duration::from_secs(16 * 3600);
        let delays = (0..15)
            .map(|n| (Duration::from_secs(15) * 2u32.pow(n)).min(cap))
            .collect();
        RetrySchedule {
            delays,
            jitter: true,
        }
    }

    /// Exactly these delays, no jitter.
    pub fn fixed(delays: Vec<Duration>) -> Self {
        RetrySchedule {
            delays,
            jitter: false,
        }
    }

    /// Attempts in all, the first included.
    pub fn max_attempts(&self) -> u32 {
        self.delays.len() as u32 + 1
    }

    /// The delay after `attempts` failed attempts, or `None` when the
    /// schedule is exhausted. `retry_after` (from a 429/503) replaces the
    /// scheduled delay when it is no longer than `max_retry_after`.
    pub fn next_delay(
        &self,
        attempts: u32,
        retry_after: Option<Duration>,
        max_retry_after: Duration,
    ) -> Option<Duration> {
        let base = *self.delays.get(attempts.checked_sub(1)? as usize)?;
        if let Some(ra) = retry_after {
            if ra <= max_retry_after {
                return Some(ra);
            }
        }
        if !self.jitter {
            return Some(base);
        }
        let f = rand::thread_rng().gen_range(0.9..1.1);
        Some(base.mul_f64(f))
    }

    /// Human form, e.g. `["5s", "5m"]`.
    pub fn describe(&self) -> Vec<String> {
        self.delays
            .iter()
            .map(|d| humantime::format_duration(*d).to_string())
            .collect()
    }
}

/// Parses a `Retry-After` header: delay-seconds or an HTTP date.
pub fn parse_retry_after(value: &str, now: std::time::SystemTime) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_fifteen_retries_over_about_three_days() {
        let s = RetrySchedule::keygen_default();
        assert_eq!(s.max_attempts(), 16);
        let total: Duration = s.delays.iter().sum();
        let days = total.as_secs_f64() / 86400.0;
        assert!((2.5..3.2).contains(&days), "{days} days");
        assert!(s.delays.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn jitter_stays_within_ten_percent() {
        let s = RetrySchedule::keygen_default();
        for _ in 0..100 {
            let d = s.next_delay(3, None, Duration::from_secs(3600)).unwrap();
            assert!(
                d >= Duration::from_secs(54) && d <= Duration::from_secs(66),
                "{d:?}"
            );
        }
    }

    #[test]
    fn exhausts_and_honours_retry_after_within_bounds() {
        let s = RetrySchedule::fixed(vec![Duration::from_secs(1), Duration::from_secs(2)]);
        let max = Duration::from_secs(60);
        assert_eq!(s.next_delay(1, None, max), Some(Duration::from_secs(1)));
        assert_eq!(s.next_delay(2, None, max), Some(Duration::from_secs(2)));
        assert_eq!(s.next_delay(3, None, max), None);
        assert_eq!(
            s.next_delay(1, Some(Duration::from_secs(7)), max),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            s.next_delay(1, Some(Duration::from_secs(7000)), max),
            Some(Duration::from_secs(1))
        );
        assert_eq!(s.next_delay(3, Some(Duration::from_secs(7)), max), None);
    }

    #[test]
    fn retry_after_forms() {
        let now = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(
            parse_retry_after(&later, now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
