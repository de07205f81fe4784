//! The endpoints pages: the list with the create form (the generated
//! secret is shown once, on the page that answers the form), and one
//! endpoint with its edit form (subscriptions, plugins and their config;
//! a plugin's `configure` error is shown inline), enable/disable, rotate
//! secret, send a test event (the ping) and recover. Every action calls
//! the function the JSON API calls (`admin::endpoints::*_doc`) with the
//! same document the API would get.

use http::{Response, StatusCode};
use serde_json::{Value, json};

use super::html::{self, Ctx, Nav, badge, esc, text, url};
use crate::admin::endpoints as api_endpoints;
use crate::admin::param;
use crate::api::{ApiError, Body};

fn field(form: &[(String, String)], name: &str) -> String {
    param(form, name).unwrap_or("").trim().to_string()
}

/// Splits a list typed in a field (commas, spaces or new lines).
fn split_list(s: &str) -> Vec<String> {
    s.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect()
}

/// The resources of the account's endpoints, by id.
async fn all(ctx: &Ctx<'_>) -> Result<Vec<Value>, ApiError> {
    let snap = ctx.state.registry.snapshot();
    let stored = api_endpoints::stored_of_account(ctx.state, &ctx.account).await?;
    let mut eps = snap.endpoints(&ctx.account).to_vec();
    eps.sort_by(|a, b| a.spec.id.cmp(&b.spec.id));
    let mut out = Vec::with_capacity(eps.len());
    for e in &eps {
        out.push(
            api_endpoints::resource(ctx.state, e, stored.iter().find(|s| s.id == e.spec.id)).await,
        );
    }
    Ok(out)
}

/// `GET /ui/a/{account}/endpoints` (and the create form's error answer).
pub async fn list(
    ctx: &Ctx<'_>,
    error: Option<(&ApiError, &[(String, String)])>,
) -> Result<Response<Body>, ApiError> {
    let eps = all(ctx).await?;
    let mut main = String::new();
    if eps.is_empty() {
        main.push_str("<p class=\"empty\">No endpoint yet.</p>");
    } else {
        main.push_str("<div class=\"scroll\"><table><thead><tr><th scope=\"col\">Endpoint</th><th scope=\"col\">URL</th><th scope=\"col\">Status</th><th scope=\"col\">Subscriptions</th><th scope=\"col\">Plugins</th><th scope=\"col\">Source</th></tr></thead><tbody>");
        for e in &eps {
            let a = &e["attributes"];
            let id = text(&e["id"]);
            let plugins: Vec<String> = a["plugins"]
                .as_array()
                .map(|ps| ps.iter().map(|p| text(&p["name"])).collect())
                .unwrap_or_default();
            main.push_str(&format!(
                "<tr><td><a href=\"{href}\">{id}</a></td><td class=\"mono\">{url}</td><td>{st}</td><td>{subs}</td><td>{plugins}</td><td>{src}</td></tr>",
                href = esc(&format!("{}/endpoints/{}", ctx.base(), url(&id))),
                id = esc(&id),
                url = esc(&text(&a["url"])),
                st = badge(&text(&a["status"])),
                subs = esc(&list_text(&a["subscriptions"])),
                plugins = esc(&plugins.join(", ")),
                src = esc(&text(&a["source"])),
            ));
        }
        main.push_str("</tbody></table></div>");
    }
    let (err, form): (String, &[(String, String)]) = match error {
        Some((e, f)) => (html::error_notice(e), f),
        None => (String::new(), &[]),
    };
    let subs = match field(form, "subscriptions") {
        s if s.is_empty() => "*".to_string(),
        s => s,
    };
    main.push_str(&format!(
        "<section class=\"card\" aria-labelledby=\"create-h\"><h2 id=\"create-h\">Create an endpoint</h2>{err}\
<form method=\"post\" action=\"{action}\" class=\"stack\">{csrf}\
<label for=\"ep-id\">Id (optional)</label><input id=\"ep-id\" name=\"id\" value=\"{id}\" placeholder=\"generated when empty\">\
<label for=\"ep-url\">URL</label><input id=\"ep-url\" name=\"url\" type=\"url\" required value=\"{u}\" placeholder=\"https://example.com/webhooks\">\
<label for=\"ep-subs\">Subscriptions (comma-separated; <code>*</code> for all, <code>license.*</code> for a family)</label><input id=\"ep-subs\" name=\"subscriptions\" value=\"{subs}\">\
<label for=\"ep-plugins\">Plugins (JSON list, optional): <code>[{{\"name\": \"event-filter\", \"config\": {{}}}}]</code></label><textarea id=\"ep-plugins\" name=\"plugins\" rows=\"3\">{plugins}</textarea>\
<button type=\"submit\">Create endpoint</button></form></section>",
        action = esc(&format!("{}/endpoints", ctx.base())),
        csrf = ctx.csrf(),
        id = esc(&field(form, "id")),
        u = esc(&field(form, "url")),
        subs = esc(&subs),
        plugins = esc(&field(form, "plugins")),
    ));
    let status = if error.is_some() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    Ok(html::html(
        status,
        html::page(ctx, Nav::Endpoints, "Endpoints", &main),
    ))
}

