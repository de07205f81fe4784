//! The `serve` life cycle, top to bottom: load the config, open the store,
//! load plugins and watch their folder, build the endpoint registry, start
//! the dispatcher and the HTTP server, watch `router.toml`, and on
//! SIGINT/SIGTERM stop accepting, let attempts finish, flush.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::Context as _;
use tracing::{error, info, warn};

use crate::config::Config;
use crate::delivery::{DispatchSettings, Dispatcher, Sender};
use crate::plugins::{PluginError, PluginErrorKind, PluginRuntime, PluginWatcher, RuntimeSettings};
use crate::policy::guard::LivePolicy;
use crate::registry::{Registry, Snapshot};
use crate::server;
use crate::state::AppState;
use crate::store::{Store, StoreError};
use crate::telemetry::{self, Metrics};

/// How long `serve` waits for attempts in flight at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// How long `serve` waits for the store's lock held by another process:
/// right after `kill -9` (a supervisor restarting at once) the dead
/// router's lock is released only once the kernel has reaped it.
pub const STORE_LOCK_WAIT: Duration = Duration::from_secs(10);

/// Said at start-up and by `config check` when no account is declared.
pub const NO_ACCOUNTS: &str = "no [[accounts]] in the configuration: the router starts but every request to /v1/accounts/... is refused (401) and no event can be ingested; declare at least one account (see router.toml)";

