//! The registry of loaded plugins and the call path.
//!
//! * A [`Slot`] per plugin name holds the current [`Version`] (compiled
//!   component + `InstancePre`) behind an `RwLock<Option<Arc<..>>>`: a swap is
//!   one pointer write; a call clones the `Arc` and keeps its version until it
//!   returns, so calls in flight finish on the old version.
//! * A [`Binding`] is (plugin name, configuration). For each version it keeps
//!   a pool of configured warm instances: a call pops one under a short
//!   mutex, runs without any lock held, and pushes it back only if the call
//!   ended normally (a trapped, timed-out or out-of-memory instance is
//!   dropped).

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock, Weak};
use std::time::{Duration, SystemTime};

use enum_map::EnumMap;
use wasmtime::Store;
use wasmtime::component::Component;

use super::cache;
use super::contract::{self, Instance, Pre};
use super::engine::{self, RuntimeOptions, State, Ticker};
use super::output;
use super::share::{self, SHARE_WAIT, Share};
use super::stats::{CallStats, PluginCalls};
use super::types::*;

/// Status of one plugin, for the admin API and `statuses()`.
#[derive(Debug, Clone)]
pub struct PluginStatus {
    pub name: String,
    /// Whether a version is loaded and serving.
    pub loaded: bool,
    /// SHA-256 (hex) of the serving version's wasm; empty when not loaded.
    pub sha256: String,
    /// When the serving version was loaded (`UNIX_EPOCH` when not loaded).
    pub loaded_at: SystemTime,
    /// The last load error, cleared by the next successful load.
    pub last_error: Option<String>,
    /// Increments on every successful (re)load of this name; 0 = never loaded.
    pub version: u64,
    /// Calls, errors by kind and latency since the router started (all
    /// versions of this name, every endpoint using it).
    pub calls: PluginCalls,
}

/// Counters since the runtime started.
#[derive(Debug, Clone, Default)]
pub struct RuntimeStats {
    pub compiles: u64,
    pub cache_hits: u64,
    pub reloads: u64,
    pub load_failures: u64,
    pub calls: u64,
    /// Instances created (instantiated and configured) since start: a
    /// figure that keeps climbing under steady load means calls outrun
    /// the warm pools.
    pub instances_created: u64,
    pub call_errors: u64,
    /// Plugin log lines dropped over the per-call log budget.
    pub log_lines_dropped: u64,
    /// Call errors by kind (`PluginErrorKind::as_str`), only non-zero ones.
    pub call_errors_by_kind: Vec<(&'static str, u64)>,
    /// Whether the pooling allocator is in use.
    pub pooling: bool,
    /// Idle warm instances held now, and the linear memory they hold.
    pub idle_instances: usize,
    pub idle_bytes: usize,
}

/// What loading one file did.
#[derive(Debug, Clone)]
pub struct LoadReport {
    pub name: String,
    pub sha256: String,
    pub size: usize,
    pub compile_time: Duration,
    pub from_cache: bool,
    pub exports: Vec<String>,
    /// The contract world it implements (`switchyard:plugin/plugin@0.1.0`, ...).
    pub world: &'static str,
}

#[derive(Default)]
struct Counters {
    compiles: AtomicU64,
    cache_hits: AtomicU64,
    reloads: AtomicU64,
    load_failures: AtomicU64,
    calls: AtomicU64,
    /// Instances created (instantiated and configured).
    instances: AtomicU64,
    log_lines_dropped: AtomicU64,
    /// Call errors, one counter per kind (exhaustive by construction).
    errors: EnumMap<PluginErrorKind, AtomicU64>,
}

pub(crate) struct Version {
    number: u64,
    sha256: String,
    pre: Pre,
    loaded_at: SystemTime,
}

#[derive(Default)]
struct SlotStatus {
    last_error: Option<String>,
    versions: u64,
}

pub(crate) struct Slot {
    name: Arc<str>,
    current: RwLock<Option<Arc<Version>>>,
    status: Mutex<SlotStatus>,
    bindings: Mutex<Vec<Weak<BindingInner>>>,
    /// Serializes loads of this name (the watcher and explicit loads).
    loading: Mutex<()>,
    /// Calls of this plugin through every binding.
    stats: CallStats,
}

impl Slot {
    fn current(&self) -> Option<Arc<Version>> {
        self.current.read().unwrap().clone()
    }
}

pub(crate) struct Inner {
    pub(crate) engine: wasmtime::Engine,
    linker: wasmtime::component::Linker<State>,
    pub(crate) settings: RuntimeSettings,
    options: RuntimeOptions,
    pooling: bool,
    /// One slot per plugin *file* that was loaded or failed to load. Names
    /// that only appear in bindings create no slot (a binding to a name not
    /// loaded yet waits in `unbound`), so the API cannot grow this map.
    slots: RwLock<HashMap<String, Arc<Slot>>>,
    /// Bindings whose plugin has no slot yet; adopted by the slot when a
    /// file of that name loads. Dead entries are pruned as the list doubles.
    unbound: Mutex<Unbound>,
    counters: Counters,
    /// Idle warm instances held, and how many may be (pool slots must stay
    /// free for calls that need a fresh instance).
    idle_total: Arc<AtomicUsize>,
    idle_budget: usize,
    /// Linear-memory bytes those idle instances hold, bounded by
    /// `settings.idle_memory_budget` (a CPython or SpiderMonkey instance is
    /// tens of MiB: a count alone would not bound the RSS).
    idle_bytes: Arc<AtomicUsize>,
    /// Each account's share of the instance pool (all its bindings'
    /// running calls together). Accounts come from the operator's config,
    /// so this map is bounded by it.
    accounts: Mutex<HashMap<String, Arc<Share>>>,
    _ticker: Ticker,
}

/// The plugin runtime: engine, registry, hot reload. Cheap to clone.
#[derive(Clone)]
pub struct PluginRuntime {
    pub(crate) inner: Arc<Inner>,
}

/// Bindings waiting for their plugin's first load.
#[derive(Default)]
struct Unbound {
    list: Vec<Weak<BindingInner>>,
    /// Prune dead entries when the list reaches this length.
    prune_at: usize,
}

impl Unbound {
    fn push(&mut self, b: Weak<BindingInner>) {
        if self.list.len() >= self.prune_at {
            self.list.retain(|w| w.strong_count() > 0);
            self.prune_at = (self.list.len() * 2).max(64);
        }
        self.list.push(b);
    }
}

/// A configured instance ready for calls.
struct Warm {
    store: Store<State>,
    plugin: Instance,
}

impl Warm {
    fn bytes(&self) -> usize {
        self.store.data().limiter.used
    }
}

/// The runtime-wide bounds of idle warm instances: a count (they hold pool
/// slots) and bytes of linear memory (they hold RAM).
#[derive(Clone)]
struct IdleBudget {
    count: Arc<AtomicUsize>,
    bytes: Arc<AtomicUsize>,
    max_count: usize,
    max_bytes: usize,
}

impl IdleBudget {
    /// Reserves room for one instance of `bytes`; false when over either bound.
    fn reserve(&self, bytes: usize) -> bool {
        if self.count.fetch_add(1, Ordering::Relaxed) >= self.max_count {
            self.count.fetch_sub(1, Ordering::Relaxed);
            return false;
        }
        if self.bytes.fetch_add(bytes, Ordering::Relaxed) + bytes > self.max_bytes {
            self.release(bytes);
            return false;
        }
        true
    }

