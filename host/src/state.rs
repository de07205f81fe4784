//! The state every request handler may touch: the live config, the
//! endpoint registry, the store, the dispatcher, the plugin runtime and the
//! metrics. Shared by `server` (ingest, health) and `admin` (account
//! resources); it imports neither, so they do not import each other.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use crate::api::{self, ApiError};
use crate::config::Config;
use crate::delivery::Dispatcher;
use crate::plugins::PluginRuntime;
use crate::registry::Registry;
use crate::store::Store;
use crate::telemetry::Metrics;

/// Everything a request handler may touch.
pub struct AppState {
    pub config: std::sync::RwLock<Arc<Config>>,
    pub registry: Arc<Registry>,
    pub store: Store,
    pub dispatcher: Dispatcher,
    pub runtime: PluginRuntime,
    pub metrics: Arc<Metrics>,
    /// The URL policy in force, shared with the sender (set on reload).
    pub url_policy: crate::policy::guard::LivePolicy,
    pub accepting: AtomicBool,
}

impl AppState {
    pub fn config(&self) -> Arc<Config> {
        self.config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Authenticates a request for `account` (account token or admin token).
    pub fn authorize_account(
        &self,
        headers: &http::HeaderMap,
        snap: &crate::registry::Snapshot,
        account: &str,
    ) -> Result<api::Principal, ApiError> {
        api::authorize_account(
            headers,
            snap,
            self.config().server.admin_token.as_deref(),
            account,
        )
    }
}
