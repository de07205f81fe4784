//! The writer thread: every write of the store goes through it, in
//! groups. It drains every job waiting, applies them as one sled batch,
//! flushes once when the group holds an ingest (or a write that must be
//! durable before its answer), then answers them all. One writer means no
//! write contention inside sled, and one flush serves every request
//! waiting on it.

use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::codec::{IdemRecord, enc};
use super::keys;
use super::keys::uuid_at;
use crate::store::{
    CANCEL_MARGIN_MS, CancelTarget, Cancelled, Committed, DeliveryRecord, DeliveryStatus,
    IDEMPOTENCY_WINDOW_MS, NewEvent, Schedule, ScheduleRecord, initial_due_ms, now_ms,
};
use crate::telemetry::Histogram;

/// Key writes (`None` = remove) applied together.
pub type Ops = Vec<(Vec<u8>, Option<Vec<u8>>)>;

/// Work for the writer thread.
pub enum Job {
    /// Store an event durably (flushed before the answer), with its record
    /// already encoded (by the caller's thread, not the writer's).
    Ingest(
        NewEvent,
        Vec<u8>,
        Option<Schedule>,
        oneshot::Sender<Result<Committed, String>>,
    ),
    /// Cancel a pending scheduled event (flushed before the answer).
    Cancel(
        String,
        CancelTarget,
        oneshot::Sender<Result<Option<Cancelled>, String>>,
    ),
    /// Apply key writes atomically; `durable`: flushed before the answer
    /// (API endpoints), otherwise not (attempt results, queue upkeep).
    Ops {
        ops: Ops,
        durable: bool,
        reply: oneshot::Sender<Result<(), String>>,
    },
}

/// A scheduled event written earlier in the writer's current group (not
/// yet readable from the tree).
struct GroupScheduled {
    record: ScheduleRecord,
    deliveries: Vec<(Uuid, String)>,
}

