//! `router.toml`: parsing, defaults, and validation that reports every error
//! with its location. The rest of the host only sees the validated
//! [`Config`]; secrets given as `*_env` are resolved here.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::policy::guard::UrlPolicy;
use crate::policy::retry::RetrySchedule;
use crate::signing::{KeygenKey, KeygenVerifyKey, SecretSet};

pub mod endpoint;
pub mod store;

pub use store::{PostgresConfig, StoreConfig};

/// Largest `max_in_flight` (an endpoint's concurrent attempts), the same
/// bound as the API's; far above it the delivery semaphore would panic.
pub use endpoint::MAX_IN_FLIGHT;
pub use endpoint::{check_id, check_pattern};

/// Shortest account, admin and metrics token.
pub const MIN_TOKEN: usize = 16;

/// Default and largest `[plugins] max_chain`.
pub const DEFAULT_MAX_CHAIN: usize = 16;
pub const MAX_CHAIN: usize = 256;

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub path: PathBuf,
    pub server: ServerConfig,
    pub plugins: PluginsConfig,
    pub delivery: DeliveryConfig,
    pub store: StoreConfig,
    pub accounts: Vec<Account>,
    pub endpoints: Vec<EndpointSpec>,
    /// Where each endpoint is declared: (account, id, `12: endpoints[0] ("crm")`).
    pub endpoint_locations: Vec<(String, String, String)>,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// Largest accepted request body.
    pub max_body: usize,
    /// A client must send its request headers within this time.
    pub header_timeout: Duration,
    /// A request body must arrive in full within this time (from the end of
    /// its headers); otherwise 408 and the connection is closed.
    pub body_timeout: Duration,
    /// A connection with no request being handled that makes no read or
    /// write progress for this long is closed (idle keep-alive, a client
    /// that does not read its answers).
    pub idle_timeout: Duration,
    /// Most open client connections; further ones are closed at accept.
    pub max_connections: usize,
    /// Most open connections from one client address.
    pub max_connections_per_client: usize,
    /// Admin token (sees every account), if configured.
    pub admin_token: Option<String>,
    /// Bearer token `/metrics` requires, if configured (else it is open:
    /// keep the listener private).
    pub metrics_token: Option<String>,
    /// `json` or `text` logs.
    pub log_format: LogFormat,
    /// sled page cache, bytes.
    pub cache_bytes: u64,
    /// How often sled fsyncs its file (its power-loss window; see
    /// docs/ARCHITECTURE.md, "What flushed means").
    pub fsync_interval: Duration,
    /// Events and attempts older than this are deleted.
    pub retention: Duration,
    /// Serve the operator dashboard at `/ui` (default on).
    pub ui: bool,
    /// The host Keygen signs (`host:` line of the signing string) when a
    /// proxy in front of the router changes the `Host` header; `None` =
    /// the `Host` header as received.
    pub external_host: Option<String>,
    /// How far a Keygen request's `Date` may be from now (either way).
    pub keygen_date_window: Duration,
    /// The latest `deliver_at` accepted, from now.
    pub max_schedule_ahead: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub struct PluginsConfig {
    pub dir: PathBuf,
    pub deadline: Duration,
    pub memory_limit: usize,
    pub max_output: usize,
    /// Most plugins in one endpoint's chain (file and API alike).
    pub max_chain: usize,
    /// Wall-clock budget of a whole chain for one delivery; the chain stops
    /// (a `deadline` failure) at the first plugin that ends past it.
    pub chain_deadline: Duration,
    /// `[plugins.limits.<name>]`: one plugin's own limits.
    pub limits: std::collections::HashMap<String, PluginLimitsConfig>,
}

/// `[plugins.limits.<name>]` (each key optional; the `[plugins]` value
/// otherwise): `memory = "64MiB"`, `deadline = "200ms"`, `pool_size = 2`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PluginLimitsConfig {
    pub memory: Option<usize>,
    pub deadline: Option<Duration>,
    pub pool_size: Option<usize>,
}

#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    pub policy: UrlPolicy,
    pub timeout: Duration,
    pub max_in_flight: usize,
    pub retry_schedule: RetrySchedule,
    /// PEM file of extra CA certificates to trust (e.g. a private CA).
    pub ca_file: Option<PathBuf>,
    /// `Retry-After` is honoured up to this bound.
    pub max_retry_after: Duration,
    /// An endpoint whose every attempt failed for this long is disabled.
    pub disable_after: Duration,
}

#[derive(Debug, Clone)]
pub struct Account {
    pub id: String,
    pub token: String,
    pub keygen_key: Option<KeygenKey>,
    /// Verify keys of the Keygen account whose signed deliveries
    /// `POST /v1/accounts/{id}/sources/keygen` accepts (several during a
    /// rotation); empty = the route is closed for this account.
    pub keygen_verify_keys: Vec<KeygenVerifyKey>,
    /// The Keygen account id its requests carry as `keyid`, if pinned.
    pub keygen_account_id: Option<String>,
}

/// How one plugin is applied on an endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginRef {
    pub name: String,
    pub config: serde_json::Value,
}

/// A webhook endpoint, from `router.toml` or created through the API.
#[derive(Debug, Clone)]
pub struct EndpointSpec {
    pub id: String,
    pub account: String,
    pub url: String,
    pub subscriptions: Vec<String>,
    pub secrets: SecretSet,
    pub standard_signature: bool,
    pub keygen_signature: bool,
    pub plugins: Vec<PluginRef>,
    pub retry_schedule: RetrySchedule,
    pub timeout: Duration,
    pub max_in_flight: usize,
    pub enabled: bool,
    /// Declared in `router.toml` (read-only through the API).
    pub from_config: bool,
    /// Batching (`batch = {...}`); `None` sends one request per event.
    pub batch: Option<BatchSpec>,
    /// `rate_limit`: most requests per second to this endpoint (each of N
    /// nodes sending at most 1/N of it).
    pub rate_limit: Option<f64>,
}

