//! Ingest: turns a `POST /v1/accounts/{account}/events` body into an event
//! ready to store, in either accepted form — native
//! `{"event", "payload", "id"?, "created"?}` or a Keygen webhook-event
//! envelope — and rejects anything ambiguous with a JSON:API error that
//! points at the offending member. The native form may also ask for a
//! later delivery (`deliver_at` / `deliver_in`, `schedule_key`); the
//! checks against the clock and the configured cap are `schedule`'s.

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::api::ApiError;

/// Longest accepted event type / id / idempotency key.
const MAX_TYPE: usize = 128;
const MAX_ID: usize = 255;

/// A validated event, not yet stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedEvent {
    pub event_type: String,
    /// The resource document (JSON object text).
    pub payload: Vec<u8>,
    /// The producer's id, if given (dedupes like an Idempotency-Key).
    pub source_id: Option<String>,
    pub created_ms: Option<i64>,
    /// Whether the body was a Keygen webhook-event envelope.
    pub keygen_form: bool,
    /// The envelope's `data.id` (Keygen's webhook event id).
    pub keygen_event_id: Option<String>,
    /// `deliver_at` (Unix ms), native form only.
    pub deliver_at_ms: Option<i64>,
    /// `deliver_in`, native form only.
    pub deliver_in: Option<std::time::Duration>,
    /// `schedule_key`, native form only.
    pub schedule_key: Option<String>,
}

// serde's derive refuses duplicate fields, which is what we want: a body
// with two `event` members is ambiguous and must not be guessed at.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Native<'a> {
    #[serde(borrow)]
    event: Option<&'a RawValue>,
    #[serde(borrow)]
    payload: Option<&'a RawValue>,
    #[serde(borrow)]
    id: Option<&'a RawValue>,
    #[serde(borrow)]
    created: Option<&'a RawValue>,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
    #[serde(borrow)]
    deliver_at: Option<&'a RawValue>,
    #[serde(borrow)]
    deliver_in: Option<&'a RawValue>,
    #[serde(borrow)]
    schedule_key: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct KeygenData<'a> {
    #[serde(rename = "type")]
    kind: Option<String>,
    id: Option<String>,
    #[serde(borrow)]
    attributes: Option<&'a RawValue>,
    #[serde(borrow)]
    meta: Option<&'a RawValue>,
    #[allow(dead_code)]
    #[serde(borrow)]
    relationships: Option<&'a RawValue>,
    #[allow(dead_code)]
    #[serde(borrow)]
    links: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct KeygenAttributes {
    event: Option<String>,
    payload: Option<String>,
    created: Option<String>,
}

#[derive(Deserialize)]
struct KeygenMeta {
    #[serde(rename = "idempotencyToken")]
    idempotency_token: Option<String>,
}

fn bad(detail: impl Into<String>, pointer: &str) -> ApiError {
    ApiError::bad_request("Invalid event", detail, Some(pointer))
}

fn json_error(e: serde_json::Error) -> ApiError {
    let msg = e.to_string();
    if msg.contains("duplicate field") {
        return ApiError::bad_request(
            "Ambiguous event",
            format!("the body repeats a member ({msg}); send each member once"),
            None,
        );
    }
    if msg.contains("unknown field") {
        return ApiError::bad_request(
            "Invalid event",
            format!(
                "{msg}; an event is {{\"event\", \"payload\", \"id\"?, \"created\"?, \"deliver_at\" | \"deliver_in\"?, \"schedule_key\"?}} or a Keygen webhook-event envelope"
            ),
            None,
        );
    }
    ApiError::bad_request(
        "Malformed JSON",
        format!("the body is not valid JSON: {msg}"),
        None,
    )
}

fn string_member(raw: &RawValue, pointer: &str, max: usize) -> Result<String, ApiError> {
    let s: String =
        serde_json::from_str(raw.get()).map_err(|_| bad("must be a string", pointer))?;
    if s.is_empty() || s.len() > max {
        return Err(bad(format!("must be 1 to {max} characters"), pointer));
    }
    Ok(s)
}

/// Checks an event type such as `license.validation.succeeded`.
pub fn check_event_type(t: &str, pointer: &str) -> Result<(), ApiError> {
    let ok = !t.is_empty()
        && t.len() <= MAX_TYPE
        && t.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-' | '_'))
        && !t.starts_with('.')
        && !t.ends_with('.')
        && !t.contains("..");
    if ok {
        Ok(())
    } else {
        Err(bad(
            format!(
                "{t:?} is not an event type: lower-case words separated by dots, e.g. \"license.created\""
            ),
            pointer,
        ))
    }
}

