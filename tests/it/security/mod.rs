//! Security regressions (issue 16): each weakness found by probing the
//! running router as an attacker would, kept fixed by a test that fails on
//! the code that had it. One file per area; docs/RELIABILITY.md has a row
//! per finding naming its test.
//!
//! Run them: `cargo test --release -p switchyard --test it security::`.

use std::time::{Duration, Instant};

pub use crate::common::*;
pub use serde_json::{Value, json};
pub use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod accounts;
mod connections;
mod operator;
mod plugins;
mod policy;

pub const ADMIN: &str = "admin-token-0123456789";

/// An endpoint document for `POST …/webhook-endpoints`.
pub fn endpoint_doc(attrs: Value) -> Value {
    json!({"data": {"type": "webhook-endpoints", "attributes": attrs}})
}

/// Resident memory of a process, in bytes (Linux `/proc`).
pub fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}

/// Waits until `pred` holds on the router's log, or panics after `timeout`.
pub async fn wait_log(r: &Router, timeout: Duration, what: &str, pred: impl Fn(&str) -> bool) {
    let deadline = Instant::now() + timeout;
    loop {
        let log = r.log();
        if pred(&log) {
            return;
        }
        if Instant::now() > deadline {
            panic!("timed out waiting for {what}; log:\n{log}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// POSTs an event with the test token to a router by base URL.
pub async fn post_event_to(c: &Client, base: &str, account: &str, body: &Value) -> Resp {
    c.request(
        "POST",
        &format!("{base}/v1/accounts/{account}/events"),
        &[
            ("authorization", &format!("Bearer {TOKEN}")),
            ("content-type", "application/json"),
        ],
        body.to_string(),
    )
    .await
}

/// Runs the `switchyard` CLI against a router (off the async workers);
/// returns success, stdout and stderr.
pub async fn cli(r: &Router, token: &str, args: &[&str]) -> (bool, String, String) {
    let mut cmd = std::process::Command::new(BIN);
    cmd.args(args)
        .env("SWITCHYARD_URL", r.url(""))
        .env("SWITCHYARD_TOKEN", token);
    tokio::task::spawn_blocking(move || {
        let out = cmd.output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .unwrap()
}
