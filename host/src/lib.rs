//! Switchyard: a webhook event router.
//!
//! One module per stage of the data flow (see `docs/ARCHITECTURE.md`):
//! `config` → `server`/`ingest` → `store` → `delivery` (pumps, `plugins`,
//! `signing`, sender, retry) → attempt log, with `registry` (who is who),
//! `admin` (account resources), `ui` (the operator dashboard over the
//! same functions), `feed` (delivery outcomes for it), `telemetry`, `retention` beside, `cluster`
//! (several routers on one PostgreSQL store), and `app`
//! tying the `serve` life cycle together.

pub mod accept;
pub mod admin;
pub mod api;
pub mod app;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod conn;
pub mod delivery;
pub mod endpoints;
pub mod feed;
pub mod ingest;
pub mod keygen_send;
pub mod keygen_source;
pub mod listen;
pub mod plugins;
pub mod policy;
pub mod registry;
pub mod retention;
pub mod schedule;
pub mod server;
pub mod signing;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod ui;
