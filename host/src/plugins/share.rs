//! Shares of the instance pool: how many plugin calls one endpoint (a
//! binding) and one account (all its endpoints together) may run at once,
//! so a busy or slow endpoint cannot take every pooled instance from the
//! others, nor an account from the other accounts.
//!
//! Limits, with the pool of `P` instances (128): an account runs at most
//! `P/4` calls at once, one endpoint's use of a plugin at most `P/8`. So
//! three accounts saturated at once still leave a quarter of the pool to
//! every other account, and one endpoint cannot starve its own account's
//! other endpoints.

use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// Calls running now against one limit.
#[derive(Default)]
pub(crate) struct Share {
    running: Mutex<usize>,
    freed: Condvar,
}

impl Share {
    /// Takes a place if fewer than `max` are taken, waiting until
    /// `deadline` at most; `false` if none freed up in time.
    pub(crate) fn enter(&self, max: usize, deadline: Instant) -> bool {
        let mut n = self.running.lock().unwrap_or_else(|p| p.into_inner());
        while *n >= max {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            n = self
                .freed
                .wait_timeout(n, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        *n += 1;
        true
    }

    /// Gives a place back.
    pub(crate) fn leave(&self) {
        let mut n = self.running.lock().unwrap_or_else(|p| p.into_inner());
        *n = n.saturating_sub(1);
        drop(n);
        self.freed.notify_one();
    }

    #[cfg(test)]
    fn running(&self) -> usize {
        *self.running.lock().unwrap()
    }
}

/// How long a call waits for its share before failing (the delivery is
/// retried).
pub(crate) const SHARE_WAIT: Duration = Duration::from_secs(1);

/// Most calls one account runs at once, of a pool of `pool` instances.
pub(crate) fn account_max(pool: u32) -> usize {
    (pool as usize / 4).max(2)
}

/// Most calls one endpoint's use of a plugin runs at once.
pub(crate) fn binding_max(pool: u32) -> usize {
    (pool as usize / 8).max(2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_full_share_waits_then_refuses_and_frees() {
        let s = Arc::new(Share::default());
        let soon = || Instant::now() + Duration::from_millis(50);
        assert!(s.enter(2, soon()));
        assert!(s.enter(2, soon()));
        let t = Instant::now();
        assert!(!s.enter(2, soon()));
        assert!(t.elapsed() >= Duration::from_millis(45));
        let s2 = s.clone();
        let h = std::thread::spawn(move || s2.enter(2, Instant::now() + Duration::from_secs(5)));
        std::thread::sleep(Duration::from_millis(20));
        s.leave();
        assert!(h.join().unwrap());
        assert_eq!(s.running(), 2);
    }
}