fn list_text(v: &Value) -> String {
    v.as_array()
        .map(|a| a.iter().map(text).collect::<Vec<_>>().join(", "))
        .unwrap_or_default()
}

/// The `plugins` attribute from the form's JSON field (empty: none).
fn plugins_attr(form: &[(String, String)]) -> Result<Option<Value>, ApiError> {
    let raw = field(form, "plugins");
    if raw.is_empty() {
        return Ok(None);
    }
    serde_json::from_str::<Value>(&raw).map(Some).map_err(|e| {
        crate::admin::invalid(
            format!("plugins: not valid JSON ({e}); write e.g. [{{\"name\": \"event-filter\", \"config\": {{}}}}]"),
            "/data/attributes/plugins",
        )
    })
}

/// `POST /ui/a/{account}/endpoints`: creates, then shows the endpoint with
/// its secret (once).
pub async fn create(ctx: &Ctx<'_>, form: &[(String, String)]) -> Result<Response<Body>, ApiError> {
    let result = async {
        let mut attrs = json!({"url": field(form, "url")});
        let subs = split_list(&field(form, "subscriptions"));
        if !subs.is_empty() {
            attrs["subscriptions"] = json!(subs);
        }
        if let Some(p) = plugins_attr(form)? {
            attrs["plugins"] = p;
        }
        let mut data = json!({"type": "webhook-endpoints", "attributes": attrs});
        let id = field(form, "id");
        if !id.is_empty() {
            data["id"] = json!(id);
        }
        api_endpoints::create_doc(ctx.state, &ctx.account, Some(json!({"data": data}))).await
    }
    .await;
    match result {
        Ok(doc) => {
            // Post/redirect/get: the secret waits in the session for the
            // next page only, so a reload neither resubmits nor shows it.
            let id = text(&doc["data"]["id"]);
            super::session::flash_secret(
                ctx.sid,
                "Endpoint created. Its signing secret is shown only now: store it to verify webhook-signature.".into(),
                text(&doc["data"]["attributes"]["secret"]),
            );
            Ok(html::redirect(
                &format!("{}/endpoints/{}", ctx.base(), url(&id)),
                None,
            ))
        }
        Err(e) if e.status == StatusCode::NOT_FOUND => Err(e),
        Err(e) => list(ctx, Some((&e, form))).await,
    }
}

