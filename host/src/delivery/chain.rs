//! The plugin chain of one delivery: run on a blocking thread, behind the
//! endpoint's circuit breaker (after a costly plugin failure the
//! endpoint's calls go one at a time with a growing pause).

use std::time::Duration;

use tracing::{info, warn};
use uuid::Uuid;

use super::endpoint::*;
use super::*;
use crate::plugins::{Outcome, PluginError, PluginErrorKind, PluginEvent};
use crate::registry::LiveEndpoint;
use crate::store::{EventRecord, StoredOutput};

#[derive(Default)]
pub(super) struct Breaker {
    pub(super) failures: u32,
    pub(super) next_call: Option<tokio::time::Instant>,
}

impl Breaker {
    /// Pause before the next call after `failures` costly plugin failures:
    /// 50 ms doubling, at most 10 s.
    pub(super) fn pause(failures: u32) -> Duration {
        (Duration::from_millis(50) * 2u32.saturating_pow(failures.saturating_sub(1).min(8)))
            .min(Duration::from_secs(10))
    }
}

pub(super) enum ChainResult {
    Skip(String),
    Output(StoredOutput),
    /// A plugin rewrote the payload or replaced the request.
    Transformed(StoredOutput),
}

/// Where a plugin chain ended.
pub(super) enum ChainEnd {
    Skip(String),
    Replace(StoredOutput),
    /// Every plugin passed or rewrote: wrap this payload in the envelope.
    Payload(Vec<u8>),
}

impl Dispatcher {
    /// Runs the chain through the endpoint's plugin circuit breaker.
    pub(super) async fn run_chain_guarded(
        &self,
        ep: &EndpointShared,
        live: &LiveEndpoint,
        event_id: Uuid,
        delivery_id: Uuid,
        event: &EventRecord,
    ) -> Result<ChainResult, PluginError> {
        let tripped = ep
            .breaker
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .failures
            > 0;
        let _gate = if tripped {
            let gate = ep.plugin_gate.clone().acquire_owned().await;
            let next = ep
                .breaker
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .next_call;
            if let Some(at) = next {
                tokio::time::sleep_until(at).await;
            }
            gate.ok()
        } else {
            None
        };
        let result = self.run_chain(live, event_id, delivery_id, event).await;
        let mut b = ep.breaker.lock().unwrap_or_else(|p| p.into_inner());
        match &result {
            Err(e)
                if matches!(
                    e.kind,
                    PluginErrorKind::Trap
                        | PluginErrorKind::Deadline
                        | PluginErrorKind::OutOfMemory
                ) =>
            {
                b.failures = b.failures.saturating_add(1);
                let pause = Breaker::pause(b.failures);
                b.next_call = Some(tokio::time::Instant::now() + pause);
                if b.failures == 1 {
                    warn!(plugin = %e.plugin, kind = e.kind.as_str(), "plugin failing: its calls on this endpoint now go one at a time with a growing pause until one succeeds");
                }
            }
            Err(_) => {}
            Ok(_) => {
                if b.failures > 0 {
                    info!("plugin calls succeed again; circuit breaker reset");
                }
                *b = Breaker::default();
            }
        }
        result
    }

    /// Runs the endpoint's plugin chain on a blocking thread.
    pub(super) async fn run_chain(
        &self,
        live: &LiveEndpoint,
        event_id: Uuid,
        delivery_id: Uuid,
        event: &EventRecord,
    ) -> Result<ChainResult, PluginError> {
        let default_body = |payload: &[u8]| {
            envelope::keygen_envelope(&envelope::EnvelopeInput {
                delivery_id,
                account: &event.account,
                endpoint_url: &live.spec.url,
                event_type: &event.event_type,
                created_ms: event.created_ms,
                payload,
            })
        };
        if live.chain.is_empty() {
            return Ok(ChainResult::Output(StoredOutput {
                body: default_body(&event.payload),
                content_type: "application/json".into(),
                headers: Vec::new(),
            }));
        }
        let chain = live.chain.clone();
        let mut pe = PluginEvent {
            id: event_id.to_string(),
            account: event.account.clone(),
            endpoint: live.spec.id.clone(),
            event_type: event.event_type.clone(),
            created: envelope::rfc3339(event.created_ms),
            created_ms: event.created_ms,
            payload: event.payload.clone(),
        };
        // Moved into the blocking task: a call runs to its end (or its
        // deadline) even when the attempt awaiting it is dropped, and holds
        // its place until then.
        let slot = live.chain_slots.clone().acquire_owned().await.ok();
        let start = std::time::Instant::now();
        let end = tokio::task::spawn_blocking(move || -> Result<ChainEnd, PluginError> {
            let _slot = slot;
            let budget = chain[0].chain_deadline();
            for (i, binding) in chain.iter().enumerate() {
                if i > 0 && start.elapsed() > budget {
                    return Err(binding.chain_deadline_error(start.elapsed()));
                }
                match binding.call(&pe)? {
                    Outcome::Pass => {}
                    Outcome::Skip(reason) => {
                        return Ok(ChainEnd::Skip(format!("{}: {reason}", binding.plugin())));
                    }
                    Outcome::Rewrite(payload) => pe.payload = payload,
                    Outcome::Replace {
                        body,
                        content_type,
                        headers,
                    } => {
                        return Ok(ChainEnd::Replace(StoredOutput {
                            body,
                            content_type,
                            headers,
                        }));
                    }
                }
            }
            Ok(ChainEnd::Payload(pe.payload))
        })
        .await
        .map_err(|e| {
            PluginError::new(
                "chain",
                crate::plugins::PluginErrorKind::Internal,
                format!("plugin task failed: {e}"),
            )
        })?;
        self.inner.metrics.plugin_duration.observe(start.elapsed());
        Ok(match end? {
            ChainEnd::Skip(reason) => ChainResult::Skip(reason),
            ChainEnd::Replace(out) => ChainResult::Transformed(out),
            ChainEnd::Payload(payload) => {
                let out = StoredOutput {
                    body: default_body(&payload),
                    content_type: "application/json".into(),
                    headers: Vec::new(),
                };
                if payload == event.payload {
                    ChainResult::Output(out)
                } else {
                    ChainResult::Transformed(out)
                }
            }
        })
    }
}
