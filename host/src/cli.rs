//! The operator CLI: `switchyard events list|show|retry` and
//! `switchyard endpoints list|create|ping|recover`, talking to a running
//! router over its HTTP API (`--url`, `--token` or `SWITCHYARD_URL`,
//! `SWITCHYARD_TOKEN`). Tables by default, the API's JSON with `--json`.

use std::time::Duration;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use clap::{Args, Subcommand};
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};

/// Where the router is and who we are.
#[derive(Args, Debug, Clone)]
pub struct ApiArgs {
    /// Base URL of the router.
    #[arg(long, env = "SWITCHYARD_URL", default_value = "http://127.0.0.1:8686")]
    pub url: String,
    /// Account token or admin token.
    #[arg(long, env = "SWITCHYARD_TOKEN", hide_env_values = true)]
    pub token: String,
    /// Account id.
    #[arg(long, env = "SWITCHYARD_ACCOUNT")]
    pub account: String,
    /// Print the API's JSON document instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum EventsCmd {
    /// List webhook events, newest first.
    List {
        #[command(flatten)]
        api: ApiArgs,
        /// Event type or family (`license.*`), comma-separated.
        #[arg(long)]
        event: Option<String>,
        /// Delivery status: delivering, failing, delivered, failed, filtered, disabled, cancelled.
        #[arg(long)]
        status: Option<String>,
        /// Endpoint id.
        #[arg(long)]
        endpoint: Option<String>,
        /// Stored at or after this RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        /// Stored at or before this RFC 3339 time.
        #[arg(long)]
        until: Option<String>,
        /// Events per page (1-100).
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Cursor: list events older than this event id (`links.next`).
        #[arg(long)]
        before: Option<String>,
    },
    /// Show one event with each delivery and its attempts.
    Show {
        #[command(flatten)]
        api: ApiArgs,
        id: String,
    },
    /// Send an event again (same webhook-id) to every endpoint, or one.
    Retry {
        #[command(flatten)]
        api: ApiArgs,
        id: String,
        #[arg(long)]
        endpoint: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum EndpointsCmd {
    /// List webhook endpoints.
    List {
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Create a webhook endpoint; prints its secret (shown only once).
    Create {
        #[command(flatten)]
        api: ApiArgs,
        /// The https:// URL deliveries are POSTed to.
        #[arg(long = "endpoint-url", alias = "target")]
        endpoint_url: Option<String>,
        /// Endpoint id (generated when omitted).
        #[arg(long)]
        id: Option<String>,
        /// Event pattern (repeatable): `*`, `license.*`, `user.created`.
        #[arg(long = "subscription")]
        subscriptions: Vec<String>,
        /// Signing secret (whsec_…); generated when omitted.
        #[arg(long)]
        secret: Option<String>,
        /// Plugin as name or name=<JSON config> (repeatable, in order).
        #[arg(long = "plugin")]
        plugins: Vec<String>,
        /// Retry delays, e.g. --retry 1m --retry 1h.
        #[arg(long = "retry")]
        retry_schedule: Vec<String>,
    },
    /// Deliver a webhook.ping event now and print the receiver's answer.
    Ping {
        #[command(flatten)]
        api: ApiArgs,
        id: String,
    },
    /// Re-queue the endpoint's failed deliveries since a time.
    Recover {
        #[command(flatten)]
        api: ApiArgs,
        id: String,
        /// RFC 3339 time, e.g. 2024-05-01T00:00:00Z.
        #[arg(long)]
        since: String,
    },
}

/// A minimal HTTP(S) client for the API.
struct Api {
    args: ApiArgs,
    client: hyper_util::client::legacy::Client<
        hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
        Full<Bytes>,
    >,
}

/// An HTTP(S) client trusting the web PKI roots (the API client's, and
/// `switchyard keygen send`'s).
pub(crate) type HttpsClient = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    Full<Bytes>,
>;

pub(crate) fn https_client() -> anyhow::Result<HttpsClient> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .build();
    Ok(
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(https),
    )
}

impl Api {
    fn new(args: ApiArgs) -> anyhow::Result<Api> {
        Ok(Api {
            args,
            client: https_client()?,
        })
    }

    fn account_path(&self, rest: &str) -> String {
        format!("/v1/accounts/{}/{rest}", enc(&self.args.account))
    }

    /// Sends a request; non-2xx answers become errors with the API's detail.
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.args.url.trim_end_matches('/'));
        let mut req = http::Request::builder()
            .method(method)
            .uri(&url)
            .header("authorization", format!("Bearer {}", self.args.token))
            .header("accept", crate::api::JSONAPI)
            .header(
                "user-agent",
                concat!("switchyard-cli/", env!("CARGO_PKG_VERSION")),
            );
        if body.is_some() {
            req = req.header("content-type", crate::api::JSONAPI);
        }
        let req = req
            .body(Full::new(Bytes::from(
                body.map(|b| b.to_string()).unwrap_or_default(),
            )))
            .with_context(|| format!("{url} is not a valid URL (--url / SWITCHYARD_URL)"))?;
        let resp = tokio::time::timeout(Duration::from_secs(60), self.client.request(req))
            .await
            .with_context(|| format!("{method} {url}: no answer within 60 s"))?
            .with_context(|| {
                format!("{method} {url}: cannot reach the router (is it running? check --url)")
            })?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .context("reading the answer")?
            .to_bytes();
        let v: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| json!(String::from_utf8_lossy(&bytes)))
        };
        if !status.is_success() {
            let detail = v["errors"][0]["detail"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| v.to_string());
            let title = v["errors"][0]["title"].as_str().unwrap_or("error");
            bail!(
                "HTTP {} from {method} {path}: {title}: {detail}",
                status.as_u16()
            );
        }
        Ok(v)
    }
}

