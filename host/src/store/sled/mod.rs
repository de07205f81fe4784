//! The embedded backend: one sled tree (layout in `keys`), records encoded
//! by `codec` (payloads zstd-compressed), every write through the
//! group-commit thread in `writer`, older layouts upgraded by `migrate`.
//!
//! Reads go straight to sled from the caller's task: they are lock-free
//! and, for the small reads of the hot path, served from sled's cache.
//! Scans that can be long (counting a queue, disabling or pruning many
//! entries) run on the blocking pool.

mod codec;
mod export;
mod keys;
mod migrate;
mod writer;

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread;

use async_trait::async_trait;
use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use self::codec::{IdemRecord, dec, dec_event, enc, enc_event};
use self::keys::{parse_due, prefix_end, uuid_at};
use self::writer::{Job, Ops};
use super::{
    AttemptRecord, AttemptUpdate, Backend, Committed, DeliveryRecord, DeliveryStatus, Due,
    EndpointState, EventRecord, IDEMPOTENCY_WINDOW_MS, NewEvent, Skip, StoreError, StoredEndpoint,
    now_ms, stored_ms,
};
use crate::store::{BatchJournal, CancelTarget, Cancelled, Schedule, ScheduleRecord};
use crate::telemetry::{FLUSH_BUCKETS, Histogram};

/// The store's layout version. 1: events under `e/<event>` with an
/// `a/<account>\0<event>` index and raw payloads; 2: events under their
/// account, payload compressed.
pub const FORMAT: u32 = 2;

/// The sled backend: a tree plus the group-commit writer.
pub struct SledStore {
    db: sled::Db,
    tree: sled::Tree,
    /// The writer thread's queue: every write goes through it.
    writer: mpsc::Sender<Job>,
    /// The last write error of the writer thread, cleared by the next
    /// successful write. sled keeps the first I/O error (e.g. a full disk)
    /// and refuses every later write until the store is reopened, so once
    /// set this stays until a restart: ingest answers 503, delivery pauses
    /// (it could not record attempts), and `/readyz` says why. A std mutex:
    /// held for a clone or a swap, never across an await.
    write_error: Arc<Mutex<Option<String>>>,
    /// How long each group flush took: a flush that waits on a stalled
    /// disk delays every ingest answer in its group.
    flush_latency: Arc<Histogram>,
}

fn io(e: sled::Error) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn closed<T>(_: T) -> StoreError {
    StoreError::Closed
}

