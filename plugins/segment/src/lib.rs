//! `segment`: turns a Keygen account event into a Segment HTTP Tracking API
//! call, delivered as a `/v1/batch` body so one endpoint URL
//! (`https://api.segment.io/v1/batch`) serves every call type.
//!
//! Config:
//! ```json
//! {
//!   "write_key": "your-source-write-key",
//!   "naming": "object_action",
//!   "attributes": ["status", "expiry", "uses", "maxMachines", "platform"]
//! }
//! ```
//! - `write_key` (required, non-empty): sent as
//!   `Authorization: Basic base64("<write_key>:")`. It comes only from the
//!   config, never from the event.
//! - `naming`: `"object_action"` (default; Segment's recommended style:
//!   `license.validation.succeeded` → `License Validation Succeeded`) or
//!   `"raw"` (the Keygen event name as is).
//! - `attributes`: the resource attributes copied into `track` properties
//!   (default above; present ones only). Never list secrets such as `key`.
//!
//! Mapping:
//! - `user.created` / `user.updated` → `identify`; traits from the user
//!   resource with Segment's reserved names: `email`, `firstName`,
//!   `lastName`, `name` (Keygen `fullName`), `createdAt` (`created`), plus
//!   `role`, `status` and `metadata`.
//! - every other event → `track` with `event` named per `naming` and
//!   `properties`: `resource_id`, `resource_type`, `keygen_event`, the
//!   allow-listed attributes, and for validation events the result `meta`
//!   (`valid`, `code`, `detail`).
//! - `userId` = the resource's `user` relationship, else `owner`, else the
//!   resource itself when it is a user; otherwise `anonymousId` = the resource
//!   id. A payload with neither is refused (bad input).
//! - `messageId` = the event id (Segment dedupes retries on it), `timestamp` =
//!   the event time (RFC 3339, i.e. ISO 8601), `context.library` =
//!   `{"name": "switchyard", "version": <crate version>}`.
//! - The body is `{"batch": [call]}`. Unlike the Python SDK we send no
//!   `sentAt` (the body is produced once and resent unchanged on retries, so a
//!   `sentAt` would go stale and make Segment shift `timestamp` by the retry
//!   delay) and no body `writeKey` (the Basic auth header carries it; keeping
//!   it out of the body keeps it out of stored delivery bodies).
//! - A call over Segment's 32 KB per-call limit is refused with a bad-input
//!   error instead of being sent to be rejected.

#![forbid(unsafe_code)]

use serde::Deserialize;
use serde_json::{Map, Value, json};
use switchyard_guest::{
    BatchLimits, Document, Error, Event, Merged, Outcome, Plugin, Replacement, base64,
};

/// Segment's per-call limit (32 KB).
pub const MAX_CALL_BYTES: usize = 32 * 1024;
/// Bytes of calls in one batch request (analytics-python's
/// `BATCH_SIZE_LIMIT`; Segment's limit is 500 KB per request).
pub const MAX_BATCH_BYTES: usize = 475_000;

/// The library named in `context.library`.
pub const LIBRARY_NAME: &str = "switchyard";
pub const LIBRARY_VERSION: &str = env!("CARGO_PKG_VERSION");

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub write_key: String,
    #[serde(default)]
    pub naming: Naming,
    #[serde(default = "default_attributes")]
    pub attributes: Vec<String>,
}

fn default_attributes() -> Vec<String> {
    ["status", "expiry", "uses", "maxMachines", "platform"]
        .map(String::from)
        .to_vec()
}

/// How `track` events are named.
#[derive(Debug, Default, Deserialize, PartialEq, Eq, Clone, Copy)]
#[serde(rename_all = "snake_case")]
pub enum Naming {
    /// `License Validation Succeeded`.
    #[default]
    ObjectAction,
    /// `license.validation.succeeded`.
    Raw,
}

