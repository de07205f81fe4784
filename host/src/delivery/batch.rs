//! Batching: the stage between the plugin chain and the sender for an
//! endpoint with `batch = { max_events, max_bytes, max_wait }`.
//!
//! Each delivery's attempt runs as before up to its body (the plugin chain
//! once per event, or the body stored by an earlier attempt), then joins
//! the endpoint's open batch instead of sending, giving back its
//! `max_in_flight` permit (which then bounds batch *requests*). The batch
//! closes when it holds `max_events` items or `max_bytes` of bodies, or
//! when its oldest item has waited `max_wait`; the last plugin of the chain
//! merges the bodies into one request when it exports `batch` (WIT 0.2.0),
//! else the request is a JSON array of the bodies. Every delivery then
//! records the batch's answer as its own attempt (with the batch's id and
//! size), through the same code as an unbatched attempt: retries follow
//! each delivery's schedule, and deliveries that failed together come due
//! together and are batched again.
//!
//! Crash safety: a delivery waiting in an open batch, or in a batch in
//! flight, keeps its due entry until its attempt is recorded, so after a
//! crash it is due again and is sent in a new batch (at-least-once; the
//! dedupe keys the plugin wrote, e.g. `messageId`, `insert_id`, are the
//! same in every body it produces for that event).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::oneshot;
use uuid::Uuid;

use super::Dispatcher;
use super::sender::{Response, SendError};
use crate::config::BatchSpec;
use crate::registry::LiveEndpoint;
use crate::store::{BatchJournal, BatchRef, Store, StoredOutput, now_ms};

/// One delivery's body waiting in a batch.
pub(super) struct Item {
    pub(super) event: Uuid,
    pub(super) body: Bytes,
    pub(super) headers: Vec<(String, String)>,
    pub(super) reply: oneshot::Sender<Answer>,
    /// The store's record of the last batch request this item went out in.
    pub(super) journal: Option<Arc<InFlight>>,
}

/// What an item is told, and the record of its batch in flight, which the
/// delivery holds until its attempt is recorded.
pub(super) type Answer = (Reply, Option<Arc<InFlight>>);

impl Item {
    fn answer(self, reply: Reply) {
        let _ = self.reply.send((reply, self.journal));
    }
}

/// A batch request recorded in the store as in flight
/// ([`crate::store::Backend::open_batch`]). The record is forgotten when
/// the last delivery it carried has recorded its attempt (the last clone
/// is dropped); one left after a crash is noted in its deliveries' attempt
/// logs at the next start ([`crate::store::Backend::recover_batches`]).
pub(super) struct InFlight {
    id: Uuid,
    store: Store,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let (store, id) = (self.store.clone(), self.id);
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if let Err(e) = store.close_batch(id).await {
                    tracing::debug!(batch = %id, error = %e, "forgetting a batch in flight failed; recovery clears it later (every delivery in it has its attempt, so nothing is noted)");
                }
            });
        }
    }
}

/// What became of one item's batch.
pub(super) enum Reply {
    /// The batch request went out (or could not connect).
    Sent {
        result: Result<Response, SendError>,
        latency: Duration,
        at_ms: i64,
        batch: BatchRef,
    },
    /// The item was not sent: refused by the merge (`permanent`), or the
    /// merge or the request's headers failed (retried).
    NotSent {
        error: String,
        permanent: bool,
        batch: Option<BatchRef>,
    },
}

/// An endpoint's open batch.
#[derive(Default)]
pub(super) struct Batcher {
    open: Mutex<Option<Open>>,
    seq: AtomicU64,
}

struct Open {
    seq: u64,
    items: Vec<Item>,
    bytes: u64,
    limits: Limits,
}

/// The batch limits in force: the endpoint's, capped by the merging
/// plugin's provider limits.
#[derive(Debug, Clone, Copy)]
struct Limits {
    max_events: usize,
    max_bytes: u64,
    max_item_bytes: u64,
    max_wait: Duration,
    /// Whether the last plugin of the chain merges.
    merges: bool,
}

impl Batcher {
    fn take_if(&self, seq: u64) -> Option<Open> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if open.as_ref().is_some_and(|o| o.seq == seq) {
            open.take()
        } else {
            None
        }
    }
}