/// An endpoint's batching: a batch is sent when it holds `max_events`
/// items or `max_bytes` of bodies, or when its oldest item has waited
/// `max_wait`. A merging plugin's provider limits cap the first two.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchSpec {
    pub max_events: usize,
    pub max_bytes: u64,
    pub max_wait: Duration,
}

impl BatchSpec {
    /// analytics-python's defaults: 100 events, 475,000 bytes, 500 ms.
    pub const DEFAULT: BatchSpec = BatchSpec {
        max_events: 100,
        max_bytes: 475_000,
        max_wait: Duration::from_millis(500),
    };
}

impl EndpointSpec {
    /// Whether this endpoint subscribes to `event_type`.
    pub fn subscribes(&self, event_type: &str) -> bool {
        self.subscriptions
            .iter()
            .any(|p| pattern_matches(p, event_type))
    }

    /// The internal 16-byte id: a UUID v5 of account and endpoint id, stable
    /// across restarts and config edits.
    pub fn uid(&self) -> uuid::Uuid {
        endpoint_uid(&self.account, &self.id)
    }
}

pub fn endpoint_uid(account: &str, id: &str) -> uuid::Uuid {
    let name = format!("{account}\u{0}{id}");
    uuid::Uuid::new_v5(&ENDPOINT_NAMESPACE, name.as_bytes())
}

const ENDPOINT_NAMESPACE: uuid::Uuid = uuid::uuid!("6f1c1e40-7d8b-4f2a-9a53-2d7b7a1c5e01");

/// `*` matches all, `family.*` a family (`license.*` matches
/// `license.validation.succeeded`), anything else exactly.
pub fn pattern_matches(pattern: &str, event_type: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    match pattern.strip_suffix(".*") {
        Some(prefix) => event_type
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('.')),
        None => pattern == event_type,
    }
}

/// One configuration error with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub location: String,
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.location, self.message)
    }
}

/// All the errors of one file.
#[derive(Debug)]
pub struct ConfigErrors {
    pub path: PathBuf,
    pub errors: Vec<ConfigError>,
}

