//! Delivery: one pump per endpoint takes due deliveries from the store
//! (bounded by the endpoint's `max_in_flight`), runs the endpoint's plugin
//! chain once, signs, sends, and records the attempt with the next retry.
//!
//! A delivery in flight keeps its due-index entry until its attempt is
//! recorded, so a crash leaves it due: after a restart it is sent again
//! (at-least-once; receivers dedupe on `webhook-id`). The in-memory
//! in-flight set stops the pump from taking the same delivery twice.

mod attempt;
mod batch;
mod chain;
mod endpoint;
pub mod envelope;
mod headers;
mod pump;
mod rate;
pub mod sender;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, Semaphore, watch};
use tracing::{info, warn};
use uuid::Uuid;

use crate::registry::Registry;
use crate::store::{DeliveryStatus, Due, EndpointState, EventRecord, Store, now_ms};
use crate::telemetry::Metrics;

pub use sender::Sender;

/// Settings that apply to every endpoint.
use self::chain::Breaker;
use self::endpoint::*;

/// Settings that apply to every endpoint.
#[derive(Debug, Clone)]
pub struct DispatchSettings {
    pub max_retry_after: Duration,
    /// An endpoint whose every attempt failed for this long is disabled.
    pub disable_after: Duration,
}

struct Inner {
    store: Store,
    sender: Sender,
    registry: Arc<Registry>,
    metrics: Arc<Metrics>,
    settings: DispatchSettings,
    endpoints: Mutex<HashMap<Uuid, Arc<EndpointShared>>>,
    shutdown: watch::Sender<bool>,
    in_flight: AtomicU64,
    idle: Notify,
    /// Routers sharing the store (1 on sled): each endpoint's
    /// `max_in_flight` is divided between them.
    nodes: AtomicUsize,
}

/// The delivery engine.
#[derive(Clone)]
pub struct Dispatcher {
    inner: Arc<Inner>,
}

/// What one attempt ended in, for callers that wait (ping, tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptSummary {
    pub status: DeliveryStatus,
    pub http_status: Option<u16>,
    pub error: Option<String>,
    pub latency_ms: u64,
}

/// The endpoint health the API shows.
#[derive(Debug, Clone, Default)]
pub struct Health {
    pub state: EndpointState,
    pub in_flight: usize,
}

impl Dispatcher {
    pub fn new(
        store: Store,
        sender: Sender,
        registry: Arc<Registry>,
        metrics: Arc<Metrics>,
        settings: DispatchSettings,
    ) -> Dispatcher {
        let (shutdown, _) = watch::channel(false);
        Dispatcher {
            inner: Arc::new(Inner {
                store,
                sender,
                registry,
                metrics,
                settings,
                endpoints: Mutex::new(HashMap::new()),
                shutdown,
                in_flight: AtomicU64::new(0),
                idle: Notify::new(),
                nodes: AtomicUsize::new(1),
            }),
        }
    }

    /// This node's share of an endpoint's `max_in_flight` when `nodes`
    /// routers share the store: an even split, at least 1 (so the
    /// cluster-wide bound is `max(max_in_flight, nodes)`).
    fn share(&self, max_in_flight: usize) -> usize {
        let nodes = self.inner.nodes.load(Ordering::Relaxed).max(1);
        (max_in_flight / nodes).max(1)
    }

    /// This node's share of an endpoint's `rate_limit` (requests/s) when
    /// `nodes` routers share the store: an even split, so the routers
    /// together stay within the provider's limit.
    pub(super) fn rate_share(&self, per_sec: f64) -> f64 {
        per_sec / self.inner.nodes.load(Ordering::Relaxed).max(1) as f64
    }

    /// How many routers share the store; re-divides every endpoint's
    /// in-flight bound when it changed.
    pub async fn set_nodes(&self, nodes: usize) {
        let nodes = nodes.max(1);
        if self.inner.nodes.swap(nodes, Ordering::SeqCst) != nodes {
            info!(nodes, "routers sharing the store");
            self.sync().await;
        }
    }

