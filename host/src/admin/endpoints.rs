//! `/v1/accounts/{account}/webhook-endpoints`: list, create, show, update,
//! delete, and the actions `rotate-secret`, `ping` and `recover`.
//!
//! Endpoints created here are persisted (`crate::endpoints`) and swapped
//! into the registry; endpoints declared in `router.toml` are listed but
//! read-only. Secrets are shown once, in the answer to create and
//! rotate-secret, never by GET.

use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::{invalid, param, query, read_json, storage, stored_ms};
use crate::api::{self, ApiError, Body};
use crate::config::{EndpointSpec, PluginRef, check_id, check_pattern};
use crate::delivery::AttemptSummary;
use crate::delivery::envelope::rfc3339;
use crate::endpoints::{self as persist, StoredEndpoint};
use crate::policy::guard;
use crate::policy::retry::RetrySchedule;
use crate::registry::LiveEndpoint;
use crate::signing::{Secret, SecretSet};
use crate::state::AppState;
use crate::store::{DeliveryStatus, EventRecord, NewEvent, keys, now_ms};

/// Default grace period of the old secret after a rotation.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(24 * 3600);

/// Serializes API changes to endpoints (create with a given id, rotate…).
static WRITE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Attrs {
    url: Option<String>,
    subscriptions: Option<Vec<String>>,
    plugins: Option<Vec<PluginIn>>,
    signatures: Option<Vec<String>>,
    secret: Option<String>,
    retry_schedule: Option<Vec<String>>,
    timeout: Option<String>,
    max_in_flight: Option<usize>,
    enabled: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PluginIn {
    name: String,
    #[serde(default)]
    config: Option<Value>,
}

/// The `data` of a request document: optional id, attributes.
fn data_of(doc: Option<Value>) -> Result<(Option<String>, Attrs), ApiError> {
    let Some(doc) = doc else {
        return Err(ApiError::bad_request(
            "Missing body",
            "send {\"data\": {\"type\": \"webhook-endpoints\", \"attributes\": {...}}}",
            Some("/data"),
        ));
    };
    let data = doc.get("data").filter(|d| d.is_object()).ok_or_else(|| {
        ApiError::bad_request(
            "Invalid document",
            "`data` must be an object",
            Some("/data"),
        )
    })?;
    if let Some(t) = data.get("type") {
        if t != "webhook-endpoints" {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "TYPE_MISMATCH",
                "Type mismatch",
                format!("`data.type` must be \"webhook-endpoints\" (got {t})"),
            )
            .with_pointer("/data/type"));
        }
    }
    let id = match data.get("id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => {
            return Err(ApiError::bad_request(
                "Invalid id",
                "`data.id` must be a string",
                Some("/data/id"),
            ));
        }
    };
    let attrs = match data.get("attributes") {
        None => Attrs::default(),
        Some(a) => serde_json::from_value(a.clone()).map_err(|e| {
            ApiError::bad_request(
                "Invalid attributes",
                format!(
                    "{e}; attributes are url, subscriptions, plugins, signatures, secret, retrySchedule, timeout, maxInFlight, enabled"
                ),
                Some("/data/attributes"),
            )
        })?,
    };
    Ok((id, attrs))
}

fn parse_duration(s: &str, pointer: &str) -> Result<Duration, ApiError> {
    humantime::parse_duration(s).map_err(|e| {
        invalid(
            format!("{s:?} is not a duration ({e}); write e.g. \"15s\", \"5m\""),
            pointer,
        )
    })
}

