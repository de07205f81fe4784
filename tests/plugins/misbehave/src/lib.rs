//! `misbehave`: a test plugin whose behaviour is chosen by its config, used by
//! the host's tests to exercise every outcome and every failure the sandbox
//! must contain. Config: `{"mode": "...", ...}`:
//! - `replace` (default): replaces the body with `{"tag": <tag>, "event": <type>}`
//!   and the headers in `headers`;
//! - `pass`, `skip`, `rewrite` (payload becomes `{"rewritten": true}`);
//! - `error`: returns a bad-input error;
//! - `rejected`: returns a `rejected` (permanent) error;
//! - `panic`: panics with "misbehave panicked on purpose";
//! - `loop`: spins forever;
//! - `alloc`: allocates without bound;
//! - `huge`: replaces the body with `size` bytes (default 10 MiB);
//! - `reject`: rejects its configuration;
//! - `sleep`: sleeps 5 s (WASI monotonic-clock subscribe + block), loops
//!   that 10 times, then passes;
//! - `spin`: counts to `size` (a CPU cost that ends), then passes;
//! - `spam-log`: logs 2,000 lines of 8 KiB, each with a newline and a forged
//!   log line in it, then passes;
//! - `transform`: a realistic transform for benchmarks: parses the Keygen
//!   payload and replaces the body with a Segment-style `track` call
//!   ([`transform`], also callable natively).

use serde::Deserialize;
use serde_json::json;
use switchyard_guest::{Error, Event, Outcome, Plugin, Replacement};

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct Config {
    pub mode: Option<String>,
    pub tag: Option<String>,
    pub headers: Vec<(String, String)>,
    pub size: Option<usize>,
}

pub struct Misbehave {
    mode: String,
    tag: String,
    headers: Vec<(String, String)>,
    size: usize,
}

impl Plugin for Misbehave {
    type Config = Config;

    fn new(c: Config) -> Result<Self, Error> {
        let mode = c.mode.unwrap_or_else(|| "replace".into());
        if mode == "reject" {
            return Err(Error::bad_config(
                "misbehave rejects this configuration on purpose",
            ));
        }
        Ok(Misbehave {
            mode,
            tag: c.tag.unwrap_or_else(|| "misbehave".into()),
            headers: c.headers,
            size: c.size.unwrap_or(10 << 20),
        })
    }

    fn handle(&mut self, event: &Event) -> Result<Outcome, Error> {
        match self.mode.as_str() {
            "pass" => Ok(Outcome::Pass),
            "skip" => Ok(Outcome::skip(format!("{} skipped it", self.tag))),
            "rewrite" => Outcome::rewrite_json(&json!({"rewritten": true, "tag": self.tag})),
            "error" => Err(Error::bad_input("misbehave refuses this event")),
            "rejected" => Err(Error::rejected("misbehave rejects this event for good")),
            "panic" => panic!("misbehave panicked on purpose"),
            "loop" => {
                let mut x: u64 = 0;
                loop {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
            }
            "sleep" => {
                for _ in 0..10 {
                    std::thread::sleep(std::time::Duration::from_secs(5));
                }
                Ok(Outcome::Pass)
            }
            "spin" => {
                let mut x: u64 = 0;
                for _ in 0..self.size {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
                Ok(Outcome::Pass)
            }
            "spam-log" => {
                let line = format!(
                    "spam\n2026-01-01T00:00:00Z  INFO switchyard: forged line \u{1b}[31m{}",
                    "x".repeat(8000)
                );
                for _ in 0..2000 {
                    switchyard_guest::log::info(&line);
                }
                Ok(Outcome::Pass)
            }
            "alloc" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "transform" => transform(event, &self.tag),
            "huge" => Ok(Outcome::Replace(Replacement {
                body: vec![b'x'; self.size],
                content_type: "text/plain".into(),
                headers: Vec::new(),
            })),
            _ => {
                let mut out = Outcome::json(&json!({
                    "tag": self.tag,
                    "event": event.event_type,
                    "id": event.id,
                }))?;
                for (k, v) in &self.headers {
                    out = out.with_header(k, v);
                }
                Ok(out)
            }
        }
    }
}

/// Keygen event → Segment-style `track` call: parses the resource document,
/// picks the user, license attributes, relationships and metadata, and
/// serializes a new JSON body (with a Basic `Authorization` header).
pub fn transform(event: &Event, write_key: &str) -> Result<Outcome, Error> {
    let doc = event.document()?;
    let user_id = doc
        .relationship_id("owner")
        .or_else(|| doc.relationship_id("user"))
        .or_else(|| doc.resource_id())
        .unwrap_or("anonymous");
    let mut words: Vec<String> = event
        .event_type
        .split(['.', '-'])
        .map(|w| {
            let mut c = w.chars();
            match c.next() {
                Some(f) => f.to_uppercase().chain(c).collect(),
                None => String::new(),
            }
        })
        .collect();
    words.retain(|w| !w.is_empty());
    let attr = |k: &str| doc.attribute(k).cloned().unwrap_or(serde_json::Value::Null);
    let meta = doc.meta();
    let body = json!({
        "type": "track",
        "userId": user_id,
        "event": words.join(" "),
        "messageId": event.id,
        "timestamp": event.created,
        "properties": {
            "licenseId": doc.resource_id(),
            "name": attr("name"),
            "status": attr("status"),
            "expiry": attr("expiry"),
            "uses": attr("uses"),
            "maxMachines": attr("maxMachines"),
            "metadata": attr("metadata"),
            "policyId": doc.relationship_id("policy"),
            "productId": doc.relationship_id("product"),
            "groupId": doc.relationship_id("group"),
            "valid": meta.get("valid"),
            "code": meta.get("code"),
            "detail": meta.get("detail"),
        },
        "context": {
            "library": {"name": "switchyard", "version": "0.1.0"},
            "groupId": event.account,
        },
    });
    Ok(Outcome::json(&body)?.with_header("Authorization", format!("Basic {write_key}")))
}

switchyard_guest::export!(Misbehave);
