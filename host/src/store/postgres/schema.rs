//! Schema migrations, embedded in the binary and applied at start-up.
//!
//! Every node runs [`migrate`] when it opens the store. It takes a
//! transaction-scoped advisory lock first, so when several nodes start at
//! once one applies the missing migrations and the others wait, then find
//! nothing left to do. A database migrated by a newer binary (a version
//! this one does not know) is refused: this binary would not know how to
//! read it.

use tokio_postgres::Client;

use crate::store::StoreError;

/// Migrations in order; the version of the N-th is N.
const MIGRATIONS: &[(&str, &str)] = &[
    ("initial schema", include_str!("migrations/0001_init.sql")),
    (
        "batches in flight",
        include_str!("migrations/0002_batches.sql"),
    ),
];

/// The schema version this binary writes.
pub const VERSION: i32 = MIGRATIONS.len() as i32;

/// The advisory lock every node takes to migrate (any constant unique to
/// Switchyard: "swyd" in ASCII).
const MIGRATION_LOCK: i64 = 0x7377_7964;

/// Brings the database to [`VERSION`]; returns how many migrations this
/// call applied (0 when another node did, or nothing was missing).
pub async fn migrate(client: &mut Client) -> Result<usize, StoreError> {
    let tx = client.transaction().await.map_err(super::db)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(super::db)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS switchyard_schema (
             version     integer PRIMARY KEY,
             name        text NOT NULL,
             applied_at  timestamptz NOT NULL DEFAULT now()
         )",
    )
    .await
    .map_err(super::db)?;
    let current: i32 = tx
        .query_one(
            "SELECT coalesce(max(version), 0) FROM switchyard_schema",
            &[],
        )
        .await
        .map_err(super::db)?
        .get(0);
    if current > VERSION {
        return Err(StoreError::Open(format!(
            "the database schema is at version {current}, newer than this binary's {VERSION}: \
             it was migrated by a newer Switchyard. Run that version (or newer) on every node; \
             a database is never migrated backwards"
        )));
    }
    let mut applied = 0;
    for (n, (name, sql)) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let version = n as i32 + 1;
        tx.batch_execute(sql).await.map_err(|e| {
            StoreError::Open(format!(
                "applying schema migration {version} ({name}): {}",
                super::describe(&e)
            ))
        })?;
        tx.execute(
            "INSERT INTO switchyard_schema (version, name) VALUES ($1, $2)",
            &[&version, name],
        )
        .await
        .map_err(super::db)?;
        tracing::info!(version, name, "schema migration applied");
        applied += 1;
    }
    tx.commit().await.map_err(super::db)?;
    Ok(applied)
}
