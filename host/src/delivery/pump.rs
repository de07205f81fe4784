//! The pump: one task per endpoint that takes due work (fresh events
//! handed over by ingest, due entries read from the store) within the
//! endpoint's in-flight bound, and starts an attempt for each.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tracing::{Instrument, debug, warn};
use uuid::Uuid;

use super::endpoint::*;
use super::*;
use crate::store::now_ms;

impl Dispatcher {
    pub(super) async fn pump(self, ep: Arc<EndpointShared>) {
        let mut shutdown = self.inner.shutdown.subscribe();
        let store = &self.inner.store;
        let mut dispatched_since_scan = 0usize;
        // Whether the last read of the due index stopped at its limit.
        let mut more_in_store = true;
        let mut last_scan = std::time::Instant::now();
        loop {
            if *shutdown.borrow() || ep.removed.load(Ordering::SeqCst) {
                break;
            }
            let live = ep.live();
            let disabled = !live.spec.enabled || ep.health().disabled_reason.is_some();
            if disabled {
                tokio::select! {
                    _ = ep.notify.notified() => {}
                    _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                    _ = shutdown.changed() => {}
                }
                continue;
            }
            if store.write_error().is_some() {
                // Attempts could not be recorded: sending now would resend
                // the same deliveries in a tight loop. Wait for the store.
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = shutdown.changed() => {}
                }
                continue;
            }
            let first = tokio::select! {
                p = ep.sem.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
                _ = shutdown.changed() => continue,
            };
            let mut permits = vec![first];
            while let Ok(p) = ep.sem.clone().try_acquire_owned() {
                permits.push(p);
            }
            // Read the store's due index only when it may hold work the
            // queue does not: on request, when a known retry is due, when
            // the last read was cut short and the queue ran dry (or, for
            // fairness with a stream of fresh work, every SCAN_BATCH
            // dispatches), and once a second as a safety net. Reading it on
            // every dispatch would walk past every delivery in flight.
            dispatched_since_scan += permits.len();
            let now = now_ms();
            let queue_empty = ep.queue().is_empty();
            let retry_due = ep.next_due_hint.load(Ordering::SeqCst) <= now;
            let scan = ep.scan_requested.swap(false, Ordering::SeqCst)
                || retry_due
                || last_scan.elapsed() >= Duration::from_secs(1)
                || (more_in_store && (queue_empty || dispatched_since_scan >= SCAN_BATCH));
            if scan {
                dispatched_since_scan = 0;
                last_scan = std::time::Instant::now();
                ep.next_due_hint.store(i64::MAX, Ordering::SeqCst);
                let scanned = self.read_due(&ep, now).await;
                match scanned {
                    Ok((full, next)) => {
                        more_in_store = full;
                        if let Some(t) = next {
                            ep.next_due_hint.fetch_min(t.max(now + 1), Ordering::SeqCst);
                        }
                    }
                    Err(e) => {
                        warn!(endpoint = %live.spec.id, error = %e, "reading the due index failed; retrying in 1 s");
                        ep.scan_requested.store(true, Ordering::SeqCst);
                        drop(permits);
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                }
            }
            let work: Vec<Work> = {
                let mut q = ep.queue();
                let n = permits.len().min(q.len());
                q.drain(..n).collect()
            };
            if work.is_empty() {
                drop(permits);
                let now = now_ms();
                let next = ep.next_due_hint.load(Ordering::SeqCst);
                let wait = if more_in_store {
                    1
                } else {
                    (next.saturating_sub(now)).clamp(1, 1000) as u64
                };
                tokio::select! {
                    _ = ep.notify.notified() => {}
                    _ = tokio::time::sleep(Duration::from_millis(wait)) => {}
                    _ = shutdown.changed() => {}
                }
                continue;
            }
            for (w, permit) in work.into_iter().zip(permits.drain(..)) {
                self.inner.in_flight.fetch_add(1, Ordering::SeqCst);
                let this = self.clone();
                let shared = ep.clone();
                let span = tracing::info_span!("attempt", event = %w.event_id(), account = %live.spec.account, endpoint = %live.spec.id);
                tokio::spawn(async move { this.attempt(shared, w, permit).await }.instrument(span));
            }
        }
        debug!(endpoint = %ep.uid, "pump stopped");
    }

    /// Moves due entries of the store's queue into the endpoint's work
    /// queue, passing over deliveries already taken; returns whether the
    /// read stopped at its limit, and when the next entry not taken (a
    /// retry) comes due.
    pub(super) async fn read_due(
        &self,
        ep: &EndpointShared,
        now: i64,
    ) -> Result<(bool, Option<i64>), crate::store::StoreError> {
        let room = MAX_TAKEN
            .saturating_sub(ep.in_flight().len())
            .min(SCAN_BATCH);
        if room == 0 {
            return Ok((true, None));
        }
        let store = &self.inner.store;
        let skip = |e: Uuid| ep.in_flight().contains(&e);
        let due = store.due(ep.uid, now, room, &skip).await?;
        let full = due.len() >= room;
        {
            let mut taken = ep.in_flight();
            let mut q = ep.queue();
            for d in due {
                // `offer` may have taken it meanwhile (then it is queued
                // already); a stale entry is dropped by the attempt.
                if taken.insert(d.event) {
                    q.push_back(Work::Stored(d));
                }
            }
        }
        let next = if full {
            None
        } else {
            let look = ep.in_flight().len() + 1;
            store.next_due_ms(ep.uid, look, &skip).await?
        };
        Ok((full, next))
    }
}