/// `license.expiring-soon` → `License Expiring Soon`.
pub fn object_action(event_type: &str) -> String {
    event_type
        .split(['.', '-', '_'])
        .filter(|w| !w.is_empty())
        .map(|w| {
            let mut chars = w.chars();
            match chars.next() {
                Some(first) => first.to_uppercase().chain(chars).collect::<String>(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

pub struct Segment {
    config: Config,
    authorization: String,
}

impl Segment {
    /// The Segment call (one element of `batch`) for an event.
    pub fn call(&self, event: &Event) -> Result<Value, Error> {
        let doc = event.document()?;
        let mut call = Map::new();
        match (doc.user_id(), doc.resource_id()) {
            (Some(user), _) => call.insert("userId".into(), user.into()),
            (None, Some(resource)) => call.insert("anonymousId".into(), resource.into()),
            (None, None) => {
                return Err(Error::bad_input(format!(
                    "event {}: the payload has no user/owner relationship and no data.id, \
                     so the Segment call would have neither userId nor anonymousId",
                    event.id
                )));
            }
        };
        if is_identify(&event.event_type) {
            call.insert("type".into(), "identify".into());
            call.insert("traits".into(), Value::Object(traits(&doc)));
        } else {
            call.insert("type".into(), "track".into());
            let name = match self.config.naming {
                Naming::ObjectAction => object_action(&event.event_type),
                Naming::Raw => event.event_type.clone(),
            };
            call.insert("event".into(), name.into());
            call.insert(
                "properties".into(),
                Value::Object(self.properties(event, &doc)),
            );
        }
        call.insert("messageId".into(), event.id.clone().into());
        call.insert("timestamp".into(), event.created.clone().into());
        call.insert(
            "context".into(),
            json!({"library": {"name": LIBRARY_NAME, "version": LIBRARY_VERSION}}),
        );
        Ok(Value::Object(call))
    }

    fn properties(&self, event: &Event, doc: &Document) -> Map<String, Value> {
        let mut props = Map::new();
        let attributes = doc.attributes();
        for name in &self.config.attributes {
            if let Some(v) = attributes.get(name) {
                props.insert(name.clone(), v.clone());
            }
        }
        if let Some(id) = doc.resource_id() {
            props.insert("resource_id".into(), id.into());
        }
        if let Some(ty) = doc.resource_type() {
            props.insert("resource_type".into(), ty.into());
        }
        props.insert("keygen_event".into(), event.event_type.clone().into());
        if event.action().starts_with("validation.") || event.action() == "validated" {
            let meta = doc.meta();
            for key in ["valid", "code", "detail"] {
                if let Some(v) = meta.get(key) {
                    props.insert(key.into(), v.clone());
                }
            }
        }
        props
    }
}

/// Events mapped to `identify` rather than `track`.
pub fn is_identify(event_type: &str) -> bool {
    matches!(event_type, "user.created" | "user.updated")
}

/// Segment traits from a Keygen user resource (reserved trait names where
/// Segment has one).
fn traits(doc: &Document) -> Map<String, Value> {
    let a = doc.attributes();
    let mut traits = Map::new();
    let mut copy = |from: &str, to: &str| {
        if let Some(v) = a.get(from).filter(|v| !v.is_null()) {
            traits.insert(to.into(), v.clone());
        }
    };
    copy("email", "email");
    copy("firstName", "firstName");
    copy("lastName", "lastName");
    copy("fullName", "name");
    copy("created", "createdAt");
    copy("role", "role");
    copy("status", "status");
    copy("metadata", "metadata");
    traits
}

impl Plugin for Segment {
    type Config = Config;

    fn new(config: Config) -> Result<Self, Error> {
        if config.write_key.trim().is_empty() {
            return Err(Error::bad_config(
                "`write_key` is empty: set it to the Segment source's write key",
            ));
        }
        let authorization = base64::basic_auth(&config.write_key, "");
        Ok(Segment {
            config,
            authorization,
        })
    }

    fn handle(&mut self, event: &Event) -> Result<Outcome, Error> {
        let call = self.call(event)?;
        let call = serde_json::to_vec(&call)
            .map_err(|e| Error::internal(format!("cannot serialize the Segment call: {e}")))?;
        if call.len() > MAX_CALL_BYTES {
            // Permanent: this event will never fit (contract 0.2.0 `rejected`).
            return Err(Error::rejected(format!(
                "event {} ({}) would be a {}-byte Segment call, over Segment's 32 KB per-call \
                 limit; list fewer `attributes` or put the redact plugin in front",
                event.id,
                event.event_type,
                call.len()
            )));
        }
        let mut body = Vec::with_capacity(call.len() + 12);
        body.extend_from_slice(b"{\"batch\":[");
        body.extend_from_slice(&call);
        body.extend_from_slice(b"]}");
        Ok(Outcome::Replace(Replacement {
            body,
            content_type: "application/json".into(),
            headers: vec![("authorization".into(), self.authorization.clone())],
        }))
    }

    /// Segment's limits, as analytics-python applies them: a batch request
    /// under 500 KB (475,000 bytes of calls, leaving room for the wrapper),
    /// 32 KB per call. Segment sets no count per batch; 2,500 calls of
    /// 190 bytes fill 475,000 bytes.
    fn batch_limits(&self) -> Option<BatchLimits> {
        Some(BatchLimits {
            max_events: 2_500,
            max_bytes: MAX_BATCH_BYTES as u64,
            max_item_bytes: MAX_CALL_BYTES as u64 + 12,
        })
    }

    /// `{"batch": [call, ...]}`: the calls of every item, in order, as
    /// analytics-python's `/v1/batch` request carries them (it adds
    /// `sentAt`, which Segment sets itself when absent). An item that is
    /// not a Segment body, or whose call is over 32 KB, is refused.
    fn merge(&mut self, items: Vec<Vec<u8>>) -> Result<Merged, Error> {
        let mut calls: Vec<Value> = Vec::with_capacity(items.len());
        let mut refused = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let parsed: Option<Vec<Value>> =
                serde_json::from_slice::<Value>(item)
                    .ok()
                    .and_then(|mut v| match v.get_mut("batch").map(Value::take) {
                        Some(Value::Array(a)) => Some(a),
                        _ => None,
                    });
            match parsed {
                None => refused.push((i, "not a Segment batch body".to_string())),
                Some(_) if item.len() > MAX_CALL_BYTES + 12 => refused.push((
                    i,
                    format!(
                        "a {}-byte Segment call, over Segment's 32 KB per-call limit",
                        item.len() - 12
                    ),
                )),
                Some(c) => calls.extend(c),
            }
        }
        let mut merged = Merged::json(&json!({ "batch": calls }))?
            .with_header("authorization", self.authorization.clone());
        for (i, reason) in refused {
            merged.refuse(i, reason);
        }
        Ok(merged)
    }
}

switchyard_guest::export!(Segment);

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_guest::ErrorKind;
    use switchyard_guest::testing::event_from_json;

    const USER_CREATED: &str = include_str!("../../../examples/events/user.created.json");
    const LICENSE_CREATED: &str = include_str!("../../../examples/events/license.created.json");
    const VALIDATION_SUCCEEDED: &str =
        include_str!("../../../examples/events/license.validation.succeeded.json");
    const VALIDATION_FAILED: &str =
        include_str!("../../../examples/events/license.validation.failed.json");
    const EXPIRING_SOON: &str = include_str!("../../../examples/events/license.expiring-soon.json");
    const EXPIRED: &str = include_str!("../../../examples/events/license.expired.json");
    const MACHINE_CREATED: &str = include_str!("../../../examples/events/machine.created.json");

    const USER: &str = "a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d";
    const LICENSE: &str = "9f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a";
    const MACHINE: &str = "5e6f7a8b-9c0d-4e1f-a2b3-c4d5e6f7a8b9";

    fn plugin(config: Value) -> Segment {
        switchyard_guest::configure::<Segment>(&config.to_string()).unwrap()
    }

    fn default_plugin() -> Segment {
        plugin(json!({"write_key": "wk_test"}))
    }

    /// Runs the plugin on a fixture; returns (batch body, headers, the call).
    fn run(p: &mut Segment, fixture: &str) -> (Value, Vec<(String, String)>, Value) {
        let event = event_from_json(fixture).unwrap();
        match p.handle(&event).unwrap() {
            Outcome::Replace(r) => {
                assert_eq!(r.content_type, "application/json");
                let body: Value = serde_json::from_slice(&r.body).unwrap();
                let batch = body["batch"].as_array().unwrap();
                assert_eq!(batch.len(), 1);
                let call = batch[0].clone();
                // Common fields of every call.
                assert_eq!(call["messageId"], json!(event.id));
                assert_eq!(call["timestamp"], json!(event.created));
                assert_eq!(
                    call["context"]["library"],
                    json!({"name": "switchyard", "version": env!("CARGO_PKG_VERSION")})
                );
                assert!(call.get("userId").is_some() != call.get("anonymousId").is_some());
                (body, r.headers, call)
            }
            other => panic!("expected Replace, got {other:?}"),
        }
    }

    #[test]
    fn basic_auth_header_from_write_key() {
        let (_, headers, _) = run(&mut default_plugin(), LICENSE_CREATED);
        // base64("wk_test:")
        assert_eq!(
            headers,
            vec![("authorization".into(), "Basic d2tfdGVzdDo=".into())]
        );
    }

    #[test]
    fn user_created_is_identify_with_reserved_traits() {
        let (body, _, call) = run(&mut default_plugin(), USER_CREATED);
        assert_eq!(body.as_object().unwrap().len(), 1, "only the batch wrapper");
        assert_eq!(call["type"], "identify");
        assert_eq!(call["userId"], USER);
        assert_eq!(
            call["traits"],
            json!({
                "email": "ada@acme.example", "firstName": "Ada", "lastName": "Lovelace",
                "name": "Ada Lovelace", "createdAt": "2024-05-01T11:58:12.317Z",
                "role": "user", "status": "ACTIVE",
                "metadata": {"crmId": "0035g00000XyZab", "plan": "pro"}
            })
        );
        assert!(call.get("event").is_none() && call.get("properties").is_none());
    }

    #[test]
    fn user_updated_is_identify_too() {
        let fixture = USER_CREATED.replace("\"user.created\"", "\"user.updated\"");
        let (_, _, call) = run(&mut default_plugin(), &fixture);
        assert_eq!(call["type"], "identify");
    }

    #[test]
    fn license_created_is_track_by_owner() {
        let (_, _, call) = run(&mut default_plugin(), LICENSE_CREATED);
        assert_eq!(call["type"], "track");
        assert_eq!(call["event"], "License Created");
        assert_eq!(call["userId"], USER);
        assert_eq!(call["messageId"], "1c8f2a3b-4d5e-4f60-9b7c-8d9e0f1a2b3c");
        assert_eq!(call["timestamp"], "2024-05-01T12:00:00.118Z");
        assert_eq!(
            call["properties"],
            json!({
                "resource_id": LICENSE, "resource_type": "licenses",
                "keygen_event": "license.created",
                "status": "ACTIVE", "expiry": "2025-05-01T12:00:00.000Z", "uses": 3,
                "maxMachines": 5
            })
        );
        assert!(
            call["properties"].get("key").is_none(),
            "the license key is never sent"
        );
    }

    #[test]
    fn validation_succeeded_carries_the_result() {
        let (_, _, call) = run(&mut default_plugin(), VALIDATION_SUCCEEDED);
        assert_eq!(call["event"], "License Validation Succeeded");
        let p = &call["properties"];
        assert_eq!(
            (&p["valid"], &p["code"], &p["detail"]),
            (&json!(true), &json!("VALID"), &json!("is valid"))
        );
        assert_eq!(p["keygen_event"], "license.validation.succeeded");
    }

    #[test]
    fn validation_failed_carries_the_result() {
        let (_, _, call) = run(&mut default_plugin(), VALIDATION_FAILED);
        assert_eq!(call["event"], "License Validation Failed");
        let p = &call["properties"];
        assert_eq!(p["valid"], false);
        assert_eq!(p["code"], "FINGERPRINT_SCOPE_MISMATCH");
        assert!(p["detail"].as_str().unwrap().contains("not activated"));
    }

    #[test]
    fn expiring_soon_and_expired() {
        let (_, _, call) = run(&mut default_plugin(), EXPIRING_SOON);
        assert_eq!(call["event"], "License Expiring Soon");
        assert!(
            call["properties"].get("valid").is_none(),
            "no validation meta outside validations"
        );
        let (_, _, call) = run(&mut default_plugin(), EXPIRED);
        assert_eq!(call["event"], "License Expired");
        assert_eq!(call["properties"]["status"], "EXPIRED");
        assert_eq!(call["userId"], USER);
    }

    #[test]
    fn machine_created_by_owner_with_platform() {
        let (_, _, call) = run(&mut default_plugin(), MACHINE_CREATED);
        assert_eq!(call["event"], "Machine Created");
        assert_eq!(call["userId"], USER);
        assert_eq!(call["properties"]["platform"], "macOS");
        assert_eq!(call["properties"]["resource_id"], MACHINE);
        assert_eq!(call["properties"]["resource_type"], "machines");
    }

    #[test]
    fn raw_naming_and_custom_attributes() {
        let mut p =
            plugin(json!({"write_key": "k", "naming": "raw", "attributes": ["name", "metadata"]}));
        let (_, _, call) = run(&mut p, VALIDATION_SUCCEEDED);
        assert_eq!(call["event"], "license.validation.succeeded");
        assert_eq!(call["properties"]["name"], "Acme Corp — Pro (annual)");
        assert_eq!(call["properties"]["metadata"]["tier"], "pro");
        assert!(call["properties"].get("status").is_none());
    }

    #[test]
    fn anonymous_id_from_the_resource_when_no_user() {
        let mut doc: Value = serde_json::from_str(LICENSE_CREATED).unwrap();
        let rels = doc["payload"]["data"]["relationships"]
            .as_object_mut()
            .unwrap();
        rels.insert("owner".into(), json!({"data": null}));
        rels.insert("user".into(), json!({"data": null}));
        let (_, _, call) = run(&mut default_plugin(), &doc.to_string());
        assert_eq!(call["anonymousId"], LICENSE);
        assert!(call.get("userId").is_none());
    }

    #[test]
    fn neither_user_nor_resource_id_is_refused() {
        let event = Event::new(
            "license.created",
            br#"{"data":{"type":"licenses"}}"#.to_vec(),
        );
        let e = default_plugin().handle(&event).unwrap_err();
        assert_eq!(e.kind, ErrorKind::BadInput);
        assert!(e.message.contains("neither userId nor anonymousId"), "{e}");
    }

    #[test]
    fn call_over_32_kb_is_refused() {
        let mut doc: Value = serde_json::from_str(LICENSE_CREATED).unwrap();
        doc["payload"]["data"]["attributes"]["metadata"] = json!({"blob": "x".repeat(33 * 1024)});
        let event = event_from_json(&doc.to_string()).unwrap();
        let mut p = plugin(json!({"write_key": "k", "attributes": ["metadata"]}));
        let e = p.handle(&event).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Rejected, "permanent: never retried");
        assert!(e.message.contains("32 KB"), "{e}");
        // Without the big attribute the same event goes through.
        assert!(matches!(
            default_plugin().handle(&event),
            Ok(Outcome::Replace(_))
        ));
    }

    #[test]
    fn merge_concatenates_calls_in_order_and_refuses_oversized_items() {
        let mut p = default_plugin();
        let mut items = Vec::new();
        let mut expected = Vec::new();
        for fixture in [USER_CREATED, LICENSE_CREATED, VALIDATION_SUCCEEDED] {
            let (body, _, call) = run(&mut p, fixture);
            expected.push(call);
            items.push(serde_json::to_vec(&body).unwrap());
        }
        let mut big = b"{\"batch\":[{\"blob\":\"".to_vec();
        big.extend(std::iter::repeat_n(b'x', 33 * 1024));
        big.extend(b"\"}]}");
        items.insert(2, big);
        let m = p.merge(items).unwrap();
        assert_eq!(m.refused.len(), 1);
        assert_eq!(m.refused[0].0, 2);
        assert!(m.refused[0].1.contains("32 KB"));
        assert_eq!(
            m.headers,
            vec![("authorization".into(), "Basic d2tfdGVzdDo=".into())]
        );
        let body: Value = serde_json::from_slice(&m.body).unwrap();
        assert_eq!(body, json!({"batch": expected}));
        assert_eq!(p.batch_limits().unwrap().max_bytes, 475_000);
    }

    #[test]
    fn config_is_checked() {
        let err = |c: Value| {
            switchyard_guest::configure::<Segment>(&c.to_string())
                .err()
                .unwrap()
        };
        assert!(err(json!({})).message.contains("write_key"));
        assert!(err(json!({"write_key": " "})).message.contains("write_key"));
        assert_eq!(
            err(json!({"write_key": "k", "naming": "camel"})).kind,
            ErrorKind::BadConfig
        );
        assert_eq!(
            err(json!({"write_key": "k", "writekey": "k"})).kind,
            ErrorKind::BadConfig
        );
    }

    #[test]
    fn bad_payload_is_bad_input() {
        let e = default_plugin()
            .handle(&Event::new("license.created", b"{".to_vec()))
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::BadInput);
    }

    #[test]
    fn object_action_names() {
        assert_eq!(
            object_action("license.validation.succeeded"),
            "License Validation Succeeded"
        );
        assert_eq!(
            object_action("license.expiring-soon"),
            "License Expiring Soon"
        );
        assert_eq!(
            object_action("second-factor.created"),
            "Second Factor Created"
        );
        assert_eq!(
            object_action("machine.heartbeat.ping"),
            "Machine Heartbeat Ping"
        );
    }
}
