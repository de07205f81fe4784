//! The records every backend stores, and the time rules they share. Plain
//! data: how a backend lays them out (keys, compression, tables) is its own
//! business (`store/sled/`).

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::policy::retry::RetrySchedule;
use crate::signing::SecretSet;

/// How long an idempotency key dedupes.
pub const IDEMPOTENCY_WINDOW_MS: i64 = 24 * 3600 * 1000;

/// One ingested event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRecord {
    pub account: String,
    pub event_type: String,
    pub created_ms: i64,
    /// The producer's own id (`id` / Keygen `idempotencyToken`), if any.
    pub source_id: Option<String>,
    /// The resource document, JSON bytes as received.
    pub payload: Vec<u8>,
    /// Ids of the endpoints it was fanned out to.
    pub endpoints: Vec<String>,
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

/// A delivery's `reason` when its plugins changed the body (rewrote the
/// payload or replaced the request): its `output` is then kept after
/// delivery too, so the API and dashboard can show the produced body.
pub const TRANSFORMED: &str = "transformed by the endpoint's plugins";

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
    /// Skip reason, disable reason, or [`TRANSFORMED`].
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
    /// The batch the attempt sent the delivery in (batched endpoints).
    /// Added after format 2: sled decodes older records without it.
    #[serde(default)]
    pub batch: Option<BatchRef>,
}

/// Which batch request an attempt was part of, and how many deliveries
/// that request carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchRef {
    /// The batch's id (a UUIDv7; the `webhook-id` of the request).
    pub id: [u8; 16],
    pub size: u32,
}

/// A batch request about to be sent, as recorded before it goes out: which
/// deliveries (`events` of endpoint `ep`) it carries. Forgotten once every
/// one of them has recorded its attempt; one still recorded after a crash
/// is how the attempt logs learn the request may have reached the receiver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchJournal {
    pub id: Uuid,
    pub ep: Uuid,
    pub at_ms: i64,
    pub events: Vec<Uuid>,
}

impl BatchJournal {
    pub fn batch_ref(&self) -> BatchRef {
        BatchRef {
            id: *self.id.as_bytes(),
            size: self.events.len() as u32,
        }
    }

    /// The error of the attempt a recovered batch leaves in each member's log.
    pub fn interrupted_error(&self) -> String {
        format!(
            "the router stopped while batch {} ({} deliveries) was in flight: the receiver may have received it; sent again with the same dedupe keys",
            self.id,
            self.events.len()
        )
    }
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

/// A scheduled event: when its deliveries are due, under which key, and
/// whether it was cancelled. Stored in the same atomic write as the
/// event.
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

/// An endpoint created through the API, as persisted (config endpoints
/// live in `router.toml` and are never stored).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredEndpoint {
    pub id: String,
    pub account: String,
    pub url: String,
    pub subscriptions: Vec<String>,
    pub secrets: SecretSet,
    pub standard_signature: bool,
    pub keygen_signature: bool,
    pub plugins: Vec<(String, serde_json::Value)>,
    pub retry_schedule: RetrySchedule,
    pub timeout_ms: u64,
    pub max_in_flight: usize,
    pub enabled: bool,
    pub created_ms: i64,
    pub updated_ms: i64,
    /// `batch`; absent in records written before batching existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<StoredBatch>,
    /// `rate_limit` in requests per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<f64>,
}

/// An API endpoint's `batch` as persisted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredBatch {
    pub max_events: usize,
    pub max_bytes: u64,
    pub max_wait_ms: u64,
}

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

/// What a node's heartbeat reads from a shared store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClusterView {
    /// Bumped whenever an endpoint is created, changed or deleted through
    /// the API, or disabled or re-enabled: a change means "reload".
    pub version: i64,
    /// Nodes alive (this one included).
    pub nodes: usize,
}

impl Default for ClusterView {
    fn default() -> Self {
        ClusterView {
            version: 0,
            nodes: 1,
        }
    }
}
