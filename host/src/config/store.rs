//! `[store]`: which backend holds the router's state. `sled` (the
//! default) is embedded in `[server] data_dir` and needs nothing
//! installed; `postgres` lets several routers share one database.

use std::time::Duration;

use serde::Deserialize;

/// The backend the config names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreConfig {
    /// sled in `data_dir/store`.
    Sled,
    Postgres(PostgresConfig),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresConfig {
    /// `postgres://user:password@host:port/database` (libpq URL or
    /// key=value form).
    pub url: String,
    /// Connections this node opens at most.
    pub pool_size: usize,
    /// How long a node's claim on a delivery lasts without renewal: a
    /// node that dies holds its deliveries this long.
    pub lease: Duration,
}

pub const DEFAULT_POOL_SIZE: usize = 16;
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStore {
    backend: Option<String>,
    url: Option<String>,
    url_env: Option<String>,
    pool_size: Option<usize>,
    lease: Option<String>,
}

impl super::Checker<'_> {
    pub(super) fn store(&mut self, raw: &RawStore) -> StoreConfig {
        let url = self.secret("store", "url", &raw.url, &raw.url_env);
        let lease = self.duration("store.lease", &raw.lease, DEFAULT_LEASE);
        match raw.backend.as_deref().unwrap_or("sled") {
            "sled" => {
                if url.is_some() || raw.pool_size.is_some() || raw.lease.is_some() {
                    self.err(
                        "store",
                        "`url`, `pool_size` and `lease` are for backend = \"postgres\"; \
                         the sled store lives in [server] data_dir",
                    );
                }
                StoreConfig::Sled
            }
            "postgres" | "postgresql" => {
                let Some(url) = url else {
                    self.err(
                        "store.url",
                        "backend = \"postgres\" needs `url` (e.g. \
                         \"postgres://switchyard@127.0.0.1:5432/switchyard\") or `url_env` \
                         (e.g. \"SWITCHYARD_DATABASE_URL\")",
                    );
                    return StoreConfig::Sled;
                };
                if let Err(e) = url.parse::<tokio_postgres::Config>() {
                    self.err(
                        "store.url",
                        format!(
                            "not a PostgreSQL connection string ({e}); write e.g. \
                             \"postgres://switchyard@127.0.0.1:5432/switchyard\""
                        ),
                    );
                }
                let pool_size = raw.pool_size.unwrap_or(DEFAULT_POOL_SIZE);
                if !(2..=256).contains(&pool_size) {
                    self.err("store.pool_size", "must be 2 to 256 (default 16)");
                }
                if !(Duration::from_secs(2)..=Duration::from_secs(3600)).contains(&lease) {
                    self.err(
                        "store.lease",
                        "must be between \"2s\" and \"1h\" (default \"30s\")",
                    );
                }
                StoreConfig::Postgres(PostgresConfig {
                    url,
                    pool_size,
                    lease,
                })
            }
            other => {
                self.err(
                    "store.backend",
                    format!("{other:?} is not a store backend; use \"sled\" or \"postgres\""),
                );
                StoreConfig::Sled
            }
        }
    }
}
