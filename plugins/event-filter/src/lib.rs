//! `event-filter`: passes or skips events by event type and by conditions on
//! the payload. The reference plugin for filtering.
//!
//! Config (all keys optional):
//! ```json
//! {
//!   "include": ["license.*", "user.created"],
//!   "exclude": ["license.validation.*"],
//!   "conditions": [
//!     {"pointer": "/data/attributes/status", "equals": "EXPIRED"},
//!     {"pointer": "/data/attributes/metadata/tier", "in": ["gold", "silver"]},
//!     {"pointer": "/meta/valid", "exists": true}
//!   ],
//!   "match": "all"
//! }
//! ```
//! An event passes when its type matches one `include` pattern (default `*`),
//! matches no `exclude` pattern, and the conditions hold (`all` of them by
//! default, or `any`). Patterns: `*` matches everything, `family.*` matches a
//! family (`license.*` matches `license.validation.succeeded`), anything else
//! matches exactly.

use serde::Deserialize;
use serde_json::Value;
use switchyard_guest::{Error, Event, Outcome, Plugin};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub include: Vec<String>,
    #[serde(default)]
    pub exclude: Vec<String>,
    #[serde(default)]
    pub conditions: Vec<Condition>,
    #[serde(default, rename = "match")]
    pub match_mode: MatchMode,
}

#[derive(Debug, Default, Deserialize, PartialEq, Eq, Clone, Copy)]
#[serde(rename_all = "lowercase")]
pub enum MatchMode {
    #[default]
    All,
    Any,
}

/// One test on the value at a JSON pointer into the payload.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    pub pointer: String,
    #[serde(default)]
    pub equals: Option<Value>,
    #[serde(default)]
    pub not_equals: Option<Value>,
    #[serde(default, rename = "in")]
    pub one_of: Option<Vec<Value>>,
    #[serde(default)]
    pub exists: Option<bool>,
}

impl Condition {
    fn validate(&self, index: usize) -> Result<(), Error> {
        if !(self.pointer.is_empty() || self.pointer.starts_with('/')) {
            return Err(Error::bad_config(format!(
                "conditions[{index}].pointer {:?} is not a JSON pointer (it must start with '/')",
                self.pointer
            )));
        }
        let tests = [
            self.equals.is_some(),
            self.not_equals.is_some(),
            self.one_of.is_some(),
            self.exists.is_some(),
        ];
        if tests.iter().filter(|t| **t).count() != 1 {
            return Err(Error::bad_config(format!(
                "conditions[{index}] needs exactly one of `equals`, `not_equals`, `in`, `exists`"
            )));
        }
        Ok(())
    }

    fn holds(&self, doc: &Value) -> bool {
        let found = doc.pointer(&self.pointer);
        if let Some(expected) = &self.equals {
            return found == Some(expected);
        }
        if let Some(unexpected) = &self.not_equals {
            return found != Some(unexpected);
        }
        if let Some(options) = &self.one_of {
            return found.is_some_and(|v| options.contains(v));
        }
        if let Some(exists) = self.exists {
            return found.is_some_and(|v| !v.is_null()) == exists;
        }
        false
    }
}

/// True when `pattern` matches `event_type` (`*`, `family.*`, or exact).
pub fn pattern_matches(pattern: &str, event_type: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    match pattern.strip_suffix(".*") {
        Some(prefix) => event_type
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('.')),
        None => pattern == event_type,
    }
}

pub struct EventFilter {
    config: Config,
}

impl Plugin for EventFilter {
    type Config = Config;

    fn new(config: Config) -> Result<Self, Error> {
        for (i, c) in config.conditions.iter().enumerate() {
            c.validate(i)?;
        }
        for p in config.include.iter().chain(&config.exclude) {
            if p.is_empty()
                || (p.contains('*') && p != "*" && !p.ends_with(".*"))
                || p.matches('*').count() > 1
            {
                return Err(Error::bad_config(format!(
                    "pattern {p:?} is not valid: use `*`, `family.*` or an exact event type"
                )));
            }
        }
        Ok(EventFilter { config })
    }

