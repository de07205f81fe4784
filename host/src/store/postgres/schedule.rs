//! Scheduled events inside a transaction: the lock on a schedule key (two
//! nodes moving the same key at once take turns), the event a key names,
//! and a cancellation — the deliveries leave the queue and become
//! `cancelled`, the schedule records when and by which event.

use deadpool_postgres::Transaction;
use uuid::Uuid;

use super::PgErr;
use crate::store::{CANCEL_MARGIN_MS, Cancelled};

/// Serialises writers of one account's schedule key until the
/// transaction ends.
pub async fn lock_key(tx: &Transaction<'_>, account: &str, key: &str) -> Result<(), PgErr> {
    let stmt = tx
        .prepare_cached("SELECT pg_advisory_xact_lock(hashtextextended($1 || E'\\n' || $2, 7))")
        .await?;
    tx.execute(&stmt, &[&account, &key]).await?;
    Ok(())
}

/// The event last scheduled under `key`.
pub async fn key_event(
    tx: &Transaction<'_>,
    account: &str,
    key: &str,
) -> Result<Option<Uuid>, PgErr> {
    let stmt = tx
        .prepare_cached("SELECT event FROM schedule_keys WHERE account = $1 AND key = $2")
        .await?;
    Ok(tx
        .query_opt(&stmt, &[&account, &key])
        .await?
        .map(|r| r.get(0)))
}

/// Cancels `event` if it is a pending scheduled event of `account` (not
/// cancelled, due more than [`CANCEL_MARGIN_MS`] from now).
pub async fn cancel(
    tx: &Transaction<'_>,
    account: &str,
    event: Uuid,
    replaced_by: Option<Uuid>,
    now: i64,
) -> Result<Option<Cancelled>, PgErr> {
    let stmt = tx
        .prepare_cached(
            "SELECT due_ms, key, cancelled_ms FROM schedules
             WHERE event = $1 AND account = $2 FOR UPDATE",
        )
        .await?;
    let Some(row) = tx.query_opt(&stmt, &[&event, &account]).await? else {
        return Ok(None);
    };
    let (due_ms, key, cancelled): (i64, Option<String>, Option<i64>) =
        (row.get(0), row.get(1), row.get(2));
    if cancelled.is_some() || due_ms <= now + CANCEL_MARGIN_MS {
        return Ok(None);
    }
    let reason = match replaced_by {
        Some(by) => format!("replaced by event {by} (same schedule_key)"),
        None => "cancelled".to_string(),
    };
    let stmt = tx
        .prepare_cached(
            "UPDATE deliveries SET status = 'cancelled', due_ms = NULL, updated_ms = $2,
                 reason = $3, output_body = NULL, output_type = NULL, output_headers = NULL,
                 claimed_by = NULL, claimed_until = NULL
             WHERE event = $1 AND status IN ('delivering', 'failing')",
        )
        .await?;
    let n = tx.execute(&stmt, &[&event, &now, &reason]).await?;
    let stmt = tx
        .prepare_cached("UPDATE schedules SET cancelled_ms = $2, replaced_by = $3 WHERE event = $1")
        .await?;
    tx.execute(&stmt, &[&event, &now, &replaced_by]).await?;
    Ok(Some(Cancelled {
        event,
        due_ms,
        key,
        deliveries: n as usize,
    }))
}
