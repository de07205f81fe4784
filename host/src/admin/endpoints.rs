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
use crate::config::endpoint::{self as rules, FieldError};
use crate::config::{EndpointSpec, PluginRef, check_id};
use crate::delivery::AttemptSummary;
use crate::delivery::envelope::rfc3339;
use crate::endpoints::StoredEndpoint;
use crate::policy::guard;
use crate::registry::LiveEndpoint;
use crate::signing::{Secret, SecretSet};
use crate::state::AppState;
use crate::store::{DeliveryStatus, EventRecord, NewEvent, now_ms};

/// Longest grace period of a rotation.
const MAX_GRACE: Duration = Duration::from_secs(30 * 86400);

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
    /// Absent: unchanged; `null`: no batching; an object: batch.
    #[serde(default, deserialize_with = "present")]
    batch: Option<Option<BatchIn>>,
    /// Absent: unchanged; `null`: no limit; `"500/s"`.
    #[serde(default, deserialize_with = "present")]
    rate_limit: Option<Option<String>>,
}

/// Tells a `null` attribute (`Some(None)`) from an absent one (`None`).
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct BatchIn {
    max_events: Option<usize>,
    max_bytes: Option<SizeIn>,
    max_wait: Option<String>,
}

/// `maxBytes`: a number of bytes or a size such as `"450KB"`.
#[derive(Deserialize)]
#[serde(untagged)]
enum SizeIn {
    Bytes(u64),
    Text(String),
}

impl SizeIn {
    fn text(&self) -> String {
        match self {
            SizeIn::Bytes(n) => n.to_string(),
            SizeIn::Text(s) => s.clone(),
        }
    }
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
                    "{e}; attributes are url, subscriptions, plugins, signatures, secret, retrySchedule, timeout, maxInFlight, enabled, batch, rateLimit"
                ),
                Some("/data/attributes"),
            )
        })?,
    };
    Ok((id, attrs))
}

/// A refused attribute as a 422 with its JSON:API pointer.
fn field(e: FieldError) -> ApiError {
    invalid(e.message, &e.field.pointer())
}

/// Applies attributes to a spec and validates the result with the rules
/// `router.toml` uses (`config::endpoint`); plugin configs are checked by
/// binding them.
fn apply(
    state: &AppState,
    spec: &mut EndpointSpec,
    a: Attrs,
    creating: bool,
) -> Result<(), ApiError> {
    let config = state.config();
    if let Some(url) = a.url {
        rules::check_url(&url, &config.delivery.policy).map_err(field)?;
        spec.url = url;
    } else if creating {
        return Err(invalid(
            "is required: the https:// URL deliveries are POSTed to",
            &rules::Field::Url.pointer(),
        ));
    }
    if let Some(subs) = a.subscriptions {
        rules::check_subscriptions(&subs).map_err(field)?;
        spec.subscriptions = subs;
    }
    if let Some(plugins) = a.plugins {
        let max_chain = config.plugins.max_chain;
        if plugins.len() > max_chain {
            return Err(invalid(
                format!(
                    "lists {} plugins; a chain holds at most {max_chain} (the operator's [plugins] max_chain)",
                    plugins.len()
                ),
                "/data/attributes/plugins",
            ));
        }
        let mut out = Vec::new();
        for (i, p) in plugins.into_iter().enumerate() {
            rules::check_plugin(i, &p.name, p.config.as_ref()).map_err(field)?;
            out.push(PluginRef {
                name: p.name,
                config: p.config.unwrap_or_else(|| json!({})),
            });
        }
        spec.plugins = out;
    }
    if let Some(sigs) = a.signatures {
        let has_key = config
            .account(&spec.account)
            .map(|acc| acc.keygen_key.is_some());
        let (standard, keygen) = rules::check_signatures(&sigs, has_key).map_err(field)?;
        spec.standard_signature = standard;
        spec.keygen_signature = keygen;
    }
    if let Some(secret) = a.secret {
        if !creating {
            return Err(invalid(
                "secrets change through POST …/actions/rotate-secret",
                &rules::Field::Secret.pointer(),
            ));
        }
        let s = Secret::parse(&secret).map_err(|m| invalid(m, &rules::Field::Secret.pointer()))?;
        spec.secrets = SecretSet(vec![s]);
    }
    rules::check_secret_present(spec.standard_signature, !spec.secrets.is_empty())
        .map_err(field)?;
    if let Some(list) = a.retry_schedule {
        spec.retry_schedule = rules::check_retry_schedule(&list).map_err(field)?;
    }
    if let Some(t) = a.timeout {
        spec.timeout = rules::check_timeout(&t).map_err(field)?;
    }
    if let Some(n) = a.max_in_flight {
        rules::check_max_in_flight(n).map_err(field)?;
        spec.max_in_flight = n;
    }
    if let Some(e) = a.enabled {
        spec.enabled = e;
    }
    if let Some(batch) = a.batch {
        spec.batch = match batch {
            None => None,
            Some(b) => Some(
                rules::check_batch(
                    b.max_events,
                    b.max_bytes.as_ref().map(SizeIn::text).as_deref(),
                    b.max_wait.as_deref(),
                )
                .map_err(|errors| {
                    let first = errors.into_iter().next();
                    first.map(field).unwrap_or_else(|| {
                        invalid("is not a valid batch", "/data/attributes/batch")
                    })
                })?,
            ),
        };
    }
    if let Some(rate) = a.rate_limit {
        spec.rate_limit = match rate {
            None => None,
            Some(r) => Some(rules::check_rate_limit(&r).map_err(field)?),
        };
    }
    Ok(())
}

