//! `redact`: removes or masks values of the event's resource document before
//! delivery, for endpoints that must not receive PII. It answers with a
//! rewritten payload, so it works in front of any other plugin of an
//! endpoint's chain (segment, amplitude, …) and in front of the default
//! Keygen envelope, which then wraps the redacted document.
//!
//! Config:
//! ```json
//! {
//!   "paths": ["/data/attributes/email", "/data/attributes/metadata/*", "/included/*/attributes/email"],
//!   "mode": "remove",
//!   "mask": "[REDACTED]"
//! }
//! ```
//! - `paths` (required, at least one): JSON pointers (RFC 6901, `~0` = `~`,
//!   `~1` = `/`) into the resource document, where a segment that is exactly
//!   `*` matches every member of an object or every element of an array. An
//!   invalid pointer (not starting with `/`, a bad `~` escape, the whole
//!   document `""`) rejects the configuration. A path that matches nothing in
//!   an event is not an error.
//! - `mode`: `"remove"` (default) deletes the member (or array element);
//!   `"mask"` replaces every matched non-null value — string, number, bool,
//!   object or array alike — by the `mask` string, so neither a value nor its
//!   shape leaks; `null` stays `null` (there is nothing to hide).
//! - `mask`: the replacement text in mask mode (default `[REDACTED]`).
//!
//! When nothing matched, the plugin answers `pass` (the payload is unchanged).

#![forbid(unsafe_code)]

use serde::Deserialize;
use serde_json::Value;
use switchyard_guest::{Error, Event, Outcome, Plugin};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub paths: Vec<String>,
    #[serde(default)]
    pub mode: Mode,
    #[serde(default = "default_mask")]
    pub mask: String,
}

fn default_mask() -> String {
    "[REDACTED]".into()
}

#[derive(Debug, Default, Deserialize, PartialEq, Eq, Clone, Copy)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Remove,
    Mask,
}

/// One segment of a wildcard pointer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// A member name or array index (unescaped).
    Key(String),
    /// `*`: every member / element.
    Any,
}

/// A JSON pointer whose segments may be `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WildPointer(pub Vec<Segment>);

impl WildPointer {
    /// Parses `/a/*/b~1c`. The whole-document pointer `""` is refused
    /// (there is nothing sensible to remove or mask there).
    pub fn parse(text: &str) -> Result<Self, String> {
        let Some(rest) = text.strip_prefix('/') else {
            return Err(format!(
                "{text:?} is not a JSON pointer: it must start with '/'"
            ));
        };
        rest.split('/')
            .map(|raw| {
                if raw == "*" {
                    return Ok(Segment::Any);
                }
                let mut out = String::with_capacity(raw.len());
                let mut chars = raw.chars();
                while let Some(c) = chars.next() {
                    match c {
                        '~' => match chars.next() {
                            Some('0') => out.push('~'),
                            Some('1') => out.push('/'),
                            _ => {
                                return Err(format!(
                                    "{text:?} has an invalid escape in {raw:?}: \
                                     '~' must be followed by 0 or 1"
                                ));
                            }
                        },
                        c => out.push(c),
                    }
                }
                Ok(Segment::Key(out))
            })
            .collect::<Result<_, _>>()
            .map(WildPointer)
    }
}

/// What to do with a matched value.
#[derive(Debug, Clone, Copy)]
enum Action<'a> {
    Remove,
    Mask(&'a str),
}

/// Index of an array element named by a pointer segment (`0`, `12`; no
/// leading zeros, as RFC 6901 says).
fn index(key: &str) -> Option<usize> {
    if key.len() > 1 && key.starts_with('0') {
        return None;
    }
    key.parse().ok()
}

/// Masks one value; true when it changed.
fn mask(value: &mut Value, with: &str) -> bool {
    if value.is_null() || value.as_str() == Some(with) {
        return false;
    }
    *value = Value::String(with.to_string());
    true
}

/// Applies `action` at `path` below `value`; returns how many values changed.
fn apply(value: &mut Value, path: &[Segment], action: Action) -> usize {
    let Some((head, tail)) = path.split_first() else {
        return 0;
    };
    if !tail.is_empty() {
        return match (value, head) {
            (Value::Object(map), Segment::Key(k)) => {
                map.get_mut(k).map_or(0, |child| apply(child, tail, action))
            }
            (Value::Array(items), Segment::Key(k)) => index(k)
                .and_then(|i| items.get_mut(i))
                .map_or(0, |child| apply(child, tail, action)),
            (Value::Object(map), Segment::Any) => map
                .values_mut()
                .map(|child| apply(child, tail, action))
                .sum(),
            (Value::Array(items), Segment::Any) => items
                .iter_mut()
                .map(|child| apply(child, tail, action))
                .sum(),
            _ => 0,
        };
    }
    match (value, head, action) {
        (Value::Object(map), Segment::Key(k), Action::Remove) => {
            usize::from(map.remove(k).is_some())
        }
        (Value::Object(map), Segment::Key(k), Action::Mask(m)) => {
            map.get_mut(k).map_or(0, |v| usize::from(mask(v, m)))
        }
        (Value::Array(items), Segment::Key(k), Action::Remove) => match index(k) {
            Some(i) if i < items.len() => {
                items.remove(i);
                1
            }
            _ => 0,
        },
        (Value::Array(items), Segment::Key(k), Action::Mask(m)) => index(k)
            .and_then(|i| items.get_mut(i))
            .map_or(0, |v| usize::from(mask(v, m))),
        (Value::Object(map), Segment::Any, Action::Remove) => {
            let n = map.len();
            map.clear();
            n
        }
        (Value::Array(items), Segment::Any, Action::Remove) => {
            let n = items.len();
            items.clear();
            n
        }
        (Value::Object(map), Segment::Any, Action::Mask(m)) => map
            .values_mut()
            .filter_map(|v| mask(v, m).then_some(()))
            .count(),
        (Value::Array(items), Segment::Any, Action::Mask(m)) => items
            .iter_mut()
            .filter_map(|v| mask(v, m).then_some(()))
            .count(),
        _ => 0,
    }
}

