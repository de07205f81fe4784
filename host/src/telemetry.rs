//! Logs and metrics: `tracing-subscriber` set-up (text or JSON, `RUST_LOG`
//! respected) and the counters and histograms served at `/metrics` in
//! Prometheus text format.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::config::LogFormat;

/// Installs the global subscriber. `RUST_LOG` overrides the default
/// `info` level.
pub fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(stderr_colour())
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// Whether log lines on stderr get ANSI colours: only on a terminal, and
/// never with `NO_COLOR` set (<https://no-color.org>). `serve 2>log` and
/// `plugin run 2>&1 | …` write plain text.
pub fn stderr_colour() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// A Prometheus histogram with fixed buckets (seconds).
pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    sum_us: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            counts: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            sum_us: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        for (i, b) in self.bounds.iter().enumerate() {
            if s <= *b {
                self.counts[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.sum_us
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Observations so far and their mean, in milliseconds (dashboard).
    pub fn count_mean_ms(&self) -> (u64, f64) {
        let n = self.count.load(Ordering::Relaxed);
        let sum = self.sum_us.load(Ordering::Relaxed) as f64 / 1000.0;
        (n, if n == 0 { 0.0 } else { sum / n as f64 })
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (i, b) in self.bounds.iter().enumerate() {
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {}",
                self.counts[i].load(Ordering::Relaxed)
            );
        }
        let n = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {n}");
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(
            out,
            "{name}_sum{braces} {}",
            self.sum_us.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count{braces} {n}");
    }
}

const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0,
];
/// Group flushes: sub-millisecond normally; the upper buckets count disk stalls.
pub const FLUSH_BUCKETS: &[f64] = &[
    0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];
const PLUGIN_BUCKETS: &[f64] = &[
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.005, 0.025, 0.1,
];

/// Labeled counters whose label sets come from input (event types): capped
/// per account, so one account's producer can neither blow up memory or the
/// scrape nor push another account's series into the overflow.
struct LabeledCounter {
    map: Mutex<Series>,
}

#[derive(Default)]
struct Series {
    values: BTreeMap<String, u64>,
    /// Series per account (the account's overflow series included).
    per_account: std::collections::HashMap<String, usize>,
}

/// Series one account may create in one metric.
const MAX_SERIES_PER_ACCOUNT: usize = 500;
/// Series of one metric in all (a safety net over many accounts).
const MAX_SERIES: usize = 50_000;

impl LabeledCounter {
    fn new() -> Self {
        LabeledCounter {
            map: Mutex::new(Series::default()),
        }
    }

    /// Adds `n` to the series `labels` of `account`; past the account's
    /// cap, to `{account=…,overflow="true"}`.
    fn add(&self, account: &str, labels: String, n: u64) {
        let mut s = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(v) = s.values.get_mut(&labels) {
            *v += n;
            return;
        }
        let mine = s.per_account.get(account).copied().unwrap_or(0);
        let labels = if mine + 1 >= MAX_SERIES_PER_ACCOUNT || s.values.len() >= MAX_SERIES {
            format!("account=\"{}\",overflow=\"true\"", esc(account))
        } else {
            labels
        };
        let Series {
            values,
            per_account,
        } = &mut *s;
        let e = values.entry(labels).or_insert_with(|| {
            *per_account.entry(account.to_string()).or_insert(0) += 1;
            0
        });
        *e += n;
    }

    fn render(&self, out: &mut String, name: &str) {
        let m = self.map.lock().unwrap_or_else(|p| p.into_inner());
        for (labels, v) in m.values.iter() {
            let _ = writeln!(out, "{name}{{{labels}}} {v}");
        }
    }
}

/// Escapes a Prometheus label value.
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Every metric the process exports.
pub struct Metrics {
    events_ingested: LabeledCounter,
    deliveries: LabeledCounter,
    delivery_failures: LabeledCounter,
    plugin_errors: LabeledCounter,
    /// Requests held back by an endpoint's `rate_limit`.
    rate_limited: LabeledCounter,
    /// Batch requests sent, and the deliveries they carried.
    batches: LabeledCounter,
    batched: LabeledCounter,
    pub ingest_rejected: AtomicU64,
    /// Events stored with a later due time (`deliver_at`/`deliver_in`).
    pub scheduled: AtomicU64,
    /// Pending scheduled events cancelled through the API.
    pub schedule_cancelled: AtomicU64,
    /// Pending scheduled events replaced by a new one with the same key.
    pub schedule_replaced: AtomicU64,
    /// Keygen-source requests refused (signature, digest, date…).
    pub keygen_rejected: AtomicU64,
    pub attempt_latency: Histogram,
    pub plugin_duration: Histogram,
    pub ingest_latency: Histogram,
    /// Delivery outcomes for the dashboard (live tail, overview figures).
    pub feed: crate::feed::Feed,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            events_ingested: LabeledCounter::new(),
            deliveries: LabeledCounter::new(),
            delivery_failures: LabeledCounter::new(),
            plugin_errors: LabeledCounter::new(),
            rate_limited: LabeledCounter::new(),
            batches: LabeledCounter::new(),
            batched: LabeledCounter::new(),
            ingest_rejected: AtomicU64::new(0),
            scheduled: AtomicU64::new(0),
            schedule_cancelled: AtomicU64::new(0),
            schedule_replaced: AtomicU64::new(0),
            keygen_rejected: AtomicU64::new(0),
            attempt_latency: Histogram::new(LATENCY_BUCKETS),
            plugin_duration: Histogram::new(PLUGIN_BUCKETS),
            ingest_latency: Histogram::new(LATENCY_BUCKETS),
            feed: crate::feed::Feed::default(),
        }
    }
}

