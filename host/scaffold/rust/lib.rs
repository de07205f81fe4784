//! `{{name}}`: a Switchyard plugin. Passes the events whose type matches one
//! of `types` and whose payload's `data.attributes.status` is one of
//! `statuses`; skips the others, with the reason.
//!
//! Config (all keys optional):
//! `{"types": ["license.*"], "statuses": ["EXPIRED", "SUSPENDED"]}`
//! (an empty `statuses` list lets every status through).

use serde::Deserialize;
use switchyard_guest::{Error, Event, Outcome, Plugin};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "default_types")]
    pub types: Vec<String>,
    #[serde(default = "default_statuses")]
    pub statuses: Vec<String>,
}

fn default_types() -> Vec<String> {
    vec!["license.*".into()]
}

fn default_statuses() -> Vec<String> {
    vec!["EXPIRED".into(), "SUSPENDED".into()]
}

/// `*` matches everything, `family.*` a family, anything else exactly.
fn matches(pattern: &str, event_type: &str) -> bool {
    match pattern.strip_suffix(".*") {
        _ if pattern == "*" => true,
        Some(family) => event_type
            .strip_prefix(family)
            .is_some_and(|rest| rest.starts_with('.')),
        None => pattern == event_type,
    }
}

pub struct Filter {
    config: Config,
}

impl Plugin for Filter {
    type Config = Config;

    fn new(config: Config) -> Result<Self, Error> {
        if config.types.is_empty() {
            return Err(Error::bad_config("`types` must name at least one event type"));
        }
        Ok(Filter { config })
    }

    fn handle(&mut self, event: &Event) -> Result<Outcome, Error> {
        let ty = event.event_type.as_str();
        if !self.config.types.iter().any(|p| matches(p, ty)) {
            return Ok(Outcome::skip(format!("event type {ty} is not selected")));
        }
        if self.config.statuses.is_empty() {
            return Ok(Outcome::Pass);
        }
        let doc = event.document()?;
        let status = doc.attributes().get("status").and_then(|s| s.as_str());
        match status {
            Some(s) if self.config.statuses.iter().any(|w| w == s) => Ok(Outcome::Pass),
            _ => Ok(Outcome::skip(format!("status {} is not selected", status.unwrap_or("(none)")))),
        }
    }
}

switchyard_guest::export!(Filter);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_the_sample_event() {
        let mut plugin = switchyard_guest::configure::<Filter>("{}").unwrap();
        let event = switchyard_guest::testing::event_from_json(include_str!("../event.json")).unwrap();
        assert_eq!(plugin.handle(&event).unwrap(), Outcome::Pass);
    }
}
