//! Hot reload: a `notify` watcher on the plugin folder and a thread that
//! debounces its events per path, then (re)loads or unloads the plugin.
//!
//! A path is acted on [`DEBOUNCE`] after its last event, so a `cp` of a large
//! file or an editor's save sequence lands as one load. Loading compiles and
//! validates off the hot path (this thread); a failure keeps the last good
//! version serving, and the next event for that path retries. Names that are
//! not `*.wasm`, dotfiles, `~` backups, `.swp`/`.tmp` files are ignored.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};

use super::runtime::{PluginRuntime, plugin_file_name};

/// Quiet time after a path's last event before it is loaded.
pub const DEBOUNCE: Duration = Duration::from_millis(250);

/// Keeps the plugin folder watched; dropping it stops hot reload.
pub struct PluginWatcher {
    _watcher: RecommendedWatcher,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl PluginWatcher {
    /// Hot reload of `dir` into `runtime` while the returned guard lives.
    pub fn start(runtime: PluginRuntime, dir: &Path) -> anyhow::Result<PluginWatcher> {
        let (tx, rx) = mpsc::channel::<notify::Result<notify::Event>>();
        let mut watcher = notify::recommended_watcher(tx)?;
        watcher
            .watch(dir, RecursiveMode::NonRecursive)
            .map_err(|e| anyhow::anyhow!("cannot watch plugin directory {}: {e}", dir.display()))?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("plugin-reload".into())
            .spawn(move || run(runtime, rx, flag))?;
        tracing::info!(dir = %dir.display(), "watching the plugin directory for changes");
        Ok(PluginWatcher {
            _watcher: watcher,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for PluginWatcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn relevant(kind: &EventKind) -> bool {
    matches!(
        kind,
        EventKind::Create(_)
            | EventKind::Modify(_)
            | EventKind::Remove(_)
            | EventKind::Any
            | EventKind::Access(AccessKind::Close(AccessMode::Write))
    )
}

fn run(
    runtime: PluginRuntime,
    rx: mpsc::Receiver<notify::Result<notify::Event>>,
    stop: Arc<AtomicBool>,
) {
    let mut pending: HashMap<PathBuf, Instant> = HashMap::new();
    while !stop.load(Ordering::Relaxed) {
        let wait = pending
            .values()
            .map(|t| (*t + DEBOUNCE).saturating_duration_since(Instant::now()))
            .min()
            .unwrap_or(Duration::from_millis(100))
            .min(Duration::from_millis(100));
        match rx.recv_timeout(wait) {
            Ok(Ok(event)) if relevant(&event.kind) => {
                for path in event.paths {
                    if plugin_file_name(&path).is_some() {
                        pending.insert(path, Instant::now());
                    }
                }
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "plugin directory watch error"),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        let now = Instant::now();
        let due: Vec<PathBuf> = pending
            .iter()
            .filter(|(_, t)| now.duration_since(**t) >= DEBOUNCE)
            .map(|(p, _)| p.clone())
            .collect();
        for path in due {
            pending.remove(&path);
            let Some(name) = plugin_file_name(&path) else {
                continue;
            };
            if path.exists() {
                // Errors are logged and recorded by load_file.
                let _ = runtime.load_file(&path);
            } else if runtime.unload(&name) {
                tracing::info!(plugin = %name, path = %path.display(), "plugin file removed");
            }
        }
    }
}
