//! Bulk loading for `store copy`: a chunk of backend-neutral items in one
//! transaction, with the same multi-row statements as group commit.

use super::{PgErr, PgStore, rows};
use crate::store::StoreError;
use crate::store::copy::Item;

impl PgStore {
    /// Whether any event is stored (a copy goes into an empty database).
    pub async fn has_events(&self) -> Result<bool, StoreError> {
        let rows = self
            .query("SELECT EXISTS (SELECT 1 FROM events)", &[])
            .await?;
        Ok(rows.first().is_some_and(|r| r.get::<_, bool>(0)))
    }

    /// Stores `items` in one transaction. Deliveries keep their status and
    /// due time, unclaimed: the first node to start takes them.
    pub async fn import(&self, items: Vec<Item>) -> Result<(), StoreError> {
        let r = async {
            let mut c = self.sh.pool.get().await?;
            let tx = c.transaction().await?;
            for item in &items {
                match item {
                    Item::Event(id, e) => {
                        tx.execute(
                            "INSERT INTO events (id, account, event_type, created_ms, source_id, payload, endpoints)
                             VALUES ($1, $2, $3, $4, $5, $6, $7)",
                            &[id, &e.account, &e.event_type, &e.created_ms, &e.source_id, &e.payload,
                              &serde_json::json!(e.endpoints)],
                        )
                        .await?;
                    }
                    Item::Delivery(ev, ep, d) => {
                        let (ob, ot, oh) = rows::output_columns(d.output.as_ref());
                        tx.execute(
                            "INSERT INTO deliveries (event, ep, account, endpoint, status, attempts, due_ms,
                                 last_status, last_error, updated_ms, reason, output_body, output_type,
                                 output_headers)
                             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
                            &[ev, ep, &d.account, &d.endpoint, &d.status.as_str(), &(d.attempts as i32),
                              &d.due_ms, &d.last_status.map(i32::from), &d.last_error, &d.updated_ms,
                              &d.reason, &ob, &ot, &oh],
                        )
                        .await?;
                    }
                    Item::Attempt(ev, ep, n, a) => {
                        tx.execute(
                            "INSERT INTO attempts (event, ep, n, at_ms, status, error, latency_us, response,
                                 batch_id, batch_size)
                             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                            &[ev, ep, &(*n as i32), &a.at_ms, &a.status.map(i32::from), &a.error,
                              &(a.latency_us.min(i64::MAX as u64) as i64), &a.response,
                              &a.batch.map(|b| uuid::Uuid::from_bytes(b.id)),
                              &a.batch.map(|b| b.size.min(i32::MAX as u32) as i32)],
                        )
                        .await?;
                    }
                    Item::Idempotency { account, key, event, at_ms } => {
                        tx.execute(
                            "INSERT INTO idempotency (account, key, event, at_ms) VALUES ($1, $2, $3, $4)",
                            &[account, key, event, at_ms],
                        )
                        .await?;
                    }
                    Item::Schedule(ev, account, s) => {
                        let replaced = s.replaced_by.map(uuid::Uuid::from_bytes);
                        tx.execute(
                            "INSERT INTO schedules (event, account, due_ms, key, cancelled_ms, replaced_by)
                             VALUES ($1, $2, $3, $4, $5, $6)",
                            &[ev, account, &s.due_ms, &s.key, &s.cancelled_ms, &replaced],
                        )
                        .await?;
                    }
                    Item::ScheduleKey { account, key, event } => {
                        tx.execute(
                            "INSERT INTO schedule_keys (account, key, event) VALUES ($1, $2, $3)",
                            &[account, key, event],
                        )
                        .await?;
                    }
                    Item::ApiEndpoint(e) => {
                        let doc = serde_json::to_value(e).map_err(|e| PgErr { msg: e.to_string(), retry: false })?;
                        tx.execute(
                            "INSERT INTO api_endpoints (account, id, body) VALUES ($1, $2, $3)
                             ON CONFLICT (account, id) DO UPDATE SET body = excluded.body",
                            &[&e.account, &e.id, &doc],
                        )
                        .await?;
                    }
                    Item::EndpointState(ep, s) => {
                        let doc = serde_json::to_value(s).map_err(|e| PgErr { msg: e.to_string(), retry: false })?;
                        tx.execute(
                            "INSERT INTO endpoint_state (ep, disabled_reason, state) VALUES ($1, $2, $3)
                             ON CONFLICT (ep) DO UPDATE SET disabled_reason = excluded.disabled_reason,
                                 state = excluded.state",
                            &[ep, &s.disabled_reason, &doc],
                        )
                        .await?;
                    }
                }
            }
            tx.commit().await?;
            Ok::<_, PgErr>(())
        }
        .await;
        self.noted(r)
    }
}