/// Applies attributes to a spec and validates the result (everything but
/// plugin configs, which binding checks).
fn apply(
    state: &AppState,
    spec: &mut EndpointSpec,
    a: Attrs,
    creating: bool,
) -> Result<(), ApiError> {
    let config = state.config();
    const P: &str = "/data/attributes";
    if let Some(url) = a.url {
        guard::check_url(&url, &config.delivery.policy)
            .map_err(|m| invalid(m, &format!("{P}/url")))?;
        spec.url = url;
    } else if creating {
        return Err(invalid(
            "is required: the https:// URL deliveries are POSTed to",
            &format!("{P}/url"),
        ));
    }
    if let Some(subs) = a.subscriptions {
        if subs.is_empty() {
            return Err(invalid(
                "is empty: the endpoint would receive nothing (use [\"*\"] for all)",
                &format!("{P}/subscriptions"),
            ));
        }
        for (i, s) in subs.iter().enumerate() {
            check_pattern(s).map_err(|m| invalid(m, &format!("{P}/subscriptions/{i}")))?;
        }
        spec.subscriptions = subs;
    }
    if let Some(plugins) = a.plugins {
        let mut out = Vec::new();
        for (i, p) in plugins.into_iter().enumerate() {
            if p.name.is_empty() || p.name.len() > 64 || p.name.contains(['/', '\\', '.']) {
                return Err(invalid(
                    format!(
                        "{:?} is not a plugin name (the file stem in the plugins folder)",
                        p.name
                    ),
                    &format!("{P}/plugins/{i}/name"),
                ));
            }
            let config = p.config.unwrap_or_else(|| json!({}));
            if !config.is_object() {
                return Err(invalid(
                    "must be an object",
                    &format!("{P}/plugins/{i}/config"),
                ));
            }
            out.push(PluginRef {
                name: p.name,
                config,
            });
        }
        spec.plugins = out;
    }
    if let Some(sigs) = a.signatures {
        let (mut standard, mut keygen) = (false, false);
        for (i, s) in sigs.iter().enumerate() {
            match s.as_str() {
                "standard" => standard = true,
                "keygen" => keygen = true,
                other => {
                    return Err(invalid(
                        format!("{other:?} is not a scheme; use \"standard\" and/or \"keygen\""),
                        &format!("{P}/signatures/{i}"),
                    ));
                }
            }
        }
        if !standard && !keygen {
            return Err(invalid(
                "name at least one scheme: \"standard\" and/or \"keygen\"",
                &format!("{P}/signatures"),
            ));
        }
        if keygen
            && config
                .account(&spec.account)
                .is_some_and(|acc| acc.keygen_key.is_none())
        {
            return Err(invalid(
                format!(
                    "the \"keygen\" signature needs `keygen_signing_key` on account {:?} in router.toml",
                    spec.account
                ),
                &format!("{P}/signatures"),
            ));
        }
        spec.standard_signature = standard;
        spec.keygen_signature = keygen;
    }
    if let Some(secret) = a.secret {
        if !creating {
            return Err(invalid(
                "secrets change through POST …/actions/rotate-secret",
                &format!("{P}/secret"),
            ));
        }
        let s = Secret::parse(&secret).map_err(|m| invalid(m, &format!("{P}/secret")))?;
        spec.secrets = SecretSet(vec![s]);
    }
    if let Some(list) = a.retry_schedule {
        if list.len() > 50 {
            return Err(invalid("at most 50 retries", &format!("{P}/retrySchedule")));
        }
        let delays = list
            .iter()
            .enumerate()
            .map(|(i, s)| parse_duration(s, &format!("{P}/retrySchedule/{i}")))
            .collect::<Result<Vec<_>, _>>()?;
        spec.retry_schedule = RetrySchedule::fixed(delays);
    }
    if let Some(t) = a.timeout {
        let d = parse_duration(&t, &format!("{P}/timeout"))?;
        if d.is_zero() || d > Duration::from_secs(300) {
            return Err(invalid(
                "must be between 1ms and 5m",
                &format!("{P}/timeout"),
            ));
        }
        spec.timeout = d;
    }
    if let Some(n) = a.max_in_flight {
        if !(1..=1024).contains(&n) {
            return Err(invalid("must be 1 to 1024", &format!("{P}/maxInFlight")));
        }
        spec.max_in_flight = n;
    }
    if let Some(e) = a.enabled {
        spec.enabled = e;
    }
    Ok(())
}