impl std::fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{} has {} error{}:",
            self.path.display(),
            self.errors.len(),
            if self.errors.len() == 1 { "" } else { "s" }
        )?;
        for e in &self.errors {
            writeln!(f, "  {}:{e}", self.path.display())?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

// ---- raw file shape ----------------------------------------------------

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    plugins: RawPlugins,
    #[serde(default)]
    delivery: RawDelivery,
    #[serde(default)]
    store: store::RawStore,
    #[serde(default)]
    accounts: Vec<Spanned<RawAccount>>,
    #[serde(default)]
    endpoints: Vec<Spanned<RawEndpoint>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: Option<String>,
    data_dir: Option<PathBuf>,
    max_body: Option<String>,
    header_timeout: Option<String>,
    admin_token: Option<String>,
    admin_token_env: Option<String>,
    metrics_token: Option<String>,
    metrics_token_env: Option<String>,
    body_timeout: Option<String>,
    idle_timeout: Option<String>,
    max_connections: Option<usize>,
    max_connections_per_client: Option<usize>,
    log_format: Option<String>,
    cache_size: Option<String>,
    fsync_interval: Option<String>,
    retention: Option<String>,
    ui: Option<bool>,
    external_host: Option<String>,
    keygen_date_window: Option<String>,
    max_schedule_ahead: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPlugins {
    dir: Option<PathBuf>,
    deadline: Option<String>,
    memory_limit: Option<String>,
    max_output: Option<String>,
    max_chain: Option<usize>,
    chain_deadline: Option<String>,
    #[serde(default)]
    limits: std::collections::BTreeMap<String, RawPluginLimits>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPluginLimits {
    memory: Option<String>,
    deadline: Option<String>,
    pool_size: Option<usize>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDelivery {
    allow_http: Option<bool>,
    allow_private_networks: Option<bool>,
    timeout: Option<String>,
    max_in_flight: Option<usize>,
    retry_schedule: Option<Vec<String>>,
    ca_file: Option<PathBuf>,
    max_retry_after: Option<String>,
    disable_after: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAccount {
    id: String,
    token: Option<String>,
    token_env: Option<String>,
    keygen_signing_key: Option<String>,
    keygen_signing_key_env: Option<String>,
    keygen_verify_key: Option<OneOrMany>,
    keygen_verify_key_env: Option<String>,
    keygen_account_id: Option<String>,
}

/// A string or a list of strings (`key = "a"` or `key = ["a", "b"]`).
#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEndpoint {
    id: String,
    account: String,
    url: String,
    #[serde(default)]
    subscriptions: Option<Vec<String>>,
    secret: Option<String>,
    secret_env: Option<String>,
    #[serde(default)]
    secrets: Option<Vec<String>>,
    signatures: Option<Vec<String>>,
    #[serde(default)]
    plugins: Vec<RawPluginRef>,
    retry_schedule: Option<Vec<String>>,
    timeout: Option<String>,
    max_in_flight: Option<usize>,
    enabled: Option<bool>,
    /// `batch = { max_events = 100, max_bytes = "450KB", max_wait = "500ms" }`
    batch: Option<RawBatch>,
    /// `rate_limit = "500/s"`
    rate_limit: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBatch {
    max_events: Option<usize>,
    max_bytes: Option<String>,
    max_wait: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPluginRef {
    name: String,
    #[serde(default)]
    config: Option<toml::Value>,
}

/// Environment lookups go through this so tests can inject variables.
pub trait Env {
    fn var(&self, name: &str) -> Option<String>;
}

/// The process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

struct Checker<'a> {
    source: &'a str,
    errors: Vec<ConfigError>,
    env: &'a dyn Env,
}

impl Checker<'_> {
    fn line_of(&self, offset: usize) -> usize {
        self.source[..offset.min(self.source.len())]
            .matches('\n')
            .count()
            + 1
    }

    fn err(&mut self, location: impl Into<String>, message: impl Into<String>) {
        self.errors.push(ConfigError {
            location: location.into(),
            message: message.into(),
        });
    }

    fn duration(&mut self, loc: &str, v: &Option<String>, default: Duration) -> Duration {
        match v {
            None => default,
            Some(s) => match humantime::parse_duration(s) {
                Ok(d) => d,
                Err(e) => {
                    self.err(
                        loc,
                        format!(
                            "{s:?} is not a duration ({e}); write e.g. \"15s\", \"5m\", \"2h\""
                        ),
                    );
                    default
                }
            },
        }
    }

    fn size(&mut self, loc: &str, v: &Option<String>, default: u64) -> u64 {
        match v {
            None => default,
            Some(s) => match parse_size(s) {
                Some(n) => n,
                None => {
                    self.err(
                        loc,
                        format!("{s:?} is not a size; write e.g. \"1MiB\", \"512KiB\", \"32MiB\""),
                    );
                    default
                }
            },
        }
    }

    /// A value given inline or through an environment variable.
    fn secret(
        &mut self,
        loc: &str,
        name: &str,
        inline: &Option<String>,
        env: &Option<String>,
    ) -> Option<String> {
        match (inline, env) {
            (Some(_), Some(_)) => {
                self.err(
                    loc,
                    format!("give either `{name}` or `{name}_env`, not both"),
                );
                None
            }
            (Some(v), None) => Some(v.clone()),
            (None, Some(var)) => match self.env.var(var) {
                Some(v) if !v.is_empty() => Some(v),
                _ => {
                    self.err(
                        loc,
                        format!("`{name}_env` names {var}, which is not set in the environment"),
                    );
                    None
                }
            },
            (None, None) => None,
        }
    }
}

/// Parses sizes such as `1MiB`, `512KiB`, `1MB`, `4096`.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(mult)
}

impl Config {
    /// Reads and validates a file.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigErrors {
            path: path.to_path_buf(),
            errors: vec![ConfigError {
                location: "file".into(),
                message: format!("cannot read it: {e} (pass another file with -c <path>)"),
            }],
        })?;
        Config::parse(path, &text, &ProcessEnv)
    }

    /// Validates configuration text; `path` names it in messages and
    /// anchors relative paths: `data_dir`, `[plugins] dir` and `ca_file`
    /// are relative to the directory of the config file, not to the
    /// working directory (so `serve -c /etc/switchyard/router.toml` finds
    /// its data wherever it is started from; with the default
    /// `router.toml` in the working directory the two are the same).
    pub fn parse(path: &Path, text: &str, env: &dyn Env) -> Result<Config, ConfigErrors> {
        let base = path.parent().filter(|p| !p.as_os_str().is_empty());
        let anchored = |p: PathBuf| match base {
            Some(base) if p.is_relative() => base.join(p),
            _ => p,
        };
        let fail = |errors| ConfigErrors {
            path: path.to_path_buf(),
            errors,
        };
        let raw: RawFile = toml::from_str(text).map_err(|e| {
            let location = match e.span() {
                Some(span) => {
                    let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
                    format!("{line}")
                }
                None => "file".into(),
            };
            // Some toml errors carry no message of their own (e.g. a lone CR).
            let message = match e.message().trim() {
                "" => "invalid TOML here (a stray character such as a lone carriage return?)"
                    .to_string(),
                m => m.to_string(),
            };
            fail(vec![ConfigError { location, message }])
        })?;
        let mut c = Checker {
            source: text,
            errors: Vec::new(),
            env,
        };

        // [server]
        let s = &raw.server;
        let listen = s.listen.as_deref().unwrap_or("127.0.0.1:8686");
        let listen = match listen.parse::<SocketAddr>() {
            Ok(a) => a,
            Err(_) => {
                c.err(
                    "server.listen",
                    format!("{listen:?} is not an address; write e.g. \"127.0.0.1:8686\""),
                );
                SocketAddr::from(([127, 0, 0, 1], 8686))
            }
        };
        let log_format = match s.log_format.as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                c.err(
                    "server.log_format",
                    format!("{other:?} is not a log format; use \"text\" or \"json\""),
                );
                LogFormat::Text
            }
        };
        let admin_token = c.secret("server", "admin_token", &s.admin_token, &s.admin_token_env);
        if let Some(t) = &admin_token {
            if t.len() < MIN_TOKEN {
                c.err(
                    "server.admin_token",
                    format!("must be at least {MIN_TOKEN} characters"),
                );
            }
        }
        let metrics_token = c.secret(
            "server",
            "metrics_token",
            &s.metrics_token,
            &s.metrics_token_env,
        );
        if metrics_token.as_ref().is_some_and(|t| t.len() < 16) {
            c.err("server.metrics_token", "must be at least 16 characters");
        }
        let server = ServerConfig {
            listen,
            data_dir: anchored(
                s.data_dir
                    .clone()
                    .unwrap_or_else(|| PathBuf::from("./data")),
            ),
            max_body: c.size("server.max_body", &s.max_body, 1 << 20) as usize,
            header_timeout: c.duration(
                "server.header_timeout",
                &s.header_timeout,
                Duration::from_secs(10),
            ),
            body_timeout: c.duration(
                "server.body_timeout",
                &s.body_timeout,
                Duration::from_secs(30),
            ),
            idle_timeout: c.duration(
                "server.idle_timeout",
                &s.idle_timeout,
                Duration::from_secs(60),
            ),
            max_connections: s.max_connections.unwrap_or(4096),
            max_connections_per_client: s.max_connections_per_client.unwrap_or(256),
            admin_token,
            metrics_token,
            log_format,
            cache_bytes: c.size("server.cache_size", &s.cache_size, 8 << 20),
            fsync_interval: c.duration(
                "server.fsync_interval",
                &s.fsync_interval,
                Duration::from_millis(50),
            ),
            retention: c.duration(
                "server.retention",
                &s.retention,
                Duration::from_secs(30 * 86400),
            ),
            ui: s.ui.unwrap_or(true),
            external_host: s.external_host.clone(),
            keygen_date_window: c.duration(
                "server.keygen_date_window",
                &s.keygen_date_window,
                Duration::from_secs(300),
            ),
            max_schedule_ahead: c.duration(
                "server.max_schedule_ahead",
                &s.max_schedule_ahead,
                Duration::from_secs(365 * 86400),
            ),
        };
        if let Some(h) = &server.external_host {
            if h.is_empty()
                || !h
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | ':' | '[' | ']'))
            {
                c.err(
                    "server.external_host",
                    format!("{h:?} is not a host; write the host (and port, if not the default) Keygen posts to, e.g. \"hooks.example.com\""),
                );
            }
        }
        if !(Duration::from_secs(1)..=Duration::from_secs(3600))
            .contains(&server.keygen_date_window)
        {
            c.err(
                "server.keygen_date_window",
                "out of range: write between \"1s\" and \"1h\" (default \"5m\")",
            );
        }
        if server.max_schedule_ahead.is_zero() {
            c.err(
                "server.max_schedule_ahead",
                "must be more than 0 (default \"365days\")",
            );
        }
        for (key, d) in [
            ("server.body_timeout", server.body_timeout),
            ("server.idle_timeout", server.idle_timeout),
            ("server.header_timeout", server.header_timeout),
        ] {
            if !(Duration::from_millis(100)..=Duration::from_secs(3600)).contains(&d) {
                c.err(key, "must be between \"100ms\" and \"1h\"");
            }
        }
        if server.max_connections == 0 || server.max_connections_per_client == 0 {
            c.err(
                "server",
                "max_connections and max_connections_per_client must be at least 1",
            );
        }
        if server.retention > Duration::from_secs(10 * 365 * 86400) {
            c.err("server.retention", "must be at most 10 years (\"3650d\")");
        }
        if !(Duration::from_millis(10)..=Duration::from_secs(10)).contains(&server.fsync_interval) {
            c.err(
                "server.fsync_interval",
                format!(
                    "{} is out of range: write between \"10ms\" and \"10s\" (default \"50ms\")",
                    humantime::format_duration(server.fsync_interval)
                ),
            );
        }

        // [store]
        let store = c.store(&raw.store);

        // [plugins]
        let p = &raw.plugins;
        let plugins_cfg = PluginsConfig {
            dir: anchored(
                p.dir
                    .clone()
                    .unwrap_or_else(|| PathBuf::from("plugins/dist")),
            ),
            deadline: c.duration("plugins.deadline", &p.deadline, Duration::from_millis(50)),
            memory_limit: c.size("plugins.memory_limit", &p.memory_limit, 32 << 20) as usize,
            max_output: c.size("plugins.max_output", &p.max_output, 5 << 20) as usize,
            max_chain: p.max_chain.unwrap_or(DEFAULT_MAX_CHAIN),
            chain_deadline: c.duration(
                "plugins.chain_deadline",
                &p.chain_deadline,
                Duration::from_millis(500),
            ),
            limits: Default::default(),
        };
        if !(1..=MAX_CHAIN).contains(&plugins_cfg.max_chain) {
            c.err(
                "plugins.max_chain",
                format!("must be 1 to {MAX_CHAIN} (default {DEFAULT_MAX_CHAIN})"),
            );
        }
        let mut plugins_cfg = plugins_cfg;
        for (name, l) in &p.limits {
            let loc = format!("plugins.limits.{name}");
            let limits = PluginLimitsConfig {
                memory: l.memory.as_ref().map(|_| {
                    c.size(
                        &format!("{loc}.memory"),
                        &l.memory,
                        plugins_cfg.memory_limit as u64,
                    ) as usize
                }),
                deadline: l.deadline.as_ref().map(|_| {
                    c.duration(
                        &format!("{loc}.deadline"),
                        &l.deadline,
                        plugins_cfg.deadline,
                    )
                }),
                pool_size: l.pool_size,
            };
            if limits
                .memory
                .is_some_and(|m| !(1 << 20..=4 << 30).contains(&m))
            {
                c.err(
                    format!("{loc}.memory"),
                    "write between \"1MiB\" and \"4GiB\"",
                );
            }
            if limits
                .deadline
                .is_some_and(|d| d.is_zero() || d > Duration::from_secs(60))
            {
                c.err(
                    format!("{loc}.deadline"),
                    "write between \"1ms\" and \"60s\"",
                );
            }
            plugins_cfg.limits.insert(name.clone(), limits);
        }

        // [delivery]
        let d = &raw.delivery;
        let default_schedule = match &d.retry_schedule {
            None => RetrySchedule::keygen_default(),
            Some(list) => parse_schedule(&mut c, "delivery.retry_schedule", list),
        };
        let delivery = DeliveryConfig {
            policy: UrlPolicy {
                allow_http: d.allow_http.unwrap_or(false),
                allow_private_networks: d.allow_private_networks.unwrap_or(false),
            },
            timeout: c.duration("delivery.timeout", &d.timeout, Duration::from_secs(15)),
            max_in_flight: d.max_in_flight.unwrap_or(32),
            retry_schedule: default_schedule,
            ca_file: d.ca_file.clone().map(anchored),
            max_retry_after: c.duration(
                "delivery.max_retry_after",
                &d.max_retry_after,
                Duration::from_secs(3600),
            ),
            disable_after: c.duration(
                "delivery.disable_after",
                &d.disable_after,
                Duration::from_secs(5 * 86400),
            ),
        };
        if delivery.timeout.is_zero() || delivery.timeout > Duration::from_secs(300) {
            c.err("delivery.timeout", "must be between 1ms and 5m");
        }
        if delivery.max_retry_after > crate::policy::retry::MAX_RETRY_DELAY {
            c.err("delivery.max_retry_after", "must be at most 7 days");
        }
        if delivery.disable_after > Duration::from_secs(365 * 86400) {
            c.err("delivery.disable_after", "must be at most 365 days");
        }
        if !(1..=MAX_IN_FLIGHT).contains(&delivery.max_in_flight) {
            c.err(
                "delivery.max_in_flight",
                format!("must be 1 to {MAX_IN_FLIGHT}"),
            );
        }
        if let Err(m) = endpoint::check_timeout_value(delivery.timeout) {
            c.err("delivery.timeout", m);
        }

        // [[accounts]]
        let mut accounts = Vec::new();
        let mut token_lines: Vec<(String, String)> = Vec::new();
        let mut seen = HashSet::new();
        for (i, a) in raw.accounts.iter().enumerate() {
            let line = c.line_of(a.span().start);
            let a = a.get_ref();
            let loc = format!("{line}: accounts[{i}] ({:?})", a.id);
            if let Err(e) = check_id(&a.id) {
                c.err(&loc, format!("id: {e}"));
            }
            if !seen.insert(a.id.clone()) {
                c.err(&loc, "another account has the same id");
            }
            let token = c.secret(&loc, "token", &a.token, &a.token_env);
            let token = match token {
                Some(t) if t.len() >= MIN_TOKEN => t,
                Some(_) => {
                    c.err(
                        &loc,
                        format!(
                            "token must be at least {MIN_TOKEN} characters (as the admin token)"
                        ),
                    );
                    String::new()
                }
                None => {
                    c.err(&loc, "needs `token` or `token_env`");
                    String::new()
                }
            };
            let key = c.secret(
                &loc,
                "keygen_signing_key",
                &a.keygen_signing_key,
                &a.keygen_signing_key_env,
            );
            let keygen_key = match key.map(|k| KeygenKey::from_hex(&k)) {
                None => None,
                Some(Ok(k)) => Some(k),
                Some(Err(e)) => {
                    c.err(&loc, format!("keygen_signing_key: {e}"));
                    None
                }
            };
            let mut keygen_verify_keys = Vec::new();
            let listed: Vec<String> = match (&a.keygen_verify_key, &a.keygen_verify_key_env) {
                (Some(_), Some(_)) => {
                    c.err(
                        &loc,
                        "give either `keygen_verify_key` or `keygen_verify_key_env`, not both",
                    );
                    Vec::new()
                }
                (Some(OneOrMany::One(k)), None) => vec![k.clone()],
                (Some(OneOrMany::Many(ks)), None) => ks.clone(),
                (None, Some(var)) => match c.env.var(var) {
                    // Several keys (a rotation): separated by commas or spaces.
                    Some(v) if !v.trim().is_empty() => v
                        .split(|ch: char| ch == ',' || ch.is_whitespace())
                        .filter(|k| !k.is_empty())
                        .map(str::to_string)
                        .collect(),
                    _ => {
                        c.err(
                            &loc,
                            format!("`keygen_verify_key_env` names {var}, which is not set in the environment"),
                        );
                        Vec::new()
                    }
                },
                (None, None) => Vec::new(),
            };
            for (n, k) in listed.iter().enumerate() {
                match KeygenVerifyKey::from_hex(k) {
                    Ok(k) => keygen_verify_keys.push(k),
                    Err(e) => c.err(&loc, format!("keygen_verify_key[{n}]: {e}")),
                }
            }
            if a.keygen_account_id
                .as_deref()
                .is_some_and(|k| k.is_empty() || k.len() > 255)
            {
                c.err(&loc, "keygen_account_id must be 1 to 255 characters");
            }
            if !token.is_empty() {
                token_lines.push((loc.clone(), token.clone()));
            }
            accounts.push(Account {
                id: a.id.clone(),
                token,
                keygen_key,
                keygen_verify_keys,
                keygen_account_id: a.keygen_account_id.clone(),
            });
        }
        // A token names one principal: two accounts (or an account and the
        // admin or metrics token) sharing one would let each act as the other.
        for (i, (loc, t)) in token_lines.iter().enumerate() {
            if let Some((first, _)) = token_lines[..i].iter().find(|(_, u)| u == t) {
                c.err(
                    loc,
                    format!(
                        "token is the same as the token of {first}; every account needs its own"
                    ),
                );
            }
            if server.admin_token.as_deref() == Some(t.as_str()) {
                c.err(
                    loc,
                    "token is the same as [server] admin_token; give the account its own",
                );
            }
            if server.metrics_token.as_deref() == Some(t.as_str()) {
                c.err(
                    loc,
                    "token is the same as [server] metrics_token; give the account its own",
                );
            }
        }
        if server.metrics_token.is_some() && server.metrics_token == server.admin_token {
            c.err(
                "server.metrics_token",
                "is the same as admin_token; scrapers must not hold the admin token",
            );
        }

        // [[endpoints]]
        let mut endpoints = Vec::new();
        let mut locations = Vec::new();
        let mut seen = HashSet::new();
        for (i, e) in raw.endpoints.iter().enumerate() {
            let line = c.line_of(e.span().start);
            let e = e.get_ref();
            let loc = format!("{line}: endpoints[{i}] ({:?})", e.id);
            if let Err(msg) = check_id(&e.id) {
                c.err(&loc, format!("id: {msg}"));
            }
            if !seen.insert((e.account.clone(), e.id.clone())) {
                c.err(&loc, "another endpoint of this account has the same id");
            }
            let account = accounts.iter().find(|a| a.id == e.account);
            if account.is_none() {
                c.err(
                    &loc,
                    format!("account {:?} is not declared in [[accounts]]", e.account),
                );
            }
            let field_err = |c: &mut Checker<'_>, fe: endpoint::FieldError| {
                c.err(&loc, fe.to_string());
            };
            if let Err(fe) = endpoint::check_url(&e.url, &delivery.policy) {
                field_err(&mut c, fe);
            }
            let subscriptions = e.subscriptions.clone().unwrap_or_else(|| vec!["*".into()]);
            if let Err(fe) = endpoint::check_subscriptions(&subscriptions) {
                field_err(&mut c, fe);
            }
            let mut secret_list: Vec<String> = Vec::new();
            if let Some(s) = c.secret(&loc, "secret", &e.secret, &e.secret_env) {
                secret_list.push(s);
            }
            if let Some(more) = &e.secrets {
                secret_list.extend(more.iter().cloned());
            }
            let secrets = match SecretSet::parse(&secret_list) {
                Ok(s) => s,
                Err(msg) => {
                    c.err(&loc, msg);
                    SecretSet::default()
                }
            };
            let sigs = e
                .signatures
                .clone()
                .unwrap_or_else(|| vec!["standard".into()]);
            let (standard_signature, keygen_signature) =
                match endpoint::check_signatures(&sigs, account.map(|a| a.keygen_key.is_some())) {
                    Ok(pair) => pair,
                    Err(fe) => {
                        field_err(&mut c, fe);
                        (false, false)
                    }
                };
            if let Err(fe) = endpoint::check_secret_present(
                standard_signature,
                !secrets.is_empty() || !secret_list.is_empty(),
            ) {
                field_err(&mut c, fe);
            }
            if e.plugins.len() > plugins_cfg.max_chain {
                c.err(
                    &loc,
                    format!(
                        "plugins: {} plugins in one chain; at most {} ([plugins] max_chain)",
                        e.plugins.len(),
                        plugins_cfg.max_chain
                    ),
                );
            }
            let mut plugins = Vec::new();
            for (j, p) in e.plugins.iter().enumerate() {
                let config = match &p.config {
                    None => None,
                    Some(v) => match serde_json::to_value(v) {
                        Ok(v) => Some(resolve_env_keys(v, env)),
                        Err(err) => {
                            c.err(&loc, format!("plugins[{j}].config: {err}"));
                            None
                        }
                    },
                };
                if let Err(fe) = endpoint::check_plugin(j, &p.name, config.as_ref()) {
                    field_err(&mut c, fe);
                }
                plugins.push(PluginRef {
                    name: p.name.clone(),
                    config: config.unwrap_or_else(|| serde_json::json!({})),
                });
            }
            let retry_schedule = match &e.retry_schedule {
                None => delivery.retry_schedule.clone(),
                Some(list) => endpoint::check_retry_schedule(list).unwrap_or_else(|fe| {
                    field_err(&mut c, fe);
                    delivery.retry_schedule.clone()
                }),
            };
            let timeout = match &e.timeout {
                None => delivery.timeout,
                Some(t) => endpoint::check_timeout(t).unwrap_or_else(|fe| {
                    field_err(&mut c, fe);
                    delivery.timeout
                }),
            };
            let max_in_flight = e.max_in_flight.unwrap_or(delivery.max_in_flight);
            if let Err(fe) = endpoint::check_max_in_flight(max_in_flight) {
                field_err(&mut c, fe);
            }
            let batch = e.batch.as_ref().and_then(|b| {
                endpoint::check_batch(b.max_events, b.max_bytes.as_deref(), b.max_wait.as_deref())
                    .map_err(|errors| errors.into_iter().for_each(|fe| field_err(&mut c, fe)))
                    .ok()
            });
            let rate_limit = e.rate_limit.as_ref().and_then(|r| {
                endpoint::check_rate_limit(r)
                    .map_err(|fe| field_err(&mut c, fe))
                    .ok()
            });
            locations.push((e.account.clone(), e.id.clone(), loc.clone()));
            endpoints.push(EndpointSpec {
                id: e.id.clone(),
                account: e.account.clone(),
                url: e.url.clone(),
                subscriptions,
                secrets,
                standard_signature,
                keygen_signature,
                plugins,
                retry_schedule,
                timeout,
                max_in_flight,
                enabled: e.enabled.unwrap_or(true),
                from_config: true,
                batch,
                rate_limit,
            });
        }

        if !c.errors.is_empty() {
            return Err(fail(c.errors));
        }
        Ok(Config {
            path: path.to_path_buf(),
            server,
            plugins: plugins_cfg,
            delivery,
            store,
            accounts,
            endpoints,
            endpoint_locations: locations,
        })
    }

    /// Where an endpoint is declared, `router.toml:12: endpoints[0] ("crm")`,
    /// if it is declared in this file.
    pub fn endpoint_location(&self, account: &str, id: &str) -> Option<String> {
        self.endpoint_locations
            .iter()
            .find(|(a, i, _)| a == account && i == id)
            .map(|(_, _, loc)| format!("{}:{loc}", self.path.display()))
    }

    pub fn account(&self, id: &str) -> Option<&Account> {
        self.accounts.iter().find(|a| a.id == id)
    }
}