/// Values read at scrape time from other parts of the process.
#[derive(Default)]
pub struct Gauges {
    pub due_depth: Vec<(String, String, u64)>,
    pub oldest_due_age_s: f64,
    pub store_bytes: u64,
    pub plugin_reloads: u64,
    pub plugin_load_failures: u64,
    pub plugin_log_lines_dropped: u64,
    pub plugin_instances_created: u64,
    pub plugins_loaded: u64,
    pub in_flight: u64,
    pub store_flush: Option<std::sync::Arc<Histogram>>,
}

impl Metrics {
    pub fn event_ingested(&self, account: &str, event_type: &str) {
        self.events_ingested.add(
            account,
            format!("account=\"{}\",event=\"{}\"", esc(account), esc(event_type)),
            1,
        );
    }

    /// A request delayed by its endpoint's `rate_limit`.
    pub fn rate_limited(&self, account: &str, endpoint: &str) {
        let labels = format!(
            "account=\"{}\",endpoint=\"{}\"",
            esc(account),
            esc(endpoint)
        );
        self.rate_limited.add(account, labels, 1);
    }

    /// A batch request sent with `items` deliveries.
    pub fn batch_sent(&self, account: &str, endpoint: &str, items: usize) {
        let labels = format!(
            "account=\"{}\",endpoint=\"{}\"",
            esc(account),
            esc(endpoint)
        );
        self.batches.add(account, labels.clone(), 1);
        self.batched.add(account, labels, items as u64);
    }

    /// `outcome`: delivered, attempt_failed, failed, filtered, disabled.
    /// Labelled by account and endpoint (endpoint ids are per account).
    pub fn delivery(&self, account: &str, endpoint: &str, outcome: &str) {
        self.deliveries.add(
            account,
            format!(
                "account=\"{}\",endpoint=\"{}\",outcome=\"{outcome}\"",
                esc(account),
                esc(endpoint)
            ),
            1,
        );
    }

    /// An attempt that got no HTTP response, by cause (`SendError::cause`:
    /// timeout, refused, dns, connect, tls, protocol).
    pub fn delivery_failure(&self, account: &str, endpoint: &str, cause: &str) {
        self.delivery_failures.add(
            account,
            format!(
                "account=\"{}\",endpoint=\"{}\",cause=\"{cause}\"",
                esc(account),
                esc(endpoint)
            ),
            1,
        );
    }

    pub fn plugin_error(&self, plugin: &str, kind: &str) {
        self.plugin_errors
            .add("", format!("plugin=\"{}\",kind=\"{kind}\"", esc(plugin)), 1);
    }

