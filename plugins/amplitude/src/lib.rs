//! `amplitude`: turns a Keygen account event into an Amplitude HTTP V2 body
//! (`POST https://api2.amplitude.com/2/httpapi`, EU: `api.eu.amplitude.com`).
//!
//! Config:
//! ```json
//! {
//!   "api_key": "your-amplitude-project-api-key",
//!   "event_types": {"license.validation.succeeded": "License Validated"},
//!   "attributes": ["status", "expiry", "uses", "maxMachines", "platform"],
//!   "user_properties": ["email", "firstName", "lastName", "role"],
//!   "min_id_length": 5
//! }
//! ```
//! - `api_key` (required, non-empty): the project's API key, sent in the body
//!   as Amplitude requires. It comes only from the config, never the event.
//! - `event_types`: Keygen event name → Amplitude `event_type`; names not in
//!   the map are sent raw (`license.created`).
//! - `attributes`: resource attributes copied into `event_properties`
//!   (default above; present ones only). Never list secrets such as `key`.
//! - `user_properties`: resource attributes sent as
//!   `user_properties: {"$set": {...}}` (default above: the identity of a
//!   `users` resource; omitted when none is present).
//! - `min_id_length`: the shortest `user_id`/`device_id` Amplitude accepts
//!   (Amplitude's default is 5). When set it is also sent as
//!   `options.min_id_length`, exactly like the official SDK.
//!
//! Mapping, one event per body:
//! `{"api_key", "events": [{"event_type", "user_id"?, "device_id"?, "time",
//! "insert_id", "event_properties", "user_properties"?, "platform"?,
//! "library"}], "options"?}`
//! - `user_id` = the resource's `user` relationship, else `owner`, else the
//!   resource itself when it is a user.
//! - `device_id` = the machine's `fingerprint` attribute for `machine.*`
//!   events (and `platform` = its `platform` attribute).
//! - an id shorter than `min_id_length` is left out (Amplitude would reject
//!   the event); an event left with no id at all is skipped with the reason.
//! - `time` = the event time in epoch **milliseconds**, `insert_id` = the
//!   event id (Amplitude dedupes retries on it for 7 days), `library` =
//!   `switchyard/<version>` (the SDK sends `amplitude-python/<version>`).
//! - `event_properties`: the allow-listed attributes, `resource_id`,
//!   `resource_type`, `keygen_event`, and for validation events the result
//!   `meta` (`valid`, `code`, `detail`).
//! - a body of 1 MB or more (Amplitude's limit) is refused as bad input.

#![forbid(unsafe_code)]

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Map, Value, json};
use switchyard_guest::{BatchLimits, Document, Error, Event, Merged, Outcome, Plugin};

/// Amplitude's default minimum id length.
pub const DEFAULT_MIN_ID_LENGTH: usize = 5;
/// Amplitude refuses request bodies of 1 MB or more.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Most events in one HTTP V2 request.
pub const MAX_EVENTS_PER_REQUEST: u32 = 2_000;
/// The `library` field of every event.
pub const LIBRARY: &str = concat!("switchyard/", env!("CARGO_PKG_VERSION"));

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub api_key: String,
    #[serde(default)]
    pub event_types: BTreeMap<String, String>,
    #[serde(default = "default_attributes")]
    pub attributes: Vec<String>,
    #[serde(default = "default_user_properties")]
    pub user_properties: Vec<String>,
    #[serde(default)]
    pub min_id_length: Option<usize>,
}

fn default_attributes() -> Vec<String> {
    ["status", "expiry", "uses", "maxMachines", "platform"]
        .map(String::from)
        .to_vec()
}

fn default_user_properties() -> Vec<String> {
    ["email", "firstName", "lastName", "role"]
        .map(String::from)
        .to_vec()
}

pub struct Amplitude {
    config: Config,
}

/// What one Keygen event becomes: an Amplitude event, or a reason to skip.
pub enum Mapped {
    Event(Value),
    Skip(String),
}

