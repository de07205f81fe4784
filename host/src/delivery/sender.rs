//! The HTTP client: hyper 1 with hyper-util's keep-alive pool over rustls,
//! the guarded resolver, a timeout over the whole exchange, no redirects,
//! and only the first 4 KiB of a response body read.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::policy::guard::{GuardedResolver, UrlPolicy};

/// Bytes of a response body kept in the attempt log.
pub const EXCERPT: usize = 4096;

/// The outcome of one HTTP exchange.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub retry_after: Option<String>,
    pub excerpt: Vec<u8>,
}

#[derive(Clone)]
pub struct Sender {
    client: Client<HttpsConnector<HttpConnector<GuardedResolver>>, Full<Bytes>>,
}

pub const USER_AGENT: &str = concat!("Switchyard/", env!("CARGO_PKG_VERSION"), " (+webhooks)");

impl Sender {
    /// A client that follows `policy` and trusts the web PKI roots plus the
    /// certificates in `ca_file`, if given.
    pub fn new(policy: UrlPolicy, ca_file: Option<&std::path::Path>) -> anyhow::Result<Sender> {
        use anyhow::Context as _;
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        if let Some(path) = ca_file {
            let pem = std::fs::read(path)
                .with_context(|| format!("reading [delivery] ca_file {}", path.display()))?;
            for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
                let cert = cert.with_context(|| format!("parsing {}", path.display()))?;
                roots
                    .add(cert)
                    .with_context(|| format!("adding a certificate from {}", path.display()))?;
            }
        }
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut http = HttpConnector::new_with_resolver(GuardedResolver {
            allow_private_networks: policy.allow_private_networks,
        });
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(Duration::from_secs(10)));
        let builder = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls);
        let https = if policy.allow_http {
            builder.https_or_http().enable_http1().wrap_connector(http)
        } else {
            builder.https_only().enable_http1().wrap_connector(http)
        };
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(512)
            .build(https);
        Ok(Sender { client })
    }

    /// POSTs `body` and returns the status and a body excerpt, or an error
    /// message (timeout, connection refused, TLS, refused address).
    pub async fn post(
        &self,
        uri: &http::Uri,
        headers: http::HeaderMap,
        body: Bytes,
        timeout: Duration,
    ) -> (Result<Response, String>, Duration) {
        let start = Instant::now();
        let mut req = http::Request::new(Full::new(body));
        *req.method_mut() = http::Method::POST;
        *req.uri_mut() = uri.clone();
        *req.headers_mut() = headers;
        let exchange = async {
            let resp = self.client.request(req).await.map_err(describe_error)?;
            let status = resp.status().as_u16();
            let retry_after = resp
                .headers()
                .get(http::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let mut body = resp.into_body();
            let mut excerpt = Vec::new();
            while excerpt.len() < EXCERPT {
                match body.frame().await {
                    Some(Ok(frame)) => {
                        if let Some(data) = frame.data_ref() {
                            let take = (EXCERPT - excerpt.len()).min(data.len());
                            excerpt.extend_from_slice(&data[..take]);
                        }
                    }
                    // A body cut short still leaves us a status code: keep it.
                    Some(Err(_)) | None => break,
                }
            }
            Ok(Response {
                status,
                retry_after,
                excerpt,
            })
        };
        let result = match tokio::time::timeout(timeout, exchange).await {
            Ok(r) => r,
            Err(_) => Err(format!(
                "timed out after {}",
                humantime::format_duration(timeout)
            )),
        };
        (result, start.elapsed())
    }
}

fn describe_error(e: hyper_util::client::legacy::Error) -> String {
    use std::error::Error as _;
    let mut msg = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    msg
}