/// Binds the plugins (a plugin that rejects its config is a 422 with its
/// message).
fn build(state: &AppState, spec: EndpointSpec) -> Result<LiveEndpoint, ApiError> {
    LiveEndpoint::build(spec, &state.runtime)
        .map_err(|e| invalid(format!("{e}"), "/data/attributes/plugins"))
}

/// Plugin config values under keys that look like credentials are not shown.
fn redact(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| {
                    let l = k.to_ascii_lowercase();
                    let secret = ["key", "secret", "token", "password", "auth"]
                        .iter()
                        .any(|w| l.contains(w));
                    (
                        k.clone(),
                        if secret && !v.is_null() {
                            json!("[redacted]")
                        } else {
                            redact(v)
                        },
                    )
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(redact).collect()),
        other => other.clone(),
    }
}

fn opt_time(ms: Option<i64>) -> Value {
    ms.map(|m| json!(rfc3339(m))).unwrap_or(Value::Null)
}

/// The JSON:API resource of an endpoint (no secret values).
pub fn resource(state: &AppState, ep: &LiveEndpoint, stored: Option<&StoredEndpoint>) -> Value {
    let s = &ep.spec;
    let health = state.dispatcher.health(ep.uid);
    let h = &health.state;
    let now = now_ms();
    let mut signatures = Vec::new();
    if s.standard_signature {
        signatures.push("standard");
    }
    if s.keygen_signature {
        signatures.push("keygen");
    }
    let status = if !s.enabled {
        "disabled"
    } else if h.disabled_reason.is_some() {
        "auto-disabled"
    } else {
        "enabled"
    };
    json!({
        "id": s.id,
        "type": "webhook-endpoints",
        "attributes": {
            "url": s.url,
            "subscriptions": s.subscriptions,
            "plugins": s.plugins.iter().map(|p| json!({"name": p.name, "config": redact(&p.config)})).collect::<Vec<_>>(),
            "signatures": signatures,
            "secrets": s.secrets.0.iter().filter(|x| x.expires_ms.is_none_or(|e| e > now)).map(|x| json!({"expires": opt_time(x.expires_ms)})).collect::<Vec<_>>(),
            "retrySchedule": s.retry_schedule.describe(),
            "timeout": humantime::format_duration(s.timeout).to_string(),
            "maxInFlight": s.max_in_flight,
            "enabled": s.enabled,
            "status": status,
            "readOnly": s.from_config,
            "source": if s.from_config { "config" } else { "api" },
            "health": {
                "consecutiveFailures": h.consecutive_failures,
                "failingSince": opt_time(h.first_failure_ms),
                "lastSuccess": opt_time(h.last_success_ms),
                "lastError": h.last_error,
                "disabledReason": h.disabled_reason,
                "disabledAt": opt_time(h.disabled_at_ms),
                "inFlight": health.in_flight,
            },
            "created": opt_time(stored.map(|x| x.created_ms)),
            "updated": opt_time(stored.map(|x| x.updated_ms)),
        },
        "relationships": {"account": {"data": {"type": "accounts", "id": s.account}}},
        "links": {"self": format!("/v1/accounts/{}/webhook-endpoints/{}", s.account, s.id)},
    })
}

/// The endpoints of `account` created through the API (persisted form).
pub fn stored_of_account(state: &AppState, account: &str) -> Result<Vec<StoredEndpoint>, ApiError> {
    let mut out = Vec::new();
    for (_, v) in state
        .store
        .scan_raw(&keys::api_endpoint(account, ""))
        .map_err(storage)?
    {
        if let Ok(e) = serde_json::from_slice::<StoredEndpoint>(&v) {
            if e.account == account {
                out.push(e);
            }
        }
    }
    Ok(out)
}

fn find(state: &AppState, account: &str, id: &str) -> Result<Arc<LiveEndpoint>, ApiError> {
    state
        .registry
        .snapshot()
        .endpoint(account, id)
        .cloned()
        .ok_or_else(|| ApiError::not_found(&format!("webhook endpoint {id:?}")))
}