fn parse_schedule(c: &mut Checker<'_>, loc: &str, list: &[String]) -> RetrySchedule {
    endpoint::check_retry_schedule(list).unwrap_or_else(|fe| {
        c.err(loc, fe.message);
        RetrySchedule::keygen_default()
    })
}

/// In plugin configs, a key `foo_env = "VAR"` becomes `foo = <value of VAR>`
/// (so a Segment write key can stay out of the file). Unset variables are
/// left as the `_env` key, which the plugin then rejects by name.
fn resolve_env_keys(v: serde_json::Value, env: &dyn Env) -> serde_json::Value {
    match v {
        serde_json::Value::Object(map) => {
            let mut out = serde_json::Map::new();
            for (k, v) in map {
                if let (Some(base), serde_json::Value::String(var)) = (k.strip_suffix("_env"), &v) {
                    if let Some(val) = env.var(var) {
                        out.insert(base.to_string(), serde_json::Value::String(val));
                        continue;
                    }
                }
                out.insert(k, resolve_env_keys(v, env));
            }
            serde_json::Value::Object(out)
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct MapEnv(Vec<(&'static str, &'static str)>);
    impl Env for MapEnv {
        fn var(&self, name: &str) -> Option<String> {
            self.0
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    const GOOD: &str = r#"
[server]
listen = "127.0.0.1:0"
[delivery]
allow_http = true
allow_private_networks = true
[[accounts]]
id = "demo"
token_env = "TOK"
[[endpoints]]
id = "crm"
account = "demo"
url = "http://127.0.0.1:9/hook"
subscriptions = ["license.*", "user.created"]
secret = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"
plugins = [ { name = "segment", config = { write_key_env = "WK" } } ]
retry_schedule = ["1s", "2s"]
"#;

    #[test]
    fn parses_a_good_file() {
        let env = MapEnv(vec![("TOK", "secret-token-0123456"), ("WK", "abc")]);
        let c = Config::parse(Path::new("t.toml"), GOOD, &env).unwrap();
        assert_eq!(c.accounts[0].token, "secret-token-0123456");
        let e = &c.endpoints[0];
        assert!(e.subscribes("license.validation.succeeded"));
        assert!(!e.subscribes("user.updated"));
        assert_eq!(e.plugins[0].config, serde_json::json!({"write_key": "abc"}));
        assert_eq!(e.retry_schedule.max_attempts(), 3);
    }

    #[test]
    fn reports_every_error_with_location() {
        let text = r#"
[[accounts]]
id = "demo"
token = "short"
[[endpoints]]
id = "a b"
account = "nobody"
url = "http://10.0.0.1/x"
subscriptions = ["lic*"]
"#;
        let errs = Config::parse(Path::new("t.toml"), text, &MapEnv(vec![])).unwrap_err();
        let all = errs.to_string();
        assert!(all.contains("token must be at least 16"), "{all}");
        assert!(all.contains("may only contain"), "{all}");
        assert!(all.contains("\"nobody\" is not declared"), "{all}");
        assert!(all.contains("https"), "{all}");
        assert!(all.contains("lic*"), "{all}");
        assert!(all.contains("needs `secret`"), "{all}");
        assert!(all.contains("t.toml:5: endpoints[0]"), "{all}");
        assert!(errs.errors.len() >= 6);
    }

    #[test]
    fn batch_and_rate_limit() {
        let env = MapEnv(vec![("TOK", "secret-token-0123456"), ("WK", "abc")]);
        let c = Config::parse(Path::new("t.toml"), GOOD, &env).unwrap();
        assert_eq!(
            (c.endpoints[0].batch, c.endpoints[0].rate_limit),
            (None, None)
        );
        let text = format!(
            "{GOOD}batch = {{ max_events = 50, max_bytes = \"450KB\", max_wait = \"250ms\" }}\nrate_limit = \"500/s\"\n"
        );
        let c = Config::parse(Path::new("t.toml"), &text, &env).unwrap();
        assert_eq!(
            c.endpoints[0].batch,
            Some(BatchSpec {
                max_events: 50,
                max_bytes: 450_000,
                max_wait: Duration::from_millis(250),
            })
        );
        assert_eq!(c.endpoints[0].rate_limit, Some(500.0));
        let text = format!("{GOOD}batch = {{}}\n");
        let c = Config::parse(Path::new("t.toml"), &text, &env).unwrap();
        assert_eq!(c.endpoints[0].batch, Some(BatchSpec::DEFAULT));
        let bad = format!(
            "{GOOD}batch = {{ max_events = 0, max_bytes = \"lots\", max_wait = \"2h\" }}\nrate_limit = \"fast\"\n"
        );
        let all = Config::parse(Path::new("t.toml"), &bad, &env)
            .unwrap_err()
            .to_string();
        for needle in [
            "batch.max_events",
            "batch.max_bytes",
            "batch.max_wait",
            "rate_limit",
        ] {
            assert!(all.contains(needle), "{needle}: {all}");
        }
    }

    #[test]
    fn per_plugin_limits() {
        let env = MapEnv(vec![("TOK", "secret-token-0123456"), ("WK", "abc")]);
        let text = format!(
            "{GOOD}\n[plugins.limits.py-filter]\nmemory = \"64MiB\"\ndeadline = \"200ms\"\npool_size = 2\n\n[plugins.limits.js]\ndeadline = \"150ms\"\n"
        );
        let c = Config::parse(Path::new("t.toml"), &text, &env).unwrap();
        let py = &c.plugins.limits["py-filter"];
        assert_eq!(py.memory, Some(64 << 20));
        assert_eq!(py.deadline, Some(Duration::from_millis(200)));
        assert_eq!(py.pool_size, Some(2));
        assert_eq!(c.plugins.limits["js"].memory, None);
        let bad =
            format!("{GOOD}\n[plugins.limits.x]\nmemory = \"8GiB\"\ndeadline = \"0s\"\ncpu = 1\n");
        let all = Config::parse(Path::new("t.toml"), &bad, &env)
            .unwrap_err()
            .to_string();
        assert!(all.contains("cpu"), "{all}");
        let bad = format!("{GOOD}\n[plugins.limits.x]\nmemory = \"8GiB\"\ndeadline = \"0s\"\n");
        let all = Config::parse(Path::new("t.toml"), &bad, &env)
            .unwrap_err()
            .to_string();
        assert!(all.contains("plugins.limits.x.memory"), "{all}");
        assert!(all.contains("plugins.limits.x.deadline"), "{all}");
    }

    #[test]
    fn fsync_interval_defaults_and_is_bounded() {
        let env = MapEnv(vec![("TOK", "secret-token-0123456"), ("WK", "abc")]);
        let c = Config::parse(Path::new("t.toml"), GOOD, &env).unwrap();
        assert_eq!(c.server.fsync_interval, Duration::from_millis(50));
        let text = GOOD.replace("[server]\n", "[server]\nfsync_interval = \"200ms\"\n");
        let c = Config::parse(Path::new("t.toml"), &text, &env).unwrap();
        assert_eq!(c.server.fsync_interval, Duration::from_millis(200));
        for bad in ["1ms", "1m", "soon"] {
            let text = GOOD.replace(
                "[server]\n",
                &format!("[server]\nfsync_interval = \"{bad}\"\n"),
            );
            let errs = Config::parse(Path::new("t.toml"), &text, &env).unwrap_err();
            assert!(
                errs.to_string().contains("server.fsync_interval"),
                "{bad}: {errs}"
            );
        }
    }

    #[test]
    fn keygen_verify_keys_one_several_or_from_env() {
        let k1 = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";
        let k2 = "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c";
        let env = MapEnv(vec![
            ("TOK", "secret-token-0123456"),
            ("WK", "abc"),
            (
                "KG",
                "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a, 3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
            ),
        ]);
        let one = GOOD.replace(
            "token_env = \"TOK\"\n",
            &format!(
                "token_env = \"TOK\"\nkeygen_verify_key = \"{k1}\"\nkeygen_account_id = \"kg\"\n"
            ),
        );
        let c = Config::parse(Path::new("t.toml"), &one, &env).unwrap();
        assert_eq!(c.accounts[0].keygen_verify_keys.len(), 1);
        assert_eq!(c.accounts[0].keygen_account_id.as_deref(), Some("kg"));
        let two = GOOD.replace(
            "token_env = \"TOK\"\n",
            &format!("token_env = \"TOK\"\nkeygen_verify_key = [\"{k1}\", \"{k2}\"]\n"),
        );
        let c = Config::parse(Path::new("t.toml"), &two, &env).unwrap();
        assert_eq!(c.accounts[0].keygen_verify_keys[1].to_hex(), k2);
        let from_env = GOOD.replace(
            "token_env = \"TOK\"\n",
            "token_env = \"TOK\"\nkeygen_verify_key_env = \"KG\"\n",
        );
        let c = Config::parse(Path::new("t.toml"), &from_env, &env).unwrap();
        assert_eq!(c.accounts[0].keygen_verify_keys.len(), 2);
        assert_eq!(c.server.keygen_date_window, Duration::from_secs(300));
        let bad = GOOD
            .replace(
                "token_env = \"TOK\"\n",
                "token_env = \"TOK\"\nkeygen_verify_key = \"abcd\"\n",
            )
            .replace(
                "[server]\n",
                "[server]\nkeygen_date_window = \"2h\"\nmax_schedule_ahead = \"0s\"\n",
            );
        let errs = Config::parse(Path::new("t.toml"), &bad, &env)
            .unwrap_err()
            .to_string();
        assert!(
            errs.contains("t.toml:9: accounts[0]")
                && errs.contains("keygen_verify_key[0]: must be 64 hex"),
            "{errs}"
        );
        assert!(
            errs.contains("server.keygen_date_window")
                && errs.contains("server.max_schedule_ahead"),
            "{errs}"
        );
    }

    #[test]
    fn syntax_error_has_a_line() {
        let errs = Config::parse(
            Path::new("t.toml"),
            "[server]\nlisten = \n",
            &MapEnv(vec![]),
        )
        .unwrap_err();
        assert_eq!(errs.errors[0].location, "2");
        let errs = Config::parse(Path::new("t.toml"), "[servr]\n", &MapEnv(vec![])).unwrap_err();
        assert!(errs.to_string().contains("servr"));
    }

    #[test]
    fn relative_paths_are_relative_to_the_config_file() {
        let env = MapEnv(vec![("TOK", "secret-token-0123456"), ("WK", "abc")]);
        let text = GOOD.replace("[server]\n", "[server]\ndata_dir = \"var/data\"\n")
            + "[plugins]\ndir = \"wasm\"\n";
        let c = Config::parse(Path::new("/etc/switchyard/router.toml"), &text, &env).unwrap();
        assert_eq!(c.server.data_dir, Path::new("/etc/switchyard/var/data"));
        assert_eq!(c.plugins.dir, Path::new("/etc/switchyard/wasm"));
        // Defaults too; absolute paths stay as written.
        let c = Config::parse(Path::new("conf/router.toml"), GOOD, &env).unwrap();
        assert_eq!(c.server.data_dir, Path::new("conf/./data"));
        assert_eq!(c.plugins.dir, Path::new("conf/plugins/dist"));
        let text = GOOD.replace("[server]\n", "[server]\ndata_dir = \"/srv/data\"\n");
        let c = Config::parse(Path::new("conf/router.toml"), &text, &env).unwrap();
        assert_eq!(c.server.data_dir, Path::new("/srv/data"));
        // A file in the working directory: paths as written.
        let c = Config::parse(Path::new("router.toml"), GOOD, &env).unwrap();
        assert_eq!(c.plugins.dir, Path::new("plugins/dist"));
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1MiB"), Some(1 << 20));
        assert_eq!(parse_size("512 KiB"), Some(512 << 10));
        assert_eq!(parse_size("10"), Some(10));
        assert_eq!(parse_size("ten"), None);
    }
}