impl Amplitude {
    fn min_id_length(&self) -> usize {
        self.config.min_id_length.unwrap_or(DEFAULT_MIN_ID_LENGTH)
    }

    /// The Amplitude event (one element of `events`) for a Keygen event.
    pub fn map(&self, event: &Event) -> Result<Mapped, Error> {
        let doc = event.document()?;
        let min = self.min_id_length();
        let long_enough = |id: &&str| id.chars().count() >= min;
        let user_id = doc.user_id().filter(long_enough);
        let device_id = if event.family() == "machine" {
            doc.attribute_str("fingerprint").filter(long_enough)
        } else {
            None
        };
        if user_id.is_none() && device_id.is_none() {
            return Ok(Mapped::Skip(format!(
                "{} event {} has no user id and no device id of at least {min} characters \
                 (Amplitude would reject it)",
                event.event_type, event.id
            )));
        }

        let mut out = Map::new();
        let event_type = self
            .config
            .event_types
            .get(&event.event_type)
            .unwrap_or(&event.event_type);
        out.insert("event_type".into(), event_type.clone().into());
        if let Some(id) = user_id {
            out.insert("user_id".into(), id.into());
        }
        if let Some(id) = device_id {
            out.insert("device_id".into(), id.into());
        }
        out.insert("time".into(), event.created_ms.into());
        out.insert("insert_id".into(), event.id.clone().into());
        out.insert(
            "event_properties".into(),
            Value::Object(self.event_properties(event, &doc)),
        );
        let set = select(&doc, &self.config.user_properties);
        if !set.is_empty() {
            out.insert("user_properties".into(), json!({ "$set": set }));
        }
        if event.family() == "machine"
            && let Some(platform) = doc.attribute_str("platform")
        {
            out.insert("platform".into(), platform.into());
        }
        out.insert("library".into(), LIBRARY.into());
        Ok(Mapped::Event(Value::Object(out)))
    }

    fn event_properties(&self, event: &Event, doc: &Document) -> Map<String, Value> {
        let mut props = select(doc, &self.config.attributes);
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

    /// The request body for a list of Amplitude events.
    pub fn body(&self, events: Vec<Value>) -> Value {
        let mut body = json!({"api_key": self.config.api_key, "events": events});
        if let Some(n) = self.config.min_id_length {
            body["options"] = json!({"min_id_length": n});
        }
        body
    }
}

/// The named attributes present (non-null) in the resource.
fn select(doc: &Document, names: &[String]) -> Map<String, Value> {
    let attributes = doc.attributes();
    names
        .iter()
        .filter_map(|n| {
            attributes
                .get(n)
                .filter(|v| !v.is_null())
                .map(|v| (n.clone(), v.clone()))
        })
        .collect()
}

impl Plugin for Amplitude {
    type Config = Config;

    fn new(config: Config) -> Result<Self, Error> {
        if config.api_key.trim().is_empty() {
            return Err(Error::bad_config(
                "`api_key` is empty: set it to the Amplitude project's API key",
            ));
        }
        if config.min_id_length == Some(0) {
            return Err(Error::bad_config(
                "`min_id_length` must be a positive integer",
            ));
        }
        if let Some((from, _)) = config
            .event_types
            .iter()
            .find(|(_, to)| to.trim().is_empty())
        {
            return Err(Error::bad_config(format!(
                "`event_types` maps {from:?} to an empty name"
            )));
        }
        Ok(Amplitude { config })
    }

    fn handle(&mut self, event: &Event) -> Result<Outcome, Error> {
        let amplitude_event = match self.map(event)? {
            Mapped::Event(e) => e,
            Mapped::Skip(reason) => return Ok(Outcome::Skip(reason)),
        };
        let outcome = Outcome::json(&self.body(vec![amplitude_event]))?;
        if let Outcome::Replace(r) = &outcome
            && r.body.len() >= MAX_BODY_BYTES
        {
            // Permanent: this event will never fit (contract 0.2.0 `rejected`).
            return Err(Error::rejected(format!(
                "event {} ({}) would be a {}-byte Amplitude request, over Amplitude's 1 MB \
                     limit; list fewer `attributes`/`user_properties` or put the redact plugin \
                     in front",
                event.id,
                event.event_type,
                r.body.len()
            )));
        }
        Ok(outcome)
    }

