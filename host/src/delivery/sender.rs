//! The HTTP client: hyper 1 with hyper-util's keep-alive pool over rustls,
//! the guarded resolver, a timeout over the whole exchange, no redirects,
//! and only the first 4 KiB of a response body read. Every attempt is
//! checked against the URL policy in force first (so a reload that tightens
//! it applies to stored endpoints and to IP literals, which skip the
//! resolver). Failures are typed ([`SendError`]) so `/metrics` counts them
//! by cause.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::policy::guard::{GuardedResolver, LivePolicy, ResolveError, Rule};

/// Why an HTTP exchange produced no response.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SendError {
    /// No complete response head within the endpoint's timeout.
    #[error("timed out after {}", humantime::format_duration(*.0))]
    Timeout(Duration),
    /// The URL policy in force refuses the URL or every address it
    /// resolves to; `rule` names the `[delivery]` setting involved.
    #[error("refused by the URL policy ({}): {message}", rule.as_str())]
    Refused { rule: Rule, message: String },
    /// The host name did not resolve.
    #[error("{0}")]
    Dns(String),
    /// The TCP connection failed (refused, reset, unreachable).
    #[error("{0}")]
    Connect(String),
    /// The TLS handshake failed (certificate, protocol).
    #[error("{0}")]
    Tls(String),
    /// The connection broke or the receiver spoke broken HTTP.
    #[error("{0}")]
    Protocol(String),
}

impl SendError {
    /// The `cause` label of `switchyard_delivery_failures_total`.
    pub fn cause(&self) -> &'static str {
        match self {
            SendError::Timeout(_) => "timeout",
            SendError::Refused { .. } => "refused",
            SendError::Dns(_) => "dns",
            SendError::Connect(_) => "connect",
            SendError::Tls(_) => "tls",
            SendError::Protocol(_) => "protocol",
        }
    }
}

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
    /// The client and the policy generation its pool was opened under: a
    /// changed policy starts a new pool, so no connection opened under the
    /// old policy (to an address it allowed) is reused.
    client: std::sync::Arc<std::sync::RwLock<(HttpClient, u64)>>,
    connector: HttpsConnector<HttpConnector<GuardedResolver>>,
    policy: LivePolicy,
}

type HttpClient = Client<HttpsConnector<HttpConnector<GuardedResolver>>, Full<Bytes>>;

fn client(connector: &HttpsConnector<HttpConnector<GuardedResolver>>) -> HttpClient {
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(512)
        .build(connector.clone())
}

pub const USER_AGENT: &str = concat!("Switchyard/", env!("CARGO_PKG_VERSION"), " (+webhooks)");

impl Sender {
    /// A client that follows `policy` and trusts the web PKI roots plus the
    /// certificates in `ca_file`, if given.
    pub fn new(policy: LivePolicy, ca_file: Option<&std::path::Path>) -> anyhow::Result<Sender> {
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
            policy: policy.clone(),
        });
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(Duration::from_secs(10)));
        let builder = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls);
        // `allow_http` is checked per attempt (`check_uri`), so a reload
        // can change it.
        let https = builder.https_or_http().enable_http1().wrap_connector(http);
        let generation = policy.versioned().1;
        Ok(Sender {
            client: std::sync::Arc::new(std::sync::RwLock::new((client(&https), generation))),
            connector: https,
            policy,
        })
    }

    /// POSTs `body` and returns the status and a body excerpt, or why not.
    pub async fn post(
        &self,
        uri: &http::Uri,
        headers: http::HeaderMap,
        body: Bytes,
        timeout: Duration,
    ) -> (Result<Response, SendError>, Duration) {
        let start = Instant::now();
        let (policy, generation) = self.policy.versioned();
        if let Err(r) = crate::policy::guard::check_uri(uri, &policy) {
            let e = SendError::Refused {
                rule: r.rule,
                message: r.message,
            };
            return (Err(e), start.elapsed());
        }
        let mut req = http::Request::new(Full::new(body));
        *req.method_mut() = http::Method::POST;
        *req.uri_mut() = uri.clone();
        *req.headers_mut() = headers;
        let http = {
            let cur = self.client.read().unwrap_or_else(|p| p.into_inner());
            if cur.1 == generation {
                cur.0.clone()
            } else {
                drop(cur);
                let mut w = self.client.write().unwrap_or_else(|p| p.into_inner());
                if w.1 != generation {
                    *w = (client(&self.connector), generation);
                }
                w.0.clone()
            }
        };
        let exchange = async {
            let resp = http.request(req).await.map_err(describe_error)?;
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
            Err(_) => Err(SendError::Timeout(timeout)),
        };
        (result, start.elapsed())
    }
}