impl Dispatcher {
    /// The limits of `live`'s batches (one plugin call when it has plugins).
    async fn batch_limits(&self, live: &Arc<LiveEndpoint>, spec: BatchSpec) -> Limits {
        let mut limits = Limits {
            max_events: spec.max_events,
            max_bytes: spec.max_bytes,
            max_item_bytes: spec.max_bytes,
            max_wait: spec.max_wait,
            merges: false,
        };
        let Some(binding) = live.chain.last().cloned() else {
            return limits;
        };
        let plugin = tokio::task::spawn_blocking(move || binding.batch_limits()).await;
        match plugin {
            Ok(Ok(Some(p))) => {
                limits.merges = true;
                limits.max_events = limits.max_events.min(p.max_events.max(1) as usize);
                limits.max_bytes = limits.max_bytes.min(p.max_bytes.max(1));
                limits.max_item_bytes = p.max_item_bytes.min(limits.max_bytes);
            }
            Ok(Ok(None)) => {}
            Ok(Err(e)) => {
                tracing::warn!(plugin = %e.plugin, error = %e.message, "asking the plugin for its batch limits failed; batching as a JSON array")
            }
            Err(e) => tracing::warn!(error = %e, "batch limits task failed"),
        }
        limits
    }

    /// Adds one delivery's body to `live`'s open batch and waits for what
    /// became of it.
    pub(super) async fn join_batch(
        &self,
        batcher: &Arc<Batcher>,
        live: &Arc<LiveEndpoint>,
        spec: BatchSpec,
        item: Item,
        reply: oneshot::Receiver<Answer>,
    ) -> Answer {
        let needs_limits = batcher
            .open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_none();
        let fresh_limits = if needs_limits {
            Some(self.batch_limits(live, spec).await)
        } else {
            None
        };
        let mut closed = Vec::new();
        let mut timer = None;
        {
            let mut open = batcher.open.lock().unwrap_or_else(|p| p.into_inner());
            let len = item.body.len() as u64;
            if open
                .as_ref()
                .is_some_and(|o| o.bytes + len > o.limits.max_bytes)
            {
                closed.extend(open.take());
            }
            if open.is_none() {
                let limits = match fresh_limits {
                    Some(l) => l,
                    // Another item opened and closed a batch meanwhile:
                    // the limits just read by it are not at hand; use
                    // the endpoint's own (capped at the next opening).
                    None => Limits {
                        max_events: spec.max_events,
                        max_bytes: spec.max_bytes,
                        max_item_bytes: spec.max_bytes,
                        max_wait: spec.max_wait,
                        merges: live.chain.last().is_some(),
                    },
                };
                let seq = batcher.seq.fetch_add(1, Ordering::Relaxed);
                *open = Some(Open {
                    seq,
                    items: Vec::new(),
                    bytes: 0,
                    limits,
                });
                timer = Some((seq, limits.max_wait));
            }
            let o = open.as_mut().expect("opened above");
            if len > o.limits.max_item_bytes {
                item.answer(Reply::NotSent {
                    error: format!(
                        "the body is {len} bytes, over the largest item a batch of this endpoint takes ({} bytes)",
                        o.limits.max_item_bytes
                    ),
                    permanent: true,
                    batch: None,
                });
            } else {
                o.bytes += len;
                o.items.push(item);
                if o.items.len() >= o.limits.max_events || o.bytes >= o.limits.max_bytes {
                    closed.extend(open.take());
                }
            }
        }
        if let Some((seq, wait)) = timer {
            let this = self.clone();
            let batcher = batcher.clone();
            let live = live.clone();
            tokio::spawn(async move {
                tokio::time::sleep(wait).await;
                if let Some(o) = batcher.take_if(seq) {
                    this.send_batch(&live, o).await;
                }
            });
        }
        for o in closed {
            let this = self.clone();
            let live = live.clone();
            tokio::spawn(async move { this.send_batch(&live, o).await });
        }
        reply.await.unwrap_or((
            Reply::NotSent {
                error: "the batch was dropped before it was sent".into(),
                permanent: false,
                batch: None,
            },
            None,
        ))
    }

    /// Sends part of a batch again as its own batch (413 halves, the
    /// events a 400 did not name). Boxed: `send_batch` calls it.
    fn resend(
        self,
        live: Arc<LiveEndpoint>,
        items: Vec<Item>,
        limits: Limits,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
        Box::pin(async move {
            let open = Open {
                seq: 0,
                items,
                bytes: 0,
                limits,
            };
            self.send_batch(&live, open).await
        })
    }