    fn release(&self, bytes: usize) {
        self.count.fetch_sub(1, Ordering::Relaxed);
        self.bytes.fetch_sub(bytes, Ordering::Relaxed);
    }
}

/// One binding's state for one plugin version.
struct Bound {
    version: Arc<Version>,
    /// Set when this version rejected the binding's configuration.
    config_error: OnceLock<PluginError>,
    idle: Mutex<Vec<Warm>>,
    /// Idle warm instances across the runtime (bounded in count and bytes).
    budget: IdleBudget,
}

impl Bound {
    fn new(version: Arc<Version>, budget: IdleBudget) -> Bound {
        Bound {
            version,
            config_error: OnceLock::new(),
            idle: Mutex::new(Vec::new()),
            budget,
        }
    }

    fn pop(&self) -> Option<Warm> {
        let w = self.idle.lock().unwrap().pop();
        if let Some(w) = &w {
            self.budget.release(w.bytes());
        }
        w
    }

    /// Keeps `warm` for the next call if this binding and the runtime have
    /// room; otherwise drops it (outside the lock).
    fn push(&self, warm: Warm, per_binding: usize) {
        let bytes = warm.bytes();
        if !self.budget.reserve(bytes) {
            return;
        }
        let mut idle = self.idle.lock().unwrap();
        if idle.len() < per_binding {
            idle.push(warm);
        } else {
            drop(idle);
            self.budget.release(bytes);
        }
    }
}

impl Drop for Bound {
    fn drop(&mut self) {
        if let Ok(idle) = self.idle.get_mut() {
            for w in idle.iter() {
                self.budget.release(w.bytes());
            }
        }
    }
}

pub(crate) struct BindingInner {
    rt: Arc<Inner>,
    name: Arc<str>,
    /// Set once a file of this name has loaded (or failed to).
    slot: OnceLock<Arc<Slot>>,
    config: String,
    bound: RwLock<Option<Arc<Bound>>>,
    /// Calls running now through this binding (an endpoint's use of a
    /// plugin), and through every binding of its account: see `share`.
    running: Share,
    account: Arc<Share>,
}

/// A plugin bound to one configuration (one endpoint's use of a plugin).
/// Follows hot reloads. `Send + Sync`; clone freely.
#[derive(Clone)]
pub struct Binding {
    inner: Arc<BindingInner>,
}

fn is_plugin_file(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    name.ends_with(".wasm") && !name.starts_with('.') && !name.contains('~') && name.len() > 5
}

pub(crate) fn plugin_file_name(path: &Path) -> Option<String> {
    if !is_plugin_file(path) {
        return None;
    }
    path.file_stem()
        .and_then(|s| s.to_str())
        .map(str::to_string)
}

impl Inner {
    /// The slot of a plugin file, created on its first load (or failed
    /// load). Only file loads call this: binding a name creates no state.
    fn slot(&self, name: &str) -> Arc<Slot> {
        if let Some(s) = self.slots.read().unwrap().get(name) {
            return s.clone();
        }
        let mut slots = self.slots.write().unwrap();
        if let Some(s) = slots.get(name) {
            return s.clone();
        }
        let slot = Arc::new(Slot {
            name: Arc::from(name),
            current: RwLock::new(None),
            status: Mutex::new(SlotStatus::default()),
            bindings: Mutex::new(Vec::new()),
            loading: Mutex::new(()),
            stats: CallStats::default(),
        });
        slots.insert(name.to_string(), slot.clone());
        // Adopt the bindings that were waiting for this name (under the
        // slots write lock, so `bind` cannot miss the new slot).
        let mut unbound = self.unbound.lock().unwrap();
        let mut adopted = slot.bindings.lock().unwrap();
        unbound.list.retain(|w| match w.upgrade() {
            None => false,
            Some(b) if &*b.name == name => {
                let _ = b.slot.set(slot.clone());
                adopted.push(w.clone());
                false
            }
            Some(_) => true,
        });
        drop(adopted);
        slot
    }

