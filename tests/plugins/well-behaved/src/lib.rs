//! `well-behaved`: the "fixed build" of a broken plugin in the reliability
//! tests. It accepts any configuration (so it can replace `misbehave` under
//! the same name and the same endpoint config, e.g. `{"mode": "panic"}`)
//! and replaces the body with `{"healed": true, "event": <type>, "id": <id>}`.

use serde_json::json;
use switchyard_guest::{Error, Event, Outcome, Plugin};

pub struct WellBehaved;

impl Plugin for WellBehaved {
    type Config = serde_json::Value;

    fn new(_config: serde_json::Value) -> Result<Self, Error> {
        Ok(WellBehaved)
    }

    fn handle(&mut self, event: &Event) -> Result<Outcome, Error> {
        Outcome::json(&json!({"healed": true, "event": event.event_type, "id": event.id}))
    }
}

switchyard_guest::export!(WellBehaved);
