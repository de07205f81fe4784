//! Auth.

use super::hostile_input::raw_exchange;
use super::*;

/// Every route with a missing, malformed, wrong or other-account token: 401
/// (or 404 for another account's token, which must not learn the account
/// exists), always a JSON:API error, and nothing happens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_on_every_route() {
    let rx = Receiver::ok().await;
    let config =
        base_config("admin_token = \"admin-token-0123456789\"") + &endpoint("e", &rx.url("/e"), "");
    let router = Router::start(&config, &[]);
    let c = Client::new();
    let good = c
        .post_event(
            &router,
            "acct",
            &event("user.created", json!({"data": {"id": "a"}})),
        )
        .await;
    let ev = good.json()["data"]["id"].as_str().unwrap().to_string();
    let ep_body = json!({"data": {"type": "webhook-endpoints", "id": "new", "attributes": {"url": rx.url("/new")}}}).to_string();
    let ev_body = event("user.created", json!({"data": {"id": "b"}})).to_string();
    let routes: Vec<(&str, String, String)> = vec![
        ("POST", "/v1/accounts/acct/events".into(), ev_body.clone()),
        (
            "GET",
            "/v1/accounts/acct/webhook-endpoints".into(),
            String::new(),
        ),
        (
            "POST",
            "/v1/accounts/acct/webhook-endpoints".into(),
            ep_body.clone(),
        ),
        (
            "GET",
            "/v1/accounts/acct/webhook-endpoints/e".into(),
            String::new(),
        ),
        (
            "PATCH",
            "/v1/accounts/acct/webhook-endpoints/e".into(),
            json!({"data": {"type": "webhook-endpoints", "attributes": {"enabled": false}}})
                .to_string(),
        ),
        (
            "DELETE",
            "/v1/accounts/acct/webhook-endpoints/e".into(),
            String::new(),
        ),
        (
            "POST",
            "/v1/accounts/acct/webhook-endpoints/e/actions/rotate-secret".into(),
            String::new(),
        ),
        (
            "POST",
            "/v1/accounts/acct/webhook-endpoints/e/actions/ping".into(),
            String::new(),
        ),
        (
            "POST",
            "/v1/accounts/acct/webhook-endpoints/e/actions/recover".into(),
            String::new(),
        ),
        (
            "GET",
            "/v1/accounts/acct/webhook-events".into(),
            String::new(),
        ),
        (
            "GET",
            format!("/v1/accounts/acct/webhook-events/{ev}"),
            String::new(),
        ),
        (
            "POST",
            format!("/v1/accounts/acct/webhook-events/{ev}/actions/retry"),
            String::new(),
        ),
        (
            "GET",
            "/v1/accounts/acct/no-such-route".into(),
            String::new(),
        ),
        ("GET", "/v1/plugins".into(), String::new()),
    ];
    let bad_tokens: Vec<(&str, Option<&str>, u16, u16)> = vec![
        // (what, Authorization value, status on account routes, status on /v1/plugins)
        ("missing", None, 401, 401),
        ("empty", Some(""), 401, 401),
        ("scheme only", Some("Bearer"), 401, 401),
        ("blank token", Some("Bearer    "), 401, 401),
        (
            "basic scheme",
            Some("Basic dGVzdC10b2tlbi1hYWFhOg=="),
            401,
            401,
        ),
        (
            "token without scheme",
            Some("test-token-aaaa-0001"),
            401,
            401,
        ),
        ("wrong token", Some("Bearer test-token-aaab"), 401, 401),
        (
            "prefix of the token",
            Some("Bearer test-token-aaa"),
            401,
            401,
        ),
        (
            "token plus a char",
            Some("Bearer test-token-aaaaa"),
            401,
            401,
        ),
        // /v1/plugins answers any account's token with its read-only view
        // (tests/it/papercuts.rs).
        (
            "other account's token",
            Some("Bearer other-token-bbbb"),
            404,
            0,
        ),
    ];
    let mut checked = 0;
    for (method, path, body) in &routes {
        for (what, value, acct_status, admin_status) in &bad_tokens {
            let expected = if path == "/v1/plugins" {
                *admin_status
            } else {
                *acct_status
            };
            if expected == 0 {
                continue;
            }
            let mut h: Vec<(&str, &str)> = vec![("content-type", "application/vnd.api+json")];
            if let Some(v) = value {
                h.push(("authorization", v));
            }
            let r = c.request(method, &router.url(path), &h, body.clone()).await;
            assert_jsonapi_error(&r, expected, &format!("{method} {path} with {what}"));
            if expected == 401 {
                assert_eq!(
                    r.headers
                        .get("www-authenticate")
                        .map(|v| v.to_str().unwrap()),
                    Some("Bearer"),
                    "{method} {path} {what}"
                );
            }
            checked += 1;
        }
        // A non-UTF-8 header value (raw request, hyper's client would refuse it).
        let req = format!(
            "{method} {path} HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\nconnection: close\r\nauthorization: Bearer \u{00e9}\u{00ff}\r\n\r\n"
        );
        let mut bytes = req.into_bytes();
        // Latin-1 bytes, not UTF-8.
        let pos = bytes.windows(7).position(|w| w == b"Bearer ").unwrap() + 7;
        bytes.splice(pos..pos + 4, [0xe9u8, 0xff]);
        let (resp, _) = raw_exchange(router.addr, &bytes).await;
        assert!(
            resp.starts_with("HTTP/1.1 401"),
            "{method} {path} with a non-UTF-8 token: {resp:.200}"
        );
        checked += 1;
    }
    // Nothing happened: the endpoint still exists, only the first event was stored.
    let a = auth();
    let show = c
        .request(
            "GET",
            &router.url("/v1/accounts/acct/webhook-endpoints/e"),
            &[(a.0, &a.1)],
            "",
        )
        .await;
    assert_eq!(show.status, 200);
    let list = c
        .request(
            "GET",
            &router.url("/v1/accounts/acct/webhook-events"),
            &[(a.0, &a.1)],
            "",
        )
        .await;
    assert_eq!(list.json()["data"].as_array().map(|v| v.len()), Some(1));
    // The admin token works everywhere.
    let p = c
        .request(
            "GET",
            &router.url("/v1/plugins"),
            &[("authorization", "Bearer admin-token-0123456789")],
            "",
        )
        .await;
    assert_eq!(p.status, 200);
    eprintln!(
        "FIGURES auth_on_every_route: {} routes x {} bad credentials = {checked} requests refused, 0 side effects",
        routes.len(),
        bad_tokens.len() + 1
    );
}