fn read_only(ep: &LiveEndpoint) -> ApiError {
    ApiError::conflict(format!(
        "webhook endpoint {:?} is declared in router.toml and is read-only through the API; edit router.toml (it is reloaded on change) or create an endpoint through the API",
        ep.spec.id
    ))
}

/// `GET …/webhook-endpoints` (`page[size]`, `page[after]`=<id>), by id.
pub fn list(
    state: &AppState,
    req: &Request<Incoming>,
    account: &str,
) -> Result<Response<Body>, ApiError> {
    let q = query(req);
    let size = page_size(&q)?;
    let after = param(&q, "page[after]").map(str::to_string);
    let snap = state.registry.snapshot();
    let stored = stored_of_account(state, account)?;
    let mut eps: Vec<_> = snap.endpoints(account).to_vec();
    eps.sort_by(|a, b| a.spec.id.cmp(&b.spec.id));
    let rest: Vec<_> = eps
        .into_iter()
        .filter(|e| after.as_deref().is_none_or(|a| e.spec.id.as_str() > a))
        .collect();
    let page: Vec<_> = rest.iter().take(size).collect();
    let data: Vec<Value> = page
        .iter()
        .map(|e| resource(state, e, stored.iter().find(|s| s.id == e.spec.id)))
        .collect();
    let next = (rest.len() > size).then(|| {
        format!(
            "/v1/accounts/{account}/webhook-endpoints?page[size]={size}&page[after]={}",
            super::percent_encode(&page.last().map(|e| e.spec.id.clone()).unwrap_or_default())
        )
    });
    Ok(api::document(
        StatusCode::OK,
        &json!({"data": data, "links": {"self": format!("/v1/accounts/{account}/webhook-endpoints"), "next": next}}),
    ))
}

pub fn page_size(q: &[(String, String)]) -> Result<usize, ApiError> {
    match param(q, "page[size]") {
        None => Ok(20),
        Some(s) => s
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=100).contains(n))
            .ok_or_else(|| {
                ApiError::bad_request("Invalid page size", "page[size] must be 1 to 100", None)
            }),
    }
}

pub async fn show(state: &AppState, account: &str, id: &str) -> Result<Response<Body>, ApiError> {
    Ok(api::document(
        StatusCode::OK,
        &json!({"data": show_data(state, account, id).await?}),
    ))
}

/// The resource of one endpoint of `account` (404 for another account's).
pub async fn show_data(state: &AppState, account: &str, id: &str) -> Result<Value, ApiError> {
    let ep = find(state, account, id)?;
    let stored = persist::get(&state.store, account, id).map_err(storage)?;
    Ok(resource(state, &ep, stored.as_ref()))
}

/// `POST …/webhook-endpoints`: 201 with the resource and, once, the secret.
pub async fn create(
    state: &AppState,
    req: Request<Incoming>,
    account: &str,
) -> Result<Response<Body>, ApiError> {
    let doc = read_json(state, req).await?;
    let body = create_doc(state, account, doc).await?;
    let id = body["data"]["id"].as_str().unwrap_or_default().to_string();
    let mut r = api::document(StatusCode::CREATED, &body);
    if let Ok(v) =
        http::HeaderValue::from_str(&format!("/v1/accounts/{account}/webhook-endpoints/{id}"))
    {
        r.headers_mut().insert(http::header::LOCATION, v);
    }
    Ok(r)
}