    /// The pool share of `account` (one per account, shared by all its
    /// bindings).
    fn account_share(&self, account: &str) -> Arc<Share> {
        let mut accounts = self.accounts.lock().unwrap_or_else(|p| p.into_inner());
        accounts.entry(account.to_string()).or_default().clone()
    }

    fn count_error(&self, e: &PluginError) {
        self.counters.errors[e.kind].fetch_add(1, Ordering::Relaxed);
    }

    /// A new store + instance of `version`, configured with `config`.
    fn instantiate(
        &self,
        name: &Arc<str>,
        version: &Version,
        config: &str,
    ) -> Result<Warm, PluginError> {
        let mut attempt = 0;
        let (mut store, plugin) = loop {
            let mut store = engine::new_store(&self.engine, name, self.settings.memory_of(name));
            store.set_epoch_deadline(self.deadline_ticks(name));
            match version.pre.instantiate(&mut store) {
                Ok(p) => break (store, p),
                // Every pool slot is taken: free the idle warm instances,
                // then give calls in flight a moment to return theirs.
                Err(e)
                    if e.downcast_ref::<wasmtime::PoolConcurrencyLimitError>()
                        .is_some()
                        && attempt < 50 =>
                {
                    if attempt == 0 {
                        let freed = self.flush_idle();
                        tracing::warn!(
                            plugin = &**name,
                            freed,
                            "plugin instance pool exhausted; dropped idle warm instances"
                        );
                    } else {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    attempt += 1;
                }
                Err(e) => return Err(self.classify(name, e, &mut store)),
            }
        };
        store.set_epoch_deadline(self.deadline_ticks(name));
        match plugin.configure(&mut store, config) {
            Ok(Ok(())) => {
                self.counters.instances.fetch_add(1, Ordering::Relaxed);
                Ok(Warm { store, plugin })
            }
            Ok(Err((_, message))) => Err(PluginError::new(
                &**name,
                PluginErrorKind::BadConfig,
                message,
            )),
            Err(e) => Err(self.classify(name, e, &mut store)),
        }
    }

    /// Drops every idle warm instance of every binding; returns how many.
    fn flush_idle(&self) -> usize {
        let slots: Vec<Arc<Slot>> = self.slots.read().unwrap().values().cloned().collect();
        let mut freed = 0;
        for slot in slots {
            let live: Vec<Arc<BindingInner>> = slot
                .bindings
                .lock()
                .unwrap()
                .iter()
                .filter_map(Weak::upgrade)
                .collect();
            for b in live {
                let bound = b.bound.read().unwrap().clone();
                if let Some(bound) = bound {
                    while let Some(w) = bound.pop() {
                        drop(w);
                        freed += 1;
                    }
                }
            }
        }
        freed
    }

    fn classify(&self, name: &str, e: wasmtime::Error, store: &mut Store<State>) -> PluginError {
        engine::classify(
            name,
            e,
            store.data_mut(),
            self.settings.deadline_of(name),
            self.settings.memory_of(name),
        )
    }

    /// `name`'s CPU deadline in epoch ticks.
    fn deadline_ticks(&self, name: &str) -> u64 {
        engine::deadline_ticks(self.settings.deadline_of(name))
    }

    /// Most idle warm instances per binding of `name`.
    fn pool_size(&self, name: &str) -> usize {
        self.settings
            .limits
            .get(name)
            .and_then(|l| l.pool_size)
            .unwrap_or(self.options.max_idle_per_binding)
    }

    fn idle_budget(&self) -> IdleBudget {
        IdleBudget {
            count: self.idle_total.clone(),
            bytes: self.idle_bytes.clone(),
            max_count: self.idle_budget,
            max_bytes: self.settings.idle_memory_budget,
        }
    }

    fn load_bytes(&self, name: &str, bytes: &[u8]) -> Result<LoadReport, PluginError> {
        let slot = self.slot(name);
        let _serial = slot.loading.lock().unwrap();
        let sha = cache::sha256_hex(bytes);
        if let Some(cur) = slot.current()
            && cur.sha256 == sha
        {
            // The version still serving was put back after a failed load:
            // nothing to swap, but say that the last error no longer applies.
            if let Some(previous) = slot.status.lock().unwrap().last_error.take() {
                tracing::info!(
                    plugin = name,
                    sha256 = %sha,
                    version = cur.number,
                    previous_error = %previous,
                    "plugin file is the serving version again; last load error cleared"
                );
            }
            return Ok(LoadReport {
                name: name.to_string(),
                sha256: sha,
                size: bytes.len(),
                compile_time: Duration::ZERO,
                from_cache: true,
                exports: exports_of(&self.engine, cur.pre.component()),
                world: cur.pre.world(),
            });
        }
        let compiled = cache::compile(
            &self.engine,
            name,
            bytes,
            &sha,
            self.settings.cache_dir.as_deref(),
        )?;
        if compiled.from_cache {
            self.counters.cache_hits.fetch_add(1, Ordering::Relaxed);
        } else {
            self.counters.compiles.fetch_add(1, Ordering::Relaxed);
        }
        let exports = exports_of(&self.engine, &compiled.component);
        let pre = self.instantiate_pre(name, &compiled.component)?;
        let world = pre.world();
        let previous = slot.current();
        let number = slot.status.lock().unwrap().versions + 1;
        let version = Arc::new(Version {
            number,
            sha256: sha.clone(),
            pre,
            loaded_at: SystemTime::now(),
        });

        // Validate against the live bindings' configurations (only when
        // replacing a serving version: a first load always goes in) and keep
        // the configured instances to warm the new version up.
        let live: Vec<Arc<BindingInner>> = {
            let mut list = slot.bindings.lock().unwrap();
            list.retain(|w| w.strong_count() > 0);
            list.iter().filter_map(Weak::upgrade).collect()
        };
        // Each distinct configuration is checked once; at most
        // PREWARM configured instances are kept (they hold pool slots).
        const PREWARM: usize = 16;
        let mut verdicts: HashMap<&str, Option<PluginError>> = HashMap::new();
        let mut prepared: Vec<(Arc<BindingInner>, Option<Warm>, Option<PluginError>)> = Vec::new();
        let mut kept = 0;
        for b in &live {
            if let Some(verdict) = verdicts.get(b.config.as_str()) {
                prepared.push((b.clone(), None, verdict.clone()));
                continue;
            }
            match self.instantiate(&slot.name, &version, &b.config) {
                Ok(w) => {
                    verdicts.insert(&b.config, None);
                    let keep = kept < PREWARM;
                    kept += keep as usize;
                    prepared.push((b.clone(), keep.then_some(w), None));
                }
                Err(e) if previous.is_some() => {
                    return Err(PluginError::new(
                        name,
                        e.kind,
                        format!(
                            "new version refused by a live binding (config {}): {}",
                            abbreviate(&b.config),
                            e.message
                        ),
                    ));
                }
                Err(e) => {
                    verdicts.insert(&b.config, Some(e.clone()));
                    prepared.push((b.clone(), None, Some(e)));
                }
            }
        }

        // Swap.
        *slot.current.write().unwrap() = Some(version.clone());
        {
            let mut st = slot.status.lock().unwrap();
            st.versions = number;
            st.last_error = None;
        }
        if previous.is_some() {
            self.counters.reloads.fetch_add(1, Ordering::Relaxed);
        }
        for (b, warm, error) in prepared {
            let bound = Arc::new(Bound::new(version.clone(), self.idle_budget()));
            if let Some(w) = warm.filter(|_| self.options.warm_instances) {
                bound.push(w, self.pool_size(name));
            }
            if let Some(e) = error.filter(|e| e.kind == PluginErrorKind::BadConfig) {
                let _ = bound.config_error.set(e);
            }
            let mut cur = b.bound.write().unwrap();
            if cur.as_ref().is_none_or(|c| c.version.number < number) {
                *cur = Some(bound);
            }
        }
        tracing::info!(
            plugin = name,
            sha256 = %sha,
            version = number,
            from_cache = compiled.from_cache,
            compile_ms = compiled.compile_time.as_secs_f64() * 1000.0,
            "plugin loaded"
        );
        Ok(LoadReport {
            name: name.to_string(),
            sha256: sha,
            size: bytes.len(),
            compile_time: compiled.compile_time,
            from_cache: compiled.from_cache,
            exports,
            world,
        })
    }

    fn instantiate_pre(&self, name: &str, component: &Component) -> Result<Pre, PluginError> {
        Pre::new(&self.linker, &self.engine, component).map_err(|e| {
            PluginError::new(
                name,
                PluginErrorKind::WrongWorld,
                format!(
                    "the component does not implement the switchyard:plugin/plugin world (0.2.0 or 0.1.0): {e:#}"
                ),
            )
        })
    }

    fn record_failure(&self, name: &str, e: &PluginError) {
        self.counters.load_failures.fetch_add(1, Ordering::Relaxed);
        let slot = self.slot(name);
        slot.status.lock().unwrap().last_error =
            Some(format!("{}: {}", e.kind.as_str(), e.message));
        let serving = slot.current().is_some();
        tracing::error!(
            plugin = name,
            kind = e.kind.as_str(),
            error = %e.message,
            keeps_serving_last_good_version = serving,
            "plugin failed to load"
        );
    }
}

fn abbreviate(s: &str) -> String {
    if s.len() <= 80 {
        return s.to_string();
    }
    let mut cut = 80;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}…", &s[..cut])
}

fn exports_of(engine: &wasmtime::Engine, component: &Component) -> Vec<String> {
    component
        .component_type()
        .exports(engine)
        .map(|(name, _)| name.to_string())
        .collect()
}

impl PluginRuntime {
    /// Engine (component model, epoch interruption, pooling allocator),
    /// epoch ticker thread and linker, with the default [`RuntimeOptions`].
    pub fn new(settings: RuntimeSettings) -> anyhow::Result<Self> {
        Self::with_options(settings, RuntimeOptions::default())
    }

