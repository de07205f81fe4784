//! Plugins: the wasmtime engine, the compiled-artifact cache, the registry of
//! loaded plugins with hot reload, and sandboxed calls.

mod types;

pub use types::*;
