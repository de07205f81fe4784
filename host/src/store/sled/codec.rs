//! How records become bytes in sled: postcard, with event payloads
//! compressed (see [`packed`]); and the idempotency record, which only this
//! backend keeps.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::store::{AttemptRecord, EventRecord, StoreError};

/// An idempotency key's record: which event first took it, and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdemRecord {
    pub event: [u8; 16],
    pub at_ms: i64,
}

pub fn enc<T: Serialize>(v: &T) -> Vec<u8> {
    // postcard only fails on types it cannot represent; ours are plain data.
    postcard::to_stdvec(v).expect("records are plain data")
}

pub fn dec<T: DeserializeOwned>(key: &[u8], bytes: &[u8]) -> Result<T, StoreError> {
    postcard::from_bytes(bytes).map_err(|source| StoreError::Corrupt {
        what: format!("under {}", String::from_utf8_lossy(key)),
        detail: source.to_string(),
    })
}

/// An attempt as stored before it named its batch (`AttemptRecord`
/// without `batch`): postcard is not self-describing, so a record written
/// by an older version fails to decode as the new struct (it ends early)
/// and is read with this one.
#[derive(Deserialize)]
struct AttemptV1 {
    at_ms: i64,
    status: Option<u16>,
    error: Option<String>,
    latency_us: u64,
    response: Vec<u8>,
}

pub fn dec_attempt(key: &[u8], bytes: &[u8]) -> Result<AttemptRecord, StoreError> {
    match postcard::from_bytes::<AttemptRecord>(bytes) {
        Ok(a) => Ok(a),
        Err(_) => {
            let a: AttemptV1 = dec(key, bytes)?;
            Ok(AttemptRecord {
                at_ms: a.at_ms,
                status: a.status,
                error: a.error,
                latency_us: a.latency_us,
                response: a.response,
                batch: None,
            })
        }
    }
}

#[cfg(test)]
mod attempt_tests {
    use super::*;
    use crate::store::BatchRef;

    /// Attempts written before `batch` existed still decode.
    #[test]
    fn attempts_of_the_previous_format_decode() {
        let old = enc(&(
            5i64,
            Some(503u16),
            None::<String>,
            1200u64,
            b"busy".to_vec(),
        ));
        let a = dec_attempt(b"k", &old).unwrap();
        assert_eq!(a.status, Some(503));
        assert_eq!(a.response, b"busy");
        assert_eq!(a.batch, None);
        let new = AttemptRecord {
            batch: Some(BatchRef {
                id: [7; 16],
                size: 3,
            }),
            ..a
        };
        assert_eq!(dec_attempt(b"k", &enc(&new)).unwrap(), new);
    }
}

/// An event record as stored: the same fields in the same order (format 2),
/// the payload packed.
#[derive(Serialize)]
struct EventOut<'a> {
    account: &'a str,
    event_type: &'a str,
    created_ms: i64,
    source_id: &'a Option<String>,
    #[serde(with = "packed")]
    payload: &'a [u8],
    endpoints: &'a [String],
}

#[derive(Deserialize)]
struct EventIn {
    account: String,
    event_type: String,
    created_ms: i64,
    source_id: Option<String>,
    #[serde(deserialize_with = "packed::deserialize")]
    payload: Vec<u8>,
    endpoints: Vec<String>,
}

pub fn enc_event(e: &EventRecord) -> Vec<u8> {
    enc(&EventOut {
        account: &e.account,
        event_type: &e.event_type,
        created_ms: e.created_ms,
        source_id: &e.source_id,
        payload: &e.payload,
        endpoints: &e.endpoints,
    })
}

pub fn dec_event(key: &[u8], bytes: &[u8]) -> Result<EventRecord, StoreError> {
    let e: EventIn = dec(key, bytes)?;
    Ok(EventRecord {
        account: e.account,
        event_type: e.event_type,
        created_ms: e.created_ms,
        source_id: e.source_id,
        payload: e.payload,
        endpoints: e.endpoints,
    })
}

/// Event payloads on disk: zstd level 1, which halves a typical 1 KB
/// Keygen document (1,206 → 651 bytes) for about 6 µs. sled rewrites a
/// whole leaf (up to 16 entries) every few inserts, so the bytes of a
/// stored event are written several times over; halving them halves the
/// data every flush and every periodic fsync has to push (BENCHMARKS.md).
/// Layout: tag 0 + the bytes as they are (when compression does not pay),
/// or tag 1 + original length (u32 LE) + one zstd frame.
pub mod packed {
    use serde::{Deserializer, Serializer};
    use std::cell::RefCell;

    const RAW: u8 = 0;
    const ZSTD: u8 = 1;
    /// Larger than any payload ingest accepts; guards against a corrupt length.
    const MAX_LEN: usize = 256 << 20;

    thread_local! {
        static COMPRESSOR: RefCell<Option<zstd::bulk::Compressor<'static>>> =
            RefCell::new(zstd::bulk::Compressor::new(1).ok());
        static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> =
            RefCell::new(zstd::bulk::Decompressor::new().ok());
    }

    pub fn pack(payload: &[u8]) -> Vec<u8> {
        let compressed = (payload.len() >= 64 && payload.len() <= MAX_LEN)
            .then(|| {
                COMPRESSOR.with(|c| {
                    c.borrow_mut()
                        .as_mut()
                        .and_then(|c| c.compress(payload).ok())
                })
            })
            .flatten()
            .filter(|z| z.len() + 5 < payload.len());
        match compressed {
            Some(z) => {
                let mut out = Vec::with_capacity(z.len() + 5);
                out.push(ZSTD);
                out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
                out.extend_from_slice(&z);
                out
            }
            None => {
                let mut out = Vec::with_capacity(payload.len() + 1);
                out.push(RAW);
                out.extend_from_slice(payload);
                out
            }
        }
    }

    pub fn unpack(stored: &[u8]) -> Result<Vec<u8>, String> {
        match stored.split_first() {
            Some((&RAW, rest)) => Ok(rest.to_vec()),
            Some((&ZSTD, rest)) if rest.len() >= 4 => {
                let (len, frame) = rest.split_at(4);
                let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
                if len > MAX_LEN {
                    return Err(format!("payload length {len} out of range"));
                }
                DECOMPRESSOR.with(|d| match d.borrow_mut().as_mut() {
                    Some(d) => d
                        .decompress(frame, len)
                        .map_err(|e| format!("payload does not decompress: {e}")),
                    None => Err("no zstd decompressor".into()),
                })
            }
            _ => Err("unknown payload encoding".into()),
        }
    }

    // As bytes, not a sequence of u8: the same postcard encoding (length,
    // then the bytes), without a serde call per byte.
    pub fn serialize<S: Serializer>(payload: &&[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&pack(payload))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct Bytes;
        impl<'de> serde::de::Visitor<'de> for Bytes {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a stored payload")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                unpack(v).map_err(E::custom)
            }
        }
        d.deserialize_bytes(Bytes)
    }
}
