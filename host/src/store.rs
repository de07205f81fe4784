//! Durable state in sled: events, deliveries, the due index, attempts,
//! idempotency keys, API-created endpoints and endpoint state.
//!
//! Everything lives in one sled tree under key prefixes, so that one
//! `apply_batch` (atomic in sled) covers an event, all its deliveries and
//! their due entries. Ingest goes through a single group-commit writer
//! thread: it drains every request waiting, applies them as one batch,
//! flushes once, then acknowledges them all.
//!
//! Key layout (ids are 16 raw bytes, times big-endian ms):
//! - `e/<account>\0<event>` → [`EventRecord`] — an account's events in time
//!   order (UUIDv7), payload compressed
//! - `d/<event><endpoint-uid>` → [`DeliveryRecord`]
//! - `q/<endpoint-uid><due-ms><event>` → () — the due index
//! - `t/<event><endpoint-uid><attempt-no>` → [`AttemptRecord`]
//! - `i/<account>\0<key>` → [`IdemRecord`]
//! - `n/<account>\0<endpoint-id>` → endpoint created through the API
//! - `x/<endpoint-uid>` → [`EndpointState`]
//! - `s/<account>\0<event>` → [`ScheduleRecord`] — only events ingested
//!   with `deliver_at`/`deliver_in`/`schedule_key` (scheduled events)
//! - `k/<account>\0<schedule-key>` → the event id (16 bytes) last
//!   scheduled under that key
//! - `v/format` → the layout's version ([`FORMAT`]); older stores are
//!   migrated when opened

use std::path::Path;
use std::thread;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

/// The store's layout version. 1: events under `e/<event>` with an
/// `a/<account>\0<event>` index and raw payloads; 2: events under their
/// account, payload compressed.
pub const FORMAT: u32 = 2;
const FORMAT_KEY: &[u8] = b"v/format";

/// How long an idempotency key dedupes.
pub const IDEMPOTENCY_WINDOW_MS: i64 = 24 * 3600 * 1000;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage error: {0}")]
    Sled(#[from] sled::Error),
    #[error("corrupt record under {key}: {source}")]
    Decode {
        key: String,
        source: postcard::Error,
    },
    #[error("the store is shutting down")]
    Closed,
    #[error("storage error: {0}")]
    Write(String),
}

/// One ingested event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRecord {
    pub account: String,
    pub event_type: String,
    pub created_ms: i64,
    /// The producer's own id (`id` / Keygen `idempotencyToken`), if any.
    pub source_id: Option<String>,
    /// The resource document, JSON bytes as received (stored compressed:
    /// see [`packed`]).
    #[serde(with = "packed")]
    pub payload: Vec<u8>,
    /// Ids of the endpoints it was fanned out to.
    pub endpoints: Vec<String>,
}

/// Event payloads on disk: zstd level 1, which halves a typical 1 KB
/// Keygen document (1,206 → 651 bytes) for about 6 µs. sled rewrites a
/// whole leaf (up to 16 entries) every few inserts, so the bytes of a
/// stored event are written several times over; halving them halves the
/// data every flush and every periodic fsync has to push (BENCHMARKS.md).
/// Layout: tag 0 + the bytes as they are (when compression does not pay),
/// or tag 1 + original length (u32 LE) + one zstd frame.
mod packed {
    use serde::{Deserializer, Serializer};
    use std::cell::RefCell;

    const RAW: u8 = 0;
    const ZSTD: u8 = 1;
    /// Larger than any payload ingest accepts; guards against a corrupt length.
    const MAX_LEN: usize = 256 << 20;

    thread_local! {
        static COMPRESSOR: RefCell<Option<zstd::bulk::Compressor<'static>>> =
            RefCell::new(zstd::bulk::Compressor::new(1).ok());
        static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> =
            RefCell::new(zstd::bulk::Decompressor::new().ok());
    }

    pub fn pack(payload: &[u8]) -> Vec<u8> {
        let compressed = (payload.len() >= 64 && payload.len() <= MAX_LEN)
            .then(|| {
                COMPRESSOR.with(|c| {
                    c.borrow_mut()
                        .as_mut()
                        .and_then(|c| c.compress(payload).ok())
                })
            })
            .flatten()
            .filter(|z| z.len() + 5 < payload.len());
        match compressed {
            Some(z) => {
                let mut out = Vec::with_capacity(z.len() + 5);
                out.push(ZSTD);
                out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
                out.extend_from_slice(&z);
                out
            }
            None => {
                let mut out = Vec::with_capacity(payload.len() + 1);
                out.push(RAW);
                out.extend_from_slice(payload);
                out
            }
        }
    }

    pub fn unpack(stored: &[u8]) -> Result<Vec<u8>, String> {
        match stored.split_first() {
            Some((&RAW, rest)) => Ok(rest.to_vec()),
            Some((&ZSTD, rest)) if rest.len() >= 4 => {
                let (len, frame) = rest.split_at(4);
                let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
                if len > MAX_LEN {
                    return Err(format!("payload length {len} out of range"));
                }
                DECOMPRESSOR.with(|d| match d.borrow_mut().as_mut() {
                    Some(d) => d
                        .decompress(frame, len)
                        .map_err(|e| format!("payload does not decompress: {e}")),
                    None => Err("no zstd decompressor".into()),
                })
            }
            _ => Err("unknown payload encoding".into()),
        }
    }

