//! Every record of the store, decoded, for `store copy`.

use super::codec::{IdemRecord, dec, dec_attempt, dec_event};
use super::keys::uuid_at;
use super::{SledStore, io};
use crate::store::StoreError;
use crate::store::copy::Item;

impl SledStore {
    /// Every stored record as a backend-neutral [`Item`], in key order.
    /// The due index is not exported: a delivery's `due_ms` says it.
    pub fn export(&self) -> impl Iterator<Item = Result<Item, StoreError>> + '_ {
        self.tree.iter().filter_map(|kv| {
            let (k, v) = match kv {
                Ok(kv) => kv,
                Err(e) => return Some(Err(io(e))),
            };
            decode(&k, &v).transpose()
        })
    }
}

/// `account\0rest` after a two-byte prefix.
fn split(k: &[u8]) -> Option<(String, &[u8])> {
    let body = &k[2..];
    let nul = body.iter().position(|b| *b == 0)?;
    Some((
        String::from_utf8_lossy(&body[..nul]).into_owned(),
        &body[nul + 1..],
    ))
}

fn decode(k: &[u8], v: &[u8]) -> Result<Option<Item>, StoreError> {
    let corrupt = || StoreError::Corrupt {
        what: format!("key {}", String::from_utf8_lossy(k)),
        detail: "unexpected key shape".into(),
    };
    Ok(Some(match &k[..2.min(k.len())] {
        b"e/" => {
            let (_, id) = split(k).ok_or_else(corrupt)?;
            if id.len() != 16 {
                return Err(corrupt());
            }
            Item::Event(uuid_at(id, 0), dec_event(k, v)?)
        }
        b"d/" if k.len() == 34 => Item::Delivery(uuid_at(k, 2), uuid_at(k, 18), dec(k, v)?),
        b"t/" if k.len() == 38 => Item::Attempt(
            uuid_at(k, 2),
            uuid_at(k, 18),
            u32::from_be_bytes(k[34..38].try_into().map_err(|_| corrupt())?),
            dec_attempt(k, v)?,
        ),
        b"i/" => {
            let (account, key) = split(k).ok_or_else(corrupt)?;
            let r: IdemRecord = dec(k, v)?;
            Item::Idempotency {
                account,
                key: String::from_utf8_lossy(key).into_owned(),
                event: uuid::Uuid::from_bytes(r.event),
                at_ms: r.at_ms,
            }
        }
        b"s/" => {
            let (account, id) = split(k).ok_or_else(corrupt)?;
            if id.len() != 16 {
                return Err(corrupt());
            }
            Item::Schedule(uuid_at(id, 0), account, dec(k, v)?)
        }
        b"k/" => {
            let (account, key) = split(k).ok_or_else(corrupt)?;
            if v.len() != 16 {
                return Err(corrupt());
            }
            Item::ScheduleKey {
                account,
                key: String::from_utf8_lossy(key).into_owned(),
                event: uuid_at(v, 0),
            }
        }
        b"n/" => Item::ApiEndpoint(serde_json::from_slice(v).map_err(|e| StoreError::Corrupt {
            what: format!("endpoint {}", String::from_utf8_lossy(k)),
            detail: e.to_string(),
        })?),
        b"x/" if k.len() == 18 => Item::EndpointState(uuid_at(k, 2), dec(k, v)?),
        // The due index (derived from deliveries) and the format marker.
        _ => return Ok(None),
    }))
}