    /// The endpoints running now (a copy: the map's lock is not held across
    /// an await).
    fn running(&self) -> Vec<Arc<EndpointShared>> {
        self.inner
            .endpoints
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Every `(endpoint, event)` delivery this node holds (queued or in
    /// flight), for the store to renew their claims.
    pub fn held(&self) -> Vec<(Uuid, Uuid)> {
        let eps = self.running();
        let mut out = Vec::new();
        for ep in eps {
            out.extend(ep.in_flight().iter().map(|e| (ep.uid, *e)));
        }
        out
    }

    /// Reads every running endpoint's persisted state again (another
    /// node disabled or re-enabled one) and applies it.
    pub async fn refresh_health(&self) {
        let eps = self.running();
        for ep in eps {
            match self.inner.store.endpoint_state(ep.uid).await {
                Ok(state) => {
                    let changed = {
                        let mut h = ep.health();
                        let changed = h.disabled_reason != state.disabled_reason;
                        *h = state;
                        changed
                    };
                    if changed {
                        ep.wake_to_scan();
                    }
                }
                Err(e) => {
                    warn!(endpoint = %ep.uid, error = %e, "reading the endpoint's state failed")
                }
            }
        }
    }

    fn shared(&self, uid: Uuid) -> Option<Arc<EndpointShared>> {
        self.inner
            .endpoints
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&uid)
            .cloned()
    }

    /// Starts pumps for new endpoints, updates changed ones, stops removed
    /// ones, following the registry's current snapshot.

    /// Starts pumps for new endpoints, updates changed ones, stops removed
    /// ones, following the registry's current snapshot.
    pub async fn sync(&self) {
        let snap = self.inner.registry.snapshot();
        // The persisted state of endpoints not running yet, read before
        // taking the map's lock (a std mutex: never held across an await).
        let new: Vec<Uuid> = {
            let map = self
                .inner
                .endpoints
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            snap.by_uid
                .keys()
                .filter(|u| !map.contains_key(u))
                .copied()
                .collect()
        };
        let mut states = HashMap::with_capacity(new.len());
        for uid in new {
            let state = match self.inner.store.endpoint_state(uid).await {
                Ok(s) => s,
                Err(e) => {
                    warn!(endpoint = %uid, error = %e, "reading the endpoint's state failed; starting it as healthy");
                    EndpointState::default()
                }
            };
            states.insert(uid, state);
        }
        let mut map = self
            .inner
            .endpoints
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        for (uid, live) in &snap.by_uid {
            let cap = self.share(live.spec.max_in_flight.max(1));
            match map.get(uid) {
                Some(shared) => {
                    *shared.live.lock().unwrap_or_else(|p| p.into_inner()) = live.clone();
                    let old = shared.capacity.swap(cap, Ordering::SeqCst);
                    if cap > old {
                        shared.sem.add_permits(cap - old);
                    } else if cap < old {
                        shared.sem.forget_permits(old - cap);
                    }
                    shared.wake_to_scan();
                }
                None => {
                    let health = states.remove(uid).unwrap_or_default();
                    let shared = Arc::new(EndpointShared {
                        uid: *uid,
                        live: Mutex::new(live.clone()),
                        in_flight: Mutex::new(HashSet::new()),
                        queue: Mutex::new(VecDeque::new()),
                        sem: Arc::new(Semaphore::new(cap)),
                        capacity: AtomicUsize::new(cap),
                        health: Mutex::new(health),
                        notify: Notify::new(),
                        removed: AtomicBool::new(false),
                        breaker: Mutex::new(Breaker::default()),
                        plugin_gate: Arc::new(Semaphore::new(1)),
                        scan_requested: AtomicBool::new(true),
                        next_due_hint: AtomicI64::new(i64::MAX),
                        backlog: AtomicBool::new(false),
                        cursor: Mutex::new(None),
                        batcher: Default::default(),
                        rate: Default::default(),
                    });
                    map.insert(*uid, shared.clone());
                    let d = self.clone();
                    tokio::spawn(async move { d.pump(shared).await });
                }
            }
        }
        map.retain(|uid, shared| {
            let keep = snap.by_uid.contains_key(uid);
            if !keep {
                shared.removed.store(true, Ordering::SeqCst);
                shared.notify.notify_one();
            }
            keep
        });
    }

    /// Wakes an endpoint's pump (new deliveries are due).
    pub fn notify(&self, uid: Uuid) {
        if let Some(s) = self.shared(uid) {
            s.wake_to_scan();
        }
    }

    /// Hands a just-stored event to an endpoint's pump, so its first attempt
    /// needs no store reads. Dropped (the pump finds it in the due index
    /// later) when the endpoint already holds `MAX_TAKEN` deliveries;
    /// whether it was taken (if not, the caller gives back the claim a
    /// shared store made for this node at commit).
    pub fn offer(&self, uid: Uuid, event_id: Uuid, event: Arc<EventRecord>) -> bool {
        let Some(s) = self.shared(uid) else {
            return false;
        };
        {
            let mut taken = s.in_flight();
            if taken.contains(&event_id) {
                // Read from the store meanwhile: held already.
                return true;
            }
            if taken.len() >= MAX_TAKEN {
                drop(taken);
                s.backlog.store(true, Ordering::SeqCst);
                s.notify.notify_one();
                return false;
            }
            taken.insert(event_id);
            let due_ms = crate::store::initial_due_ms(event_id, event.created_ms);
            s.queue().push_back(Work::Fresh {
                event_id,
                event,
                due_ms,
            });
        }
        s.notify.notify_one();
        true
    }

    /// Whether new events should be fanned out to this endpoint.
    pub fn accepts(&self, uid: Uuid) -> bool {
        self.shared(uid)
            .is_none_or(|s| s.health().disabled_reason.is_none())
    }

    pub async fn health(&self, uid: Uuid) -> Health {
        match self.shared(uid) {
            Some(s) => Health {
                state: s.health().clone(),
                in_flight: s.in_flight().len(),
            },
            None => Health {
                state: self
                    .inner
                    .store
                    .endpoint_state(uid)
                    .await
                    .unwrap_or_default(),
                in_flight: 0,
            },
        }
    }

    /// Re-enables an endpoint disabled by 410 or sustained failure.
    pub async fn enable(&self, uid: Uuid) -> Result<(), crate::store::StoreError> {
        let state = EndpointState::default();
        self.inner.store.put_endpoint_state(uid, &state).await?;
        if let Some(s) = self.shared(uid) {
            *s.health() = state;
            s.wake_to_scan();
        }
        Ok(())
    }

    pub fn in_flight(&self) -> u64 {
        self.inner.in_flight.load(Ordering::Relaxed)
    }

    /// Stops taking new work and waits (up to `grace`) for attempts in
    /// flight to finish. Unfinished ones stay due in the store.
    pub async fn shutdown(&self, grace: Duration) {
        let _ = self.inner.shutdown.send(true);
        let deadline = tokio::time::Instant::now() + grace;
        while self.inner.in_flight.load(Ordering::SeqCst) > 0 {
            if tokio::time::timeout_at(deadline, self.inner.idle.notified())
                .await
                .is_err()
            {
                warn!(
                    in_flight = self.inner.in_flight.load(Ordering::SeqCst),
                    "shutdown grace period over; unfinished attempts stay due and run after restart"
                );
                break;
            }
        }
    }

    /// Marks every pending delivery of a disabled endpoint as disabled (in
    /// the background). `recover` puts them back after re-enabling.
    fn disable_pending(&self, uid: Uuid, reason: String) {
        let this = self.clone();
        tokio::spawn(async move {
            let taken: HashSet<Uuid> = this
                .shared(uid)
                .map(|s| s.in_flight().clone())
                .unwrap_or_default();
            match this.inner.store.disable_pending(uid, &reason, taken).await {
                Ok(n) => info!(endpoint = %uid, count = n, "pending deliveries marked disabled"),
                Err(e) => {
                    warn!(endpoint = %uid, error = %e, "marking pending deliveries disabled failed")
                }
            }
        });
    }

    /// Puts one delivery back in the due index now (manual retry/recover).
    pub async fn requeue(&self, event: Uuid, uid: Uuid) -> Result<bool, crate::store::StoreError> {
        let Some(mut rec) = self.inner.store.delivery(event, uid).await? else {
            return Ok(false);
        };
        if matches!(
            rec.status,
            DeliveryStatus::Delivered | DeliveryStatus::Failed
        ) {
            // A body kept only for display (transformed): run the plugins
            // again, as for any finished delivery.
            rec.output = None;
        }
        if let Some(s) = self.shared(uid) {
            if s.in_flight().contains(&event) {
                return Ok(true);
            }
        }
        self.inner.store.requeue(event, uid, rec, now_ms()).await?;
        self.notify(uid);
        Ok(true)
    }

    /// Runs one attempt of `event` to `uid` right now, outside the pump, and
    /// returns its result (test pings). The event must already be stored.
    pub async fn attempt_now(
        &self,
        event: Uuid,
        uid: Uuid,
    ) -> Result<Option<AttemptSummary>, crate::store::StoreError> {
        let Some(ep) = self.shared(uid) else {
            return Ok(None);
        };
        let Some(rec) = self.inner.store.delivery(event, uid).await? else {
            return Ok(None);
        };
        let Some(due_ms) = rec.due_ms else {
            return Ok(None);
        };
        {
            let mut taken = ep.in_flight();
            if !taken.insert(event) {
                return Ok(None);
            }
        }
        let live = ep.live();
        let r = self
            .run_attempt(&ep, &live, Due { event, due_ms }, None)
            .await;
        ep.in_flight().remove(&event);
        r
    }
}
