//! Brings a store written by an older Switchyard to the current layout.

use serde::Deserialize;

use super::codec::{dec, enc_event};
use super::keys::{self, uuid_at};
use super::{FORMAT, io};
use crate::store::{EventRecord, StoreError};

pub const FORMAT_KEY: &[u8] = b"v/format";

/// Brings a store written by an older Switchyard to [`FORMAT`], in
/// batches (each atomic: an event is under its old key or its new one),
/// so an interrupted migration resumes where it stopped.
pub fn migrate(db: &sled::Db, tree: &sled::Tree) -> Result<(), StoreError> {
    let version = match tree.get(FORMAT_KEY).map_err(io)? {
        Some(v) if v.len() == 4 => u32::from_be_bytes([v[0], v[1], v[2], v[3]]),
        Some(_) => return Err(StoreError::Open("unreadable store format marker".into())),
        None => 1,
    };
    if version > FORMAT {
        return Err(StoreError::Open(format!(
            "the store was written by a newer Switchyard (format {version}, this one reads up to {FORMAT}): \
             run that version, or point data_dir at a new folder"
        )));
    }
    if version == 1 {
        /// Format 1's event record: the same fields, the payload raw.
        #[derive(Deserialize)]
        struct V1 {
            account: String,
            event_type: String,
            created_ms: i64,
            source_id: Option<String>,
            payload: Vec<u8>,
            endpoints: Vec<String>,
        }
        let mut moved = 0usize;
        loop {
            let mut batch = sled::Batch::default();
            let mut n = 0;
            for kv in tree.scan_prefix(b"a/").keys().take(1000) {
                let k = kv.map_err(io)?;
                n += 1;
                batch.remove(k.clone());
                let Some(nul) = k.iter().position(|&b| b == 0) else {
                    continue;
                };
                if k.len() != nul + 17 {
                    continue;
                }
                let id = uuid_at(&k, nul + 1);
                let old = [b"e/".as_slice(), id.as_bytes()].concat();
                if let Some(v) = tree.get(&old).map_err(io)? {
                    let r: V1 = dec(&old, &v)?;
                    let record = EventRecord {
                        account: r.account,
                        event_type: r.event_type,
                        created_ms: r.created_ms,
                        source_id: r.source_id,
                        payload: r.payload,
                        endpoints: r.endpoints,
                    };
                    batch.insert(keys::event(&record.account, id), enc_event(&record));
                    batch.remove(old);
                    moved += 1;
                }
            }
            if n == 0 {
                break;
            }
            tree.apply_batch(batch).map_err(io)?;
        }
        if moved > 0 {
            tracing::info!(events = moved, "store migrated from format 1 to {FORMAT}");
        }
    }
    if version != FORMAT {
        tree.insert(FORMAT_KEY, &FORMAT.to_be_bytes()).map_err(io)?;
        db.flush().map_err(io)?;
    }
    Ok(())
}