    // As bytes, not a sequence of u8: the same postcard encoding (length,
    // then the bytes), without a serde call per byte.
    pub fn serialize<S: Serializer>(payload: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&pack(payload))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct Bytes;
        impl<'de> serde::de::Visitor<'de> for Bytes {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a stored payload")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                unpack(v).map_err(E::custom)
            }
        }
        d.deserialize_bytes(Bytes)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeliveryStatus {
    /// Waiting for its first attempt.
    Delivering,
    /// At least one attempt failed; more are scheduled.
    Failing,
    Delivered,
    /// Every attempt failed.
    Failed,
    /// A plugin skipped it.
    Filtered,
    /// The endpoint was disabled (410 Gone, too many failures, or by hand).
    Disabled,
    /// A scheduled event was cancelled (or replaced) before it was due.
    Cancelled,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Delivering => "delivering",
            DeliveryStatus::Failing => "failing",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Failed => "failed",
            DeliveryStatus::Filtered => "filtered",
            DeliveryStatus::Disabled => "disabled",
            DeliveryStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "delivering" => DeliveryStatus::Delivering,
            "failing" => DeliveryStatus::Failing,
            "delivered" => DeliveryStatus::Delivered,
            "failed" => DeliveryStatus::Failed,
            "filtered" => DeliveryStatus::Filtered,
            "disabled" => DeliveryStatus::Disabled,
            "cancelled" => DeliveryStatus::Cancelled,
            _ => return None,
        })
    }

    pub fn is_final(self) -> bool {
        !matches!(self, DeliveryStatus::Delivering | DeliveryStatus::Failing)
    }
}

/// The body the plugin chain produced, kept so retries resend the same bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredOutput {
    pub body: Vec<u8>,
    pub content_type: String,
    pub headers: Vec<(String, String)>,
}

/// One (event, endpoint) delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryRecord {
    pub account: String,
    pub endpoint: String,
    pub status: DeliveryStatus,
    pub attempts: u32,
    /// When the next attempt is due (its key in the due index).
    pub due_ms: Option<i64>,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    pub updated_ms: i64,
    /// Skip reason, disable reason.
    pub reason: Option<String>,
    pub output: Option<StoredOutput>,
}

/// One HTTP attempt (or plugin failure standing for one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptRecord {
    pub at_ms: i64,
    pub status: Option<u16>,
    pub error: Option<String>,
    pub latency_us: u64,
    /// The first 4 KiB of the response body.
    pub response: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdemRecord {
    pub event: [u8; 16],
    pub at_ms: i64,
}

/// Persistent per-endpoint state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointState {
    pub disabled_reason: Option<String>,
    pub disabled_at_ms: Option<i64>,
    pub consecutive_failures: u64,
    pub first_failure_ms: Option<i64>,
    pub last_success_ms: Option<i64>,
    pub last_error: Option<String>,
}

// ---- scheduled events (issue #12) ------------------------------------

/// A scheduled event: when its deliveries are due, under which key, and
/// whether it was cancelled. Stored under `s/<account>\0<event>` in the
/// same batch as the event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleRecord {
    pub due_ms: i64,
    pub key: Option<String>,
    pub cancelled_ms: Option<i64>,
    /// The event that took its key while it was pending (it was replaced).
    pub replaced_by: Option<[u8; 16]>,
}

impl ScheduleRecord {
    /// `scheduled` (not yet due), `cancelled`, or `None` once due.
    pub fn status(&self, now: i64) -> Option<&'static str> {
        if self.cancelled_ms.is_some() {
            Some("cancelled")
        } else if self.due_ms > now {
            Some("scheduled")
        } else {
            None
        }
    }
}

/// When an ingested event is due, and the key that may move or cancel it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    /// Unix ms, already clamped by the caller (a past time means now).
    pub due_ms: i64,
    pub key: Option<String>,
}

/// A scheduled event can be replaced or cancelled until this long before
/// it is due; after that its deliveries may already be taken by the
/// dispatcher, which must not race a cancellation.
pub const CANCEL_MARGIN_MS: i64 = 250;

/// What a cancellation (or a replacement by key) cancelled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cancelled {
    pub event: Uuid,
    pub due_ms: i64,
    pub key: Option<String>,
    /// Deliveries taken out of the due index.
    pub deliveries: usize,
}

/// Which pending scheduled event to cancel.
#[derive(Debug, Clone)]
pub enum CancelTarget {
    Key(String),
    Event(Uuid),
}

/// A scheduled event written earlier in the writer's current group (not
/// yet readable from the tree).
struct GroupScheduled {
    record: ScheduleRecord,
    deliveries: Vec<(Uuid, String)>,
}

/// A request to store one event and its deliveries.
#[derive(Debug)]
pub struct NewEvent {
    pub id: Uuid,
    pub record: EventRecord,
    /// Dedupe key (already account-scoped by the store).
    pub idempotency_key: Option<String>,
    /// `(endpoint uid, endpoint id)` of every subscribed endpoint.
    pub deliveries: Vec<(Uuid, String)>,
}

