//! `switchyard-guest`: write a Switchyard plugin as a plain Rust type.
//!
//! A plugin implements [`Plugin`] and calls [`export!`] once. The SDK owns the
//! WebAssembly plumbing (the `switchyard:plugin` world from `wit/`, generated
//! with wit-bindgen), parses the endpoint's configuration into your typed
//! `Config` with serde, and hands you each event as an [`Event`] with helpers
//! for Keygen-shaped JSON:API payloads.
//!
//! ```
//! use serde::Deserialize;
//! use switchyard_guest::{Error, Event, Outcome, Plugin};
//!
//! /// Drops every event whose license is not in the configured policy.
//! pub struct OnlyPolicy {
//!     policy: String,
//! }
//!
//! #[derive(Deserialize)]
//! pub struct Config {
//!     policy: String,
//! }
//!
//! impl Plugin for OnlyPolicy {
//!     type Config = Config;
//!
//!     fn new(config: Config) -> Result<Self, Error> {
//!         if config.policy.is_empty() {
//!             return Err(Error::bad_config("`policy` must not be empty"));
//!         }
//!         Ok(OnlyPolicy { policy: config.policy })
//!     }
//!
//!     fn handle(&mut self, event: &Event) -> Result<Outcome, Error> {
//!         let doc = event.document()?;
//!         match doc.relationship_id("policy") {
//!             Some(id) if id == self.policy => Ok(Outcome::Pass),
//!             _ => Ok(Outcome::skip("license is in another policy")),
//!         }
//!     }
//! }
//!
//! switchyard_guest::export!(OnlyPolicy);
//!
//! # fn main() {
//! // The same type runs natively, which is how plugins are unit-tested:
//! let mut plugin = OnlyPolicy::new(Config { policy: "p1".into() }).unwrap();
//! let event = Event::new(
//!     "license.created",
//!     br#"{"data":{"id":"l1","type":"licenses","attributes":{},
//!          "relationships":{"policy":{"data":{"type":"policies","id":"p1"}}}}}"#.to_vec(),
//! );
//! assert_eq!(plugin.handle(&event).unwrap(), Outcome::Pass);
//! # }
//! ```

use serde::de::DeserializeOwned;
use serde_json::Value;

pub mod base64;
mod document;
pub mod log;
pub mod testing;

pub use document::Document;

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "batching-plugin",
        path: "../wit",
        pub_export_macro: true,
        export_macro_name: "__export_plugin_world",
        default_bindings_module: "switchyard_guest::bindings",
    });
}

/// A plugin: built once per instance from its configuration, then called
/// once per (event, endpoint).
pub trait Plugin: Sized + 'static {
    /// The endpoint-specific configuration, deserialized from the JSON the
    /// host passes (`{}` when the endpoint gives none).
    type Config: DeserializeOwned;

    /// Builds the plugin. Return [`Error::bad_config`] to reject the
    /// configuration: the endpoint then fails to load, with your message.
    fn new(config: Self::Config) -> Result<Self, Error>;

    /// Decides what happens to one event.
    fn handle(&mut self, event: &Event) -> Result<Outcome, Error>;

    /// Batching (optional): the limits of one request to this plugin's
    /// provider. `None` (the default) means the plugin does not merge: an
    /// endpoint with `batch = {...}` then sends a JSON array of the bodies.
    fn batch_limits(&self) -> Option<BatchLimits> {
        None
    }

    /// Batching (optional): merges the bodies `handle` produced for several
    /// events (in order) into one request. Leave an item out with
    /// [`Merged::refuse`] when it alone breaks the provider's per-event
    /// limit: that delivery fails with the reason, the rest are sent. Only
    /// called when [`Plugin::batch_limits`] is `Some`.
    fn merge(&mut self, items: Vec<Vec<u8>>) -> Result<Merged, Error> {
        let _ = items;
        Err(Error::internal("this plugin does not merge batches"))
    }
}

