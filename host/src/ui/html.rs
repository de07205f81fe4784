//! HTML plumbing of the dashboard: the escape function every piece of
//! content goes through, the page layout (navigation, account switcher,
//! flash messages), and responses with the security headers (a strict
//! `Content-Security-Policy` with no inline script or style, `nosniff`,
//! referrer only to this origin, no caching, no framing).

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};
use http_body_util::Full;

use super::session::Session;
use crate::api::Body;
use crate::state::AppState;

/// The policy of every dashboard response: scripts and styles only from
/// the router's own `/ui/static/` files, forms only to itself.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Escapes text for HTML element content and quoted attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes a path segment or query value for an `href` (then
/// `esc` it like any attribute).
pub fn url(s: &str) -> String {
    crate::admin::percent_encode(s)
}

/// Adds the security headers to a response.
pub fn secure(mut r: Response<Body>) -> Response<Body> {
    let h = r.headers_mut();
    h.insert("content-security-policy", HeaderValue::from_static(CSP));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("referrer-policy", HeaderValue::from_static("same-origin"));
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.entry(http::header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    r
}

/// An HTML page response.
pub fn html(status: StatusCode, body: String) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    secure(r)
}

/// A 303 redirect (after a form post), optionally setting a cookie.
pub fn redirect(location: &str, cookie: Option<String>) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::SEE_OTHER;
    if let Ok(v) = HeaderValue::from_str(location) {
        r.headers_mut().insert(http::header::LOCATION, v);
    }
    if let Some(c) = cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        r.headers_mut().insert(http::header::SET_COOKIE, c);
    }
    secure(r)
}

/// What a page is (for the navigation's current item).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Overview,
    Events,
    Endpoints,
    Tail,
    Plugins,
    None,
}

/// The signed-in frame of a page: who, which account, the CSRF token.
pub struct Ctx<'a> {
    pub state: &'a AppState,
    pub session: &'a Session,
    pub sid: &'a str,
    /// The account the page shows.
    pub account: String,
}

impl Ctx<'_> {
    /// A hidden CSRF field for a form.
    pub fn csrf(&self) -> String {
        format!(
            "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
            esc(&self.session.csrf)
        )
    }

    /// `/ui/a/{account}{rest}`.
    pub fn base(&self) -> String {
        format!("/ui/a/{}", url(&self.account))
    }
}

/// A complete page: head, navigation (with the account switcher for the
/// admin), flash message, `main`.
pub fn page(ctx: &Ctx<'_>, nav: Nav, title: &str, main: &str) -> String {
    let base = ctx.base();
    let item = |n: Nav, href: String, label: &str| {
        let current = if n == nav {
            " aria-current=\"page\""
        } else {
            ""
        };
        format!("<li><a href=\"{}\"{current}>{label}</a></li>", esc(&href))
    };
    let mut navs = String::new();
    navs.push_str(&item(Nav::Overview, base.clone(), "Overview"));
    navs.push_str(&item(Nav::Events, format!("{base}/events"), "Events"));
    navs.push_str(&item(
        Nav::Endpoints,
        format!("{base}/endpoints"),
        "Endpoints",
    ));
    navs.push_str(&item(Nav::Tail, format!("{base}/tail"), "Live tail"));
    if ctx.session.admin {
        navs.push_str(&item(Nav::Plugins, "/ui/plugins".into(), "Plugins"));
    }
    let switcher = if ctx.session.admin {
        let snap = ctx.state.registry.snapshot();
        let mut ids: Vec<&String> = snap.accounts.keys().collect();
        ids.sort();
        let options: String = ids
            .iter()
            .map(|id| {
                format!(
                    "<option value=\"{}\"{}>{}</option>",
                    esc(id),
                    if **id == ctx.account { " selected" } else { "" },
                    esc(id)
                )
            })
            .collect();
        format!(
            "<form class=\"switch\" method=\"get\" action=\"/ui/switch\"><label for=\"account-switch\">Account</label> <select id=\"account-switch\" name=\"account\">{options}</select> <button type=\"submit\">Go</button></form>"
        )
    } else {
        format!(
            "<span class=\"who\">Account <strong>{}</strong></span>",
            esc(&ctx.account)
        )
    };
    let flash = ctx
        .session
        .flash
        .as_deref()
        .map(|f| format!("<p class=\"flash\" role=\"status\">{}</p>", esc(f)))
        .unwrap_or_default()
        + &ctx
            .session
            .secret
            .as_deref()
            .map(|s| format!("<div class=\"notice\"><label for=\"secret\">Secret (shown only now)</label> <input id=\"secret\" class=\"mono secret\" readonly value=\"{}\" size=\"50\"></div>", esc(s)))
            .unwrap_or_default();
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{title} · Switchyard</title><link rel=\"stylesheet\" href=\"/ui/static/app.css\"><script src=\"/ui/static/app.js\" defer></script></head><body>\
<a class=\"skip\" href=\"#main\">Skip to content</a>\
<header><span class=\"brand\">Switchyard</span><nav aria-label=\"Main\"><ul>{navs}</ul></nav>{switcher}\
<form method=\"post\" action=\"/ui/logout\">{csrf}<button type=\"submit\">Sign out</button></form></header>\
<main id=\"main\"><h1>{title}</h1>{flash}{main}</main></body></html>",
        title = esc(title),
        csrf = ctx.csrf(),
    )
}

/// A page outside a session (sign-in, errors before sign-in).
pub fn bare(title: &str, main: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{t} · Switchyard</title><link rel=\"stylesheet\" href=\"/ui/static/app.css\"></head><body><header><span class=\"brand\">Switchyard</span></header><main id=\"main\"><h1>{t}</h1>{main}</main></body></html>",
        t = esc(title)
    )
}

/// An error notice (an `ApiError`'s title and detail, escaped).
pub fn error_notice(e: &crate::api::ApiError) -> String {
    format!(
        "<div class=\"error\" role=\"alert\"><strong>{}</strong>: {}</div>",
        esc(&e.title),
        esc(&e.detail)
    )
}

/// A status badge (`class` from a fixed vocabulary, text escaped).
pub fn badge(status: &str) -> String {
    let class = match status {
        "delivered" | "enabled" | "passed" => "ok",
        "failing" | "delivering" | "attempt_failed" => "warn",
        "failed" | "disabled" | "auto-disabled" => "bad",
        _ => "muted",
    };
    format!("<span class=\"badge {class}\">{}</span>", esc(status))
}

/// A JSON value as display text (strings without quotes, null as "—").
pub fn text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => "—".into(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping() {
        assert_eq!(
            esc(r#""><img src=x onerror=alert(1)>&'"#),
            "&quot;&gt;&lt;img src=x onerror=alert(1)&gt;&amp;&#39;"
        );
        assert_eq!(esc("<script>"), "&lt;script&gt;");
    }
}
