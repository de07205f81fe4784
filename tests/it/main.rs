//! Switchyard's integration tests: one binary (it links wasmtime once), a
//! module per area. Most tests drive the real `switchyard` binary against
//! real receivers on loopback and real wasm plugins built from source.
//!
//! Run one area: `cargo test --release -p switchyard --test it reliability::`
//! (a name filter matches the module path).

mod common;

mod admin;
mod analytics;
mod batching;
mod cluster;
mod contract;
mod dashboard;
mod delivery;
mod fuzz_props;
mod keygen_source;
mod papercuts;
mod polyglot;
mod reliability;
mod runtime;
mod scheduled;
mod security;