/// Parses an RFC 3339 timestamp to Unix ms.
pub fn parse_time(s: &str, pointer: &str) -> Result<i64, ApiError> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map_err(|_| {
            bad(
                format!("{s:?} is not an RFC 3339 time such as \"2024-05-01T12:00:00Z\""),
                pointer,
            )
        })?;
    let ms = t.unix_timestamp_nanos() / 1_000_000;
    i64::try_from(ms).map_err(|_| bad("time out of range", pointer))
}

/// The payload must be a JSON object (a resource document).
fn check_document(text: &str, pointer: &str) -> Result<(), ApiError> {
    let trimmed = text.trim_start();
    if !trimmed.starts_with('{') {
        return Err(bad(
            "must be a JSON object: the resource document {\"data\": {...}}",
            pointer,
        ));
    }
    // Skipping a value (RawValue) does not check string escapes: a lone
    // surrogate such as "\ud800" passes it, and every plugin and receiver
    // that parses the document would then fail on every retry. Parse it.
    serde_json::from_str::<Checked>(text)
        .map_err(|e| bad(format!("is not valid JSON: {e}"), pointer))?;
    Ok(())
}

/// Walks a JSON value decoding every string (which rejects lone
/// surrogates) without building a tree: validation at parse speed, no
/// allocation per value.
struct Checked;

impl<'de> serde::Deserialize<'de> for Checked {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(CheckedVisitor)
    }
}

struct CheckedVisitor;

impl<'de> serde::de::Visitor<'de> for CheckedVisitor {
    type Value = Checked;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_str<E>(self, _: &str) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_unit<E>(self) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Checked, A::Error> {
        while seq.next_element::<Checked>()?.is_some() {}
        Ok(Checked)
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Checked, A::Error> {
        while map.next_entry::<CheckedKey, Checked>()?.is_some() {}
        Ok(Checked)
    }
}

/// Object keys, decoded (and so checked) like any string.
struct CheckedKey;

impl<'de> serde::Deserialize<'de> for CheckedKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(CheckedVisitor).map(|_| CheckedKey)
    }
}

/// Parses and validates an ingest body.
pub fn parse(body: &[u8]) -> Result<ParsedEvent, ApiError> {
    let text = std::str::from_utf8(body).map_err(|e| {
        ApiError::bad_request(
            "Malformed JSON",
            format!("the body is not UTF-8: {e}"),
            None,
        )
    })?;
    let native: Native<'_> = serde_json::from_str(text).map_err(json_error)?;
    if let Some(data) = native.data {
        if native.event.is_some() || native.payload.is_some() {
            return Err(ApiError::bad_request(
                "Ambiguous event",
                "the body has both `data` (Keygen envelope) and `event`/`payload` (native form); send one form",
                None,
            ));
        }
        if native.deliver_at.is_some()
            || native.deliver_in.is_some()
            || native.schedule_key.is_some()
        {
            return Err(ApiError::bad_request(
                "Invalid event",
                "deliver_at, deliver_in and schedule_key are members of the native form; with a Keygen envelope send the Deliver-At / Deliver-In / Schedule-Key headers",
                None,
            ));
        }
        return parse_keygen(data);
    }
    let event = native.event.ok_or_else(|| {
        bad(
            "is required: the event type, e.g. \"license.created\"",
            "/event",
        )
    })?;
    let event_type = string_member(event, "/event", MAX_TYPE)?;
    check_event_type(&event_type, "/event")?;
    let payload = native.payload.ok_or_else(|| {
        bad(
            "is required: the resource document {\"data\": {...}}",
            "/payload",
        )
    })?;
    check_document(payload.get(), "/payload")?;
    let source_id = native
        .id
        .map(|v| string_member(v, "/id", MAX_ID))
        .transpose()?;
    let created_ms = match native.created {
        None => None,
        Some(v) => Some(parse_time(&string_member(v, "/created", 64)?, "/created")?),
    };
    if native.deliver_at.is_some() && native.deliver_in.is_some() {
        return Err(ApiError::bad_request(
            "Ambiguous event",
            "give either deliver_at (a time) or deliver_in (a delay), not both",
            Some("/deliver_in"),
        ));
    }
    let deliver_at_ms = match native.deliver_at {
        None => None,
        Some(v) => Some(parse_time(
            &string_member(v, "/deliver_at", 64)?,
            "/deliver_at",
        )?),
    };
    let deliver_in = native
        .deliver_in
        .map(|v| parse_delay(&string_member(v, "/deliver_in", 64)?, "/deliver_in"))
        .transpose()?;
    let schedule_key = native
        .schedule_key
        .map(|v| {
            let k = string_member(v, "/schedule_key", MAX_ID)?;
            check_schedule_key(&k, "/schedule_key")?;
            Ok::<_, ApiError>(k)
        })
        .transpose()?;
    Ok(ParsedEvent {
        event_type,
        payload: payload.get().as_bytes().to_vec(),
        source_id,
        created_ms,
        keygen_form: false,
        keygen_event_id: None,
        deliver_at_ms,
        deliver_in,
        schedule_key,
    })
}

