//! `contract-v1`: a plugin built against the first contract,
//! `switchyard:plugin@0.1.0` (`wit/v0.1.0/plugin.wit`), with wit-bindgen
//! directly (not the SDK, which follows the current contract): what a
//! plugin compiled before 0.2.0 looks like. The router must load and run
//! it unchanged (tests/it/batching.rs).
//!
//! Config `{"fail": "bad-input"}` makes every call fail with that kind;
//! otherwise the body is replaced with
//! `{"contract": "0.1.0", "event": <type>, "id": <id>}` and one log line
//! is written.

wit_bindgen::generate!({
    world: "plugin",
    path: "../../../wit/v0.1.0",
});

use std::cell::RefCell;

use switchyard::plugin::log::{Level, log};
use switchyard::plugin::types::{ErrorKind, Replacement};

thread_local! {
    static FAIL: RefCell<bool> = const { RefCell::new(false) };
}

struct V1;

impl Guest for V1 {
    fn configure(config: String) -> Result<(), Error> {
        FAIL.with(|f| *f.borrow_mut() = config.contains("bad-input"));
        Ok(())
    }

    fn handle(event: Event) -> Result<Outcome, Error> {
        if FAIL.with(|f| *f.borrow()) {
            return Err(Error {
                kind: ErrorKind::BadInput,
                message: "configured to fail".into(),
            });
        }
        log(
            Level::Info,
            &format!("contract 0.1.0 plugin saw {}", event.event_type),
        );
        let body = format!(
            r#"{{"contract":"0.1.0","event":"{}","id":"{}"}}"#,
            event.event_type, event.id
        );
        Ok(Outcome::Replace(Replacement {
            body: body.into_bytes(),
            content_type: "application/json".into(),
            headers: Vec::new(),
        }))
    }
}

export!(V1);