pub struct Redact {
    paths: Vec<WildPointer>,
    mode: Mode,
    mask: String,
}

impl Redact {
    /// Redacts a document in place; returns how many values changed.
    pub fn redact(&self, doc: &mut Value) -> usize {
        let action = match self.mode {
            Mode::Remove => Action::Remove,
            Mode::Mask => Action::Mask(&self.mask),
        };
        self.paths.iter().map(|p| apply(doc, &p.0, action)).sum()
    }
}

impl Plugin for Redact {
    type Config = Config;

    fn new(config: Config) -> Result<Self, Error> {
        if config.paths.is_empty() {
            return Err(Error::bad_config(
                "`paths` is empty: list the JSON pointers to redact, \
                 e.g. [\"/data/attributes/email\"]",
            ));
        }
        let paths = config
            .paths
            .iter()
            .enumerate()
            .map(|(i, p)| {
                WildPointer::parse(p).map_err(|e| Error::bad_config(format!("paths[{i}]: {e}")))
            })
            .collect::<Result<_, _>>()?;
        Ok(Redact {
            paths,
            mode: config.mode,
            mask: config.mask,
        })
    }

    fn handle(&mut self, event: &Event) -> Result<Outcome, Error> {
        let mut doc = event.document()?.value;
        if self.redact(&mut doc) == 0 {
            return Ok(Outcome::Pass);
        }
        Outcome::rewrite_json(&doc)
    }
}

