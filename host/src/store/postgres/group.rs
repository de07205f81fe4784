//! Group commit on PostgreSQL: ingest requests and attempt results wait in
//! a queue, and a writer task takes every one waiting and writes them in
//! ONE transaction of a handful of statements (`INSERT … SELECT FROM
//! unnest(…)`), whatever the group's size. Peers that pay a commit (or
//! several) per event stop near 600–3,000 events/s on this kind of
//! machine; here the statements and commits per event fall as load rises.
//!
//! Two writers per queue (ingest, attempt results):
//! while some commit, another gathers the next group. Ingest groups commit with `synchronous_commit = on` (a 202 means
//! on disk); attempt groups with it off for their transaction only: an
//! attempt result lost in a crash repeats the attempt, which at-least-once
//! delivery allows (the sled backend makes the same choice).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use deadpool_postgres::Transaction;
use tokio::sync::{Mutex, mpsc, oneshot};
use uuid::Uuid;

use super::{PgErr, Shared, rows, schedule};
use crate::store::{
    AttemptRecord, Committed, DeliveryRecord, EndpointState, IDEMPOTENCY_WINDOW_MS, NewEvent,
    Schedule, StoreError, initial_due_ms, now_ms,
};

/// Most jobs in one group.
const MAX_GROUP: usize = 2048;
/// Writer tasks per queue: while one commits (waiting for the WAL flush),
/// another gathers the next group. Two, not four, for ingest: fewer and
/// larger groups cost the database less CPU per event, which on a box the
/// routers share with PostgreSQL is throughput and latency (BENCHMARKS.md,
/// "two ingest writers per node").
const COMMIT_WRITERS: usize = 2;
const ATTEMPT_WRITERS: usize = 2;
/// Tries of a group that hit a deadlock or serialization failure.
const TRIES: usize = 3;

pub struct CommitJob {
    pub event: NewEvent,
    pub schedule: Option<Schedule>,
    pub reply: oneshot::Sender<Result<Committed, StoreError>>,
}

pub struct AttemptJob {
    pub event: Uuid,
    pub ep: Uuid,
    pub record: DeliveryRecord,
    pub attempt: Option<AttemptRecord>,
    pub state: Option<EndpointState>,
    pub reply: oneshot::Sender<Result<(), StoreError>>,
}

/// The two queues' senders.
pub struct Groups {
    pub commits: mpsc::Sender<CommitJob>,
    pub attempts: mpsc::Sender<AttemptJob>,
}

pub fn spawn(shared: Arc<Shared>) -> Groups {
    let (ctx, crx) = mpsc::channel::<CommitJob>(16384);
    let (atx, arx) = mpsc::channel::<AttemptJob>(16384);
    let crx = Arc::new(Mutex::new(crx));
    let arx = Arc::new(Mutex::new(arx));
    for _ in 0..COMMIT_WRITERS {
        let (sh, rx) = (shared.clone(), crx.clone());
        tokio::spawn(async move {
            while let Some(jobs) = gather(&rx).await {
                let started = Instant::now();
                let mut result = commit_group(&sh, &jobs).await;
                for _ in 1..TRIES {
                    if !matches!(&result, Err(e) if e.retry) {
                        break;
                    }
                    result = commit_group(&sh, &jobs).await;
                }
                sh.flush_latency.observe(started.elapsed());
                let result = result.map_err(|e| sh.failed(e));
                if result.is_ok() {
                    sh.succeeded();
                }
                match result {
                    Ok(answers) => {
                        for (job, a) in jobs.into_iter().zip(answers) {
                            let _ = job.reply.send(a);
                        }
                    }
                    Err(e) => {
                        for job in jobs {
                            let _ = job.reply.send(Err(StoreError::Unavailable(e.clone())));
                        }
                    }
                }
            }
        });
    }
    for _ in 0..ATTEMPT_WRITERS {
        let (sh, rx) = (shared.clone(), arx.clone());
        tokio::spawn(async move {
            while let Some(jobs) = gather(&rx).await {
                let mut result = attempt_group(&sh, &jobs).await;
                for _ in 1..TRIES {
                    if !matches!(&result, Err(e) if e.retry) {
                        break;
                    }
                    result = attempt_group(&sh, &jobs).await;
                }
                let result = result.map_err(|e| sh.failed(e));
                for job in jobs {
                    let _ = job
                        .reply
                        .send(result.clone().map_err(StoreError::Unavailable));
                }
            }
        });
    }
    Groups {
        commits: ctx,
        attempts: atx,
    }
}

