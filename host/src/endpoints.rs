//! Endpoints created through the API: how they are persisted in the store
//! (JSON under `n/<account>\0<id>`) and turned back into [`EndpointSpec`]s at
//! start-up and after every change.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::{EndpointSpec, PluginRef};
use crate::policy::retry::RetrySchedule;
use crate::signing::SecretSet;
use crate::store::{Store, keys};

/// The persisted form of an API endpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
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
}

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
        }
    }
}

/// Every endpoint created through the API.
pub fn load_all(store: &Store) -> anyhow::Result<Vec<EndpointSpec>> {
    let mut out = Vec::new();
    for (k, v) in store.scan_raw(b"n/")? {
        let e: StoredEndpoint = serde_json::from_slice(&v).map_err(|e| {
            anyhow::anyhow!(
                "stored endpoint {} is unreadable: {e}",
                String::from_utf8_lossy(&k)
            )
        })?;
        out.push(e.to_spec());
    }
    Ok(out)
}

pub fn get(store: &Store, account: &str, id: &str) -> anyhow::Result<Option<StoredEndpoint>> {
    Ok(store
        .scan_raw(&keys::api_endpoint(account, id))?
        .into_iter()
        .find(|(k, _)| k == &keys::api_endpoint(account, id))
        .map(|(_, v)| serde_json::from_slice(&v))
        .transpose()?)
}

/// Saves (durably) an API endpoint.
pub fn save(store: &Store, e: &StoredEndpoint) -> anyhow::Result<()> {
    store.put_raw(
        &keys::api_endpoint(&e.account, &e.id),
        &serde_json::to_vec(e)?,
    )?;
    Ok(())
}

pub fn delete(store: &Store, account: &str, id: &str) -> anyhow::Result<()> {
    store.remove_raw(&keys::api_endpoint(account, id))?;
    Ok(())
}