    /// Merges a closed batch into one request, sends it, and answers every
    /// item.
    async fn send_batch(&self, live: &Arc<LiveEndpoint>, open: Open) {
        let Open { items, limits, .. } = open;
        if items.is_empty() {
            return;
        }
        let id = Uuid::now_v7();
        let size = items.len() as u32;
        let batch = BatchRef {
            id: *id.as_bytes(),
            size,
        };
        let not_sent = |error: String, permanent: bool| Reply::NotSent {
            error,
            permanent,
            batch: Some(batch),
        };
        let bodies: Vec<Vec<u8>> = items.iter().map(|i| i.body.to_vec()).collect();
        let merged = match live.chain.last().filter(|_| limits.merges).cloned() {
            Some(binding) => {
                match tokio::task::spawn_blocking(move || binding.merge(&bodies)).await {
                    Ok(Ok(m)) => Ok((
                        m.body,
                        m.content_type,
                        m.headers,
                        m.refused
                            .into_iter()
                            .map(|(i, r)| {
                                (i as usize, format!("refused by the plugin's merge: {r}"))
                            })
                            .collect::<Vec<_>>(),
                    )),
                    Ok(Err(e)) => Err((
                        format!("merging the batch failed: {e}"),
                        e.kind == crate::plugins::PluginErrorKind::Rejected,
                    )),
                    Err(e) => Err((format!("merging the batch failed: {e}"), false)),
                }
            }
            None => Ok(json_array(&bodies, &items)),
        };
        let (body, content_type, headers, refused) = match merged {
            Ok(m) => m,
            Err((error, permanent)) => {
                for item in items {
                    item.answer(not_sent(error.clone(), permanent));
                }
                return;
            }
        };
        let mut sent: Vec<Item> = Vec::with_capacity(items.len());
        for (i, item) in items.into_iter().enumerate() {
            match refused.iter().find(|(r, _)| *r == i) {
                Some((_, reason)) => {
                    item.answer(not_sent(reason.clone(), true));
                }
                None => sent.push(item),
            }
        }
        if sent.is_empty() {
            return;
        }
        let output = StoredOutput {
            body,
            content_type,
            headers,
        };
        let request = match self.headers(live, id, &output, now_ms()) {
            Ok(h) => h,
            Err(msg) => {
                for item in sent {
                    item.answer(not_sent(msg.clone(), false));
                }
                return;
            }
        };
        // The endpoint's in-flight bound applies to batch requests.
        let permit = match live_permit(self, live).await {
            Some((p, ep)) => {
                // The limit in force now (a reload may have changed it).
                self.pace(&ep, &ep.live()).await;
                p
            }
            None => {
                for item in sent {
                    item.answer(not_sent("the endpoint stopped".into(), false));
                }
                return;
            }
        };
        // Membership is recorded before the request goes out (a crash
        // after this point is noted in every member's attempt log).
        let journal = BatchJournal {
            id,
            ep: live.uid,
            at_ms: now_ms(),
            events: sent.iter().map(|i| i.event).collect(),
        };
        if let Err(e) = self.inner.store.open_batch(&journal).await {
            drop(permit);
            for item in sent {
                item.answer(not_sent(
                    format!("recording the batch before sending it failed: {e}"),
                    false,
                ));
            }
            return;
        }
        let in_flight = Arc::new(InFlight {
            id,
            store: self.inner.store.clone(),
        });
        for item in &mut sent {
            // Replaces the record of an earlier request (a 413's parent),
            // now that this one is recorded.
            item.journal = Some(in_flight.clone());
        }
        drop(in_flight);
        let (result, latency) = self
            .inner
            .sender
            .post(
                &live.uri,
                request,
                Bytes::from(output.body),
                live.spec.timeout,
            )
            .await;
        drop(permit);
        self.inner.metrics.attempt_latency.observe(latency);
        self.inner
            .metrics
            .batch_sent(&live.spec.account, &live.spec.id, sent.len());
        let at_ms = now_ms();
        tracing::debug!(batch = %id, size, sent = sent.len(), status = ?result.as_ref().ok().map(|r| r.status), "batch sent");
        let status = result.as_ref().ok().map(|r| r.status);
        // 413: the request was too large for the receiver. Split the batch
        // and send the halves (each may split again); the deliveries
        // record the attempt of the request they end up in.
        if status == Some(413) && sent.len() > 1 {
            tracing::info!(batch = %id, size = sent.len(), "receiver answered 413; splitting the batch in two");
            let second = sent.split_off(sent.len() / 2);
            for half in [sent, second] {
                tokio::spawn(self.clone().resend(live.clone(), half, limits));
            }
            return;
        }
        // 400 naming the events it could not take (Amplitude HTTP V2:
        // `events_with_invalid_fields` / `events_with_missing_fields`, maps
        // of field → indices into `events`): those deliveries fail for good
        // with the reason, the others are sent again at once as a batch.
        if status == Some(400) && limits.merges {
            let excerpt = result
                .as_ref()
                .map(|r| r.excerpt.clone())
                .unwrap_or_default();
            if let Some(bad) = invalid_events(&excerpt, sent.len()) {
                let mut rest = Vec::new();
                for (i, item) in sent.into_iter().enumerate() {
                    match bad.iter().find(|(b, _)| *b == i) {
                        Some((_, reason)) => {
                            item.answer(Reply::NotSent {
                                error: format!(
                                    "the receiver refused this event (HTTP 400): {reason}"
                                ),
                                permanent: true,
                                batch: Some(batch),
                            });
                        }
                        None => rest.push(item),
                    }
                }
                tracing::info!(batch = %id, refused = bad.len(), resent = rest.len(), "receiver refused some events of the batch (HTTP 400); sending the others again");
                if !rest.is_empty() {
                    tokio::spawn(self.clone().resend(live.clone(), rest, limits));
                }
                return;
            }
        }
        // 429 naming throttled users or devices (Amplitude HTTP V2:
        // `throttled_events`, indices into `events`): as Amplitude's own SDK
        // does, the throttled events wait 30 s (unless the answer has a
        // `Retry-After`) and the others are sent again at once.
        if let (Some(429), true, Ok(resp)) = (status, limits.merges, &result) {
            if let Some(throttle) = throttled(&resp.excerpt, sent.len()) {
                let mut paused = resp.clone();
                if paused.retry_after.is_none() {
                    paused.retry_after = Some(THROTTLE_PAUSE.as_secs().to_string());
                }
                let mut rest = Vec::new();
                let mut waiting = 0;
                for (i, item) in sent.into_iter().enumerate() {
                    let hit = match &throttle {
                        Throttle::All => true,
                        Throttle::Events(list) => list.contains(&i),
                    };
                    if hit {
                        waiting += 1;
                        item.answer(Reply::Sent {
                            result: Ok(paused.clone()),
                            latency,
                            at_ms,
                            batch,
                        });
                    } else {
                        rest.push(item);
                    }
                }
                tracing::info!(batch = %id, throttled = waiting, resent = rest.len(), "receiver throttled users or devices (HTTP 429); those events wait, the others are sent again");
                if !rest.is_empty() {
                    tokio::spawn(self.clone().resend(live.clone(), rest, limits));
                }
                return;
            }
        }
        for item in sent {
            item.answer(Reply::Sent {
                result: result.clone(),
                latency,
                at_ms,
                batch,
            });
        }
    }
}