/// Opens the store, retrying while another process holds its lock, for up
/// to `wait` (said once in the log); any other error fails at once.
async fn open_store_waiting(config: &Config, wait: Duration) -> anyhow::Result<Store> {
    let started = std::time::Instant::now();
    let mut said = false;
    loop {
        match crate::store::open(config).await {
            Ok(store) => {
                if said {
                    info!(
                        waited_ms = started.elapsed().as_millis() as u64,
                        "store lock acquired"
                    );
                }
                return Ok(store);
            }
            Err(StoreError::Locked(_)) if started.elapsed() < wait => {
                if !said {
                    warn!(
                        dir = %config.server.data_dir.display(),
                        wait_s = wait.as_secs(),
                        "the store is locked by another process (a router still running, or one just killed and not yet reaped); waiting for the lock"
                    );
                    said = true;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e @ StoreError::Locked(_)) => {
                anyhow::bail!(
                    "{e}: another process still holds the store lock after {} s; stop the other router using {} (or give this one another [server] data_dir)",
                    wait.as_secs(),
                    config.server.data_dir.display()
                );
            }
            Err(e) => return Err(e.into()),
        }
    }
}

pub fn runtime_settings(config: &Config) -> RuntimeSettings {
    RuntimeSettings {
        deadline: config.plugins.deadline,
        memory_limit: config.plugins.memory_limit,
        max_output: config.plugins.max_output,
        cache_dir: Some(config.server.data_dir.join("plugin-cache")),
        chain_deadline: config.plugins.chain_deadline,
        limits: config
            .plugins
            .limits
            .iter()
            .map(|(name, l)| {
                let limits = crate::plugins::PluginLimits {
                    memory: l.memory,
                    deadline: l.deadline,
                    pool_size: l.pool_size,
                };
                (name.clone(), limits)
            })
            .collect(),
        ..RuntimeSettings::default()
    }
}

/// Notes the batch requests a stopped router left in flight in their
/// deliveries' attempt logs (the deliveries are due and are sent again).
pub async fn recover_batches(store: &Store) {
    match store.recover_batches().await {
        Ok((0, _)) => {}
        Ok((batches, noted)) => warn!(
            batches,
            deliveries = noted,
            "batch requests were in flight when a router stopped: noted in their deliveries' attempt logs; they are sent again"
        ),
        Err(e) => warn!(
            error = %e,
            "reading the batches left in flight failed; their deliveries are sent again without a note"
        ),
    }
}

/// Runs the router until SIGINT/SIGTERM.
pub async fn serve(config_path: &Path) -> anyhow::Result<()> {
    let config = Config::load(config_path).map_err(|e| anyhow::anyhow!("{e}"))?;
    telemetry::init_logging(config.server.log_format);
    if let Some(nofile) = crate::conn::raise_nofile_limit() {
        info!(open_files = nofile, "open-file limit");
        if (config.server.max_connections as u64).saturating_add(256) > nofile {
            warn!(
                open_files = nofile,
                max_connections = config.server.max_connections,
                "[server] max_connections is close to the open-file limit; the store and deliveries need files too"
            );
        }
    }
    let data_dir = &config.server.data_dir;
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating the data directory {}", data_dir.display()))?;
    if config.accounts.is_empty() {
        warn!(file = %config.path.display(), "{NO_ACCOUNTS}");
    }
    let store = open_store_waiting(&config, STORE_LOCK_WAIT)
        .await
        .with_context(|| format!("opening the store in {}", data_dir.display()))?;

    let runtime =
        PluginRuntime::new(runtime_settings(&config)).context("starting the plugin runtime")?;
    let plugin_dir = config.plugins.dir.clone();
    if plugin_dir.is_dir() {
        for e in runtime.load_dir(&plugin_dir) {
            error!(plugin = %e.plugin, kind = e.kind.as_str(), error = %e.message, "plugin failed to load");
        }
    } else {
        warn!(dir = %plugin_dir.display(), "the plugins folder does not exist; create it and drop .wasm files in to load them");
        let _ = std::fs::create_dir_all(&plugin_dir);
    }
    let _plugin_watcher = PluginWatcher::start(runtime.clone(), &plugin_dir)
        .with_context(|| format!("watching {}", plugin_dir.display()))?;

    let api_endpoints = crate::endpoints::load_all(&store).await?;
    let (snap, errors) = Snapshot::build(&config, &api_endpoints, &runtime);
    if !errors.is_empty() {
        // One broken endpoint stops start-up (docs/PLUGINS.md, "Life
        // cycle"): `config check` reports the same lines beforehand.
        let list = endpoint_errors(&config, &errors);
        for line in &list {
            error!("{line}");
        }
        anyhow::bail!(
            "{} endpoint(s) cannot load:\n  {}",
            errors.len(),
            list.join("\n  ")
        );
    }
    let registry = Arc::new(Registry::new(snap));
    let metrics = Arc::new(Metrics::default());
    let url_policy = LivePolicy::new(config.delivery.policy);
    let sender = Sender::new(url_policy.clone(), config.delivery.ca_file.as_deref())?;
    let dispatcher = Dispatcher::new(
        store.clone(),
        sender,
        registry.clone(),
        metrics.clone(),
        DispatchSettings {
            max_retry_after: config.delivery.max_retry_after,
            disable_after: config.delivery.disable_after,
        },
    );
    // Before any delivery starts: batches the last run left in flight.
    recover_batches(&store).await;
    dispatcher.sync().await;

    let listener = server::bind(config.server.listen).await?;
    let addr = listener.local_addr()?;
    let state = Arc::new(AppState {
        config: std::sync::RwLock::new(Arc::new(config.clone())),
        registry: registry.clone(),
        store: store.clone(),
        dispatcher: dispatcher.clone(),
        runtime: runtime.clone(),
        metrics,
        url_policy,
        accepting: AtomicBool::new(true),
    });
    let _config_watcher = watch_config(config_path.to_path_buf(), state.clone());
    crate::cluster::spawn(state.clone()).await;
    let _retention = crate::retention::spawn(state.clone());
    info!(
        %addr,
        accounts = config.accounts.len(),
        endpoints = registry.snapshot().by_uid.len(),
        plugins = runtime.statuses().len(),
        "switchyard is ready"
    );
    // Machine-readable line for scripts and tests (stdout).
    println!("listening on {addr}");

    server::serve(state.clone(), listener, shutdown_signal(), SHUTDOWN_GRACE).await;
    info!("shutting down: no new requests; letting attempts in flight finish");
    dispatcher.shutdown(SHUTDOWN_GRACE).await;
    if let Err(e) = store.leave().await {
        warn!(error = %e, "giving back this node's claims failed; they lapse with their lease");
    }
    store.flush().await.context("flushing the store")?;
    info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

/// One line per endpoint whose plugin chain cannot be bound, saying where
/// the endpoint is declared (`router.toml:12: endpoints[0] ("crm")`, or
/// that it was created through the API) and what the plugin said.
pub fn endpoint_errors(config: &Config, errors: &[(String, PluginError)]) -> Vec<String> {
    errors
        .iter()
        .map(|(name, e)| {
            let (account, id) = name.split_once('/').unwrap_or(("", name));
            let location = config.endpoint_location(account, id).unwrap_or_else(|| {
                format!("endpoint {id:?} of account {account:?} (created through the API)")
            });
            match e.kind {
                PluginErrorKind::BadConfig if e.plugin != "-" => format!(
                    "{location}: plugin {:?} rejects its config: {}",
                    e.plugin, e.message
                ),
                _ => format!(
                    "{location}: plugin {:?}: {}: {}",
                    e.plugin,
                    e.kind.as_str(),
                    e.message
                ),
            }
        })
        .collect()
}

/// Rebuilds the registry from a new `router.toml`; an invalid file keeps
/// the running configuration and says why.
pub async fn reload_config(state: &AppState, path: &Path) {
    let new = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            error!(file = %path.display(), errors = %e, "router.toml changed but is invalid; keeping the running configuration");
            return;
        }
    };
    let old = state.config();
    if new.server.listen != old.server.listen || new.server.data_dir != old.server.data_dir {
        warn!("[server] listen and data_dir changes take effect at the next restart");
    }
    let api_endpoints = match crate::endpoints::load_all(&state.store).await {
        Ok(e) => e,
        Err(e) => {
            error!(error = %e, "reading API endpoints failed; keeping the running configuration");
            return;
        }
    };
    let (snap, errors) = Snapshot::build(&new, &api_endpoints, &state.runtime);
    if !errors.is_empty() {
        for line in endpoint_errors(&new, &errors) {
            error!("endpoint cannot load: {line}");
        }
        error!(
            "router.toml changed but some endpoints cannot load; keeping the running configuration"
        );
        return;
    }
    state.url_policy.set(new.delivery.policy);
    state.registry.replace(snap);
    *state.config.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(new);
    state.dispatcher.sync().await;
    info!(file = %path.display(), "configuration reloaded");
}

