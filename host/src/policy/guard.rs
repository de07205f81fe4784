//! Where deliveries may go: `https://` only unless `allow_http`, and never to
//! loopback, private, link-local, metadata or other non-public addresses
//! unless `allow_private_networks`. The address check runs on the *resolved*
//! address (in the connector's resolver), so a public name that points at
//! 127.0.0.1 is refused as surely as the literal.
//!
//! The policy in force is a [`LivePolicy`] shared by the API, the sender and
//! its resolver: a reload that tightens it applies to the next connection
//! attempt of every endpoint, stored or new, literal or resolved.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};

use hyper_util::client::legacy::connect::dns::Name;

/// The operator's rules for endpoint URLs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UrlPolicy {
    pub allow_http: bool,
    pub allow_private_networks: bool,
}

/// The policy in force, shared and swappable (a config reload sets it),
/// with a generation that changes when it does.
#[derive(Debug, Clone, Default)]
pub struct LivePolicy(Arc<RwLock<(UrlPolicy, u64)>>);

impl LivePolicy {
    pub fn new(policy: UrlPolicy) -> Self {
        LivePolicy(Arc::new(RwLock::new((policy, 0))))
    }
    pub fn get(&self) -> UrlPolicy {
        self.0.read().unwrap_or_else(|p| p.into_inner()).0
    }
    /// The policy and its generation.
    pub fn versioned(&self) -> (UrlPolicy, u64) {
        *self.0.read().unwrap_or_else(|p| p.into_inner())
    }
    pub fn set(&self, policy: UrlPolicy) {
        let mut g = self.0.write().unwrap_or_else(|p| p.into_inner());
        if g.0 != policy {
            *g = (policy, g.1 + 1);
        }
    }
}

/// Which rule of the URL policy refused a URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// Not a URL, no host, or a scheme other than http(s).
    Malformed,
    /// `http://` while `allow_http` is false.
    Https,
    /// A non-public address (literal or resolved) while
    /// `allow_private_networks` is false.
    PrivateNetwork,
    /// Credentials in the URL.
    Credentials,
}

impl Rule {
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::Malformed => "malformed_url",
            Rule::Https => "allow_http",
            Rule::PrivateNetwork => "allow_private_networks",
            Rule::Credentials => "credentials_in_url",
        }
    }
}

/// A URL refused by the policy: the rule and a message for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub rule: Rule,
    pub message: String,
}

/// Checks an endpoint URL's form and, for IP literals, its address.
pub fn check_url(url: &str, policy: &UrlPolicy) -> Result<http::Uri, String> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    check_uri(&uri, policy).map_err(|r| r.message)?;
    Ok(uri)
}

/// [`check_url`] on a parsed URL, saying which rule refused it.
pub fn check_uri(uri: &http::Uri, policy: &UrlPolicy) -> Result<(), Refusal> {
    let url = uri.to_string();
    let refuse = |rule, message| Err(Refusal { rule, message });
    match uri.scheme_str() {
        Some("https") => {}
        Some("http") if policy.allow_http => {}
        Some("http") => {
            return refuse(
                Rule::Https,
                format!(
                    "{url:?} is not https://; endpoints must use HTTPS (the operator may allow http:// with [delivery] allow_http = true)"
                ),
            );
        }
        _ => return refuse(Rule::Malformed, format!("{url:?} must start with https://")),
    }
    let Some(host) = uri.host() else {
        return refuse(Rule::Malformed, format!("{url:?} has no host"));
    };
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return refuse(
            Rule::Credentials,
            format!("{url:?} carries credentials in the URL; put them in a plugin header instead"),
        );
    }
    if !policy.allow_private_networks {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if host.starts_with('[') && bare.contains('%') {
            return refuse(
                Rule::PrivateNetwork,
                format!(
                    "{url:?} is a scoped IPv6 address (link-local by nature); allow it with [delivery] allow_private_networks = true"
                ),
            );
        }
        if let Ok(ip) = bare.parse::<IpAddr>() {
            if is_forbidden(ip) {
                return refuse(
                    Rule::PrivateNetwork,
                    format!(
                        "{url:?} points at a non-public address ({ip}); allow it with [delivery] allow_private_networks = true"
                    ),
                );
            }
        }
        let lower = bare.to_ascii_lowercase();
        if lower == "localhost" || lower.ends_with(".localhost") {
            return refuse(
                Rule::PrivateNetwork,
                format!(
                    "{url:?} points at localhost; allow it with [delivery] allow_private_networks = true"
                ),
            );
        }
    }
    Ok(())
}