/// The writer thread: every write of the store goes through it, in
/// groups — one sled batch for every job waiting, and one flush when the
/// group holds an ingest (attempt results need none). One writer means no
/// write contention inside sled, and a flush that serves every request
/// waiting on it.
pub fn writer_loop(
    db: sled::Db,
    tree: sled::Tree,
    mut rx: mpsc::Receiver<Job>,
    write_error: Arc<Mutex<Option<String>>>,
    flush_latency: Arc<Histogram>,
) {
    let mut group: Vec<Job> = Vec::with_capacity(1024);
    while let Some(first) = rx.blocking_recv() {
        group.push(first);
        while group.len() < 4096 {
            match rx.try_recv() {
                Ok(p) => group.push(p),
                Err(_) => break,
            }
        }
        let now = now_ms();
        let mut batch = sled::Batch::default();
        let mut answers: Vec<Answer> = Vec::with_capacity(group.len());
        let mut needs_flush = false;
        // Keys claimed earlier in this same group.
        let mut claimed: std::collections::HashMap<Vec<u8>, Uuid> =
            std::collections::HashMap::new();
        // Scheduled events and schedule keys written earlier in this group.
        let mut sched = GroupSchedule::default();
        for job in &mut group {
            let (ev, record, schedule) = match job {
                Job::Ops { ops, durable, .. } => {
                    needs_flush |= *durable;
                    for (k, v) in ops.drain(..) {
                        match v {
                            Some(v) => batch.insert(k, v),
                            None => batch.remove(k),
                        }
                    }
                    answers.push(Answer::None);
                    continue;
                }
                Job::Cancel(account, target, _) => {
                    needs_flush = true;
                    let event = match target {
                        CancelTarget::Key(k) => sched.key_event(&tree, account, k),
                        CancelTarget::Event(id) => Ok(Some(*id)),
                    };
                    let r = event.and_then(|e| match e {
                        None => Ok(None),
                        Some(e) => sched.cancel(&tree, &mut batch, account, e, None),
                    });
                    answers.push(Answer::Cancel(r));
                    continue;
                }
                Job::Ingest(ev, record, schedule, _) => (ev, record, schedule),
            };
            // Every ingest answer waits for a flush, duplicates too: the
            // first copy may still be unflushed (its own flush failed, e.g.
            // disk full, and was answered 503), and a 202 must mean "on disk".
            needs_flush = true;
            let mut idem_claim = None;
            if let Some(key) = &ev.idempotency_key {
                let ik = keys::idem(&ev.record.account, key);
                if let Some(first) = claimed.get(&ik) {
                    answers.push(Answer::Commit(Ok(Committed {
                        id: *first,
                        duplicate: true,
                        replaced: None,
                    })));
                    continue;
                }
                match tree.get(&ik) {
                    Ok(Some(v)) => match postcard::from_bytes::<IdemRecord>(&v) {
                        Ok(r) if now - r.at_ms < IDEMPOTENCY_WINDOW_MS => {
                            answers.push(Answer::Commit(Ok(Committed {
                                id: Uuid::from_bytes(r.event),
                                duplicate: true,
                                replaced: None,
                            })));
                            continue;
                        }
                        _ => {}
                    },
                    Ok(None) => {}
                    Err(e) => {
                        answers.push(Answer::Commit(Err(format!("storage error: {e}"))));
                        continue;
                    }
                }
                idem_claim = Some(ik);
            }
            // A schedule key: the pending event under it is cancelled in
            // this same batch, and the key moves to the new event.
            let mut replaced = None;
            if let Some(Schedule { key: Some(key), .. }) = schedule.as_ref() {
                let account = &ev.record.account;
                let r = sched
                    .key_event(&tree, account, key)
                    .and_then(|old| match old {
                        Some(old) => sched.cancel(&tree, &mut batch, account, old, Some(ev.id)),
                        None => Ok(None),
                    });
                match r {
                    Ok(c) => replaced = c,
                    Err(e) => {
                        answers.push(Answer::Commit(Err(e)));
                        continue;
                    }
                }
                let kk = keys::schedule_key(account, key);
                batch.insert(kk.clone(), ev.id.as_bytes().to_vec());
                sched.keys.insert(kk, ev.id);
            }
            if let Some(ik) = idem_claim {
                batch.insert(
                    ik.clone(),
                    enc(&IdemRecord {
                        event: *ev.id.as_bytes(),
                        at_ms: now,
                    }),
                );
                claimed.insert(ik, ev.id);
            }
            batch.insert(
                keys::event(&ev.record.account, ev.id),
                std::mem::take(record),
            );
            let due_ms = match schedule.as_ref() {
                Some(s) => s.due_ms.max(0),
                None => initial_due_ms(ev.id, ev.record.created_ms),
            };
            if let Some(s) = schedule.take() {
                let rec = ScheduleRecord {
                    due_ms,
                    key: s.key,
                    cancelled_ms: None,
                    replaced_by: None,
                };
                batch.insert(keys::schedule(&ev.record.account, ev.id), enc(&rec));
                sched.events.insert(
                    ev.id,
                    GroupScheduled {
                        record: rec,
                        deliveries: ev.deliveries.clone(),
                    },
                );
            }
            for (uid, endpoint) in &ev.deliveries {
                let rec = DeliveryRecord {
                    account: ev.record.account.clone(),
                    endpoint: endpoint.clone(),
                    status: DeliveryStatus::Delivering,
                    attempts: 0,
                    due_ms: Some(due_ms),
                    last_status: None,
                    last_error: None,
                    updated_ms: now,
                    reason: None,
                    output: None,
                };
                batch.insert(keys::due(*uid, due_ms, ev.id), &[] as &[u8]);
                batch.insert(keys::delivery(ev.id, *uid), enc(&rec));
            }
            answers.push(Answer::Commit(Ok(Committed {
                id: ev.id,
                duplicate: false,
                replaced,
            })));
        }
        let started = std::time::Instant::now();
        let mut result = tree.apply_batch(batch).map(|_| ());
        let applied = started.elapsed();
        if needs_flush {
            let flush_started = std::time::Instant::now();
            result = result.and_then(|_| db.flush().map(|_| ()));
            flush_latency.observe(flush_started.elapsed());
        }
        tracing::trace!(jobs = group.len(), ?applied, flushed = ?(started.elapsed() - applied), "group written");
        let result = result.map_err(|e| format!("storage error: {e}"));
        {
            let mut we = write_error.lock().unwrap_or_else(|p| p.into_inner());
            match &result {
                Err(e) if we.is_none() => {
                    tracing::error!(error = %e, "the store cannot write; ingest answers 503 and delivery pauses \
                        (sled refuses writes after an I/O error until restart: free space, then restart)");
                    *we = Some(e.clone());
                }
                Err(_) => {}
                Ok(()) => *we = None,
            }
        }
        for (job, answer) in group.drain(..).zip(answers) {
            match (job, answer) {
                (Job::Ops { reply, .. }, _) => {
                    let _ = reply.send(result.clone());
                }
                (Job::Ingest(_, _, _, reply), Answer::Commit(answer)) => {
                    let answer = match (&result, answer) {
                        (Err(e), Ok(_)) => Err(e.clone()),
                        (_, a) => a,
                    };
                    let _ = reply.send(answer);
                }
                (Job::Cancel(_, _, reply), Answer::Cancel(answer)) => {
                    let answer = match (&result, answer) {
                        (Err(e), Ok(_)) => Err(e.clone()),
                        (_, a) => a,
                    };
                    let _ = reply.send(answer);
                }
                (Job::Ingest(_, _, _, reply), _) => {
                    let _ = reply.send(Err("internal: no answer".into()));
                }
                (Job::Cancel(_, _, reply), _) => {
                    let _ = reply.send(Err("internal: no answer".into()));
                }
            }
        }
    }
}