/// Parses a delay such as `"72h"`, `"90m"`, `"3days"` (humantime).
pub fn parse_delay(s: &str, pointer: &str) -> Result<std::time::Duration, ApiError> {
    humantime::parse_duration(s.trim()).map_err(|e| {
        bad(
            format!("{s:?} is not a delay ({e}); write e.g. \"72h\", \"90m\", \"3days\""),
            pointer,
        )
    })
}

/// Schedule keys go in URL paths (`DELETE …/scheduled/{key}`) as they
/// are: visible ASCII without `/ ? # % \\ "` or spaces, 1 to 255 characters.
pub fn check_schedule_key(k: &str, pointer: &str) -> Result<(), ApiError> {
    let ok = !k.is_empty()
        && k.len() <= MAX_ID
        && k.bytes().all(|b| {
            b.is_ascii_graphic() && !matches!(b, b'/' | b'?' | b'#' | b'%' | b'\\' | b'"')
        });
    if ok {
        Ok(())
    } else {
        Err(bad(
            format!(
                "{k:?} is not a schedule key: 1 to {MAX_ID} visible ASCII characters without / ? # % \\ \" or spaces, e.g. \"license:9f8e:expiring-soon\""
            ),
            pointer,
        ))
    }
}

fn parse_keygen(data: &RawValue) -> Result<ParsedEvent, ApiError> {
    let d: KeygenData<'_> =
        serde_json::from_str(data.get()).map_err(|e| bad(format!("{e}"), "/data"))?;
    if d.kind.as_deref() != Some("webhook-events") {
        return Err(bad(
            "must be \"webhook-events\" for a Keygen envelope",
            "/data/type",
        ));
    }
    let attrs = d
        .attributes
        .ok_or_else(|| bad("is required", "/data/attributes"))?;
    let a: KeygenAttributes =
        serde_json::from_str(attrs.get()).map_err(|e| bad(format!("{e}"), "/data/attributes"))?;
    let event_type = a
        .event
        .ok_or_else(|| bad("is required", "/data/attributes/event"))?;
    check_event_type(&event_type, "/data/attributes/event")?;
    let payload = a.payload.ok_or_else(|| {
        bad(
            "is required: the resource document as a JSON string",
            "/data/attributes/payload",
        )
    })?;
    let doc: &RawValue = serde_json::from_str(&payload).map_err(|e| {
        bad(
            format!("is not a JSON document: {e}"),
            "/data/attributes/payload",
        )
    })?;
    check_document(doc.get(), "/data/attributes/payload")?;
    let token = match d.meta {
        Some(m) => {
            serde_json::from_str::<KeygenMeta>(m.get())
                .map_err(|e| bad(format!("{e}"), "/data/meta"))?
                .idempotency_token
        }
        None => None,
    };
    let keygen_event_id = d.id.clone();
    let source_id = token.or(d.id);
    if let Some(id) = &source_id {
        if id.is_empty() || id.len() > MAX_ID {
            return Err(bad(
                format!("must be 1 to {MAX_ID} characters"),
                "/data/meta/idempotencyToken",
            ));
        }
    }
    let created_ms = a
        .created
        .map(|c| parse_time(&c, "/data/attributes/created"))
        .transpose()?;
    if let Some(id) = &keygen_event_id {
        if id.is_empty() || id.len() > MAX_ID {
            return Err(bad(format!("must be 1 to {MAX_ID} characters"), "/data/id"));
        }
    }
    Ok(ParsedEvent {
        event_type,
        payload: doc.get().as_bytes().to_vec(),
        source_id,
        created_ms,
        keygen_form: true,
        keygen_event_id,
        deliver_at_ms: None,
        deliver_in: None,
        schedule_key: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn native_form() {
        let e = parse(br#"{"event":"license.created","payload":{"data":{"id":"1"}},"id":"evt_1","created":"2024-01-02T03:04:05Z"}"#).unwrap();
        assert_eq!(e.event_type, "license.created");
        assert_eq!(e.payload, br#"{"data":{"id":"1"}}"#);
        assert_eq!(e.source_id.as_deref(), Some("evt_1"));
        assert_eq!(e.created_ms, Some(1_704_164_645_000));
    }

    #[test]
    fn keygen_envelope_form() {
        let body = serde_json::json!({"data": {
            "id": "wh1", "type": "webhook-events",
            "attributes": {"event": "user.created", "payload": "{\"data\":{\"id\":\"u1\",\"type\":\"users\"}}",
                           "created": "2024-01-02T03:04:05.123Z", "status": "DELIVERING"},
            "relationships": {"account": {"data": {"type": "accounts", "id": "a"}}},
            "meta": {"idempotencyToken": "tok123"}}});
        let e = parse(body.to_string().as_bytes()).unwrap();
        assert_eq!(e.event_type, "user.created");
        assert_eq!(e.payload, br#"{"data":{"id":"u1","type":"users"}}"#);
        assert_eq!(e.source_id.as_deref(), Some("tok123"));
        assert_eq!(e.created_ms, Some(1_704_164_645_123));
    }

    fn pointer_of(body: &[u8]) -> Option<String> {
        parse(body).unwrap_err().pointer
    }

    #[test]
    fn errors_point_at_the_member() {
        assert_eq!(pointer_of(br#"{"payload":{}}"#).as_deref(), Some("/event"));
        assert_eq!(
            pointer_of(br#"{"event":"x.y"}"#).as_deref(),
            Some("/payload")
        );
        assert_eq!(
            pointer_of(br#"{"event":"X Y","payload":{}}"#).as_deref(),
            Some("/event")
        );
        assert_eq!(
            pointer_of(br#"{"event":"a.b","payload":[1]}"#).as_deref(),
            Some("/payload")
        );
        assert_eq!(
            pointer_of(br#"{"event":"a.b","payload":{},"created":"yesterday"}"#).as_deref(),
            Some("/created")
        );
        assert_eq!(
            pointer_of(br#"{"event":7,"payload":{}}"#).as_deref(),
            Some("/event")
        );
    }

    #[test]
    fn schedule_members() {
        let e = parse(br#"{"event":"license.expiring-soon","payload":{},"deliver_in":"72h","schedule_key":"license:1:expiring-soon"}"#).unwrap();
        assert_eq!(
            e.deliver_in,
            Some(std::time::Duration::from_secs(72 * 3600))
        );
        assert_eq!(e.schedule_key.as_deref(), Some("license:1:expiring-soon"));
        let e =
            parse(br#"{"event":"a.b","payload":{},"deliver_at":"2030-01-01T00:00:00Z"}"#).unwrap();
        assert_eq!(e.deliver_at_ms, Some(1_893_456_000_000));
        for (body, pointer) in [
            (&br#"{"event":"a.b","payload":{},"deliver_at":"tomorrow"}"#[..], Some("/deliver_at")),
            (br#"{"event":"a.b","payload":{},"deliver_in":"soon"}"#, Some("/deliver_in")),
            (br#"{"event":"a.b","payload":{},"deliver_in":72}"#, Some("/deliver_in")),
            (br#"{"event":"a.b","payload":{},"deliver_in":"1h","deliver_at":"2030-01-01T00:00:00Z"}"#, Some("/deliver_in")),
            (br#"{"event":"a.b","payload":{},"schedule_key":"a/b"}"#, Some("/schedule_key")),
            (br#"{"event":"a.b","payload":{},"schedule_key":""}"#, Some("/schedule_key")),
        ] {
            assert_eq!(pointer_of(body).as_deref(), pointer, "{}", String::from_utf8_lossy(body));
        }
        let env = serde_json::json!({"data": {"id": "wh1", "type": "webhook-events",
            "attributes": {"event": "user.created", "payload": "{}"}}, "deliver_in": "1h"});
        assert!(parse(env.to_string().as_bytes()).is_err());
    }

    #[test]
    fn refuses_ambiguity_and_garbage() {
        let dup = parse(br#"{"event":"a.b","event":"c.d","payload":{}}"#).unwrap_err();
        assert!(dup.detail.contains("repeats"), "{}", dup.detail);
        assert!(parse(br#"{"event":"a.b","payload":{},"data":{}}"#).is_err());
        assert!(parse(b"\xff\xfe").is_err());
        assert!(parse(b"{").is_err());
        assert!(parse(br#"{"event":"a.b","payload":{},"extra":1}"#).is_err());
        let deep = format!(
            "{{\"event\":\"a.b\",\"payload\":{}{}}}",
            "[".repeat(10_000),
            "]".repeat(10_000)
        );
        assert!(parse(deep.as_bytes()).is_err());
        assert!(parse(br#"{"event":"a.b","payload":{"n":1e999}}"#).is_err());
        // A lone surrogate escape passes RawValue but no real JSON parser.
        let e = parse(br#"{"event":"a.b","payload":{"s":"\ud800"}}"#).unwrap_err();
        assert_eq!(e.pointer.as_deref(), Some("/payload"));
    }
}
