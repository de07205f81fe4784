//! The plugins page (admin sessions only, as `GET /v1/plugins` is
//! admin-only): every plugin file with its version, SHA-256, load time and
//! load error, its calls, errors by kind and call latency, and the
//! runtime's counters (calls, errors by kind, chain run time). Data from `admin::plugins_doc`, as for the API.

use http::{Response, StatusCode};

use super::html::{self, Ctx, Nav, esc, text};
use crate::api::Body;

/// `GET /ui/plugins`.
pub fn page(ctx: &Ctx<'_>) -> Response<Body> {
    let doc = crate::admin::plugins_doc(ctx.state, true);
    let mut main = String::new();
    let empty = Vec::new();
    let rows = doc["data"].as_array().unwrap_or(&empty);
    if rows.is_empty() {
        main.push_str("<p class=\"empty\">No plugin files in the plugins folder.</p>");
    } else {
        main.push_str("<div class=\"scroll\"><table><thead><tr><th scope=\"col\">Plugin</th><th scope=\"col\">Loaded</th><th scope=\"col\">Version</th><th scope=\"col\">SHA-256</th><th scope=\"col\">Loaded at</th><th scope=\"col\">Load error</th><th scope=\"col\">Calls</th><th scope=\"col\">Errors by kind</th><th scope=\"col\">Latency mean / p50 / p99</th></tr></thead><tbody>");
        for p in rows {
            let a = &p["attributes"];
            let loaded = a["loaded"].as_bool().unwrap_or(false);
            let c = &p["meta"];
            main.push_str(&format!(
                "<tr data-plugin=\"{}\"><td>{}</td><td><span class=\"badge {}\">{}</span></td><td>{}</td><td class=\"mono hash\">{}</td><td class=\"mono\">{}</td><td>{}</td><td class=\"num plugin-calls\">{}</td><td class=\"plugin-errors\">{}</td><td class=\"mono plugin-latency\">{}</td></tr>",
                esc(&text(&p["id"])),
                esc(&text(&p["id"])),
                if loaded { "ok" } else { "bad" },
                if loaded { "loaded" } else { "not loaded" },
                esc(&text(&a["version"])),
                esc(&text(&a["sha256"])),
                esc(&text(&a["loadedAt"])),
                esc(&text(&a["lastError"])),
                esc(&text(&c["calls"])),
                errors_by_kind(&c["callErrorsByKind"]),
                latency(c),
            ));
        }
        main.push_str("</tbody></table></div>");
    }
    let m = &doc["meta"];
    let by_kind = errors_by_kind(&m["callErrorsByKind"]);
    let (chains, mean) = ctx.state.metrics.plugin_duration.count_mean_ms();
    main.push_str(&format!(
        "<section class=\"card\" aria-labelledby=\"rt-h\"><h2 id=\"rt-h\">Runtime</h2><dl class=\"facts\">\
<dt>Calls</dt><dd>{}</dd><dt>Call errors</dt><dd>{}</dd><dt>Errors by kind</dt><dd>{by_kind}</dd>\
<dt>Plugin chains run</dt><dd>{chains}</dd><dt>Mean chain time</dt><dd>{mean:.3} ms</dd>\
<dt>Reloads</dt><dd>{}</dd><dt>Load failures</dt><dd>{}</dd><dt>Compiles / cache hits</dt><dd>{} / {}</dd></dl>\
<p class=\"muted\">Counters since the router started, for all plugins together (per plugin in the table above; p50/p99 are power-of-two bucket bounds, so within a factor of two).</p></section>",
        esc(&text(&m["calls"])),
        esc(&text(&m["callErrors"])),
        esc(&text(&m["reloads"])),
        esc(&text(&m["loadFailures"])),
        esc(&text(&m["compiles"])),
        esc(&text(&m["cacheHits"])),
    ));
    html::html(
        StatusCode::OK,
        html::page(ctx, Nav::Plugins, "Plugins", &main),
    )
}

/// `{"deadline": 3, "trap": 1}` → `deadline: 3, trap: 1` (escaped), or `none`.
fn errors_by_kind(v: &serde_json::Value) -> String {
    v.as_object()
        .map(|o| {
            o.iter()
                .map(|(k, n)| format!("{}: {}", esc(k), esc(&text(n))))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "none".into())
}

/// A plugin's call latency: `0.312 / ≤ 0.512 / ≤ 1.024 ms`, or `–` before
/// its first call.
fn latency(c: &serde_json::Value) -> String {
    match (
        c["meanMs"].as_f64(),
        c["p50Ms"].as_f64(),
        c["p99Ms"].as_f64(),
    ) {
        (Some(mean), Some(p50), Some(p99)) => {
            format!("{mean:.3} / \u{2264} {p50:.3} / \u{2264} {p99:.3} ms")
        }
        _ => "\u{2013}".into(),
    }
}
