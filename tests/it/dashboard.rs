//! The operator dashboard (`/ui`): its HTTP contract checked directly
//! (headers, sign-in, CSRF, isolation), and the whole of it in a real
//! browser — `tests/ui/test_dashboard.py` drives headless Chromium through
//! WebDriver against the real binary with real receivers (install with
//! `bash tests/ci/dashboard.sh`). Screenshots land in
//! `target/ui-screenshots/`.

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex};

use crate::common::*;

const ADMIN: &str = "admin-token-0123456789";

/// Receivers that answer 500 (with markup in the body) to the first
/// delivery of an event whose payload says "please-fail", and on `/delta`
/// to the first two attempts of each delivery; 200 otherwise.
async fn flaky_receiver() -> Receiver {
    let seen: Arc<Mutex<HashSet<String>>> = Arc::default();
    let delta: Arc<Mutex<std::collections::HashMap<String, u32>>> = Arc::default();
    Receiver::scripted(move |_, r| {
        let body = String::from_utf8_lossy(&r.body);
        let id = r.header("webhook-id").to_string();
        let delta_fails = r.path == "/delta" && {
            let mut d = delta.lock().unwrap();
            let n = d.entry(id.clone()).or_insert(0);
            *n += 1;
            *n <= 2
        };
        if delta_fails || (body.contains("please-fail") && seen.lock().unwrap().insert(id)) {
            let mut reply = Reply::status(500);
            reply.body =
                bytes::Bytes::from_static(b"receiver says no <img src=x onerror=alert(1)>");
            reply
        } else {
            Reply::status(200)
        }
    })
    .await
}

fn config(rx: &Receiver) -> String {
    base_config(&format!("admin_token = \"{ADMIN}\""))
        + &endpoint("alpha", &rx.url("/alpha"), "retry_schedule = [\"1h\"]")
        + &endpoint("beta", &rx.url("/beta"), "retry_schedule = [\"1h\"]")
}

/// A tiny HTTP/1.1 client for the form posts and redirects (the harness
/// client does not keep cookies).
async fn raw(
    router: &Router,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, http::HeaderMap, String) {
    let c = Client::new();
    let r = c
        .request(method, &router.url(path), headers, body.to_string())
        .await;
    (
        r.status,
        r.headers.clone(),
        String::from_utf8_lossy(&r.body).into_owned(),
    )
}