/// Rebuilds the registry from the running `router.toml` and the API
/// endpoints as stored now (another node changed one); endpoints that
/// cannot load keep the running registry.
pub async fn reload_endpoints(state: &AppState) {
    let config = state.config();
    let api_endpoints = match crate::endpoints::load_all(&state.store).await {
        Ok(e) => e,
        Err(e) => {
            error!(error = %e, "reading API endpoints failed; keeping the running endpoints");
            return;
        }
    };
    let (snap, errors) = Snapshot::build(&config, &api_endpoints, &state.runtime);
    if !errors.is_empty() {
        for line in endpoint_errors(&config, &errors) {
            error!("endpoint cannot load: {line}");
        }
        return;
    }
    state.registry.replace(snap);
    state.dispatcher.sync().await;
}

/// Watches `router.toml` (its folder, so editors that replace the file
/// are seen) and reloads after changes settle.
fn watch_config(path: PathBuf, state: Arc<AppState>) -> Option<notify::RecommendedWatcher> {
    use notify::{RecursiveMode, Watcher};
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let file_name = path.file_name()?.to_os_string();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if let Ok(ev) = res {
            // Reading the file (an editor, `config check`, `cat`) is not a
            // change.
            if matches!(ev.kind, notify::EventKind::Access(_)) {
                return;
            }
            if ev
                .paths
                .iter()
                .any(|p| p.file_name() == Some(file_name.as_os_str()))
            {
                let _ = tx.send(());
            }
        }
    })
    .ok()?;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if let Err(e) = watcher.watch(dir, RecursiveMode::NonRecursive) {
        warn!(error = %e, "cannot watch the config file; changes need a restart");
        return None;
    }
    // Reload only when the bytes changed (a touch, a save without edits,
    // or metadata changes do not rebuild every endpoint).
    let digest = |p: &Path| {
        std::fs::read(p).ok().map(|b| {
            use sha2::Digest as _;
            sha2::Sha256::digest(&b)
        })
    };
    let mut last = digest(&path);
    tokio::spawn(async move {
        while rx.recv().await.is_some() {
            // Debounce: wait until no change for 300 ms.
            loop {
                match tokio::time::timeout(Duration::from_millis(300), rx.recv()).await {
                    Ok(Some(())) => continue,
                    Ok(None) => return,
                    Err(_) => break,
                }
            }
            let now = digest(&path);
            if now.is_none() || now == last {
                continue;
            }
            last = now;
            let st = state.clone();
            let p = path.clone();
            reload_config(&st, &p).await;
        }
    });
    Some(watcher)
}
