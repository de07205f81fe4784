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
use crate::store::{
    Committed, DeliveryRecord, DeliveryStatus, IDEMPOTENCY_WINDOW_MS, NewEvent, initial_due_ms,
    now_ms,
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
        oneshot::Sender<Result<Committed, String>>,
    ),
    /// Apply key writes atomically; `durable`: flushed before the answer
    /// (API endpoints), otherwise not (attempt results, queue upkeep).
    Ops {
        ops: Ops,
        durable: bool,
        reply: oneshot::Sender<Result<(), String>>,
    },
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
        let mut answers: Vec<Option<Result<Committed, String>>> = Vec::with_capacity(group.len());
        let mut needs_flush = false;
        // Keys claimed earlier in this same group.
        let mut claimed: std::collections::HashMap<Vec<u8>, Uuid> =
            std::collections::HashMap::new();
        for job in &mut group {
            let (ev, record) = match job {
                Job::Ops { ops, durable, .. } => {
                    needs_flush |= *durable;
                    for (k, v) in ops.drain(..) {
                        match v {
                            Some(v) => batch.insert(k, v),
                            None => batch.remove(k),
                        }
                    }
                    answers.push(None);
                    continue;
                }
                Job::Ingest(ev, record, _) => (ev, record),
            };
            // Every ingest answer waits for a flush, duplicates too: the
            // first copy may still be unflushed (its own flush failed, e.g.
            // disk full, and was answered 503), and a 202 must mean "on disk".
            needs_flush = true;
            if let Some(key) = &ev.idempotency_key {
                let ik = keys::idem(&ev.record.account, key);
                if let Some(first) = claimed.get(&ik) {
                    answers.push(Some(Ok(Committed {
                        id: *first,
                        duplicate: true,
                    })));
                    continue;
                }
                match tree.get(&ik) {
                    Ok(Some(v)) => match postcard::from_bytes::<IdemRecord>(&v) {
                        Ok(r) if now - r.at_ms < IDEMPOTENCY_WINDOW_MS => {
                            answers.push(Some(Ok(Committed {
                                id: Uuid::from_bytes(r.event),
                                duplicate: true,
                            })));
                            continue;
                        }
                        _ => {}
                    },
                    Ok(None) => {}
                    Err(e) => {
                        answers.push(Some(Err(format!("storage error: {e}"))));
                        continue;
                    }
                }
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
            let due_ms = initial_due_ms(ev.id, ev.record.created_ms);
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
            answers.push(Some(Ok(Committed {
                id: ev.id,
                duplicate: false,
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
                (Job::Ingest(_, _, reply), Some(answer)) => {
                    let answer = match (&result, answer) {
                        (Err(e), Ok(_)) => Err(e.clone()),
                        (_, a) => a,
                    };
                    let _ = reply.send(answer);
                }
                (Job::Ingest(_, _, reply), None) => {
                    let _ = reply.send(Err("internal: no answer".into()));
                }
            }
        }
    }
}