/// How long events of a throttled user or device wait (Amplitude's advice).
const THROTTLE_PAUSE: Duration = Duration::from_secs(30);

/// Which events of a batch a 429 says are throttled.
#[derive(Debug, PartialEq)]
enum Throttle {
    /// These indices (Amplitude's `throttled_events`).
    Events(Vec<usize>),
    /// The answer names throttled users or devices but not which events
    /// (or was cut to its excerpt): the whole batch waits.
    All,
}

/// Amplitude's 429 answer: `throttled_events` (indices), or at least
/// `throttled_users` / `throttled_devices`; `None` for any other 429.
fn throttled(body: &[u8], len: usize) -> Option<Throttle> {
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(v) => {
            if let Some(list) = v.get("throttled_events").and_then(|e| e.as_array()) {
                let idx: Vec<usize> = list
                    .iter()
                    .filter_map(|i| i.as_u64().map(|i| i as usize))
                    .filter(|i| *i < len)
                    .collect();
                // An empty list names nothing: the whole batch waits (never
                // a tight loop of resends).
                return Some(if idx.is_empty() || idx.len() == len {
                    Throttle::All
                } else {
                    Throttle::Events(idx)
                });
            }
            let named = |k: &str| {
                v.get(k)
                    .and_then(|m| m.as_object())
                    .is_some_and(|m| !m.is_empty())
            };
            (named("throttled_users") || named("throttled_devices")).then_some(Throttle::All)
        }
        // Cut to the attempt log's excerpt: the keys still tell.
        Err(_) => {
            let text = String::from_utf8_lossy(body);
            [
                "\"throttled_events\"",
                "\"throttled_users\"",
                "\"throttled_devices\"",
            ]
            .iter()
            .any(|k| text.contains(k))
            .then_some(Throttle::All)
        }
    }
}

