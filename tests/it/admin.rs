//! End to end: the operator surface of the real `switchyard` binary —
//! webhook-endpoint and webhook-event APIs, account isolation, secret
//! rotation, retry/recover, ping, auto-disable, /metrics, retention, and
//! the operator CLI.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::common::*;
use serde_json::{Value, json};

const ADMIN: &str = "admin-token-0123456789";
const OTHER: &str = "other-token-bbbb";

fn config(extra_server: &str) -> String {
    base_config(&format!("admin_token = \"{ADMIN}\"\n{extra_server}"))
}

fn create_doc(id: Option<&str>, attrs: Value) -> Value {
    let mut d = json!({"data": {"type": "webhook-endpoints", "attributes": attrs}});
    if let Some(id) = id {
        d["data"]["id"] = json!(id);
    }
    d
}

fn body_text(r: &Resp) -> String {
    String::from_utf8_lossy(&r.body).into_owned()
}

fn ids(v: &Value) -> Vec<String> {
    v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_string())
        .collect()
}

async fn wait_until<F, Fut>(timeout: Duration, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn rfc3339_ago(secs: i64) -> String {
    let t = time::OffsetDateTime::now_utc() - time::Duration::seconds(secs);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

/// A router with one config endpoint (`fixed`) and the event-filter
/// plugin, for the endpoint CRUD tests.
fn crud_router(rx: &Receiver) -> Router {
    let cfg = config("")
        + &endpoint(
            "fixed",
            &rx.url("/fixed"),
            "subscriptions = [\"nothing.here\"]",
        );
    Router::start(&cfg, &[("event-filter", dist_plugin("event-filter"))])
}

const ENDPOINTS: &str = "/v1/accounts/acct/webhook-endpoints";

/// Creates `crm` (our id and secret, 200 ms retries) and one endpoint with
/// a generated id; returns the generated id.
async fn create_crm_and_generated(c: &Client, router: &Router, rx: &Receiver) -> String {
    let base = ENDPOINTS;
    let r = api(
        c,
        router,
        "POST",
        base,
        TOKEN,
        Some(create_doc(
            None,
            json!({"url": rx.url("/gen"), "subscriptions": ["license.*"]}),
        )),
    )
    .await;
    assert_eq!(r.status, 201, "{}", body_text(&r));
    let gen_id = r.json()["data"]["id"].as_str().unwrap().to_string();
    let r = api(
        c,
        router,
        "POST",
        base,
        TOKEN,
        Some(create_doc(
            Some("crm"),
            json!({"url": rx.url("/crm"), "secret": SECRET, "retrySchedule": ["200ms"]}),
        )),
    )
    .await;
    assert_eq!(r.status, 201, "{}", body_text(&r));
    gen_id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_create_shows_the_secret_once_and_refuses_duplicates() {
    let rx = Receiver::ok().await;
    let router = crud_router(&rx);
    let c = Client::new();
    let base = ENDPOINTS;

    // Create with a generated id and secret: 201, the secret shown once.
    let r = api(
        &c,
        &router,
        "POST",
        base,
        TOKEN,
        Some(create_doc(
            None,
            json!({"url": rx.url("/gen"), "subscriptions": ["license.*"]}),
        )),
    )
    .await;
    assert_eq!(r.status, 201, "{}", body_text(&r));
    let v = r.json();
    let gen_id = v["data"]["id"].as_str().unwrap().to_string();
    assert_eq!(gen_id.len(), 36, "a uuid");
    assert!(
        v["data"]["attributes"]["secret"]
            .as_str()
            .unwrap()
            .starts_with("whsec_")
    );
    assert_eq!(r.headers["location"], format!("{base}/{gen_id}").as_str());
    assert_eq!(v["data"]["attributes"]["readOnly"], false);

    // Create with our id and secret.
    let r = api(
        &c,
        &router,
        "POST",
        base,
        TOKEN,
        Some(create_doc(
            Some("crm"),
            json!({"url": rx.url("/crm"), "secret": SECRET, "retrySchedule": ["200ms"]}),
        )),
    )
    .await;
    assert_eq!(r.status, 201, "{}", body_text(&r));
    assert_eq!(r.json()["data"]["attributes"]["secret"], SECRET);
    assert_eq!(
        r.json()["data"]["attributes"]["subscriptions"],
        json!(["*"])
    );

    // Duplicates, including a config endpoint's id: 409.
    for id in ["crm", "fixed"] {
        let r = api(
            &c,
            &router,
            "POST",
            base,
            TOKEN,
            Some(create_doc(Some(id), json!({"url": rx.url("/x")}))),
        )
        .await;
        assert_eq!(r.status, 409, "{id}: {}", body_text(&r));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_validation_errors_point_at_the_attribute() {
    let rx = Receiver::ok().await;
    let router = crud_router(&rx);
    let c = Client::new();
    let base = ENDPOINTS;

    // Validation errors point at the attribute.
    let bad: Vec<(&str, Value, u16, &str)> = vec![
        ("no url", json!({}), 422, "/data/attributes/url"),
        (
            "not a url",
            json!({"url": "ftp://x.example/h"}),
            422,
            "/data/attributes/url",
        ),
        (
            "bad subscription",
            json!({"url": rx.url("/x"), "subscriptions": ["license.created", "lic*"]}),
            422,
            "/data/attributes/subscriptions/1",
        ),
        (
            "empty subscriptions",
            json!({"url": rx.url("/x"), "subscriptions": []}),
            422,
            "/data/attributes/subscriptions",
        ),
        (
            "bad secret",
            json!({"url": rx.url("/x"), "secret": "hunter2"}),
            422,
            "/data/attributes/secret",
        ),
        (
            "bad schedule",
            json!({"url": rx.url("/x"), "retrySchedule": ["soon"]}),
            422,
            "/data/attributes/retrySchedule/0",
        ),
        (
            "bad scheme",
            json!({"url": rx.url("/x"), "signatures": ["rot13"]}),
            422,
            "/data/attributes/signatures/0",
        ),
        (
            "unknown attribute",
            json!({"url": rx.url("/x"), "colour": "red"}),
            400,
            "/data/attributes",
        ),
        (
            "plugin rejects its config",
            json!({"url": rx.url("/x"), "plugins": [{"name": "event-filter", "config": {"conditions": [{"pointer": "nope", "equals": 1}]}}]}),
            422,
            "/data/attributes/plugins",
        ),
    ];
    for (name, attrs, status, pointer) in bad {
        let r = api(
            &c,
            &router,
            "POST",
            base,
            TOKEN,
            Some(create_doc(None, attrs)),
        )
        .await;
        assert_eq!(r.status, status, "{name}: {}", body_text(&r));
        let e = &r.json()["errors"][0];
        assert_eq!(e["source"]["pointer"], pointer, "{name}: {e}");
        assert!(e["detail"].as_str().unwrap().len() > 10, "{name}: {e}");
        if name == "plugin rejects its config" {
            assert!(
                e["detail"].as_str().unwrap().contains("JSON pointer"),
                "the plugin's own message: {e}"
            );
        }
    }
    let r = c
        .request(
            "POST",
            &router.url(base),
            &[
                ("authorization", &format!("Bearer {TOKEN}")),
                ("content-type", "application/json"),
            ],
            "{\"data\":",
        )
        .await;
    assert_eq!(r.status, 400);
    let r = c
        .request(
            "POST",
            &router.url(base),
            &[
                ("authorization", &format!("Bearer {TOKEN}")),
                ("content-type", "text/plain"),
            ],
            "{}",
        )
        .await;
    assert_eq!(r.status, 415);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_list_show_page_patch_and_config_endpoints_read_only() {
    let rx = Receiver::ok().await;
    let router = crud_router(&rx);
    let c = Client::new();
    let base = ENDPOINTS;
    let gen_id = create_crm_and_generated(&c, &router, &rx).await;

    // List and show never reveal secrets; config endpoints are listed read-only.
    let r = api(&c, &router, "GET", base, TOKEN, None).await;
    assert_eq!(r.status, 200);
    let list = r.json();
    let mut got = ids(&list);
    got.sort();
    let mut want = vec!["crm".to_string(), "fixed".to_string(), gen_id.clone()];
    want.sort();
    assert_eq!(got, want);
    assert!(!body_text(&r).contains("whsec_"), "{}", body_text(&r));
    let fixed = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"] == "fixed")
        .unwrap();
    assert_eq!(fixed["attributes"]["readOnly"], true);
    let r = api(&c, &router, "GET", &format!("{base}/crm"), TOKEN, None).await;
    assert_eq!(r.status, 200);
    assert!(!body_text(&r).contains("whsec_"));
    assert_eq!(
        r.json()["data"]["attributes"]["health"]["consecutiveFailures"],
        0
    );
    // Pagination of the endpoint list.
    let r = api(
        &c,
        &router,
        "GET",
        &format!("{base}?page[size]=2"),
        TOKEN,
        None,
    )
    .await;
    let page1 = r.json();
    assert_eq!(ids(&page1).len(), 2);
    let next = page1["links"]["next"].as_str().unwrap().to_string();
    let page2 = api(&c, &router, "GET", &next, TOKEN, None).await.json();
    assert_eq!(ids(&page2).len(), 1);
    assert!(page2["links"]["next"].is_null());

    // PATCH changes what it names; a secret cannot be PATCHed.
    let r = api(
        &c,
        &router,
        "PATCH",
        &format!("{base}/crm"),
        TOKEN,
        Some(create_doc(
            None,
            json!({"subscriptions": ["user.created"], "timeout": "5s"}),
        )),
    )
    .await;
    assert_eq!(r.status, 200, "{}", body_text(&r));
    assert_eq!(
        r.json()["data"]["attributes"]["subscriptions"],
        json!(["user.created"])
    );
    assert_eq!(r.json()["data"]["attributes"]["timeout"], "5s");
    let r = api(
        &c,
        &router,
        "PATCH",
        &format!("{base}/crm"),
        TOKEN,
        Some(create_doc(None, json!({"secret": SECRET}))),
    )
    .await;
    assert_eq!(r.status, 422);
    let r = api(
        &c,
        &router,
        "PATCH",
        &format!("{base}/crm"),
        TOKEN,
        Some(create_doc(None, json!({"url": "gopher://x"}))),
    )
    .await;
    assert_eq!(r.status, 422);

    // Config endpoints are read-only (409 with an explanation).
    for (m, body) in [
        (
            "PATCH",
            Some(create_doc(None, json!({"url": rx.url("/y")}))),
        ),
        ("DELETE", None),
    ] {
        let r = api(&c, &router, m, &format!("{base}/fixed"), TOKEN, body).await;
        assert_eq!(r.status, 409, "{m}");
        assert!(
            r.json()["errors"][0]["detail"]
                .as_str()
                .unwrap()
                .contains("router.toml")
        );
    }
    let r = api(
        &c,
        &router,
        "POST",
        &format!("{base}/fixed/actions/rotate-secret"),
        TOKEN,
        None,
    )
    .await;
    assert_eq!(r.status, 409);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_endpoint_delivers_signed_deletes_and_persists_across_restart() {
    let rx = Receiver::ok().await;
    let mut router = crud_router(&rx);
    let c = Client::new();
    let base = ENDPOINTS;
    let gen_id = create_crm_and_generated(&c, &router, &rx).await;
    let r = api(
        &c,
        &router,
        "PATCH",
        &format!("{base}/crm"),
        TOKEN,
        Some(create_doc(None, json!({"subscriptions": ["user.created"]}))),
    )
    .await;
    assert_eq!(r.status, 200, "{}", body_text(&r));

    // The API endpoint delivers, signed with its secret.
    assert_eq!(
        c.post_event(
            &router,
            "acct",
            &event("user.created", json!({"data": {"id": "u1"}}))
        )
        .await
        .status,
        202
    );
    let got = rx
        .wait_for(Duration::from_secs(10), "delivery to crm", |g| {
            g.iter().any(|r| r.path == "/crm")
        })
        .await;
    let d = got.iter().find(|r| r.path == "/crm").unwrap();
    let secret = switchyard::signing::Secret::parse(SECRET).unwrap();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    switchyard::signing::verify_standard(
        &secret,
        d.header("webhook-id"),
        d.header("webhook-timestamp"),
        d.header("webhook-signature"),
        &d.body,
        now,
        300,
    )
    .unwrap();

    // Delete: 204, then 404.
    let r = api(
        &c,
        &router,
        "DELETE",
        &format!("{base}/{gen_id}"),
        TOKEN,
        None,
    )
    .await;
    assert_eq!(r.status, 204);
    assert_eq!(
        api(&c, &router, "GET", &format!("{base}/{gen_id}"), TOKEN, None)
            .await
            .status,
        404
    );

    // Persisted across a restart.
    router.stop();
    router.spawn();
    let r = api(&c, &router, "GET", base, TOKEN, None).await;
    let mut got = ids(&r.json());
    got.sort();
    assert_eq!(got, vec!["crm".to_string(), "fixed".to_string()]);
    let crm = api(&c, &router, "GET", &format!("{base}/crm"), TOKEN, None)
        .await
        .json();
    assert_eq!(
        crm["data"]["attributes"]["subscriptions"],
        json!(["user.created"])
    );
    assert_eq!(crm["data"]["attributes"]["retrySchedule"], json!(["200ms"]));
    let before = rx.received().iter().filter(|r| r.path == "/crm").count();
    assert_eq!(
        c.post_event(
            &router,
            "acct",
            &event("user.created", json!({"data": {"id": "u2"}}))
        )
        .await
        .status,
        202
    );
    rx.wait_for(
        Duration::from_secs(10),
        "delivery to crm after restart",
        |g| g.iter().filter(|r| r.path == "/crm").count() > before,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn url_policy_refuses_http_and_private_addresses_by_default() {
    let c = Client::new();
    let base = ENDPOINTS;
    // Under the default policy, http:// and private addresses are refused
    // with the same explanations as in router.toml.
    let strict = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = \"data\"\n[plugins]\ndir = \"plugins\"\n[[accounts]]\nid = \"acct\"\ntoken = \"{TOKEN}\"\n"
    );
    let strict = Router::start(&strict, &[]);
    for (url, why) in [
        ("http://example.com/h", "allow_http"),
        ("https://127.0.0.1/h", "allow_private_networks"),
        ("https://10.1.2.3/h", "allow_private_networks"),
    ] {
        let r = api(
            &c,
            &strict,
            "POST",
            base,
            TOKEN,
            Some(create_doc(None, json!({"url": url}))),
        )
        .await;
        assert_eq!(r.status, 422, "{url}");
        assert!(
            r.json()["errors"][0]["detail"]
                .as_str()
                .unwrap()
                .contains(why),
            "{url}: {}",
            body_text(&r)
        );
    }
    let r = api(
        &c,
        &strict,
        "POST",
        base,
        TOKEN,
        Some(create_doc(
            None,
            json!({"url": "https://hooks.example.com/h"}),
        )),
    )
    .await;
    assert_eq!(r.status, 201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn account_isolation_on_every_route() {
    let rx = Receiver::ok().await;
    let router = Router::start(&(config("") + &endpoint("a-ep", &rx.url("/a"), "")), &[]);
    let c = Client::new();
    // Account B ("other") gets an endpoint and an event.
    let r = api(
        &c,
        &router,
        "POST",
        "/v1/accounts/other/webhook-endpoints",
        OTHER,
        Some(create_doc(Some("b-ep"), json!({"url": rx.url("/b")}))),
    )
    .await;
    assert_eq!(r.status, 201, "{}", body_text(&r));
    let r = c
        .request(
            "POST",
            &router.events_url("other"),
            &[
                ("authorization", &format!("Bearer {OTHER}")),
                ("content-type", "application/json"),
            ],
            event("user.created", json!({"data": {"id": "b-user"}})).to_string(),
        )
        .await;
    assert_eq!(r.status, 202);
    let b_event = r.json()["data"]["id"].as_str().unwrap().to_string();
    let a_event = c
        .post_event(
            &router,
            "acct",
            &event("user.created", json!({"data": {"id": "a-user"}})),
        )
        .await
        .json()["data"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    rx.wait_for(Duration::from_secs(10), "both deliveries", |g| g.len() >= 2)
        .await;

    // With A's token, every route of B is 404 — even wrong methods and unknown paths.
    let b = "/v1/accounts/other";
    let ep_doc = Some(create_doc(None, json!({"url": rx.url("/evil")})));
    let since = rfc3339_ago(3600);
    let routes: Vec<(&str, String, Option<Value>)> = vec![
        ("GET", format!("{b}/webhook-endpoints"), None),
        ("POST", format!("{b}/webhook-endpoints"), ep_doc.clone()),
        ("PUT", format!("{b}/webhook-endpoints"), None),
        ("GET", format!("{b}/webhook-endpoints/b-ep"), None),
        (
            "PATCH",
            format!("{b}/webhook-endpoints/b-ep"),
            Some(create_doc(None, json!({"enabled": false}))),
        ),
        ("DELETE", format!("{b}/webhook-endpoints/b-ep"), None),
        (
            "POST",
            format!("{b}/webhook-endpoints/b-ep/actions/rotate-secret"),
            None,
        ),
        (
            "POST",
            format!("{b}/webhook-endpoints/b-ep/actions/ping"),
            None,
        ),
        (
            "POST",
            format!("{b}/webhook-endpoints/b-ep/actions/recover?since={since}"),
            None,
        ),
        ("GET", format!("{b}/webhook-events"), None),
        ("GET", format!("{b}/webhook-events/{b_event}"), None),
        (
            "POST",
            format!("{b}/webhook-events/{b_event}/actions/retry"),
            None,
        ),
        (
            "POST",
            format!("{b}/events"),
            Some(event("user.created", json!({"data": {}}))),
        ),
        ("GET", format!("{b}/no-such-thing"), None),
        // B's resources through A's own account path.
        (
            "GET",
            format!("/v1/accounts/acct/webhook-events/{b_event}"),
            None,
        ),
        (
            "POST",
            format!("/v1/accounts/acct/webhook-events/{b_event}/actions/retry"),
            None,
        ),
        (
            "GET",
            "/v1/accounts/acct/webhook-endpoints/b-ep".to_string(),
            None,
        ),
        (
            "POST",
            "/v1/accounts/acct/webhook-endpoints/b-ep/actions/ping".to_string(),
            None,
        ),
    ];
    let before = rx.count();
    for (m, path, body) in &routes {
        let r = api(&c, &router, m, path, TOKEN, body.clone()).await;
        assert_eq!(r.status, 404, "{m} {path}: {}", body_text(&r));
        // The answer is the one for a resource that does not exist: it
        // echoes only what the caller sent, never B's data.
        assert!(
            !body_text(&r).contains("b-user") && !body_text(&r).contains(&rx.url("/b")),
            "{m} {path}: {}",
            body_text(&r)
        );
    }
    // Nothing happened to B.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rx.count(), before, "no ping or retry reached B's receiver");
    let r = api(
        &c,
        &router,
        "GET",
        "/v1/accounts/other/webhook-endpoints/b-ep",
        OTHER,
        None,
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["data"]["attributes"]["enabled"], true);

    // Nothing of B in A's lists.
    let events = api(
        &c,
        &router,
        "GET",
        "/v1/accounts/acct/webhook-events",
        TOKEN,
        None,
    )
    .await;
    assert_eq!(ids(&events.json()), vec![a_event.clone()]);
    let eps = api(
        &c,
        &router,
        "GET",
        "/v1/accounts/acct/webhook-endpoints",
        TOKEN,
        None,
    )
    .await;
    assert_eq!(ids(&eps.json()), vec!["a-ep".to_string()]);
    // And the reverse.
    let events = api(
        &c,
        &router,
        "GET",
        "/v1/accounts/other/webhook-events",
        OTHER,
        None,
    )
    .await;
    assert_eq!(ids(&events.json()), vec![b_event.clone()]);

    // The admin token sees both; unknown accounts are 404 for everyone.
    let r = api(
        &c,
        &router,
        "GET",
        &format!("{b}/webhook-events/{b_event}"),
        ADMIN,
        None,
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        api(
            &c,
            &router,
            "GET",
            "/v1/accounts/acct/webhook-endpoints",
            ADMIN,
            None
        )
        .await
        .status,
        200
    );
    assert_eq!(
        api(
            &c,
            &router,
            "GET",
            "/v1/accounts/nobody/webhook-events",
            ADMIN,
            None
        )
        .await
        .status,
        404
    );
    // No token: 401; a token of nobody: 401.
    assert_eq!(
        c.request(
            "GET",
            &router.url("/v1/accounts/acct/webhook-events"),
            &[],
            ""
        )
        .await
        .status,
        401
    );
    assert_eq!(
        api(
            &c,
            &router,
            "GET",
            "/v1/accounts/acct/webhook-events",
            "nope-nope-nope",
            None
        )
        .await
        .status,
        401
    );

    // Plugins: an account token gets the read-only view (no counters).
    let r = api(&c, &router, "GET", "/v1/plugins", TOKEN, None).await;
    assert_eq!(r.status, 200);
    assert!(r.json().get("meta").is_none());
    let r = api(&c, &router, "GET", "/v1/plugins", ADMIN, None).await;
    assert_eq!(r.status, 200);
    assert!(r.json()["data"].is_array());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_rotation_keeps_the_old_secret_during_grace_only() {
    let rx = Receiver::ok().await;
    let router = Router::start(&config(""), &[]);
    let c = Client::new();
    let base = "/v1/accounts/acct/webhook-endpoints";
    let r = api(
        &c,
        &router,
        "POST",
        base,
        TOKEN,
        Some(create_doc(
            Some("rot"),
            json!({"url": rx.url("/r"), "secret": SECRET}),
        )),
    )
    .await;
    assert_eq!(r.status, 201);
    let r = api(
        &c,
        &router,
        "POST",
        &format!("{base}/rot/actions/rotate-secret?grace=2s"),
        TOKEN,
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", body_text(&r));
    let rotated_at = Instant::now();
    let new_secret = r.json()["data"]["attributes"]["secret"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(new_secret.starts_with("whsec_") && new_secret != SECRET);
    assert_eq!(
        r.json()["data"]["attributes"]["secrets"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let shown = api(&c, &router, "GET", &format!("{base}/rot"), TOKEN, None).await;
    assert!(!body_text(&shown).contains("whsec_"));

    let verify = |d: &Received, s: &str| {
        let secret = switchyard::signing::Secret::parse(s).unwrap();
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        switchyard::signing::verify_standard(
            &secret,
            d.header("webhook-id"),
            d.header("webhook-timestamp"),
            d.header("webhook-signature"),
            &d.body,
            now,
            300,
        )
    };
    // During the grace period: both secrets verify (ours and the reference libraries).
    assert_eq!(
        c.post_event(
            &router,
            "acct",
            &event("user.created", json!({"data": {"id": "1"}}))
        )
        .await
        .status,
        202
    );
    let got = rx
        .wait_for(Duration::from_secs(10), "first delivery", |g| !g.is_empty())
        .await;
    assert!(
        rotated_at.elapsed() < Duration::from_secs(2),
        "the delivery came within the grace period"
    );
    verify(&got[0], SECRET).expect("old secret during grace");
    verify(&got[0], &new_secret).expect("new secret during grace");
    let d = &got[0];
    python_check(
        "verify_signatures.py",
        &json!({"deliveries": [{"body": String::from_utf8_lossy(&d.body), "headers": d.headers, "secrets": [SECRET, new_secret], "keygen_public_key": null, "path": d.path}]}),
    );

    // After it: only the new one.
    tokio::time::sleep(Duration::from_millis(2300).saturating_sub(rotated_at.elapsed())).await;
    assert_eq!(
        c.post_event(
            &router,
            "acct",
            &event("user.created", json!({"data": {"id": "2"}}))
        )
        .await
        .status,
        202
    );
    let got = rx
        .wait_for(Duration::from_secs(10), "second delivery", |g| g.len() >= 2)
        .await;
    verify(&got[1], &new_secret).expect("new secret after grace");
    assert!(
        verify(&got[1], SECRET).is_err(),
        "the old secret no longer signs"
    );
    let shown = api(&c, &router, "GET", &format!("{base}/rot"), TOKEN, None)
        .await
        .json();
    assert_eq!(
        shown["data"]["attributes"]["secrets"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_and_recover_redeliver_with_the_same_webhook_id() {
    let healthy = Arc::new(AtomicBool::new(false));
    let h = healthy.clone();
    let rx = Receiver::scripted(move |_, req| {
        if req.path == "/flaky" && !h.load(Ordering::SeqCst) {
            Reply {
                body: "down for maintenance".into(),
                ..Reply::status(500)
            }
        } else {
            Reply {
                body: "thanks".into(),
                ..Reply::status(200)
            }
        }
    })
    .await;
    let cfg = config("")
        + &endpoint("ok", &rx.url("/ok"), "")
        + &endpoint("flaky", &rx.url("/flaky"), "retry_schedule = [\"100ms\"]");
    let router = Router::start(&cfg, &[]);
    let c = Client::new();
    let r = c
        .post_event(
            &router,
            "acct",
            &event("license.created", license_doc("l1", "ACTIVE")),
        )
        .await;
    let ev = r.json()["data"]["id"].as_str().unwrap().to_string();
    let ev_path = format!("/v1/accounts/acct/webhook-events/{ev}");
    // flaky: 2 attempts, then failed.
    wait_until(Duration::from_secs(10), "flaky to fail", || async {
        let v = api(&c, &router, "GET", &ev_path, TOKEN, None).await.json();
        v["data"]["attributes"]["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["endpoint"] == "flaky" && d["status"] == "failed")
    })
    .await;
    let v = api(&c, &router, "GET", &ev_path, TOKEN, None).await.json();
    let a = &v["data"]["attributes"];
    assert_eq!(a["event"], "license.created");
    assert_eq!(a["status"], "failed");
    assert_eq!(a["payload"], license_doc("l1", "ACTIVE"));
    let ds = a["deliveries"].as_array().unwrap();
    let okd = ds.iter().find(|d| d["endpoint"] == "ok").unwrap();
    let fl = ds.iter().find(|d| d["endpoint"] == "flaky").unwrap();
    assert_eq!(okd["status"], "delivered");
    assert_eq!(okd["attemptCount"], 1);
    assert_eq!(okd["attempts"][0]["status"], 200);
    assert_eq!(okd["attempts"][0]["responseBody"], "thanks");
    assert_eq!(fl["attemptCount"], 2);
    assert_eq!(fl["lastStatus"], 500);
    assert_eq!(fl["attempts"].as_array().unwrap().len(), 2);
    assert_eq!(fl["attempts"][1]["responseBody"], "down for maintenance");
    assert!(fl["attempts"][0]["latencyMs"].as_f64().unwrap() >= 0.0);
    assert!(fl["attempts"][0]["at"].as_str().unwrap().ends_with('Z'));
    let ok_id = rx
        .received()
        .iter()
        .find(|r| r.path == "/ok")
        .unwrap()
        .header("webhook-id")
        .to_string();
    let flaky_id = rx
        .received()
        .iter()
        .find(|r| r.path == "/flaky")
        .unwrap()
        .header("webhook-id")
        .to_string();
    assert_eq!(okd["webhookId"], ok_id.as_str());

    // Retry to one endpoint: the same webhook-id again.
    let r = api(
        &c,
        &router,
        "POST",
        &format!("{ev_path}/actions/retry?endpoint=ok"),
        TOKEN,
        None,
    )
    .await;
    assert_eq!(r.status, 202, "{}", body_text(&r));
    assert_eq!(r.json()["meta"]["requeued"], json!(["ok"]));
    let got = rx
        .wait_for(Duration::from_secs(10), "the retried delivery", |g| {
            g.iter().filter(|r| r.path == "/ok").count() >= 2
        })
        .await;
    let oks: Vec<_> = got.iter().filter(|r| r.path == "/ok").collect();
    assert_eq!(oks[1].header("webhook-id"), ok_id);
    assert_eq!(
        oks[1].json()["data"]["meta"]["idempotencyToken"],
        ok_id.as_str()
    );
    assert_eq!(
        api(
            &c,
            &router,
            "POST",
            &format!("{ev_path}/actions/retry?endpoint=nope"),
            TOKEN,
            None
        )
        .await
        .status,
        404
    );

    // Recover: failed deliveries of flaky since a time are re-queued.
    healthy.store(true, Ordering::SeqCst);
    let flaky_before = rx.received().iter().filter(|r| r.path == "/flaky").count();
    let since = rfc3339_ago(60);
    let r = api(
        &c,
        &router,
        "POST",
        &format!("/v1/accounts/acct/webhook-endpoints/flaky/actions/recover?since={since}"),
        TOKEN,
        None,
    )
    .await;
    assert_eq!(r.status, 202, "{}", body_text(&r));
    assert_eq!(r.json()["meta"]["requeued"], 1);
    let got = rx
        .wait_for(Duration::from_secs(10), "the recovered delivery", |g| {
            g.iter().filter(|r| r.path == "/flaky").count() > flaky_before
        })
        .await;
    assert_eq!(
        got.iter()
            .filter(|r| r.path == "/flaky")
            .last()
            .unwrap()
            .header("webhook-id"),
        flaky_id
    );
    wait_until(Duration::from_secs(10), "the event to be delivered everywhere", || async {
        api(&c, &router, "GET", &ev_path, TOKEN, None).await.json()["data"]["attributes"]["status"] == "delivered"
    })
    .await;
    // Recover since a later time finds nothing; bad input is a 400.
    let later = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let r = api(
        &c,
        &router,
        "POST",
        &format!("/v1/accounts/acct/webhook-endpoints/flaky/actions/recover?since={later}"),
        TOKEN,
        None,
    )
    .await;
    assert_eq!(r.json()["meta"]["requeued"], 0);
    let r = api(
        &c,
        &router,
        "POST",
        "/v1/accounts/acct/webhook-endpoints/flaky/actions/recover?since=yesterday",
        TOKEN,
        None,
    )
    .await;
    assert_eq!(r.status, 400);

    // Retry to all endpoints.
    let n = rx.count();
    let r = api(
        &c,
        &router,
        "POST",
        &format!("{ev_path}/actions/retry"),
        TOKEN,
        None,
    )
    .await;
    assert_eq!(r.status, 202);
    let got = rx
        .wait_for(Duration::from_secs(10), "retry to both", |g| {
            g.len() >= n + 2
        })
        .await;
    let ids: std::collections::HashSet<_> = got[n..]
        .iter()
        .map(|r| r.header("webhook-id").to_string())
        .collect();
    assert_eq!(ids, [ok_id, flaky_id].into_iter().collect());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_list_paginates_newest_first_and_filters() {
    let rx = Receiver::ok().await;
    let cfg = config("")
        + &endpoint("all", &rx.url("/all"), "")
        + &endpoint("lic", &rx.url("/lic"), "subscriptions = [\"license.*\"]");
    let router = Router::start(&cfg, &[]);
    let c = Client::new();
    let mut posted = Vec::new();
    for i in 0..5 {
        let kind = if i % 2 == 0 {
            "license.created"
        } else {
            "user.created"
        };
        let r = c
            .post_event(
                &router,
                "acct",
                &event(kind, json!({"data": {"id": format!("x{i}")}})),
            )
            .await;
        posted.push(r.json()["data"]["id"].as_str().unwrap().to_string());
    }
    rx.wait_for(Duration::from_secs(10), "8 deliveries", |g| g.len() >= 8)
        .await;
    let base = "/v1/accounts/acct/webhook-events";
    let mut seen = Vec::new();
    let mut next = Some(format!("{base}?page[size]=2"));
    let mut pages = 0;
    while let Some(url) = next {
        let v = api(&c, &router, "GET", &url, TOKEN, None).await.json();
        assert!(ids(&v).len() <= 2);
        seen.extend(ids(&v));
        next = v["links"]["next"].as_str().map(str::to_string);
        pages += 1;
        assert!(pages < 10);
    }
    let mut newest_first = posted.clone();
    newest_first.reverse();
    assert_eq!(seen, newest_first);

    let get = |q: String| {
        let c = &c;
        let router = &router;
        async move {
            ids(&api(c, router, "GET", &format!("{base}?{q}"), TOKEN, None)
                .await
                .json())
        }
    };
    let lic: Vec<_> = newest_first
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 2 == 0)
        .map(|(_, s)| s.clone())
        .collect();
    assert_eq!(get("filter[event]=license.*".into()).await, lic);
    assert_eq!(get("filter%5Bevent%5D=license.created".into()).await, lic);
    assert_eq!(get("filter[endpoint]=lic".into()).await, lic);
    assert_eq!(get("filter[status]=delivered".into()).await.len(), 5);
    assert!(get("filter[status]=failed".into()).await.is_empty());
    assert_eq!(
        get(format!("filter[since]={}", rfc3339_ago(120)))
            .await
            .len(),
        5
    );
    assert!(
        get(format!("filter[until]={}", rfc3339_ago(120)))
            .await
            .is_empty()
    );
    assert!(
        get(format!("filter[since]={}", rfc3339_ago(-120)))
            .await
            .is_empty()
    );
    // Filters carry over to links.next.
    let v = api(
        &c,
        &router,
        "GET",
        &format!("{base}?page[size]=1&filter[event]=license.*"),
        TOKEN,
        None,
    )
    .await
    .json();
    let next = v["links"]["next"].as_str().unwrap().to_string();
    assert!(next.contains("filter[event]=license."), "{next}");
    let v2 = api(&c, &router, "GET", &next, TOKEN, None).await.json();
    assert_eq!(ids(&v2), vec![lic[1].clone()]);
    for bad in [
        "filter[status]=bogus",
        "page[size]=0",
        "page[size]=1000",
        "page[before]=xyz",
        "filter[since]=monday",
    ] {
        let r = api(&c, &router, "GET", &format!("{base}?{bad}"), TOKEN, None).await;
        assert_eq!(r.status, 400, "{bad}");
    }
    assert_eq!(
        api(
            &c,
            &router,
            "GET",
            &format!("{base}/not-a-uuid"),
            TOKEN,
            None
        )
        .await
        .status,
        404
    );
    assert_eq!(
        api(
            &c,
            &router,
            "DELETE",
            &format!("{base}/{}", posted[0]),
            TOKEN,
            None
        )
        .await
        .status,
        405
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_returns_the_receivers_real_status() {
    let rx = Receiver::scripted(|_, req| {
        if req.path == "/tea" {
            Reply {
                body: "I'm a teapot".into(),
                ..Reply::status(418)
            }
        } else {
            Reply::status(204)
        }
    })
    .await;
    let cfg = config("")
        + &endpoint("tea", &rx.url("/tea"), "")
        + &endpoint("fine", &rx.url("/fine"), "");
    let router = Router::start(&cfg, &[]);
    let c = Client::new();
    let r = api(
        &c,
        &router,
        "POST",
        "/v1/accounts/acct/webhook-endpoints/tea/actions/ping",
        TOKEN,
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", body_text(&r));
    let a = &r.json()["data"]["attributes"];
    assert_eq!(a["responseStatus"], 418, "{a}");
    assert_eq!(a["ok"], false);
    assert_eq!(a["responseBody"], "I'm a teapot");
    let r = api(
        &c,
        &router,
        "POST",
        "/v1/accounts/acct/webhook-endpoints/fine/actions/ping",
        TOKEN,
        None,
    )
    .await;
    let a = r.json()["data"]["attributes"].clone();
    assert_eq!(a["responseStatus"], 204, "{a}");
    assert_eq!(a["ok"], true);
    assert_eq!(a["status"], "delivered");
    // The ping went through the full path: envelope, signature, only to that endpoint.
    let got = rx.received();
    let fine: Vec<_> = got.iter().filter(|r| r.path == "/fine").collect();
    assert_eq!(fine.len(), 1);
    assert_eq!(
        fine[0].json()["data"]["attributes"]["event"],
        "webhook.ping"
    );
    assert_eq!(
        fine[0].header("webhook-id"),
        a["webhookId"].as_str().unwrap()
    );
    assert!(fine[0].header("webhook-signature").starts_with("v1,"));
    // The ping is an event like any other.
    let v = api(
        &c,
        &router,
        "GET",
        "/v1/accounts/acct/webhook-events?filter[event]=webhook.ping",
        TOKEN,
        None,
    )
    .await
    .json();
    assert_eq!(ids(&v).len(), 2);
    assert_eq!(
        api(
            &c,
            &router,
            "POST",
            "/v1/accounts/acct/webhook-endpoints/none/actions/ping",
            TOKEN,
            None
        )
        .await
        .status,
        404
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sustained_failure_disables_and_patch_re_enables() {
    let healthy = Arc::new(AtomicBool::new(false));
    let h = healthy.clone();
    let rx = Receiver::scripted(move |_, _| {
        Reply::status(if h.load(Ordering::SeqCst) { 200 } else { 503 })
    })
    .await;
    let ok = Receiver::ok().await;
    let cfg = config("").replace(
        "allow_private_networks = true",
        "allow_private_networks = true\ndisable_after = \"1s\"",
    ) + &endpoint(
        "dying",
        &rx.url("/d"),
        "retry_schedule = [\"200ms\", \"200ms\", \"200ms\", \"200ms\", \"200ms\", \"200ms\", \"200ms\", \"200ms\", \"200ms\", \"200ms\", \"200ms\", \"200ms\"]",
    ) + &endpoint("fine", &ok.url("/f"), "");
    let router = Router::start(&cfg, &[]);
    let c = Client::new();
    let ep_path = "/v1/accounts/acct/webhook-endpoints/dying";
    assert_eq!(
        c.post_event(
            &router,
            "acct",
            &event("user.created", json!({"data": {"id": "1"}}))
        )
        .await
        .status,
        202
    );
    wait_until(Duration::from_secs(10), "the endpoint to be disabled", || async {
        api(&c, &router, "GET", ep_path, TOKEN, None).await.json()["data"]["attributes"]["status"] == "auto-disabled"
    })
    .await;
    let v = api(&c, &router, "GET", ep_path, TOKEN, None).await.json();
    let health = &v["data"]["attributes"]["health"];
    assert!(
        health["disabledReason"]
            .as_str()
            .unwrap()
            .contains("every attempt failed"),
        "{health}"
    );
    assert!(health["consecutiveFailures"].as_u64().unwrap() >= 2);
    assert_eq!(health["lastError"], "HTTP 503");
    assert!(health["disabledAt"].is_string() && health["failingSince"].is_string());
    let attempts_when_disabled = rx.count();
    // Disabled: new events skip it; no more attempts.
    let r = c
        .post_event(
            &router,
            "acct",
            &event("user.created", json!({"data": {"id": "2"}})),
        )
        .await;
    assert_eq!(r.json()["data"]["attributes"]["endpoints"], json!(["fine"]));
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(rx.count(), attempts_when_disabled);
    // Recover is refused while disabled.
    let since = rfc3339_ago(60);
    let r = api(
        &c,
        &router,
        "POST",
        &format!("{ep_path}/actions/recover?since={since}"),
        TOKEN,
        None,
    )
    .await;
    assert_eq!(r.status, 409);

    // Re-enable by PATCH (allowed on a router.toml endpoint), then recover.
    healthy.store(true, Ordering::SeqCst);
    let r = api(
        &c,
        &router,
        "PATCH",
        ep_path,
        TOKEN,
        Some(create_doc(None, json!({"enabled": true}))),
    )
    .await;
    assert_eq!(r.status, 200, "{}", body_text(&r));
    let a = &r.json()["data"]["attributes"];
    assert_eq!(a["status"], "enabled");
    assert!(a["health"]["disabledReason"].is_null());
    let r = api(
        &c,
        &router,
        "POST",
        &format!("{ep_path}/actions/recover?since={since}"),
        TOKEN,
        None,
    )
    .await;
    assert_eq!(r.status, 202, "{}", body_text(&r));
    // The failed event, and event 2, accepted while it was disabled
    // (issue 16, finding 5: recover delivers what it missed).
    assert_eq!(r.json()["meta"]["requeued"], 2);
    rx.wait_for(Duration::from_secs(10), "delivery after recovery", |g| {
        g.len() > attempts_when_disabled
    })
    .await;
    let r = c
        .post_event(
            &router,
            "acct",
            &event("user.created", json!({"data": {"id": "3"}})),
        )
        .await;
    assert_eq!(
        r.json()["data"]["attributes"]["endpoints"],
        json!(["dying", "fine"])
    );
    wait_until(
        Duration::from_secs(10),
        "a success to show in health",
        || async {
            let v = api(&c, &router, "GET", ep_path, TOKEN, None).await.json();
            v["data"]["attributes"]["health"]["lastSuccess"].is_string()
        },
    )
    .await;
}

fn parse_metrics(text: &str) -> Value {
    serde_json::from_str(&python_check("parse_metrics.py", &json!({"text": text}))).unwrap()
}

fn sample(m: &Value, name: &str, labels: &[(&str, &str)]) -> f64 {
    m["samples"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s[0] == name && labels.iter().all(|(k, v)| s[1][*k] == *v))
        .map(|s| s[2].as_f64().unwrap())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_as_prometheus_text_and_move_with_traffic() {
    let rx = Receiver::ok().await;
    let router = Router::start(
        &(config("")
            + &endpoint(
                "m",
                &rx.url("/m"),
                "plugins = [ { name = \"event-filter\" } ]",
            )),
        &[("event-filter", dist_plugin("event-filter"))],
    );
    let c = Client::new();
    let scrape = || async { body_text(&c.request("GET", &router.url("/metrics"), &[], "").await) };
    let before = parse_metrics(&scrape().await);
    for fam in [
        "switchyard_events_ingested",
        "switchyard_deliveries",
        "switchyard_attempt_duration_seconds",
        "switchyard_due_deliveries",
        "switchyard_oldest_due_age_seconds",
        "switchyard_plugin_call_duration_seconds",
        "switchyard_plugin_errors",
        "switchyard_plugin_reloads",
        "switchyard_plugin_load_failures",
        "switchyard_store_bytes",
        "switchyard_store_flush_duration_seconds",
    ] {
        assert!(
            before["families"].get(fam).is_some(),
            "{fam} missing: {}",
            before["families"]
        );
    }
    assert_eq!(
        before["families"]["switchyard_attempt_duration_seconds"],
        "histogram"
    );
    assert_eq!(before["families"]["switchyard_due_deliveries"], "gauge");
    assert!(sample(&before, "switchyard_store_bytes", &[]) > 0.0);

    for i in 0..3 {
        let r = c
            .post_event(
                &router,
                "acct",
                &event("license.created", license_doc(&format!("l{i}"), "ACTIVE")),
            )
            .await;
        assert_eq!(r.status, 202);
    }
    rx.wait_for(Duration::from_secs(10), "3 deliveries", |g| g.len() >= 3)
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = parse_metrics(&scrape().await);
    let delta = |name: &str, labels: &[(&str, &str)]| {
        sample(&after, name, labels) - sample(&before, name, labels)
    };
    assert_eq!(
        delta(
            "switchyard_events_ingested_total",
            &[("account", "acct"), ("event", "license.created")]
        ),
        3.0
    );
    assert_eq!(
        delta(
            "switchyard_deliveries_total",
            &[("endpoint", "m"), ("outcome", "delivered")]
        ),
        3.0
    );
    assert!(delta("switchyard_attempt_duration_seconds_count", &[]) >= 3.0);
    assert!(delta("switchyard_plugin_call_duration_seconds_count", &[]) >= 3.0);
    // Each 202 waited for a group flush (one flush may serve several).
    let flushes = delta("switchyard_store_flush_duration_seconds_count", &[]);
    assert!(
        (1.0..=3.0).contains(&flushes),
        "{flushes} flushes for 3 events"
    );
    assert_eq!(
        sample(&after, "switchyard_due_deliveries", &[("endpoint", "m")]),
        0.0
    );
}

/// Counts every event of an account through the API (all pages).
async fn count_events(c: &Client, router: &Router) -> usize {
    let mut n = 0;
    let mut next = Some("/v1/accounts/acct/webhook-events?page[size]=100".to_string());
    while let Some(url) = next {
        let v = api(c, router, "GET", &url, TOKEN, None).await.json();
        n += ids(&v).len();
        next = v["links"]["next"].as_str().map(str::to_string);
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_old_data_keeps_recent_and_bounds_the_store() {
    let rx = Receiver::ok().await;
    let router = Router::start(
        &(config("retention = \"2s\"") + &endpoint("r", &rx.url("/r"), "")),
        &[],
    );
    let c = Client::new();
    let mut old = Vec::new();
    for i in 0..20 {
        let r = c
            .post_event(
                &router,
                "acct",
                &event("user.created", json!({"data": {"id": format!("old{i}")}})),
            )
            .await;
        old.push(r.json()["data"]["id"].as_str().unwrap().to_string());
    }
    rx.wait_for(Duration::from_secs(10), "20 deliveries", |g| g.len() >= 20)
        .await;
    let old_path = format!("/v1/accounts/acct/webhook-events/{}", old[0]);
    assert_eq!(
        api(&c, &router, "GET", &old_path, TOKEN, None).await.status,
        200
    );
    // Past the retention (2 s) plus a pruner period (1 s), with margin.
    tokio::time::sleep(Duration::from_millis(4000)).await;
    let mut recent = Vec::new();
    for i in 0..3 {
        let r = c
            .post_event(
                &router,
                "acct",
                &event("user.created", json!({"data": {"id": format!("new{i}")}})),
            )
            .await;
        recent.push(r.json()["data"]["id"].as_str().unwrap().to_string());
    }
    assert_eq!(
        api(&c, &router, "GET", &old_path, TOKEN, None).await.status,
        404,
        "old events are deleted"
    );
    let listed = ids(&api(
        &c,
        &router,
        "GET",
        "/v1/accounts/acct/webhook-events",
        TOKEN,
        None,
    )
    .await
    .json());
    for id in &recent {
        assert!(listed.contains(id), "recent events are kept");
    }
    assert!(old.iter().all(|id| !listed.contains(id)));

    // Steady load for 6 s: the number of stored events stays bounded by
    // what arrives within the retention window (plus a pruner period).
    let mut counts = Vec::new();
    let mut bytes = Vec::new();
    let start = Instant::now();
    let mut sent = 0;
    while start.elapsed() < Duration::from_secs(6) {
        for _ in 0..20 {
            c.post_event(
                &router,
                "acct",
                &event("user.created", json!({"data": {"id": "load"}})),
            )
            .await;
            sent += 1;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        counts.push(count_events(&c, &router).await);
        let m = parse_metrics(&body_text(
            &c.request("GET", &router.url("/metrics"), &[], "").await,
        ));
        bytes.push(sample(&m, "switchyard_store_bytes", &[]) as u64);
    }
    eprintln!("sent {sent}; stored event counts {counts:?}; store bytes {bytes:?}");
    let last = *counts.last().unwrap();
    assert!(
        last < sent,
        "events are pruned under load ({last} of {sent})"
    );
    // ~40 events/s × (2 s retention + 1 s pruner period) ≈ 120, with slack.
    assert!(
        counts.iter().skip(counts.len() / 2).all(|n| *n <= 200),
        "{counts:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_cli_talks_to_a_running_router() {
    let rx = Receiver::ok().await;
    let router = Router::start(&config(""), &[]);
    let url = rx.url("/cli");
    let r = &router;
    let run = |args: Vec<String>, token: &'static str| {
        let addr = r.addr;
        tokio::task::spawn_blocking(move || {
            let out = std::process::Command::new(BIN)
                .args(&args)
                .env("SWITCHYARD_URL", format!("http://{addr}"))
                .env("SWITCHYARD_TOKEN", token)
                .output()
                .unwrap();
            (
                out.status.success(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        })
    };
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();

    let (ok, out, err) = run(
        s(&[
            "endpoints",
            "create",
            "--account",
            "acct",
            "--endpoint-url",
            &url,
            "--id",
            "cli-ep",
            "--subscription",
            "user.*",
            "--json",
        ]),
        TOKEN,
    )
    .await
    .unwrap();
    assert!(ok, "{out}{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["data"]["id"], "cli-ep");
    assert!(
        v["data"]["attributes"]["secret"]
            .as_str()
            .unwrap()
            .starts_with("whsec_")
    );

    let (ok, out, err) = run(s(&["endpoints", "list", "--account", "acct"]), TOKEN)
        .await
        .unwrap();
    assert!(ok, "{err}");
    assert!(out.contains("cli-ep") && out.contains(&url), "table: {out}");
    assert!(!out.contains("whsec_"));

    let (ok, out, err) = run(
        s(&["endpoints", "ping", "--account", "acct", "cli-ep", "--json"]),
        TOKEN,
    )
    .await
    .unwrap();
    assert!(ok, "{out}{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["data"]["attributes"]["responseStatus"], 200);
    let (ok, out, _) = run(
        s(&["endpoints", "ping", "--account", "acct", "cli-ep"]),
        TOKEN,
    )
    .await
    .unwrap();
    assert!(ok && out.contains("200"), "{out}");

    let c = Client::new();
    let ev = c
        .post_event(
            &router,
            "acct",
            &event("user.created", json!({"data": {"id": "u"}})),
        )
        .await
        .json()["data"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    rx.wait_for(Duration::from_secs(10), "delivery", |g| g.len() >= 3)
        .await;

    let (ok, out, err) = run(s(&["events", "list", "--account", "acct", "--json"]), TOKEN)
        .await
        .unwrap();
    assert!(ok, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert!(ids(&v).contains(&ev));
    let (ok, out, _) = run(
        s(&["events", "list", "--account", "acct", "--event", "user.*"]),
        TOKEN,
    )
    .await
    .unwrap();
    assert!(
        ok && out.contains(&ev) && out.contains("user.created"),
        "{out}"
    );
    let (ok, out, _) = run(s(&["events", "show", "--account", "acct", &ev]), TOKEN)
        .await
        .unwrap();
    assert!(
        ok && out.contains("cli-ep") && out.contains("delivered"),
        "{out}"
    );
    let (ok, out, err) = run(
        s(&["events", "retry", "--account", "acct", &ev, "--json"]),
        TOKEN,
    )
    .await
    .unwrap();
    assert!(ok, "{out}{err}");
    rx.wait_for(Duration::from_secs(10), "the retry", |g| g.len() >= 4)
        .await;
    let since = rfc3339_ago(60);
    let (ok, out, err) = run(
        s(&[
            "endpoints",
            "recover",
            "--account",
            "acct",
            "cli-ep",
            "--since",
            &since,
        ]),
        TOKEN,
    )
    .await
    .unwrap();
    assert!(ok, "{out}{err}");

    // Errors are reported and exit non-zero.
    let (ok, _, err) = run(
        s(&[
            "events",
            "show",
            "--account",
            "acct",
            "00000000-0000-7000-8000-000000000000",
        ]),
        TOKEN,
    )
    .await
    .unwrap();
    assert!(!ok && err.contains("404"), "{err}");
    let (ok, _, err) = run(
        s(&["endpoints", "list", "--account", "acct"]),
        "wrong-token-zzz",
    )
    .await
    .unwrap();
    assert!(!ok && err.contains("401"), "{err}");
}