/// The answer to a [`NewEvent`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    pub id: Uuid,
    /// The key had been seen: nothing new was stored and `id` is the first event's.
    pub duplicate: bool,
    /// The pending scheduled event this one replaced (same `schedule_key`).
    pub replaced: Option<Cancelled>,
}

/// Work for the writer thread.
enum Job {
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
    /// Apply the writes of a finished attempt (no flush needed).
    Ops(Ops, oneshot::Sender<Result<(), String>>),
}

/// The store: a sled tree plus the group-commit writer.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    tree: sled::Tree,
    writer: mpsc::Sender<Job>,
    /// The last write error of the writer thread, cleared by the next
    /// successful write. sled keeps the first I/O error (e.g. a full disk)
    /// and refuses every later write until the store is reopened, so once
    /// set this stays until a restart: ingest answers 503, delivery pauses
    /// (it could not record attempts), and `/readyz` says why.
    write_error: std::sync::Arc<std::sync::Mutex<Option<String>>>,
    /// How long each group flush took: a flush that waits on a stalled
    /// disk delays every ingest answer in its group.
    flush_latency: std::sync::Arc<crate::telemetry::Histogram>,
}

/// Key writes (`None` = remove) applied together.
type Ops = Vec<(Vec<u8>, Option<Vec<u8>>)>;

/// When a new delivery is first due: the event's creation time, but never
/// later than when it was stored (the time in its UUIDv7), so a producer's
/// future `created` cannot hold a delivery back.
pub fn initial_due_ms(id: Uuid, created_ms: i64) -> i64 {
    let stored = stored_ms(id).unwrap_or(created_ms);
    created_ms.min(stored).max(0)
}

/// When an event was stored: the Unix-ms time in its UUIDv7.
pub fn stored_ms(id: Uuid) -> Option<i64> {
    id.get_timestamp().map(|t| {
        let (s, n) = t.to_unix();
        s as i64 * 1000 + (n / 1_000_000) as i64
    })
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn enc<T: Serialize>(v: &T) -> Vec<u8> {
    // postcard only fails on types it cannot represent; ours are plain data.
    postcard::to_stdvec(v).expect("records are plain data")
}

fn dec<T: DeserializeOwned>(key: &[u8], bytes: &[u8]) -> Result<T, StoreError> {
    postcard::from_bytes(bytes).map_err(|source| StoreError::Decode {
        key: String::from_utf8_lossy(key).into(),
        source,
    })
}

pub mod keys {
    use uuid::Uuid;

    /// Events live under their account, in time order (UUIDv7): the key
    /// itself is the account's event index, so there is no second key to
    /// write per event, and an event can only be found through its account.
    pub fn event(account: &str, id: Uuid) -> Vec<u8> {
        [b"e/".as_slice(), account.as_bytes(), b"\0", id.as_bytes()].concat()
    }
    pub fn event_prefix(account: &str) -> Vec<u8> {
        [b"e/".as_slice(), account.as_bytes(), b"\0"].concat()
    }
    pub fn delivery(event: Uuid, ep: Uuid) -> Vec<u8> {
        [b"d/".as_slice(), event.as_bytes(), ep.as_bytes()].concat()
    }
    pub fn delivery_prefix(event: Uuid) -> Vec<u8> {
        [b"d/".as_slice(), event.as_bytes()].concat()
    }
    pub fn due(ep: Uuid, due_ms: i64, event: Uuid) -> Vec<u8> {
        [
            b"q/".as_slice(),
            ep.as_bytes(),
            &(due_ms.max(0) as u64).to_be_bytes(),
            event.as_bytes(),
        ]
        .concat()
    }
    pub fn due_prefix(ep: Uuid) -> Vec<u8> {
        [b"q/".as_slice(), ep.as_bytes()].concat()
    }
    pub fn attempt(event: Uuid, ep: Uuid, n: u32) -> Vec<u8> {
        [
            b"t/".as_slice(),
            event.as_bytes(),
            ep.as_bytes(),
            &n.to_be_bytes(),
        ]
        .concat()
    }
    pub fn attempt_prefix(event: Uuid, ep: Uuid) -> Vec<u8> {
        [b"t/".as_slice(), event.as_bytes(), ep.as_bytes()].concat()
    }
    pub fn idem(account: &str, key: &str) -> Vec<u8> {
        [b"i/".as_slice(), account.as_bytes(), b"\0", key.as_bytes()].concat()
    }
    pub fn api_endpoint(account: &str, id: &str) -> Vec<u8> {
        [b"n/".as_slice(), account.as_bytes(), b"\0", id.as_bytes()].concat()
    }
    pub fn endpoint_state(ep: Uuid) -> Vec<u8> {
        [b"x/".as_slice(), ep.as_bytes()].concat()
    }
    pub fn schedule(account: &str, event: Uuid) -> Vec<u8> {
        [
            b"s/".as_slice(),
            account.as_bytes(),
            b"\0",
            event.as_bytes(),
        ]
        .concat()
    }
    pub fn schedule_key(account: &str, key: &str) -> Vec<u8> {
        [b"k/".as_slice(), account.as_bytes(), b"\0", key.as_bytes()].concat()
    }
}

fn uuid_at(bytes: &[u8], at: usize) -> Uuid {
    let mut b = [0u8; 16];
    b.copy_from_slice(&bytes[at..at + 16]);
    Uuid::from_bytes(b)
}

/// The end of a prefix range (the prefix with its last byte incremented).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0xff; prefix.len() + 1]
}

