//! The one set of rules for a webhook endpoint's attributes, used by both
//! `router.toml` ([`super::Config::parse`]) and the HTTP API
//! (`admin/endpoints.rs`), so a value one accepts the other accepts too.
//!
//! Each error names its [`Field`]; the caller says where that field is:
//! `router.toml` prefixes the endpoint's line (`router.toml:12: endpoints[0]
//! ("crm"): timeout: …`), the API answers a JSON:API error whose pointer is
//! the attribute (`/data/attributes/timeout`). The rules are listed in
//! docs/API.md ("Endpoint attributes").

use std::time::Duration;

use serde_json::Value;

use super::{BatchSpec, parse_size};
use crate::policy::guard::{self, UrlPolicy};
use crate::policy::retry::RetrySchedule;

/// Most `max_in_flight` (an endpoint's concurrent requests).
pub const MAX_IN_FLIGHT: usize = 1024;
/// Most retries in a `retry_schedule`.
pub const MAX_RETRIES: usize = 100;
/// Shortest and longest request `timeout`.
pub const TIMEOUT_RANGE: (Duration, Duration) =
    (Duration::from_millis(1), Duration::from_secs(300));

/// An endpoint attribute (with the index of a list element).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Id,
    Url,
    Subscriptions(Option<usize>),
    Signatures(Option<usize>),
    Secret,
    PluginName(usize),
    PluginConfig(usize),
    RetrySchedule(Option<usize>),
    Timeout,
    MaxInFlight,
    BatchMaxEvents,
    BatchMaxBytes,
    BatchMaxWait,
    RateLimit,
}

impl Field {
    /// The key as written in `router.toml`: `plugins[0].name`.
    pub fn toml(&self) -> String {
        let list = |name: &str, i: &Option<usize>| match i {
            Some(i) => format!("{name}[{i}]"),
            None => name.to_string(),
        };
        match self {
            Field::Id => "id".into(),
            Field::Url => "url".into(),
            Field::Subscriptions(i) => list("subscriptions", i),
            Field::Signatures(i) => list("signatures", i),
            Field::Secret => "secret".into(),
            Field::PluginName(i) => format!("plugins[{i}].name"),
            Field::PluginConfig(i) => format!("plugins[{i}].config"),
            Field::RetrySchedule(i) => list("retry_schedule", i),
            Field::Timeout => "timeout".into(),
            Field::MaxInFlight => "max_in_flight".into(),
            Field::BatchMaxEvents => "batch.max_events".into(),
            Field::BatchMaxBytes => "batch.max_bytes".into(),
            Field::BatchMaxWait => "batch.max_wait".into(),
            Field::RateLimit => "rate_limit".into(),
        }
    }

    /// The JSON:API pointer of the attribute: `/data/attributes/plugins/0/name`.
    pub fn pointer(&self) -> String {
        const P: &str = "/data/attributes";
        let list = |name: &str, i: &Option<usize>| match i {
            Some(i) => format!("{P}/{name}/{i}"),
            None => format!("{P}/{name}"),
        };
        match self {
            Field::Id => "/data/id".into(),
            Field::Url => format!("{P}/url"),
            Field::Subscriptions(i) => list("subscriptions", i),
            Field::Signatures(i) => list("signatures", i),
            Field::Secret => format!("{P}/secret"),
            Field::PluginName(i) => format!("{P}/plugins/{i}/name"),
            Field::PluginConfig(i) => format!("{P}/plugins/{i}/config"),
            Field::RetrySchedule(i) => list("retrySchedule", i),
            Field::Timeout => format!("{P}/timeout"),
            Field::MaxInFlight => format!("{P}/maxInFlight"),
            Field::BatchMaxEvents => format!("{P}/batch/maxEvents"),
            Field::BatchMaxBytes => format!("{P}/batch/maxBytes"),
            Field::BatchMaxWait => format!("{P}/batch/maxWait"),
            Field::RateLimit => format!("{P}/rateLimit"),
        }
    }
}

/// One refused attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: Field,
    pub message: String,
}

