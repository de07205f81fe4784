//! One endpoint's live delivery state, shared by its pump and its
//! attempts: the work queue, the deliveries taken, the in-flight bound,
//! health, and the plugin circuit breaker's state.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, Semaphore};
use uuid::Uuid;

use super::chain::*;
use crate::registry::LiveEndpoint;
use crate::store::{Due, EndpointState, EventRecord};

/// Per-endpoint live state shared by its pump and its attempts.
pub(super) struct EndpointShared {
    pub(super) uid: Uuid,
    pub(super) live: Mutex<Arc<LiveEndpoint>>,
    /// Deliveries taken from the store's due index: queued or in flight.
    /// The pump never takes a delivery that is in here.
    pub(super) in_flight: Mutex<HashSet<Uuid>>,
    /// Work ready to start, oldest first (fresh events handed over by
    /// ingest, and due entries read from the store).
    pub(super) queue: Mutex<VecDeque<Work>>,
    pub(super) sem: Arc<Semaphore>,
    pub(super) capacity: AtomicUsize,
    pub(super) health: Mutex<EndpointState>,
    pub(super) notify: Notify,
    pub(super) removed: AtomicBool,
    /// Plugin circuit breaker: after a plugin traps, times out or runs out
    /// of memory, the endpoint's plugin calls go one at a time, each after
    /// a growing pause, until one succeeds — so a plugin failing on every
    /// event cannot eat the CPU other endpoints need.
    pub(super) breaker: Mutex<Breaker>,
    pub(super) plugin_gate: Arc<Semaphore>,
    /// The due index may hold work the queue does not: read it at the
    /// pump's next turn (set at start, by `notify`, by a dropped offer).
    pub(super) scan_requested: AtomicBool,
    /// Earliest due time known to be waiting in the store (retries);
    /// `i64::MAX` when none. Saves scanning the index on every dispatch.
    pub(super) next_due_hint: AtomicI64,
    /// Ingest left fresh work in the store (the endpoint held `MAX_TAKEN`
    /// deliveries): the next read continues from the cursor.
    pub(super) backlog: AtomicBool,
    /// Where the last read of the store's queue stopped when it was cut
    /// short: the next read continues after it instead of walking past
    /// every delivery taken since (up to `MAX_TAKEN`). A std mutex: held
    /// to copy or set it.
    pub(super) cursor: Mutex<Option<Due>>,
    /// The open batch (endpoints with `batch = {...}`).
    pub(super) batcher: Arc<super::batch::Batcher>,
    /// `rate_limit`: the endpoint's token bucket.
    pub(super) rate: super::rate::RateLimiter,
}

/// One delivery to attempt.
pub(super) enum Work {
    /// Just ingested: the event is in memory and its delivery record is the
    /// initial one, so the attempt reads nothing from the store.
    Fresh {
        event_id: Uuid,
        event: Arc<EventRecord>,
        due_ms: i64,
    },
    /// Found in the due index: records are read at the attempt.
    Stored(Due),
}

impl Work {
    pub(super) fn event_id(&self) -> Uuid {
        match self {
            Work::Fresh { event_id, .. } => *event_id,
            Work::Stored(d) => d.event,
        }
    }
}

/// Most deliveries an endpoint holds in memory (queued + in flight); the
/// rest wait in the store's due index.
pub(super) const MAX_TAKEN: usize = 8192;
/// Due entries read from the store at a time.
pub(super) const SCAN_BATCH: usize = 256;
/// Fewest free places worth a read from the cursor (unless the memory
/// queue is empty): reading one entry at a time would cost a store read
/// per delivery.
pub(super) const MIN_READ: usize = 64;

impl EndpointShared {
    pub(super) fn queue(&self) -> std::sync::MutexGuard<'_, VecDeque<Work>> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wakes the pump and has it read the due index at its next turn.
    pub(super) fn wake_to_scan(&self) {
        self.scan_requested.store(true, Ordering::SeqCst);
        self.notify.notify_one();
    }

    pub(super) fn live(&self) -> Arc<LiveEndpoint> {
        self.live.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(super) fn health(&self) -> std::sync::MutexGuard<'_, EndpointState> {
        self.health.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn in_flight(&self) -> std::sync::MutexGuard<'_, HashSet<Uuid>> {
        self.in_flight.lock().unwrap_or_else(|p| p.into_inner())
    }
}
