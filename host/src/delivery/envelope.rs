//! The default delivery body: Keygen's webhook-event envelope, so existing
//! Keygen webhook handlers accept Switchyard deliveries unchanged.

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
    t.format(&f)
        .unwrap_or_else(|_| "1970-01-01T00:00:00.000Z".into())
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

// The envelope as borrowed structs: serialized straight to bytes, no
// intermediate `serde_json::Value` tree (this runs once per delivery).
#[derive(serde::Serialize)]
struct Envelope<'a> {
    data: Data<'a>,
}

#[derive(serde::Serialize)]
struct Data<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    attributes: Attributes<'a>,
    relationships: Relationships<'a>,
    links: SelfLink,
    meta: Meta<'a>,
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Attributes<'a> {
    endpoint: &'a str,
    api_version: &'static str,
    payload: &'a str,
    event: &'a str,
    status: &'static str,
    last_response_code: Option<u16>,
    last_response_body: Option<&'a str>,
    created: &'a str,
    updated: &'a str,
}

#[derive(serde::Serialize)]
struct Relationships<'a> {
    account: AccountRel<'a>,
}

#[derive(serde::Serialize)]
struct AccountRel<'a> {
    data: TypeId<'a>,
    links: Related,
}

#[derive(serde::Serialize)]
struct TypeId<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    id: &'a str,
}

#[derive(serde::Serialize)]
struct Related {
    related: String,
}

#[derive(serde::Serialize)]
struct SelfLink {
    #[serde(rename = "self")]
    self_: String,
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Meta<'a> {
    idempotency_token: &'a str,
}

/// Builds the body. The payload is embedded as a JSON *string*, as Keygen does.
pub fn keygen_envelope(i: &EnvelopeInput<'_>) -> Vec<u8> {
    let id = i.delivery_id.to_string();
    let created = rfc3339(i.created_ms);
    let payload = String::from_utf8_lossy(i.payload);
    let body = Envelope {
        data: Data {
            id: &id,
            kind: "webhook-events",
            attributes: Attributes {
                endpoint: i.endpoint_url,
                api_version: "1.7",
                payload: &payload,
                event: i.event_type,
                status: "DELIVERING",
                last_response_code: None,
                last_response_body: None,
                created: &created,
                updated: &created,
            },
            relationships: Relationships {
                account: AccountRel {
                    data: TypeId {
                        kind: "accounts",
                        id: i.account,
                    },
                    links: Related {
                        related: format!("/v1/accounts/{}", i.account),
                    },
                },
            },
            links: SelfLink {
                self_: format!("/v1/accounts/{}/webhook-events/{id}", i.account),
            },
            meta: Meta {
                idempotency_token: &id,
            },
        },
    };
    let mut out = Vec::with_capacity(i.payload.len() + i.payload.len() / 8 + 600);
    // Serializing plain structs of strings cannot fail.
    let _ = serde_json::to_writer(&mut out, &body);
    out
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
        assert_eq!(
            v["data"]["attributes"]["created"],
            "2023-11-14T22:13:20.123Z"
        );
        let inner: serde_json::Value =
            serde_json::from_str(v["data"]["attributes"]["payload"].as_str().unwrap()).unwrap();
        assert_eq!(inner["data"]["id"], "l1");
        assert_eq!(v["data"]["meta"]["idempotencyToken"], id.to_string());
        assert_eq!(v["data"]["relationships"]["account"]["data"]["id"], "acct");
    }
}
