//! Delivery: one pump per endpoint takes due deliveries from the store
//! (bounded by the endpoint's `max_in_flight`), runs the endpoint's plugin
//! chain once, signs, sends, and records the attempt with the next retry.
//!
//! A delivery in flight keeps its due-index entry until its attempt is
//! recorded, so a crash leaves it due: after a restart it is sent again
//! (at-least-once; receivers dedupe on `webhook-id`). The in-memory
//! in-flight set stops the pump from taking the same delivery twice.

pub mod envelope;
pub mod sender;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};
use tracing::{Instrument, debug, info, warn};
use uuid::Uuid;

use crate::plugins::{Outcome, PluginError, PluginErrorKind, PluginEvent};
use crate::policy::retry;
use crate::registry::{LiveEndpoint, Registry};
use crate::signing;
use crate::store::{
    AttemptRecord, AttemptUpdate, DeliveryRecord, DeliveryStatus, Due, EndpointState, EventRecord,
    Store, StoredOutput, now_ms,
};
use crate::telemetry::Metrics;

pub use sender::Sender;

/// Settings that apply to every endpoint.
#[derive(Debug, Clone)]
pub struct DispatchSettings {
    pub max_retry_after: Duration,
    /// An endpoint whose every attempt failed for this long is disabled.
    pub disable_after: Duration,
}

/// Per-endpoint live state shared by its pump and its attempts.
struct EndpointShared {
    uid: Uuid,
    live: Mutex<Arc<LiveEndpoint>>,
    /// Deliveries taken from the store's due index: queued or in flight.
    /// The pump never takes a delivery that is in here.
    in_flight: Mutex<HashSet<Uuid>>,
    /// Work ready to start, oldest first (fresh events handed over by
    /// ingest, and due entries read from the store).
    queue: Mutex<VecDeque<Work>>,
    sem: Arc<Semaphore>,
    capacity: AtomicUsize,
    health: Mutex<EndpointState>,
    notify: Notify,
    removed: AtomicBool,
    /// Plugin circuit breaker: after a plugin traps, times out or runs out
    /// of memory, the endpoint's plugin calls go one at a time, each after
    /// a growing pause, until one succeeds — so a plugin failing on every
    /// event cannot eat the CPU other endpoints need.
    breaker: Mutex<Breaker>,
    plugin_gate: Arc<Semaphore>,
    /// The due index may hold work the queue does not: read it at the
    /// pump's next turn (set at start, by `notify`, by a dropped offer).
    scan_requested: AtomicBool,
    /// Earliest due time known to be waiting in the store (retries);
    /// `i64::MAX` when none. Saves scanning the index on every dispatch.
    next_due_hint: AtomicI64,
}

#[derive(Default)]
struct Breaker {
    failures: u32,
    next_call: Option<tokio::time::Instant>,
}

impl Breaker {
    /// Pause before the next call after `failures` costly plugin failures:
    /// 50 ms doubling, at most 10 s.
    fn pause(failures: u32) -> Duration {
        (Duration::from_millis(50) * 2u32.saturating_pow(failures.saturating_sub(1).min(8)))
            .min(Duration::from_secs(10))
    }
}

/// One delivery to attempt.
enum Work {
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
    fn event_id(&self) -> Uuid {
        match self {
            Work::Fresh { event_id, .. } => *event_id,
            Work::Stored(d) => d.event,
        }
    }
}

/// Most deliveries an endpoint holds in memory (queued + in flight); the
/// rest wait in the store's due index.
const MAX_TAKEN: usize = 8192;
/// Due entries read from the store at a time.
const SCAN_BATCH: usize = 256;

impl EndpointShared {
    fn queue(&self) -> std::sync::MutexGuard<'_, VecDeque<Work>> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wakes the pump and has it read the due index at its next turn.
    fn wake_to_scan(&self) {
        self.scan_requested.store(true, Ordering::SeqCst);
        self.notify.notify_one();
    }

