//! Records to and from table rows: the columns of `deliveries`, `events`,
//! `attempts`, and the JSON columns (endpoint state, API endpoints).

use tokio_postgres::Row;

use crate::store::{
    AttemptRecord, BatchRef, DeliveryRecord, DeliveryStatus, EventRecord, StoreError, StoredOutput,
};

/// The `deliveries` columns [`delivery`] reads, in order.
pub const DELIVERY_COLUMNS: &str = "account, endpoint, status, attempts, due_ms, last_status, \
     last_error, updated_ms, reason, output_body, output_type, output_headers";

pub fn corrupt(what: impl Into<String>, detail: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        what: what.into(),
        detail: detail.to_string(),
    }
}

/// A delivery record from a row selected with [`DELIVERY_COLUMNS`] first.
pub fn delivery(row: &Row) -> Result<DeliveryRecord, StoreError> {
    let status: String = row.get(2);
    let status = DeliveryStatus::parse(&status)
        .ok_or_else(|| corrupt("delivery", format!("unknown status {status:?}")))?;
    let body: Option<Vec<u8>> = row.get(9);
    let output = match body {
        None => None,
        Some(body) => {
            let headers: Option<serde_json::Value> = row.get(11);
            Some(StoredOutput {
                body,
                content_type: row.get::<_, Option<String>>(10).unwrap_or_default(),
                headers: match headers {
                    None => Vec::new(),
                    Some(h) => {
                        serde_json::from_value(h).map_err(|e| corrupt("output headers", e))?
                    }
                },
            })
        }
    };
    Ok(DeliveryRecord {
        account: row.get(0),
        endpoint: row.get(1),
        status,
        attempts: row.get::<_, i32>(3).max(0) as u32,
        due_ms: row.get(4),
        last_status: row.get::<_, Option<i32>>(5).map(|s| s as u16),
        last_error: row.get(6),
        updated_ms: row.get(7),
        reason: row.get(8),
        output,
    })
}

/// The output columns of a record: body, content type, headers.
pub fn output_columns(
    o: Option<&StoredOutput>,
) -> (Option<Vec<u8>>, Option<String>, Option<serde_json::Value>) {
    match o {
        None => (None, None, None),
        Some(o) => (
            Some(o.body.clone()),
            Some(o.content_type.clone()),
            Some(serde_json::json!(o.headers)),
        ),
    }
}

/// An event from `account, event_type, created_ms, source_id, payload, endpoints`.
pub fn event(row: &Row) -> Result<EventRecord, StoreError> {
    let endpoints: serde_json::Value = row.get(5);
    Ok(EventRecord {
        account: row.get(0),
        event_type: row.get(1),
        created_ms: row.get(2),
        source_id: row.get(3),
        payload: row.get(4),
        endpoints: serde_json::from_value(endpoints).map_err(|e| corrupt("event endpoints", e))?,
    })
}

/// An attempt from `at_ms, status, error, latency_us, response, batch_id, batch_size`.
pub fn attempt(row: &Row) -> AttemptRecord {
    let batch_id: Option<uuid::Uuid> = row.get(5);
    AttemptRecord {
        at_ms: row.get(0),
        status: row.get::<_, Option<i32>>(1).map(|s| s as u16),
        error: row.get(2),
        latency_us: row.get::<_, i64>(3).max(0) as u64,
        response: row.get(4),
        batch: batch_id.map(|id| BatchRef {
            id: *id.as_bytes(),
            size: row.get::<_, Option<i32>>(6).unwrap_or(0).max(0) as u32,
        }),
    }
}

pub fn to_json<T: serde::Serialize>(what: &str, v: &T) -> Result<serde_json::Value, StoreError> {
    serde_json::to_value(v).map_err(|e| corrupt(what, e))
}

pub fn from_json<T: serde::de::DeserializeOwned>(
    what: &str,
    v: serde_json::Value,
) -> Result<T, StoreError> {
    serde_json::from_value(v).map_err(|e| corrupt(what, e))
}
