//! Account resources over HTTP: webhook endpoints and webhook events
//! (list, show, retry, recover, ping) and the admin's plugin list.

use http::{Request, Response};
use hyper::body::Incoming;

use crate::api::{ApiError, Body};
use crate::server::AppState;

/// Routes everything that is not ingest, health or metrics.
pub async fn route(_state: &AppState, req: Request<Incoming>, _segments: &[&str]) -> Result<Response<Body>, ApiError> {
    Err(ApiError::not_found(&format!("route {} {}", req.method(), req.uri().path())))
}
