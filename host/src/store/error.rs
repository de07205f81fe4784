//! What a store operation can fail with, whatever the backend.

/// A store failure. `Unavailable` is transient (the backend cannot be
/// reached or refuses writes for now): ingest answers 503 and delivery
/// pauses; the rest are reported as they are.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend cannot take the operation now (I/O error, full disk,
    /// database unreachable).
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// A stored record does not decode.
    #[error("corrupt record {what}: {detail}")]
    Corrupt { what: String, detail: String },
    /// The store is shutting down.
    #[error("the store is shutting down")]
    Closed,
    /// Another process holds the store (a router still running, or one
    /// just killed and not yet reaped): opening may succeed shortly.
    #[error("the store is locked by another process: {0}")]
    Locked(String),
    /// The store cannot be opened as configured (newer format, bad path…).
    #[error("{0}")]
    Open(String),
}
