//! Durable state behind one interface: events, deliveries and their due
//! queue, attempts, idempotency keys, API endpoints and endpoint state.
//!
//! - `records`: the plain records every backend stores, and time rules;
//! - `backend`: the [`Backend`] trait, the seam;
//! - `sled/`: the embedded backend (key layout, compression, the
//!   group-commit writer thread, format migration);
//! - `conformance`: the tests every backend must pass.
//!
//! Nothing outside `store/sled/` names sled or a key.

mod backend;
#[cfg(test)]
pub(crate) mod conformance;
mod error;
mod records;
pub mod sled;

use std::sync::Arc;

pub use backend::{Backend, Skip};
pub use error::StoreError;
pub use records::*;

use crate::config::Config;

/// A handle on the configured backend, cheap to clone.
pub type Store = Arc<dyn Backend>;

/// Opens the backend the config names (today: sled in `data_dir/store`).
pub fn open(config: &Config) -> Result<Store, StoreError> {
    let s = &config.server;
    let store = sled::SledStore::open(&s.data_dir.join("store"), s.cache_bytes, s.fsync_interval)?;
    Ok(Arc::new(store))
}