impl SledStore {
    /// Opens (or creates) the store in `dir` and starts the writer thread.
    /// `fsync_every`: how often sled's background thread fsyncs the file.
    /// Each fsync stalls the writes beside it for as long as the host takes
    /// to flush what was written since the last one (about 0.6 ms + 0.13 ms
    /// per MB here), so short intervals mean short stalls: at 20,000
    /// events/s the ingest p99 was 8.4–9.6 ms with 200 ms, 5.7–7.6 ms with
    /// 100 ms and 4.8–5.7 ms with 50 ms, at the same throughput
    /// (BENCHMARKS.md). It is also the power-loss window.
    pub fn open(
        dir: &Path,
        cache_bytes: u64,
        fsync_every: std::time::Duration,
    ) -> Result<SledStore, StoreError> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(cache_bytes)
            .flush_every_ms(Some((fsync_every.as_millis() as u64).max(1)))
            .mode(sled::Mode::HighThroughput)
            .open()
            .map_err(|e| match &e {
                sled::Error::Io(io)
                    if io.kind() == std::io::ErrorKind::WouldBlock
                        || io.to_string().contains("could not acquire lock") =>
                {
                    StoreError::Locked(format!("{}: {e}", dir.display()))
                }
                _ => StoreError::Open(format!("opening {}: {e}", dir.display())),
            })?;
        let tree = db.open_tree("switchyard").map_err(io)?;
        migrate::migrate(&db, &tree)?;
        let (tx, rx) = mpsc::channel::<Job>(8192);
        let (wdb, wtree) = (db.clone(), tree.clone());
        let write_error = Arc::new(Mutex::new(None));
        let werr = write_error.clone();
        let flush_latency = Arc::new(Histogram::new(FLUSH_BUCKETS));
        let flushes = flush_latency.clone();
        thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer::writer_loop(wdb, wtree, rx, werr, flushes))
            .map_err(|e| StoreError::Open(format!("starting the store writer: {e}")))?;
        Ok(SledStore {
            db,
            tree,
            writer: tx,
            write_error,
            flush_latency,
        })
    }

    fn get<T: DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, StoreError> {
        match self.tree.get(key).map_err(io)? {
            None => Ok(None),
            Some(v) => dec(key, &v).map(Some),
        }
    }

    /// Applies key writes through the writer thread, atomically.
    async fn apply(&self, ops: Ops, durable: bool) -> Result<(), StoreError> {
        if ops.is_empty() {
            return Ok(());
        }
        let (reply, rx) = oneshot::channel();
        self.writer
            .send(Job::Ops {
                ops,
                durable,
                reply,
            })
            .await
            .map_err(closed)?;
        rx.await.map_err(closed)?.map_err(StoreError::Unavailable)
    }

    fn deliveries_sync(
        tree: &sled::Tree,
        event: Uuid,
    ) -> Result<Vec<(Uuid, DeliveryRecord)>, StoreError> {
        let prefix = keys::delivery_prefix(event);
        let mut out = Vec::new();
        for kv in tree.scan_prefix(&prefix) {
            let (k, v) = kv.map_err(io)?;
            out.push((uuid_at(&k, 2 + 16), dec(&k, &v)?));
        }
        Ok(out)
    }

    /// Runs a long scan on the blocking pool.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&sled::Tree) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let tree = self.tree.clone();
        tokio::task::spawn_blocking(move || f(&tree))
            .await
            .map_err(|e| StoreError::Unavailable(format!("store task failed: {e}")))?
    }

    #[cfg(test)]
    pub(crate) fn raw_tree(&self) -> &sled::Tree {
        &self.tree
    }
}

