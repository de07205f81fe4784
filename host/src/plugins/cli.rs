//! `switchyard plugin run` and `switchyard plugin check`: run one event
//! through a plugin in the server's sandbox, or validate a component, and
//! return the result as one JSON value (main prints it on one line).

use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, anyhow, bail};
use base64::Engine as _;
use serde_json::{Map, Value, json};

use super::{Outcome, PluginError, PluginErrorKind, PluginEvent, PluginRuntime, RuntimeSettings};

/// The world a new plugin implements (0.1.0 plugins still load; a plugin
/// that merges batches implements `batching-plugin`).
pub const WORLD: &str = "switchyard:plugin/plugin@0.2.0";

/// Turns a plugin error into a message that says what to do next.
pub fn explain(e: &PluginError, settings: &RuntimeSettings) -> String {
    let p = &e.plugin;
    match e.kind {
        PluginErrorKind::NotAComponent => format!(
            "{p}: not a WebAssembly component: {}. Build plugins with \
             `cargo build --release --target wasm32-wasip2`",
            e.message
        ),
        PluginErrorKind::WrongWorld => format!(
            "{p}: wrong world: {}. A plugin must export `configure` and `handle` as \
             declared by {WORLD} (wit/plugin.wit); with Rust, use switchyard-guest's `export!`",
            e.message
        ),
        PluginErrorKind::BadConfig => {
            format!("{p}: configuration rejected by the plugin: {}", e.message)
        }
        PluginErrorKind::Trap => format!("{p}: trap: {}", e.message),
        PluginErrorKind::Deadline => format!(
            "{p}: deadline exceeded: the call ran longer than its CPU deadline of {} ms \
             (raise it with --deadline-ms, or `[plugins] deadline` in router.toml)",
            settings.deadline.as_millis()
        ),
        PluginErrorKind::OutOfMemory => format!(
            "{p}: memory cap hit: the plugin tried to use more than {} MiB \
             (raise it with --memory-mib, or `[plugins] memory_limit` in router.toml)",
            settings.memory_limit >> 20
        ),
        PluginErrorKind::InvalidOutput => format!("{p}: invalid output: {}", e.message),
        PluginErrorKind::BadInput => format!("{p}: the plugin refused the event: {}", e.message),
        PluginErrorKind::Internal => format!("{p}: plugin internal error: {}", e.message),
        PluginErrorKind::Rejected => format!(
            "{p}: the plugin rejected the event for good (no retry): {}",
            e.message
        ),
        PluginErrorKind::NotLoaded => format!("{p}: {}", e.message),
    }
}

/// Finds the plugin file: a path (anything with a `/` or ending in `.wasm`
/// that exists) or a name looked up as `<plugins_dir>/<name>.wasm`.
fn resolve(plugin: &str, plugins_dir: Option<&Path>) -> anyhow::Result<PathBuf> {
    let as_path = Path::new(plugin);
    if as_path.is_file() {
        return Ok(as_path.to_path_buf());
    }
    let looks_like_path = plugin.contains('/') || plugin.ends_with(".wasm");
    let dir = plugins_dir.unwrap_or(Path::new("plugins/dist"));
    let candidate = dir.join(format!("{plugin}.wasm"));
    if !looks_like_path && candidate.is_file() {
        return Ok(candidate);
    }
    if looks_like_path {
        bail!(
            "plugin file not found: {} (a plugin is a path to a .wasm file, or a name looked \
             up as <name>.wasm in the plugins dir, here {})",
            as_path.display(),
            dir.display()
        );
    }
    bail!(
        "plugin {plugin:?} not found: looked for {} (names are looked up in the plugins dir; \
         pass --plugins-dir DIR or a path to a .wasm file)",
        candidate.display()
    )
}

fn read_config(config: Option<&str>) -> anyhow::Result<Value> {
    let Some(text) = config else {
        return Ok(json!({}));
    };
    let (text, origin) = match text.strip_prefix('@') {
        Some(path) => (
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read config file {path}"))?,
            format!("config file {path}"),
        ),
        None => (text.to_string(), "--config".to_string()),
    };
    serde_json::from_str(&text).with_context(|| format!("{origin} is not valid JSON"))
}

