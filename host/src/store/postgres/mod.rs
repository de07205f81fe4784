//! The PostgreSQL backend: several routers on one database.
//!
//! - `schema`: embedded, versioned migrations, applied under an advisory
//!   lock at start-up;
//! - `group`: group commit — ingest requests and attempt results written
//!   a group per transaction;
//! - `schedule`: scheduled events (keys, cancellation) in a transaction;
//! - `rows`: records to and from rows.
//!
//! Deliveries are claimed, not owned (docs/ARCHITECTURE.md, "Several
//! nodes"): `take_due` claims due rows for this node (`claimed_by`,
//! `claimed_until`) with a conditional `UPDATE`, the dispatcher renews
//! the claims it still holds, a recorded attempt releases its claim, and a
//! dead node's claims lapse after one lease. No transaction is held open
//! across an HTTP call.

mod group;
mod import;
mod rows;
mod schedule;
pub mod schema;

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio::sync::oneshot;
use tokio_postgres::NoTls;
use uuid::Uuid;

use self::group::{AttemptJob, CommitJob, Groups};
use self::rows::{DELIVERY_COLUMNS, from_json, to_json};
use super::{
    AttemptRecord, AttemptUpdate, Backend, BatchJournal, CancelTarget, Cancelled, ClusterView,
    Committed, DeliveryRecord, DeliveryStatus, Due, EndpointState, EventRecord,
    IDEMPOTENCY_WINDOW_MS, NewEvent, Schedule, ScheduleRecord, Skip, StoreError, StoredEndpoint,
    now_ms,
};
use crate::config::PostgresConfig;
use crate::telemetry::{FLUSH_BUCKETS, Histogram};

/// A database error, and whether trying the same transaction again may
/// succeed (deadlock, serialization failure).
#[derive(Debug)]
pub struct PgErr {
    pub msg: String,
    pub retry: bool,
}

impl From<tokio_postgres::Error> for PgErr {
    fn from(e: tokio_postgres::Error) -> Self {
        use tokio_postgres::error::SqlState;
        let retry = matches!(
            e.code(),
            Some(c) if *c == SqlState::T_R_DEADLOCK_DETECTED || *c == SqlState::T_R_SERIALIZATION_FAILURE
        );
        PgErr {
            msg: describe(&e),
            retry,
        }
    }
}

impl From<deadpool_postgres::PoolError> for PgErr {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        PgErr {
            msg: format!("cannot reach PostgreSQL: {e}"),
            retry: false,
        }
    }
}

/// A database error's own message (the `Display` of tokio-postgres says
/// only "db error").
pub fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(d) => format!("PostgreSQL: {} ({})", d.message(), d.code().code()),
        None => format!("PostgreSQL: {e}"),
    }
}

pub(crate) fn db(e: impl Into<PgErr>) -> StoreError {
    StoreError::Unavailable(e.into().msg)
}

/// What the backend's tasks share.
pub struct Shared {
    pool: Pool,
    /// This process's id in `claimed_by` and `nodes` (new at each start:
    /// a restarted node's old claims lapse like a dead node's).
    node: Uuid,
    lease_ms: i64,
    /// Why the latest database operation failed, cleared by the next that
    /// succeeds: `/readyz` reports it and the pumps pause on it. A std
    /// mutex: held for a clone or a swap, never across an await.
    write_error: Mutex<Option<String>>,
    flush_latency: Arc<Histogram>,
    /// `pg_database_size`, refreshed by the heartbeat.
    size: AtomicU64,
}

impl Shared {
    /// Notes a failure (logged once until the next success); returns its message.
    fn failed(&self, e: PgErr) -> String {
        let mut we = self.write_error.lock().unwrap_or_else(|p| p.into_inner());
        if we.is_none() {
            tracing::error!(error = %e.msg, "PostgreSQL operation failed; ingest answers 503 and delivery pauses until it answers again");
        }
        *we = Some(e.msg.clone());
        e.msg
    }

    fn succeeded(&self) {
        let mut we = self.write_error.lock().unwrap_or_else(|p| p.into_inner());
        if we.take().is_some() {
            tracing::info!("PostgreSQL answers again");
        }
    }
}

/// The PostgreSQL backend.
pub struct PgStore {
    sh: Arc<Shared>,
    groups: Groups,
}