    fn live(&self) -> Arc<LiveEndpoint> {
        self.live.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn health(&self) -> std::sync::MutexGuard<'_, EndpointState> {
        self.health.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn in_flight(&self) -> std::sync::MutexGuard<'_, HashSet<Uuid>> {
        self.in_flight.lock().unwrap_or_else(|p| p.into_inner())
    }
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

enum ChainResult {
    Skip(String),
    Output(StoredOutput),
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
            }),
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
    pub fn sync(&self) {
        let snap = self.inner.registry.snapshot();
        let mut map = self
            .inner
            .endpoints
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        for (uid, live) in &snap.by_uid {
            let cap = live.spec.max_in_flight.max(1);
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
                    let health = self.inner.store.endpoint_state(*uid).unwrap_or_default();
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
    /// later) when the endpoint already holds `MAX_TAKEN` deliveries.
    pub fn offer(&self, uid: Uuid, event_id: Uuid, event: Arc<EventRecord>) {
        let Some(s) = self.shared(uid) else { return };
        {
            let mut taken = s.in_flight();
            if taken.len() >= MAX_TAKEN || !taken.insert(event_id) {
                drop(taken);
                s.wake_to_scan();
                return;
            }
            let due_ms = crate::store::initial_due_ms(event_id, event.created_ms);
            s.queue().push_back(Work::Fresh {
                event_id,
                event,
                due_ms,
            });
        }
        s.notify.notify_one();
    }

    /// Whether new events should be fanned out to this endpoint.
    pub fn accepts(&self, uid: Uuid) -> bool {
        self.shared(uid)
            .is_none_or(|s| s.health().disabled_reason.is_none())
    }

    pub fn health(&self, uid: Uuid) -> Health {
        match self.shared(uid) {
            Some(s) => Health {
                state: s.health().clone(),
                in_flight: s.in_flight().len(),
            },
            None => Health {
                state: self.inner.store.endpoint_state(uid).unwrap_or_default(),
                in_flight: 0,
            },
        }
    }

    /// Re-enables an endpoint disabled by 410 or sustained failure.
    pub fn enable(&self, uid: Uuid) -> Result<(), crate::store::StoreError> {
        let state = EndpointState::default();
        self.inner.store.put_endpoint_state(uid, &state)?;
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

    async fn pump(self, ep: Arc<EndpointShared>) {
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
                let scanned = {
                    let mut taken = ep.in_flight();
                    let room = MAX_TAKEN.saturating_sub(taken.len()).min(SCAN_BATCH);
                    if room == 0 {
                        Ok((true, None))
                    } else {
                        store
                            .due(ep.uid, now, room, |e| taken.contains(&e))
                            .and_then(|due| {
                                let full = due.len() >= room;
                                let mut q = ep.queue();
                                for d in due {
                                    taken.insert(d.event);
                                    q.push_back(Work::Stored(d));
                                }
                                drop(q);
                                // Everything due now is taken: remember when the
                                // next entry (a retry) comes due.
                                let next = if full {
                                    None
                                } else {
                                    store.next_due_ms(ep.uid, taken.len() + 1, |e| {
                                        taken.contains(&e)
                                    })?
                                };
                                Ok((full, next))
                            })
                    }
                };
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

    async fn attempt(self, ep: Arc<EndpointShared>, work: Work, permit: OwnedSemaphorePermit) {
        let live = ep.live();
        let event_id = work.event_id();
        let result = match work {
            Work::Stored(due) => self.run_attempt(&ep, &live, due).await,
            Work::Fresh {
                event_id,
                event,
                due_ms,
            } => {
                let rec = DeliveryRecord {
                    account: event.account.clone(),
                    endpoint: live.spec.id.clone(),
                    status: DeliveryStatus::Delivering,
                    attempts: 0,
                    due_ms: Some(due_ms),
                    last_status: None,
                    last_error: None,
                    updated_ms: due_ms,
                    reason: None,
                    output: None,
                };
                self.attempt_with(
                    &ep,
                    &live,
                    Due {
                        event: event_id,
                        due_ms,
                    },
                    rec,
                    &event,
                )
                .await
            }
        };
        if let Err(e) = result {
            warn!(error = %e, "attempt could not be recorded; it stays due and will run again");
        }
        drop(permit);
        ep.in_flight().remove(&event_id);
        ep.notify.notify_one();
        if self.inner.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.inner.idle.notify_waiters();
        }
    }

    /// One attempt of one delivery; `Err` only for storage failures.
    async fn run_attempt(
        &self,
        ep: &EndpointShared,
        live: &LiveEndpoint,
        due: Due,
    ) -> Result<Option<AttemptSummary>, crate::store::StoreError> {
        let store = &self.inner.store;
        let stale = |store: &Store| store.remove_due(ep.uid, due);
        let Some(rec) = store.delivery(due.event, ep.uid)? else {
            stale(store)?;
            return Ok(None);
        };
        if rec.status.is_final() || rec.due_ms != Some(due.due_ms) {
            stale(store)?;
            return Ok(None);
        }
        let Some(event) = store.event(&live.spec.account, due.event)? else {
            stale(store)?;
            return Ok(None);
        };
        self.attempt_with(ep, live, due, rec, &event).await
    }

    /// The attempt itself, once the delivery and event records are at hand.
    async fn attempt_with(
        &self,
        ep: &EndpointShared,
        live: &LiveEndpoint,
        due: Due,
        mut rec: DeliveryRecord,
        event: &EventRecord,
    ) -> Result<Option<AttemptSummary>, crate::store::StoreError> {
        let delivery_id = envelope::delivery_id(due.event, ep.uid);
        let output = match rec.output.take() {
            Some(o) => Ok(ChainResult::Output(o)),
            None if live.chain.is_empty() => {
                self.run_chain(live, due.event, delivery_id, event).await
            }
            None => {
                self.run_chain_guarded(ep, live, due.event, delivery_id, event)
                    .await
            }
        };
        let now = now_ms();
        let output = match output {
            Ok(ChainResult::Output(o)) => o,
            Ok(ChainResult::Skip(reason)) => {
                debug!(%reason, "filtered by a plugin");
                rec.status = DeliveryStatus::Filtered;
                rec.reason = Some(reason);
                rec.due_ms = None;
                rec.updated_ms = now;
                self.record(ep, due, &rec, None, None).await?;
                self.inner
                    .metrics
                    .delivery(&live.spec.account, &live.spec.id, "filtered");
                return Ok(Some(AttemptSummary {
                    status: rec.status,
                    http_status: None,
                    error: None,
                    latency_ms: 0,
                }));
            }
            Err(e) => {
                warn!(plugin = %e.plugin, kind = e.kind.as_str(), error = %e.message, "plugin failed; the attempt counts as failed");
                self.inner.metrics.plugin_error(&e.plugin, e.kind.as_str());
                let attempt = AttemptRecord {
                    at_ms: now,
                    status: None,
                    error: Some(e.to_string()),
                    latency_us: 0,
                    response: Vec::new(),
                };
                return self
                    .failed(ep, live, due, rec, None, attempt, None)
                    .await
                    .map(Some);
            }
        };

        // Sign and send.
        let headers = match self.headers(live, delivery_id, &output, now) {
            Ok(h) => h,
            Err(msg) => {
                let attempt = AttemptRecord {
                    at_ms: now,
                    status: None,
                    error: Some(msg),
                    latency_us: 0,
                    response: Vec::new(),
                };
                return self
                    .failed(ep, live, due, rec, Some(output), attempt, None)
                    .await
                    .map(Some);
            }
        };
        // The body goes out as `Bytes` (no copy); it is copied back only on
        // the failure path, where it may be stored for the retries.
        let mut output = output;
        let body = Bytes::from(std::mem::take(&mut output.body));
        let (result, latency) = self
            .inner
            .sender
            .post(&live.uri, headers, body.clone(), live.spec.timeout)
            .await;
        self.inner.metrics.attempt_latency.observe(latency);
        let at_ms = now_ms();
        match result {
            Ok(resp) if (200..300).contains(&resp.status) => {
                rec.attempts += 1;
                rec.status = DeliveryStatus::Delivered;
                rec.due_ms = None;
                rec.last_status = Some(resp.status);
                rec.last_error = None;
                rec.updated_ms = at_ms;
                let attempt = AttemptRecord {
                    at_ms,
                    status: Some(resp.status),
                    error: None,
                    latency_us: latency.as_micros() as u64,
                    response: resp.excerpt,
                };
                let state = {
                    let mut h = ep.health();
                    let had_failures = h.consecutive_failures > 0 || h.last_success_ms.is_none();
                    h.consecutive_failures = 0;
                    h.first_failure_ms = None;
                    h.last_success_ms = Some(at_ms);
                    had_failures.then(|| h.clone())
                };
                self.record(ep, due, &rec, Some(&attempt), state.as_ref())
                    .await?;
                self.inner
                    .metrics
                    .delivery(&live.spec.account, &live.spec.id, "delivered");
                debug!(
                    status = resp.status,
                    latency_ms = latency.as_millis() as u64,
                    attempt = rec.attempts,
                    "delivered"
                );
                Ok(Some(AttemptSummary {
                    status: rec.status,
                    http_status: Some(resp.status),
                    error: None,
                    latency_ms: latency.as_millis() as u64,
                }))
            }
            Ok(resp) => {
                let retry_after = if matches!(resp.status, 429 | 503) {
                    resp.retry_after
                        .as_deref()
                        .and_then(|v| retry::parse_retry_after(v, std::time::SystemTime::now()))
                } else {
                    None
                };
                let status = resp.status;
                let attempt = AttemptRecord {
                    at_ms,
                    status: Some(status),
                    error: None,
                    latency_us: latency.as_micros() as u64,
                    response: resp.excerpt,
                };
                if status == 410 {
                    return self.gone(ep, live, due, rec, attempt).await.map(Some);
                }
                output.body = body.to_vec();
                self.failed(ep, live, due, rec, Some(output), attempt, retry_after)
                    .await
                    .map(Some)
            }
            Err(e) => {
                self.inner
                    .metrics
                    .delivery_failure(&live.spec.account, &live.spec.id, e.cause());
                let attempt = AttemptRecord {
                    at_ms,
                    status: None,
                    error: Some(e.to_string()),
                    latency_us: latency.as_micros() as u64,
                    response: Vec::new(),
                };
                output.body = body.to_vec();
                self.failed(ep, live, due, rec, Some(output), attempt, None)
                    .await
                    .map(Some)
            }
        }
    }

    /// Runs the chain through the endpoint's plugin circuit breaker.
    async fn run_chain_guarded(
        &self,
        ep: &EndpointShared,
        live: &LiveEndpoint,
        event_id: Uuid,
        delivery_id: Uuid,
        event: &EventRecord,
    ) -> Result<ChainResult, PluginError> {
        let tripped = ep
            .breaker
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .failures
            > 0;
        let _gate = if tripped {
            let gate = ep.plugin_gate.clone().acquire_owned().await;
            let next = ep
                .breaker
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .next_call;
            if let Some(at) = next {
                tokio::time::sleep_until(at).await;
            }
            gate.ok()
        } else {
            None
        };
        let result = self.run_chain(live, event_id, delivery_id, event).await;
        let mut b = ep.breaker.lock().unwrap_or_else(|p| p.into_inner());
        match &result {
            Err(e)
                if matches!(
                    e.kind,
                    PluginErrorKind::Trap
                        | PluginErrorKind::Deadline
                        | PluginErrorKind::OutOfMemory
                ) =>
            {
                b.failures = b.failures.saturating_add(1);
                let pause = Breaker::pause(b.failures);
                b.next_call = Some(tokio::time::Instant::now() + pause);
                if b.failures == 1 {
                    warn!(plugin = %e.plugin, kind = e.kind.as_str(), "plugin failing: its calls on this endpoint now go one at a time with a growing pause until one succeeds");
                }
            }
            Err(_) => {}
            Ok(_) => {
                if b.failures > 0 {
                    info!("plugin calls succeed again; circuit breaker reset");
                }
                *b = Breaker::default();
            }
        }
        result
    }

    /// Runs the endpoint's plugin chain on a blocking thread.
    async fn run_chain(
        &self,
        live: &LiveEndpoint,
        event_id: Uuid,
        delivery_id: Uuid,
        event: &EventRecord,
    ) -> Result<ChainResult, PluginError> {
        let default_body = |payload: &[u8]| {
            envelope::keygen_envelope(&envelope::EnvelopeInput {
                delivery_id,
                account: &event.account,
                endpoint_url: &live.spec.url,
                event_type: &event.event_type,
                created_ms: event.created_ms,
                payload,
            })
        };
        if live.chain.is_empty() {
            return Ok(ChainResult::Output(StoredOutput {
                body: default_body(&event.payload),
                content_type: "application/json".into(),
                headers: Vec::new(),
            }));
        }
        let chain = live.chain.clone();
        let mut pe = PluginEvent {
            id: event_id.to_string(),
            account: event.account.clone(),
            endpoint: live.spec.id.clone(),
            event_type: event.event_type.clone(),
            created: envelope::rfc3339(event.created_ms),
            created_ms: event.created_ms,
            payload: event.payload.clone(),
        };
        let start = std::time::Instant::now();
        let end = tokio::task::spawn_blocking(move || -> Result<ChainEnd, PluginError> {
            let budget = chain[0].chain_deadline();
            for (i, binding) in chain.iter().enumerate() {
                if i > 0 && start.elapsed() > budget {
                    return Err(binding.chain_deadline_error(start.elapsed()));
                }
                match binding.call(&pe)? {
                    Outcome::Pass => {}
                    Outcome::Skip(reason) => {
                        return Ok(ChainEnd::Skip(format!("{}: {reason}", binding.plugin())));
                    }
                    Outcome::Rewrite(payload) => pe.payload = payload,
                    Outcome::Replace {
                        body,
                        content_type,
                        headers,
                    } => {
                        return Ok(ChainEnd::Replace(StoredOutput {
                            body,
                            content_type,
                            headers,
                        }));
                    }
                }
            }
            Ok(ChainEnd::Payload(pe.payload))
        })
        .await
        .map_err(|e| {
            PluginError::new(
                "chain",
                crate::plugins::PluginErrorKind::Internal,
                format!("plugin task failed: {e}"),
            )
        })?;
        self.inner.metrics.plugin_duration.observe(start.elapsed());
        Ok(match end? {
            ChainEnd::Skip(reason) => ChainResult::Skip(reason),
            ChainEnd::Replace(out) => ChainResult::Output(out),
            ChainEnd::Payload(payload) => ChainResult::Output(StoredOutput {
                body: default_body(&payload),
                content_type: "application/json".into(),
                headers: Vec::new(),
            }),
        })
    }

    fn headers(
        &self,
        live: &LiveEndpoint,
        delivery_id: Uuid,
        out: &StoredOutput,
        now: i64,
    ) -> Result<http::HeaderMap, String> {
        let mut h = http::HeaderMap::new();
        let ct = HeaderValue::from_str(&out.content_type)
            .map_err(|_| "invalid content type from plugin".to_string())?;
        h.insert(http::header::CONTENT_TYPE, ct);
        h.insert(
            http::header::USER_AGENT,
            HeaderValue::from_static(sender::USER_AGENT),
        );
        for (k, v) in &out.headers {
            let name = HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| format!("invalid header name {k:?} from plugin"))?;
            let value = HeaderValue::from_str(v)
                .map_err(|_| format!("invalid value for header {k:?} from plugin"))?;
            h.append(name, value);
        }
        let id = delivery_id.to_string();
        let ts = now / 1000;
        if live.spec.standard_signature {
            let sig = signing::standard_signature(&live.spec.secrets, now, &id, ts, &out.body);
            h.insert(
                "webhook-id",
                HeaderValue::from_str(&id).map_err(|e| e.to_string())?,
            );
            h.insert("webhook-timestamp", HeaderValue::from(ts));
            h.insert(
                "webhook-signature",
                HeaderValue::from_str(&sig).map_err(|e| e.to_string())?,
            );
        }
        if live.spec.keygen_signature {
            let snap = self.inner.registry.snapshot();
            let key = snap
                .account(&live.spec.account)
                .and_then(|a| a.keygen_key.clone())
                .ok_or("the account has no keygen_signing_key")?;
            let host = live
                .uri
                .authority()
                .map(|a| a.as_str().to_string())
                .unwrap_or_default();
            let path = live
                .uri
                .path_and_query()
                .map(|p| p.as_str().to_string())
                .unwrap_or_else(|| "/".into());
            let date = httpdate::fmt_http_date(std::time::SystemTime::now());
            let k = signing::keygen_sign(&key, &live.spec.account, &host, &path, &date, &out.body);
            h.insert(
                http::header::DATE,
                HeaderValue::from_str(&k.date).map_err(|e| e.to_string())?,
            );
            h.insert(
                "digest",
                HeaderValue::from_str(&k.digest).map_err(|e| e.to_string())?,
            );
            h.insert(
                "keygen-signature",
                HeaderValue::from_str(&k.signature).map_err(|e| e.to_string())?,
            );
        }
        Ok(h)
    }

    /// Records a failed attempt and schedules the next, or fails for good.
    #[allow(clippy::too_many_arguments)]
    async fn failed(
        &self,
        ep: &EndpointShared,
        live: &LiveEndpoint,
        due: Due,
        mut rec: DeliveryRecord,
        output: Option<StoredOutput>,
        attempt: AttemptRecord,
        retry_after: Option<Duration>,
    ) -> Result<AttemptSummary, crate::store::StoreError> {
        let now = attempt.at_ms;
        rec.attempts += 1;
        rec.last_status = attempt.status;
        rec.last_error = attempt.error.clone();
        rec.updated_ms = now;
        let next = live.spec.retry_schedule.next_delay(
            rec.attempts,
            retry_after,
            self.inner.settings.max_retry_after,
        );
        match next {
            Some(d) => {
                rec.status = DeliveryStatus::Failing;
                rec.due_ms = Some(now.saturating_add(retry::millis_i64(d)));
                // Plugin output is kept so retries resend the same bytes
                // without running the plugins again. Without plugins the
                // body is the default envelope, a pure function of the
                // stored event: rebuilt at each retry instead of stored
                // twice (halves the store with a backlog of retries).
                rec.output = if live.chain.is_empty() { None } else { output };
            }
            None => {
                rec.status = DeliveryStatus::Failed;
                rec.due_ms = None;
                rec.output = None;
            }
        }
        let (state, disable) = {
            let mut h = ep.health();
            h.consecutive_failures += 1;
            let first = *h.first_failure_ms.get_or_insert(now);
            h.last_error = Some(match (&attempt.status, &attempt.error) {
                (Some(s), _) => format!("HTTP {s}"),
                (None, Some(e)) => e.clone(),
                (None, None) => "failed".into(),
            });
            let disable = h.disabled_reason.is_none()
                && Duration::from_millis((now - first).max(0) as u64)
                    >= self.inner.settings.disable_after;
            if disable {
                h.disabled_reason = Some(format!(
                    "every attempt failed for {} (last error: {})",
                    humantime::format_duration(self.inner.settings.disable_after),
                    h.last_error.clone().unwrap_or_default()
                ));
                h.disabled_at_ms = Some(now);
            }
            (h.clone(), disable)
        };
        if state.disabled_reason.is_some() && rec.status == DeliveryStatus::Failing {
            rec.status = DeliveryStatus::Disabled;
            rec.reason = state.disabled_reason.clone();
            rec.due_ms = None;
            rec.output = None;
        }
        self.record(ep, due, &rec, Some(&attempt), Some(&state))
            .await?;
        if let (DeliveryStatus::Failing, Some(t)) = (rec.status, rec.due_ms) {
            // Written: the pump reads the index when this retry comes due.
            ep.next_due_hint.fetch_min(t, Ordering::SeqCst);
        }
        let outcome = match rec.status {
            DeliveryStatus::Failed => "failed",
            DeliveryStatus::Disabled => "disabled",
            _ => "attempt_failed",
        };
        self.inner
            .metrics
            .delivery(&live.spec.account, &live.spec.id, outcome);
        info!(
            status = ?attempt.status,
            error = attempt.error.as_deref().unwrap_or(""),
            attempts = rec.attempts,
            next_in_ms = rec.due_ms.map(|d| d - now),
            "attempt failed"
        );
        if disable {
            warn!(endpoint = %live.spec.id, reason = ?state.disabled_reason, "endpoint disabled");
            self.disable_pending(ep.uid, state.disabled_reason.clone().unwrap_or_default());
        }
        Ok(AttemptSummary {
            status: rec.status,
            http_status: attempt.status,
            error: attempt.error,
            latency_ms: attempt.latency_us / 1000,
        })
    }

    /// Stores what an attempt taken from the due entry `due` changed — the
    /// delivery record, the attempt, the endpoint's state — in one batch.
    async fn record(
        &self,
        ep: &EndpointShared,
        due: Due,
        rec: &DeliveryRecord,
        attempt: Option<&AttemptRecord>,
        endpoint_state: Option<&EndpointState>,
    ) -> Result<(), crate::store::StoreError> {
        self.inner
            .store
            .record_attempt(AttemptUpdate {
                event: due.event,
                endpoint: ep.uid,
                old_due_ms: Some(due.due_ms),
                record: rec,
                attempt,
                endpoint_state,
            })
            .await
    }

    /// 410 Gone: the receiver asks us to stop. Disable the endpoint.
    async fn gone(
        &self,
        ep: &EndpointShared,
        live: &LiveEndpoint,
        due: Due,
        mut rec: DeliveryRecord,
        attempt: AttemptRecord,
    ) -> Result<AttemptSummary, crate::store::StoreError> {
        let reason = "the receiver answered 410 Gone".to_string();
        let state = {
            let mut h = ep.health();
            h.disabled_reason = Some(reason.clone());
            h.disabled_at_ms = Some(attempt.at_ms);
            h.last_error = Some("HTTP 410".into());
            h.clone()
        };
        rec.attempts += 1;
        rec.status = DeliveryStatus::Disabled;
        rec.reason = Some(reason.clone());
        rec.last_status = attempt.status;
        rec.due_ms = None;
        rec.output = None;
        rec.updated_ms = attempt.at_ms;
        self.record(ep, due, &rec, Some(&attempt), Some(&state))
            .await?;
        self.inner
            .metrics
            .delivery(&live.spec.account, &live.spec.id, "disabled");
        info!(endpoint = %live.spec.id, "endpoint disabled: receiver answered 410 Gone");
        self.disable_pending(ep.uid, reason);
        Ok(AttemptSummary {
            status: rec.status,
            http_status: Some(410),
            error: None,
            latency_ms: attempt.latency_us / 1000,
        })
    }

    /// Marks every pending delivery of a disabled endpoint as disabled (in
    /// the background). `recover` puts them back after re-enabling.
    fn disable_pending(&self, uid: Uuid, reason: String) {
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let taken: HashSet<Uuid> = this
                .shared(uid)
                .map(|s| s.in_flight().clone())
                .unwrap_or_default();
            match this
                .inner
                .store
                .disable_pending(uid, &reason, |e| taken.contains(&e))
            {
                Ok(n) => info!(endpoint = %uid, count = n, "pending deliveries marked disabled"),
                Err(e) => {
                    warn!(endpoint = %uid, error = %e, "marking pending deliveries disabled failed")
                }
            }
        });
    }

    /// Puts one delivery back in the due index now (manual retry/recover).
    pub fn requeue(&self, event: Uuid, uid: Uuid) -> Result<bool, crate::store::StoreError> {
        let Some(rec) = self.inner.store.delivery(event, uid)? else {
            return Ok(false);
        };
        if let Some(s) = self.shared(uid) {
            if s.in_flight().contains(&event) {
                return Ok(true);
            }
        }
        self.inner.store.requeue(event, uid, rec, now_ms())?;
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
        let Some(rec) = self.inner.store.delivery(event, uid)? else {
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
        let r = self.run_attempt(&ep, &live, Due { event, due_ms }).await;
        ep.in_flight().remove(&event);
        r
    }
}

/// Where a plugin chain ended.
enum ChainEnd {
    Skip(String),
    Replace(StoredOutput),
    /// Every plugin passed or rewrote: wrap this payload in the envelope.
    Payload(Vec<u8>),
}