/// Creates an endpoint of `account` from a request document: the answer
/// document, with the secret (shown only here) in `data.attributes.secret`.
pub async fn create_doc(
    state: &AppState,
    account: &str,
    doc: Option<Value>,
) -> Result<Value, ApiError> {
    let (id, attrs) = data_of(doc)?;
    let id = id.unwrap_or_else(|| Uuid::new_v4().to_string());
    check_id(&id).map_err(|m| invalid(format!("id: {m}"), "/data/id"))?;
    let config = state.config();
    let generated = attrs.secret.is_none();
    let mut spec = EndpointSpec {
        id: id.clone(),
        account: account.to_string(),
        url: String::new(),
        subscriptions: vec!["*".into()],
        secrets: SecretSet(vec![Secret::generate()]),
        standard_signature: true,
        keygen_signature: false,
        plugins: Vec::new(),
        retry_schedule: config.delivery.retry_schedule.clone(),
        timeout: config.delivery.timeout,
        max_in_flight: config.delivery.max_in_flight,
        enabled: true,
        from_config: false,
    };
    apply(state, &mut spec, attrs, true)?;
    let secret = spec.secrets.0[0].encode();
    let _w = WRITE.lock().await;
    if let Some(existing) = state.registry.snapshot().endpoint(account, &id) {
        return Err(ApiError::conflict(format!(
            "webhook endpoint {id:?} already exists{}; choose another id or PATCH it",
            if existing.spec.from_config {
                " (declared in router.toml)"
            } else {
                ""
            }
        ))
        .with_pointer("/data/id"));
    }
    let live = build(state, spec)?;
    let now = now_ms();
    let stored = StoredEndpoint::from_spec(&live.spec, now, now);
    persist::save(&state.store, &stored).map_err(storage)?;
    // A new endpoint starts healthy, even if an endpoint of the same id
    // was disabled before being deleted.
    let _ = state.dispatcher.enable(live.uid);
    let live = Arc::new(live);
    state.registry.update(|s| s.with_endpoint(live.clone()));
    state.dispatcher.sync();
    let mut body = json!({"data": resource(state, &live, Some(&stored))});
    body["data"]["attributes"]["secret"] = json!(secret);
    body["meta"] = json!({"secretGenerated": generated, "note": "the secret is shown only now; store it to verify webhook-signature"});
    Ok(body)
}

/// `PATCH …/webhook-endpoints/{id}`. `enabled: true` also clears an
/// automatic disable (410, sustained failure) — the only change allowed on
/// endpoints from router.toml.
pub async fn update(
    state: &AppState,
    req: Request<Incoming>,
    account: &str,
    id: &str,
) -> Result<Response<Body>, ApiError> {
    let doc = read_json(state, req).await?;
    Ok(api::document(
        StatusCode::OK,
        &update_doc(state, account, id, doc).await?,
    ))
}

/// Applies a PATCH document to an endpoint of `account`: the answer document.
pub async fn update_doc(
    state: &AppState,
    account: &str,
    id: &str,
    doc: Option<Value>,
) -> Result<Value, ApiError> {
    let ep = find(state, account, id)?;
    let (body_id, attrs) = data_of(doc)?;
    if body_id.as_deref().is_some_and(|b| b != id) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "ID_MISMATCH",
            "Id mismatch",
            format!("`data.id` must be {id:?}"),
        )
        .with_pointer("/data/id"));
    }
    let re_enable = attrs.enabled == Some(true);
    if ep.spec.from_config {
        let only_enable = attrs.url.is_none()
            && attrs.subscriptions.is_none()
            && attrs.plugins.is_none()
            && attrs.signatures.is_none()
            && attrs.secret.is_none()
            && attrs.retry_schedule.is_none()
            && attrs.timeout.is_none()
            && attrs.max_in_flight.is_none()
            && re_enable;
        if !only_enable {
            return Err(read_only(&ep));
        }
        if disabled(state, ep.uid) {
            state.dispatcher.enable(ep.uid).map_err(storage)?;
        }
        return Ok(json!({"data": show_data(state, account, id).await?}));
    }
    let _w = WRITE.lock().await;
    let ep = find(state, account, id)?;
    let mut spec = ep.spec.clone();
    apply(state, &mut spec, attrs, false)?;
    let live = Arc::new(build(state, spec)?);
    let created = persist::get(&state.store, account, id)
        .map_err(storage)?
        .map(|s| s.created_ms)
        .unwrap_or_else(now_ms);
    let stored = StoredEndpoint::from_spec(&live.spec, created, now_ms());
    persist::save(&state.store, &stored).map_err(storage)?;
    if re_enable && disabled(state, live.uid) {
        state.dispatcher.enable(live.uid).map_err(storage)?;
    }
    state.registry.update(|s| s.with_endpoint(live.clone()));
    state.dispatcher.sync();
    Ok(json!({"data": resource(state, &live, Some(&stored))}))
}

