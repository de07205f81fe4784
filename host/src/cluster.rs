//! Several routers on one shared store (PostgreSQL): this node's side of
//! the protocol, run by `serve`.
//!
//! - every [`HEARTBEAT`] the node says it is alive and reads the store's
//!   change counter and how many nodes are alive;
//! - a changed counter (an endpoint created, changed or deleted through
//!   another node's API, or disabled or re-enabled there) reloads the
//!   endpoints and their state: a change on one node takes effect on every
//!   node within about a second;
//! - a changed node count re-divides each endpoint's `max_in_flight`;
//! - every second, batch requests a dead node left in flight are
//!   noted in their deliveries' attempt logs;
//! - every third of a lease, the claims on deliveries this node holds are
//!   renewed, so no other node takes them while this one lives.
//!
//! On sled (one node) none of this runs.

use std::sync::Arc;
use std::time::Duration;

use tracing::{info, warn};

use crate::state::AppState;

/// How often a node says it is alive and looks for changes.
pub const HEARTBEAT: Duration = Duration::from_millis(500);

/// Every this many heartbeats, the batches in flight of nodes that died
/// are noted in their deliveries' logs (`Backend::recover_batches`).
const RECOVER_EVERY: u64 = 2;

/// Starts the heartbeat and claim renewal when the store is shared. The
/// first heartbeat is awaited: the change counter it reads is the
/// baseline for the registry just built, before the node serves a request
/// (a change made on another node right after would otherwise be missed).
pub async fn spawn(state: Arc<AppState>) {
    let Some(lease) = state.store.lease() else {
        return;
    };
    // Unknown baseline (the first heartbeat failed): reload at the first
    // one that succeeds.
    let mut version = match state.store.heartbeat().await {
        Ok(v) => {
            state.dispatcher.set_nodes(v.nodes).await;
            Some(v.version)
        }
        Err(_) => None,
    };
    let st = state.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(HEARTBEAT);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut beats: u64 = 0;
        loop {
            tick.tick().await;
            beats += 1;
            if beats % RECOVER_EVERY == 0 {
                crate::app::recover_batches(&st.store).await;
            }
            let view = match st.store.heartbeat().await {
                Ok(v) => v,
                Err(e) => {
                    warn!(error = %e, "heartbeat failed");
                    continue;
                }
            };
            st.dispatcher.set_nodes(view.nodes).await;
            if version != Some(view.version) {
                info!(
                    version = view.version,
                    "endpoints changed on another node; reloading"
                );
                crate::app::reload_endpoints(&st).await;
                st.dispatcher.refresh_health().await;
            }
            version = Some(view.version);
        }
    });
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(lease / 3);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let held = state.dispatcher.held();
            if let Err(e) = state.store.renew(&held).await {
                warn!(error = %e, held = held.len(), "renewing this node's claims failed; they lapse after the lease unless the next renewal succeeds");
            }
        }
    });
}