fn parse_created(s: &str) -> anyhow::Result<SystemTime> {
    let normalized = s.strip_suffix("+00:00").map(|b| format!("{b}Z"));
    humantime::parse_rfc3339(normalized.as_deref().unwrap_or(s))
        .map_err(|e| anyhow!("`created` {s:?} is not an RFC 3339 UTC time ({e})"))
}

/// Builds the plugin event from the ingest API's native form.
pub fn event_from_json(doc: &Value) -> anyhow::Result<PluginEvent> {
    let obj = doc
        .as_object()
        .ok_or_else(|| anyhow!("the event file must hold a JSON object"))?;
    let event_type = obj
        .get("event")
        .and_then(Value::as_str)
        .ok_or_else(|| {
            anyhow!("the event file needs `\"event\": \"<type>\"`, e.g. \"license.created\"")
        })?
        .to_string();
    let payload = obj
        .get("payload")
        .ok_or_else(|| anyhow!("the event file needs a `payload` (the resource document)"))?;
    let created_at = match obj.get("created").and_then(Value::as_str) {
        Some(s) => parse_created(s)?,
        None => SystemTime::now(),
    };
    let created_ms = created_at
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let text = |k: &str, default: &str| {
        obj.get(k)
            .and_then(Value::as_str)
            .unwrap_or(default)
            .to_string()
    };
    Ok(PluginEvent {
        id: obj
            .get("id")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| uuid::Uuid::now_v7().to_string()),
        account: text("account", "cli"),
        endpoint: text("endpoint", "cli"),
        event_type,
        created: humantime::format_rfc3339_millis(created_at).to_string(),
        created_ms,
        payload: serde_json::to_vec(payload)?,
    })
}

/// Renders an outcome as the CLI's JSON object.
pub fn outcome_json(outcome: &Outcome, duration_us: u64) -> Value {
    let mut m = Map::new();
    let body = |m: &mut Map<String, Value>, bytes: &[u8]| match std::str::from_utf8(bytes) {
        Ok(s) => {
            m.insert("body".into(), Value::String(s.to_string()));
        }
        Err(_) => {
            m.insert(
                "body_base64".into(),
                Value::String(base64::engine::general_purpose::STANDARD.encode(bytes)),
            );
        }
    };
    match outcome {
        Outcome::Pass => {
            m.insert("outcome".into(), "pass".into());
        }
        Outcome::Skip(reason) => {
            m.insert("outcome".into(), "skip".into());
            m.insert("reason".into(), reason.clone().into());
        }
        Outcome::Rewrite(payload) => {
            m.insert("outcome".into(), "rewrite".into());
            body(&mut m, payload);
        }
        Outcome::Replace {
            body: b,
            content_type,
            headers,
        } => {
            m.insert("outcome".into(), "replace".into());
            body(&mut m, b);
            m.insert("content_type".into(), content_type.clone().into());
            let h: Map<String, Value> = headers
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect();
            m.insert("headers".into(), Value::Object(h));
        }
    }
    m.insert("duration_us".into(), duration_us.into());
    Value::Object(m)
}

/// Why `plugin run` failed: the plugin's own error (load, configure or
/// handle), or a problem with the command's inputs.
#[derive(Debug)]
pub enum RunError {
    Plugin {
        error: PluginError,
        explained: String,
    },
    Input(anyhow::Error),
}

impl RunError {
    /// The JSON line `plugin run` prints on stdout when it fails:
    /// `{"outcome": "error", "kind": …, "plugin": …, "message": …}`; `kind`
    /// is a plugin error kind (`bad_config`, `trap`, …) or `usage` for a
    /// bad file or argument.
    pub fn to_json(&self) -> Value {
        match self {
            RunError::Plugin { error, explained } => json!({
                "outcome": "error",
                "kind": error.kind.as_str(),
                "plugin": error.plugin,
                "message": error.message,
                "explanation": explained,
            }),
            RunError::Input(e) => json!({
                "outcome": "error",
                "kind": "usage",
                "message": format!("{e:#}"),
            }),
        }
    }
}

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunError::Plugin { explained, .. } => f.write_str(explained),
            RunError::Input(e) => write!(f, "{e:#}"),
        }
    }
}