#[async_trait]
impl Backend for SledStore {
    fn name(&self) -> &'static str {
        "sled"
    }

    async fn commit_scheduled(
        &self,
        event: NewEvent,
        schedule: Option<Schedule>,
    ) -> Result<Committed, StoreError> {
        // Encoded (and compressed) here, on the caller's thread, not the writer's.
        let record = enc_event(&event.record);
        let (tx, rx) = oneshot::channel();
        self.writer
            .send(Job::Ingest(event, record, schedule, tx))
            .await
            .map_err(closed)?;
        rx.await.map_err(closed)?.map_err(StoreError::Unavailable)
    }

    async fn cancel_scheduled(
        &self,
        account: &str,
        target: CancelTarget,
    ) -> Result<Option<Cancelled>, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.writer
            .send(Job::Cancel(account.to_string(), target, tx))
            .await
            .map_err(closed)?;
        rx.await.map_err(closed)?.map_err(StoreError::Unavailable)
    }

    async fn schedule(
        &self,
        account: &str,
        event: Uuid,
    ) -> Result<Option<ScheduleRecord>, StoreError> {
        self.get(&keys::schedule(account, event))
    }

    async fn event(&self, account: &str, id: Uuid) -> Result<Option<EventRecord>, StoreError> {
        let key = keys::event(account, id);
        match self.tree.get(&key).map_err(io)? {
            None => Ok(None),
            Some(v) => dec_event(&key, &v).map(Some),
        }
    }

    async fn list_events(
        &self,
        account: &str,
        before: Option<Uuid>,
        limit: usize,
    ) -> Result<Vec<Uuid>, StoreError> {
        let prefix = keys::event_prefix(account);
        let end = match before {
            Some(id) => keys::event(account, id),
            None => prefix_end(&prefix),
        };
        let mut out = Vec::new();
        for kv in self.tree.range(prefix.clone()..end).rev() {
            let (k, _) = kv.map_err(io)?;
            out.push(uuid_at(&k, prefix.len()));
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    async fn delivery(&self, event: Uuid, ep: Uuid) -> Result<Option<DeliveryRecord>, StoreError> {
        self.get(&keys::delivery(event, ep))
    }

    async fn deliveries_of(&self, event: Uuid) -> Result<Vec<(Uuid, DeliveryRecord)>, StoreError> {
        Self::deliveries_sync(&self.tree, event)
    }

    async fn attempts(&self, event: Uuid, ep: Uuid) -> Result<Vec<AttemptRecord>, StoreError> {
        let mut out = Vec::new();
        for kv in self.tree.scan_prefix(keys::attempt_prefix(event, ep)) {
            let (k, v) = kv.map_err(io)?;
            out.push(codec::dec_attempt(&k, &v)?);
        }
        Ok(out)
    }

    async fn due(
        &self,
        ep: Uuid,
        after: Option<Due>,
        now_ms: i64,
        limit: usize,
        skip: Skip<'_>,
    ) -> Result<Vec<Due>, StoreError> {
        let start = match after {
            // The smallest key after the cursor's.
            Some(a) => [keys::due(ep, a.due_ms, a.event), vec![0]].concat(),
            None => keys::due_prefix(ep),
        };
        let end = keys::due(ep, now_ms.saturating_add(1), Uuid::nil());
        let mut out = Vec::new();
        for kv in self.tree.range(start..end) {
            let (k, _) = kv.map_err(io)?;
            let Some((due_ms, event)) = parse_due(&k) else {
                continue;
            };
            if skip(event) {
                continue;
            }
            out.push(Due { event, due_ms });
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    async fn next_due_ms(
        &self,
        ep: Uuid,
        look: usize,
        skip: Skip<'_>,
    ) -> Result<Option<i64>, StoreError> {
        for kv in self.tree.scan_prefix(keys::due_prefix(ep)).take(look) {
            let (k, _) = kv.map_err(io)?;
            if let Some((due_ms, event)) = parse_due(&k) {
                if !skip(event) {
                    return Ok(Some(due_ms));
                }
            }
        }
        Ok(None)
    }

    async fn due_count(&self, ep: Uuid) -> Result<u64, StoreError> {
        self.blocking(move |tree| Ok(tree.scan_prefix(keys::due_prefix(ep)).keys().count() as u64))
            .await
    }

    async fn due_count_until(&self, ep: Uuid, now_ms: i64) -> Result<u64, StoreError> {
        self.blocking(move |tree| {
            let start = keys::due_prefix(ep);
            let end = keys::due(ep, now_ms.saturating_add(1), Uuid::nil());
            Ok(tree.range(start..end).keys().count() as u64)
        })
        .await
    }

    async fn record_attempt(&self, u: AttemptUpdate<'_>) -> Result<(), StoreError> {
        let mut ops: Ops = Vec::with_capacity(5);
        if let Some(old) = u.old_due_ms {
            ops.push((keys::due(u.endpoint, old, u.event), None));
        }
        if let Some(next) = u.record.due_ms {
            ops.push((keys::due(u.endpoint, next, u.event), Some(Vec::new())));
        }
        ops.push((keys::delivery(u.event, u.endpoint), Some(enc(u.record))));
        if let Some(a) = u.attempt {
            ops.push((
                keys::attempt(u.event, u.endpoint, u.record.attempts),
                Some(enc(a)),
            ));
        }
        if let Some(s) = u.endpoint_state {
            ops.push((keys::endpoint_state(u.endpoint), Some(enc(s))));
        }
        self.apply(ops, false).await
    }

    async fn remove_due(&self, ep: Uuid, due: Due) -> Result<(), StoreError> {
        self.apply(vec![(keys::due(ep, due.due_ms, due.event), None)], false)
            .await
    }

    async fn requeue(
        &self,
        event: Uuid,
        ep: Uuid,
        mut record: DeliveryRecord,
        now: i64,
    ) -> Result<(), StoreError> {
        let mut ops: Ops = Vec::with_capacity(3);
        if let Some(old) = record.due_ms {
            ops.push((keys::due(ep, old, event), None));
        }
        record.due_ms = Some(now);
        record.status = if record.attempts == 0 {
            DeliveryStatus::Delivering
        } else {
            DeliveryStatus::Failing
        };
        record.updated_ms = now;
        ops.push((keys::due(ep, now, event), Some(Vec::new())));
        ops.push((keys::delivery(event, ep), Some(enc(&record))));
        self.apply(ops, false).await
    }

    async fn disable_pending(
        &self,
        ep: Uuid,
        reason: &str,
        skip: HashSet<Uuid>,
    ) -> Result<usize, StoreError> {
        let reason = reason.to_string();
        // Read on the blocking pool, written through the writer in chunks
        // (each atomic: a delivery is either still queued or disabled).
        let ops = self
            .blocking(move |tree| {
                let now = now_ms();
                let mut ops: Ops = Vec::new();
                let mut n = 0;
                for kv in tree.scan_prefix(keys::due_prefix(ep)) {
                    let (k, _) = kv.map_err(io)?;
                    let Some((_, event)) = parse_due(&k) else {
                        continue;
                    };
                    if skip.contains(&event) {
                        continue;
                    }
                    ops.push((k.to_vec(), None));
                    let dk = keys::delivery(event, ep);
                    if let Some(v) = tree.get(&dk).map_err(io)? {
                        let mut rec: DeliveryRecord = dec(&dk, &v)?;
                        rec.status = DeliveryStatus::Disabled;
                        rec.reason = Some(reason.clone());
                        rec.due_ms = None;
                        rec.output = None;
                        rec.updated_ms = now;
                        ops.push((dk, Some(enc(&rec))));
                    }
                    n += 1;
                }
                Ok((ops, n))
            })
            .await?;
        let (ops, n) = ops;
        let mut ops = ops.into_iter().peekable();
        while ops.peek().is_some() {
            let chunk: Ops = ops.by_ref().take(2048).collect();
            self.apply(chunk, false).await?;
        }
        Ok(n)
    }

    async fn endpoint_state(&self, ep: Uuid) -> Result<EndpointState, StoreError> {
        Ok(self.get(&keys::endpoint_state(ep))?.unwrap_or_default())
    }

    async fn put_endpoint_state(&self, ep: Uuid, s: &EndpointState) -> Result<(), StoreError> {
        self.apply(vec![(keys::endpoint_state(ep), Some(enc(s)))], false)
            .await
    }

    async fn api_endpoints(
        &self,
        account: Option<&str>,
    ) -> Result<Vec<StoredEndpoint>, StoreError> {
        let prefix = match account {
            Some(a) => keys::api_endpoint(a, ""),
            None => b"n/".to_vec(),
        };
        let mut out = Vec::new();
        for kv in self.tree.scan_prefix(&prefix) {
            let (k, v) = kv.map_err(io)?;
            let e: StoredEndpoint =
                serde_json::from_slice(&v).map_err(|e| StoreError::Corrupt {
                    what: format!("endpoint {}", String::from_utf8_lossy(&k)),
                    detail: e.to_string(),
                })?;
            if account.is_none_or(|a| e.account == a) {
                out.push(e);
            }
        }
        Ok(out)
    }

    async fn api_endpoint(
        &self,
        account: &str,
        id: &str,
    ) -> Result<Option<StoredEndpoint>, StoreError> {
        let k = keys::api_endpoint(account, id);
        match self.tree.get(&k).map_err(io)? {
            None => Ok(None),
            Some(v) => serde_json::from_slice(&v)
                .map(Some)
                .map_err(|e| StoreError::Corrupt {
                    what: format!("endpoint {account}/{id}"),
                    detail: e.to_string(),
                }),
        }
    }

    async fn put_api_endpoint(&self, e: &StoredEndpoint) -> Result<(), StoreError> {
        let v = serde_json::to_vec(e).map_err(|e| StoreError::Corrupt {
            what: "endpoint".into(),
            detail: e.to_string(),
        })?;
        self.apply(vec![(keys::api_endpoint(&e.account, &e.id), Some(v))], true)
            .await
    }

    async fn delete_api_endpoint(&self, account: &str, id: &str) -> Result<bool, StoreError> {
        let k = keys::api_endpoint(account, id);
        let existed = self.tree.contains_key(&k).map_err(io)?;
        self.apply(vec![(k, None)], true).await?;
        Ok(existed)
    }

    async fn open_batch(&self, b: &BatchJournal) -> Result<(), StoreError> {
        self.apply(vec![(keys::batch(b.id), Some(enc(b)))], true)
            .await
    }

    async fn close_batch(&self, id: Uuid) -> Result<(), StoreError> {
        self.apply(vec![(keys::batch(id), None)], false).await
    }

    async fn recover_batches(&self) -> Result<(usize, usize), StoreError> {
        let mut found = Vec::new();
        for kv in self.tree.scan_prefix(keys::BATCH_PREFIX) {
            let (k, v) = kv.map_err(io)?;
            found.push((k.to_vec(), dec::<BatchJournal>(&k, &v)?));
        }
        let mut noted = 0;
        for (k, b) in &found {
            for &event in &b.events {
                noted +=
                    usize::from(crate::store::backend::note_interrupted(self, b, event).await?);
            }
            self.apply(vec![(k.clone(), None)], true).await?;
        }
        Ok((found.len(), noted))
    }

    async fn prune(&self, account: &str, cutoff_ms: i64, max: usize) -> Result<usize, StoreError> {
        let account = account.to_string();
        // Final deliveries are never written again, so what is read here
        // cannot change under the writer before these removals land.
        let (batches, deleted) = self
            .blocking(move |tree| {
                let prefix = keys::event_prefix(&account);
                let mut batches: Vec<Ops> = Vec::new();
                let mut deleted = 0;
                for kv in tree.scan_prefix(&prefix) {
                    let (k, _) = kv.map_err(io)?;
                    let event = uuid_at(&k, prefix.len());
                    let stored = stored_ms(event).unwrap_or(i64::MAX);
                    if stored >= cutoff_ms || deleted >= max {
                        break;
                    }
                    let deliveries = Self::deliveries_sync(tree, event)?;
                    if deliveries.iter().any(|(_, d)| !d.status.is_final()) {
                        continue;
                    }
                    let mut ops: Ops = Vec::new();
                    for (ep, _) in &deliveries {
                        for a in tree.scan_prefix(keys::attempt_prefix(event, *ep)).keys() {
                            ops.push((a.map_err(io)?.to_vec(), None));
                        }
                        ops.push((keys::delivery(event, *ep), None));
                    }
                    ops.push((keys::schedule(&account, event), None));
                    ops.push((k.to_vec(), None));
                    batches.push(ops);
                    deleted += 1;
                }
                let now = now_ms();
                let mut idem: Ops = Vec::new();
                for kv in tree.scan_prefix(keys::idem(&account, "")).take(max) {
                    let (k, v) = kv.map_err(io)?;
                    if let Ok(r) = postcard::from_bytes::<IdemRecord>(&v) {
                        if now - r.at_ms >= IDEMPOTENCY_WINDOW_MS {
                            idem.push((k.to_vec(), None));
                        }
                    }
                }
                batches.push(idem);
                Ok((batches, deleted))
            })
            .await?;
        for ops in batches {
            self.apply(ops, false).await?;
        }
        Ok(deleted)
    }

    async fn flush(&self) -> Result<(), StoreError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || db.flush().map(|_| ()).map_err(io))
            .await
            .map_err(|e| StoreError::Unavailable(format!("flush task failed: {e}")))?
    }

    fn write_error(&self) -> Option<String> {
        self.write_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }

    fn flush_latency(&self) -> Option<Arc<Histogram>> {
        Some(self.flush_latency.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;
    use crate::store::conformance::{Fixture, conformance_tests};

    /// A sled store in a temp dir; reopening waits for the previous
    /// handle's writer thread to release the file lock.
    struct SledFixture(tempfile::TempDir);

    fn sled_fixture() -> SledFixture {
        SledFixture(tempfile::tempdir().unwrap())
    }

    #[async_trait]
    impl Fixture for SledFixture {
        async fn open(&self) -> Store {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            loop {
                match SledStore::open(self.0.path(), 1 << 20, std::time::Duration::from_millis(50))
                {
                    Ok(s) => return Arc::new(s),
                    Err(e) if std::time::Instant::now() < deadline => {
                        let _ = e;
                        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    }
                    Err(e) => panic!("reopen: {e}"),
                }
            }
        }
    }

    conformance_tests!(sled_fixture());

    #[tokio::test]
    async fn payloads_are_compressed_on_disk_and_bad_ones_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            SledStore::open(dir.path(), 1 << 20, std::time::Duration::from_millis(50)).unwrap();
        let doc = std::fs::read("benches/load/event.json").unwrap();
        let id = Uuid::now_v7();
        store
            .commit(NewEvent {
                id,
                record: EventRecord {
                    account: "acct".into(),
                    event_type: "license.created".into(),
                    created_ms: now_ms(),
                    source_id: None,
                    payload: doc.clone(),
                    endpoints: vec![],
                },
                idempotency_key: None,
                deliveries: vec![],
            })
            .await
            .unwrap();
        assert_eq!(store.event("acct", id).await.unwrap().unwrap().payload, doc);
        let raw = store
            .raw_tree()
            .get(keys::event("acct", id))
            .unwrap()
            .unwrap();
        assert!(
            raw.len() < doc.len() * 3 / 4,
            "{} of {}",
            raw.len(),
            doc.len()
        );
        for payload in [Vec::new(), b"{}".to_vec(), doc.clone(), vec![b'x'; 3 << 20]] {
            assert_eq!(
                codec::packed::unpack(&codec::packed::pack(&payload)).unwrap(),
                payload
            );
        }
        assert!(codec::packed::unpack(&[1, 0xff, 0xff, 0xff, 0x7f, 0]).is_err());
        assert!(codec::packed::unpack(&[9]).is_err());
    }

    #[tokio::test]
    async fn a_format_1_store_is_migrated_when_opened() {
        #[derive(serde::Serialize)]
        struct V1<'a> {
            account: &'a str,
            event_type: &'a str,
            created_ms: i64,
            source_id: Option<String>,
            payload: &'a [u8],
            endpoints: Vec<String>,
        }
        let dir = tempfile::tempdir().unwrap();
        let ids: Vec<Uuid> = (0..2500).map(|_| Uuid::now_v7()).collect();
        {
            let db = sled::Config::new().path(dir.path()).open().unwrap();
            let tree = db.open_tree("switchyard").unwrap();
            for (n, id) in ids.iter().enumerate() {
                let account = if n % 2 == 0 { "acct" } else { "other" };
                let v1 = V1 {
                    account,
                    event_type: "license.created",
                    created_ms: 1,
                    source_id: None,
                    payload: br#"{"data":{"type":"licenses"}}"#,
                    endpoints: vec!["crm".into()],
                };
                tree.insert([b"e/".as_slice(), id.as_bytes()].concat(), enc(&v1))
                    .unwrap();
                tree.insert(
                    [b"a/".as_slice(), account.as_bytes(), b"\0", id.as_bytes()].concat(),
                    &[] as &[u8],
                )
                .unwrap();
            }
            db.flush().unwrap();
        }
        let store =
            SledStore::open(dir.path(), 1 << 20, std::time::Duration::from_millis(50)).unwrap();
        for (n, id) in ids.iter().enumerate() {
            let account = if n % 2 == 0 { "acct" } else { "other" };
            let ev = store.event(account, *id).await.unwrap().unwrap();
            assert_eq!(ev.payload, br#"{"data":{"type":"licenses"}}"#);
            assert_eq!(ev.endpoints, vec!["crm".to_string()]);
        }
        assert_eq!(
            store.list_events("acct", None, 5000).await.unwrap().len(),
            1250
        );
        assert_eq!(store.raw_tree().scan_prefix(b"a/").count(), 0);
        assert_eq!(
            store
                .raw_tree()
                .get(migrate::FORMAT_KEY)
                .unwrap()
                .unwrap()
                .as_ref(),
            FORMAT.to_be_bytes()
        );
    }
}
