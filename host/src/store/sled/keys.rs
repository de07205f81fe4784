//! The key layout: everything lives in one sled tree under key prefixes, so
//! one `apply_batch` (atomic in sled) covers an event, all its deliveries
//! and their due entries. Ids are 16 raw bytes, times big-endian ms.
//!
//! - `e/<account>\0<event>` → event record — an account's events in time
//!   order (UUIDv7), payload compressed
//! - `d/<event><endpoint-uid>` → delivery record
//! - `q/<endpoint-uid><due-ms><event>` → () — the due index
//! - `t/<event><endpoint-uid><attempt-no>` → attempt record
//! - `i/<account>\0<key>` → idempotency record
//! - `n/<account>\0<endpoint-id>` → endpoint created through the API (JSON)
//! - `x/<endpoint-uid>` → endpoint state
//! - `s/<account>\0<event>` → schedule record — only events ingested with
//!   `deliver_at`/`deliver_in`/`schedule_key` (scheduled events)
//! - `k/<account>\0<schedule-key>` → the event id (16 bytes) last
//!   scheduled under that key
//! - `v/format` → the layout's version; older stores are migrated when opened

use uuid::Uuid;

/// Events live under their account, in time order (UUIDv7): the key
/// itself is the account's event index, so there is no second key to
/// write per event, and an event can only be found through its account.
pub fn event(account: &str, id: Uuid) -> Vec<u8> {
    [b"e/".as_slice(), account.as_bytes(), b"\0", id.as_bytes()].concat()
}
pub fn event_prefix(account: &str) -> Vec<u8> {
    [b"e/".as_slice(), account.as_bytes(), b"\0"].concat()
}
pub fn delivery(event: Uuid, ep: Uuid) -> Vec<u8> {
    [b"d/".as_slice(), event.as_bytes(), ep.as_bytes()].concat()
}
pub fn delivery_prefix(event: Uuid) -> Vec<u8> {
    [b"d/".as_slice(), event.as_bytes()].concat()
}
pub fn due(ep: Uuid, due_ms: i64, event: Uuid) -> Vec<u8> {
    [
        b"q/".as_slice(),
        ep.as_bytes(),
        &(due_ms.max(0) as u64).to_be_bytes(),
        event.as_bytes(),
    ]
    .concat()
}
pub fn due_prefix(ep: Uuid) -> Vec<u8> {
    [b"q/".as_slice(), ep.as_bytes()].concat()
}
pub fn attempt(event: Uuid, ep: Uuid, n: u32) -> Vec<u8> {
    [
        b"t/".as_slice(),
        event.as_bytes(),
        ep.as_bytes(),
        &n.to_be_bytes(),
    ]
    .concat()
}
pub fn attempt_prefix(event: Uuid, ep: Uuid) -> Vec<u8> {
    [b"t/".as_slice(), event.as_bytes(), ep.as_bytes()].concat()
}
pub fn idem(account: &str, key: &str) -> Vec<u8> {
    [b"i/".as_slice(), account.as_bytes(), b"\0", key.as_bytes()].concat()
}
pub fn api_endpoint(account: &str, id: &str) -> Vec<u8> {
    [b"n/".as_slice(), account.as_bytes(), b"\0", id.as_bytes()].concat()
}
pub fn endpoint_state(ep: Uuid) -> Vec<u8> {
    [b"x/".as_slice(), ep.as_bytes()].concat()
}

pub fn schedule(account: &str, event: Uuid) -> Vec<u8> {
    [
        b"s/".as_slice(),
        account.as_bytes(),
        b"\0",
        event.as_bytes(),
    ]
    .concat()
}
pub fn schedule_key(account: &str, key: &str) -> Vec<u8> {
    [b"k/".as_slice(), account.as_bytes(), b"\0", key.as_bytes()].concat()
}

pub fn uuid_at(bytes: &[u8], at: usize) -> Uuid {
    let mut b = [0u8; 16];
    b.copy_from_slice(&bytes[at..at + 16]);
    Uuid::from_bytes(b)
}

/// The end of a prefix range (the prefix with its last byte incremented).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0xff; prefix.len() + 1]
}

/// The due time and event of a due-index key.
pub fn parse_due(key: &[u8]) -> Option<(i64, Uuid)> {
    if key.len() != 2 + 16 + 8 + 16 {
        return None;
    }
    let due_ms = i64::from_be_bytes(key[18..26].try_into().ok()?);
    Some((due_ms, uuid_at(key, 26)))
}

/// A batch in flight (`BatchJournal`).
pub fn batch(id: Uuid) -> Vec<u8> {
    [b"j/".as_slice(), id.as_bytes()].concat()
}
pub const BATCH_PREFIX: &[u8] = b"j/";