/// The events a 400 answer names as refused (Amplitude's
/// `events_with_invalid_fields` / `events_with_missing_fields`: field →
/// indices), with a reason each; `None` when the answer names none (then
/// the whole batch failed, retried as usual).
fn invalid_events(body: &[u8], len: usize) -> Option<Vec<(usize, String)>> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let mut bad: Vec<(usize, String)> = Vec::new();
    for (key, what) in [
        ("events_with_invalid_fields", "invalid"),
        ("events_with_missing_fields", "missing"),
    ] {
        let Some(fields) = v.get(key).and_then(|f| f.as_object()) else {
            continue;
        };
        for (field, indices) in fields {
            for i in indices.as_array().into_iter().flatten() {
                let Some(i) = i.as_u64().map(|i| i as usize).filter(|i| *i < len) else {
                    continue;
                };
                let reason = format!("{what} field `{field}`");
                match bad.iter_mut().find(|(b, _)| *b == i) {
                    Some((_, r)) => {
                        r.push_str(", ");
                        r.push_str(&reason);
                    }
                    None => bad.push((i, reason)),
                }
            }
        }
    }
    (!bad.is_empty()).then_some(bad)
}

#[cfg(test)]
mod tests {
    use super::{Throttle, invalid_events, throttled};

    #[test]
    fn amplitude_429_names_the_throttled_events() {
        let body = br#"{"code":429,"error":"Too many requests for some devices and users",
            "eps_threshold":30,"throttled_devices":{"C8F9E604":31},
            "throttled_users":{"u1":31},"throttled_events":[1,3]}"#;
        assert_eq!(throttled(body, 4), Some(Throttle::Events(vec![1, 3])));
        let both = br#"{"code":429,"throttled_events":[0,1]}"#;
        assert_eq!(throttled(both, 2), Some(Throttle::All), "every event named");
        let users = br#"{"code":429,"throttled_users":{"u1":31}}"#;
        assert_eq!(throttled(users, 4), Some(Throttle::All));
        let cut = br#"{"code":429,"throttled_events":[0,1,2,3,4,5"#;
        assert_eq!(throttled(cut, 40), Some(Throttle::All));
        assert_eq!(throttled(br#"{"error":"slow down"}"#, 4), None);
        assert_eq!(throttled(b"", 4), None);
    }

    #[test]
    fn amplitude_400_names_the_refused_events() {
        let body = br#"{"code":400,"error":"Request missing required field",
            "events_with_invalid_fields":{"time":[2]},
            "events_with_missing_fields":{"event_type":[0,2,9]}}"#;
        let bad = invalid_events(body, 4).unwrap();
        assert_eq!(
            bad,
            vec![
                (
                    2,
                    "invalid field `time`, missing field `event_type`".to_string()
                ),
                (0, "missing field `event_type`".to_string()),
            ]
        );
        assert_eq!(invalid_events(br#"{"code":400,"error":"bad"}"#, 4), None);
        assert_eq!(invalid_events(b"<html>", 4), None);
    }
}

/// One of the endpoint's `max_in_flight` permits.
async fn live_permit(
    d: &Dispatcher,
    live: &LiveEndpoint,
) -> Option<(
    tokio::sync::OwnedSemaphorePermit,
    Arc<super::endpoint::EndpointShared>,
)> {
    let ep = d.shared(live.uid)?;
    let permit = ep.sem.clone().acquire_owned().await.ok()?;
    Some((permit, ep))
}

/// The request without a merging plugin: a JSON array of the bodies (each
/// must be JSON), with the first item's content type and headers.
#[allow(clippy::type_complexity)]
fn json_array(
    bodies: &[Vec<u8>],
    items: &[Item],
) -> (Vec<u8>, String, Vec<(String, String)>, Vec<(usize, String)>) {
    let mut out = Vec::with_capacity(bodies.iter().map(|b| b.len() + 1).sum::<usize>() + 2);
    let mut refused = Vec::new();
    out.push(b'[');
    let mut first = true;
    for (i, b) in bodies.iter().enumerate() {
        if serde_json::from_slice::<serde::de::IgnoredAny>(b).is_err() {
            refused.push((
                i,
                "the body is not JSON: an endpoint without a merging plugin batches as a JSON array"
                    .to_string(),
            ));
            continue;
        }
        if !first {
            out.push(b',');
        }
        first = false;
        out.extend_from_slice(b);
    }
    out.push(b']');
    let headers = items.first().map(|i| i.headers.clone()).unwrap_or_default();
    (out, "application/json".into(), headers, refused)
}
