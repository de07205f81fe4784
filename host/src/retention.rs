//! Retention: deletes events (with their deliveries and attempts) older than
//! `[server] retention` in the background, a small batch at a time so ingest
//! never waits on it. Deliveries still pending are kept whatever their age.

use std::sync::Arc;
use std::time::Duration;

use tracing::{info, warn};

use crate::state::AppState;

/// Starts the background pruner; it stops with the runtime.
pub fn spawn(state: Arc<AppState>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let cfg = state.config();
            let cutoff = crate::store::now_ms()
                .saturating_sub(crate::policy::retry::millis_i64(cfg.server.retention));
            let mut total = 0;
            for a in cfg.accounts.iter().map(|a| a.id.as_str()) {
                match state.store.prune(a, cutoff, 10_000).await {
                    Ok(n) => total += n,
                    Err(e) => warn!(account = %a, error = %e, "retention pass failed"),
                }
            }
            let r: Result<usize, ()> = Ok(total);
            if let Ok(n) = r {
                if n > 0 {
                    info!(deleted = n, "retention: old events deleted");
                }
            }
            let every = (state.config().server.retention / 2)
                .clamp(Duration::from_secs(1), Duration::from_secs(60));
            tokio::time::sleep(every).await;
        }
    })
}