/// `DELETE …/webhook-endpoints/{id}`: 204. Its pending deliveries are
/// marked disabled so retention can prune their events.
pub async fn delete(state: &AppState, account: &str, id: &str) -> Result<Response<Body>, ApiError> {
    let _w = WRITE.lock().await;
    let ep = find(state, account, id)?;
    if ep.spec.from_config {
        return Err(read_only(&ep));
    }
    persist::delete(&state.store, account, id).map_err(storage)?;
    let uid = ep.uid;
    state.registry.update(|s| s.without_endpoint(uid));
    state.dispatcher.sync();
    let store = state.store.clone();
    let _ = tokio::task::spawn_blocking(move || {
        store.disable_pending(uid, "the endpoint was deleted", |_| false)
    })
    .await;
    let mut r = Response::new(http_body_util::Full::new(bytes::Bytes::new()));
    *r.status_mut() = StatusCode::NO_CONTENT;
    Ok(r)
}

/// `POST …/actions/rotate-secret[?grace=24h]`: a new secret signs first;
/// the old ones keep signing alongside it until the grace period ends.
pub async fn rotate_secret(
    state: &AppState,
    req: Request<Incoming>,
    account: &str,
    id: &str,
) -> Result<Response<Body>, ApiError> {
    let q = query(&req);
    let doc = read_json(state, req).await?;
    Ok(api::document(
        StatusCode::OK,
        &rotate_doc(state, account, id, param(&q, "grace"), doc).await?,
    ))
}

/// Rotates the secret of an endpoint of `account` (`grace`: the `?grace=`
/// parameter; `doc`: the optional request document): the answer document,
/// with the new secret (shown only here) in `data.attributes.secret`.
pub async fn rotate_doc(
    state: &AppState,
    account: &str,
    id: &str,
    grace: Option<&str>,
    doc: Option<Value>,
) -> Result<Value, ApiError> {
    let attrs = doc
        .as_ref()
        .and_then(|d| d.pointer("/data/attributes"))
        .cloned()
        .unwrap_or(json!({}));
    let grace = match grace.map(str::to_string).or_else(|| {
        attrs
            .get("grace")
            .and_then(|g| g.as_str())
            .map(str::to_string)
    }) {
        None => DEFAULT_GRACE,
        Some(g) => humantime::parse_duration(&g).map_err(|e| {
            invalid(
                format!("{g:?} is not a duration ({e}); write e.g. \"24h\" or \"0s\""),
                "/data/attributes/grace",
            )
        })?,
    };
    let new = match attrs.get("secret").and_then(|s| s.as_str()) {
        Some(s) => Secret::parse(s).map_err(|m| invalid(m, "/data/attributes/secret"))?,
        None => Secret::generate(),
    };
    let _w = WRITE.lock().await;
    let ep = find(state, account, id)?;
    if ep.spec.from_config {
        return Err(read_only(&ep));
    }
    let now = now_ms();
    let until = now.saturating_add(grace.as_millis() as i64);
    let mut secrets = vec![new.clone()];
    for mut old in ep.spec.secrets.0.iter().cloned() {
        if old.expires_ms.is_some_and(|e| e <= now) || grace.is_zero() {
            continue;
        }
        old.expires_ms = Some(old.expires_ms.map_or(until, |e| e.min(until)));
        secrets.push(old);
    }
    let mut spec = ep.spec.clone();
    spec.secrets = SecretSet(secrets);
    let live = Arc::new(build(state, spec)?);
    let created = persist::get(&state.store, account, id)
        .map_err(storage)?
        .map(|s| s.created_ms)
        .unwrap_or(now);
    let stored = StoredEndpoint::from_spec(&live.spec, created, now);
    persist::save(&state.store, &stored).map_err(storage)?;
    state.registry.update(|s| s.with_endpoint(live.clone()));
    state.dispatcher.sync();
    let mut body = json!({"data": resource(state, &live, Some(&stored))});
    body["data"]["attributes"]["secret"] = json!(new.encode());
    body["meta"] = json!({"previousSecretsExpire": if grace.is_zero() { Value::Null } else { json!(rfc3339(until)) }});
    Ok(body)
}