impl FieldError {
    fn new(field: Field, message: impl Into<String>) -> Self {
        FieldError {
            field,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field.toml(), self.message)
    }
}

/// Ids of accounts and endpoints: 1–64 letters, digits, `-`, `_`, `.`.
pub fn check_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > 64 {
        return Err("must be 1 to 64 characters".into());
    }
    if !id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(format!(
            "{id:?} may only contain letters, digits, '-', '_' and '.'"
        ));
    }
    Ok(())
}

/// A plugin name as an endpoint refers to it: the one rule of
/// [`crate::plugins::name`] (the file stem in the plugins folder).
pub fn check_plugin_name(name: &str) -> Result<(), String> {
    crate::plugins::name::check_name(name)
}

/// `*`, `family.*` or an exact event type.
pub fn check_pattern(p: &str) -> Result<(), String> {
    let stars = p.matches('*').count();
    let ok = !p.is_empty()
        && p.len() <= 128
        && (stars == 0 || p == "*" || (stars == 1 && p.ends_with(".*") && p.len() > 2))
        && p.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '*'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "subscription {p:?} is not valid: use \"*\", \"family.*\" or an exact event type such as \"license.created\""
        ))
    }
}

fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s)
        .map_err(|e| format!("{s:?} is not a duration ({e}); write e.g. \"15s\", \"5m\", \"2h\""))
}

pub fn check_url(url: &str, policy: &UrlPolicy) -> Result<(), FieldError> {
    guard::check_url(url, policy)
        .map(|_| ())
        .map_err(|m| FieldError::new(Field::Url, m))
}

pub fn check_subscriptions(subs: &[String]) -> Result<(), FieldError> {
    if subs.is_empty() {
        return Err(FieldError::new(
            Field::Subscriptions(None),
            "is empty: the endpoint would receive nothing (use [\"*\"] for all)",
        ));
    }
    for (i, s) in subs.iter().enumerate() {
        check_pattern(s).map_err(|m| FieldError::new(Field::Subscriptions(Some(i)), m))?;
    }
    Ok(())
}

/// The signature schemes: `(standard, keygen)`. An empty list is allowed
/// (unsigned deliveries, e.g. to a chat webhook that verifies nothing);
/// `webhook-id` is sent either way. `has_keygen_key`: whether the account
/// has a `keygen_signing_key` (`None`: unknown account, reported elsewhere).
pub fn check_signatures(
    sigs: &[String],
    has_keygen_key: Option<bool>,
) -> Result<(bool, bool), FieldError> {
    let (mut standard, mut keygen) = (false, false);
    for (i, s) in sigs.iter().enumerate() {
        match s.as_str() {
            "standard" => standard = true,
            "keygen" => keygen = true,
            other => {
                return Err(FieldError::new(
                    Field::Signatures(Some(i)),
                    format!(
                        "{other:?} is not a scheme; use \"standard\" and/or \"keygen\", or [] for unsigned deliveries"
                    ),
                ));
            }
        }
    }
    if keygen && has_keygen_key == Some(false) {
        return Err(FieldError::new(
            Field::Signatures(None),
            "the \"keygen\" signature needs `keygen_signing_key` on the account in router.toml",
        ));
    }
    Ok((standard, keygen))
}

/// The "standard" signature needs a secret.
pub fn check_secret_present(standard: bool, has_secret: bool) -> Result<(), FieldError> {
    if standard && !has_secret {
        return Err(FieldError::new(
            Field::Secret,
            "the \"standard\" signature needs `secret` (or `secret_env`/`secrets`): a whsec_… value",
        ));
    }
    Ok(())
}

/// A plugin reference: its name, and a config that must be a JSON object
/// (`None`: `{}`).
pub fn check_plugin(i: usize, name: &str, config: Option<&Value>) -> Result<(), FieldError> {
    check_plugin_name(name).map_err(|m| FieldError::new(Field::PluginName(i), m))?;
    if config.is_some_and(|c| !c.is_object()) {
        return Err(FieldError::new(
            Field::PluginConfig(i),
            "must be an object (a table in router.toml)",
        ));
    }
    Ok(())
}