impl PgStore {
    /// Connects, migrates the schema (or refuses a newer one) and starts
    /// the group writers.
    pub async fn open(cfg: &PostgresConfig) -> Result<PgStore, StoreError> {
        let mut pg: tokio_postgres::Config = cfg
            .url
            .parse()
            .map_err(|e| StoreError::Open(format!("[store] url: {e}")))?;
        if pg.get_connect_timeout().is_none() {
            pg.connect_timeout(Duration::from_secs(5));
        }
        if pg.get_application_name().is_none() {
            pg.application_name("switchyard");
        }
        let mgr = Manager::from_config(
            pg,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(mgr)
            .max_size(cfg.pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(Duration::from_secs(5)))
            .create_timeout(Some(Duration::from_secs(5)))
            .recycle_timeout(Some(Duration::from_secs(5)))
            .build()
            .map_err(|e| StoreError::Open(format!("PostgreSQL pool: {e}")))?;
        {
            let mut client = pool.get().await.map_err(|e| {
                StoreError::Open(format!(
                    "cannot connect to PostgreSQL at {}: {e}",
                    redact(&cfg.url)
                ))
            })?;
            let applied = schema::migrate(&mut client).await?;
            tracing::info!(schema = schema::VERSION, applied, "PostgreSQL store ready");
        }
        let sh = Arc::new(Shared {
            pool,
            node: Uuid::now_v7(),
            lease_ms: cfg.lease.as_millis() as i64,
            write_error: Mutex::new(None),
            flush_latency: Arc::new(Histogram::new(FLUSH_BUCKETS)),
            size: AtomicU64::new(0),
        });
        let groups = group::spawn(sh.clone());
        Ok(PgStore { sh, groups })
    }

    /// This node's id in `claimed_by`.
    pub fn node(&self) -> Uuid {
        self.sh.node
    }

    /// Runs one statement, noting the outcome for `/readyz`.
    async fn exec(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<u64, StoreError> {
        let r = async {
            let c = self.sh.pool.get().await?;
            let stmt = c.prepare_cached(sql).await?;
            Ok::<_, PgErr>(c.execute(&stmt, params).await?)
        }
        .await;
        self.noted(r)
    }

    async fn query(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>, StoreError> {
        let r = async {
            let c = self.sh.pool.get().await?;
            let stmt = c.prepare_cached(sql).await?;
            Ok::<_, PgErr>(c.query(&stmt, params).await?)
        }
        .await;
        self.noted(r)
    }

    /// Up to `limit` due entries after `after`, oldest first, passing over
    /// those `skip` names, read page by page; `claimable`: only rows free
    /// to claim (never claimed, claim lapsed, or this node's own).
    async fn walk_due(
        &self,
        ep: Uuid,
        after: Option<Due>,
        now_ms: i64,
        limit: usize,
        skip: Skip<'_>,
        claimable: bool,
    ) -> Result<Vec<Due>, StoreError> {
        let mut cursor = after
            .map(|a| (a.due_ms, a.event))
            .unwrap_or((i64::MIN, Uuid::nil()));
        let mut out = Vec::new();
        loop {
            let page = (limit.max(1) * 2).min(4096) as i64;
            let rows = self
                .query(
                    "SELECT event, due_ms FROM deliveries
                     WHERE ep = $1 AND due_ms IS NOT NULL AND due_ms <= $2
                       AND (due_ms, event) > ($3, $4)
                       AND (NOT $7 OR claimed_until IS NULL OR claimed_until < $2
                            OR claimed_by = $6)
                     ORDER BY due_ms, event LIMIT $5",
                    &[
                        &ep,
                        &now_ms,
                        &cursor.0,
                        &cursor.1,
                        &page,
                        &self.sh.node,
                        &claimable,
                    ],
                )
                .await?;
            for r in &rows {
                let d = Due {
                    event: r.get(0),
                    due_ms: r.get(1),
                };
                cursor = (d.due_ms, d.event);
                if !skip(d.event) {
                    out.push(d);
                    if out.len() >= limit {
                        return Ok(out);
                    }
                }
            }
            if (rows.len() as i64) < page {
                return Ok(out);
            }
        }
    }

    fn noted<T>(&self, r: Result<T, PgErr>) -> Result<T, StoreError> {
        match r {
            Ok(v) => {
                self.sh.succeeded();
                Ok(v)
            }
            Err(e) => Err(StoreError::Unavailable(self.sh.failed(e))),
        }
    }
}

/// A URL without its password, for messages.
fn redact(url: &str) -> String {
    match url.parse::<tokio_postgres::Config>() {
        Ok(c) => {
            let host = c
                .get_hosts()
                .first()
                .map(|h| match h {
                    tokio_postgres::config::Host::Tcp(s) => s.clone(),
                    #[cfg(unix)]
                    tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
                })
                .unwrap_or_default();
            let port = c.get_ports().first().copied().unwrap_or(5432);
            format!(
                "{}@{host}:{port}/{}",
                c.get_user().unwrap_or(""),
                c.get_dbname().unwrap_or("")
            )
        }
        Err(_) => "(unparsable url)".into(),
    }
}

/// The smallest UUIDv7 of millisecond `ms`: ids below it were stored before.
fn v7_floor(ms: i64) -> Uuid {
    let ms = ms.max(0) as u64;
    let mut b = [0u8; 16];
    b[..6].copy_from_slice(&ms.to_be_bytes()[2..]);
    b[6] = 0x70;
    b[8] = 0x80;
    Uuid::from_bytes(b)
}

#[async_trait]
impl Backend for PgStore {
    fn name(&self) -> &'static str {
        "postgres"
    }

    async fn commit_scheduled(
        &self,
        event: NewEvent,
        schedule: Option<Schedule>,
    ) -> Result<Committed, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.groups
            .commits
            .send(CommitJob {
                event,
                schedule,
                reply,
            })
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    async fn cancel_scheduled(
        &self,
        account: &str,
        target: CancelTarget,
    ) -> Result<Option<Cancelled>, StoreError> {
        let r = async {
            let mut c = self.sh.pool.get().await?;
            let tx = c.transaction().await?;
            let event = match &target {
                CancelTarget::Key(k) => {
                    schedule::lock_key(&tx, account, k).await?;
                    schedule::key_event(&tx, account, k).await?
                }
                CancelTarget::Event(id) => Some(*id),
            };
            let out = match event {
                Some(e) => schedule::cancel(&tx, account, e, None, now_ms()).await?,
                None => None,
            };
            tx.commit().await?;
            Ok::<_, PgErr>(out)
        }
        .await;
        self.noted(r)
    }

    async fn schedule(
        &self,
        account: &str,
        event: Uuid,
    ) -> Result<Option<ScheduleRecord>, StoreError> {
        let rows = self
            .query(
                "SELECT due_ms, key, cancelled_ms, replaced_by FROM schedules
                 WHERE event = $1 AND account = $2",
                &[&event, &account],
            )
            .await?;
        Ok(rows.first().map(|r| ScheduleRecord {
            due_ms: r.get(0),
            key: r.get(1),
            cancelled_ms: r.get(2),
            replaced_by: r.get::<_, Option<Uuid>>(3).map(|u| *u.as_bytes()),
        }))
    }

    async fn event(&self, account: &str, id: Uuid) -> Result<Option<EventRecord>, StoreError> {
        let rows = self
            .query(
                "SELECT account, event_type, created_ms, source_id, payload, endpoints
                 FROM events WHERE id = $1 AND account = $2",
                &[&id, &account],
            )
            .await?;
        rows.first().map(rows::event).transpose()
    }

    async fn list_events(
        &self,
        account: &str,
        before: Option<Uuid>,
        limit: usize,
    ) -> Result<Vec<Uuid>, StoreError> {
        let before = before.unwrap_or(Uuid::max());
        let rows = self
            .query(
                "SELECT id FROM events WHERE account = $1 AND id < $2 ORDER BY id DESC LIMIT $3",
                &[&account, &before, &(limit as i64)],
            )
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    async fn delivery(&self, event: Uuid, ep: Uuid) -> Result<Option<DeliveryRecord>, StoreError> {
        let sql = format!("SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE event = $1 AND ep = $2");
        let rows = self.query(&sql, &[&event, &ep]).await?;
        rows.first().map(rows::delivery).transpose()
    }

    async fn deliveries_of(&self, event: Uuid) -> Result<Vec<(Uuid, DeliveryRecord)>, StoreError> {
        let sql = format!("SELECT {DELIVERY_COLUMNS}, ep FROM deliveries WHERE event = $1");
        let rows = self.query(&sql, &[&event]).await?;
        rows.iter()
            .map(|r| Ok((r.get(12), rows::delivery(r)?)))
            .collect()
    }

    async fn attempts(&self, event: Uuid, ep: Uuid) -> Result<Vec<AttemptRecord>, StoreError> {
        let rows = self
            .query(
                "SELECT at_ms, status, error, latency_us, response, batch_id, batch_size FROM attempts
                 WHERE event = $1 AND ep = $2 ORDER BY n",
                &[&event, &ep],
            )
            .await?;
        Ok(rows.iter().map(rows::attempt).collect())
    }

    async fn due(
        &self,
        ep: Uuid,
        after: Option<Due>,
        now_ms: i64,
        limit: usize,
        skip: Skip<'_>,
    ) -> Result<Vec<Due>, StoreError> {
        self.walk_due(ep, after, now_ms, limit, skip, false).await
    }

    async fn take_due(
        &self,
        ep: Uuid,
        after: Option<Due>,
        now_ms: i64,
        limit: usize,
        skip: Skip<'_>,
    ) -> Result<Vec<Due>, StoreError> {
        // 1. Read candidates: due, and free (never claimed, claim lapsed)
        //    or this node's own; pass over what the caller holds. Plain
        //    reads, page by page, so the rows this node holds (up to its
        //    in-memory bound) are walked past, not locked or rewritten.
        let chosen: Vec<Uuid> = self
            .walk_due(ep, after, now_ms, limit, skip, true)
            .await?
            .into_iter()
            .map(|d| d.event)
            .collect();
        if chosen.is_empty() {
            return Ok(Vec::new());
        }
        // 2. Claim them: the condition is checked again under the row
        //    lock, so of two nodes claiming one row at once, one wins and
        //    the other passes over it.
        let rows = self
            .query(
                "UPDATE deliveries SET claimed_by = $3, claimed_until = $4
                 WHERE ep = $1 AND event = ANY($2) AND due_ms IS NOT NULL
                   AND (claimed_until IS NULL OR claimed_until < $5 OR claimed_by = $3)
                 RETURNING event, due_ms",
                &[
                    &ep,
                    &chosen,
                    &self.sh.node,
                    &(now_ms + self.sh.lease_ms),
                    &now_ms,
                ],
            )
            .await?;
        let mut out: Vec<Due> = rows
            .iter()
            .map(|r| Due {
                event: r.get(0),
                due_ms: r.get(1),
            })
            .collect();
        out.sort_by_key(|d| (d.due_ms, d.event));
        Ok(out)
    }

    async fn release(&self, ep: Uuid, events: &[Uuid]) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        self.exec(
            "UPDATE deliveries SET claimed_by = NULL, claimed_until = NULL
             WHERE ep = $1 AND event = ANY($2) AND claimed_by = $3",
            &[&ep, &events, &self.sh.node],
        )
        .await
        .map(|_| ())
    }

    async fn renew(&self, held: &[(Uuid, Uuid)]) -> Result<(), StoreError> {
        if held.is_empty() {
            return Ok(());
        }
        let eps: Vec<Uuid> = held.iter().map(|h| h.0).collect();
        let evs: Vec<Uuid> = held.iter().map(|h| h.1).collect();
        let until = now_ms() + self.sh.lease_ms;
        self.exec(
            "UPDATE deliveries d SET claimed_until = $3
             FROM unnest($1::uuid[], $2::uuid[]) AS u(p, e)
             WHERE d.event = u.e AND d.ep = u.p AND d.claimed_by = $4",
            &[&eps, &evs, &until, &self.sh.node],
        )
        .await
        .map(|_| ())
    }

    fn lease(&self) -> Option<Duration> {
        Some(Duration::from_millis(self.sh.lease_ms as u64))
    }

    async fn heartbeat(&self) -> Result<ClusterView, StoreError> {
        let now = now_ms();
        let name = std::env::var("HOSTNAME").unwrap_or_else(|_| "switchyard".into());
        let name = format!("{name} pid {}", std::process::id());
        let r = async {
            let c = self.sh.pool.get().await?;
            let up = c
                .prepare_cached(
                    "INSERT INTO nodes (id, name, started_ms, seen_ms) VALUES ($1, $2, $3, $3)
                     ON CONFLICT (id) DO UPDATE SET seen_ms = excluded.seen_ms",
                )
                .await?;
            c.execute(&up, &[&self.sh.node, &name, &now]).await?;
            let read = c
                .prepare_cached(
                    "SELECT (SELECT version FROM cluster),
                            (SELECT count(*) FROM nodes WHERE seen_ms > $1),
                            pg_database_size(current_database())",
                )
                .await?;
            let row = c.query_one(&read, &[&(now - 3 * 1000)]).await?;
            Ok::<_, PgErr>((
                row.get::<_, i64>(0),
                row.get::<_, i64>(1),
                row.get::<_, i64>(2),
            ))
        }
        .await;
        let (version, nodes, size) = self.noted(r)?;
        self.sh.size.store(size.max(0) as u64, Ordering::Relaxed);
        Ok(ClusterView {
            version,
            nodes: (nodes.max(1)) as usize,
        })
    }

    async fn leave(&self) -> Result<(), StoreError> {
        let n = self
            .exec(
                "UPDATE deliveries SET claimed_by = NULL, claimed_until = NULL WHERE claimed_by = $1",
                &[&self.sh.node],
            )
            .await?;
        self.exec("DELETE FROM nodes WHERE id = $1", &[&self.sh.node])
            .await?;
        tracing::info!(released = n, "claims given back");
        Ok(())
    }

    async fn next_due_ms(
        &self,
        ep: Uuid,
        look: usize,
        skip: Skip<'_>,
    ) -> Result<Option<i64>, StoreError> {
        let rows = self
            .query(
                "SELECT event, due_ms FROM deliveries
                 WHERE ep = $1 AND due_ms IS NOT NULL
                   AND (claimed_until IS NULL OR claimed_until < $3 OR claimed_by = $4)
                 ORDER BY due_ms, event LIMIT $2",
                &[&ep, &(look.max(1) as i64), &now_ms(), &self.sh.node],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| (r.get::<_, Uuid>(0), r.get::<_, i64>(1)))
            .find(|(e, _)| !skip(*e))
            .map(|(_, d)| d))
    }

    async fn due_count(&self, ep: Uuid) -> Result<u64, StoreError> {
        let rows = self
            .query(
                "SELECT count(*) FROM deliveries WHERE ep = $1 AND due_ms IS NOT NULL",
                &[&ep],
            )
            .await?;
        Ok(rows.first().map(|r| r.get::<_, i64>(0)).unwrap_or(0) as u64)
    }

    async fn due_count_until(&self, ep: Uuid, now_ms: i64) -> Result<u64, StoreError> {
        let rows = self
            .query(
                "SELECT count(*) FROM deliveries
                 WHERE ep = $1 AND due_ms IS NOT NULL AND due_ms <= $2",
                &[&ep, &now_ms],
            )
            .await?;
        Ok(rows.first().map(|r| r.get::<_, i64>(0)).unwrap_or(0) as u64)
    }

    async fn record_attempt(&self, u: AttemptUpdate<'_>) -> Result<(), StoreError> {
        let (reply, rx) = oneshot::channel();
        self.groups
            .attempts
            .send(AttemptJob {
                event: u.event,
                ep: u.endpoint,
                record: u.record.clone(),
                attempt: u.attempt.cloned(),
                state: u.endpoint_state.cloned(),
                reply,
            })
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    async fn remove_due(&self, ep: Uuid, due: Due) -> Result<(), StoreError> {
        self.exec(
            "UPDATE deliveries SET due_ms = NULL, claimed_by = NULL, claimed_until = NULL
             WHERE event = $1 AND ep = $2 AND due_ms = $3",
            &[&due.event, &ep, &due.due_ms],
        )
        .await
        .map(|_| ())
    }

    async fn requeue(
        &self,
        event: Uuid,
        ep: Uuid,
        record: DeliveryRecord,
        now: i64,
    ) -> Result<(), StoreError> {
        let status = if record.attempts == 0 {
            DeliveryStatus::Delivering
        } else {
            DeliveryStatus::Failing
        };
        let (ob, ot, oh) = rows::output_columns(record.output.as_ref());
        self.exec(
            "UPDATE deliveries SET status = $3, due_ms = $4, updated_ms = $4, attempts = $5,
                 last_status = $6, last_error = $7, reason = $8, output_body = $9,
                 output_type = $10, output_headers = $11, claimed_by = NULL, claimed_until = NULL
             WHERE event = $1 AND ep = $2",
            &[
                &event,
                &ep,
                &status.as_str(),
                &now,
                &(record.attempts as i32),
                &record.last_status.map(i32::from),
                &record.last_error,
                &record.reason,
                &ob,
                &ot,
                &oh,
            ],
        )
        .await
        .map(|_| ())
    }

    async fn disable_pending(
        &self,
        ep: Uuid,
        reason: &str,
        skip: HashSet<Uuid>,
    ) -> Result<usize, StoreError> {
        let skip: Vec<Uuid> = skip.into_iter().collect();
        let n = self
            .exec(
                "UPDATE deliveries SET status = 'disabled', reason = $2, due_ms = NULL,
                     output_body = NULL, output_type = NULL, output_headers = NULL,
                     updated_ms = $3, claimed_by = NULL, claimed_until = NULL
                 WHERE ep = $1 AND due_ms IS NOT NULL AND NOT (event = ANY($4))",
                &[&ep, &reason, &now_ms(), &skip],
            )
            .await?;
        Ok(n as usize)
    }

    async fn endpoint_state(&self, ep: Uuid) -> Result<EndpointState, StoreError> {
        let rows = self
            .query("SELECT state FROM endpoint_state WHERE ep = $1", &[&ep])
            .await?;
        match rows.first() {
            None => Ok(EndpointState::default()),
            Some(r) => from_json("endpoint state", r.get(0)),
        }
    }

    async fn put_endpoint_state(&self, ep: Uuid, s: &EndpointState) -> Result<(), StoreError> {
        let doc = to_json("endpoint state", s)?;
        self.exec(
            "INSERT INTO endpoint_state (ep, disabled_reason, state) VALUES ($1, $2, $3)
             ON CONFLICT (ep) DO UPDATE SET disabled_reason = excluded.disabled_reason,
                 state = excluded.state",
            &[&ep, &s.disabled_reason, &doc],
        )
        .await
        .map(|_| ())
    }

    async fn api_endpoints(
        &self,
        account: Option<&str>,
    ) -> Result<Vec<StoredEndpoint>, StoreError> {
        let rows = self
            .query(
                "SELECT body FROM api_endpoints WHERE $1::text IS NULL OR account = $1
                 ORDER BY account, id",
                &[&account],
            )
            .await?;
        rows.iter()
            .map(|r| from_json("endpoint", r.get(0)))
            .collect()
    }

    async fn api_endpoint(
        &self,
        account: &str,
        id: &str,
    ) -> Result<Option<StoredEndpoint>, StoreError> {
        let rows = self
            .query(
                "SELECT body FROM api_endpoints WHERE account = $1 AND id = $2",
                &[&account, &id],
            )
            .await?;
        rows.first()
            .map(|r| from_json("endpoint", r.get(0)))
            .transpose()
    }

    async fn put_api_endpoint(&self, e: &StoredEndpoint) -> Result<(), StoreError> {
        let doc = to_json("endpoint", e)?;
        self.exec(
            "INSERT INTO api_endpoints (account, id, body) VALUES ($1, $2, $3)
             ON CONFLICT (account, id) DO UPDATE SET body = excluded.body",
            &[&e.account, &e.id, &doc],
        )
        .await
        .map(|_| ())
    }

    async fn delete_api_endpoint(&self, account: &str, id: &str) -> Result<bool, StoreError> {
        let n = self
            .exec(
                "DELETE FROM api_endpoints WHERE account = $1 AND id = $2",
                &[&account, &id],
            )
            .await?;
        Ok(n > 0)
    }

    async fn open_batch(&self, b: &BatchJournal) -> Result<(), StoreError> {
        self.exec(
            "INSERT INTO batches (id, node, ep, at_ms, events) VALUES ($1, $2, $3, $4, $5)",
            &[&b.id, &self.sh.node, &b.ep, &b.at_ms, &b.events],
        )
        .await
        .map(|_| ())
    }

    async fn close_batch(&self, id: Uuid) -> Result<(), StoreError> {
        self.exec("DELETE FROM batches WHERE id = $1", &[&id])
            .await
            .map(|_| ())
    }

    async fn recover_batches(&self) -> Result<(usize, usize), StoreError> {
        let now = now_ms();
        let r = async {
            let mut c = self.sh.pool.get().await?;
            let tx = c.transaction().await?;
            // Rows of nodes not seen for 3 s, taken by one live node only.
            let rows = tx
                .query(
                    "SELECT id, node, ep, at_ms, events FROM batches b
                     WHERE NOT EXISTS (SELECT 1 FROM nodes n WHERE n.id = b.node AND n.seen_ms > $1)
                     FOR UPDATE SKIP LOCKED",
                    &[&(now - 3 * 1000)],
                )
                .await?;
            let note = tx
                .prepare_cached(
                    "WITH upd AS (
                         UPDATE deliveries d
                         SET attempts = d.attempts + 1, updated_ms = $6,
                             last_status = CASE WHEN d.due_ms IS NULL THEN d.last_status END,
                             last_error = CASE WHEN d.due_ms IS NULL THEN d.last_error ELSE $5 END,
                             status = CASE WHEN d.status = 'delivering' THEN 'failing' ELSE d.status END
                         WHERE d.ep = $2 AND d.event = ANY($4)
                           AND (d.claimed_by IS NULL OR d.claimed_by = $7 OR d.claimed_until < $6)
                           AND NOT EXISTS (SELECT 1 FROM attempts a
                                           WHERE a.event = d.event AND a.ep = d.ep AND a.batch_id = $1)
                         RETURNING d.event, d.attempts)
                     INSERT INTO attempts (event, ep, n, at_ms, status, error, latency_us, response, batch_id, batch_size)
                     SELECT event, $2, attempts, $3, NULL, $5, 0, ''::bytea, $1, $8 FROM upd",
                )
                .await?;
            let mut noted = 0u64;
            for row in &rows {
                let b = BatchJournal {
                    id: row.get(0),
                    ep: row.get(2),
                    at_ms: row.get(3),
                    events: row.get(4),
                };
                let node: Uuid = row.get(1);
                let size = b.events.len() as i32;
                noted += tx
                    .execute(
                        &note,
                        &[
                            &b.id,
                            &b.ep,
                            &b.at_ms,
                            &b.events,
                            &b.interrupted_error(),
                            &now,
                            &node,
                            &size,
                        ],
                    )
                    .await?;
                // Forgotten once every member has its note (members a live
                // node holds now are noted at a later round).
                tx.execute(
                    "DELETE FROM batches b WHERE id = $1 AND NOT EXISTS (
                         SELECT 1 FROM deliveries d
                         WHERE d.ep = $2 AND d.event = ANY($3)
                           AND NOT EXISTS (SELECT 1 FROM attempts a
                                           WHERE a.event = d.event AND a.ep = d.ep AND a.batch_id = $1))",
                    &[&b.id, &b.ep, &b.events],
                )
                .await?;
            }
            tx.commit().await?;
            Ok::<_, PgErr>((rows.len(), noted as usize))
        }
        .await;
        self.noted(r)
    }

