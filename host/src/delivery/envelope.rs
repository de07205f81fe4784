//! The default delivery body: Keygen's webhook-event envelope, so existing
//! Keygen webhook handlers accept Switchyard deliveries unchanged.

use serde_json::json;
use uuid::Uuid;

/// The id receivers dedupe on: stable per (event, endpoint), the same on
/// every attempt and on manual retries (`webhook-id`, `data.id`,
/// `meta.idempotencyToken`).
pub fn delivery_id(event: Uuid, endpoint_uid: Uuid) -> Uuid {
    Uuid::new_v5(&event, endpoint_uid.as_bytes())
}

/// RFC 3339 (UTC, milliseconds) of a Unix-ms time.
pub fn rfc3339(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let f = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    t.format(&f).unwrap_or_else(|_| "1970-01-01T00:00:00.000Z".into())
}

/// Everything the envelope needs.
pub struct EnvelopeInput<'a> {
    pub delivery_id: Uuid,
    pub account: &'a str,
    pub endpoint_url: &'a str,
    pub event_type: &'a str,
    pub created_ms: i64,
    /// The resource document (JSON text).
    pub payload: &'a [u8],
}

/// Builds the body. The payload is embedded as a JSON *string*, as Keygen does.
pub fn keygen_envelope(i: &EnvelopeInput<'_>) -> Vec<u8> {
    let id = i.delivery_id.to_string();
    let created = rfc3339(i.created_ms);
    let payload = String::from_utf8_lossy(i.payload);
    let body = json!({
        "data": {
            "id": id,
            "type": "webhook-events",
            "attributes": {
                "endpoint": i.endpoint_url,
                "apiVersion": "1.7",
                "payload": payload,
                "event": i.event_type,
                "status": "DELIVERING",
                "lastResponseCode": null,
                "lastResponseBody": null,
                "created": created,
                "updated": created,
            },
            "relationships": {
                "account": {
                    "data": {"type": "accounts", "id": i.account},
                    "links": {"related": format!("/v1/accounts/{}", i.account)},
                }
            },
            "links": {"self": format!("/v1/accounts/{}/webhook-events/{id}", i.account)},
            "meta": {"idempotencyToken": id},
        }
    });
    serde_json::to_vec(&body).expect("a JSON value always serializes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_has_keygen_shape() {
        let ev = Uuid::now_v7();
        let ep = Uuid::new_v4();
        let id = delivery_id(ev, ep);
        assert_eq!(id, delivery_id(ev, ep));
        let body = keygen_envelope(&EnvelopeInput {
            delivery_id: id,
            account: "acct",
            endpoint_url: "https://example.com/h",
            event_type: "license.created",
            created_ms: 1_700_000_000_123,
            payload: br#"{"data":{"id":"l1","type":"licenses"}}"#,
        });
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["data"]["type"], "webhook-events");
        assert_eq!(v["data"]["attributes"]["event"], "license.created");
        assert_eq!(v["data"]["attributes"]["created"], "2023-11-14T22:13:20.123Z");
        let inner: serde_json::Value =
            serde_json::from_str(v["data"]["attributes"]["payload"].as_str().unwrap()).unwrap();
        assert_eq!(inner["data"]["id"], "l1");
        assert_eq!(v["data"]["meta"]["idempotencyToken"], id.to_string());
        assert_eq!(v["data"]["relationships"]["account"]["data"]["id"], "acct");
    }
}