/// `GET /ui/a/{account}/endpoints/{id}` (with a notice after an action).
pub async fn detail(
    ctx: &Ctx<'_>,
    id: &str,
    notice: Option<String>,
) -> Result<Response<Body>, ApiError> {
    let ep = api_endpoints::show_data(ctx.state, &ctx.account, id).await?;
    let a = &ep["attributes"];
    let h = &a["health"];
    let id_s = text(&ep["id"]);
    let base = format!("{}/endpoints/{}", ctx.base(), url(&id_s));
    let csrf = ctx.csrf();
    let mut main = notice.unwrap_or_default();
    let secrets = a["secrets"]
        .as_array()
        .map(|s| {
            s.iter()
                .map(|x| match x["expires"].as_str() {
                    Some(t) => format!("expires {t}"),
                    None => "current".into(),
                })
                .collect::<Vec<_>>()
                .join("; ")
        })
        .unwrap_or_default();
    main.push_str(&format!(
        "<dl class=\"facts\"><dt>URL</dt><dd class=\"mono\">{url}</dd><dt>Status</dt><dd>{st}{reason}</dd>\
<dt>Subscriptions</dt><dd>{subs}</dd><dt>Signatures</dt><dd>{sigs}</dd><dt>Secrets</dt><dd>{secrets}</dd>\
<dt>Retry schedule</dt><dd>{retry}</dd><dt>Timeout</dt><dd>{timeout}</dd>\
<dt>Batching</dt><dd>{batch}</dd><dt>Rate limit</dt><dd>{rate}</dd>\
<dt>Consecutive failures</dt><dd>{fails}</dd><dt>Last success</dt><dd class=\"mono\">{ok}</dd><dt>Last error</dt><dd>{lerr}</dd><dt>Source</dt><dd>{src}</dd></dl>",
        url = esc(&text(&a["url"])),
        st = badge(&text(&a["status"])),
        reason = h["disabledReason"]
            .as_str()
            .map(|r| format!(" <span>{}</span>", esc(r)))
            .unwrap_or_default(),
        subs = esc(&list_text(&a["subscriptions"])),
        sigs = esc(&list_text(&a["signatures"])),
        secrets = esc(&secrets),
        retry = esc(&if a["retrySchedule"].is_array() { list_text(&a["retrySchedule"]) } else { text(&a["retrySchedule"]) }),
        timeout = esc(&text(&a["timeout"])),
        batch = esc(&match a["batch"].as_object() {
            Some(b) => format!(
                "up to {} events or {} bytes, or after {}",
                text(&b["maxEvents"]),
                text(&b["maxBytes"]),
                text(&b["maxWait"])
            ),
            None => "off (one request per event)".into(),
        }),
        rate = esc(&a["rateLimit"].as_str().unwrap_or("none").to_string()),
        fails = esc(&text(&h["consecutiveFailures"])),
        ok = esc(&text(&h["lastSuccess"])),
        lerr = esc(&text(&h["lastError"])),
        src = esc(&text(&a["source"])),
    ));
    let plugins_json = if a["plugins"].as_array().is_some_and(|p| p.is_empty()) {
        String::new()
    } else {
        serde_json::to_string_pretty(&a["plugins"]).unwrap_or_default()
    };
    let enabled = a["enabled"].as_bool().unwrap_or(true);
    let auto_disabled = !h["disabledReason"].is_null();
    let toggle = if enabled && !auto_disabled {
        "<button type=\"submit\" name=\"do\" value=\"disable\">Disable</button>"
    } else {
        "<button type=\"submit\" name=\"do\" value=\"enable\">Enable</button>"
    };
    let read_only = a["readOnly"].as_bool().unwrap_or(false);
    main.push_str(&format!(
        "<section class=\"card\" aria-labelledby=\"act-h\"><h2 id=\"act-h\">Actions</h2><div class=\"actions\">\
<form method=\"post\" action=\"{base}/ping\">{csrf}<button type=\"submit\">Send test event</button></form>\
<form method=\"post\" action=\"{base}/toggle\">{csrf}{toggle}</form></div>",
        base = esc(&base),
    ));
    if !read_only {
        main.push_str(&format!(
            "<form method=\"post\" action=\"{base}/rotate\" class=\"row\">{csrf}<label for=\"grace\">Old secret keeps signing for</label><input id=\"grace\" name=\"grace\" value=\"24h\" size=\"6\"><button type=\"submit\">Rotate secret</button></form>",
            base = esc(&base),
        ));
    }
    main.push_str(&format!(
        "<form method=\"post\" action=\"{base}/recover\" class=\"row\">{csrf}<label for=\"since\">Recover failed deliveries since</label><input id=\"since\" name=\"since\" required placeholder=\"2024-05-01T00:00:00Z\"><button type=\"submit\">Recover</button></form></section>",
        base = esc(&base),
    ));
    if read_only {
        main.push_str("<p class=\"muted\">Declared in router.toml: edit it there (it is reloaded on change).</p>");
    } else {
        main.push_str(&format!(
            "<section class=\"card\" aria-labelledby=\"edit-h\"><h2 id=\"edit-h\">Edit</h2><form method=\"post\" action=\"{base}/update\" class=\"stack\">{csrf}\
<label for=\"ed-url\">URL</label><input id=\"ed-url\" name=\"url\" type=\"url\" required value=\"{u}\">\
<label for=\"ed-subs\">Subscriptions (comma-separated)</label><input id=\"ed-subs\" name=\"subscriptions\" value=\"{subs}\">\
<label for=\"ed-plugins\">Plugins (JSON list; empty for none)</label><textarea id=\"ed-plugins\" name=\"plugins\" rows=\"5\">{plugins}</textarea>\
<p class=\"muted\">Values of config keys that look like credentials are shown as \"[redacted]\": type them again when saving.</p>\
<button type=\"submit\">Save</button></form></section>",
            base = esc(&base),
            u = esc(&text(&a["url"])),
            subs = esc(&list_text(&a["subscriptions"])),
            plugins = esc(&plugins_json),
        ));
    }
    Ok(html::html(
        StatusCode::OK,
        html::page(ctx, Nav::Endpoints, &format!("Endpoint {id_s}"), &main),
    ))
}