    /// Like [`PluginRuntime::new`] with explicit options (benchmarks).
    pub fn with_options(
        settings: RuntimeSettings,
        options: RuntimeOptions,
    ) -> anyhow::Result<Self> {
        let (engine, pooling) = engine::make_engine(&settings, &options)?;
        let linker = engine::make_linker(&engine)?;
        let ticker = Ticker::start(&engine)?;
        if let Some(dir) = &settings.cache_dir
            && let Err(e) = std::fs::create_dir_all(dir)
        {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot create the plugin cache dir");
        }
        let idle_budget = if pooling {
            options.pool_instances.max(8) as usize * 3 / 4
        } else {
            options.pool_instances as usize * 4
        };
        Ok(PluginRuntime {
            inner: Arc::new(Inner {
                engine,
                linker,
                settings,
                options,
                pooling,
                slots: RwLock::new(HashMap::new()),
                unbound: Mutex::new(Unbound::default()),
                counters: Counters::default(),
                idle_total: Arc::new(AtomicUsize::new(0)),
                idle_budget,
                idle_bytes: Arc::new(AtomicUsize::new(0)),
                accounts: Mutex::new(HashMap::new()),
                _ticker: ticker,
            }),
        })
    }

    /// Loads every plugin file (`*.wasm`) in `dir`; returns the failures
    /// (also logged and recorded in `statuses()`).
    pub fn load_dir(&self, dir: &Path) -> Vec<PluginError> {
        let mut errors = Vec::new();
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) => {
                let err = PluginError::new(
                    "*",
                    PluginErrorKind::NotLoaded,
                    format!("cannot read plugin directory {}: {e}", dir.display()),
                );
                tracing::error!(dir = %dir.display(), error = %e, "cannot read the plugin directory");
                errors.push(err);
                return errors;
            }
        };
        let mut paths: Vec<_> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| is_plugin_file(p))
            .collect();
        paths.sort();
        for path in paths {
            if let Err(e) = self.load_file(&path) {
                errors.push(e);
            }
        }
        errors
    }

    /// (Re)loads one file now; the plugin's name is the file stem. On
    /// failure the last good version keeps serving.
    pub fn load_file(&self, path: &Path) -> Result<LoadReport, PluginError> {
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_string();
        if let Err(why) = super::name::check_name(&name) {
            let e = PluginError::new(
                &name,
                PluginErrorKind::NotLoaded,
                format!(
                    "{why}; rename the file, e.g. `mv {:?} {:?}`",
                    path.display().to_string(),
                    path.with_file_name(format!("{}.wasm", super::name::suggest(&name)))
                        .display()
                        .to_string()
                ),
            );
            self.inner.record_failure(&name, &e);
            return Err(e);
        }
        let result = match std::fs::read(path) {
            Ok(bytes) => self.inner.load_bytes(&name, &bytes),
            Err(e) => Err(PluginError::new(
                &name,
                PluginErrorKind::NotLoaded,
                format!("cannot read {}: {e}", path.display()),
            )),
        };
        if let Err(e) = &result {
            self.inner.record_failure(&name, e);
        }
        result
    }

    /// Loads a plugin from bytes under `name` (tests, embedding).
    pub fn load_bytes(&self, name: &str, bytes: &[u8]) -> Result<LoadReport, PluginError> {
        let result = self.inner.load_bytes(name, bytes);
        if let Err(e) = &result {
            self.inner.record_failure(name, e);
        }
        result
    }

    /// Unloads a plugin; its bindings then fail with `NotLoaded`.
    pub fn unload(&self, name: &str) -> bool {
        let Some(slot) = self.inner.slots.read().unwrap().get(name).cloned() else {
            return false;
        };
        let _serial = slot.loading.lock().unwrap();
        let was = slot.current.write().unwrap().take().is_some();
        // Free the unloaded version's warm instances now.
        let live: Vec<Arc<BindingInner>> = slot
            .bindings
            .lock()
            .unwrap()
            .iter()
            .filter_map(Weak::upgrade)
            .collect();
        for b in live {
            b.bound.write().unwrap().take();
        }
        if was {
            tracing::info!(plugin = name, "plugin unloaded");
        }
        was
    }

    /// Binds `plugin` to a configuration, for no account in particular
    /// (`plugin run`, tests): see [`PluginRuntime::bind_for`].
    pub fn bind(&self, plugin: &str, config: &serde_json::Value) -> Result<Binding, PluginError> {
        self.bind_for("", plugin, config)
    }

    /// Binds `plugin` to a configuration for one of `account`'s endpoints.
    /// If the plugin is loaded it is configured now (a rejection is
    /// `Err(BadConfig)`); if not, the binding is returned anyway and its
    /// calls fail with `NotLoaded` until a file of that name loads. Calls
    /// count against the account's share of the instance pool.
    pub fn bind_for(
        &self,
        account: &str,
        plugin: &str,
        config: &serde_json::Value,
    ) -> Result<Binding, PluginError> {
        let config = if config.is_null() {
            "{}".to_string()
        } else {
            config.to_string()
        };
        super::name::check_name(plugin)
            .map_err(|m| PluginError::new(plugin, PluginErrorKind::BadConfig, m))?;
        let inner = Arc::new(BindingInner {
            rt: self.inner.clone(),
            name: Arc::from(plugin),
            slot: OnceLock::new(),
            config,
            bound: RwLock::new(None),
            running: Share::default(),
            account: self.inner.account_share(account),
        });
        let slot = {
            let slots = self.inner.slots.read().unwrap();
            match slots.get(plugin) {
                Some(s) => s.clone(),
                None => {
                    // Not loaded (no file of that name yet): the binding
                    // waits, holding no slot; calls fail with NotLoaded.
                    self.inner
                        .unbound
                        .lock()
                        .unwrap()
                        .push(Arc::downgrade(&inner));
                    return Ok(Binding { inner });
                }
            }
        };
        let _ = inner.slot.set(slot.clone());
        if let Some(version) = slot.current() {
            let warm = self
                .inner
                .instantiate(&slot.name, &version, &inner.config)?;
            let bound = Arc::new(Bound::new(version, self.inner.idle_budget()));
            if self.inner.options.warm_instances {
                bound.push(warm, self.inner.pool_size(plugin));
            }
            *inner.bound.write().unwrap() = Some(bound);
        }
        let mut list = slot.bindings.lock().unwrap();
        list.retain(|w| w.strong_count() > 0);
        list.push(Arc::downgrade(&inner));
        drop(list);
        Ok(Binding { inner })
    }

    pub fn is_loaded(&self, name: &str) -> bool {
        self.inner
            .slots
            .read()
            .unwrap()
            .get(name)
            .is_some_and(|s| s.current().is_some())
    }

    /// Every plugin that is loaded or failed to load, by name.
    pub fn statuses(&self) -> Vec<PluginStatus> {
        let slots: Vec<Arc<Slot>> = self.inner.slots.read().unwrap().values().cloned().collect();
        let mut out: Vec<PluginStatus> = slots
            .iter()
            .filter_map(|s| {
                let cur = s.current();
                let st = s.status.lock().unwrap();
                if cur.is_none() && st.last_error.is_none() && st.versions == 0 {
                    return None;
                }
                Some(PluginStatus {
                    name: s.name.to_string(),
                    loaded: cur.is_some(),
                    sha256: cur.as_ref().map(|v| v.sha256.clone()).unwrap_or_default(),
                    loaded_at: cur.as_ref().map_or(SystemTime::UNIX_EPOCH, |v| v.loaded_at),
                    last_error: st.last_error.clone(),
                    version: cur.as_ref().map_or(0, |v| v.number),
                    calls: s.stats.snapshot(),
                })
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    pub fn stats(&self) -> RuntimeStats {
        let c = &self.inner.counters;
        let by_kind: Vec<(&'static str, u64)> = c
            .errors
            .iter()
            .map(|(k, n)| (k.as_str(), n.load(Ordering::Relaxed)))
            .filter(|(_, n)| *n > 0)
            .collect();
        RuntimeStats {
            compiles: c.compiles.load(Ordering::Relaxed),
            cache_hits: c.cache_hits.load(Ordering::Relaxed),
            reloads: c.reloads.load(Ordering::Relaxed),
            load_failures: c.load_failures.load(Ordering::Relaxed),
            calls: c.calls.load(Ordering::Relaxed),
            instances_created: c.instances.load(Ordering::Relaxed),
            call_errors: by_kind.iter().map(|(_, n)| n).sum(),
            log_lines_dropped: c.log_lines_dropped.load(Ordering::Relaxed),
            call_errors_by_kind: by_kind,
            pooling: self.inner.pooling,
            idle_instances: self.inner.idle_total.load(Ordering::Relaxed),
            idle_bytes: self.inner.idle_bytes.load(Ordering::Relaxed),
        }
    }
}

impl Binding {
    /// Warm instances kept for this binding (`pool_size`, default 4 per
    /// core): the most calls worth running through it at once.
    pub fn pool_size(&self) -> usize {
        self.inner.rt.pool_size(&self.inner.name)
    }

    pub fn plugin(&self) -> &str {
        &self.inner.name
    }

    /// The wall-clock budget of a whole chain (`[plugins] chain_deadline`).
    pub fn chain_deadline(&self) -> Duration {
        self.inner.rt.settings.chain_deadline
    }

    /// The error of a chain stopped before this plugin because it ran past
    /// [`Binding::chain_deadline`] (counted as a `deadline` error).
    pub fn chain_deadline_error(&self, elapsed: Duration) -> PluginError {
        let e = PluginError::new(
            &*self.inner.name,
            PluginErrorKind::Deadline,
            format!(
                "the plugin chain ran {} ms, past its budget of {} ms ([plugins] chain_deadline), before this plugin",
                elapsed.as_millis(),
                self.chain_deadline().as_millis()
            ),
        );
        self.inner.rt.count_error(&e);
        e
    }

    /// Runs one event through the plugin, synchronously (CPU-bound: callers
    /// on an async runtime use `spawn_blocking`).
    pub fn call(&self, event: &PluginEvent) -> Result<Outcome, PluginError> {
        let rt = &self.inner.rt;
        rt.counters.calls.fetch_add(1, Ordering::Relaxed);
        let start = std::time::Instant::now();
        let result = self.call_inner(event);
        if let Err(e) = &result {
            rt.count_error(e);
        }
        if let Some(slot) = self.inner.slot.get() {
            slot.stats
                .record(start.elapsed(), result.as_ref().err().map(|e| e.kind));
        }
        result
    }

    fn bound(&self) -> Result<Arc<Bound>, PluginError> {
        let name = &self.inner.name;
        let Some(version) = self.inner.slot.get().and_then(|s| s.current()) else {
            return Err(PluginError::new(
                &**name,
                PluginErrorKind::NotLoaded,
                format!("no plugin named {:?} is loaded", &**name),
            ));
        };
        if let Some(b) = &*self.inner.bound.read().unwrap()
            && Arc::ptr_eq(&b.version, &version)
        {
            return Ok(b.clone());
        }
        let mut w = self.inner.bound.write().unwrap();
        match &*w {
            Some(b) if Arc::ptr_eq(&b.version, &version) => Ok(b.clone()),
            _ => {
                let b = Arc::new(Bound::new(version, self.inner.rt.idle_budget()));
                *w = Some(b.clone());
                Ok(b)
            }
        }
    }

    /// Waits (at most [`SHARE_WAIT`]) for a place in this binding's share
    /// of the instance pool and then in its account's.
    fn enter(&self) -> Result<RunningGuard<'_>, PluginError> {
        let pool = self.inner.rt.options.pool_instances;
        let deadline = std::time::Instant::now() + SHARE_WAIT;
        let refused = |what: String| {
            PluginError::new(
                &*self.inner.name,
                PluginErrorKind::Internal,
                format!("{what} (its share of the plugin instance pool); the delivery is retried"),
            )
        };
        let max = share::binding_max(pool);
        if !self.inner.running.enter(max, deadline) {
            return Err(refused(format!(
                "this endpoint already runs {max} calls of the plugin at once"
            )));
        }
        let max = share::account_max(pool);
        if !self.inner.account.enter(max, deadline) {
            self.inner.running.leave();
            return Err(refused(format!(
                "this account's endpoints already run {max} plugin calls at once"
            )));
        }
        Ok(RunningGuard(&self.inner))
    }

    fn call_inner(&self, event: &PluginEvent) -> Result<Outcome, PluginError> {
        let outcome = self.run(|plugin, store| plugin.handle(store, event))?;
        let outcome = outcome.map_err(|e| contract::error(&self.inner.name, e))?;
        output::validate(
            &self.inner.name,
            &outcome,
            self.inner.rt.settings.max_output,
        )?;
        Ok(outcome)
    }

    /// Batching: the provider limits of this plugin when it merges batches
    /// (exports `batch` and answers `Some`), else `None`.
    pub fn batch_limits(&self) -> Result<Option<BatchLimits>, PluginError> {
        let rt = &self.inner.rt;
        rt.counters.calls.fetch_add(1, Ordering::Relaxed);
        let r = self.run(|plugin, store| Ok(Ok(plugin.limits(store)?)));
        let r = r.and_then(|r| r.map_err(|e| contract::error(&self.inner.name, e)));
        if let Err(e) = &r {
            rt.count_error(e);
        }
        r
    }

    /// Batching: merges per-event bodies into one request (see
    /// `wit/plugin.wit`, interface `batch`).
    pub fn merge(&self, items: &[Vec<u8>]) -> Result<Merged, PluginError> {
        let rt = &self.inner.rt;
        let name = &self.inner.name;
        rt.counters.calls.fetch_add(1, Ordering::Relaxed);
        let r = self
            .run(|plugin, store| plugin.merge(store, items))
            .and_then(|r| r.map_err(|e| contract::error(name, e)))
            .and_then(|m| {
                let as_outcome = Outcome::Replace {
                    body: m.body,
                    content_type: m.content_type,
                    headers: m.headers,
                };
                output::validate(name, &as_outcome, rt.settings.max_output)?;
                let Outcome::Replace {
                    body,
                    content_type,
                    headers,
                } = as_outcome
                else {
                    unreachable!("built as Replace above")
                };
                if let Some((i, _)) = m.refused.iter().find(|(i, _)| *i as usize >= items.len()) {
                    return Err(PluginError::new(
                        &**name,
                        PluginErrorKind::InvalidOutput,
                        format!("merge refused item {i} of {}", items.len()),
                    ));
                }
                Ok(Merged {
                    body,
                    content_type,
                    headers,
                    refused: m.refused,
                })
            });
        if let Err(e) = &r {
            rt.count_error(e);
        }
        r
    }

    /// Runs `f` on a configured instance (warm or fresh) under the sandbox's
    /// deadline and memory cap, and puts the instance back when the call
    /// ended normally.
    fn run<T>(
        &self,
        f: impl FnOnce(&Instance, &mut Store<State>) -> wasmtime::Result<T>,
    ) -> Result<T, PluginError> {
        let _share = self.enter()?;
        let rt = &*self.inner.rt;
        let name = &self.inner.name;
        let bound = self.bound()?;
        if let Some(e) = bound.config_error.get() {
            return Err(e.clone());
        }
        let popped = if rt.options.warm_instances {
            bound.pop()
        } else {
            None
        };
        let mut warm = match popped {
            Some(w) => w,
            None => match rt.instantiate(name, &bound.version, &self.inner.config) {
                Ok(w) => w,
                Err(e) => {
                    if e.kind == PluginErrorKind::BadConfig {
                        let _ = bound.config_error.set(e.clone());
                    }
                    return Err(e);
                }
            },
        };
        warm.store.data_mut().limiter.denied = false;
        warm.store.data_mut().begin_call();
        warm.store.set_epoch_deadline(rt.deadline_ticks(name));
        let result = f(&warm.plugin, &mut warm.store);
        let (lines, bytes) = warm.store.data().log_dropped();
        if lines > 0 {
            rt.counters
                .log_lines_dropped
                .fetch_add(lines, Ordering::Relaxed);
            tracing::warn!(
                plugin = &**name,
                dropped_lines = lines,
                dropped_bytes = bytes,
                budget_bytes = engine::LOG_BYTES_PER_CALL,
                "plugin log output over its per-call budget; lines dropped"
            );
        }
        let outcome = match result {
            // The guest survived a refused `memory.grow` (CPython raises
            // MemoryError, SpiderMonkey throws "out of memory") and answered:
            // still the memory cap, reported as such, and the instance,
            // now at its cap, is not reused.
            Ok(_) if warm.store.data().limiter.denied => {
                let err = PluginError::new(
                    &**name,
                    PluginErrorKind::OutOfMemory,
                    format!(
                        "plugin hit its memory cap of {} MiB",
                        rt.settings.memory_of(name) as f64 / (1 << 20) as f64
                    ),
                );
                tracing::warn!(plugin = &**name, kind = err.kind.as_str(), error = %err.message, "plugin call failed");
                return Err(err);
            }
            Ok(r) => {
                if rt.options.warm_instances {
                    bound.push(warm, rt.pool_size(name));
                }
                r
            }
            Err(e) => {
                let err = rt.classify(name, e, &mut warm.store);
                tracing::warn!(plugin = &**name, kind = err.kind.as_str(), error = %err.message, "plugin call failed");
                return Err(err);
            }
        };
        Ok(outcome)
    }
}

/// Frees a binding's and its account's running places.
struct RunningGuard<'a>(&'a BindingInner);

impl Drop for RunningGuard<'_> {
    fn drop(&mut self) {
        self.0.account.leave();
        self.0.running.leave();
    }
}

#[allow(dead_code)]
fn _assert_send_sync() {
    fn is<T: Send + Sync>() {}
    is::<Binding>();
    is::<PluginRuntime>();
}
