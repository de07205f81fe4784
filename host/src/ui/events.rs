//! The events pages: the list (newest first, filters, search by event id
//! or source id, paging; each row with every endpoint's delivery state)
//! and the detail (payload, per endpoint the plugin outcome, every attempt
//! with its response excerpt, the next attempt, Retry). Data comes from
//! `admin::events` (`list_page`, `show_data`, `retry_data`), as for the API.

use http::{Response, StatusCode};
use serde_json::Value;
use uuid::Uuid;

use super::html::{self, Ctx, Nav, badge, esc, text, url};
use crate::admin::events as api_events;
use crate::admin::param;
use crate::api::{ApiError, Body};

const PAGE_SIZE: usize = 25;
/// Response bytes shown per attempt.
const EXCERPT: usize = 4096;

fn field(form: &[(String, String)], name: &str) -> String {
    param(form, name).unwrap_or("").trim().to_string()
}

/// `GET /ui/a/{account}/events`.
pub async fn list(ctx: &Ctx<'_>, q: &[(String, String)]) -> Result<Response<Body>, ApiError> {
    let search = field(q, "q");
    // An event id goes straight to the event.
    if let Ok(id) = Uuid::parse_str(&search) {
        return Ok(html::redirect(&format!("{}/events/{id}", ctx.base()), None));
    }
    // The filter form uses the API's own parameter names and parser.
    let mut api_q: Vec<(String, String)> = Vec::new();
    for (name, key) in [
        ("type", "filter[event]"),
        ("status", "filter[status]"),
        ("endpoint", "filter[endpoint]"),
        ("since", "filter[since]"),
        ("until", "filter[until]"),
    ] {
        let v = field(q, name);
        if !v.is_empty() {
            api_q.push((key.into(), v));
        }
    }
    if !search.is_empty() {
        api_q.push(("filter[sourceId]".into(), search.clone()));
    }
    let before = param(q, "before").and_then(|b| Uuid::parse_str(b).ok());
    let (rows, next, error) = match api_events::filters(&api_q) {
        Ok(f) => match api_events::list_page(ctx.state, &ctx.account, f, before, PAGE_SIZE).await {
            Ok((rows, next)) => (rows, next, None),
            Err(e) => (Vec::new(), None, Some(e)),
        },
        Err(e) => (Vec::new(), None, Some(e)),
    };
    let mut main = filter_form(ctx, q);
    if let Some(e) = &error {
        main.push_str(&html::error_notice(e));
    }
    if rows.is_empty() && error.is_none() {
        main.push_str("<p class=\"empty\">No events match.</p>");
    } else if !rows.is_empty() {
        main.push_str("<div class=\"scroll\"><table class=\"events\"><caption class=\"sr\">Events, newest first</caption><thead><tr><th scope=\"col\">Event</th><th scope=\"col\">Type</th><th scope=\"col\">Received</th><th scope=\"col\">Status</th><th scope=\"col\">Deliveries</th></tr></thead><tbody>");
        for r in &rows {
            let id = text(&r["id"]);
            let a = &r["attributes"];
            let deliveries: String = a["deliveries"]
                .as_array()
                .map(|ds| {
                    ds.iter()
                        .map(|d| {
                            format!(
                                "<span class=\"dl\">{} {}</span>",
                                esc(&text(&d["endpoint"])),
                                badge(&text(&d["status"]))
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            main.push_str(&format!(
                "<tr><td><a class=\"mono\" href=\"{href}\">{id_s}</a></td><td>{ty}</td><td class=\"mono\">{rec}</td><td>{st}</td><td>{deliveries}</td></tr>",
                href = esc(&format!("{}/events/{}", ctx.base(), url(&id))),
                id_s = esc(&id),
                ty = esc(&text(&a["event"])),
                rec = esc(&text(&a["received"])),
                st = badge(&text(&a["status"])),
            ));
        }
        main.push_str("</tbody></table></div>");
    }
    if let Some(n) = next {
        let mut link = format!("{}/events?before={n}", ctx.base());
        for name in ["type", "status", "endpoint", "since", "until", "q"] {
            let v = field(q, name);
            if !v.is_empty() {
                link.push_str(&format!("&{name}={}", url(&v)));
            }
        }
        main.push_str(&format!(
            "<p><a class=\"button\" href=\"{}\">Older events →</a></p>",
            esc(&link)
        ));
    }
    Ok(html::html(
        StatusCode::OK,
        html::page(ctx, Nav::Events, "Events", &main),
    ))
}

fn filter_form(ctx: &Ctx<'_>, q: &[(String, String)]) -> String {
    let snap = ctx.state.registry.snapshot();
    let mut eps: Vec<String> = snap
        .endpoints(&ctx.account)
        .iter()
        .map(|e| e.spec.id.clone())
        .collect();
    eps.sort();
    let sel_ep = field(q, "endpoint");
    let ep_opts: String = eps
        .iter()
        .map(|e| {
            format!(
                "<option value=\"{v}\"{s}>{v}</option>",
                v = esc(e),
                s = if *e == sel_ep { " selected" } else { "" }
            )
        })
        .collect();
    let sel_st = field(q, "status");
    let st_opts: String = [
        "delivering",
        "failing",
        "delivered",
        "failed",
        "filtered",
        "disabled",
    ]
    .iter()
    .map(|s| {
        format!(
            "<option value=\"{s}\"{}>{s}</option>",
            if *s == sel_st { " selected" } else { "" }
        )
    })
    .collect();
    let input = |name: &str, label: &str, placeholder: &str| {
        format!(
            "<div><label for=\"f-{name}\">{label}</label><input id=\"f-{name}\" name=\"{name}\" value=\"{}\" placeholder=\"{placeholder}\"></div>",
            esc(&field(q, name))
        )
    };
    format!(
        "<form class=\"filters\" method=\"get\" action=\"{action}\" role=\"search\">{q}{ty}\
<div><label for=\"f-status\">Status</label><select id=\"f-status\" name=\"status\"><option value=\"\">any</option>{st_opts}</select></div>\
<div><label for=\"f-endpoint\">Endpoint</label><select id=\"f-endpoint\" name=\"endpoint\"><option value=\"\">any</option>{ep_opts}</select></div>\
{since}{until}<div><button type=\"submit\">Filter</button></div></form>",
        action = esc(&format!("{}/events", ctx.base())),
        q = input("q", "Event id or source id", "evt_… or a UUID"),
        ty = input("type", "Event type", "license.* or user.created"),
        since = input("since", "Since", "2024-05-01T00:00:00Z"),
        until = input("until", "Until", "RFC 3339"),
    )
}

/// `GET /ui/a/{account}/events/{id}` (with a notice after an action).
pub async fn detail(
    ctx: &Ctx<'_>,
    id: &str,
    notice: Option<String>,
) -> Result<Response<Body>, ApiError> {
    let ev = api_events::show_data(ctx.state, &ctx.account, id).await?;
    let a = &ev["attributes"];
    let id_s = text(&ev["id"]);
    let mut main = String::new();
    if let Some(n) = notice {
        main.push_str(&n);
    }
    main.push_str(&format!(
        "<dl class=\"facts\"><dt>Id</dt><dd class=\"mono\">{}</dd><dt>Type</dt><dd>{}</dd><dt>Status</dt><dd>{}</dd><dt>Created</dt><dd class=\"mono\">{}</dd><dt>Received</dt><dd class=\"mono\">{}</dd><dt>Source id</dt><dd class=\"mono\">{}</dd></dl>",
        esc(&id_s),
        esc(&text(&a["event"])),
        badge(&text(&a["status"])),
        esc(&text(&a["created"])),
        esc(&text(&a["received"])),
        esc(&text(&a["sourceId"])),
    ));
    let pretty = serde_json::to_string_pretty(&a["payload"]).unwrap_or_default();
    main.push_str(&format!(
        "<details open class=\"payload\"><summary>Payload</summary><pre id=\"payload\">{}</pre></details>",
        esc(&pretty)
    ));
    let retry_action = esc(&format!("{}/events/{}/retry", ctx.base(), url(&id_s)));
    main.push_str(&format!(
        "<form method=\"post\" action=\"{retry_action}\" class=\"inline\">{}<button type=\"submit\">Retry every endpoint</button></form>",
        ctx.csrf()
    ));
    let empty = Vec::new();
    let deliveries = a["deliveries"].as_array().unwrap_or(&empty);
    if deliveries.is_empty() {
        main.push_str(
            "<p class=\"empty\">No endpoint was subscribed to this event when it arrived.</p>",
        );
    }
    for d in deliveries {
        main.push_str(&delivery(ctx, &retry_action, d));
    }
    Ok(html::html(
        StatusCode::OK,
        html::page(
            ctx,
            Nav::Events,
            &format!("Event {}", text(&a["event"])),
            &main,
        ),
    ))
}

fn delivery(ctx: &Ctx<'_>, retry_action: &str, d: &Value) -> String {
    let ep = text(&d["endpoint"]);
    let status = text(&d["status"]);
    let transformed = d.get("transformed");
    let plugin = match status.as_str() {
        "filtered" => format!("skipped: {}", text(&d["reason"])),
        _ if transformed.is_some() => "transformed".into(),
        _ if !d["reason"].is_null() => text(&d["reason"]),
        _ => "passed".into(),
    };
    let mut s = format!(
        "<section class=\"delivery card\" aria-label=\"Delivery to {e}\"><h2>Endpoint <a href=\"{href}\">{e}</a> {b}</h2>\
<dl class=\"facts\"><dt>Plugins</dt><dd>{plugin}</dd><dt>Attempts</dt><dd>{n}</dd><dt>Next attempt</dt><dd class=\"mono\">{next}</dd><dt>webhook-id</dt><dd class=\"mono\">{wid}</dd></dl>",
        e = esc(&ep),
        href = esc(&format!("{}/endpoints/{}", ctx.base(), url(&ep))),
        b = badge(&status),
        plugin = esc(&plugin),
        n = esc(&text(&d["attemptCount"])),
        next = esc(&text(&d["nextAttempt"])),
        wid = esc(&text(&d["webhookId"])),
    );
    if let Some(t) = transformed {
        s.push_str(&produced_body(t));
    }
    let empty = Vec::new();
    let attempts = d["attempts"].as_array().unwrap_or(&empty);
    if attempts.is_empty() {
        s.push_str("<p class=\"empty\">No attempt yet.</p>");
    } else {
        s.push_str("<div class=\"scroll\"><table class=\"attempts\"><thead><tr><th scope=\"col\">#</th><th scope=\"col\">Time</th><th scope=\"col\">Result</th><th scope=\"col\">Latency</th><th scope=\"col\">Response (first 4 KiB)</th></tr></thead><tbody>");
        for (i, at) in attempts.iter().enumerate() {
            let result = match (at["status"].as_u64(), at["error"].as_str()) {
                (Some(code), _) => {
                    let class = if (200..300).contains(&code) {
                        "ok"
                    } else {
                        "bad"
                    };
                    format!("<span class=\"badge {class}\">HTTP {code}</span>")
                }
                (None, Some(e)) => format!("<span class=\"badge bad\">{}</span>", esc(e)),
                (None, None) => "<span class=\"badge muted\">—</span>".into(),
            };
            let body = at["responseBody"].as_str().unwrap_or("");
            let cut = floor_char_boundary(body, EXCERPT);
            s.push_str(&format!(
                "<tr class=\"attempt\"><td>{}</td><td class=\"mono\">{}</td><td>{result}</td><td>{:.1} ms</td><td><pre class=\"excerpt\">{}</pre></td></tr>",
                i + 1,
                esc(&text(&at["at"])),
                at["latencyMs"].as_f64().unwrap_or(0.0),
                esc(&body[..cut]),
            ));
        }
        s.push_str("</tbody></table></div>");
    }
    s.push_str(&format!(
        "<form method=\"post\" action=\"{retry_action}\" class=\"inline\">{}<input type=\"hidden\" name=\"endpoint\" value=\"{}\"><button type=\"submit\">Retry to {}</button></form></section>",
        ctx.csrf(),
        esc(&ep),
        esc(&ep),
    ));
    s
}

/// The body a plugin produced (pretty-printed when JSON), with its content
/// type and headers; at most [`OUTPUT_SHOWN`] bytes of it.
fn produced_body(t: &Value) -> String {
    if t.is_null() {
        return "<p class=\"muted\">The produced body is no longer kept.</p>".into();
    }
    let body = t["body"].as_str().unwrap_or("");
    let pretty = serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| body.to_string());
    let cut = floor_char_boundary(&pretty, OUTPUT_SHOWN);
    let more = if cut < pretty.len() {
        format!(
            " (first {} KiB of {} bytes)",
            OUTPUT_SHOWN / 1024,
            pretty.len()
        )
    } else {
        String::new()
    };
    let headers: Vec<String> = t["headers"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|h| format!("{}: {}", text(&h[0]), text(&h[1])))
                .collect()
        })
        .unwrap_or_default();
    format!(
        "<details open class=\"output\"><summary>Produced body ({}){}</summary>{}<pre class=\"produced\">{}</pre></details>",
        esc(&text(&t["contentType"])),
        esc(&more),
        if headers.is_empty() {
            String::new()
        } else {
            format!(
                "<pre class=\"produced-headers\">{}</pre>",
                esc(&headers.join("\n"))
            )
        },
        esc(&pretty[..cut]),
    )
}

/// Most bytes of a produced body the page shows.
const OUTPUT_SHOWN: usize = 64 * 1024;

fn floor_char_boundary(s: &str, max: usize) -> usize {
    if s.len() <= max {
        return s.len();
    }
    let mut i = max;
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// `POST /ui/a/{account}/events/{id}/retry` (`endpoint`: one endpoint).
pub async fn retry(
    ctx: &Ctx<'_>,
    id: &str,
    form: &[(String, String)],
) -> Result<Response<Body>, ApiError> {
    let only = param(form, "endpoint").filter(|s| !s.is_empty());
    let doc = api_events::retry_data(ctx.state, &ctx.account, id, only).await?;
    let list = |k: &str| -> String {
        doc["meta"][k]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|v| {
                        v.as_str()
                            .map(str::to_string)
                            .unwrap_or_else(|| text(&v["endpoint"]))
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default()
    };
    let requeued = list("requeued");
    let skipped = list("skipped");
    let mut msg = if requeued.is_empty() {
        "Nothing was re-queued.".to_string()
    } else {
        format!("Re-queued for {requeued}.")
    };
    if !skipped.is_empty() {
        msg.push_str(&format!(
            " Skipped: {skipped} (the endpoint no longer exists)."
        ));
    }
    super::session::flash(ctx.sid, msg);
    Ok(html::redirect(
        &format!("{}/events/{}", ctx.base(), url(id)),
        None,
    ))
}