/// `POST …/actions/ping`: stores a `webhook.ping` event for this endpoint
/// only, delivers it through the endpoint's full path (plugins, signature)
/// at once and answers the attempt's result. A failed ping is retried on
/// the endpoint's schedule like any delivery.
pub async fn ping(state: &AppState, account: &str, id: &str) -> Result<Response<Body>, ApiError> {
    Ok(api::document(
        StatusCode::OK,
        &ping_doc(state, account, id).await?,
    ))
}

/// Sends the ping of an endpoint of `account`: the answer document.
pub async fn ping_doc(state: &AppState, account: &str, id: &str) -> Result<Value, ApiError> {
    let ep = find(state, account, id)?;
    let now = now_ms();
    let event_id = Uuid::now_v7();
    let payload = json!({
        "data": {"id": ep.spec.id, "type": "webhook-endpoints", "attributes": {"url": ep.spec.url}},
        "meta": {"ping": true, "at": rfc3339(now)},
    });
    let new = NewEvent {
        id: event_id,
        record: EventRecord {
            account: account.to_string(),
            event_type: "webhook.ping".into(),
            created_ms: now,
            source_id: None,
            payload: serde_json::to_vec(&payload).unwrap_or_default(),
            endpoints: vec![ep.spec.id.clone()],
        },
        idempotency_key: None,
        deliveries: vec![(ep.uid, ep.spec.id.clone())],
    };
    state
        .store
        .commit(new)
        .await
        .map_err(|e| ApiError::unavailable(format!("the ping could not be stored: {e}")))?;
    let summary = match state
        .dispatcher
        .attempt_now(event_id, ep.uid)
        .await
        .map_err(storage)?
    {
        Some(s) => s,
        // The endpoint's pump took the delivery first: wait for its attempt.
        None => {
            wait_first_attempt(
                state,
                event_id,
                ep.uid,
                ep.spec.timeout + Duration::from_secs(10),
            )
            .await?
        }
    };
    let status = summary.status;
    let ok = summary.status == DeliveryStatus::Delivered;
    let delivery = crate::delivery::envelope::delivery_id(event_id, ep.uid);
    let excerpt = state.store.attempts(event_id, ep.uid).ok().and_then(|a| {
        a.last()
            .map(|a| String::from_utf8_lossy(&a.response).into_owned())
    });
    let body = json!({
        "data": {
            "id": delivery.to_string(),
            "type": "webhook-pings",
            "attributes": {
                "ok": ok,
                "status": status.as_str(),
                "responseStatus": summary.http_status,
                "error": summary.error,
                "latencyMs": summary.latency_ms,
                "responseBody": excerpt,
                "event": event_id.to_string(),
                "webhookId": delivery.to_string(),
            },
            "relationships": {
                "endpoint": {"data": {"type": "webhook-endpoints", "id": ep.spec.id}},
                "event": {"data": {"type": "webhook-events", "id": event_id.to_string()}},
            },
            "links": {"event": format!("/v1/accounts/{account}/webhook-events/{event_id}")},
        }
    });
    Ok(body)
}