/// Every job waiting (at least one), up to [`MAX_GROUP`]; `None` once the
/// store is dropped.
async fn gather<T>(rx: &Mutex<mpsc::Receiver<T>>) -> Option<Vec<T>> {
    let mut rx = rx.lock().await;
    let first = rx.recv().await?;
    let mut jobs = vec![first];
    while jobs.len() < MAX_GROUP {
        match rx.try_recv() {
            Ok(j) => jobs.push(j),
            Err(_) => break,
        }
    }
    Some(jobs)
}

/// What a group's idempotency keys decided for each job.
enum Fate {
    /// Store it.
    New,
    /// Already stored: this event answers.
    Duplicate(Uuid),
    /// Same key as an earlier job of this group: answered like that one.
    SameAs(usize),
}

/// One ingest group in one transaction; an answer per job.
async fn commit_group(
    sh: &Shared,
    jobs: &[CommitJob],
) -> Result<Vec<Result<Committed, StoreError>>, PgErr> {
    let now = now_ms();
    let mut client = sh.pool.get().await?;
    let tx = client.transaction().await?;
    let mut fates: Vec<Fate> = Vec::with_capacity(jobs.len());
    let mut first: HashMap<(&str, &str), usize> = HashMap::new();
    let mut keyed: Vec<usize> = Vec::new();
    for (i, j) in jobs.iter().enumerate() {
        match &j.event.idempotency_key {
            Some(k) => match first.get(&(j.event.record.account.as_str(), k.as_str())) {
                Some(&f) => fates.push(Fate::SameAs(f)),
                None => {
                    first.insert((&j.event.record.account, k), i);
                    keyed.push(i);
                    fates.push(Fate::New);
                }
            },
            None => fates.push(Fate::New),
        }
    }
    if !keyed.is_empty() {
        // In key order, so two nodes' groups lock the same keys in the
        // same order (no deadlock between them).
        keyed.sort_by(|a, b| {
            let (a, b) = (&jobs[*a].event, &jobs[*b].event);
            (&a.record.account, &a.idempotency_key).cmp(&(&b.record.account, &b.idempotency_key))
        });
        let accounts: Vec<&str> = keyed
            .iter()
            .map(|i| jobs[*i].event.record.account.as_str())
            .collect();
        let keys: Vec<&str> = keyed
            .iter()
            .map(|i| jobs[*i].event.idempotency_key.as_deref().unwrap_or(""))
            .collect();
        let ids: Vec<Uuid> = keyed.iter().map(|i| jobs[*i].event.id).collect();
        let stmt = tx
            .prepare_cached(
                "INSERT INTO idempotency (account, key, event, at_ms)
                 SELECT a, k, e, $4 FROM unnest($1::text[], $2::text[], $3::uuid[]) AS u(a, k, e)
                 ON CONFLICT (account, key) DO UPDATE
                     SET event = excluded.event, at_ms = excluded.at_ms
                     WHERE idempotency.at_ms <= $5
                 RETURNING event",
            )
            .await?;
        let won: HashSet<Uuid> = tx
            .query(
                &stmt,
                &[&accounts, &keys, &ids, &now, &(now - IDEMPOTENCY_WINDOW_MS)],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let lost: Vec<usize> = keyed
            .iter()
            .copied()
            .filter(|i| !won.contains(&jobs[*i].event.id))
            .collect();
        if !lost.is_empty() {
            let la: Vec<&str> = lost
                .iter()
                .map(|i| jobs[*i].event.record.account.as_str())
                .collect();
            let lk: Vec<&str> = lost
                .iter()
                .map(|i| jobs[*i].event.idempotency_key.as_deref().unwrap_or(""))
                .collect();
            let stmt = tx
                .prepare_cached(
                    "SELECT i.account, i.key, i.event FROM idempotency i
                     JOIN unnest($1::text[], $2::text[]) AS u(a, k) ON i.account = u.a AND i.key = u.k",
                )
                .await?;
            let found: HashMap<(String, String), Uuid> = tx
                .query(&stmt, &[&la, &lk])
                .await?
                .iter()
                .map(|r| ((r.get(0), r.get(1)), r.get(2)))
                .collect();
            for i in lost {
                let e = &jobs[i].event;
                let key = (
                    e.record.account.clone(),
                    e.idempotency_key.clone().unwrap_or_default(),
                );
                if let Some(id) = found.get(&key) {
                    fates[i] = Fate::Duplicate(*id);
                }
            }
        }
    }
    let mut answers: Vec<Option<Result<Committed, StoreError>>> =
        jobs.iter().map(|_| None).collect();
    // Events due now, together.
    let plain: Vec<usize> = (0..jobs.len())
        .filter(|i| matches!(fates[*i], Fate::New) && jobs[*i].schedule.is_none())
        .collect();
    let claim_until = now + sh.lease_ms;
    insert_events(&tx, jobs, &plain, None, Some(claim_until), sh.node, now).await?;
    for i in &plain {
        answers[*i] = Some(Ok(Committed {
            id: jobs[*i].event.id,
            duplicate: false,
            replaced: None,
        }));
    }
    // Scheduled events one by one: a schedule key may move an event of
    // this same group.
    for i in 0..jobs.len() {
        let Some(s) = &jobs[i].schedule else { continue };
        if !matches!(fates[i], Fate::New) {
            continue;
        }
        let ev = &jobs[i].event;
        let account = ev.record.account.as_str();
        let mut replaced = None;
        if let Some(key) = &s.key {
            schedule::lock_key(&tx, account, key).await?;
            if let Some(old) = schedule::key_event(&tx, account, key).await? {
                replaced = schedule::cancel(&tx, account, old, Some(ev.id), now).await?;
            }
        }
        let due = s.due_ms.max(0);
        insert_events(&tx, jobs, &[i], Some(due), None, sh.node, now).await?;
        let stmt = tx
            .prepare_cached(
                "INSERT INTO schedules (event, account, due_ms, key) VALUES ($1, $2, $3, $4)",
            )
            .await?;
        tx.execute(&stmt, &[&ev.id, &account, &due, &s.key]).await?;
        if let Some(key) = &s.key {
            let stmt = tx
                .prepare_cached(
                    "INSERT INTO schedule_keys (account, key, event) VALUES ($1, $2, $3)
                     ON CONFLICT (account, key) DO UPDATE SET event = excluded.event",
                )
                .await?;
            tx.execute(&stmt, &[&account, key, &ev.id]).await?;
        }
        answers[i] = Some(Ok(Committed {
            id: ev.id,
            duplicate: false,
            replaced,
        }));
    }
    tx.commit().await?;
    let mut out: Vec<Result<Committed, StoreError>> = Vec::with_capacity(jobs.len());
    for i in 0..jobs.len() {
        let a = match fates[i] {
            Fate::New => answers[i]
                .take()
                .unwrap_or_else(|| Err(StoreError::Unavailable("internal: no answer".into()))),
            Fate::Duplicate(id) => Ok(Committed {
                id,
                duplicate: true,
                replaced: None,
            }),
            // Answered below, once the first copy's answer is known.
            Fate::SameAs(_) => Err(StoreError::Closed),
        };
        out.push(a);
    }
    for i in 0..jobs.len() {
        if let Fate::SameAs(f) = fates[i] {
            out[i] = match &out[f] {
                Ok(c) => Ok(Committed {
                    id: c.id,
                    duplicate: true,
                    replaced: None,
                }),
                Err(_) => Err(StoreError::Unavailable(
                    "the first copy was not stored".into(),
                )),
            };
        }
    }
    Ok(out)
}

/// Inserts the events `which` of `jobs` and their deliveries, due at
/// `due` (or each event's initial due time), claimed by this node until
/// `claim_until` when given (the ingesting node sends them first).
async fn insert_events(
    tx: &Transaction<'_>,
    jobs: &[CommitJob],
    which: &[usize],
    due: Option<i64>,
    claim_until: Option<i64>,
    node: Uuid,
    now: i64,
) -> Result<(), PgErr> {
    if which.is_empty() {
        return Ok(());
    }
    let evs: Vec<&NewEvent> = which.iter().map(|i| &jobs[*i].event).collect();
    let ids: Vec<Uuid> = evs.iter().map(|e| e.id).collect();
    let accounts: Vec<&str> = evs.iter().map(|e| e.record.account.as_str()).collect();
    let types: Vec<&str> = evs.iter().map(|e| e.record.event_type.as_str()).collect();
    let created: Vec<i64> = evs.iter().map(|e| e.record.created_ms).collect();
    let sources: Vec<Option<&str>> = evs.iter().map(|e| e.record.source_id.as_deref()).collect();
    let payloads: Vec<&[u8]> = evs.iter().map(|e| e.record.payload.as_slice()).collect();
    let endpoints: Vec<serde_json::Value> = evs
        .iter()
        .map(|e| serde_json::json!(e.record.endpoints))
        .collect();
    let stmt = tx
        .prepare_cached(
            "INSERT INTO events (id, account, event_type, created_ms, source_id, payload, endpoints)
             SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::int8[], $5::text[],
                                  $6::bytea[], $7::jsonb[])",
        )
        .await?;
    tx.execute(
        &stmt,
        &[
            &ids, &accounts, &types, &created, &sources, &payloads, &endpoints,
        ],
    )
    .await?;
    let (mut d_ev, mut d_ep, mut d_acct, mut d_name, mut d_due) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for e in &evs {
        let due = due.unwrap_or_else(|| initial_due_ms(e.id, e.record.created_ms));
        for (uid, name) in &e.deliveries {
            d_ev.push(e.id);
            d_ep.push(*uid);
            d_acct.push(e.record.account.as_str());
            d_name.push(name.as_str());
            d_due.push(due);
        }
    }
    if d_ev.is_empty() {
        return Ok(());
    }
    let claimed_by = claim_until.map(|_| node);
    let stmt = tx
        .prepare_cached(
            "INSERT INTO deliveries (event, ep, account, endpoint, status, due_ms, updated_ms,
                                     claimed_by, claimed_until)
             SELECT e, p, a, n, 'delivering', d, $6, $7, $8
             FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::int8[])
                  AS u(e, p, a, n, d)",
        )
        .await?;
    tx.execute(
        &stmt,
        &[
            &d_ev,
            &d_ep,
            &d_acct,
            &d_name,
            &d_due,
            &now,
            &claimed_by,
            &claim_until,
        ],
    )
    .await?;
    Ok(())
}