    fn handle(&mut self, event: &Event) -> Result<Outcome, Error> {
        let ty = event.event_type.as_str();
        let c = &self.config;
        if !c.include.is_empty() && !c.include.iter().any(|p| pattern_matches(p, ty)) {
            return Ok(Outcome::skip(format!("event type {ty} is not included")));
        }
        if let Some(p) = c.exclude.iter().find(|p| pattern_matches(p, ty)) {
            return Ok(Outcome::skip(format!("event type {ty} is excluded by {p}")));
        }
        if c.conditions.is_empty() {
            return Ok(Outcome::Pass);
        }
        let doc = event.document()?;
        let pass = match c.match_mode {
            MatchMode::All => c.conditions.iter().all(|k| k.holds(&doc.value)),
            MatchMode::Any => c.conditions.iter().any(|k| k.holds(&doc.value)),
        };
        if pass {
            Ok(Outcome::Pass)
        } else {
            Ok(Outcome::skip("payload does not meet the conditions"))
        }
    }
}

switchyard_guest::export!(EventFilter);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn filter(config: Value) -> Result<EventFilter, Error> {
        switchyard_guest::configure::<EventFilter>(&config.to_string())
    }

    fn license(status: &str) -> Vec<u8> {
        json!({"data": {"id": "l1", "type": "licenses", "attributes": {"status": status}}})
            .to_string()
            .into_bytes()
    }

    #[test]
    fn patterns() {
        assert!(pattern_matches("*", "user.created"));
        assert!(pattern_matches("license.*", "license.validation.succeeded"));
        assert!(!pattern_matches("license.*", "licenses.created"));
        assert!(!pattern_matches("license.*", "license"));
        assert!(pattern_matches("user.created", "user.created"));
        assert!(!pattern_matches("user.created", "user.created.x"));
    }

    #[test]
    fn include_exclude_and_conditions() {
        let mut f = filter(json!({
            "include": ["license.*"],
            "exclude": ["license.validation.*"],
            "conditions": [{"pointer": "/data/attributes/status", "equals": "EXPIRED"}]
        }))
        .unwrap();
        let ev = |t: &str, s: &str| Event::new(t, license(s));
        assert_eq!(
            f.handle(&ev("license.expired", "EXPIRED")).unwrap(),
            Outcome::Pass
        );
        assert!(matches!(
            f.handle(&ev("license.expired", "ACTIVE")).unwrap(),
            Outcome::Skip(_)
        ));
        assert!(matches!(
            f.handle(&ev("user.created", "EXPIRED")).unwrap(),
            Outcome::Skip(_)
        ));
        assert!(matches!(
            f.handle(&ev("license.validation.failed", "EXPIRED")).unwrap(),
            Outcome::Skip(r) if r.contains("excluded")
        ));
    }

    #[test]
    fn any_mode_and_in_and_exists() {
        let mut f = filter(json!({
            "match": "any",
            "conditions": [
                {"pointer": "/data/attributes/status", "in": ["SUSPENDED", "BANNED"]},
                {"pointer": "/meta/valid", "exists": true}
            ]
        }))
        .unwrap();
        assert_eq!(
            f.handle(&Event::new("x.y", license("BANNED"))).unwrap(),
            Outcome::Pass
        );
        assert!(matches!(
            f.handle(&Event::new("x.y", license("ACTIVE"))).unwrap(),
            Outcome::Skip(_)
        ));
        let with_meta = br#"{"data":{"id":"l"},"meta":{"valid":false}}"#.to_vec();
        assert_eq!(
            f.handle(&Event::new("x.y", with_meta)).unwrap(),
            Outcome::Pass
        );
    }

    #[test]
    fn rejects_bad_config() {
        assert!(filter(json!({"include": ["lic*nse"]})).is_err());
        assert!(filter(json!({"conditions": [{"pointer": "data", "equals": 1}]})).is_err());
        assert!(filter(json!({"conditions": [{"pointer": "/a"}]})).is_err());
        let e = filter(json!({"unknown": 1})).err().unwrap();
        assert_eq!(e.kind, switchyard_guest::ErrorKind::BadConfig);
    }

    #[test]
    fn bad_payload_is_bad_input() {
        let mut f = filter(json!({"conditions": [{"pointer": "/a", "exists": true}]})).unwrap();
        let e = f
            .handle(&Event::new("x.y", b"not json".to_vec()))
            .unwrap_err();
        assert_eq!(e.kind, switchyard_guest::ErrorKind::BadInput);
    }
}
