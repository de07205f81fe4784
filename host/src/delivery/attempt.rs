//! One attempt of one delivery, as typed phases (after svix-server's
//! worker): **prepare** (the delivery's records, the plugin chain, the
//! signed headers) → **send** (the only phase that holds the endpoint's
//! in-flight permit, so `max_in_flight` bounds requests to the receiver and
//! nothing else) → **record** the success or the failure (next retry,
//! auto-disable, 410 Gone). The delivery stays taken (in the endpoint's
//! in-flight set) until its result is recorded, so the pump never takes it
//! twice.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::OwnedSemaphorePermit;
use tracing::{debug, info, warn};

use super::chain::*;
use super::endpoint::*;
use super::sender::{Response, SendError};
use super::*;
use crate::policy::retry;
use crate::registry::LiveEndpoint;
use crate::store::{
    AttemptRecord, AttemptUpdate, BatchRef, DeliveryRecord, DeliveryStatus, Due, EndpointState,
    EventRecord, StoredOutput, TRANSFORMED, now_ms,
};

/// An attempt ready to go: the request is built, nothing is sent yet.
pub(super) struct Prepared {
    due: Due,
    rec: DeliveryRecord,
    /// The produced output, its body moved into `body`.
    output: StoredOutput,
    body: Bytes,
    headers: http::HeaderMap,
    /// The batch it was sent in (batched endpoints).
    batch: Option<BatchRef>,
}

/// Where preparing ended: a request to send, or an outcome already
/// recorded (filtered, plugin failure, unusable plugin output).
pub(super) enum Prepare {
    Ready(Prepared),
    Done(AttemptSummary),
}

/// When a failed attempt is tried again.
pub(super) enum Next {
    /// On the endpoint's retry schedule (with the receiver's `Retry-After`).
    Schedule(Option<Duration>),
    /// Never: the delivery fails now (a plugin's `rejected` error).
    Never,
}

/// What sending did.
pub(super) struct Sent {
    result: Result<Response, SendError>,
    latency: Duration,
    at_ms: i64,
}

