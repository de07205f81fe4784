//! Switchyard: a webhook event router.
//!
//! One module per stage of the data flow (see `docs/ARCHITECTURE.md`):
//! `config` → `ingest` → `store` → `delivery` (scheduler, `plugins`,
//! `signing`, sender) → attempt log, with `admin` and `telemetry` beside.

pub mod plugins;
