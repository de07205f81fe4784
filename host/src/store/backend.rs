//! The store interface: every operation ingest, delivery, the admin API,
//! retention and the dashboard need, typed, and nothing about keys or
//! tables. A backend (`store/sled/`, later PostgreSQL) implements it, and
//! the conformance suite (`store/conformance.rs`) holds every backend to
//! the same behaviour.
//!
//! A trait object (`Arc<dyn Backend>`, chosen from config at start-up as
//! svix-server picks its queue) rather than an enum of backends: a new
//! backend is one folder and one arm in [`super::open`], and nothing above
//! the seam changes. `async_trait` makes the async methods object-safe; the
//! cost (one boxed future per call) is noise beside a store operation. The
//! "skip" arguments are `&dyn Fn` for the same reason.

use std::collections::HashSet;
use std::sync::Arc;

use async_trait::async_trait;
use uuid::Uuid;

use super::error::StoreError;
use super::records::*;
use crate::telemetry::Histogram;

/// Deliveries the caller already holds (queued or in flight): a due read
/// passes over them.
pub type Skip<'a> = &'a (dyn Fn(Uuid) -> bool + Send + Sync);

#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// The backend's name, for logs and `/readyz`.
    fn name(&self) -> &'static str;

    // ---- ingest -----------------------------------------------------------

    /// Stores an event, its deliveries and their due entries atomically and
    /// durably before answering, or finds the event already stored under
    /// the same idempotency key (account-scoped) within
    /// [`IDEMPOTENCY_WINDOW_MS`]: then nothing new is stored and the answer
    /// names the first event. Concurrent commits are grouped.
    async fn commit(&self, event: NewEvent) -> Result<Committed, StoreError> {
        self.commit_scheduled(event, None).await
    }

    /// [`Backend::commit`] with a schedule: the deliveries are due at
    /// `schedule.due_ms`, and a pending scheduled event of the same account
    /// under the same key is cancelled in the same atomic write
    /// (`Committed::replaced`).
    async fn commit_scheduled(
        &self,
        event: NewEvent,
        schedule: Option<Schedule>,
    ) -> Result<Committed, StoreError>;

    /// Cancels a pending scheduled event of `account` (by key or id),
    /// durably: its due entries leave the queue and its deliveries become
    /// `cancelled`. `None` when there is none pending (unknown, due within
    /// [`CANCEL_MARGIN_MS`], or already cancelled).
    async fn cancel_scheduled(
        &self,
        account: &str,
        target: CancelTarget,
    ) -> Result<Option<Cancelled>, StoreError>;

    /// The schedule of an account's scheduled event (`None` for ordinary
    /// events and other accounts' ids).
    async fn schedule(
        &self,
        account: &str,
        event: Uuid,
    ) -> Result<Option<ScheduleRecord>, StoreError>;

    // ---- the event log ----------------------------------------------------

    /// An account's event (another account's id finds nothing).
    async fn event(&self, account: &str, id: Uuid) -> Result<Option<EventRecord>, StoreError>;

    /// Newest-first page of an account's event ids, strictly older than
    /// `before` when given.
    async fn list_events(
        &self,
        account: &str,
        before: Option<Uuid>,
        limit: usize,
    ) -> Result<Vec<Uuid>, StoreError>;

    /// One (event, endpoint) delivery.
    async fn delivery(&self, event: Uuid, ep: Uuid) -> Result<Option<DeliveryRecord>, StoreError>;

    /// Every delivery of an event: `(endpoint uid, record)`.
    async fn deliveries_of(&self, event: Uuid) -> Result<Vec<(Uuid, DeliveryRecord)>, StoreError>;

    /// A delivery's attempts, oldest first.
    async fn attempts(&self, event: Uuid, ep: Uuid) -> Result<Vec<AttemptRecord>, StoreError>;

    // ---- the delivery queue -----------------------------------------------

    /// Up to `limit` of an endpoint's due entries with `due_ms <= now_ms`,
    /// oldest first, passing over those `skip` names; when `after` is
    /// given, only entries after it in that order (a reader's cursor, so a
    /// long queue is not walked again from its start).
    async fn due(
        &self,
        ep: Uuid,
        after: Option<Due>,
        now_ms: i64,
        limit: usize,
        skip: Skip<'_>,
    ) -> Result<Vec<Due>, StoreError>;

    /// The earliest due time of an endpoint's entries not named by `skip`,
    /// looking at most `look` entries.
    async fn next_due_ms(
        &self,
        ep: Uuid,
        look: usize,
        skip: Skip<'_>,
    ) -> Result<Option<i64>, StoreError>;

    /// How many entries an endpoint's queue holds (all due times).
    async fn due_count(&self, ep: Uuid) -> Result<u64, StoreError>;

    /// How many of them are due by `now_ms`: the backlog, without counting
    /// scheduled entries further ahead.
    async fn due_count_until(&self, ep: Uuid, now_ms: i64) -> Result<u64, StoreError>;

    /// Applies what a finished attempt changed — the old due entry removed,
    /// the next one added, the delivery record, the attempt, the endpoint's
    /// state — atomically. Need not be durable before answering: at worst a
    /// crash repeats the attempt (at-least-once).
    async fn record_attempt(&self, update: AttemptUpdate<'_>) -> Result<(), StoreError>;

    /// Drops a due entry whose delivery is gone or already final.
    async fn remove_due(&self, ep: Uuid, due: Due) -> Result<(), StoreError>;

    /// Puts a delivery back in its endpoint's queue at `now_ms` (retry,
    /// recover): status `delivering` (never attempted) or `failing`.
    async fn requeue(
        &self,
        event: Uuid,
        ep: Uuid,
        record: DeliveryRecord,
        now_ms: i64,
    ) -> Result<(), StoreError>;

    /// Marks every queued delivery of an endpoint `disabled` with `reason`
    /// and empties its queue, except the deliveries in `skip` (in flight).
    /// Returns how many it marked.
    async fn disable_pending(
        &self,
        ep: Uuid,
        reason: &str,
        skip: HashSet<Uuid>,
    ) -> Result<usize, StoreError>;

    // ---- endpoints ----------------------------------------------------------

    /// An endpoint's persistent state (default when never written).
    async fn endpoint_state(&self, ep: Uuid) -> Result<EndpointState, StoreError>;

    async fn put_endpoint_state(&self, ep: Uuid, state: &EndpointState) -> Result<(), StoreError>;

    /// Endpoints created through the API: one account's, or every one.
    async fn api_endpoints(&self, account: Option<&str>)
    -> Result<Vec<StoredEndpoint>, StoreError>;

    async fn api_endpoint(
        &self,
        account: &str,
        id: &str,
    ) -> Result<Option<StoredEndpoint>, StoreError>;

    /// Saves an API endpoint durably (created or replaced).
    async fn put_api_endpoint(&self, endpoint: &StoredEndpoint) -> Result<(), StoreError>;

    /// Deletes an API endpoint durably; whether it existed.
    async fn delete_api_endpoint(&self, account: &str, id: &str) -> Result<bool, StoreError>;

    // ---- several nodes on one store -------------------------------------
    //
    // A shared backend (PostgreSQL) lets several routers deliver from one
    // queue: a node *claims* the deliveries it takes, for a lease it renews
    // while it holds them, and a dead node's claims lapse so others take
    // its work. An embedded backend has one node: nothing to claim, and
    // these default to "everything is mine".

    /// The pump's read: [`Backend::due`], and on a shared backend claims
    /// the entries it returns for this node (passing over deliveries other
    /// nodes hold within their lease, and this node's own live claims).
    async fn take_due(
        &self,
        ep: Uuid,
        after: Option<Due>,
        now_ms: i64,
        limit: usize,
        skip: Skip<'_>,
    ) -> Result<Vec<Due>, StoreError> {
        self.due(ep, after, now_ms, limit, skip).await
    }

    /// Gives back this node's claims on deliveries it took but will not
    /// send now (another node may take them at once).
    async fn release(&self, _ep: Uuid, _events: &[Uuid]) -> Result<(), StoreError> {
        Ok(())
    }

    /// Extends this node's claims on the `(endpoint, event)` deliveries it
    /// still holds (queued or in flight) by one lease.
    async fn renew(&self, _held: &[(Uuid, Uuid)]) -> Result<(), StoreError> {
        Ok(())
    }

    /// How long a claim lasts; `None` when the backend has one node.
    fn lease(&self) -> Option<std::time::Duration> {
        None
    }

    /// Says this node is alive and reads what the other nodes changed.
    async fn heartbeat(&self) -> Result<ClusterView, StoreError> {
        Ok(ClusterView::default())
    }

    /// This node stops: its claims are given back.
    async fn leave(&self) -> Result<(), StoreError> {
        Ok(())
    }

    // ---- batches in flight ---------------------------------------------------

    /// Records, durably, that a batch request is about to carry these
    /// deliveries; called before the request is sent.
    async fn open_batch(&self, batch: &BatchJournal) -> Result<(), StoreError>;

    /// Every delivery of the batch has recorded its attempt: forgets it.
    async fn close_batch(&self, id: Uuid) -> Result<(), StoreError>;

    /// Batches a stopped router left open (sled: every one, read at start;
    /// PostgreSQL: those of nodes no longer alive, once each). Each member
    /// delivery without an attempt of that batch gets one
    /// ([`BatchJournal::interrupted_error`]); a pending one stays due. The
    /// batches are forgotten (on PostgreSQL, once no member is held by a
    /// live node). Returns (batches, attempts noted).
    async fn recover_batches(&self) -> Result<(usize, usize), StoreError>;

    // ---- maintenance --------------------------------------------------------

    /// Deletes up to `max` events of `account` stored before `cutoff_ms`
    /// whose deliveries are all final, with their deliveries and attempts,
    /// and idempotency keys past their window. Returns events deleted.
    async fn prune(&self, account: &str, cutoff_ms: i64, max: usize) -> Result<usize, StoreError>;

    /// Makes everything written so far durable (shutdown).
    async fn flush(&self) -> Result<(), StoreError>;

    // ---- health -------------------------------------------------------------

    /// Why the latest write failed, while writes keep failing.
    fn write_error(&self) -> Option<String>;

    /// Bytes the backend uses on disk, when it knows.
    fn size_on_disk(&self) -> u64;

    /// Latency of durable group writes, for `/metrics`, when measured.
    fn flush_latency(&self) -> Option<Arc<Histogram>>;
}