pub fn check_retry_schedule(list: &[String]) -> Result<RetrySchedule, FieldError> {
    if list.len() > MAX_RETRIES {
        return Err(FieldError::new(
            Field::RetrySchedule(None),
            format!("at most {MAX_RETRIES} retries (got {})", list.len()),
        ));
    }
    let delays = list
        .iter()
        .enumerate()
        .map(|(i, s)| {
            duration(s)
                .and_then(|d| crate::policy::retry::check_delay(d).map(|()| d))
                .map_err(|m| FieldError::new(Field::RetrySchedule(Some(i)), m))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(RetrySchedule::fixed(delays))
}

pub fn check_timeout(s: &str) -> Result<Duration, FieldError> {
    let d = duration(s).map_err(|m| FieldError::new(Field::Timeout, m))?;
    check_timeout_value(d).map_err(|m| FieldError::new(Field::Timeout, m))?;
    Ok(d)
}

/// The bound of a request timeout (also `[delivery] timeout`).
pub fn check_timeout_value(d: Duration) -> Result<(), String> {
    if d < TIMEOUT_RANGE.0 || d > TIMEOUT_RANGE.1 {
        return Err(format!(
            "{} is out of range: must be between 1ms and 5m",
            humantime::format_duration(d)
        ));
    }
    Ok(())
}

pub fn check_max_in_flight(n: usize) -> Result<(), FieldError> {
    if !(1..=MAX_IN_FLIGHT).contains(&n) {
        return Err(FieldError::new(
            Field::MaxInFlight,
            format!("must be 1 to {MAX_IN_FLIGHT} (got {n})"),
        ));
    }
    Ok(())
}

/// Longest `batch.max_wait`.
pub const MAX_BATCH_WAIT: Duration = Duration::from_secs(60);

/// `batch = { max_events, max_bytes, max_wait }`: each part defaults to
/// [`BatchSpec::DEFAULT`]'s. Every refused part is named.
pub fn check_batch(
    max_events: Option<usize>,
    max_bytes: Option<&str>,
    max_wait: Option<&str>,
) -> Result<BatchSpec, Vec<FieldError>> {
    let d = BatchSpec::DEFAULT;
    let mut errors = Vec::new();
    let max_events = max_events.unwrap_or(d.max_events);
    if !(1..=10_000).contains(&max_events) {
        errors.push(FieldError::new(
            Field::BatchMaxEvents,
            format!("must be 1 to 10000 (got {max_events})"),
        ));
    }
    let max_bytes = match max_bytes {
        None => d.max_bytes,
        Some(s) => parse_size(s)
            .filter(|n| (1..=(64 << 20)).contains(n))
            .unwrap_or_else(|| {
                errors.push(FieldError::new(
                    Field::BatchMaxBytes,
                    format!("{s:?} is not a size from \"1B\" to \"64MiB\"; write e.g. \"450KB\""),
                ));
                d.max_bytes
            }),
    };
    let max_wait = match max_wait {
        None => d.max_wait,
        Some(s) => match duration(s) {
            Ok(w) if w <= MAX_BATCH_WAIT => w,
            Ok(_) => {
                errors.push(FieldError::new(
                    Field::BatchMaxWait,
                    format!("{s:?} is longer than 60s"),
                ));
                d.max_wait
            }
            Err(m) => {
                errors.push(FieldError::new(Field::BatchMaxWait, m));
                d.max_wait
            }
        },
    };
    if errors.is_empty() {
        Ok(BatchSpec {
            max_events,
            max_bytes,
            max_wait,
        })
    } else {
        Err(errors)
    }
}

/// `rate_limit = "500/s"`: requests per second.
pub fn check_rate_limit(s: &str) -> Result<f64, FieldError> {
    parse_rate(s).ok_or_else(|| {
        FieldError::new(
            Field::RateLimit,
            format!("{s:?} is not a rate; write e.g. \"500/s\", \"50/m\""),
        )
    })
}

/// A rate as `rate_limit` is written: per second when that is a whole
/// number, else per minute or per hour.
pub fn describe_rate(per_sec: f64) -> String {
    for (unit, secs) in [("s", 1.0), ("m", 60.0), ("h", 3600.0)] {
        let n = per_sec * secs;
        if (n - n.round()).abs() < 1e-6 * n.max(1.0) {
            return format!("{}/{unit}", n.round());
        }
    }
    format!("{per_sec}/s")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_name_their_key_and_pointer() {
        assert_eq!(Field::PluginName(2).toml(), "plugins[2].name");
        assert_eq!(
            Field::PluginName(2).pointer(),
            "/data/attributes/plugins/2/name"
        );
        assert_eq!(Field::RetrySchedule(Some(1)).toml(), "retry_schedule[1]");
        assert_eq!(
            Field::RetrySchedule(Some(1)).pointer(),
            "/data/attributes/retrySchedule/1"
        );
        assert_eq!(Field::MaxInFlight.pointer(), "/data/attributes/maxInFlight");
    }

    #[test]
    fn one_rule_per_field() {
        assert!(check_plugin_name("slack-notify").is_ok());
        assert!(
            check_plugin_name("acme.filter").is_err(),
            "one rule: no dots"
        );
        for bad in ["", ".hidden", "a/b", "a b", &"x".repeat(65)] {
            assert!(check_plugin_name(bad).is_err(), "{bad:?}");
        }
        assert_eq!(check_signatures(&[], Some(true)), Ok((false, false)));
        assert!(check_signatures(&["keygen".into()], Some(false)).is_err());
        assert!(check_signatures(&["hmac".into()], Some(true)).is_err());
        assert!(check_timeout("0s").is_err());
        assert!(check_timeout("6m").is_err());
        assert_eq!(check_timeout("5m").unwrap(), Duration::from_secs(300));
        let many: Vec<String> = (0..101).map(|_| "1s".to_string()).collect();
        assert!(check_retry_schedule(&many).is_err());
        assert!(check_retry_schedule(&many[..100]).is_ok());
        assert!(check_max_in_flight(0).is_err());
        assert!(check_max_in_flight(1025).is_err());
        assert!(check_plugin(0, "p", Some(&serde_json::json!(5))).is_err());
        assert_eq!(check_batch(None, None, None), Ok(BatchSpec::DEFAULT));
        assert_eq!(
            check_batch(Some(0), None, None).unwrap_err()[0].field,
            Field::BatchMaxEvents
        );
        assert_eq!(
            check_batch(None, Some("lots"), None).unwrap_err()[0].field,
            Field::BatchMaxBytes
        );
        assert_eq!(
            check_batch(None, None, Some("2h")).unwrap_err()[0].field,
            Field::BatchMaxWait
        );
        assert_eq!(check_rate_limit("50/m"), Ok(50.0 / 60.0));
        assert!(check_rate_limit("fast").is_err());
        for r in ["500/s", "50/m", "7/h"] {
            assert_eq!(describe_rate(check_rate_limit(r).unwrap()), r);
        }
    }
}

/// Parses `"500/s"`, `"50/m"` (or `/min`), `"1000/h"` into requests per
/// second.
pub fn parse_rate(s: &str) -> Option<f64> {
    let (n, unit) = s.trim().split_once('/')?;
    let n: f64 = n
        .trim()
        .parse()
        .ok()
        .filter(|n: &f64| *n > 0.0 && n.is_finite())?;
    let secs = match unit.trim() {
        "s" | "sec" | "second" => 1.0,
        "m" | "min" | "minute" => 60.0,
        "h" | "hour" => 3600.0,
        _ => return None,
    };
    Some(n / secs)
}

#[cfg(test)]
mod rate_tests {
    use super::parse_rate;

    #[test]
    fn rates_parse() {
        assert_eq!(parse_rate("500/s"), Some(500.0));
        assert_eq!(parse_rate("60/m"), Some(1.0));
        assert_eq!(parse_rate("3600/h"), Some(1.0));
        assert_eq!(parse_rate("0/s"), None);
        assert_eq!(parse_rate("fast"), None);
        assert_eq!(parse_rate("5/week"), None);
    }
}
