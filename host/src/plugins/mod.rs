//! Plugins: the wasmtime engine, the compiled-artifact cache, the registry of
//! loaded plugins with hot reload, and sandboxed calls.
//!
//! * `contract` — the contract versions a plugin may implement (0.1.0,
//!   0.2.0, the optional `batch` export) behind one call surface;
//! * `engine` — engine configuration, epoch ticker, the sandbox (store state,
//!   limiter, empty WASI), error classification;
//! * `cache` — compile once, cache compiled artifacts on disk;
//! * `runtime` — [`PluginRuntime`] (registry, loads, swaps) and [`Binding`]
//!   (a plugin bound to one configuration, with its warm instance pool);
//! * `share` — each endpoint's and each account's share of the instance pool;
//! * `stats` — per-plugin call counters (calls, errors by kind, latency);
//! * `name` — the one rule for plugin names (loader, API, config);
//! * `output` — host rules on plugin output;
//! * `watch` — hot reload of the plugin folder;
//! * `suggest` — "did you mean …?" for plugin names that are not loaded;
//! * `cli` — `switchyard plugin run` / `plugin check`;
//! * `scaffold` — `switchyard plugin new` (project templates per language).

mod cache;
pub mod cli;
mod contract;
mod engine;
pub mod name;
mod output;
mod runtime;
pub mod scaffold;
mod share;
mod stats;
pub mod suggest;
mod types;
mod watch;

pub use engine::RuntimeOptions;
pub use runtime::{Binding, LoadReport, PluginRuntime, PluginStatus, RuntimeStats};
pub use stats::PluginCalls;
pub use types::*;
pub use watch::{DEBOUNCE, PluginWatcher};
