//! Delivery policies that the configuration names and delivery enforces:
//! which URLs and addresses may be reached (`guard`), and when a failed
//! attempt is retried (`retry`). A leaf: it imports nothing of the crate,
//! so `config` and `delivery` can both depend on it.

pub mod guard;
pub mod retry;
