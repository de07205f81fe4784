//! `template`: the smallest useful plugin, made to be copied. It tags every
//! event: the payload's top-level `meta` gets `"tag": <config tag>`, and the
//! rewritten payload goes on down the chain (or into the default envelope).
//!
//! Config (optional): `{"tag": "from-switchyard"}` (default `"template"`).
//!
//! To start your own plugin, copy this crate, rename it in `Cargo.toml`, and
//! change `handle`. See docs/PLUGINS.md, "Writing a plugin".

#![forbid(unsafe_code)]

use serde::Deserialize;
use serde_json::{Value, json};
use switchyard_guest::{Error, Event, Outcome, Plugin};

/// The endpoint's configuration for this plugin.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "default_tag")]
    pub tag: String,
}

fn default_tag() -> String {
    "template".into()
}

pub struct Template {
    tag: String,
}

impl Plugin for Template {
    type Config = Config;

    fn new(config: Config) -> Result<Self, Error> {
        if config.tag.is_empty() {
            return Err(Error::bad_config("`tag` must not be empty"));
        }
        Ok(Template { tag: config.tag })
    }

    fn handle(&mut self, event: &Event) -> Result<Outcome, Error> {
        let mut doc = event.document()?.value;
        match doc.get_mut("meta") {
            Some(Value::Object(meta)) => {
                meta.insert("tag".into(), self.tag.clone().into());
            }
            _ => doc["meta"] = json!({ "tag": self.tag }),
        }
        Outcome::rewrite_json(&doc)
    }
}

switchyard_guest::export!(Template);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_the_payload() {
        let mut plugin = switchyard_guest::configure::<Template>(r#"{"tag": "hello"}"#).unwrap();
        let event = switchyard_guest::testing::event_from_json(include_str!(
            "../../../examples/events/license.validation.succeeded.json"
        ))
        .unwrap();
        let Outcome::Rewrite(payload) = plugin.handle(&event).unwrap() else {
            panic!("expected a rewrite");
        };
        let doc: Value = serde_json::from_slice(&payload).unwrap();
        assert_eq!(doc["meta"]["tag"], "hello");
        assert_eq!(doc["meta"]["valid"], true, "existing meta is kept");
        assert_eq!(doc["data"], event.document().unwrap().value["data"]);
    }

    #[test]
    fn default_config_and_payload_without_meta() {
        let mut plugin = switchyard_guest::configure::<Template>("").unwrap();
        let event = Event::new(
            "user.created",
            br#"{"data":{"id":"u1","type":"users"}}"#.to_vec(),
        );
        let Outcome::Rewrite(payload) = plugin.handle(&event).unwrap() else {
            panic!("expected a rewrite");
        };
        let doc: Value = serde_json::from_slice(&payload).unwrap();
        assert_eq!(doc["meta"], json!({"tag": "template"}));
    }

    #[test]
    fn rejects_an_empty_tag() {
        assert!(switchyard_guest::configure::<Template>(r#"{"tag": ""}"#).is_err());
    }
}