/// The answer the writer owes one job of its group.
enum Answer {
    None,
    Commit(Result<Committed, String>),
    Cancel(Result<Option<Cancelled>, String>),
}

/// The writer's view of scheduled events during one group: what earlier
/// jobs of the group wrote (not yet readable from the tree) over the tree.
#[derive(Default)]
struct GroupSchedule {
    events: std::collections::HashMap<Uuid, GroupScheduled>,
    /// `k/` keys written in this group → event.
    keys: std::collections::HashMap<Vec<u8>, Uuid>,
}

impl GroupSchedule {
    /// The event last scheduled under `key`.
    fn key_event(
        &self,
        tree: &sled::Tree,
        account: &str,
        key: &str,
    ) -> Result<Option<Uuid>, String> {
        let kk = keys::schedule_key(account, key);
        if let Some(e) = self.keys.get(&kk) {
            return Ok(Some(*e));
        }
        match tree.get(&kk) {
            Ok(Some(v)) if v.len() == 16 => Ok(Some(uuid_at(&v, 0))),
            Ok(_) => Ok(None),
            Err(e) => Err(format!("storage error: {e}")),
        }
    }

    /// Cancels `event` if it is a pending scheduled event of `account` (not
    /// cancelled, due more than [`CANCEL_MARGIN_MS`] from now): its due
    /// entries leave the index, its deliveries become `cancelled`, its
    /// schedule records when (and by which event, if replaced). All in
    /// `batch`.
    fn cancel(
        &mut self,
        tree: &sled::Tree,
        batch: &mut sled::Batch,
        account: &str,
        event: Uuid,
        replaced_by: Option<Uuid>,
    ) -> Result<Option<Cancelled>, String> {
        let err = |e: &dyn std::fmt::Display| format!("storage error: {e}");
        let now = now_ms();
        let reason = match replaced_by {
            Some(by) => format!("replaced by event {by} (same schedule_key)"),
            None => "cancelled".to_string(),
        };
        let cancelled_record = |account: &str, endpoint: &str, mut d: DeliveryRecord| {
            d.account = account.to_string();
            d.endpoint = endpoint.to_string();
            d.status = DeliveryStatus::Cancelled;
            d.due_ms = None;
            d.updated_ms = now;
            d.reason = Some(reason.clone());
            d.output = None;
            d
        };
        let (mut rec, from_group) = match self.events.get(&event) {
            Some(g) => (g.record.clone(), true),
            None => match tree.get(keys::schedule(account, event)) {
                Ok(Some(v)) => (
                    postcard::from_bytes::<ScheduleRecord>(&v).map_err(|e| err(&e))?,
                    false,
                ),
                Ok(None) => return Ok(None),
                Err(e) => return Err(err(&e)),
            },
        };
        if rec.cancelled_ms.is_some() || rec.due_ms <= now + CANCEL_MARGIN_MS {
            return Ok(None);
        }
        let mut n = 0;
        if from_group {
            let g = &self.events[&event];
            for (uid, endpoint) in &g.deliveries {
                let fresh = DeliveryRecord {
                    account: String::new(),
                    endpoint: String::new(),
                    status: DeliveryStatus::Delivering,
                    attempts: 0,
                    due_ms: None,
                    last_status: None,
                    last_error: None,
                    updated_ms: now,
                    reason: None,
                    output: None,
                };
                batch.remove(keys::due(*uid, rec.due_ms, event));
                batch.insert(
                    keys::delivery(event, *uid),
                    enc(&cancelled_record(account, endpoint, fresh)),
                );
                n += 1;
            }
        } else {
            for kv in tree.scan_prefix(keys::delivery_prefix(event)) {
                let (k, v) = kv.map_err(|e| err(&e))?;
                let uid = uuid_at(&k, 2 + 16);
                let d: DeliveryRecord = postcard::from_bytes(&v).map_err(|e| err(&e))?;
                if d.status.is_final() {
                    continue;
                }
                if let Some(due) = d.due_ms {
                    batch.remove(keys::due(uid, due, event));
                }
                let (acct, endpoint) = (d.account.clone(), d.endpoint.clone());
                batch.insert(k, enc(&cancelled_record(&acct, &endpoint, d)));
                n += 1;
            }
        }
        rec.cancelled_ms = Some(now);
        rec.replaced_by = replaced_by.map(|u| *u.as_bytes());
        batch.insert(keys::schedule(account, event), enc(&rec));
        let deliveries = self
            .events
            .remove(&event)
            .map(|g| g.deliveries)
            .unwrap_or_default();
        self.events.insert(
            event,
            GroupScheduled {
                record: rec.clone(),
                deliveries,
            },
        );
        Ok(Some(Cancelled {
            event,
            due_ms: rec.due_ms,
            key: rec.key,
            deliveries: n,
        }))
    }
}
