//! Durable state behind one interface: events, deliveries and their due
//! queue, attempts, idempotency keys, API endpoints and endpoint state.
//!
//! - `records`: the plain records every backend stores, and time rules;
//! - `backend`: the [`Backend`] trait, the seam;
//! - `sled/`: the embedded backend (key layout, compression, the
//!   group-commit writer thread, format migration);
//! - `postgres/`: the shared backend (schema migrations, group commit,
//!   claims with leases) for several routers on one database;
//! - `conformance`: the tests every backend must pass.
//!
//! Nothing outside `store/sled/` and `store/postgres/` names sled, a key,
//! a table or a statement.

mod backend;
#[cfg(test)]
pub(crate) mod conformance;
pub mod copy;
mod error;
pub mod postgres;
mod records;
pub mod sled;

use std::sync::Arc;

pub use backend::{Backend, Skip};
pub use error::StoreError;
pub use records::*;

use crate::config::{Config, StoreConfig};

/// A handle on the configured backend, cheap to clone.
pub type Store = Arc<dyn Backend>;

/// Opens the backend the config names: sled in `data_dir/store`, or the
/// PostgreSQL database of `[store] url`.
pub async fn open(config: &Config) -> Result<Store, StoreError> {
    match &config.store {
        StoreConfig::Sled => {
            let s = &config.server;
            let store =
                sled::SledStore::open(&s.data_dir.join("store"), s.cache_bytes, s.fsync_interval)?;
            Ok(Arc::new(store))
        }
        StoreConfig::Postgres(pg) => Ok(Arc::new(postgres::PgStore::open(pg).await?)),
    }
}