/// One group of attempt results in one transaction: the delivery rows
/// (and their claims released), the attempt log, the endpoints' state.
async fn attempt_group(sh: &Shared, jobs: &[AttemptJob]) -> Result<(), PgErr> {
    let mut client = sh.pool.get().await?;
    let tx = client.transaction().await?;
    // The join with `unnest` must walk the primary key, not hash a scan of
    // the whole table: the planner cannot know the group's size (it
    // guesses 100 rows) and chose a hash join over a sequential scan,
    // 6 ms a group at 20k deliveries and growing (BENCHMARKS.md).
    tx.batch_execute(
        "SET LOCAL synchronous_commit = off; SET LOCAL enable_hashjoin = off; \
         SET LOCAL enable_mergejoin = off",
    )
    .await?;
    // The latest result per delivery (one delivery is attempted by one
    // task at a time, so this is a guard, not a merge).
    let mut latest: HashMap<(Uuid, Uuid), usize> = HashMap::new();
    for (i, j) in jobs.iter().enumerate() {
        latest.insert((j.event, j.ep), i);
    }
    let mut idx: Vec<usize> = latest.into_values().collect();
    idx.sort_by_key(|i| (jobs[*i].event, jobs[*i].ep));
    let n = idx.len();
    let (mut ev, mut ep, mut status, mut attempts, mut due) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut last_status, mut last_error, mut updated, mut reason) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut ob, mut ot, mut oh) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for i in &idx {
        let j = &jobs[*i];
        let r = &j.record;
        ev.push(j.event);
        ep.push(j.ep);
        status.push(r.status.as_str());
        attempts.push(r.attempts as i32);
        due.push(r.due_ms);
        last_status.push(r.last_status.map(i32::from));
        last_error.push(r.last_error.as_deref());
        updated.push(r.updated_ms);
        reason.push(r.reason.as_deref());
        let (b, t, h) = rows::output_columns(r.output.as_ref());
        ob.push(b);
        ot.push(t);
        oh.push(h);
    }
    let stmt = tx
        .prepare_cached(
            "UPDATE deliveries d SET status = u.s, attempts = u.n, due_ms = u.due,
                 last_status = u.ls, last_error = u.le, updated_ms = u.up, reason = u.r,
                 output_body = u.ob, output_type = u.ot, output_headers = u.oh,
                 claimed_by = NULL, claimed_until = NULL
             FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::int4[], $5::int8[], $6::int4[],
                         $7::text[], $8::int8[], $9::text[], $10::bytea[], $11::text[], $12::jsonb[])
                  AS u(e, p, s, n, due, ls, le, up, r, ob, ot, oh)
             WHERE d.event = u.e AND d.ep = u.p",
        )
        .await?;
    tx.execute(
        &stmt,
        &[
            &ev,
            &ep,
            &status,
            &attempts,
            &due,
            &last_status,
            &last_error,
            &updated,
            &reason,
            &ob,
            &ot,
            &oh,
        ],
    )
    .await?;
    // The attempt log.
    let mut a_ev = Vec::new();
    let mut a_ep = Vec::new();
    let mut a_n = Vec::new();
    let mut a_at = Vec::new();
    let mut a_status = Vec::new();
    let mut a_err = Vec::new();
    let mut a_lat = Vec::new();
    let mut a_resp: Vec<&[u8]> = Vec::new();
    let mut a_batch: Vec<Option<Uuid>> = Vec::new();
    let mut a_bsize: Vec<Option<i32>> = Vec::new();
    for j in jobs {
        if let Some(a) = &j.attempt {
            a_ev.push(j.event);
            a_ep.push(j.ep);
            a_n.push(j.record.attempts as i32);
            a_at.push(a.at_ms);
            a_status.push(a.status.map(i32::from));
            a_err.push(a.error.as_deref());
            a_lat.push(a.latency_us.min(i64::MAX as u64) as i64);
            a_resp.push(a.response.as_slice());
            a_batch.push(a.batch.map(|b| Uuid::from_bytes(b.id)));
            a_bsize.push(a.batch.map(|b| b.size.min(i32::MAX as u32) as i32));
        }
    }
    if !a_ev.is_empty() {
        let stmt = tx
            .prepare_cached(
                "INSERT INTO attempts (event, ep, n, at_ms, status, error, latency_us, response,
                                       batch_id, batch_size)
                 SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::int4[], $4::int8[], $5::int4[],
                                      $6::text[], $7::int8[], $8::bytea[], $9::uuid[], $10::int4[])
                 ON CONFLICT (event, ep, n) DO UPDATE SET at_ms = excluded.at_ms,
                     status = excluded.status, error = excluded.error,
                     latency_us = excluded.latency_us, response = excluded.response,
                     batch_id = excluded.batch_id, batch_size = excluded.batch_size",
            )
            .await?;
        tx.execute(
            &stmt,
            &[
                &a_ev, &a_ep, &a_n, &a_at, &a_status, &a_err, &a_lat, &a_resp, &a_batch, &a_bsize,
            ],
        )
        .await?;
    }
    // Endpoint states: the latest per endpoint, in endpoint order.
    let mut states: HashMap<Uuid, &EndpointState> = HashMap::new();
    for j in jobs {
        if let Some(s) = &j.state {
            states.insert(j.ep, s);
        }
    }
    if !states.is_empty() {
        let mut list: Vec<(Uuid, &EndpointState)> = states.into_iter().collect();
        list.sort_by_key(|(u, _)| *u);
        let eps: Vec<Uuid> = list.iter().map(|(u, _)| *u).collect();
        let reasons: Vec<Option<&str>> = list
            .iter()
            .map(|(_, s)| s.disabled_reason.as_deref())
            .collect();
        let docs: Vec<serde_json::Value> = list
            .iter()
            .map(|(_, s)| serde_json::to_value(s).unwrap_or(serde_json::Value::Null))
            .collect();
        let stmt = tx
            .prepare_cached(
                "INSERT INTO endpoint_state (ep, disabled_reason, state)
                 SELECT * FROM unnest($1::uuid[], $2::text[], $3::jsonb[])
                 ON CONFLICT (ep) DO UPDATE SET disabled_reason = excluded.disabled_reason,
                     state = excluded.state",
            )
            .await?;
        tx.execute(&stmt, &[&eps, &reasons, &docs]).await?;
    }
    tx.commit().await?;
    Ok(())
}