    async fn prune(&self, account: &str, cutoff_ms: i64, max: usize) -> Result<usize, StoreError> {
        let r = async {
            let mut c = self.sh.pool.get().await?;
            let tx = c.transaction().await?;
            let stmt = tx
                .prepare_cached(
                    "WITH old AS (
                         SELECT id FROM events e
                         WHERE account = $1 AND id < $2
                           AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event = e.id
                                           AND d.status IN ('delivering', 'failing'))
                         ORDER BY id LIMIT $3),
                     a AS (DELETE FROM attempts WHERE event IN (SELECT id FROM old)),
                     d AS (DELETE FROM deliveries WHERE event IN (SELECT id FROM old)),
                     s AS (DELETE FROM schedules WHERE event IN (SELECT id FROM old))
                     DELETE FROM events WHERE id IN (SELECT id FROM old)",
                )
                .await?;
            let n = tx
                .execute(&stmt, &[&account, &v7_floor(cutoff_ms), &(max as i64)])
                .await?;
            let stmt = tx
                .prepare_cached("DELETE FROM idempotency WHERE account = $1 AND at_ms <= $2")
                .await?;
            tx.execute(&stmt, &[&account, &(now_ms() - IDEMPOTENCY_WINDOW_MS)])
                .await?;
            tx.commit().await?;
            Ok::<_, PgErr>(n as usize)
        }
        .await;
        self.noted(r)
    }

    async fn flush(&self) -> Result<(), StoreError> {
        // Every answered write is committed already.
        Ok(())
    }

    fn write_error(&self) -> Option<String> {
        self.sh
            .write_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn size_on_disk(&self) -> u64 {
        self.sh.size.load(Ordering::Relaxed)
    }

    fn flush_latency(&self) -> Option<Arc<Histogram>> {
        Some(self.sh.flush_latency.clone())
    }
}

#[cfg(test)]
mod tests;
