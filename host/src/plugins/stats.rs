//! Per-plugin call counters: calls, errors by kind and call latency (a
//! log2 histogram of microseconds), kept on each plugin file's slot and
//! shown by `GET /v1/plugins` and the dashboard's plugins page.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use enum_map::EnumMap;

use super::types::PluginErrorKind;

/// Bucket `i` counts calls of `[2^i, 2^(i+1))` µs (bucket 0 also below
/// 1 µs); the last one everything longer (≈ 67 s and up).
const BUCKETS: usize = 27;

#[derive(Default)]
pub(crate) struct CallStats {
    calls: AtomicU64,
    errors: EnumMap<PluginErrorKind, AtomicU64>,
    total_ns: AtomicU64,
    buckets: [AtomicU64; BUCKETS],
}

/// A snapshot of one plugin's [`CallStats`].
#[derive(Debug, Clone, Default)]
pub struct PluginCalls {
    pub calls: u64,
    /// Non-zero error counts by kind (`PluginErrorKind::as_str`).
    pub errors_by_kind: Vec<(&'static str, u64)>,
    pub errors: u64,
    /// Mean call time; `None` before the first call.
    pub mean: Option<Duration>,
    /// Upper bounds of the histogram buckets holding the median and the
    /// 99th percentile call (so within a factor of two).
    pub p50: Option<Duration>,
    pub p99: Option<Duration>,
}

impl CallStats {
    /// Counts one call of `took`, failed with `error` if any.
    pub(crate) fn record(&self, took: Duration, error: Option<PluginErrorKind>) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if let Some(kind) = error {
            self.errors[kind].fetch_add(1, Ordering::Relaxed);
        }
        let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.total_ns.fetch_add(ns, Ordering::Relaxed);
        let us = ns / 1000;
        let i = if us == 0 {
            0
        } else {
            (63 - us.leading_zeros() as usize).min(BUCKETS - 1)
        };
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> PluginCalls {
        let calls = self.calls.load(Ordering::Relaxed);
        let errors_by_kind: Vec<(&'static str, u64)> = self
            .errors
            .iter()
            .map(|(k, n)| (k.as_str(), n.load(Ordering::Relaxed)))
            .filter(|(_, n)| *n > 0)
            .collect();
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let seen: u64 = counts.iter().sum();
        let quantile = |q: f64| -> Option<Duration> {
            if seen == 0 {
                return None;
            }
            let rank = ((seen as f64 * q).ceil() as u64).max(1);
            let mut acc = 0;
            for (i, n) in counts.iter().enumerate() {
                acc += n;
                if acc >= rank {
                    return Some(Duration::from_micros(1u64 << (i + 1)));
                }
            }
            None
        };
        PluginCalls {
            calls,
            errors: errors_by_kind.iter().map(|(_, n)| n).sum(),
            errors_by_kind,
            mean: (calls > 0).then(|| {
                Duration::from_nanos(self.total_ns.load(Ordering::Relaxed) / calls.max(1))
            }),
            p50: quantile(0.5),
            p99: quantile(0.99),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_errors_and_bounds_the_percentiles() {
        let s = CallStats::default();
        assert!(s.snapshot().p50.is_none());
        for _ in 0..98 {
            s.record(Duration::from_micros(300), None);
        }
        s.record(Duration::from_millis(40), Some(PluginErrorKind::Deadline));
        s.record(Duration::from_millis(40), Some(PluginErrorKind::Deadline));
        let p = s.snapshot();
        assert_eq!(p.calls, 100);
        assert_eq!(p.errors, 2);
        assert_eq!(p.errors_by_kind, vec![("deadline", 2)]);
        // 300 µs is in [256, 512): reported as ≤ 512 µs.
        assert_eq!(p.p50, Some(Duration::from_micros(512)));
        // The 99th call is one of the 40 ms ones: [32.8, 65.5) ms.
        assert_eq!(p.p99, Some(Duration::from_micros(65_536)));
        let mean = p.mean.unwrap();
        assert!(mean > Duration::from_micros(1000) && mean < Duration::from_micros(1200));
    }
}