fn describe_error(e: hyper_util::client::legacy::Error) -> SendError {
    use std::error::Error as _;
    let mut msg = e.to_string();
    let mut resolve: Option<&ResolveError> = None;
    let mut tls = false;
    let mut src = e.source();
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        if let Some(r) = s.downcast_ref::<ResolveError>() {
            resolve = Some(r);
        }
        if s.downcast_ref::<rustls::Error>().is_some() {
            tls = true;
        }
        if let Some(ioe) = s.downcast_ref::<std::io::Error>() {
            if ioe
                .get_ref()
                .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some())
            {
                tls = true;
            }
        }
        src = s.source();
    }
    if let Some(r) = resolve {
        return if r.refused {
            SendError::Refused {
                rule: Rule::PrivateNetwork,
                message: msg,
            }
        } else {
            SendError::Dns(msg)
        };
    }
    if tls {
        SendError::Tls(msg)
    } else if e.is_connect() {
        SendError::Connect(msg)
    } else {
        SendError::Protocol(msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::guard::UrlPolicy;

    #[test]
    fn send_errors_keep_their_messages_and_name_their_cause() {
        let t = SendError::Timeout(Duration::from_millis(300));
        assert_eq!(t.to_string(), "timed out after 300ms");
        assert_eq!(t.cause(), "timeout");
        let r = SendError::Refused {
            rule: Rule::Https,
            message: "\"http://x\" is not https://".into(),
        };
        assert_eq!(
            r.to_string(),
            "refused by the URL policy (allow_http): \"http://x\" is not https://"
        );
        assert_eq!(r.cause(), "refused");
    }

    #[tokio::test]
    async fn every_attempt_follows_the_policy_in_force() {
        let policy = LivePolicy::new(UrlPolicy {
            allow_http: true,
            allow_private_networks: true,
        });
        let sender = Sender::new(policy.clone(), None).unwrap();
        let uri: http::Uri = "http://127.0.0.1:9/x".parse().unwrap();
        let (r, _) = sender
            .post(
                &uri,
                http::HeaderMap::new(),
                Bytes::new(),
                Duration::from_secs(5),
            )
            .await;
        // Allowed: the attempt is made (nothing listens on port 9).
        assert!(!matches!(r, Err(SendError::Refused { .. })), "{r:?}");
        policy.set(UrlPolicy {
            allow_http: true,
            allow_private_networks: false,
        });
        let (r, _) = sender
            .post(
                &uri,
                http::HeaderMap::new(),
                Bytes::new(),
                Duration::from_secs(5),
            )
            .await;
        assert!(
            matches!(
                r,
                Err(SendError::Refused {
                    rule: Rule::PrivateNetwork,
                    ..
                })
            ),
            "{r:?}"
        );
        policy.set(UrlPolicy::default());
        let (r, _) = sender
            .post(
                &uri,
                http::HeaderMap::new(),
                Bytes::new(),
                Duration::from_secs(5),
            )
            .await;
        assert!(
            matches!(
                r,
                Err(SendError::Refused {
                    rule: Rule::Https,
                    ..
                })
            ),
            "{r:?}"
        );
    }
}
