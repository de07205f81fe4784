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
            // Read the store's queue only when it may hold work the memory
            // queue does not, and read on from where the last read stopped
            // (`cursor`) rather than from the start, which would walk past
            // every delivery taken (up to MAX_TAKEN) each time:
            // - from the start: on request (sync, retry, recover), when a
            //   known retry is due, and once a second as a safety net (an
            //   entry that sorts before the cursor, e.g. a backdated event);
            // - from the cursor: when the last read was cut short or ingest
            //   left work in the store, once the memory queue runs low (or,
            //   for fairness with a stream of fresh work, every SCAN_BATCH
            //   dispatches) and there is room for a useful batch.
            dispatched_since_scan += permits.len();
            let now = now_ms();
            more_in_store |= ep.backlog.swap(false, Ordering::SeqCst);
            let queued = ep.queue().len();
            let room = MAX_TAKEN.saturating_sub(ep.in_flight().len());
            let retry_due = ep.next_due_hint.load(Ordering::SeqCst) <= now;
            let from_start = ep.scan_requested.swap(false, Ordering::SeqCst)
                || retry_due
                || last_scan.elapsed() >= Duration::from_secs(1);
            let read_on = more_in_store
                && (queued < SCAN_BATCH || dispatched_since_scan >= SCAN_BATCH)
                && (room >= MIN_READ || queued == 0);
            if from_start || read_on {
                dispatched_since_scan = 0;
                last_scan = std::time::Instant::now();
                if from_start {
                    ep.next_due_hint.store(i64::MAX, Ordering::SeqCst);
                }
                let scanned = self.read_due(&ep, now, from_start).await;
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
    /// queue (from its start, or after the cursor), passing over deliveries
    /// already taken; returns whether the
    /// read stopped at its limit, and when the next entry not taken (a
    /// retry) comes due.
    pub(super) async fn read_due(
        &self,
        ep: &EndpointShared,
        now: i64,
        from_start: bool,
    ) -> Result<(bool, Option<i64>), crate::store::StoreError> {
        let room = MAX_TAKEN
            .saturating_sub(ep.in_flight().len())
            .min(SCAN_BATCH);
        if room == 0 {
            return Ok((true, None));
        }
        let store = &self.inner.store;
        let skip = |e: Uuid| ep.in_flight().contains(&e);
        let after = if from_start {
            None
        } else {
            *ep.cursor.lock().unwrap_or_else(|p| p.into_inner())
        };
        let due = store.take_due(ep.uid, after, now, room, &skip).await?;
        let full = due.len() >= room;
        // Cut short: continue after the last entry next time; else the
        // next read starts over.
        *ep.cursor.lock().unwrap_or_else(|p| p.into_inner()) =
            if full { due.last().copied() } else { None };
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
