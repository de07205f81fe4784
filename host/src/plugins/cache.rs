//! Compiling components, with an on-disk cache of compiled artifacts.
//!
//! A cache entry is `<cache_dir>/<sha256 of the wasm>-<engine key>.cwasm`,
//! where the engine key hashes wasmtime's version and
//! `Engine::precompile_compatibility_hash` (target, tunables, features). The
//! file starts with the SHA-256 of the artifact that follows, checked before
//! the artifact is handed to `Component::deserialize`: a truncated or
//! corrupted entry is recompiled and rewritten, never trusted.
//!
//! Compiling is bounded: one component at a time (a gate), and for large
//! components (over 2 MiB) Cranelift's parallel compilation runs in a
//! dedicated thread pool of half the cores (at least one), so compiling an
//! 18 MB Python component (seconds of Cranelift time) leaves the other
//! cores to ingest and delivery. Callers
//! compile off the async workers (the watcher's thread, or startup before
//! the server listens).

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use super::types::{PluginError, PluginErrorKind};

const WASMTIME_VERSION: &str = "48.0.8";

/// One compilation at a time, process-wide.
static COMPILE_GATE: Mutex<()> = Mutex::new(());

/// The threads Cranelift may use: half the cores, at least one.
fn compile_pool() -> Option<&'static rayon::ThreadPool> {
    static POOL: OnceLock<Option<rayon::ThreadPool>> = OnceLock::new();
    POOL.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        rayon::ThreadPoolBuilder::new()
            .num_threads((cores / 2).max(1))
            .thread_name(|i| format!("plugin-compile-{i}"))
            .build()
            .map_err(|e| tracing::warn!(error = %e, "cannot start the plugin compile pool"))
            .ok()
    })
    .as_ref()
}

/// Components above this size (Python, JavaScript: 12–18 MB, seconds of
/// Cranelift time) compile in the half-the-cores pool; small ones (Rust
/// plugins, a few hundred KB, well under a second) on every core.
const LARGE: usize = 2 << 20;

/// Compiles with the bounds above.
fn compile_bounded(engine: &Engine, bytes: &[u8]) -> wasmtime::Result<Component> {
    let _one_at_a_time = COMPILE_GATE.lock().unwrap_or_else(|e| e.into_inner());
    match compile_pool() {
        Some(pool) if bytes.len() > LARGE => pool.install(|| Component::from_binary(engine, bytes)),
        _ => Component::from_binary(engine, bytes),
    }
}

pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Stable key of the engine's code-generation settings.
pub(crate) fn engine_key(engine: &Engine) -> String {
    // SipHash with fixed keys: stable for a given build of the host, which is
    // all the key needs (deserialize re-checks compatibility anyway).
    #[allow(deprecated)]
    let mut h = std::hash::SipHasher::new();
    WASMTIME_VERSION.hash(&mut h);
    engine.precompile_compatibility_hash().hash(&mut h);
    format!("{:016x}", h.finish())
}

pub(crate) struct Compiled {
    pub component: Component,
    pub from_cache: bool,
    pub compile_time: Duration,
}

/// Checks the binary header: a component, a core module, or neither.
pub(crate) fn check_header(name: &str, bytes: &[u8]) -> Result<(), PluginError> {
    let not = |m: String| PluginError::new(name, PluginErrorKind::NotAComponent, m);
    if bytes.len() < 8 || &bytes[0..4] != b"\0asm" {
        return Err(not(format!(
            "not a WebAssembly file ({} bytes, no `\\0asm` header); build plugins with \
             `cargo build --target wasm32-wasip2`",
            bytes.len()
        )));
    }
    if bytes[4..8] == [1, 0, 0, 0] {
        return Err(not(
            "this is a core WebAssembly module, not a component; build with \
             `cargo build --target wasm32-wasip2` (not wasm32-unknown-unknown or wasm32-wasip1)"
                .into(),
        ));
    }
    Ok(())
}

fn entry_path(dir: &Path, sha: &str, key: &str) -> PathBuf {
    dir.join(format!("{sha}-{key}.cwasm"))
}

fn read_entry(path: &Path) -> Option<Vec<u8>> {
    let data = std::fs::read(path).ok()?;
    if data.len() < 32 {
        return None;
    }
    let (sum, artifact) = data.split_at(32);
    if Sha256::digest(artifact).as_slice() != sum {
        return None;
    }
    Some(artifact.to_vec())
}

fn write_entry(path: &Path, artifact: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut data = Vec::with_capacity(artifact.len() + 32);
    data.extend_from_slice(&Sha256::digest(artifact));
    data.extend_from_slice(artifact);
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        path.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id()
    ));
    std::fs::write(&tmp, &data)?;
    std::fs::rename(&tmp, path)
}

/// Compiles `bytes` (whose hash is `sha`), using and filling the cache.
pub(crate) fn compile(
    engine: &Engine,
    name: &str,
    bytes: &[u8],
    sha: &str,
    cache_dir: Option<&Path>,
) -> Result<Compiled, PluginError> {
    check_header(name, bytes)?;
    let start = Instant::now();
    let entry = cache_dir.map(|d| entry_path(d, sha, &engine_key(engine)));
    if let Some(path) = &entry
        && path.exists()
    {
        match read_entry(path) {
            Some(artifact) => {
                // SAFETY: the artifact was produced by `Component::serialize`
                // of this engine configuration (the key says so) and its
                // checksum matches, so it is the bytes we wrote.
                match unsafe { Component::deserialize(engine, &artifact) } {
                    Ok(component) => {
                        tracing::info!(
                            plugin = name,
                            sha256 = sha,
                            cache = %path.display(),
                            "plugin loaded from the compiled-artifact cache"
                        );
                        return Ok(Compiled {
                            component,
                            from_cache: true,
                            compile_time: start.elapsed(),
                        });
                    }
                    Err(e) => tracing::warn!(
                        plugin = name,
                        error = %e,
                        "cached artifact unusable; recompiling"
                    ),
                }
            }
            None => tracing::warn!(
                plugin = name,
                cache = %path.display(),
                "cached artifact is corrupt; recompiling"
            ),
        }
    }
    let component = compile_bounded(engine, bytes).map_err(|e| {
        PluginError::new(
            name,
            PluginErrorKind::NotAComponent,
            format!("the component does not compile (truncated or invalid?): {e:#}"),
        )
    })?;
    let compile_time = start.elapsed();
    if let Some(path) = &entry {
        match component.serialize() {
            Ok(artifact) => {
                if let Err(e) = write_entry(path, &artifact) {
                    tracing::warn!(plugin = name, error = %e, "cannot write the compiled-artifact cache");
                }
            }
            Err(e) => tracing::warn!(plugin = name, error = %e, "cannot serialize the component"),
        }
    }
    Ok(Compiled {
        component,
        from_cache: false,
        compile_time,
    })
}