/// Percent-encodes a path segment or query value.
fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'*' | b':') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

fn print_json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

/// Prints rows as aligned columns.
fn table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let s: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect();
        println!("{}", s.join("  ").trim_end());
    };
    line(headers.iter().map(|h| h.to_string()).collect());
    for r in rows {
        line(r.clone());
    }
}

/// A value for human output: strings come from receivers, plugins and
/// producers, so control characters (ANSI escapes, OSC titles, newlines
/// that would break a table) and bidi overrides are shown escaped.
/// `--json` output stays exact.
fn s(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => clean(s),
        other => other.to_string(),
    }
}

/// Escapes control and bidi-override characters (`\n`, `\u{1b}`, …).
pub fn clean(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        let bidi = matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}');
        if c.is_control() || bidi {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

fn event_row(e: &Value) -> Vec<String> {
    let a = &e["attributes"];
    let deliveries: Vec<String> = a["deliveries"]
        .as_array()
        .map(|ds| {
            ds.iter()
                .map(|d| format!("{}:{}", s(&d["endpoint"]), s(&d["status"])))
                .collect()
        })
        .unwrap_or_default();
    // A scheduled event shows its due time beside its status.
    let status = match a["deliverAt"].as_str() {
        Some(due) => format!("{} (due {due})", s(&a["status"])),
        None => s(&a["status"]),
    };
    vec![
        s(&e["id"]),
        s(&a["event"]),
        status,
        s(&a["received"]),
        deliveries.join(" "),
    ]
}

pub fn run_events(cmd: EventsCmd) -> anyhow::Result<()> {
    runtime()?.block_on(events(cmd))
}

pub fn run_endpoints(cmd: EndpointsCmd) -> anyhow::Result<()> {
    runtime()?.block_on(endpoints(cmd))
}

async fn events(cmd: EventsCmd) -> anyhow::Result<()> {
    match cmd {
        EventsCmd::List {
            api,
            event,
            status,
            endpoint,
            since,
            until,
            limit,
            before,
        } => {
            let json_out = api.json;
            let api = Api::new(api)?;
            let mut q = vec![format!("page[size]={limit}")];
            for (k, v) in [
                ("filter[event]", event),
                ("filter[status]", status),
                ("filter[endpoint]", endpoint),
                ("filter[since]", since),
                ("filter[until]", until),
                ("page[before]", before),
            ] {
                if let Some(v) = v {
                    q.push(format!("{k}={}", enc(&v)));
                }
            }
            let v = api
                .call(
                    "GET",
                    &format!("{}?{}", api.account_path("webhook-events"), q.join("&")),
                    None,
                )
                .await?;
            if json_out {
                print_json(&v);
            } else {
                let rows: Vec<Vec<String>> = v["data"]
                    .as_array()
                    .map(|d| d.iter().map(event_row).collect())
                    .unwrap_or_default();
                table(&["ID", "EVENT", "STATUS", "RECEIVED", "DELIVERIES"], &rows);
                if let Some(next) = v["links"]["next"].as_str() {
                    let cursor = next
                        .split("page[before]=")
                        .nth(1)
                        .and_then(|c| c.split('&').next())
                        .unwrap_or("");
                    println!("(more: --before {cursor})");
                }
            }
        }
        EventsCmd::Show { api, id } => {
            let json_out = api.json;
            let api = Api::new(api)?;
            let v = api
                .call(
                    "GET",
                    &api.account_path(&format!("webhook-events/{}", enc(&id))),
                    None,
                )
                .await?;
            if json_out {
                print_json(&v);
            } else {
                let d = &v["data"];
                let a = &d["attributes"];
                println!(
                    "event    {}\ntype     {}\nstatus   {}\ncreated  {}\nreceived {}",
                    s(&d["id"]),
                    s(&a["event"]),
                    s(&a["status"]),
                    s(&a["created"]),
                    s(&a["received"])
                );
                let mut rows = Vec::new();
                for del in a["deliveries"].as_array().into_iter().flatten() {
                    let attempts = del["attempts"].as_array().cloned().unwrap_or_default();
                    if attempts.is_empty() {
                        rows.push(vec![
                            s(&del["endpoint"]),
                            s(&del["status"]),
                            s(&del["webhookId"]),
                            "-".into(),
                            "-".into(),
                            "-".into(),
                            s(&del["reason"]),
                        ]);
                    }
                    for (i, at) in attempts.iter().enumerate() {
                        let result = if at["status"].is_null() {
                            s(&at["error"])
                        } else {
                            s(&at["status"])
                        };
                        let excerpt: String = s(&at["responseBody"]).chars().take(60).collect();
                        rows.push(vec![
                            if i == 0 {
                                s(&del["endpoint"])
                            } else {
                                String::new()
                            },
                            if i == 0 {
                                s(&del["status"])
                            } else {
                                String::new()
                            },
                            if i == 0 {
                                s(&del["webhookId"])
                            } else {
                                String::new()
                            },
                            s(&at["at"]),
                            result,
                            format!("{:.1}ms", at["latencyMs"].as_f64().unwrap_or(0.0)),
                            excerpt,
                        ]);
                    }
                }
                println!();
                table(
                    &[
                        "ENDPOINT",
                        "STATUS",
                        "WEBHOOK-ID",
                        "ATTEMPT AT",
                        "RESULT",
                        "LATENCY",
                        "RESPONSE",
                    ],
                    &rows,
                );
            }
        }
        EventsCmd::Retry { api, id, endpoint } => {
            let json_out = api.json;
            let api = Api::new(api)?;
            let mut path = api.account_path(&format!("webhook-events/{}/actions/retry", enc(&id)));
            if let Some(e) = endpoint {
                path.push_str(&format!("?endpoint={}", enc(&e)));
            }
            let v = api.call("POST", &path, None).await?;
            if json_out {
                print_json(&v);
            } else {
                let list: Vec<String> = v["meta"]["requeued"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(s)
                    .collect();
                println!(
                    "re-queued event {id} to: {}",
                    if list.is_empty() {
                        "-".into()
                    } else {
                        list.join(", ")
                    }
                );
                for sk in v["meta"]["skipped"].as_array().into_iter().flatten() {
                    println!("skipped {}: {}", s(&sk["endpoint"]), s(&sk["reason"]));
                }
            }
        }
    }
    Ok(())
}

/// The endpoint table's header, one per cell of [`endpoint_row`].
const ENDPOINT_COLUMNS: &[&str] = &[
    "ID",
    "URL",
    "SUBSCRIPTIONS",
    "STATUS",
    "SOURCE",
    "FAILURES",
    "LAST SUCCESS",
    "LAST ERROR",
];

fn endpoint_row(e: &Value) -> Vec<String> {
    let a = &e["attributes"];
    let subs: Vec<String> = a["subscriptions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(s)
        .collect();
    vec![
        s(&e["id"]),
        s(&a["url"]),
        subs.join(","),
        s(&a["status"]),
        s(&a["source"]),
        s(&a["health"]["consecutiveFailures"]),
        s(&a["health"]["lastSuccess"]),
        s(&a["health"]["lastError"]),
    ]
}

async fn endpoints(cmd: EndpointsCmd) -> anyhow::Result<()> {
    match cmd {
        EndpointsCmd::List { api } => {
            let json_out = api.json;
            let api = Api::new(api)?;
            let mut all = Vec::new();
            let mut next = Some(format!(
                "{}?page[size]=100",
                api.account_path("webhook-endpoints")
            ));
            let mut last = Value::Null;
            while let Some(path) = next {
                let v = api.call("GET", &path, None).await?;
                all.extend(v["data"].as_array().cloned().unwrap_or_default());
                next = v["links"]["next"].as_str().map(str::to_string);
                last = v;
            }
            if json_out {
                last["data"] = Value::Array(all);
                last["links"]["next"] = Value::Null;
                print_json(&last);
            } else {
                let rows: Vec<Vec<String>> = all.iter().map(endpoint_row).collect();
                table(ENDPOINT_COLUMNS, &rows);
            }
        }
        EndpointsCmd::Create {
            api,
            endpoint_url,
            id,
            subscriptions,
            secret,
            plugins,
            retry_schedule,
        } => {
            let json_out = api.json;
            let Some(target) = endpoint_url else {
                bail!(
                    "give the receiver's URL with --endpoint-url https://… (--url is the router's address)"
                );
            };
            let api = Api::new(api)?;
            let mut attrs = json!({"url": target});
            if !subscriptions.is_empty() {
                attrs["subscriptions"] = json!(subscriptions);
            }
            if let Some(sec) = secret {
                attrs["secret"] = json!(sec);
            }
            if !retry_schedule.is_empty() {
                attrs["retrySchedule"] = json!(retry_schedule);
            }
            if !plugins.is_empty() {
                let mut list = Vec::new();
                for p in plugins {
                    let (name, config) = match p.split_once('=') {
                        None => (p.clone(), json!({})),
                        Some((n, c)) => (
                            n.to_string(),
                            serde_json::from_str(c).with_context(|| {
                                format!("--plugin {n}=…: the config is not JSON")
                            })?,
                        ),
                    };
                    list.push(json!({"name": name, "config": config}));
                }
                attrs["plugins"] = json!(list);
            }
            let mut doc = json!({"data": {"type": "webhook-endpoints", "attributes": attrs}});
            if let Some(id) = id {
                doc["data"]["id"] = json!(id);
            }
            let v = api
                .call("POST", &api.account_path("webhook-endpoints"), Some(doc))
                .await?;
            if json_out {
                print_json(&v);
            } else {
                table(ENDPOINT_COLUMNS, &[endpoint_row(&v["data"])]);
                println!(
                    "\nsecret: {}\n(shown only now: configure your receiver with it to verify webhook-signature)",
                    s(&v["data"]["attributes"]["secret"])
                );
            }
        }
        EndpointsCmd::Ping { api, id } => {
            let json_out = api.json;
            let api = Api::new(api)?;
            let v = api
                .call(
                    "POST",
                    &api.account_path(&format!("webhook-endpoints/{}/actions/ping", enc(&id))),
                    None,
                )
                .await?;
            if json_out {
                print_json(&v);
            } else {
                let a = &v["data"]["attributes"];
                let result = if a["responseStatus"].is_null() {
                    format!("error: {}", s(&a["error"]))
                } else {
                    format!("HTTP {}", s(&a["responseStatus"]))
                };
                println!(
                    "{} {result} in {} ms ({})",
                    if a["ok"] == true { "ok" } else { "FAILED" },
                    s(&a["latencyMs"]),
                    s(&a["status"])
                );
                if let Some(b) = a["responseBody"].as_str().filter(|b| !b.is_empty()) {
                    println!(
                        "response: {}",
                        clean(&b.chars().take(200).collect::<String>())
                    );
                }
            }
        }
        EndpointsCmd::Recover { api, id, since } => {
            let json_out = api.json;
            let api = Api::new(api)?;
            let path = format!(
                "{}?since={}",
                api.account_path(&format!("webhook-endpoints/{}/actions/recover", enc(&id))),
                enc(&since)
            );
            let v = api.call("POST", &path, None).await?;
            if json_out {
                print_json(&v);
            } else {
                println!(
                    "re-queued {} failed deliveries of {id} (events scanned: {})",
                    s(&v["meta"]["requeued"]),
                    s(&v["meta"]["eventsScanned"])
                );
            }
        }
    }
    Ok(())
}