/// One warning per plugin of the endpoint that is not loaded now (accepted:
/// it may be deployed later), naming the nearest loaded plugin.
fn plugin_warnings(state: &AppState, spec: &EndpointSpec) -> Vec<String> {
    let statuses = state.runtime.statuses();
    let loaded: Vec<&str> = statuses
        .iter()
        .filter(|s| s.loaded)
        .map(|s| s.name.as_str())
        .collect();
    spec.plugins
        .iter()
        .filter(|p| !loaded.contains(&p.name.as_str()))
        .map(|p| crate::plugins::suggest::not_loaded_warning(&p.name, loaded.iter().copied()))
        .collect()
}

/// Binds the plugins (a plugin that rejects its config is a 422 with its
/// message).
/// Binding instantiates and configures each plugin (CPU work): it runs on
/// the blocking pool, not on the async workers that serve requests.
async fn build(state: &AppState, spec: EndpointSpec) -> Result<LiveEndpoint, ApiError> {
    let runtime = state.runtime.clone();
    tokio::task::spawn_blocking(move || LiveEndpoint::build(spec, &runtime))
        .await
        .map_err(|e| ApiError::unavailable(format!("binding the plugins failed: {e}")))?
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
pub async fn resource(
    state: &AppState,
    ep: &LiveEndpoint,
    stored: Option<&StoredEndpoint>,
) -> Value {
    let s = &ep.spec;
    let health = state.dispatcher.health(ep.uid).await;
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
            "batch": s.batch.map(|b| json!({
                "maxEvents": b.max_events,
                "maxBytes": b.max_bytes,
                "maxWait": humantime::format_duration(b.max_wait).to_string(),
            })),
            "rateLimit": s.rate_limit.map(rules::describe_rate),
            "enabled": s.enabled,
            "status": status,
            "readOnly": s.from_config,
            "source": if s.from_config { "config" } else { "api" },
            // Set when the URL policy in force (after a reload or restart
            // that tightened it) refuses this endpoint: its attempts fail.
            "policyViolation": guard::check_uri(&ep.uri, &state.url_policy.get()).err().map(|r| r.message),
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
pub async fn stored_of_account(
    state: &AppState,
    account: &str,
) -> Result<Vec<StoredEndpoint>, ApiError> {
    state
        .store
        .api_endpoints(Some(account))
        .await
        .map_err(storage)
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
pub async fn list(
    state: &AppState,
    req: &Request<Incoming>,
    account: &str,
) -> Result<Response<Body>, ApiError> {
    let q = query(req);
    let size = page_size(&q)?;
    let after = param(&q, "page[after]").map(str::to_string);
    let snap = state.registry.snapshot();
    let stored = stored_of_account(state, account).await?;
    let mut eps: Vec<_> = snap.endpoints(account).to_vec();
    eps.sort_by(|a, b| a.spec.id.cmp(&b.spec.id));
    let rest: Vec<_> = eps
        .into_iter()
        .filter(|e| after.as_deref().is_none_or(|a| e.spec.id.as_str() > a))
        .collect();
    let page: Vec<_> = rest.iter().take(size).collect();
    let mut data: Vec<Value> = Vec::with_capacity(page.len());
    for e in &page {
        data.push(resource(state, e, stored.iter().find(|s| s.id == e.spec.id)).await);
    }
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
    let stored = state
        .store
        .api_endpoint(account, id)
        .await
        .map_err(storage)?;
    Ok(resource(state, &ep, stored.as_ref()).await)
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
        batch: None,
        rate_limit: None,
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
    let live = build(state, spec).await?;
    let now = now_ms();
    let stored = StoredEndpoint::from_spec(&live.spec, now, now);
    state
        .store
        .put_api_endpoint(&stored)
        .await
        .map_err(storage)?;
    // A new endpoint starts healthy, even if an endpoint of the same id
    // was disabled before being deleted.
    let _ = state.dispatcher.enable(live.uid).await;
    let live = Arc::new(live);
    state.registry.update(|s| s.with_endpoint(live.clone()));
    state.dispatcher.sync().await;
    let mut body = json!({"data": resource(state, &live, Some(&stored)).await});
    body["data"]["attributes"]["secret"] = json!(secret);
    body["meta"] = json!({"secretGenerated": generated, "note": "the secret is shown only now; store it to verify webhook-signature"});
    let warnings = plugin_warnings(state, &live.spec);
    if !warnings.is_empty() {
        body["meta"]["warnings"] = json!(warnings);
    }
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
            && attrs.batch.is_none()
            && attrs.rate_limit.is_none()
            && re_enable;
        if !only_enable {
            return Err(read_only(&ep));
        }
        if disabled(state, ep.uid).await {
            state.dispatcher.enable(ep.uid).await.map_err(storage)?;
        }
        return Ok(json!({"data": show_data(state, account, id).await?}));
    }
    let _w = WRITE.lock().await;
    let ep = find(state, account, id)?;
    let mut spec = ep.spec.clone();
    apply(state, &mut spec, attrs, false)?;
    let live = Arc::new(build(state, spec).await?);
    let created = state
        .store
        .api_endpoint(account, id)
        .await
        .map_err(storage)?
        .map(|s| s.created_ms)
        .unwrap_or_else(now_ms);
    let stored = StoredEndpoint::from_spec(&live.spec, created, now_ms());
    state
        .store
        .put_api_endpoint(&stored)
        .await
        .map_err(storage)?;
    if re_enable && disabled(state, live.uid).await {
        state.dispatcher.enable(live.uid).await.map_err(storage)?;
    }
    state.registry.update(|s| s.with_endpoint(live.clone()));
    state.dispatcher.sync().await;
    let mut body = json!({"data": resource(state, &live, Some(&stored)).await});
    let warnings = plugin_warnings(state, &live.spec);
    if !warnings.is_empty() {
        body["meta"] = json!({"warnings": warnings});
    }
    Ok(body)
}

/// `DELETE …/webhook-endpoints/{id}`: 204. Its pending deliveries are
/// marked disabled so retention can prune their events.
pub async fn delete(state: &AppState, account: &str, id: &str) -> Result<Response<Body>, ApiError> {
    let _w = WRITE.lock().await;
    let ep = find(state, account, id)?;
    if ep.spec.from_config {
        return Err(read_only(&ep));
    }
    state
        .store
        .delete_api_endpoint(account, id)
        .await
        .map_err(storage)?;
    let uid = ep.uid;
    state.registry.update(|s| s.without_endpoint(uid));
    state.dispatcher.sync().await;
    let store = state.store.clone();
    tokio::spawn(async move {
        if let Err(e) = store
            .disable_pending(uid, "the endpoint was deleted", Default::default())
            .await
        {
            tracing::warn!(endpoint = %uid, error = %e, "marking the deleted endpoint's deliveries disabled failed");
        }
    });
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
        Some(g) => {
            let d = humantime::parse_duration(&g).map_err(|e| {
                invalid(
                    format!("{g:?} is not a duration ({e}); write e.g. \"24h\" or \"0s\""),
                    "/data/attributes/grace",
                )
            })?;
            if d > MAX_GRACE {
                return Err(invalid(
                    format!("{g:?} is longer than the longest grace period, 30 days"),
                    "/data/attributes/grace",
                ));
            }
            d
        }
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
    let until = now.saturating_add(crate::policy::retry::millis_i64(grace));
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
    let live = Arc::new(build(state, spec).await?);
    let created = state
        .store
        .api_endpoint(account, id)
        .await
        .map_err(storage)?
        .map(|s| s.created_ms)
        .unwrap_or(now);
    let stored = StoredEndpoint::from_spec(&live.spec, created, now);
    state
        .store
        .put_api_endpoint(&stored)
        .await
        .map_err(storage)?;
    state.registry.update(|s| s.with_endpoint(live.clone()));
    state.dispatcher.sync().await;
    let mut body = json!({"data": resource(state, &live, Some(&stored)).await});
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
    let excerpt = state
        .store
        .attempts(event_id, ep.uid)
        .await
        .ok()
        .and_then(|a| {
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
    if !ep.spec.enabled || disabled(state, ep.uid).await {
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
    // Events accepted while the endpoint was disabled (by PATCH or
    // automatically) were not fanned out to it: they have no delivery for
    // it. Recover delivers those too — the ones it subscribes to, accepted
    // since it was created (API endpoints; config endpoints have no
    // creation time).
    let created_ms = state
        .store
        .api_endpoint(account, id)
        .await
        .map_err(storage)?
        .map_or(i64::MIN, |s| s.created_ms);
    let spec = ep.spec.clone();
    let r = async {
        let mut cursor = None;
        let (mut scanned, mut requeued) = (0, 0);
        'outer: loop {
            let page = state_store.list_events(&account_s, cursor, 500).await?;
            if page.is_empty() {
                break;
            }
            for ev in page {
                cursor = Some(ev);
                if stored_ms(ev) < since_ms {
                    break 'outer;
                }
                scanned += 1;
                if let Some(d) = state_store.delivery(ev, uid).await? {
                    if matches!(d.status, DeliveryStatus::Failed | DeliveryStatus::Disabled)
                        && dispatcher.requeue(ev, uid).await?
                    {
                        requeued += 1;
                    }
                } else if stored_ms(ev) >= created_ms
                    && let Some(rec) = state_store.event(&account_s, ev).await?
                    && spec.subscribes(&rec.event_type)
                {
                    let now = now_ms();
                    let fresh = crate::store::DeliveryRecord {
                        account: account_s.clone(),
                        endpoint: spec.id.clone(),
                        status: DeliveryStatus::Delivering,
                        attempts: 0,
                        due_ms: None,
                        last_status: None,
                        last_error: None,
                        updated_ms: now,
                        reason: None,
                        output: None,
                    };
                    state_store.requeue(ev, uid, fresh, now).await?;
                    dispatcher.notify(uid);
                    requeued += 1;
                }
            }
        }
        Ok::<_, crate::store::StoreError>((scanned, requeued))
    }
    .await;
    let (scanned, requeued) = r.map_err(storage)?;
    let stored = state
        .store
        .api_endpoint(account, id)
        .await
        .map_err(storage)?;
    let mut body = json!({"data": resource(state, &ep, stored.as_ref()).await});
    body["meta"] =
        json!({"since": rfc3339(since_ms), "eventsScanned": scanned, "requeued": requeued});
    Ok(body)
}

async fn disabled(state: &AppState, uid: Uuid) -> bool {
    state
        .dispatcher
        .health(uid)
        .await
        .state
        .disabled_reason
        .is_some()
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
        if let Some(d) = state.store.delivery(event, uid).await.map_err(storage)? {
            if d.attempts > 0 || d.status.is_final() {
                let last = state
                    .store
                    .attempts(event, uid)
                    .await
                    .map_err(storage)?
                    .pop();
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