/// One account event as handed to a plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Stable event id, the same on every attempt.
    pub id: String,
    /// Account id.
    pub account: String,
    /// Endpoint id this call is made for.
    pub endpoint: String,
    /// Event type, e.g. `license.validation.succeeded`.
    pub event_type: String,
    /// Creation time, RFC 3339 UTC.
    pub created: String,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_ms: i64,
    /// The resource document as JSON bytes.
    pub payload: Vec<u8>,
}

impl Event {
    /// An event with placeholder id/account/endpoint/time: handy in tests.
    pub fn new(event_type: &str, payload: Vec<u8>) -> Self {
        Event {
            id: "00000000-0000-0000-0000-000000000000".into(),
            account: "test-account".into(),
            endpoint: "test-endpoint".into(),
            event_type: event_type.into(),
            created: "1970-01-01T00:00:00Z".into(),
            created_ms: 0,
            payload,
        }
    }

    /// Parses the payload as a JSON:API resource document.
    pub fn document(&self) -> Result<Document, Error> {
        Document::parse(&self.payload)
    }

    /// The family of the event type: `license` for `license.validation.succeeded`.
    pub fn family(&self) -> &str {
        self.event_type.split('.').next().unwrap_or("")
    }

    /// The action part of the event type: `validation.succeeded` for
    /// `license.validation.succeeded` (empty when there is no dot).
    pub fn action(&self) -> &str {
        self.event_type
            .split_once('.')
            .map(|(_, a)| a)
            .unwrap_or("")
    }
}

/// A new HTTP body for the delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replacement {
    pub body: Vec<u8>,
    pub content_type: String,
    pub headers: Vec<(String, String)>,
}

/// What a plugin decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Deliver unchanged; the next plugin runs.
    Pass,
    /// Do not deliver; recorded as filtered with this reason.
    Skip(String),
    /// New payload (resource document) for the rest of the chain and the
    /// default envelope.
    Rewrite(Vec<u8>),
    /// New HTTP body; ends the chain.
    Replace(Replacement),
}

impl Outcome {
    /// `Outcome::Skip` with a reason.
    pub fn skip(reason: impl Into<String>) -> Self {
        Outcome::Skip(reason.into())
    }

    /// Rewrites the payload to this JSON value.
    pub fn rewrite_json(value: &Value) -> Result<Self, Error> {
        serde_json::to_vec(value)
            .map(Outcome::Rewrite)
            .map_err(|e| Error::internal(format!("cannot serialize payload: {e}")))
    }

    /// Replaces the body with this JSON value (`application/json`).
    pub fn json(value: &impl serde::Serialize) -> Result<Self, Error> {
        let body = serde_json::to_vec(value)
            .map_err(|e| Error::internal(format!("cannot serialize body: {e}")))?;
        Ok(Outcome::Replace(Replacement {
            body,
            content_type: "application/json".into(),
            headers: Vec::new(),
        }))
    }

    /// Adds a header to a `Replace` outcome (no effect on other outcomes).
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        if let Outcome::Replace(r) = &mut self {
            r.headers.push((name.into(), value.into()));
        }
        self
    }
}

/// The kind of a plugin error.
/// What a provider accepts in one request (see [`Plugin::batch_limits`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    /// Most events in one request.
    pub max_events: u32,
    /// Largest request body, bytes.
    pub max_bytes: u64,
    /// Largest single item (one event's body), bytes.
    pub max_item_bytes: u64,
}

/// One merged request (see [`Plugin::merge`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merged {
    pub body: Vec<u8>,
    pub content_type: String,
    pub headers: Vec<(String, String)>,
    /// Items left out of `body`: (index into the items, reason).
    pub refused: Vec<(u32, String)>,
}