/// `POST /ui/a/{account}/endpoints/{id}/{action}`: ping, toggle, rotate,
/// recover, update. The answer is the endpoint page with the result (or
/// the error, e.g. a plugin's configure message) on top.
pub async fn action(
    ctx: &Ctx<'_>,
    id: &str,
    action: &str,
    form: &[(String, String)],
) -> Result<Response<Body>, ApiError> {
    let st = ctx.state;
    let account = ctx.account.as_str();
    let result: Result<String, ApiError> = match action {
        "ping" => api_endpoints::ping_doc(st, account, id).await.map(|doc| {
            let a = &doc["data"]["attributes"];
            let ok = a["ok"].as_bool().unwrap_or(false);
            let result = match (a["responseStatus"].as_u64(), a["error"].as_str()) {
                (Some(code), _) => format!("HTTP {code}"),
                (None, Some(e)) => e.to_string(),
                _ => text(&a["status"]),
            };
            format!(
                "<div class=\"notice {cls}\" role=\"status\" id=\"ping-result\"><p>Test event {what}: {result} in {ms} ms. <a href=\"{href}\">See the event</a></p>{body}</div>",
                cls = if ok { "ok" } else { "bad" },
                what = if ok { "delivered" } else { "failed" },
                result = esc(&result),
                ms = esc(&text(&a["latencyMs"])),
                href = esc(&format!("{}/events/{}", ctx.base(), url(&text(&a["event"])))),
                body = a["responseBody"]
                    .as_str()
                    .filter(|b| !b.is_empty())
                    .map(|b| format!("<pre class=\"excerpt\">{}</pre>", esc(b)))
                    .unwrap_or_default(),
            )
        }),
        "toggle" => {
            let enable = param(form, "do") == Some("enable");
            let doc = json!({"data": {"type": "webhook-endpoints", "attributes": {"enabled": enable}}});
            api_endpoints::update_doc(st, account, id, Some(doc))
                .await
                .map(|_| {
                    notice(if enable {
                        "Endpoint enabled."
                    } else {
                        "Endpoint disabled: new events are not delivered to it."
                    })
                })
        }
        "rotate" => {
            let grace = field(form, "grace");
            let grace = (!grace.is_empty()).then_some(grace);
            match api_endpoints::rotate_doc(st, account, id, grace.as_deref(), None).await {
                Ok(doc) => {
                    let until = doc["meta"]["previousSecretsExpire"]
                        .as_str()
                        .map(|t| format!(" The previous secret keeps signing until {t}."))
                        .unwrap_or_default();
                    super::session::flash_secret(
                        ctx.sid,
                        format!("Secret rotated.{until} The new secret is shown only now."),
                        text(&doc["data"]["attributes"]["secret"]),
                    );
                    return Ok(html::redirect(
                        &format!("{}/endpoints/{}", ctx.base(), url(id)),
                        None,
                    ));
                }
                Err(e) => Err(e),
            }
        }
        "recover" => {
            let since = field(form, "since");
            api_endpoints::recover_doc(st, account, id, Some(&since))
                .await
                .map(|doc| {
                    notice(&format!(
                        "Recovered: {} deliveries re-queued ({} events looked at).",
                        text(&doc["meta"]["requeued"]),
                        text(&doc["meta"]["eventsScanned"])
                    ))
                })
        }
        "update" => {
            let update = async {
                let mut attrs = json!({
                    "url": field(form, "url"),
                    "subscriptions": split_list(&field(form, "subscriptions")),
                });
                attrs["plugins"] = plugins_attr(form)?.unwrap_or_else(|| json!([]));
                let doc = json!({"data": {"type": "webhook-endpoints", "id": id, "attributes": attrs}});
                api_endpoints::update_doc(st, account, id, Some(doc)).await
            };
            update.await.map(|_| notice("Saved."))
        }
        _ => return Err(ApiError::not_found("page")),
    };
    match result {
        Ok(n) => detail(ctx, id, Some(n)).await,
        Err(e) if e.status == StatusCode::NOT_FOUND => Err(e),
        Err(e) => {
            let mut r = detail(ctx, id, Some(html::error_notice(&e))).await?;
            *r.status_mut() = e.status;
            Ok(r)
        }
    }
}

fn notice(text: &str) -> String {
    format!("<div class=\"notice\" role=\"status\">{}</div>", esc(text))
}
