//! The host-side vocabulary of plugin calls: what goes in (an event), what
//! comes out (an outcome), and the typed errors a call or a load can end in.

use std::fmt;
use std::time::Duration;

/// One event as handed to a plugin (mirrors `switchyard:plugin/types.event`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginEvent {
    pub id: String,
    pub account: String,
    pub endpoint: String,
    pub event_type: String,
    /// RFC 3339, UTC.
    pub created: String,
    /// Milliseconds since the Unix epoch.
    pub created_ms: i64,
    /// The resource document (JSON bytes).
    pub payload: Vec<u8>,
}

/// What a plugin decided for one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Deliver unchanged; the next plugin runs.
    Pass,
    /// Do not deliver: the delivery is recorded as filtered.
    Skip(String),
    /// New payload for the rest of the chain and the default envelope.
    Rewrite(Vec<u8>),
    /// New HTTP body; ends the chain.
    Replace {
        body: Vec<u8>,
        content_type: String,
        headers: Vec<(String, String)>,
    },
}

/// What a merging plugin's provider accepts in one request (WIT
/// `batch.limits`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    pub max_events: u32,
    pub max_bytes: u64,
    pub max_item_bytes: u64,
}

/// One merged request (WIT `batch.merged`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merged {
    pub body: Vec<u8>,
    pub content_type: String,
    pub headers: Vec<(String, String)>,
    /// Items left out of the body: (index into the items, reason).
    pub refused: Vec<(u32, String)>,
}

/// Why a plugin could not be loaded or called. Derives `enum_map::Enum`, so
/// per-kind counters (`EnumMap<PluginErrorKind, _>`) have a slot for every
/// kind by construction: a new kind is counted without further edits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, enum_map::Enum)]
pub enum PluginErrorKind {
    /// No plugin of that name is loaded (or the file does not exist).
    NotLoaded,
    /// The file is not a WebAssembly component (or does not compile).
    NotAComponent,
    /// The component does not implement the `switchyard:plugin` world.
    WrongWorld,
    /// The plugin rejected its configuration.
    BadConfig,
    /// The plugin refused this event.
    BadInput,
    /// The plugin reported an internal error.
    Internal,
    /// The plugin said this event can never be handled (WIT 0.2.0
    /// `rejected`): the delivery fails at once, without retries.
    Rejected,
    /// The plugin trapped (panic, unreachable, ...).
    Trap,
    /// The call ran past its CPU deadline.
    Deadline,
    /// The plugin hit its memory cap.
    OutOfMemory,
    /// The plugin's output breaks a host rule (forbidden header, too large, ...).
    InvalidOutput,
}

impl PluginErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PluginErrorKind::NotLoaded => "not_loaded",
            PluginErrorKind::NotAComponent => "not_a_component",
            PluginErrorKind::WrongWorld => "wrong_world",
            PluginErrorKind::BadConfig => "bad_config",
            PluginErrorKind::BadInput => "bad_input",
            PluginErrorKind::Internal => "internal",
            PluginErrorKind::Rejected => "rejected",
            PluginErrorKind::Trap => "trap",
            PluginErrorKind::Deadline => "deadline",
            PluginErrorKind::OutOfMemory => "out_of_memory",
            PluginErrorKind::InvalidOutput => "invalid_output",
        }
    }
}

/// A typed plugin error: which plugin, what kind, and a message for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginError {
    pub plugin: String,
    pub kind: PluginErrorKind,
    pub message: String,
}

impl PluginError {
    pub fn new(
        plugin: impl Into<String>,
        kind: PluginErrorKind,
        message: impl Into<String>,
    ) -> Self {
        PluginError {
            plugin: plugin.into(),
            kind,
            message: message.into(),
        }
    }
}

impl fmt::Display for PluginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "plugin {}: {}: {}",
            self.plugin,
            self.kind.as_str(),
            self.message
        )
    }
}

impl std::error::Error for PluginError {}

/// Sandbox and runtime settings (`[plugins]` in `router.toml`).
#[derive(Debug, Clone)]
pub struct RuntimeSettings {
    /// CPU deadline of one call (epoch interruption). Default 50 ms.
    pub deadline: Duration,
    /// Linear-memory cap of one instance. Default 32 MiB.
    pub memory_limit: usize,
    /// Largest body a plugin may return. Default 5 MiB.
    pub max_output: usize,
    /// Where compiled components are cached (`<data_dir>/plugin-cache`);
    /// `None` disables the cache.
    pub cache_dir: Option<std::path::PathBuf>,
    /// Wall-clock budget of one delivery's whole chain. Default 500 ms.
    pub chain_deadline: Duration,
    /// Per-plugin overrides of the limits above (`[plugins.limits.<name>]`),
    /// by plugin name.
    pub limits: std::collections::HashMap<String, PluginLimits>,
    /// Linear memory all idle warm instances together may hold (their
    /// pools are bounded in bytes as well as in count). Default 256 MiB.
    pub idle_memory_budget: usize,
}

/// Limits of one plugin that differ from the runtime-wide ones. A Python
/// (CPython) or JavaScript (SpiderMonkey) plugin is a 12–18 MB component
/// whose instances start at several MiB of linear memory: see
/// docs/PLUGINS.md for the values that fit them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PluginLimits {
    /// Linear-memory cap of one instance.
    pub memory: Option<usize>,
    /// CPU deadline of one call.
    pub deadline: Option<Duration>,
    /// Most idle warm instances kept per binding (per endpoint use).
    pub pool_size: Option<usize>,
}

impl RuntimeSettings {
    /// The memory cap of `plugin`.
    pub fn memory_of(&self, plugin: &str) -> usize {
        self.limits
            .get(plugin)
            .and_then(|l| l.memory)
            .unwrap_or(self.memory_limit)
    }

    /// The CPU deadline of `plugin`.
    pub fn deadline_of(&self, plugin: &str) -> Duration {
        self.limits
            .get(plugin)
            .and_then(|l| l.deadline)
            .unwrap_or(self.deadline)
    }

    /// The largest memory cap of any plugin (sizes the instance pool's slots).
    pub fn max_memory(&self) -> usize {
        self.limits
            .values()
            .filter_map(|l| l.memory)
            .fold(self.memory_limit, usize::max)
    }
}

impl Default for RuntimeSettings {
    fn default() -> Self {
        RuntimeSettings {
            deadline: Duration::from_millis(50),
            memory_limit: 32 << 20,
            max_output: 5 << 20,
            cache_dir: None,
            chain_deadline: Duration::from_millis(500),
            limits: Default::default(),
            idle_memory_budget: 256 << 20,
        }
    }
}