/// A due entry: which event, when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Due {
    pub event: Uuid,
    pub due_ms: i64,
}

/// What one finished attempt changes, applied atomically.
pub struct AttemptUpdate<'a> {
    pub event: Uuid,
    pub endpoint: Uuid,
    /// The due entry the attempt was taken from.
    pub old_due_ms: Option<i64>,
    pub record: &'a DeliveryRecord,
    pub attempt: Option<&'a AttemptRecord>,
    pub endpoint_state: Option<&'a EndpointState>,
}

impl Store {
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
    ) -> Result<Store, StoreError> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(cache_bytes)
            .flush_every_ms(Some((fsync_every.as_millis() as u64).max(1)))
            .mode(sled::Mode::HighThroughput)
            .open()?;
        let tree = db.open_tree("switchyard")?;
        migrate(&db, &tree)?;
        let (tx, rx) = mpsc::channel::<Job>(8192);
        let (wdb, wtree) = (db.clone(), tree.clone());
        let write_error = std::sync::Arc::new(std::sync::Mutex::new(None));
        let werr = write_error.clone();
        let flush_latency = std::sync::Arc::new(crate::telemetry::Histogram::new(
            crate::telemetry::FLUSH_BUCKETS,
        ));
        let flushes = flush_latency.clone();
        thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer_loop(wdb, wtree, rx, werr, flushes))
            .map_err(|e| StoreError::Sled(sled::Error::Io(e)))?;
        Ok(Store {
            db,
            tree,
            writer: tx,
            write_error,
            flush_latency,
        })
    }

    /// The store's last write error, if its latest write failed (see
    /// the `write_error` field: with sled this lasts until a restart).
    /// The group flushes' latency histogram (for `/metrics`).
    pub fn flush_latency(&self) -> std::sync::Arc<crate::telemetry::Histogram> {
        self.flush_latency.clone()
    }

    pub fn write_error(&self) -> Option<String> {
        self.write_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Stores an event and its deliveries durably (one batch, flushed),
    /// or finds it already stored under the same idempotency key.
    pub async fn commit(&self, event: NewEvent) -> Result<Committed, String> {
        self.commit_scheduled(event, None).await
    }

    /// [`Store::commit`] with a schedule: the deliveries are due at
    /// `schedule.due_ms`, and a pending scheduled event of the same account
    /// under the same key is cancelled in the same batch (`replaced`).
    pub async fn commit_scheduled(
        &self,
        event: NewEvent,
        schedule: Option<Schedule>,
    ) -> Result<Committed, String> {
        let (tx, rx) = oneshot::channel();
        let record = enc(&event.record);
        self.writer
            .send(Job::Ingest(event, record, schedule, tx))
            .await
            .map_err(|_| "the store is shutting down".to_string())?;
        rx.await
            .map_err(|_| "the store writer stopped".to_string())?
    }

    /// Cancels a pending scheduled event of `account` (by key or id),
    /// durably; `None` when there is none (unknown, already due, or
    /// already cancelled).
    pub async fn cancel_scheduled(
        &self,
        account: &str,
        target: CancelTarget,
    ) -> Result<Option<Cancelled>, String> {
        let (tx, rx) = oneshot::channel();
        self.writer
            .send(Job::Cancel(account.to_string(), target, tx))
            .await
            .map_err(|_| "the store is shutting down".to_string())?;
        rx.await
            .map_err(|_| "the store writer stopped".to_string())?
    }

    /// The schedule of a scheduled event (`None` for ordinary events).
    pub fn schedule(
        &self,
        account: &str,
        event: Uuid,
    ) -> Result<Option<ScheduleRecord>, StoreError> {
        self.get(&keys::schedule(account, event))
    }

    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }

    /// Bytes on disk.
    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }

    fn get<T: DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, StoreError> {
        match self.tree.get(key)? {
            None => Ok(None),
            Some(v) => dec(key, &v).map(Some),
        }
    }

    /// An account's event (another account's id finds nothing).
    pub fn event(&self, account: &str, id: Uuid) -> Result<Option<EventRecord>, StoreError> {
        self.get(&keys::event(account, id))
    }

    pub fn delivery(&self, event: Uuid, ep: Uuid) -> Result<Option<DeliveryRecord>, StoreError> {
        self.get(&keys::delivery(event, ep))
    }

    /// Every delivery of an event: `(endpoint uid, record)`.
    pub fn deliveries_of(&self, event: Uuid) -> Result<Vec<(Uuid, DeliveryRecord)>, StoreError> {
        let prefix = keys::delivery_prefix(event);
        let mut out = Vec::new();
        for kv in self.tree.scan_prefix(&prefix) {
            let (k, v) = kv?;
            out.push((uuid_at(&k, 2 + 16), dec(&k, &v)?));
        }
        Ok(out)
    }

    pub fn attempts(&self, event: Uuid, ep: Uuid) -> Result<Vec<AttemptRecord>, StoreError> {
        let mut out = Vec::new();
        for kv in self.tree.scan_prefix(keys::attempt_prefix(event, ep)) {
            let (k, v) = kv?;
            out.push(dec(&k, &v)?);
        }
        Ok(out)
    }

    /// Up to `limit` entries of an endpoint's due index with `due_ms <= now`,
    /// oldest first, leaving out those `skip` says are taken.
    pub fn due(
        &self,
        ep: Uuid,
        now_ms: i64,
        limit: usize,
        skip: impl Fn(Uuid) -> bool,
    ) -> Result<Vec<Due>, StoreError> {
        let start = keys::due_prefix(ep);
        let end = keys::due(ep, now_ms.saturating_add(1), Uuid::nil());
        let mut out = Vec::new();
        for kv in self.tree.range(start..end) {
            let (k, _) = kv?;
            let due_ms = i64::from_be_bytes(k[18..26].try_into().expect("8 bytes"));
            let event = uuid_at(&k, 26);
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

    /// The earliest due time of an endpoint's index not taken by `skip`,
    /// looking at most `look` entries.
    pub fn next_due_ms(
        &self,
        ep: Uuid,
        look: usize,
        skip: impl Fn(Uuid) -> bool,
    ) -> Result<Option<i64>, StoreError> {
        for kv in self.tree.scan_prefix(keys::due_prefix(ep)).take(look) {
            let (k, _) = kv?;
            if !skip(uuid_at(&k, 26)) {
                return Ok(Some(i64::from_be_bytes(
                    k[18..26].try_into().expect("8 bytes"),
                )));
            }
        }
        Ok(None)
    }

    /// Number of entries in an endpoint's due index (all times).
    pub fn due_count(&self, ep: Uuid) -> usize {
        self.tree.scan_prefix(keys::due_prefix(ep)).keys().count()
    }

    /// Number of entries of an endpoint's due index due by `now_ms`: the
    /// backlog, without walking scheduled entries further ahead.
    pub fn due_count_until(&self, ep: Uuid, now_ms: i64) -> usize {
        let start = keys::due_prefix(ep);
        let end = keys::due(ep, now_ms.saturating_add(1), Uuid::nil());
        self.tree.range(start..end).keys().count()
    }

    /// Applies the result of an attempt atomically, grouped with the other
    /// attempts finishing at the same time (one sled batch for all). Not
    /// flushed: at worst a crash repeats the attempt (at-least-once).
    pub async fn record_attempt(&self, u: AttemptUpdate<'_>) -> Result<(), StoreError> {
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
        let (tx, rx) = oneshot::channel();
        self.writer
            .send(Job::Ops(ops, tx))
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await
            .map_err(|_| StoreError::Closed)?
            .map_err(StoreError::Write)
    }

    pub fn endpoint_state(&self, ep: Uuid) -> Result<EndpointState, StoreError> {
        Ok(self.get(&keys::endpoint_state(ep))?.unwrap_or_default())
    }

    pub fn put_endpoint_state(&self, ep: Uuid, s: &EndpointState) -> Result<(), StoreError> {
        self.tree.insert(keys::endpoint_state(ep), enc(s))?;
        Ok(())
    }

    /// Newest-first page of an account's event ids, strictly older than
    /// `before` when given.
    pub fn list_events(
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
            let (k, _) = kv?;
            out.push(uuid_at(&k, prefix.len()));
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// Raw access for modules that keep their own records (API endpoints).
    pub fn put_raw(&self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.tree.insert(key, value)?;
        self.db.flush()?;
        Ok(())
    }

    pub fn remove_raw(&self, key: &[u8]) -> Result<(), StoreError> {
        self.tree.remove(key)?;
        self.db.flush()?;
        Ok(())
    }

    pub fn scan_raw(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StoreError> {
        let mut out = Vec::new();
        for kv in self.tree.scan_prefix(prefix) {
            let (k, v) = kv?;
            out.push((k.to_vec(), v.to_vec()));
        }
        Ok(out)
    }

    /// Drops a due entry whose delivery is gone or already final.
    pub fn remove_due(&self, ep: Uuid, due: Due) -> Result<(), StoreError> {
        self.tree.remove(keys::due(ep, due.due_ms, due.event))?;
        Ok(())
    }

    /// Marks every pending delivery of an endpoint disabled and empties its
    /// due index (except entries `skip` says are in flight). Returns how many.
    pub fn disable_pending(
        &self,
        ep: Uuid,
        reason: &str,
        skip: impl Fn(Uuid) -> bool,
    ) -> Result<usize, StoreError> {
        let mut n = 0;
        let now = now_ms();
        for kv in self.tree.scan_prefix(keys::due_prefix(ep)) {
            let (k, _) = kv?;
            let event = uuid_at(&k, 26);
            if skip(event) {
                continue;
            }
            let mut batch = sled::Batch::default();
            batch.remove(k.to_vec());
            if let Some(mut rec) = self.delivery(event, ep)? {
                rec.status = DeliveryStatus::Disabled;
                rec.reason = Some(reason.to_string());
                rec.due_ms = None;
                rec.output = None;
                rec.updated_ms = now;
                batch.insert(keys::delivery(event, ep), enc(&rec));
            }
            self.tree.apply_batch(batch)?;
            n += 1;
        }
        Ok(n)
    }

    /// Deletes up to `max` events of `account` stored before `cutoff_ms`
    /// whose deliveries are all final, with their deliveries and attempts,
    /// and idempotency keys past their window. Returns events deleted.
    pub fn prune(&self, account: &str, cutoff_ms: i64, max: usize) -> Result<usize, StoreError> {
        let prefix = keys::event_prefix(account);
        let mut deleted = 0;
        for kv in self.tree.scan_prefix(&prefix) {
            let (k, _) = kv?;
            let event = uuid_at(&k, prefix.len());
            let stored_ms = stored_ms(event).unwrap_or(i64::MAX);
            if stored_ms >= cutoff_ms || deleted >= max {
                break;
            }
            let deliveries = self.deliveries_of(event)?;
            if deliveries.iter().any(|(_, d)| !d.status.is_final()) {
                continue;
            }
            let mut batch = sled::Batch::default();
            for (ep, _) in &deliveries {
                for a in self
                    .tree
                    .scan_prefix(keys::attempt_prefix(event, *ep))
                    .keys()
                {
                    batch.remove(a?);
                }
                batch.remove(keys::delivery(event, *ep));
            }
            batch.remove(keys::schedule(account, event));
            batch.remove(k);
            self.tree.apply_batch(batch)?;
            deleted += 1;
        }
        let now = now_ms();
        let mut batch = sled::Batch::default();
        for kv in self.tree.scan_prefix(keys::idem(account, "")).take(max) {
            let (k, v) = kv?;
            if let Ok(r) = postcard::from_bytes::<IdemRecord>(&v) {
                if now - r.at_ms >= IDEMPOTENCY_WINDOW_MS {
                    batch.remove(k);
                }
            }
        }
        self.tree.apply_batch(batch)?;
        Ok(deleted)
    }

    /// Puts a delivery back in its endpoint's due index now (retry, recover).
    pub fn requeue(
        &self,
        event: Uuid,
        ep: Uuid,
        mut record: DeliveryRecord,
        now: i64,
    ) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        if let Some(old) = record.due_ms {
            batch.remove(keys::due(ep, old, event));
        }
        record.due_ms = Some(now);
        record.status = if record.attempts == 0 {
            DeliveryStatus::Delivering
        } else {
            DeliveryStatus::Failing
        };
        record.updated_ms = now;
        batch.insert(keys::due(ep, now, event), &[] as &[u8]);
        batch.insert(keys::delivery(event, ep), enc(&record));
        self.tree.apply_batch(batch)?;
        Ok(())
    }
}

/// Brings a store written by an older Switchyard to [`FORMAT`], in
/// batches (each atomic: an event is under its old key or its new one),
/// so an interrupted migration resumes where it stopped.
fn migrate(db: &sled::Db, tree: &sled::Tree) -> Result<(), StoreError> {
    let version = match tree.get(FORMAT_KEY)? {
        Some(v) if v.len() == 4 => u32::from_be_bytes([v[0], v[1], v[2], v[3]]),
        Some(_) => return Err(StoreError::Write("unreadable store format marker".into())),
        None => 1,
    };
    if version > FORMAT {
        return Err(StoreError::Write(format!(
            "the store was written by a newer Switchyard (format {version}, this one reads up to {FORMAT}): \
             run that version, or point data_dir at a new folder"
        )));
    }
    if version == 1 {
        /// Format 1's event record: the same fields, the payload raw.
        #[derive(Deserialize)]
        struct V1 {
            account: String,
            event_type: String,
            created_ms: i64,
            source_id: Option<String>,
            payload: Vec<u8>,
            endpoints: Vec<String>,
        }
        let mut moved = 0usize;
        loop {
            let mut batch = sled::Batch::default();
            let mut n = 0;
            for kv in tree.scan_prefix(b"a/").keys().take(1000) {
                let k = kv?;
                n += 1;
                batch.remove(k.clone());
                let Some(nul) = k.iter().position(|&b| b == 0) else {
                    continue;
                };
                if k.len() != nul + 17 {
                    continue;
                }
                let id = uuid_at(&k, nul + 1);
                let old = [b"e/".as_slice(), id.as_bytes()].concat();
                if let Some(v) = tree.get(&old)? {
                    let r: V1 = dec(&old, &v)?;
                    let record = EventRecord {
                        account: r.account,
                        event_type: r.event_type,
                        created_ms: r.created_ms,
                        source_id: r.source_id,
                        payload: r.payload,
                        endpoints: r.endpoints,
                    };
                    batch.insert(keys::event(&record.account, id), enc(&record));
                    batch.remove(old);
                    moved += 1;
                }
            }
            if n == 0 {
                break;
            }
            tree.apply_batch(batch)?;
        }
        if moved > 0 {
            tracing::info!(events = moved, "store migrated from format 1 to {FORMAT}");
        }
    }
    if version != FORMAT {
        tree.insert(FORMAT_KEY, &FORMAT.to_be_bytes())?;
        db.flush()?;
    }
    Ok(())
}

/// The writer thread: every write of the store goes through it, in
/// groups — one sled batch for every job waiting, and one flush when the
/// group holds an ingest (attempt results need none). One writer means no
/// write contention inside sled, and a flush that serves every request
/// waiting on it.
fn writer_loop(
    db: sled::Db,
    tree: sled::Tree,
    mut rx: mpsc::Receiver<Job>,
    write_error: std::sync::Arc<std::sync::Mutex<Option<String>>>,
    flush_latency: std::sync::Arc<crate::telemetry::Histogram>,
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
                Job::Ops(ops, _) => {
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
                (Job::Ops(_, reply), _) => {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn new_event(account: &str, key: Option<&str>, eps: &[(Uuid, &str)]) -> NewEvent {
        NewEvent {
            id: Uuid::now_v7(),
            record: EventRecord {
                account: account.into(),
                event_type: "license.created".into(),
                created_ms: now_ms(),
                source_id: None,
                payload: b"{}".to_vec(),
                endpoints: eps.iter().map(|(_, n)| n.to_string()).collect(),
            },
            idempotency_key: key.map(Into::into),
            deliveries: eps.iter().map(|(u, n)| (*u, n.to_string())).collect(),
        }
    }

    #[tokio::test]
    async fn commit_dedupe_and_due_index() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20, std::time::Duration::from_millis(50)).unwrap();
        let ep = Uuid::new_v4();
        let a = store
            .commit(new_event("acct", Some("k1"), &[(ep, "crm")]))
            .await
            .unwrap();
        assert!(!a.duplicate);
        let b = store
            .commit(new_event("acct", Some("k1"), &[(ep, "crm")]))
            .await
            .unwrap();
        assert!(b.duplicate);
        assert_eq!(a.id, b.id);
        // same key, other account: not a duplicate
        let c = store
            .commit(new_event("other", Some("k1"), &[(ep, "crm")]))
            .await
            .unwrap();
        assert!(!c.duplicate);
        let due = store.due(ep, now_ms(), 10, |_| false).unwrap();
        assert_eq!(due.len(), 2);
        let due = store.due(ep, now_ms(), 10, |e| e == a.id).unwrap();
        assert_eq!(due.len(), 1);
        assert_eq!(store.list_events("acct", None, 10).unwrap(), vec![a.id]);
        assert_eq!(store.deliveries_of(a.id).unwrap().len(), 1);
    }

    fn sched(due_ms: i64, key: &str) -> Option<Schedule> {
        Some(Schedule {
            due_ms,
            key: Some(key.into()),
        })
    }

    #[tokio::test]
    async fn scheduled_events_wait_in_the_due_index_and_move_by_key() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20, std::time::Duration::from_millis(50)).unwrap();
        let ep = Uuid::new_v4();
        let now = now_ms();
        let first = store
            .commit_scheduled(
                new_event("acct", None, &[(ep, "crm")]),
                sched(now + 10_000, "lic:1"),
            )
            .await
            .unwrap();
        assert!(first.replaced.is_none());
        assert!(store.due(ep, now_ms(), 10, |_| false).unwrap().is_empty());
        assert_eq!(store.due(ep, now + 10_000, 10, |_| false).unwrap().len(), 1);
        assert_eq!(
            (store.due_count(ep), store.due_count_until(ep, now_ms())),
            (1, 0)
        );
        let s = store.schedule("acct", first.id).unwrap().unwrap();
        assert_eq!((s.due_ms, s.status(now)), (now + 10_000, Some("scheduled")));
        // Same key, same account: the first is cancelled in the same batch.
        let second = store
            .commit_scheduled(
                new_event("acct", None, &[(ep, "crm")]),
                sched(now + 20_000, "lic:1"),
            )
            .await
            .unwrap();
        let replaced = second.replaced.unwrap();
        assert_eq!((replaced.event, replaced.deliveries), (first.id, 1));
        let due = store.due(ep, now + 60_000, 10, |_| false).unwrap();
        assert_eq!(
            due,
            vec![Due {
                event: second.id,
                due_ms: now + 20_000
            }]
        );
        let d = store.delivery(first.id, ep).unwrap().unwrap();
        assert_eq!((d.status, d.due_ms), (DeliveryStatus::Cancelled, None));
        let s = store.schedule("acct", first.id).unwrap().unwrap();
        assert_eq!(s.status(now), Some("cancelled"));
        assert_eq!(s.replaced_by, Some(*second.id.as_bytes()));
        // The same key in another account is another key.
        let other = store
            .commit_scheduled(
                new_event("other", None, &[(ep, "crm")]),
                sched(now + 30_000, "lic:1"),
            )
            .await
            .unwrap();
        assert!(other.replaced.is_none());
        // Cancel by key: once.
        let c = store
            .cancel_scheduled("acct", CancelTarget::Key("lic:1".into()))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(c.event, second.id);
        assert!(
            store
                .cancel_scheduled("acct", CancelTarget::Key("lic:1".into()))
                .await
                .unwrap()
                .is_none()
        );
        let due = store.due(ep, now + 60_000, 10, |_| false).unwrap();
        assert_eq!(
            due,
            vec![Due {
                event: other.id,
                due_ms: now + 30_000
            }]
        );
        // Cancel by id; another account's id finds nothing.
        assert!(
            store
                .cancel_scheduled("acct", CancelTarget::Event(other.id))
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            store
                .cancel_scheduled("other", CancelTarget::Event(other.id))
                .await
                .unwrap()
                .is_some()
        );
        // Due (within the margin): no longer cancellable, nor replaced.
        let soon = store
            .commit_scheduled(
                new_event("acct", None, &[(ep, "crm")]),
                sched(now_ms() + 100, "lic:2"),
            )
            .await
            .unwrap();
        assert!(
            store
                .cancel_scheduled("acct", CancelTarget::Event(soon.id))
                .await
                .unwrap()
                .is_none()
        );
        let after = store
            .commit_scheduled(
                new_event("acct", None, &[(ep, "crm")]),
                sched(now_ms() + 5000, "lic:2"),
            )
            .await
            .unwrap();
        assert!(after.replaced.is_none());
    }

    #[tokio::test]
    async fn replacements_within_one_group_leave_one_pending() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20, std::time::Duration::from_millis(50)).unwrap();
        let ep = Uuid::new_v4();
        let now = now_ms();
        let commits = (0..20).map(|i| {
            let s = store.clone();
            async move {
                s.commit_scheduled(
                    new_event("acct", None, &[(ep, "crm")]),
                    sched(now + 10_000 + i, "k"),
                )
                .await
                .unwrap()
            }
        });
        let all = futures_join(commits).await;
        let replaced = all.iter().filter(|c| c.replaced.is_some()).count();
        assert_eq!(replaced, 19);
        let due = store.due(ep, now + 60_000, 100, |_| false).unwrap();
        assert_eq!(due.len(), 1, "{due:?}");
    }

    async fn futures_join<F: std::future::Future>(fs: impl Iterator<Item = F>) -> Vec<F::Output>
    where
        F: Send + 'static,
        F::Output: Send + 'static,
    {
        let handles: Vec<_> = fs.map(tokio::spawn).collect();
        let mut out = Vec::new();
        for h in handles {
            out.push(h.await.unwrap());
        }
        out
    }

    #[tokio::test]
    async fn concurrent_commits_are_grouped_and_all_durable() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20, std::time::Duration::from_millis(50)).unwrap();
        let ep = Uuid::new_v4();
        let mut tasks = Vec::new();
        for _ in 0..200 {
            let s = store.clone();
            tasks.push(tokio::spawn(async move {
                s.commit(new_event("acct", None, &[(ep, "x")])).await
            }));
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        drop(store);
        // The writer thread releases the database (and its file lock) once
        // it sees the channel closed.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let store = loop {
            match Store::open(dir.path(), 1 << 20, std::time::Duration::from_millis(50)) {
                Ok(s) => break s,
                Err(e) if std::time::Instant::now() < deadline => {
                    let _ = e;
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(e) => panic!("reopen: {e}"),
            }
        };
        assert_eq!(store.due_count(ep), 200);
        let page = store.list_events("acct", None, 150).unwrap();
        assert_eq!(page.len(), 150);
        let rest = store
            .list_events("acct", Some(*page.last().unwrap()), 150)
            .unwrap();
        assert_eq!(rest.len(), 50);
    }
    #[tokio::test]
    async fn events_are_found_only_through_their_account_and_payloads_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20, std::time::Duration::from_millis(50)).unwrap();
        let doc = std::fs::read("benches/load/event.json").unwrap();
        let mut ev = new_event("acct", None, &[]);
        ev.record.payload = doc.clone();
        let id = store.commit(ev).await.unwrap().id;
        let stored = store.event("acct", id).unwrap().unwrap();
        assert_eq!(stored.payload, doc);
        assert!(store.event("other", id).unwrap().is_none());
        // On disk the document is compressed, and every form reads back.
        let raw = store.tree.get(keys::event("acct", id)).unwrap().unwrap();
        assert!(
            raw.len() < doc.len() * 3 / 4,
            "{} of {}",
            raw.len(),
            doc.len()
        );
        for payload in [Vec::new(), b"{}".to_vec(), doc.clone(), vec![b'x'; 3 << 20]] {
            assert_eq!(packed::unpack(&packed::pack(&payload)).unwrap(), payload);
        }
        assert!(packed::unpack(&[1, 0xff, 0xff, 0xff, 0x7f, 0]).is_err());
        assert!(packed::unpack(&[9]).is_err());
    }

    #[tokio::test]
    async fn a_format_1_store_is_migrated_when_opened() {
        #[derive(Serialize)]
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
        let store = Store::open(dir.path(), 1 << 20, std::time::Duration::from_millis(50)).unwrap();
        for (n, id) in ids.iter().enumerate() {
            let account = if n % 2 == 0 { "acct" } else { "other" };
            let ev = store.event(account, *id).unwrap().unwrap();
            assert_eq!(ev.payload, br#"{"data":{"type":"licenses"}}"#);
            assert_eq!(ev.endpoints, vec!["crm".to_string()]);
        }
        assert_eq!(store.list_events("acct", None, 5000).unwrap().len(), 1250);
        assert_eq!(store.tree.scan_prefix(b"a/").count(), 0);
        assert_eq!(
            store.tree.get(FORMAT_KEY).unwrap().unwrap().as_ref(),
            FORMAT.to_be_bytes()
        );
    }
}
