//! `switchyard keygen send`: posts a sample event to a router's Keygen
//! source exactly as Keygen would deliver it — the webhook-event envelope,
//! `Date`, `Digest` and an ed25519 `Keygen-Signature` made with a seed — so
//! a user can try the source without a Keygen account.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use clap::Args;
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};

use crate::signing::{KeygenKey, keygen_sign};

#[derive(Args, Debug)]
pub struct SendArgs {
    /// Switchyard account whose Keygen source receives the event.
    #[arg(long)]
    pub account: String,
    /// Keygen signing seed (64 hex; `switchyard keys generate` makes one;
    /// the account's keygen_verify_key must be its public half).
    #[arg(long, env = "SWITCHYARD_KEYGEN_SEED", hide_env_values = true)]
    pub key: String,
    /// Base URL of the router.
    #[arg(long, env = "SWITCHYARD_URL", default_value = "http://127.0.0.1:8686")]
    pub url: String,
    /// The Keygen account id sent as `keyid`.
    #[arg(long, default_value = "keygen-sample-account")]
    pub keyid: String,
    /// Sign for this host instead of the URL's (as Keygen does when a
    /// proxy in front of the router has another name).
    #[arg(long)]
    pub host: Option<String>,
    /// An event file: the native form (`examples/events/*.json`), wrapped
    /// into a Keygen envelope, or a Keygen webhook-event envelope as is.
    pub file: PathBuf,
}

/// The Keygen webhook-event envelope around a native `{event, payload, id?, created?}`.
fn envelope(native: &Value, endpoint: &str, keyid: &str) -> anyhow::Result<Value> {
    let event = native["event"].as_str().context(
        "the file has no \"event\" member (a native event) and no \"data\" (a Keygen envelope)",
    )?;
    let payload = native
        .get("payload")
        .context("the file has no \"payload\" member")?;
    let id = uuid::Uuid::new_v4().to_string();
    let now = crate::delivery::envelope::rfc3339(crate::store::now_ms());
    let created = native["created"].as_str().unwrap_or(&now);
    Ok(json!({"data": {
        "id": id,
        "type": "webhook-events",
        "attributes": {
            "endpoint": endpoint,
            "apiVersion": "1.7",
            "payload": payload.to_string(),
            "event": event,
            "status": "DELIVERING",
            "lastResponseCode": null,
            "lastResponseBody": null,
            "created": created,
            "updated": created,
        },
        "relationships": {"account": {
            "data": {"type": "accounts", "id": keyid},
            "links": {"related": format!("/v1/accounts/{keyid}")},
        }},
        "links": {"self": format!("/v1/accounts/{keyid}/webhook-events/{id}")},
        "meta": {"idempotencyToken": hex::encode(uuid::Uuid::new_v4().as_bytes())},
    }}))
}

pub fn run(args: SendArgs) -> anyhow::Result<()> {
    let key = KeygenKey::from_hex(&args.key).map_err(|e| anyhow::anyhow!("--key: {e}"))?;
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let v: Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not JSON", args.file.display()))?;
    let path = format!("/v1/accounts/{}/sources/keygen", args.account);
    let url = format!("{}{path}", args.url.trim_end_matches('/'));
    let uri: http::Uri = url
        .parse()
        .with_context(|| format!("{url} is not a valid URL (--url)"))?;
    let host = match &args.host {
        Some(h) => h.clone(),
        None => uri
            .authority()
            .map(|a| a.as_str().to_string())
            .context("--url needs a host")?,
    };
    let body = if v.get("data").is_some() {
        v
    } else {
        envelope(&v, &url, &args.keyid)?
    }
    .to_string();
    let date = httpdate::fmt_http_date(std::time::SystemTime::now());
    let signed = keygen_sign(&key, &args.keyid, &host, &path, &date, body.as_bytes());
    let req = http::Request::builder()
        .method("POST")
        .uri(uri)
        .header("host", &host)
        .header("content-type", "application/json")
        .header("accept", "application/json")
        .header("user-agent", "Keygen (switchyard keygen send)")
        .header("date", &signed.date)
        .header("digest", &signed.digest)
        .header("keygen-signature", &signed.signature)
        .body(Full::new(Bytes::from(body)))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let client = crate::cli::https_client()?;
        let resp = tokio::time::timeout(Duration::from_secs(15), client.request(req))
            .await
            .with_context(|| format!("POST {url}: no answer within 15 s"))?
            .with_context(|| {
                format!("POST {url}: cannot reach the router (is it running? check --url)")
            })?;
        let status = resp.status();
        let bytes = resp.into_body().collect().await?.to_bytes();
        let answer: Value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| json!(String::from_utf8_lossy(&bytes)));
        println!(
            "{}",
            serde_json::to_string_pretty(&answer).unwrap_or_default()
        );
        if !status.is_success() {
            let detail = answer["errors"][0]["detail"].as_str().unwrap_or("");
            bail!("HTTP {} from POST {path}: {detail}", status.as_u16());
        }
        Ok(())
    })
}