    /// Amplitude HTTP V2's limits: at most 2,000 events and under 1 MB per
    /// request (one event alone must also fit in 1 MB).
    fn batch_limits(&self) -> Option<BatchLimits> {
        Some(BatchLimits {
            max_events: MAX_EVENTS_PER_REQUEST,
            max_bytes: (MAX_BODY_BYTES - 1024) as u64,
            max_item_bytes: (MAX_BODY_BYTES - 1024) as u64,
        })
    }

    /// `{"api_key", "events": [...], "options"?}`: the events of every
    /// item, in order, as amplitude-analytics' HTTP V2 request carries them.
    /// An item that is not an Amplitude body is refused.
    fn merge(&mut self, items: Vec<Vec<u8>>) -> Result<Merged, Error> {
        let mut events: Vec<Value> = Vec::with_capacity(items.len());
        let mut refused = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let parsed = serde_json::from_slice::<Value>(item)
                .ok()
                .and_then(|mut v| match v.get_mut("events").map(Value::take) {
                    Some(Value::Array(a)) => Some(a),
                    _ => None,
                });
            match parsed {
                Some(e) => events.extend(e),
                None => refused.push((i, "not an Amplitude request body".to_string())),
            }
        }
        let mut merged = Merged::json(&self.body(events))?;
        for (i, reason) in refused {
            merged.refuse(i, reason);
        }
        Ok(merged)
    }
}