impl Dispatcher {
    /// The task of one taken delivery: the attempt, then the delivery is
    /// released for the pump to take again when due.
    pub(super) async fn attempt(
        self,
        ep: Arc<EndpointShared>,
        work: Work,
        permit: OwnedSemaphorePermit,
    ) {
        let live = ep.live();
        let event_id = work.event_id();
        let result = match work {
            Work::Stored(due) => self.run_attempt(&ep, &live, due, Some(permit)).await,
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
                let due = Due {
                    event: event_id,
                    due_ms,
                };
                self.attempt_with(&ep, &live, due, rec, &event, Some(permit))
                    .await
                    .map(Some)
            }
        };
        if let Err(e) = result {
            warn!(error = %e, "attempt could not be recorded; it stays due and will run again");
        }
        ep.in_flight().remove(&event_id);
        ep.notify.notify_one();
        if self.inner.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.inner.idle.notify_waiters();
        }
    }

    /// An attempt of a delivery found in the store's queue: its records are
    /// read first; a stale entry (delivery gone, final, or moved) is
    /// dropped. `Err` only for storage failures.
    pub(super) async fn run_attempt(
        &self,
        ep: &EndpointShared,
        live: &LiveEndpoint,
        due: Due,
        permit: Option<OwnedSemaphorePermit>,
    ) -> Result<Option<AttemptSummary>, crate::store::StoreError> {
        let store = &self.inner.store;
        let rec = match store.delivery(due.event, ep.uid).await? {
            Some(rec) if !rec.status.is_final() && rec.due_ms == Some(due.due_ms) => rec,
            _ => {
                store.remove_due(ep.uid, due).await?;
                return Ok(None);
            }
        };
        let Some(event) = store.event(&live.spec.account, due.event).await? else {
            store.remove_due(ep.uid, due).await?;
            return Ok(None);
        };
        self.attempt_with(ep, live, due, rec, &event, permit)
            .await
            .map(Some)
    }

    /// The phases of an attempt once its records are at hand.
    async fn attempt_with(
        &self,
        ep: &EndpointShared,
        live: &LiveEndpoint,
        due: Due,
        rec: DeliveryRecord,
        event: &EventRecord,
        permit: Option<OwnedSemaphorePermit>,
    ) -> Result<AttemptSummary, crate::store::StoreError> {
        let mut prepared = match self.prepare(ep, live, due, rec, event).await? {
            Prepare::Ready(p) => p,
            Prepare::Done(summary) => return Ok(summary),
        };
        // The endpoint's settings now, not when the delivery was taken: a
        // reload that changes `batch` or `rate_limit` applies to every
        // delivery not yet sent.
        let current = ep.live();
        let sent = match current.spec.batch {
            None => {
                self.pace(ep, &current).await;
                let sent = self.send(live, &prepared).await;
                // The receiver is done with us: the next request may start
                // while this result is being recorded.
                drop(permit);
                sent
            }
            Some(spec) => {
                // Batched: the permit bounds batch requests, not items
                // waiting in the open batch.
                drop(permit);
                let (tx, rx) = tokio::sync::oneshot::channel();
                let item = super::batch::Item {
                    event: prepared.due.event,
                    body: prepared.body.clone(),
                    headers: prepared.output.headers.clone(),
                    reply: tx,
                    journal: None,
                };
                let live = current.clone();
                // `_in_flight` lives until this attempt is recorded: then
                // the batch's record in the store may go.
                let (reply, _in_flight) = self.join_batch(&ep.batcher, &live, spec, item, rx).await;
                match reply {
                    super::batch::Reply::Sent {
                        result,
                        latency,
                        at_ms,
                        batch,
                    } => {
                        prepared.batch = Some(batch);
                        Sent {
                            result,
                            latency,
                            at_ms,
                        }
                    }
                    super::batch::Reply::NotSent {
                        error,
                        permanent,
                        batch,
                    } => {
                        let Prepared {
                            due,
                            rec,
                            mut output,
                            body,
                            ..
                        } = prepared;
                        output.body = body.to_vec();
                        let attempt = AttemptRecord {
                            at_ms: now_ms(),
                            status: None,
                            error: Some(error),
                            latency_us: 0,
                            response: Vec::new(),
                            batch,
                        };
                        let next = if permanent {
                            Next::Never
                        } else {
                            Next::Schedule(None)
                        };
                        return self
                            .failed(ep, &live, due, rec, Some(output), attempt, next)
                            .await;
                    }
                }
            }
        };
        let Sent {
            result,
            latency,
            at_ms,
        } = sent;
        match result {
            Ok(resp) if (200..300).contains(&resp.status) => {
                self.on_delivered(ep, live, prepared, resp, latency, at_ms)
                    .await
            }
            result => {
                let sent = Sent {
                    result,
                    latency,
                    at_ms,
                };
                self.on_failed_send(ep, live, prepared, sent).await
            }
        }
    }

    /// Phase 1: the body (stored output of an earlier attempt, or the
    /// plugin chain's) and the signed headers.
    async fn prepare(
        &self,
        ep: &EndpointShared,
        live: &LiveEndpoint,
        due: Due,
        mut rec: DeliveryRecord,
        event: &EventRecord,
    ) -> Result<Prepare, crate::store::StoreError> {
        let delivery_id = envelope::delivery_id(due.event, ep.uid);
        let output = match rec.output.take() {
            Some(o) if rec.reason.as_deref() == Some(TRANSFORMED) => {
                Ok(ChainResult::Transformed(o))
            }
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
        let mut output = match output {
            Ok(ChainResult::Output(o)) => {
                if rec.reason.as_deref() == Some(TRANSFORMED) {
                    // A manual retry ran the plugins again; they passed.
                    rec.reason = None;
                }
                o
            }
            Ok(ChainResult::Transformed(o)) => {
                rec.reason = Some(TRANSFORMED.to_string());
                o
            }
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
                return Ok(Prepare::Done(AttemptSummary {
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
                    batch: None,
                };
                // `rejected` (contract 0.2.0): the plugin says no attempt
                // will ever succeed; the delivery fails now.
                let next = if e.kind == crate::plugins::PluginErrorKind::Rejected {
                    Next::Never
                } else {
                    Next::Schedule(None)
                };
                let summary = self.failed(ep, live, due, rec, None, attempt, next).await?;
                return Ok(Prepare::Done(summary));
            }
        };
        let headers = match self.headers(live, delivery_id, &output, now) {
            Ok(h) => h,
            Err(msg) => {
                let attempt = AttemptRecord {
                    at_ms: now,
                    status: None,
                    error: Some(msg),
                    latency_us: 0,
                    response: Vec::new(),
                    batch: None,
                };
                let summary = self
                    .failed(
                        ep,
                        live,
                        due,
                        rec,
                        Some(output),
                        attempt,
                        Next::Schedule(None),
                    )
                    .await?;
                return Ok(Prepare::Done(summary));
            }
        };
        // The body goes out as `Bytes` (no copy); it is copied back only on
        // the failure path, where it may be stored for the retries.
        let body = Bytes::from(std::mem::take(&mut output.body));
        Ok(Prepare::Ready(Prepared {
            due,
            rec,
            output,
            body,
            headers,
            batch: None,
        }))
    }

    /// Phase 2: the request.
    async fn send(&self, live: &LiveEndpoint, p: &Prepared) -> Sent {
        let (result, latency) = self
            .inner
            .sender
            .post(
                &live.uri,
                p.headers.clone(),
                p.body.clone(),
                live.spec.timeout,
            )
            .await;
        self.inner.metrics.attempt_latency.observe(latency);
        Sent {
            result,
            latency,
            at_ms: now_ms(),
        }
    }

    /// Phase 3a: a 2xx.
    async fn on_delivered(
        &self,
        ep: &EndpointShared,
        live: &LiveEndpoint,
        p: Prepared,
        resp: Response,
        latency: Duration,
        at_ms: i64,
    ) -> Result<AttemptSummary, crate::store::StoreError> {
        let mut rec = p.rec;
        if rec.reason.as_deref() == Some(TRANSFORMED) {
            // Kept to show what the plugins produced (pruned with the event).
            let mut output = p.output;
            output.body = p.body.to_vec();
            rec.output = Some(output);
        }
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
            batch: p.batch,
        };
        let state = {
            let mut h = ep.health();
            let had_failures = h.consecutive_failures > 0 || h.last_success_ms.is_none();
            h.consecutive_failures = 0;
            h.first_failure_ms = None;
            h.last_success_ms = Some(at_ms);
            had_failures.then(|| h.clone())
        };
        self.record(ep, p.due, &rec, Some(&attempt), state.as_ref())
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
        Ok(AttemptSummary {
            status: rec.status,
            http_status: Some(resp.status),
            error: None,
            latency_ms: latency.as_millis() as u64,
        })
    }

    /// Phase 3b: a non-2xx answer or no answer.
    async fn on_failed_send(
        &self,
        ep: &EndpointShared,
        live: &LiveEndpoint,
        p: Prepared,
        sent: Sent,
    ) -> Result<AttemptSummary, crate::store::StoreError> {
        let Prepared {
            due,
            rec,
            mut output,
            body,
            batch,
            ..
        } = p;
        let latency_us = sent.latency.as_micros() as u64;
        let (attempt, retry_after) = match sent.result {
            Ok(resp) => {
                let retry_after = if matches!(resp.status, 429 | 503) {
                    resp.retry_after
                        .as_deref()
                        .and_then(|v| retry::parse_retry_after(v, std::time::SystemTime::now()))
                } else {
                    None
                };
                let attempt = AttemptRecord {
                    at_ms: sent.at_ms,
                    status: Some(resp.status),
                    error: None,
                    latency_us,
                    response: resp.excerpt,
                    batch,
                };
                if resp.status == 410 {
                    return self.gone(ep, live, due, rec, attempt).await;
                }
                (attempt, retry_after)
            }
            Err(e) => {
                self.inner
                    .metrics
                    .delivery_failure(&live.spec.account, &live.spec.id, e.cause());
                (
                    AttemptRecord {
                        at_ms: sent.at_ms,
                        status: None,
                        error: Some(e.to_string()),
                        latency_us,
                        response: Vec::new(),
                        batch: None,
                    },
                    None,
                )
            }
        };
        output.body = body.to_vec();
        self.failed(
            ep,
            live,
            due,
            rec,
            Some(output),
            attempt,
            Next::Schedule(retry_after),
        )
        .await
    }

    /// Records a failed attempt and schedules the next, or fails for good.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn failed(
        &self,
        ep: &EndpointShared,
        live: &LiveEndpoint,
        due: Due,
        mut rec: DeliveryRecord,
        output: Option<StoredOutput>,
        attempt: AttemptRecord,
        next: Next,
    ) -> Result<AttemptSummary, crate::store::StoreError> {
        let now = attempt.at_ms;
        rec.attempts += 1;
        rec.last_status = attempt.status;
        rec.last_error = attempt.error.clone();
        rec.updated_ms = now;
        let next = match next {
            Next::Schedule(retry_after) => live.spec.retry_schedule.next_delay(
                rec.attempts,
                retry_after,
                self.inner.settings.max_retry_after,
            ),
            Next::Never => None,
        };
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
                // A transformed body stays visible (API, dashboard).
                if rec.reason.as_deref() != Some(TRANSFORMED) {
                    rec.output = None;
                }
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
    pub(super) async fn record(
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
            .await?;
        // Dashboard hook (live tail, overview figures): see `crate::feed`.
        self.inner.metrics.feed.publish(crate::feed::Report {
            account: &rec.account,
            endpoint: &rec.endpoint,
            endpoint_uid: ep.uid,
            event: due.event,
            outcome: match rec.status {
                DeliveryStatus::Delivered => "delivered",
                DeliveryStatus::Failed => "failed",
                DeliveryStatus::Disabled => "disabled",
                DeliveryStatus::Filtered => "filtered",
                _ => "attempt_failed",
            },
            http_status: attempt.and_then(|a| a.status),
            error: attempt.and_then(|a| a.error.as_deref()),
            latency_us: attempt.map(|a| a.latency_us).filter(|us| *us > 0),
            at_ms: attempt.map_or(rec.updated_ms, |a| a.at_ms),
            attempt: rec.attempts,
        });
        Ok(())
    }

    /// 410 Gone: the receiver asks us to stop. Disable the endpoint.
    pub(super) async fn gone(
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
}