impl Merged {
    /// A JSON body, nothing refused yet.
    pub fn json(value: &impl serde::Serialize) -> Result<Self, Error> {
        let body = serde_json::to_vec(value)
            .map_err(|e| Error::internal(format!("cannot serialize body: {e}")))?;
        Ok(Merged {
            body,
            content_type: "application/json".into(),
            headers: Vec::new(),
            refused: Vec::new(),
        })
    }

    /// Adds a request header.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Records that item `index` was left out, and why.
    pub fn refuse(&mut self, index: usize, reason: impl Into<String>) {
        self.refused.push((index as u32, reason.into()));
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The configuration is unusable (a config that fails to deserialize
    /// becomes one).
    BadConfig,
    /// This event cannot be handled now; retried on the endpoint's schedule.
    BadInput,
    /// Anything else; retried on the endpoint's schedule.
    Internal,
    /// This event can never be handled: the delivery fails at once with
    /// the message and is not retried (contract 0.2.0; see
    /// [`Error::rejected`]).
    Rejected,
}

/// A typed plugin error with a message for the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub kind: ErrorKind,
    pub message: String,
}

impl Error {
    pub fn bad_config(message: impl Into<String>) -> Self {
        Error {
            kind: ErrorKind::BadConfig,
            message: message.into(),
        }
    }
    pub fn bad_input(message: impl Into<String>) -> Self {
        Error {
            kind: ErrorKind::BadInput,
            message: message.into(),
        }
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Error {
            kind: ErrorKind::Internal,
            message: message.into(),
        }
    }
    /// A permanent error: the delivery fails at once, with no retry. Use it
    /// for an event no version of the plugin will ever handle (a field the
    /// provider requires is missing, the event is over the provider's
    /// size limit); use `bad_input` when a fixed plugin could handle it.
    pub fn rejected(message: impl Into<String>) -> Self {
        Error {
            kind: ErrorKind::Rejected,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.kind {
            ErrorKind::BadConfig => "bad config",
            ErrorKind::BadInput => "bad input",
            ErrorKind::Internal => "internal error",
            ErrorKind::Rejected => "rejected",
        };
        write!(f, "{kind}: {}", self.message)
    }
}

impl std::error::Error for Error {}

/// Parses a plugin configuration the way the host-facing glue does: JSON
/// text into `P::Config` (`{}` for an empty string), then `P::new`.
///
/// A configuration that does not deserialize is a [`ErrorKind::BadConfig`]
/// error naming the field, in the words of the config the operator wrote
/// (no position inside JSON they never saw):
///
/// ```
/// # use serde::Deserialize;
/// # use switchyard_guest::{Error, ErrorKind, Event, Outcome, Plugin};
/// #[derive(Deserialize)]
/// pub struct Config { webhook_url: String, mention_over_seats: u64 }
/// pub struct Notify;
/// impl Plugin for Notify {
///     type Config = Config;
///     fn new(_: Config) -> Result<Self, Error> { Ok(Notify) }
///     fn handle(&mut self, _: &Event) -> Result<Outcome, Error> { Ok(Outcome::Pass) }
/// }
/// let e = switchyard_guest::configure::<Notify>(
///     r#"{"webhook_url": "https://x", "mention_over_seats": "ten"}"#,
/// ).err().unwrap();
/// assert_eq!(e.kind, ErrorKind::BadConfig);
/// assert_eq!(e.message, r#"`mention_over_seats`: expected a non-negative integer, got "ten""#);
/// let e = switchyard_guest::configure::<Notify>("{}").err().unwrap();
/// assert_eq!(e.message, "missing field `webhook_url`");
/// ```
pub fn configure<P: Plugin>(config: &str) -> Result<P, Error> {
    let text = if config.trim().is_empty() {
        "{}"
    } else {
        config
    };
    let de = &mut serde_json::Deserializer::from_str(text);
    let parsed: P::Config =
        serde_path_to_error::deserialize(de).map_err(|e| Error::bad_config(config_error(&e)))?;
    P::new(parsed)
}

/// `` `a.b[0]`: expected an integer, got "x" `` from a deserialization error.
fn config_error(e: &serde_path_to_error::Error<serde_json::Error>) -> String {
    let inner = e.inner();
    if inner.is_syntax() || inner.is_eof() {
        return format!("the configuration is not valid JSON: {inner}");
    }
    let mut message = inner.to_string();
    // serde_json appends the position in the JSON text the host built.
    if let Some(at) = message.rfind(" at line ") {
        message.truncate(at);
    }
    let message = plain_words(&message);
    let path = e.path().to_string();
    if path.is_empty() || path == "." {
        message
    } else {
        format!("`{path}`: {message}")
    }
}

/// serde's `invalid type: string "ten", expected u64` as `expected a
/// non-negative integer, got "ten"`.
fn plain_words(message: &str) -> String {
    let rest = message
        .strip_prefix("invalid type: ")
        .or_else(|| message.strip_prefix("invalid value: "));
    let Some((got, expected)) = rest.and_then(|r| r.split_once(", expected ")) else {
        return message.to_string();
    };
    let got = got.strip_prefix("string ").unwrap_or(got);
    let expected = match expected {
        "u8" | "u16" | "u32" | "u64" | "u128" | "usize" => "a non-negative integer",
        "i8" | "i16" | "i32" | "i64" | "i128" | "isize" => "an integer",
        "f32" | "f64" => "a number",
        "a sequence" => "a list",
        "a map" => "an object",
        e if e.starts_with("struct ") => "an object",
        e => e,
    };
    format!("expected {expected}, got {got}")
}

/// Glue used by [`export!`]; not part of the public API.
#[doc(hidden)]
pub mod __private {
    use super::*;
    use crate::bindings::switchyard::plugin::types as wit;
    use std::cell::RefCell;