switchyard_guest::export!(Amplitude);

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
    const FINGERPRINT: &str = "4a:9c:2e:71:b3:d5:8f:06:1e:7a:c2:94:5b:3d:e8:10";

    fn plugin(config: Value) -> Amplitude {
        switchyard_guest::configure::<Amplitude>(&config.to_string()).unwrap()
    }

    fn default_plugin() -> Amplitude {
        plugin(json!({"api_key": "amp_key"}))
    }

    /// Runs the plugin on a fixture; returns (body, the one event).
    fn run(p: &mut Amplitude, fixture: &str) -> (Value, Value) {
        let event = event_from_json(fixture).unwrap();
        match p.handle(&event).unwrap() {
            Outcome::Replace(r) => {
                assert_eq!(r.content_type, "application/json");
                assert!(r.headers.is_empty(), "the key travels in the body");
                let body: Value = serde_json::from_slice(&r.body).unwrap();
                assert_eq!(body["api_key"], "amp_key");
                let events = body["events"].as_array().unwrap();
                assert_eq!(events.len(), 1);
                let e = events[0].clone();
                assert_eq!(e["insert_id"], json!(event.id));
                assert_eq!(e["time"], json!(event.created_ms));
                assert!(e["time"].is_i64());
                assert_eq!(
                    e["library"],
                    json!(format!("switchyard/{}", env!("CARGO_PKG_VERSION")))
                );
                (body, e)
            }
            other => panic!("expected Replace, got {other:?}"),
        }
    }

    #[test]
    fn user_created_sets_user_properties() {
        let (body, e) = run(&mut default_plugin(), USER_CREATED);
        assert!(
            body.get("options").is_none(),
            "options only when configured"
        );
        assert_eq!(e["event_type"], "user.created");
        assert_eq!(e["user_id"], USER);
        assert!(e.get("device_id").is_none());
        assert_eq!(e["time"], 1_714_564_692_402_i64); // 2024-05-01T11:58:12.402Z
        assert_eq!(
            e["user_properties"],
            json!({"$set": {"email": "ada@acme.example", "firstName": "Ada",
                            "lastName": "Lovelace", "role": "user"}})
        );
        assert_eq!(e["event_properties"]["resource_type"], "users");
    }

    #[test]
    fn license_created() {
        let (_, e) = run(&mut default_plugin(), LICENSE_CREATED);
        assert_eq!(e["event_type"], "license.created");
        assert_eq!(e["user_id"], USER);
        assert_eq!(e["time"], 1_714_564_800_118_i64);
        assert_eq!(
            e["event_properties"],
            json!({"resource_id": LICENSE, "resource_type": "licenses",
                   "keygen_event": "license.created", "status": "ACTIVE",
                   "expiry": "2025-05-01T12:00:00.000Z", "uses": 3, "maxMachines": 5})
        );
        assert!(
            e.get("user_properties").is_none(),
            "a license has no user attributes"
        );
        assert!(e.get("platform").is_none());
    }

    #[test]
    fn validations_carry_the_result() {
        let (_, e) = run(&mut default_plugin(), VALIDATION_SUCCEEDED);
        assert_eq!(e["event_type"], "license.validation.succeeded");
        let p = &e["event_properties"];
        assert_eq!(
            (&p["valid"], &p["code"], &p["detail"]),
            (&json!(true), &json!("VALID"), &json!("is valid"))
        );
        let (_, e) = run(&mut default_plugin(), VALIDATION_FAILED);
        assert_eq!(e["event_properties"]["valid"], false);
        assert_eq!(e["event_properties"]["code"], "FINGERPRINT_SCOPE_MISMATCH");
    }

    #[test]
    fn expiring_soon_and_expired() {
        let (_, e) = run(&mut default_plugin(), EXPIRING_SOON);
        assert_eq!(e["event_type"], "license.expiring-soon");
        assert!(e["event_properties"].get("valid").is_none());
        let (_, e) = run(&mut default_plugin(), EXPIRED);
        assert_eq!(e["event_type"], "license.expired");
        assert_eq!(e["event_properties"]["status"], "EXPIRED");
    }

    #[test]
    fn machine_created_has_device_id_and_platform() {
        let (_, e) = run(&mut default_plugin(), MACHINE_CREATED);
        assert_eq!(e["event_type"], "machine.created");
        assert_eq!(e["user_id"], USER);
        assert_eq!(e["device_id"], FINGERPRINT);
        assert_eq!(e["platform"], "macOS");
    }

    #[test]
    fn machine_without_owner_uses_device_id_only() {
        let mut doc: Value = serde_json::from_str(MACHINE_CREATED).unwrap();
        doc["payload"]["data"]["relationships"]["owner"] = json!({"data": null});
        let (_, e) = run(&mut default_plugin(), &doc.to_string());
        assert!(e.get("user_id").is_none());
        assert_eq!(e["device_id"], FINGERPRINT);
    }

    #[test]
    fn no_usable_id_is_skipped_with_a_reason() {
        let mut doc: Value = serde_json::from_str(LICENSE_CREATED).unwrap();
        let rels = doc["payload"]["data"]["relationships"]
            .as_object_mut()
            .unwrap();
        rels.insert("owner".into(), json!({"data": null}));
        rels.insert("user".into(), json!({"data": null}));
        let event = event_from_json(&doc.to_string()).unwrap();
        match default_plugin().handle(&event).unwrap() {
            Outcome::Skip(reason) => assert!(reason.contains("no user id"), "{reason}"),
            other => panic!("expected Skip, got {other:?}"),
        }
        // Ids shorter than min_id_length count as no id.
        let short = Event::new(
            "machine.created",
            br#"{"data":{"id":"m1","type":"machines","attributes":{"fingerprint":"abcd"},
                 "relationships":{"owner":{"data":{"type":"users","id":"u1"}}}}}"#
                .to_vec(),
        );
        assert!(matches!(
            default_plugin().handle(&short).unwrap(),
            Outcome::Skip(_)
        ));
        let mut lenient = plugin(json!({"api_key": "amp_key", "min_id_length": 2}));
        let (body, e) = run(
            &mut lenient,
            &json!({"event": "machine.created", "id": "e",
            "created": "1970-01-01T00:00:00Z",
            "payload": serde_json::from_slice::<Value>(&short.payload).unwrap()})
            .to_string(),
        );
        assert_eq!(body["options"], json!({"min_id_length": 2}));
        assert_eq!(
            (&e["user_id"], &e["device_id"]),
            (&json!("u1"), &json!("abcd"))
        );
    }

    #[test]
    fn event_type_mapping_and_attribute_lists() {
        let mut p = plugin(json!({
            "api_key": "amp_key",
            "event_types": {"license.validation.succeeded": "License Validated"},
            "attributes": ["name"],
            "user_properties": ["status"]
        }));
        let (_, e) = run(&mut p, VALIDATION_SUCCEEDED);
        assert_eq!(e["event_type"], "License Validated");
        assert_eq!(e["event_properties"]["name"], "Acme Corp — Pro (annual)");
        assert!(e["event_properties"].get("status").is_none());
        assert_eq!(e["user_properties"], json!({"$set": {"status": "ACTIVE"}}));
        let (_, e) = run(&mut p, LICENSE_CREATED);
        assert_eq!(
            e["event_type"], "license.created",
            "unmapped names stay raw"
        );
    }

    #[test]
    fn oversized_body_is_refused() {
        let mut doc: Value = serde_json::from_str(LICENSE_CREATED).unwrap();
        doc["payload"]["data"]["attributes"]["metadata"] = json!({"blob": "x".repeat(1024 * 1024)});
        let event = event_from_json(&doc.to_string()).unwrap();
        let mut p = plugin(json!({"api_key": "k", "attributes": ["metadata"]}));
        let e = p.handle(&event).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Rejected, "permanent: never retried");
        assert!(e.message.contains("1 MB"), "{e}");
    }

    #[test]
    fn merge_concatenates_events_in_order_and_refuses_foreign_items() {
        let mut p = plugin(json!({"api_key": "k", "min_id_length": 1}));
        let mut items = Vec::new();
        let mut expected = Vec::new();
        for fixture in [USER_CREATED, LICENSE_CREATED, VALIDATION_SUCCEEDED] {
            let Outcome::Replace(r) = p.handle(&event_from_json(fixture).unwrap()).unwrap() else {
                panic!("expected a body")
            };
            let body: Value = serde_json::from_slice(&r.body).unwrap();
            expected.extend(body["events"].as_array().unwrap().clone());
            items.push(r.body);
        }
        items.insert(1, b"{\"batch\": []}".to_vec());
        let m = p.merge(items).unwrap();
        assert_eq!(m.refused.len(), 1);
        assert_eq!(m.refused[0].0, 1);
        let body: Value = serde_json::from_slice(&m.body).unwrap();
        assert_eq!(
            body,
            json!({"api_key": "k", "events": expected, "options": {"min_id_length": 1}})
        );
        let limits = p.batch_limits().unwrap();
        assert_eq!(limits.max_events, 2000);
        assert!(limits.max_bytes < 1024 * 1024);
    }

    #[test]
    fn config_is_checked() {
        let err = |c: Value| {
            switchyard_guest::configure::<Amplitude>(&c.to_string())
                .err()
                .unwrap()
        };
        assert!(err(json!({})).message.contains("api_key"));
        assert!(err(json!({"api_key": ""})).message.contains("api_key"));
        assert!(
            err(json!({"api_key": "k", "min_id_length": 0}))
                .message
                .contains("min_id_length")
        );
        assert_eq!(
            err(json!({"api_key": "k", "min_id_length": -1})).kind,
            ErrorKind::BadConfig
        );
        assert_eq!(
            err(json!({"api_key": "k", "event_types": {"a": ""}})).kind,
            ErrorKind::BadConfig
        );
        assert_eq!(
            err(json!({"api_key": "k", "apikey": "k"})).kind,
            ErrorKind::BadConfig
        );
    }

    #[test]
    fn bad_payload_is_bad_input() {
        let e = default_plugin()
            .handle(&Event::new("license.created", b"[]".to_vec()))
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::BadInput);
    }
}
