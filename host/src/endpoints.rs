//! Endpoints created through the API: their stored form
//! ([`StoredEndpoint`], kept by the store) turned back into
//! [`EndpointSpec`]s at start-up and after every change, and back.

use std::time::Duration;

use crate::config::{BatchSpec, EndpointSpec, PluginRef};
pub use crate::store::StoredEndpoint;
use crate::store::{Store, StoredBatch};

impl StoredEndpoint {
    pub fn to_spec(&self) -> EndpointSpec {
        EndpointSpec {
            id: self.id.clone(),
            account: self.account.clone(),
            url: self.url.clone(),
            subscriptions: self.subscriptions.clone(),
            secrets: self.secrets.clone(),
            standard_signature: self.standard_signature,
            keygen_signature: self.keygen_signature,
            plugins: self
                .plugins
                .iter()
                .map(|(name, config)| PluginRef {
                    name: name.clone(),
                    config: config.clone(),
                })
                .collect(),
            retry_schedule: self.retry_schedule.clone(),
            timeout: Duration::from_millis(self.timeout_ms),
            max_in_flight: self.max_in_flight,
            enabled: self.enabled,
            from_config: false,
            batch: self.batch.map(|b| BatchSpec {
                max_events: b.max_events,
                max_bytes: b.max_bytes,
                max_wait: Duration::from_millis(b.max_wait_ms),
            }),
            rate_limit: self.rate_limit,
        }
    }

    pub fn from_spec(spec: &EndpointSpec, created_ms: i64, updated_ms: i64) -> Self {
        StoredEndpoint {
            id: spec.id.clone(),
            account: spec.account.clone(),
            url: spec.url.clone(),
            subscriptions: spec.subscriptions.clone(),
            secrets: spec.secrets.clone(),
            standard_signature: spec.standard_signature,
            keygen_signature: spec.keygen_signature,
            plugins: spec
                .plugins
                .iter()
                .map(|p| (p.name.clone(), p.config.clone()))
                .collect(),
            retry_schedule: spec.retry_schedule.clone(),
            timeout_ms: spec.timeout.as_millis() as u64,
            max_in_flight: spec.max_in_flight,
            enabled: spec.enabled,
            created_ms,
            updated_ms,
            batch: spec.batch.map(|b| StoredBatch {
                max_events: b.max_events,
                max_bytes: b.max_bytes,
                max_wait_ms: b.max_wait.as_millis() as u64,
            }),
            rate_limit: spec.rate_limit,
        }
    }
}

/// Every endpoint created through the API.
pub async fn load_all(store: &Store) -> anyhow::Result<Vec<EndpointSpec>> {
    Ok(store
        .api_endpoints(None)
        .await?
        .iter()
        .map(StoredEndpoint::to_spec)
        .collect())
}