/// Notes in `event`'s delivery to `b.ep` that batch `b` was interrupted, if
/// that delivery has no attempt of `b`: the attempt counts (the request
/// may have gone out); a pending delivery stays due, a final one (sent
/// again and answered meanwhile) keeps its outcome. For backends with one
/// node (read, then write, nothing else running yet).
pub(super) async fn note_interrupted(
    store: &dyn Backend,
    b: &BatchJournal,
    event: Uuid,
) -> Result<bool, StoreError> {
    let Some(mut rec) = store.delivery(event, b.ep).await? else {
        return Ok(false);
    };
    let this = b.batch_ref();
    let attempts = store.attempts(event, b.ep).await?;
    if attempts
        .iter()
        .any(|a| a.batch.is_some_and(|r| r.id == this.id))
    {
        return Ok(false);
    }
    let error = b.interrupted_error();
    rec.attempts += 1;
    rec.updated_ms = now_ms();
    if rec.status == DeliveryStatus::Delivering {
        rec.status = DeliveryStatus::Failing;
    }
    if rec.due_ms.is_some() {
        rec.last_status = None;
        rec.last_error = Some(error.clone());
    }
    let attempt = AttemptRecord {
        at_ms: b.at_ms,
        status: None,
        error: Some(error),
        latency_us: 0,
        response: Vec::new(),
        batch: Some(this),
    };
    store
        .record_attempt(AttemptUpdate {
            event,
            endpoint: b.ep,
            old_due_ms: rec.due_ms,
            record: &rec,
            attempt: Some(&attempt),
            endpoint_state: None,
        })
        .await?;
    Ok(true)
}
