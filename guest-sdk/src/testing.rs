//! Helpers for testing plugins natively on sample events.
//!
//! [`event_from_json`] reads an event in the ingest API's native form — the
//! shape of the files in `examples/events/`:
//!
//! ```json
//! {"event": "license.created", "id": "<uuid>", "created": "2024-05-01T12:00:00.000Z",
//!  "payload": {"data": {"id": "…", "type": "licenses", "attributes": {…}}}}
//! ```
//!
//! ```
//! let event = switchyard_guest::testing::event_from_json(
//!     r#"{"event": "user.created", "id": "e1", "created": "2024-05-01T12:00:00.250Z",
//!         "payload": {"data": {"id": "u1", "type": "users"}}}"#,
//! ).unwrap();
//! assert_eq!(event.event_type, "user.created");
//! assert_eq!(event.created_ms, 1_714_564_800_250);
//! ```

use serde_json::Value;

use crate::{Error, Event};

/// Builds an [`Event`] from an ingest-form JSON text (`event`, `payload`,
/// optional `id`, `created`, `account`, `endpoint`). The payload may be an
/// object or a JSON string holding one.
pub fn event_from_json(text: &str) -> Result<Event, Error> {
    let v: Value = serde_json::from_str(text)
        .map_err(|e| Error::bad_input(format!("sample event is not valid JSON: {e}")))?;
    let mut event = Event::new("", Vec::new());
    event.event_type = v
        .get("event")
        .and_then(Value::as_str)
        .ok_or_else(|| Error::bad_input("sample event needs a string `event` (the event type)"))?
        .to_string();
    event.payload = match v.get("payload") {
        Some(Value::String(s)) => s.clone().into_bytes(),
        Some(p @ Value::Object(_)) => serde_json::to_vec(p)
            .map_err(|e| Error::internal(format!("cannot serialize payload: {e}")))?,
        _ => return Err(Error::bad_input("sample event needs an object `payload`")),
    };
    let text_field = |name: &str| v.get(name).and_then(Value::as_str).map(str::to_string);
    if let Some(id) = text_field("id") {
        event.id = id;
    }
    if let Some(account) = text_field("account") {
        event.account = account;
    }
    if let Some(endpoint) = text_field("endpoint") {
        event.endpoint = endpoint;
    }
    if let Some(created) = text_field("created") {
        event.created_ms = rfc3339_to_ms(&created)
            .ok_or_else(|| Error::bad_input(format!("`created` {created:?} is not RFC 3339")))?;
        event.created = created;
    }
    Ok(event)
}

/// The shape of a JSON value: the same nesting and member names, with every
/// leaf replaced by its JSON type name (`"null"`, `"bool"`, `"integer"`,
/// `"float"`, `"string"`). Comparing shapes checks that two producers use the
/// same field names, types and nesting regardless of the values.
///
/// ```
/// use serde_json::json;
/// use switchyard_guest::testing::shape;
/// assert_eq!(shape(&json!({"time": 1714641342531_i64, "ids": ["a"], "x": null})),
///            json!({"time": "integer", "ids": ["string"], "x": "null"}));
/// ```
pub fn shape(value: &Value) -> Value {
    match value {
        Value::Null => "null".into(),
        Value::Bool(_) => "bool".into(),
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer".into(),
        Value::Number(_) => "float".into(),
        Value::String(_) => "string".into(),
        Value::Array(items) => Value::Array(items.iter().map(shape).collect()),
        Value::Object(map) => {
            Value::Object(map.iter().map(|(k, v)| (k.clone(), shape(v))).collect())
        }
    }
}

/// Milliseconds since the Unix epoch of an RFC 3339 timestamp
/// (`2024-05-01T12:00:00Z`, `2024-05-01T14:00:00.5+02:00`); `None` when the
/// text is not one. Fractions beyond milliseconds are truncated.
pub fn rfc3339_to_ms(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = b.get(r)?;
        if part.is_empty() || !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(part).ok()?.parse().ok()
    };
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut i = 19;
    let mut millis = 0;
    if b[i] == b'.' {
        let start = i + 1;
        i = start;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return None;
        }
        let digits = &s[start..i.min(start + 3)];
        millis = digits.parse::<i64>().ok()? * 10_i64.pow(3 - digits.len() as u32);
    }
    let offset_minutes = match b.get(i)? {
        b'Z' | b'z' if i + 1 == b.len() => 0,
        sign @ (b'+' | b'-') if i + 6 == b.len() && b[i + 3] == b':' => {
            let m = num(i + 1..i + 3)? * 60 + num(i + 4..i + 6)?;
            if *sign == b'+' { m } else { -m }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_minutes * 60;
    Some(secs * 1000 + millis)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rfc3339() {
        assert_eq!(rfc3339_to_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(rfc3339_to_ms("2000-03-01T00:00:00Z"), Some(951_868_800_000));
        assert_eq!(
            rfc3339_to_ms("2024-05-01T12:00:00.250Z"),
            Some(1_714_564_800_250)
        );
        assert_eq!(
            rfc3339_to_ms("2024-05-01T14:00:00.250123+02:00"),
            Some(1_714_564_800_250)
        );
        assert_eq!(
            rfc3339_to_ms("2024-05-01T11:00:00.5-01:00"),
            Some(1_714_564_800_500)
        );
        assert_eq!(rfc3339_to_ms("1969-12-31T23:59:59Z"), Some(-1000));
    }

    #[test]
    fn rejects_non_rfc3339() {
        for bad in [
            "",
            "2024-05-01",
            "2024-05-01T12:00:00",
            "2024-13-01T00:00:00Z",
            "2024-05-01T12:00:00.Z",
            "2024-05-01T12:00:00Zjunk",
            "2024-05-01T12:00:00+0200",
        ] {
            assert_eq!(rfc3339_to_ms(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn reads_ingest_form() {
        let e = event_from_json(
            r#"{"event":"license.created","id":"e1","created":"1970-01-01T00:00:01Z",
                "payload":"{\"data\":{\"id\":\"l1\"}}"}"#,
        )
        .unwrap();
        assert_eq!((e.id.as_str(), e.created_ms), ("e1", 1000));
        assert_eq!(e.document().unwrap().resource_id(), Some("l1"));
        assert!(event_from_json(r#"{"payload":{}}"#).is_err());
        assert!(event_from_json(r#"{"event":"x","payload":[]}"#).is_err());
    }
}