/// `POST …/actions/recover?since=<RFC 3339>`: re-queues every failed or
/// disabled delivery of this endpoint whose event was stored since then.
pub async fn recover(
    state: &AppState,
    req: &Request<Incoming>,
    account: &str,
    id: &str,
) -> Result<Response<Body>, ApiError> {
    let q = query(req);
    Ok(api::document(
        StatusCode::ACCEPTED,
        &recover_doc(state, account, id, param(&q, "since")).await?,
    ))
}

/// Re-queues the failed or disabled deliveries of an endpoint of `account`
/// whose events were stored since `since` (RFC 3339): the answer document.
pub async fn recover_doc(
    state: &AppState,
    account: &str,
    id: &str,
    since: Option<&str>,
) -> Result<Value, ApiError> {
    let ep = find(state, account, id)?;
    let since = since.ok_or_else(|| {
        ApiError::bad_request(
            "Missing since",
            "give ?since=<RFC 3339 time>, e.g. ?since=2024-05-01T00:00:00Z",
            None,
        )
    })?;
    let since_ms = crate::ingest::parse_time(since, "since").map_err(|mut e| {
        e.pointer = None;
        e.title = "Invalid since".into();
        e
    })?;
    if !ep.spec.enabled || disabled(state, ep.uid) {
        return Err(ApiError::conflict(format!(
            "webhook endpoint {id:?} is disabled; re-enable it first (PATCH with {{\"enabled\": true}}), then recover"
        )));
    }
    let (state_store, dispatcher, account_s, uid) = (
        state.store.clone(),
        state.dispatcher.clone(),
        account.to_string(),
        ep.uid,
    );
    let r = tokio::task::spawn_blocking(
        move || -> Result<(usize, usize), crate::store::StoreError> {
            let mut cursor = None;
            let (mut scanned, mut requeued) = (0, 0);
            'outer: loop {
                let page = state_store.list_events(&account_s, cursor, 500)?;
                if page.is_empty() {
                    break;
                }
                for ev in page {
                    cursor = Some(ev);
                    if stored_ms(ev) < since_ms {
                        break 'outer;
                    }
                    scanned += 1;
                    if let Some(d) = state_store.delivery(ev, uid)? {
                        if matches!(d.status, DeliveryStatus::Failed | DeliveryStatus::Disabled)
                            && dispatcher.requeue(ev, uid)?
                        {
                            requeued += 1;
                        }
                    }
                }
            }
            Ok((scanned, requeued))
        },
    )
    .await
    .map_err(|e| ApiError::unavailable(format!("recover failed: {e}")))?;
    let (scanned, requeued) = r.map_err(storage)?;
    let stored = persist::get(&state.store, account, id).map_err(storage)?;
    let mut body = json!({"data": resource(state, &ep, stored.as_ref())});
    body["meta"] =
        json!({"since": rfc3339(since_ms), "eventsScanned": scanned, "requeued": requeued});
    Ok(body)
}

fn disabled(state: &AppState, uid: Uuid) -> bool {
    state.dispatcher.health(uid).state.disabled_reason.is_some()
}

/// Polls the store until the first attempt of a delivery is recorded.
async fn wait_first_attempt(
    state: &AppState,
    event: Uuid,
    uid: Uuid,
    timeout: Duration,
) -> Result<AttemptSummary, ApiError> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(d) = state.store.delivery(event, uid).map_err(storage)? {
            if d.attempts > 0 || d.status.is_final() {
                let last = state.store.attempts(event, uid).map_err(storage)?.pop();
                return Ok(AttemptSummary {
                    status: d.status,
                    http_status: last.as_ref().and_then(|a| a.status).or(d.last_status),
                    error: last.as_ref().and_then(|a| a.error.clone()).or(d.last_error),
                    latency_ms: last.map(|a| a.latency_us / 1000).unwrap_or(0),
                });
            }
        }
        if tokio::time::Instant::now() > deadline {
            return Err(ApiError::unavailable(
                "the ping was queued but its attempt did not finish in time; see the event",
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