/// True for every address a webhook must not reach by default.
pub fn is_forbidden(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return forbidden_v4(v4);
            }
            let seg = v6.segments();
            let o = v6.octets();
            let low_v4 = Ipv4Addr::new(o[12], o[13], o[14], o[15]);
            // NAT64 well-known prefix 64:ff9b::/96 embeds an IPv4 address.
            if seg[0] == 0x64 && seg[1] == 0xff9b && seg[2..6] == [0, 0, 0, 0] {
                return forbidden_v4(low_v4);
            }
            // Local-use NAT64 64:ff9b:1::/48 (RFC 8215): the translator is
            // the operator's own, so whatever it reaches is internal.
            if seg[0] == 0x64 && seg[1] == 0xff9b && seg[2] == 1 {
                return true;
            }
            // IPv4-translated ::ffff:0:a.b.c.d (SIIT).
            if seg[..4] == [0, 0, 0, 0] && seg[4] == 0xffff && seg[5] == 0 {
                return forbidden_v4(low_v4);
            }
            // 6to4 2002:a.b.c.d::/48 embeds an IPv4 address.
            if seg[0] == 0x2002 {
                return forbidden_v4(Ipv4Addr::new(o[2], o[3], o[4], o[5]));
            }
            // Teredo 2001:0::/32 embeds (obfuscated) IPv4 addresses and
            // tunnels through a relay: never a webhook receiver.
            if seg[0] == 0x2001 && seg[1] == 0 {
                return true;
            }
            // IPv4-compatible (deprecated) ::a.b.c.d
            if seg[..6] == [0, 0, 0, 0, 0, 0] {
                return true;
            }
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (seg[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
                || (seg[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
                || (seg[0] & 0xffc0) == 0xfec0 // site-local (deprecated)
                || (seg[0] == 0x2001 && seg[1] == 0x0db8) // documentation
                || v6 == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) // AWS metadata (IPv6)
        }
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    ip.is_private()
        || ip.is_loopback()
        || ip.is_link_local() // 169.254/16, cloud metadata
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || o[0] == 0 // 0.0.0.0/8
        || (o[0] == 100 && (o[1] & 0xc0) == 64) // carrier-grade NAT 100.64/10
        || (o[0] == 192 && o[1] == 0 && o[2] == 0) // IETF protocol assignments
        || (o[0] == 198 && (o[1] & 0xfe) == 18) // benchmarking 198.18/15
        || o[0] >= 240 // reserved
}

/// A DNS resolver for hyper's connector that drops forbidden addresses
/// (per the policy in force at each lookup).
#[derive(Clone, Debug)]
pub struct GuardedResolver {
    pub policy: LivePolicy,
}

/// Resolution failure; `refused` when every address was refused by the
/// policy (rather than none found).
#[derive(Debug)]
pub struct ResolveError {
    pub message: String,
    pub refused: bool,
}

impl std::fmt::Display for ResolveError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ResolveError {}

impl tower_service::Service<Name> for GuardedResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = ResolveError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let allow = self.policy.get().allow_private_networks;
        Box::pin(async move {
            let host = name.as_str().to_string();
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await
                .map_err(|e| ResolveError {
                    message: format!("cannot resolve {host}: {e}"),
                    refused: false,
                })?
                .collect();
            let total = addrs.len();
            let allowed: Vec<SocketAddr> = addrs
                .into_iter()
                .filter(|a| allow || !is_forbidden(a.ip()))
                .collect();
            if allowed.is_empty() {
                return Err(ResolveError {
                    message: if total == 0 {
                        format!("{host} has no address")
                    } else {
                        format!(
                            "{host} resolves only to non-public addresses; refused (allow with [delivery] allow_private_networks = true)"
                        )
                    },
                    refused: total > 0,
                });
            }
            Ok(allowed.into_iter())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forbidden_addresses() {
        for s in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "::ffff:0:7f00:1",
            "2002:7f00:1::1",
            "2002:a00:1::1",
            "64:ff9b:1::1",
            "64:ff9b:1::808:808",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
            "255.255.255.255",
            "224.0.0.1",
        ] {
            assert!(is_forbidden(s.parse().unwrap()), "{s} should be refused");
        }
        for s in [
            "93.184.216.34",
            "8.8.8.8",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "2002:808:808::1",
        ] {
            assert!(!is_forbidden(s.parse().unwrap()), "{s} should be allowed");
        }
    }

    #[test]
    fn url_rules() {
        let strict = UrlPolicy::default();
        assert!(check_url("https://example.com/hook", &strict).is_ok());
        assert!(
            check_url("http://example.com/hook", &strict)
                .unwrap_err()
                .contains("allow_http")
        );
        assert!(check_url("https://127.0.0.1/x", &strict).is_err());
        assert!(check_url("https://[::1]/x", &strict).is_err());
        assert!(check_url("https://[::ffff:169.254.169.254]/x", &strict).is_err());
        assert!(check_url("https://localhost/x", &strict).is_err());
        assert!(check_url("ftp://example.com/x", &strict).is_err());
        assert!(check_url("https://user:pw@example.com/x", &strict).is_err());
        assert!(check_url("https://[::1%25lo]/x", &strict).is_err());
        assert!(check_url("https://[fe80::1%25eth0]/x", &strict).is_err());
        assert!(check_url("https://[::ffff:0:7f00:1]/x", &strict).is_err());
        assert!(check_url("https://[2002:7f00:1::1]/x", &strict).is_err());
        let open = UrlPolicy {
            allow_http: true,
            allow_private_networks: true,
        };
        assert!(check_url("http://127.0.0.1:9/x", &open).is_ok());
    }

    #[tokio::test]
    async fn resolver_refuses_decimal_and_octal_spellings() {
        use tower_service::Service;
        let mut r = GuardedResolver {
            policy: LivePolicy::new(UrlPolicy::default()),
        };
        for host in ["2130706433", "0177.0.0.1", "localhost", "127.1"] {
            let name: Name = host.parse().unwrap();
            let res = r.call(name).await;
            assert!(res.is_err(), "{host} must be refused");
        }
        let mut open = GuardedResolver {
            policy: LivePolicy::new(UrlPolicy {
                allow_http: true,
                allow_private_networks: true,
            }),
        };
        assert!(open.call("127.0.0.1".parse().unwrap()).await.is_ok());
    }
}