impl From<anyhow::Error> for RunError {
    fn from(e: anyhow::Error) -> Self {
        RunError::Input(e)
    }
}

/// The name a plugin file runs under: the plugins folder's rule (the file
/// stem, `slack-notify.wasm` → `slack-notify`), except for a Cargo build
/// artifact (`<crate>/target/<triple>/<profile>/slack_notify.wasm`, where
/// Cargo turned the crate's `-` into `_`): that one is named after its
/// crate, `slack-notify`, the name it gets once copied into the folder as
/// the tutorial does.
pub fn run_name(path: &Path) -> String {
    let stem = super::runtime::plugin_file_name(path).unwrap_or_else(|| {
        path.file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("plugin")
            .to_string()
    });
    crate_name_of_artifact(path, &stem).unwrap_or(stem)
}

fn crate_name_of_artifact(path: &Path, stem: &str) -> Option<String> {
    let path = std::path::absolute(path).ok()?;
    let target = path
        .ancestors()
        .skip(1)
        .take(4)
        .find(|a| a.file_name().is_some_and(|n| n == "target"))?;
    let manifest = std::fs::read_to_string(target.parent()?.join("Cargo.toml")).ok()?;
    let manifest: toml::Table = toml::from_str(&manifest).ok()?;
    let name = manifest.get("package")?.get("name")?.as_str()?;
    (name.replace('-', "_") == stem).then(|| name.to_string())
}

/// `switchyard plugin run`. `name` overrides [`run_name`].
pub fn cli_run(
    plugin: &str,
    name: Option<&str>,
    event_file: &Path,
    config: Option<&str>,
    settings: RuntimeSettings,
    plugins_dir: Option<&Path>,
) -> Result<Value, RunError> {
    let path = resolve(plugin, plugins_dir)?;
    let text = std::fs::read_to_string(event_file)
        .with_context(|| format!("cannot read event file {}", event_file.display()))?;
    let doc: Value = serde_json::from_str(&text)
        .with_context(|| format!("event file {} is not valid JSON", event_file.display()))?;
    let event = event_from_json(&doc)?;
    let config = read_config(config)?;
    let runtime = PluginRuntime::new(settings.clone())?;
    let name = name.map_or_else(|| run_name(&path), str::to_string);
    let plugin_err = |error: PluginError| RunError::Plugin {
        explained: explain(&error, &settings),
        error,
    };
    let bytes = std::fs::read(&path)
        .with_context(|| format!("cannot read plugin file {}", path.display()))?;
    runtime.load_bytes(&name, &bytes).map_err(plugin_err)?;
    let binding = runtime.bind(&name, &config).map_err(plugin_err)?;
    let start = Instant::now();
    let outcome = binding.call(&event).map_err(plugin_err)?;
    let us = start.elapsed().as_micros() as u64;
    let mut out = outcome_json(&outcome, us);
    out["plugin"] = json!(name);
    Ok(out)
}

/// `switchyard plugin check`.
pub fn cli_check(path: &Path, settings: RuntimeSettings) -> anyhow::Result<Value> {
    if !path.is_file() {
        bail!("plugin file not found: {}", path.display());
    }
    let runtime = PluginRuntime::new(settings.clone())?;
    let report = runtime
        .load_file(path)
        .map_err(|e| anyhow!(explain(&e, &settings)))?;
    Ok(json!({
        "name": report.name,
        "path": path.display().to_string(),
        "size": report.size,
        "sha256": report.sha256,
        "exports": report.exports,
        "compile_ms": (report.compile_time.as_secs_f64() * 1000.0 * 10.0).round() / 10.0,
        "from_cache": report.from_cache,
        "world": report.world,
    }))
}
