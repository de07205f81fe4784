//! `switchyard store copy`: moves an installation from the embedded sled
//! store to PostgreSQL — events, deliveries with their place in the queue,
//! the attempt log, idempotency keys, schedules, API endpoints and
//! endpoint state. The router must be stopped (sled's lock says so
//! otherwise); the database must hold no events yet (a second copy would
//! mix two histories). Items move in chunks, each chunk one transaction.

use uuid::Uuid;

use super::postgres::PgStore;
use super::sled::SledStore;
use super::{
    AttemptRecord, DeliveryRecord, EndpointState, EventRecord, ScheduleRecord, StoreError,
    StoredEndpoint,
};

/// One stored thing, whatever the backend.
#[derive(Debug, Clone)]
pub enum Item {
    Event(Uuid, EventRecord),
    Delivery(Uuid, Uuid, DeliveryRecord),
    Attempt(Uuid, Uuid, u32, AttemptRecord),
    Idempotency {
        account: String,
        key: String,
        event: Uuid,
        at_ms: i64,
    },
    Schedule(Uuid, String, ScheduleRecord),
    ScheduleKey {
        account: String,
        key: String,
        event: Uuid,
    },
    ApiEndpoint(StoredEndpoint),
    EndpointState(Uuid, EndpointState),
}

/// What a copy moved, by kind.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Copied {
    pub events: u64,
    pub deliveries: u64,
    pub pending: u64,
    pub attempts: u64,
    pub other: u64,
}

/// Items per transaction.
const CHUNK: usize = 2000;

/// Copies everything from `from` into `to` (which must hold no events).
pub async fn copy(
    from: &SledStore,
    to: &PgStore,
    mut progress: impl FnMut(&Copied),
) -> Result<Copied, StoreError> {
    if to.has_events().await? {
        return Err(StoreError::Open(
            "the PostgreSQL database already holds events: copy into an empty database \
             (a second copy would mix two histories)"
                .into(),
        ));
    }
    let mut copied = Copied::default();
    let mut chunk = Vec::with_capacity(CHUNK);
    for item in from.export() {
        let item = item?;
        match &item {
            Item::Event(..) => copied.events += 1,
            Item::Delivery(_, _, d) => {
                copied.deliveries += 1;
                if d.due_ms.is_some() {
                    copied.pending += 1;
                }
            }
            Item::Attempt(..) => copied.attempts += 1,
            _ => copied.other += 1,
        }
        chunk.push(item);
        if chunk.len() >= CHUNK {
            to.import(std::mem::take(&mut chunk)).await?;
            progress(&copied);
        }
    }
    to.import(chunk).await?;
    progress(&copied);
    Ok(copied)
}

/// `switchyard store copy --from <data_dir> --to <url>`: opens both
/// stores, copies, and says what moved.
pub async fn run(from: &std::path::Path, to: &str) -> anyhow::Result<Copied> {
    use anyhow::Context as _;
    // `data_dir` or its `store` folder.
    let dir = if from.join("store").is_dir() {
        from.join("store")
    } else {
        from.to_path_buf()
    };
    if !dir.join("conf").exists() && !dir.join("db").exists() {
        anyhow::bail!(
            "{} holds no sled store: give the router's [server] data_dir (the folder with `store/` in it)",
            from.display()
        );
    }
    let sled = SledStore::open(&dir, 64 << 20, std::time::Duration::from_millis(500)).map_err(
        |e| match e {
            StoreError::Locked(_) => anyhow::anyhow!(
                "{e}: stop the router using {} first (a copy of a running store would miss what it writes meanwhile)",
                from.display()
            ),
            e => anyhow::anyhow!("opening {}: {e}", dir.display()),
        },
    )?;
    let pg = PgStore::open(&crate::config::PostgresConfig {
        url: to.to_string(),
        pool_size: 2,
        lease: crate::config::store::DEFAULT_LEASE,
    })
    .await
    .context("opening the PostgreSQL store")?;
    let copied = copy(&sled, &pg, |c| {
        eprintln!(
            "copied {} events, {} deliveries ({} pending), {} attempts, {} other records",
            c.events, c.deliveries, c.pending, c.attempts, c.other
        )
    })
    .await?;
    Ok(copied)
}