fn session_cookie(h: &http::HeaderMap) -> String {
    let c = h
        .get("set-cookie")
        .expect("a session cookie")
        .to_str()
        .unwrap()
        .to_string();
    c.split(';').next().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ui_http_contract() {
    let rx = flaky_receiver().await;
    let router = Router::start(&config(&rx), &[]);
    // Not signed in: the sign-in page, with the strict policy.
    let (status, h, _) = raw(&router, "GET", "/ui/a/acct", &[], "").await;
    assert_eq!(status, 303);
    assert_eq!(h["location"], "/ui/login");
    let (status, h, body) = raw(&router, "GET", "/ui/login", &[], "").await;
    assert_eq!(status, 200);
    let csp = h["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert!(body.contains("<label for=\"token\">"));
    let (status, h, js) = raw(&router, "GET", "/ui/static/app.js", &[], "").await;
    assert_eq!(status, 200);
    assert!(
        h["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/javascript")
    );
    assert!(js.contains("EventSource"));
    // A sign-in posted from another site: refused.
    let (status, h, _) = raw(
        &router,
        "POST",
        "/ui/login",
        &[
            ("content-type", "application/x-www-form-urlencoded"),
            ("origin", "https://evil.example"),
        ],
        &format!("token={TOKEN}"),
    )
    .await;
    assert_eq!(status, 403);
    assert!(h.get("set-cookie").is_none());
    // A wrong token: 401, no cookie.
    let form = [("content-type", "application/x-www-form-urlencoded")];
    let (status, h, _) = raw(&router, "POST", "/ui/login", &form, "token=nope").await;
    assert_eq!(status, 401);
    assert!(h.get("set-cookie").is_none());
    // The account token: a cookie, HttpOnly, SameSite=Strict, expiring.
    let (status, h, _) = raw(
        &router,
        "POST",
        "/ui/login",
        &form,
        &format!("token={TOKEN}"),
    )
    .await;
    assert_eq!(status, 303);
    assert_eq!(h["location"], "/ui/a/acct");
    let set = h["set-cookie"].to_str().unwrap().to_string();
    for attr in ["HttpOnly", "SameSite=Strict", "Max-Age=", "Path=/ui"] {
        assert!(set.contains(attr), "{set}");
    }
    assert!(
        !set.contains("Secure"),
        "plain HTTP: no Secure flag ({set})"
    );
    let cookie = session_cookie(&h);
    let with_cookie = [("cookie", cookie.as_str())];
    let (status, h, page) = raw(&router, "GET", "/ui/a/acct", &with_cookie, "").await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(h["x-frame-options"], "DENY");
    assert!(page.contains("alpha") && page.contains("beta"));
    // Behind a TLS proxy the cookie is Secure.
    let (_, h, _) = raw(
        &router,
        "POST",
        "/ui/login",
        &[
            ("content-type", "application/x-www-form-urlencoded"),
            ("x-forwarded-proto", "https"),
        ],
        &format!("token={TOKEN}"),
    )
    .await;
    assert!(h["set-cookie"].to_str().unwrap().contains("; Secure"));
    // Another account: 404 for pages and forms alike.
    let (status, _, page) = raw(&router, "GET", "/ui/a/other", &with_cookie, "").await;
    assert_eq!(status, 404, "{page}");
    let csrf = page_csrf(
        &raw(&router, "GET", "/ui/a/acct/endpoints", &with_cookie, "")
            .await
            .2,
    );
    let post = [
        ("cookie", cookie.as_str()),
        ("content-type", "application/x-www-form-urlencoded"),
    ];
    let (status, _, _) = raw(
        &router,
        "POST",
        "/ui/a/other/endpoints",
        &post,
        &format!("csrf={csrf}&url=http%3A%2F%2F127.0.0.1%3A1%2F&id=x"),
    )
    .await;
    assert_eq!(status, 404);
    // No CSRF token: 403, nothing created.
    let (status, _, _) = raw(
        &router,
        "POST",
        "/ui/a/acct/endpoints",
        &post,
        "url=http%3A%2F%2F127.0.0.1%3A1%2F&id=forged",
    )
    .await;
    assert_eq!(status, 403);
    let (status, _, _) = raw(
        &router,
        "POST",
        "/ui/a/acct/endpoints",
        &post,
        &format!("csrf={csrf}&url=http%3A%2F%2F127.0.0.1%3A1%2F&id=made"),
    )
    .await;
    assert_eq!(status, 303);
    let api = Client::new()
        .request(
            "GET",
            &router.url("/v1/accounts/acct/webhook-endpoints"),
            &[("authorization", &format!("Bearer {TOKEN}"))],
            String::new(),
        )
        .await
        .json();
    let ids: Vec<&str> = api["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["alpha", "beta", "made"]);
    // Batching and the rate limit, set through the API, on the detail page.
    let r = Client::new()
        .request(
            "PATCH",
            &router.url("/v1/accounts/acct/webhook-endpoints/made"),
            &[
                ("authorization", &format!("Bearer {TOKEN}")),
                ("content-type", "application/vnd.api+json"),
            ],
            serde_json::json!({"data": {"type": "webhook-endpoints", "attributes": {
                "batch": {"maxEvents": 40, "maxWait": "2s"}, "rateLimit": "5/s"}}})
            .to_string(),
        )
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let (status, _, page) = raw(
        &router,
        "GET",
        "/ui/a/acct/endpoints/made",
        &with_cookie,
        "",
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        page.contains("<dt>Batching</dt><dd>up to 40 events or 475000 bytes, or after 2s</dd>")
            && page.contains("<dt>Rate limit</dt><dd>5/s</dd>"),
        "{page}"
    );
    let (_, _, page) = raw(
        &router,
        "GET",
        "/ui/a/acct/endpoints/alpha",
        &with_cookie,
        "",
    )
    .await;
    assert!(page.contains("<dt>Batching</dt><dd>off (one request per event)</dd>"));
    // Paging: 25 events a page, newest first, then an "Older events" link
    // that keeps the filters.
    let c = Client::new();
    let mut ids = Vec::new();
    for i in 0..27 {
        let r = c
            .post_event(
                &router,
                "acct",
                &event(
                    "license.created",
                    serde_json::json!({"data": {"id": format!("p{i}")}}),
                ),
            )
            .await;
        assert_eq!(r.status, 202);
        ids.push(r.json()["data"]["id"].as_str().unwrap().to_string());
    }
    let (status, _, first) = raw(
        &router,
        "GET",
        "/ui/a/acct/events?type=license.*",
        &with_cookie,
        "",
    )
    .await;
    assert_eq!(status, 200);
    assert!(first.contains(&ids[26]) && first.contains(&ids[2]) && !first.contains(&ids[1]));
    let i = first
        .find("href=\"/ui/a/acct/events?before=")
        .expect("an older-events link")
        + 6;
    let link = first[i..].split('"').next().unwrap().replace("&amp;", "&");
    assert!(
        link.contains("type=license.*") || link.contains("type=license.%2A"),
        "{link}"
    );
    let (_, _, older) = raw(&router, "GET", &link, &with_cookie, "").await;
    assert!(older.contains(&ids[1]) && older.contains(&ids[0]) && !older.contains(&ids[2]));
    // Sign-out ends the session.
    let (status, _, _) = raw(
        &router,
        "POST",
        "/ui/logout",
        &post,
        &format!("csrf={csrf}"),
    )
    .await;
    assert_eq!(status, 303);
    let (status, _, _) = raw(&router, "GET", "/ui/a/acct", &with_cookie, "").await;
    assert_eq!(status, 303);
    // `[server] ui = false` turns the dashboard off.
    let off = Router::start(&base_config("ui = false"), &[]);
    let (status, _, _) = raw(&off, "GET", "/ui/login", &[], "").await;
    assert_eq!(status, 404);
}

fn page_csrf(page: &str) -> String {
    let i = page.find("name=\"csrf\" value=\"").expect("a csrf field") + 19;
    page[i..i + 64].to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ui_in_a_real_browser() {
    if std::env::var_os("SWITCHYARD_SKIP_BROWSER").is_some() {
        eprintln!("SWITCHYARD_SKIP_BROWSER is set: browser test skipped");
        return;
    }
    let rx = flaky_receiver().await;
    let ok = Receiver::ok().await;
    // `delta` takes only `user.deleted`, retries once, then fails for good
    // (its receiver refuses the first two attempts): the recover action.
    let config = config(&rx)
        + &endpoint(
            "delta",
            &rx.url("/delta"),
            "subscriptions = [\"user.deleted\"]\nretry_schedule = [\"100ms\"]",
        );
    let router = Router::start(&config, &[("event-filter", dist_plugin("event-filter"))]);
    let c = Client::new();
    // An event of the other account, with its own token.
    let other = c
        .request(
            "POST",
            &router.events_url("other"),
            &[
                ("authorization", "Bearer other-token-bbbb"),
                ("content-type", "application/json"),
            ],
            event(
                "license.created",
                serde_json::json!({"data": {"id": "secret-of-other"}}),
            )
            .to_string(),
        )
        .await;
    assert_eq!(other.status, 202);
    let other_id = other.json()["data"]["id"].as_str().unwrap().to_string();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let shots = root.join("target/ui-screenshots");
    let out = std::process::Command::new("python3")
        .arg(root.join("tests/ui/test_dashboard.py"))
        .env("SY_BASE", router.url(""))
        .env("SY_TOKEN", TOKEN)
        .env("SY_ADMIN", ADMIN)
        .env("SY_OTHER_EVENT", &other_id)
        .env("SY_RECEIVER", ok.url("/gamma"))
        .env("SY_SHOTS", &shots)
        .output()
        .expect("python3 must be installed");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the browser test failed (needs Chromium, chromedriver and selenium: `bash tests/ci/dashboard.sh`; set SWITCHYARD_SKIP_BROWSER=1 to skip):\n{stdout}\n{stderr}\nrouter log:\n{}",
        router.log()
    );
    for page in [
        "sign-in",
        "overview",
        "events",
        "event-detail",
        "endpoints",
        "endpoint",
        "tail",
        "plugins",
    ] {
        for width in ["desktop", "mobile"] {
            let f = shots.join(format!("{page}-{width}.png"));
            let len = std::fs::metadata(&f).map(|m| m.len()).unwrap_or(0);
            assert!(len > 5000, "screenshot {} missing or empty", f.display());
        }
    }
    // The created endpoint's test event reached the receiver.
    assert!(
        ok.received()
            .iter()
            .any(|r| r.json()["type"] == "webhook.ping"
                || r.body.windows(12).any(|w| w == b"webhook.ping"))
    );
}

/// Signs in with `token` and returns the session cookie.
async fn sign_in(router: &Router, token: &str) -> String {
    let (status, h, _) = raw(
        router,
        "POST",
        "/ui/login",
        &[("content-type", "application/x-www-form-urlencoded")],
        &format!("token={token}"),
    )
    .await;
    assert_eq!(status, 303);
    session_cookie(&h)
}

/// What the plugins did, at a glance: an endpoint whose plugin rewrites
/// the payload shows "transformed" with the produced body (escaped) in the
/// event's detail, one whose plugin passes shows "passed" and no body, and
/// the plugins page (admin) shows each plugin's own calls, errors by kind
/// and latency — as `GET /v1/plugins` does in each plugin's `meta`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ui_shows_what_each_plugin_did() {
    let rx = Receiver::ok().await;
    let config = base_config(&format!("admin_token = \"{ADMIN}\""))
        + &endpoint(
            "shaped",
            &rx.url("/shaped"),
            "plugins = [ { name = \"misbehave\", config = { mode = \"rewrite\", tag = \"<b>tagged</b>\" } } ]",
        )
        + &endpoint(
            "plain",
            &rx.url("/plain"),
            "plugins = [ { name = \"event-filter\", config = { include = [\"license.*\"] } } ]",
        )
        + &endpoint(
            "broken",
            &rx.url("/broken"),
            "plugins = [ { name = \"oops\", config = { mode = \"error\" } } ]\nretry_schedule = [\"1h\"]",
        );
    let router = Router::start(
        &config,
        &[
            ("misbehave", test_plugin("misbehave")),
            ("oops", test_plugin("misbehave")),
            ("event-filter", dist_plugin("event-filter")),
        ],
    );
    let c = Client::new();
    let r = c
        .post_event(
            &router,
            "acct",
            &event("license.created", serde_json::json!({"data": {"id": "t1"}})),
        )
        .await;
    assert_eq!(r.status, 202);
    let id = r.json()["data"]["id"].as_str().unwrap().to_string();
    let start = std::time::Instant::now();
    while rx.count() < 2 && start.elapsed() < std::time::Duration::from_secs(20) {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(rx.count(), 2);
    // The API says which delivery was transformed, with the body sent.
    let doc = c
        .request(
            "GET",
            &router.url(&format!("/v1/accounts/acct/webhook-events/{id}")),
            &[("authorization", &format!("Bearer {TOKEN}"))],
            String::new(),
        )
        .await
        .json();
    let deliveries = doc["data"]["attributes"]["deliveries"].as_array().unwrap();
    let of = |ep: &str| deliveries.iter().find(|d| d["endpoint"] == ep).unwrap();
    let sent = rx
        .received()
        .into_iter()
        .find(|r| r.path == "/shaped")
        .unwrap();
    assert_eq!(of("shaped")["status"], "delivered", "{doc}");
    assert_eq!(
        of("shaped")["transformed"]["body"]
            .as_str()
            .unwrap()
            .as_bytes(),
        &sent.body[..],
        "the body shown is the body sent"
    );
    assert!(of("plain").get("transformed").is_none(), "{doc}");
    // The page: transformed + the produced body, escaped; passed.
    let cookie = sign_in(&router, TOKEN).await;
    let with_cookie = [("cookie", cookie.as_str())];
    let (status, _, page) = raw(
        &router,
        "GET",
        &format!("/ui/a/acct/events/{id}"),
        &with_cookie,
        "",
    )
    .await;
    assert_eq!(status, 200, "{page}");
    let section = |ep: &str| -> String {
        let at = page
            .find(&format!("aria-label=\"Delivery to {ep}\""))
            .unwrap_or_else(|| panic!("no delivery section for {ep}: {page}"));
        let rest = &page[at..];
        rest[..rest.find("</section>").unwrap()].to_string()
    };
    let shaped = section("shaped");
    assert!(shaped.contains("<dd>transformed</dd>"), "{shaped}");
    assert!(shaped.contains("class=\"produced\""), "{shaped}");
    assert!(shaped.contains("rewritten"), "{shaped}");
    assert!(
        shaped.contains("&lt;b&gt;tagged&lt;/b&gt;") && !shaped.contains("<b>tagged"),
        "the produced body is not escaped: {shaped}"
    );
    let plain = section("plain");
    assert!(plain.contains("<dd>passed</dd>"), "{plain}");
    assert!(!plain.contains("class=\"produced\""), "{plain}");
    // The plugins page: per-plugin calls, errors by kind, latency.
    let start = std::time::Instant::now();
    let admin_cookie = sign_in(&router, ADMIN).await;
    let row = |page: &str, name: &str| -> String {
        let at = page
            .find(&format!("<tr data-plugin=\"{name}\">"))
            .unwrap_or_else(|| panic!("no row for {name}: {page}"));
        let rest = &page[at..];
        rest[..rest.find("</tr>").unwrap()].to_string()
    };
    loop {
        let (status, _, page) = raw(
            &router,
            "GET",
            "/ui/plugins",
            &[("cookie", admin_cookie.as_str())],
            "",
        )
        .await;
        assert_eq!(status, 200, "{page}");
        let oops = row(&page, "oops");
        if oops.contains("bad_input: ") || start.elapsed() > std::time::Duration::from_secs(10) {
            assert!(oops.contains("bad_input: 1"), "{oops}");
            let filter = row(&page, "event-filter");
            assert!(
                filter.contains("<td class=\"num plugin-calls\">1</td>"),
                "{filter}"
            );
            assert!(filter.contains("none"), "{filter}");
            assert!(filter.contains(" ms</td>"), "no latency: {filter}");
            let shaped = row(&page, "misbehave");
            assert!(
                shaped.contains("<td class=\"num plugin-calls\">1</td>"),
                "{shaped}"
            );
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let doc = c
        .request(
            "GET",
            &router.url("/v1/plugins"),
            &[("authorization", &format!("Bearer {ADMIN}"))],
            String::new(),
        )
        .await
        .json();
    let oops = doc["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == "oops")
        .unwrap();
    assert_eq!(oops["meta"]["calls"], 1, "{doc}");
    assert_eq!(oops["meta"]["callErrorsByKind"]["bad_input"], 1, "{doc}");
    assert!(oops["meta"]["p99Ms"].as_f64().unwrap() > 0.0, "{doc}");
    // An account token sees the list, not the traffic of every account.
    let doc = c
        .request(
            "GET",
            &router.url("/v1/plugins"),
            &[("authorization", &format!("Bearer {TOKEN}"))],
            String::new(),
        )
        .await
        .json();
    assert!(doc["data"][0].get("meta").is_none(), "{doc}");
}