    /// The configured plugin of this instance. [`export!`] keeps it in a
    /// `thread_local!` (a component instance runs on one thread), so it
    /// needs no `Sync` and no `unsafe`.
    pub struct Slot<P>(RefCell<Option<P>>);
    impl<P> Slot<P> {
        pub const fn new() -> Self {
            Slot(RefCell::new(None))
        }
    }

    fn to_wit_error(e: Error) -> wit::Error {
        let kind = match e.kind {
            ErrorKind::BadConfig => wit::ErrorKind::BadConfig,
            ErrorKind::BadInput => wit::ErrorKind::BadInput,
            ErrorKind::Internal => wit::ErrorKind::Internal,
            ErrorKind::Rejected => wit::ErrorKind::Rejected,
        };
        wit::Error {
            kind,
            message: e.message,
        }
    }

    pub fn configure<P: Plugin>(slot: &Slot<P>, config: String) -> Result<(), wit::Error> {
        crate::log::install_panic_hook();
        let plugin = super::configure::<P>(&config).map_err(to_wit_error)?;
        *slot.0.borrow_mut() = Some(plugin);
        Ok(())
    }

    pub fn batch_limits<P: Plugin>(
        slot: &Slot<P>,
    ) -> Option<crate::bindings::exports::switchyard::plugin::batch::BatchLimits> {
        let guard = slot.0.borrow();
        let limits = guard.as_ref()?.batch_limits()?;
        Some(
            crate::bindings::exports::switchyard::plugin::batch::BatchLimits {
                max_events: limits.max_events,
                max_bytes: limits.max_bytes,
                max_item_bytes: limits.max_item_bytes,
            },
        )
    }

    pub fn merge<P: Plugin>(
        slot: &Slot<P>,
        items: Vec<Vec<u8>>,
    ) -> Result<crate::bindings::exports::switchyard::plugin::batch::Merged, wit::Error> {
        let mut guard = slot.0.borrow_mut();
        let plugin = guard
            .as_mut()
            .ok_or_else(|| to_wit_error(Error::internal("merge called before configure")))?;
        let m = plugin.merge(items).map_err(to_wit_error)?;
        Ok(
            crate::bindings::exports::switchyard::plugin::batch::Merged {
                body: m.body,
                content_type: m.content_type,
                headers: m.headers,
                refused: m.refused,
            },
        )
    }

