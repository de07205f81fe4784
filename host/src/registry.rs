//! Who is who: accounts (tokens, signing keys) and their live endpoints with
//! bound plugin chains. A [`Snapshot`] is immutable; a config reload or an
//! API change builds a new one and swaps it in atomically, so a request or
//! a delivery always sees one consistent view.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use uuid::Uuid;

use crate::config::{Account, Config, EndpointSpec};
use crate::plugins::{Binding, PluginError, PluginRuntime};

/// An endpoint ready to deliver to.
pub struct LiveEndpoint {
    pub spec: EndpointSpec,
    pub uid: Uuid,
    pub uri: http::Uri,
    pub chain: Vec<Binding>,
    /// Chains of this endpoint running at once, at most the smallest
    /// `pool_size` of its plugins (default 4 per core): each call over the
    /// warm pool would instantiate (and then drop) a fresh instance — for
    /// a CPython or SpiderMonkey component that costs more than the call.
    /// Async: a delivery waiting here holds no thread.
    pub chain_slots: Arc<tokio::sync::Semaphore>,
}

impl std::fmt::Debug for LiveEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveEndpoint")
            .field("id", &self.spec.id)
            .field("account", &self.spec.account)
            .finish()
    }
}

impl LiveEndpoint {
    /// Binds the endpoint's plugins. A loaded plugin that rejects its
    /// config is an error; a plugin not loaded yet binds lazily.
    pub fn build(spec: EndpointSpec, runtime: &PluginRuntime) -> Result<LiveEndpoint, PluginError> {
        let uri: http::Uri = spec.url.parse().map_err(|e| {
            PluginError::new(
                "-",
                crate::plugins::PluginErrorKind::BadConfig,
                format!("url {:?}: {e}", spec.url),
            )
        })?;
        let chain = spec
            .plugins
            .iter()
            .map(|p| runtime.bind_for(&spec.account, &p.name, &p.config))
            .collect::<Result<Vec<_>, _>>()?;
        let at_once = chain
            .iter()
            .map(Binding::pool_size)
            .min()
            .unwrap_or(1)
            .max(1);
        Ok(LiveEndpoint {
            uid: spec.uid(),
            uri,
            chain_slots: Arc::new(tokio::sync::Semaphore::new(at_once)),
            chain,
            spec,
        })
    }
}

/// One consistent view of accounts and endpoints.
#[derive(Default)]
pub struct Snapshot {
    pub accounts: HashMap<String, Account>,
    pub by_account: HashMap<String, Vec<Arc<LiveEndpoint>>>,
    pub by_uid: HashMap<Uuid, Arc<LiveEndpoint>>,
}

impl Snapshot {
    /// Builds a snapshot from the config's endpoints plus API-created ones.
    /// Endpoints whose plugins reject their config are reported, not built.
    pub fn build(
        config: &Config,
        api_endpoints: &[EndpointSpec],
        runtime: &PluginRuntime,
    ) -> (Snapshot, Vec<(String, PluginError)>) {
        let mut snap = Snapshot::default();
        let mut errors = Vec::new();
        for a in &config.accounts {
            snap.accounts.insert(a.id.clone(), a.clone());
        }
        for spec in config.endpoints.iter().chain(api_endpoints) {
            let name = format!("{}/{}", spec.account, spec.id);
            match LiveEndpoint::build(spec.clone(), runtime) {
                Ok(ep) => snap.insert(Arc::new(ep)),
                Err(e) => errors.push((name, e)),
            }
        }
        (snap, errors)
    }

    fn insert(&mut self, ep: Arc<LiveEndpoint>) {
        self.by_uid.insert(ep.uid, ep.clone());
        self.by_account
            .entry(ep.spec.account.clone())
            .or_default()
            .push(ep);
    }

    pub fn account(&self, id: &str) -> Option<&Account> {
        self.accounts.get(id)
    }

    pub fn endpoints(&self, account: &str) -> &[Arc<LiveEndpoint>] {
        self.by_account
            .get(account)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    pub fn endpoint(&self, account: &str, id: &str) -> Option<&Arc<LiveEndpoint>> {
        self.endpoints(account).iter().find(|e| e.spec.id == id)
    }

    /// A copy with one endpoint added or replaced.
    pub fn with_endpoint(&self, ep: Arc<LiveEndpoint>) -> Snapshot {
        let mut s = self.clone_shallow();
        s.remove_uid(ep.uid);
        s.insert(ep);
        s
    }

    /// A copy without the endpoint.
    pub fn without_endpoint(&self, uid: Uuid) -> Snapshot {
        let mut s = self.clone_shallow();
        s.remove_uid(uid);
        s
    }

    fn remove_uid(&mut self, uid: Uuid) {
        if let Some(old) = self.by_uid.remove(&uid) {
            if let Some(list) = self.by_account.get_mut(&old.spec.account) {
                list.retain(|e| e.uid != uid);
            }
        }
    }

    fn clone_shallow(&self) -> Snapshot {
        Snapshot {
            accounts: self.accounts.clone(),
            by_account: self.by_account.clone(),
            by_uid: self.by_uid.clone(),
        }
    }
}

/// The current snapshot, swappable.
#[derive(Default)]
pub struct Registry {
    current: RwLock<Arc<Snapshot>>,
}

impl Registry {
    pub fn new(snap: Snapshot) -> Self {
        Registry {
            current: RwLock::new(Arc::new(snap)),
        }
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn replace(&self, snap: Snapshot) -> Arc<Snapshot> {
        let snap = Arc::new(snap);
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = snap.clone();
        snap
    }

    /// Applies `f` to the current snapshot under the write lock (so two
    /// API changes never lose each other's update).
    pub fn update(&self, f: impl FnOnce(&Snapshot) -> Snapshot) -> Arc<Snapshot> {
        let mut guard = self.current.write().unwrap_or_else(|p| p.into_inner());
        let next = Arc::new(f(&guard));
        *guard = next.clone();
        next
    }
}