    pub fn render(&self, g: &Gauges) -> String {
        let mut out = String::with_capacity(4096);
        out.push_str("# HELP switchyard_events_ingested_total Events accepted (202), by account and event type.\n# TYPE switchyard_events_ingested_total counter\n");
        self.events_ingested
            .render(&mut out, "switchyard_events_ingested_total");
        out.push_str("# HELP switchyard_ingest_rejected_total Ingest requests answered with an error.\n# TYPE switchyard_ingest_rejected_total counter\n");
        let _ = writeln!(
            out,
            "switchyard_ingest_rejected_total {}",
            self.ingest_rejected.load(Ordering::Relaxed)
        );
        let _ = write!(
            out,
            "# HELP switchyard_events_scheduled_total Events accepted with a later due time (deliver_at / deliver_in).\n# TYPE switchyard_events_scheduled_total counter\nswitchyard_events_scheduled_total {}\n\
# HELP switchyard_scheduled_cancelled_total Pending scheduled events cancelled, by how.\n# TYPE switchyard_scheduled_cancelled_total counter\n\
switchyard_scheduled_cancelled_total{{how=\"cancelled\"}} {}\nswitchyard_scheduled_cancelled_total{{how=\"replaced\"}} {}\n\
# HELP switchyard_keygen_source_rejected_total Requests to the Keygen source refused (401).\n# TYPE switchyard_keygen_source_rejected_total counter\nswitchyard_keygen_source_rejected_total {}\n",
            self.scheduled.load(Ordering::Relaxed),
            self.schedule_cancelled.load(Ordering::Relaxed),
            self.schedule_replaced.load(Ordering::Relaxed),
            self.keygen_rejected.load(Ordering::Relaxed),
        );
        out.push_str("# HELP switchyard_ingest_duration_seconds Time from request to durable 202.\n# TYPE switchyard_ingest_duration_seconds histogram\n");
        self.ingest_latency
            .render(&mut out, "switchyard_ingest_duration_seconds", "");
        if let Some(h) = &g.store_flush {
            out.push_str("# HELP switchyard_store_flush_duration_seconds Group flushes of the store (every ingest in a group waits for its flush).\n# TYPE switchyard_store_flush_duration_seconds histogram\n");
            h.render(&mut out, "switchyard_store_flush_duration_seconds", "");
        }
        out.push_str("# HELP switchyard_deliveries_total Delivery attempts and final outcomes, by account and endpoint.\n# TYPE switchyard_deliveries_total counter\n");
        self.deliveries
            .render(&mut out, "switchyard_deliveries_total");
        out.push_str("# HELP switchyard_rate_limited_requests_total Requests delayed by the endpoint's rate_limit (per node), by account and endpoint.\n# TYPE switchyard_rate_limited_requests_total counter\n");
        self.rate_limited
            .render(&mut out, "switchyard_rate_limited_requests_total");
        out.push_str("# HELP switchyard_batch_requests_total Batch requests sent (batched endpoints), by account and endpoint.\n# TYPE switchyard_batch_requests_total counter\n");
        self.batches
            .render(&mut out, "switchyard_batch_requests_total");
        out.push_str("# HELP switchyard_batched_deliveries_total Deliveries carried by batch requests, by account and endpoint.\n# TYPE switchyard_batched_deliveries_total counter\n");
        self.batched
            .render(&mut out, "switchyard_batched_deliveries_total");
        out.push_str("# HELP switchyard_delivery_failures_total Attempts that got no HTTP response, by account, endpoint and cause (timeout, refused, dns, connect, tls, protocol).\n# TYPE switchyard_delivery_failures_total counter\n");
        self.delivery_failures
            .render(&mut out, "switchyard_delivery_failures_total");
        out.push_str("# HELP switchyard_attempt_duration_seconds HTTP attempt latency.\n# TYPE switchyard_attempt_duration_seconds histogram\n");
        self.attempt_latency
            .render(&mut out, "switchyard_attempt_duration_seconds", "");
        out.push_str("# HELP switchyard_plugin_call_duration_seconds Plugin chain run time per delivery.\n# TYPE switchyard_plugin_call_duration_seconds histogram\n");
        self.plugin_duration
            .render(&mut out, "switchyard_plugin_call_duration_seconds", "");
        out.push_str("# HELP switchyard_plugin_errors_total Plugin call errors, by plugin and kind.\n# TYPE switchyard_plugin_errors_total counter\n");
        self.plugin_errors
            .render(&mut out, "switchyard_plugin_errors_total");
        out.push_str("# HELP switchyard_due_deliveries Deliveries due now and not yet sent (scheduled ones once their time comes), by endpoint.\n# TYPE switchyard_due_deliveries gauge\n");
        for (account, endpoint, n) in &g.due_depth {
            let _ = writeln!(
                out,
                "switchyard_due_deliveries{{account=\"{}\",endpoint=\"{}\"}} {n}",
                esc(account),
                esc(endpoint)
            );
        }
        let _ = write!(
            out,
            "# HELP switchyard_oldest_due_age_seconds Age of the oldest delivery that is due and not yet sent.\n# TYPE switchyard_oldest_due_age_seconds gauge\nswitchyard_oldest_due_age_seconds {}\n\
# HELP switchyard_in_flight_attempts Attempts in flight.\n# TYPE switchyard_in_flight_attempts gauge\nswitchyard_in_flight_attempts {}\n\
# HELP switchyard_store_bytes Size of the sled store on disk.\n# TYPE switchyard_store_bytes gauge\nswitchyard_store_bytes {}\n\
# HELP switchyard_plugins_loaded Plugins currently loaded.\n# TYPE switchyard_plugins_loaded gauge\nswitchyard_plugins_loaded {}\n\
# HELP switchyard_plugin_reloads_total Plugin versions swapped in by hot reload.\n# TYPE switchyard_plugin_reloads_total counter\nswitchyard_plugin_reloads_total {}\n\
# HELP switchyard_plugin_load_failures_total Plugin files that failed to load.\n# TYPE switchyard_plugin_load_failures_total counter\nswitchyard_plugin_load_failures_total {}\n",
            g.oldest_due_age_s,
            g.in_flight,
            g.store_bytes,
            g.plugins_loaded,
            g.plugin_reloads,
            g.plugin_load_failures
        );
        let _ = writeln!(
            out,
            "# HELP switchyard_plugin_log_lines_dropped_total Plugin log lines dropped over the per-call log budget.\n# TYPE switchyard_plugin_log_lines_dropped_total counter\nswitchyard_plugin_log_lines_dropped_total {}",
            g.plugin_log_lines_dropped
        );
        let _ = writeln!(
            out,
            "# HELP switchyard_plugin_instances_created_total Plugin instances created (instantiated and configured); climbing under steady load means calls outrun the warm pools.\n# TYPE switchyard_plugin_instances_created_total counter\nswitchyard_plugin_instances_created_total {}",
            g.plugin_instances_created
        );
        out
    }
}