switchyard_guest::export!(Redact);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
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
    const ALL: [&str; 7] = [
        USER_CREATED,
        LICENSE_CREATED,
        VALIDATION_SUCCEEDED,
        VALIDATION_FAILED,
        EXPIRING_SOON,
        EXPIRED,
        MACHINE_CREATED,
    ];

    fn plugin(config: Value) -> Redact {
        switchyard_guest::configure::<Redact>(&config.to_string()).unwrap()
    }

    fn rewritten(p: &mut Redact, fixture: &str) -> Value {
        let event = event_from_json(fixture).unwrap();
        match p.handle(&event).unwrap() {
            Outcome::Rewrite(bytes) => serde_json::from_slice(&bytes).unwrap(),
            other => panic!("expected Rewrite, got {other:?}"),
        }
    }

    fn payload(fixture: &str) -> Value {
        serde_json::from_str::<Value>(fixture).unwrap()["payload"].clone()
    }

    #[test]
    fn removes_pii_from_a_user() {
        let mut p = plugin(json!({"paths": [
            "/data/attributes/email", "/data/attributes/fullName",
            "/data/attributes/firstName", "/data/attributes/lastName", "/data/attributes/metadata/*"
        ]}));
        let doc = rewritten(&mut p, USER_CREATED);
        let a = &doc["data"]["attributes"];
        for gone in ["email", "fullName", "firstName", "lastName"] {
            assert!(a.get(gone).is_none(), "{gone} was not removed");
        }
        assert_eq!(
            a["metadata"],
            json!({}),
            "members under metadata removed, object kept"
        );
        assert_eq!(a["role"], "user", "other attributes stay");
        // Everything else of the document is untouched.
        let mut expected = payload(USER_CREATED);
        let ea = expected["data"]["attributes"].as_object_mut().unwrap();
        for gone in ["email", "fullName", "firstName", "lastName"] {
            ea.remove(gone);
        }
        ea.insert("metadata".into(), json!({}));
        assert_eq!(doc, expected);
    }

    #[test]
    fn masks_every_kind_of_value() {
        let mut p = plugin(json!({"mode": "mask", "paths": [
            "/data/attributes/key", "/data/attributes/uses", "/data/attributes/strict",
            "/data/attributes/metadata", "/data/attributes/permissions/1",
            "/data/attributes/scheme"
        ]}));
        let doc = rewritten(&mut p, LICENSE_CREATED);
        let a = &doc["data"]["attributes"];
        assert_eq!(a["key"], "[REDACTED]");
        assert_eq!(a["uses"], "[REDACTED]");
        assert_eq!(a["strict"], "[REDACTED]");
        assert_eq!(a["metadata"], "[REDACTED]", "objects are masked whole");
        assert_eq!(
            a["permissions"],
            json!(["license.validate", "[REDACTED]", "machine.delete"])
        );
        assert_eq!(a["scheme"], Value::Null, "null stays null");
    }

    #[test]
    fn custom_mask_and_wildcards_over_arrays() {
        let mut p = plugin(json!({"mode": "mask", "mask": "***",
            "paths": ["/data/attributes/permissions/*", "/data/relationships/*/data/id"]}));
        let doc = rewritten(&mut p, LICENSE_CREATED);
        assert_eq!(
            doc["data"]["attributes"]["permissions"],
            json!(["***", "***", "***"])
        );
        assert_eq!(doc["data"]["relationships"]["owner"]["data"]["id"], "***");
        assert_eq!(
            doc["data"]["relationships"]["environment"]["data"],
            Value::Null
        );
        assert_eq!(doc["data"]["id"], payload(LICENSE_CREATED)["data"]["id"]);
    }

    #[test]
    fn removes_array_elements() {
        let mut p = plugin(json!({"paths": ["/data/attributes/permissions/0"]}));
        let doc = rewritten(&mut p, LICENSE_CREATED);
        assert_eq!(
            doc["data"]["attributes"]["permissions"],
            json!(["machine.create", "machine.delete"])
        );
        let mut p = plugin(json!({"paths": ["/data/attributes/permissions/*"]}));
        assert_eq!(
            rewritten(&mut p, LICENSE_CREATED)["data"]["attributes"]["permissions"],
            json!([])
        );
    }

    #[test]
    fn every_fixture_loses_its_secrets_and_keeps_the_rest() {
        let mut p = plugin(json!({"paths": [
            "/data/attributes/key", "/data/attributes/email", "/data/attributes/ip",
            "/data/attributes/fingerprint", "/data/attributes/metadata", "/meta/scope"
        ]}));
        for fixture in ALL {
            let doc = rewritten(&mut p, fixture);
            let a = &doc["data"]["attributes"];
            for gone in ["key", "email", "ip", "fingerprint", "metadata"] {
                assert!(a.get(gone).is_none());
            }
            assert!(doc["meta"].get("scope").is_none());
            let original = payload(fixture);
            assert_eq!(doc["data"]["id"], original["data"]["id"]);
            assert_eq!(
                doc["data"]["relationships"],
                original["data"]["relationships"]
            );
            assert_eq!(doc["meta"].get("valid"), original["meta"].get("valid"));
        }
    }

    #[test]
    fn escapes_are_honoured() {
        let event = Event::new("x.y", br#"{"data":{"a/b":1,"c~d":2,"*":3,"e":4}}"#.to_vec());
        let mut p = plugin(json!({"paths": ["/data/a~1b", "/data/c~0d"]}));
        match p.handle(&event).unwrap() {
            Outcome::Rewrite(b) => {
                assert_eq!(
                    serde_json::from_slice::<Value>(&b).unwrap(),
                    json!({"data": {"*": 3, "e": 4}})
                )
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn nothing_matched_is_pass() {
        let mut p =
            plugin(json!({"paths": ["/data/attributes/nope", "/included/*/attributes/email"]}));
        for fixture in ALL {
            assert_eq!(
                p.handle(&event_from_json(fixture).unwrap()).unwrap(),
                Outcome::Pass
            );
        }
    }

    #[test]
    fn invalid_pointers_are_rejected_at_config_time() {
        let err = |c: Value| {
            switchyard_guest::configure::<Redact>(&c.to_string())
                .err()
                .unwrap()
        };
        for bad in ["data/attributes/email", "", "/data/~2", "/data/x~"] {
            let e = err(json!({"paths": [bad]}));
            assert_eq!(e.kind, ErrorKind::BadConfig, "{bad:?}");
            assert!(e.message.contains("paths[0]"), "{e}");
        }
        assert!(err(json!({"paths": []})).message.contains("paths"));
        assert!(err(json!({})).message.contains("paths"));
        assert_eq!(
            err(json!({"paths": ["/a"], "mode": "hash"})).kind,
            ErrorKind::BadConfig
        );
    }

    #[test]
    fn bad_payload_is_bad_input() {
        let mut p = plugin(json!({"paths": ["/a"]}));
        let e = p.handle(&Event::new("x.y", b"nope".to_vec())).unwrap_err();
        assert_eq!(e.kind, ErrorKind::BadInput);
    }

    #[test]
    fn parses_wildcard_pointers() {
        assert_eq!(
            WildPointer::parse("/data/*/a~1b").unwrap(),
            WildPointer(vec![
                Segment::Key("data".into()),
                Segment::Any,
                Segment::Key("a/b".into())
            ])
        );
        assert_eq!(
            WildPointer::parse("/").unwrap(),
            WildPointer(vec![Segment::Key(String::new())])
        );
    }
}