    pub fn handle<P: Plugin>(
        slot: &Slot<P>,
        event: wit::Event,
    ) -> Result<wit::Outcome, wit::Error> {
        let mut guard = slot.0.borrow_mut();
        let plugin = guard
            .as_mut()
            .ok_or_else(|| to_wit_error(Error::internal("handle called before configure")))?;
        let event = Event {
            id: event.id,
            account: event.account,
            endpoint: event.endpoint,
            event_type: event.event_type,
            created: event.created,
            created_ms: event.created_ms,
            payload: event.payload,
        };
        match plugin.handle(&event).map_err(to_wit_error)? {
            Outcome::Pass => Ok(wit::Outcome::Pass),
            Outcome::Skip(reason) => Ok(wit::Outcome::Skip(reason)),
            Outcome::Rewrite(payload) => Ok(wit::Outcome::Rewrite(payload)),
            Outcome::Replace(r) => Ok(wit::Outcome::Replace(wit::Replacement {
                body: r.body,
                content_type: r.content_type,
                headers: r.headers,
            })),
        }
    }
}

/// Exports a [`Plugin`] type as the component's `configure`/`handle`.
/// Call it once, at the top level of your plugin crate.
///
/// It expands to nothing when not compiling for `wasm32`: natively, the
/// plugin is a plain Rust library (tests, the host's benchmark), and the
/// component's C-ABI export symbols would clash between plugin crates
/// linked into one binary.
#[macro_export]
macro_rules! export {
    ($plugin:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            ::std::thread_local! {
                static __SWITCHYARD_SLOT: $crate::__private::Slot<$plugin> =
                    const { $crate::__private::Slot::new() };
            }
            struct __SwitchyardExport;
            impl $crate::bindings::Guest for __SwitchyardExport {
                fn configure(
                    config: ::std::string::String,
                ) -> ::core::result::Result<(), $crate::bindings::switchyard::plugin::types::Error> {
                    __SWITCHYARD_SLOT.with(|slot| $crate::__private::configure::<$plugin>(slot, config))
                }
                fn handle(
                    event: $crate::bindings::switchyard::plugin::types::Event,
                ) -> ::core::result::Result<
                    $crate::bindings::switchyard::plugin::types::Outcome,
                    $crate::bindings::switchyard::plugin::types::Error,
                > {
                    __SWITCHYARD_SLOT.with(|slot| $crate::__private::handle::<$plugin>(slot, event))
                }
            }
            impl $crate::bindings::exports::switchyard::plugin::batch::Guest for __SwitchyardExport {
                fn limits() -> ::core::option::Option<$crate::bindings::exports::switchyard::plugin::batch::BatchLimits> {
                    __SWITCHYARD_SLOT.with(|slot| $crate::__private::batch_limits::<$plugin>(slot))
                }
                fn merge(
                    items: ::std::vec::Vec<::std::vec::Vec<u8>>,
                ) -> ::core::result::Result<
                    $crate::bindings::exports::switchyard::plugin::batch::Merged,
                    $crate::bindings::switchyard::plugin::types::Error,
                > {
                    __SWITCHYARD_SLOT.with(|slot| $crate::__private::merge::<$plugin>(slot, items))
                }
            }
            $crate::bindings::__export_plugin_world!(__SwitchyardExport with_types_in $crate::bindings);
        };
        // Natively, still check that the type is a plugin.
        #[cfg(not(target_arch = "wasm32"))]
        const _: fn() = || {
            fn is_plugin<P: $crate::Plugin>() {}
            is_plugin::<$plugin>();
        };
    };
}