/// Token comparison is constant time by construction: both sides are hashed
/// (SHA-256) and the digests compared with `subtle::ConstantTimeEq`, so the
/// work does not depend on how many leading characters match (or on the
/// lengths). This checks the function's contract; `api::authorize_account`
/// and `api::authorize_admin` compare every token through it.
#[test]
fn token_comparison_is_constant_time_by_construction() {
    use switchyard::signing::constant_time_eq;
    let t = "test-token-aaaa-0001";
    assert!(constant_time_eq(t, t));
    for wrong in [
        "",
        "t",
        "test-token-aaa",
        "test-token-aaab",
        "test-token-aaaaa",
        "xest-token-aaaa",
        "TEST-TOKEN-AAAA",
    ] {
        assert!(!constant_time_eq(t, wrong), "{wrong}");
        assert!(!constant_time_eq(wrong, t), "{wrong}");
    }
    // The same work for every candidate: a digest of each side, then a fixed
    // 32-byte comparison (no early exit). Timings are printed, not asserted.
    let secret = "s".repeat(32);
    let candidates = [
        ("no match", "x".repeat(32)),
        ("31 of 32 match", format!("{}x", "s".repeat(31))),
        ("short", "s".into()),
    ];
    for (what, cand) in candidates {
        let t = Instant::now();
        for _ in 0..200_000 {
            std::hint::black_box(constant_time_eq(
                std::hint::black_box(&secret),
                std::hint::black_box(&cand),
            ));
        }
        eprintln!(
            "constant_time_eq {what}: {:?} per call",
            t.elapsed() / 200_000
        );
    }
}
