//! The overview page: per endpoint its status (enabled, disabled, or
//! auto-disabled with the reason), success rate and p50/p99 latency over
//! the last hour and day (from `crate::feed`, in memory since the start),
//! pending deliveries and the age of the oldest, the last error; and a
//! chart of the account's deliveries per minute by outcome, drawn as SVG
//! on the server (no script).

use http::{Response, StatusCode};

use super::html::{self, Ctx, Nav, badge, esc, url};
use crate::api::{ApiError, Body};
use crate::feed::{OUTCOMES, WindowStats};
use crate::store::now_ms;

/// Pending deliveries counted per endpoint at most.
const PENDING_CAP: usize = 10_000;

fn rate(w: &WindowStats) -> String {
    match w.success_rate() {
        Some(r) => format!("{:.1}%", r * 100.0),
        None => "—".into(),
    }
}

fn ms(v: Option<f64>) -> String {
    match v {
        Some(v) if v < 10.0 => format!("≤{v:.1} ms"),
        Some(v) => format!("≤{v:.0} ms"),
        None => "—".into(),
    }
}

fn age(ms: i64) -> String {
    humantime::format_duration(std::time::Duration::from_secs((ms / 1000).max(0) as u64))
        .to_string()
}

/// `GET /ui/a/{account}`.
pub async fn page(ctx: &Ctx<'_>) -> Result<Response<Body>, ApiError> {
    let snap = ctx.state.registry.snapshot();
    let mut eps = snap.endpoints(&ctx.account).to_vec();
    eps.sort_by(|a, b| a.spec.id.cmp(&b.spec.id));
    let now = now_ms();
    let feed = &ctx.state.metrics.feed;
    let mut main = String::new();
    main.push_str(&chart(
        &feed.per_minute(&eps.iter().map(|e| e.uid).collect::<Vec<_>>(), now),
    ));
    if eps.is_empty() {
        main.push_str(&format!(
            "<p class=\"empty\">No endpoint yet: <a href=\"{}/endpoints\">create one</a>.</p>",
            esc(&ctx.base())
        ));
    } else {
        main.push_str("<div class=\"scroll\"><table class=\"overview\"><thead><tr><th scope=\"col\">Endpoint</th><th scope=\"col\">Status</th><th scope=\"col\">Success 1 h</th><th scope=\"col\">p50 / p99 1 h</th><th scope=\"col\">Success 24 h</th><th scope=\"col\">p50 / p99 24 h</th><th scope=\"col\">Pending</th><th scope=\"col\">Oldest due</th><th scope=\"col\">Last error</th></tr></thead><tbody>");
        for ep in &eps {
            let health = ctx.state.dispatcher.health(ep.uid).await;
            let h = &health.state;
            let status = if !ep.spec.enabled {
                "disabled"
            } else if h.disabled_reason.is_some() {
                "auto-disabled"
            } else {
                "enabled"
            };
            let (hour, day) = feed.window(ep.uid, now);
            // Counted up to a cap, so a deep backlog costs a bounded scan.
            let pending = match ctx
                .state
                .store
                .due(ep.uid, None, i64::MAX, PENDING_CAP, &|_| false)
                .await
            {
                Ok(d) if d.len() >= PENDING_CAP => format!("{PENDING_CAP}+"),
                Ok(d) => d.len().to_string(),
                Err(_) => "—".into(),
            };
            let oldest = match ctx.state.store.next_due_ms(ep.uid, 1, &|_| false).await {
                Ok(Some(t)) if t <= now => age(now - t),
                Ok(Some(_)) => "not due yet".into(),
                _ => "—".into(),
            };
            main.push_str(&format!(
                "<tr><td><a href=\"{href}\">{id}</a></td><td>{b}{reason}</td><td>{r1}</td><td>{p1}</td><td>{r24}</td><td>{p24}</td><td>{pending}</td><td>{oldest}</td><td>{err}</td></tr>",
                href = esc(&format!("{}/endpoints/{}", ctx.base(), url(&ep.spec.id))),
                id = esc(&ep.spec.id),
                b = badge(status),
                reason = h
                    .disabled_reason
                    .as_deref()
                    .map(|r| format!("<br><small>{}</small>", esc(r)))
                    .unwrap_or_default(),
                r1 = rate(&hour),
                p1 = format!("{} / {}", ms(hour.p50_ms), ms(hour.p99_ms)),
                r24 = rate(&day),
                p24 = format!("{} / {}", ms(day.p50_ms), ms(day.p99_ms)),
                oldest = esc(&oldest),
                err = esc(h.last_error.as_deref().unwrap_or("—")),
            ));
        }
        main.push_str("</tbody></table></div><p class=\"muted\">Rates and latencies count attempts since the router started (kept in memory); latencies are bucket bounds.</p>");
    }
    Ok(html::html(
        StatusCode::OK,
        html::page(ctx, Nav::Overview, "Overview", &main),
    ))
}

/// A stacked bar per minute (oldest left), one colour per outcome class.
fn chart(rows: &[[u64; 5]]) -> String {
    let max = rows
        .iter()
        .map(|r| r.iter().sum::<u64>())
        .max()
        .unwrap_or(0)
        .max(1);
    let (w, h, bar) = (600.0, 120.0, 10.0);
    let mut bars = String::new();
    for (i, r) in rows.iter().enumerate() {
        let mut y = h;
        for (k, n) in r.iter().enumerate() {
            if *n == 0 {
                continue;
            }
            let bh = *n as f64 / max as f64 * h;
            y -= bh;
            bars.push_str(&format!(
                "<rect class=\"o{k}\" x=\"{:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{bh:.1}\"><title>{} {}</title></rect>",
                i as f64 * bar,
                bar - 1.0,
                n,
                OUTCOMES[k]
            ));
        }
    }
    let total: [u64; 5] = rows.iter().fold([0; 5], |mut acc, r| {
        for (a, x) in acc.iter_mut().zip(r) {
            *a += x;
        }
        acc
    });
    let legend: String = OUTCOMES
        .iter()
        .enumerate()
        .map(|(k, o)| format!("<li><span class=\"key o{k}\"></span>{o}: {}</li>", total[k]))
        .collect();
    format!(
        "<section class=\"card\" aria-labelledby=\"chart-h\"><h2 id=\"chart-h\">Deliveries per minute, last hour</h2>\
<svg class=\"chart\" viewBox=\"0 0 {w} {h}\" role=\"img\" aria-label=\"Deliveries per minute by outcome, peak {max} per minute\" preserveAspectRatio=\"none\">{bars}</svg>\
<ul class=\"legend\">{legend}</ul></section>"
    )
}
