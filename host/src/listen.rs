//! `switchyard listen`: a local webhook receiver for trying the router out
//! (the role the Keygen guide gives to ngrok). It verifies each delivery's
//! Standard Webhooks signature (and Keygen's, given the verify key), prints
//! one JSON line per delivery, and answers 200 when the signature holds,
//! 400 when it does not (so the router retries, as a real receiver would).

use std::net::SocketAddr;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::json;

use crate::signing::{self, Secret};

pub struct ListenOptions {
    pub listen: SocketAddr,
    pub secret: Option<Secret>,
    pub keygen_public_key: Option<String>,
    /// Answer this status to every valid delivery instead of 200.
    pub status: u16,
    /// Print bodies too.
    pub show_body: bool,
}

/// Runs until interrupted.
pub async fn run(opts: ListenOptions) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", opts.listen))?;
    eprintln!(
        "switchyard listen: receiving on http://{}/ (signature check: {}{})",
        listener.local_addr()?,
        if opts.secret.is_some() {
            "standard"
        } else {
            "none"
        },
        if opts.keygen_public_key.is_some() {
            " + keygen"
        } else {
            ""
        }
    );
    let opts = std::sync::Arc::new(opts);
    loop {
        let (stream, _) = tokio::select! {
            r = listener.accept() => r?,
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        let o = opts.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let o = o.clone();
                async move { Ok::<_, std::convert::Infallible>(handle(&o, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn header<'a>(req: &'a http::request::Parts, name: &str) -> Option<&'a str> {
    req.headers.get(name).and_then(|v| v.to_str().ok())
}

async fn handle(o: &ListenOptions, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, 16 << 20).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return reply(StatusCode::PAYLOAD_TOO_LARGE, "body too large"),
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let id = header(&parts, "webhook-id").unwrap_or("");
    let standard = match (&o.secret, header(&parts, "webhook-signature")) {
        (None, _) => "not checked".to_string(),
        (Some(_), None) => "missing".to_string(),
        (Some(secret), Some(sig)) => {
            let ts = header(&parts, "webhook-timestamp").unwrap_or("");
            match signing::verify_standard(secret, id, ts, sig, &body, now, 300) {
                Ok(()) => "valid".into(),
                Err(e) => format!("invalid: {e}"),
            }
        }
    };
    let keygen = match (&o.keygen_public_key, header(&parts, "keygen-signature")) {
        (None, _) => "not checked".to_string(),
        (Some(_), None) => "missing".to_string(),
        (Some(pk), Some(sig)) => {
            let host = header(&parts, "host").unwrap_or("");
            let path = parts
                .uri
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("/");
            let date = header(&parts, "date").unwrap_or("");
            let digest = header(&parts, "digest").unwrap_or("");
            match signing::verify_keygen(pk, sig, host, path, date, digest, &body) {
                Ok(()) => "valid".into(),
                Err(e) => format!("invalid: {e}"),
            }
        }
    };
    let parsed: serde_json::Value =
        serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    let event = parsed
        .pointer("/data/attributes/event")
        .cloned()
        .unwrap_or(serde_json::Value::Null);
    let ok = !standard.starts_with("invalid")
        && standard != "missing"
        && !keygen.starts_with("invalid")
        && keygen != "missing";
    let mut line = json!({
        "path": parts.uri.path(),
        "webhook_id": id,
        "event": event,
        "bytes": body.len(),
        "standard_signature": standard,
        "keygen_signature": keygen,
    });
    if o.show_body {
        line["body"] = if parsed.is_null() {
            json!(String::from_utf8_lossy(&body))
        } else {
            parsed
        };
    }
    println!("{line}");
    if ok {
        let status = StatusCode::from_u16(o.status).unwrap_or(StatusCode::OK);
        reply(status, "")
    } else {
        reply(StatusCode::BAD_REQUEST, "signature verification failed")
    }
}

fn reply(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r
}
