//! Keygen as a source (issue #12, part 1): `POST
//! /v1/accounts/{account}/sources/keygen` authenticated by Keygen's own
//! signature. Requests are signed by `tests/ecosystem/keygen_sign.py`, a
//! signer written from Keygen's documented algorithm with the Python
//! `cryptography` package (not the router's signing code); the onward
//! delivery is checked with Keygen's example handler logic
//! (`verify_signatures.py`).

use std::time::Duration;

use serde_json::{Value, json};

use crate::common::*;

/// "Keygen's" signing seed in these tests (RFC 8032 test key 2): its public
/// half is the account's `keygen_verify_key`. The router's own outbound
/// key is [`KEYGEN_SEED`], another one.
const KG_SEED: &str = "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb";
const KG_PUBLIC: &str = "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c";
/// Another key (RFC 8032 test key 3 seed), for "signed by someone else".
const WRONG_SEED: &str = "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7";
const KG_ACCOUNT: &str = "4b0a1c5c-0a7d-4d1b-9d0e-6f1f2b7c8a90";
const PATH: &str = "/v1/accounts/acct/sources/keygen";

/// `base_config` with the Keygen verify key(s) on account `acct`.
fn config(extra_server: &str, extra_account: &str, rx_url: &str) -> String {
    base_config(extra_server).replace(
        &format!("keygen_signing_key = \"{KEYGEN_SEED}\"\n"),
        &format!(
            "keygen_signing_key = \"{KEYGEN_SEED}\"\nkeygen_verify_key = [\"{KG_PUBLIC}\"]\n{extra_account}\n"
        ),
    ) + &endpoint("all", rx_url, "signatures = [\"standard\", \"keygen\"]")
}

/// A Keygen webhook-event envelope as Keygen sends it.
fn envelope(id: &str, event: &str, doc: &Value) -> String {
    json!({"data": {
        "id": id,
        "type": "webhook-events",
        "attributes": {
            "endpoint": "https://hooks.example.com/v1/accounts/acct/sources/keygen",
            "apiVersion": "1.7",
            "payload": doc.to_string(),
            "event": event,
            "status": "DELIVERING",
            "lastResponseCode": null,
            "lastResponseBody": null,
            "created": "2026-11-30T12:00:00.000Z",
            "updated": "2026-11-30T12:00:00.000Z"
        },
        "relationships": {"account": {"data": {"type": "accounts", "id": KG_ACCOUNT},
            "links": {"related": format!("/v1/accounts/{KG_ACCOUNT}")}}},
        "links": {"self": format!("/v1/accounts/{KG_ACCOUNT}/webhook-events/{id}")},
        "meta": {"idempotencyToken": format!("tok-{id}")}
    }})
    .to_string()
}

/// Date, Digest and Keygen-Signature from the independent Python signer.
fn sign(seed: &str, keyid: &str, host: &str, path: &str, body: &str, offset_s: i64) -> Value {
    let out = python_check(
        "keygen_sign.py",
        &json!({"seed": seed, "keyid": keyid,
                "requests": [{"host": host, "path": path, "body": body, "date_offset_s": offset_s}]}),
    );
    let v: Value = serde_json::from_str(&out).unwrap();
    v["requests"][0]["headers"].clone()
}

async fn post_signed(
    c: &Client,
    router: &Router,
    path: &str,
    headers: &Value,
    content_type: &str,
    body: &str,
) -> Resp {
    let mut h: Vec<(&str, &str)> = vec![("content-type", content_type)];
    for name in ["date", "digest", "keygen-signature"] {
        if let Some(v) = headers[name].as_str() {
            h.push((name, v));
        }
    }
    c.request("POST", &router.url(path), &h, body.to_string())
        .await
}

async fn event_count(c: &Client, router: &Router) -> usize {
    let r = c
        .request(
            "GET",
            &router.url("/v1/accounts/acct/webhook-events"),
            &[("authorization", &format!("Bearer {TOKEN}"))],
            "",
        )
        .await;
    assert_eq!(r.status, 200);
    r.json()["data"].as_array().unwrap().len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keygen_signed_events_are_routed_and_verify_downstream() {
    let rx = Receiver::ok().await;
    let router = Router::start(&config("", "", &rx.url("/all")), &[]);
    let c = Client::new();
    let host = router.addr.to_string();
    let doc = license_doc("lic-9", "ACTIVE");
    let body = envelope(
        "8a1d0c3e-1f6b-4c0e-9b1a-2d3e4f5a6b7c",
        "license.created",
        &doc,
    );
    let signed = sign(KG_SEED, KG_ACCOUNT, &host, PATH, &body, 0);
    // Keygen sends application/json; application/vnd.api+json is taken too.
    let r = post_signed(&c, &router, PATH, &signed, "application/json", &body).await;
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    let id = r.json()["data"]["id"].as_str().unwrap().to_string();

    let got = rx
        .wait_for(Duration::from_secs(10), "the routed delivery", |g| {
            !g.is_empty()
        })
        .await;
    let v = got[0].json();
    assert_eq!(v["data"]["attributes"]["event"], "license.created");
    let payload: Value =
        serde_json::from_str(v["data"]["attributes"]["payload"].as_str().unwrap()).unwrap();
    assert_eq!(payload, doc);
    // The onward delivery verifies with Keygen's example handler logic
    // (and the Standard Webhooks / Svix libraries).
    let public = String::from_utf8(
        std::process::Command::new(BIN)
            .args(["keys", "public", "--account", "acct", "-c"])
            .arg(&router.config_path)
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let out = python_check(
        "verify_signatures.py",
        &json!({"deliveries": [{
            "body": String::from_utf8_lossy(&got[0].body),
            "headers": got[0].headers,
            "secrets": [SECRET],
            "keygen_public_key": public.trim(),
            "path": got[0].path,
        }]}),
    );
    assert!(out.contains("keygen keyid: acct"), "{out}");

    // Keygen's event id is the source id, visible in the events API.
    let shown = c
        .request(
            "GET",
            &router.url(&format!("/v1/accounts/acct/webhook-events/{id}")),
            &[("authorization", &format!("Bearer {TOKEN}"))],
            "",
        )
        .await;
    assert_eq!(
        shown.json()["data"]["attributes"]["sourceId"],
        "8a1d0c3e-1f6b-4c0e-9b1a-2d3e4f5a6b7c"
    );

    // A Keygen retry of the same delivery (its answer was lost): 2xx, the
    // same event, nothing new stored or delivered.
    let again = post_signed(
        &c,
        &router,
        PATH,
        &signed,
        "application/vnd.api+json",
        &body,
    )
    .await;
    assert_eq!(again.status, 202);
    assert_eq!(again.json()["data"]["id"], id.as_str());
    assert_eq!(again.json()["meta"]["duplicate"], true);
    // A retry is signed anew (new Date), same event id: still one event.
    let resigned = sign(KG_SEED, KG_ACCOUNT, &host, PATH, &body, 0);
    let third = post_signed(&c, &router, PATH, &resigned, "application/json", &body).await;
    assert_eq!(third.json()["data"]["id"], id.as_str());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(rx.count(), 1);
    assert_eq!(event_count(&c, &router).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refused_request_names_the_failure_and_stores_nothing() {
    let rx = Receiver::ok().await;
    let router = Router::start(
        &config(
            "",
            &format!("keygen_account_id = \"{KG_ACCOUNT}\""),
            &rx.url("/all"),
        ),
        &[],
    );
    let c = Client::new();
    let host = router.addr.to_string();
    let body = envelope("e-1", "license.created", &license_doc("l", "ACTIVE"));
    let good = sign(KG_SEED, KG_ACCOUNT, &host, PATH, &body, 0);
    let without = |name: &str| {
        let mut h = good.clone();
        h.as_object_mut().unwrap().remove(name);
        h
    };
    let cases: Vec<(&str, Value, String, u16, &str)> = vec![
        (
            "no Date",
            without("date"),
            body.clone(),
            401,
            "SIGNATURE_HEADER_MISSING",
        ),
        (
            "no Digest",
            without("digest"),
            body.clone(),
            401,
            "SIGNATURE_HEADER_MISSING",
        ),
        (
            "no Keygen-Signature",
            without("keygen-signature"),
            body.clone(),
            401,
            "SIGNATURE_HEADER_MISSING",
        ),
        (
            "body changed after signing",
            good.clone(),
            body.replace("lic", "LIC").replace("\"l\"", "\"m\""),
            401,
            "DIGEST_MISMATCH",
        ),
        (
            "signed by another key",
            sign(WRONG_SEED, KG_ACCOUNT, &host, PATH, &body, 0),
            body.clone(),
            401,
            "SIGNATURE_INVALID",
        ),
        (
            "signed for another host",
            sign(KG_SEED, KG_ACCOUNT, "hooks.example.com", PATH, &body, 0),
            body.clone(),
            401,
            "SIGNATURE_INVALID",
        ),
        (
            "signed for another path",
            sign(
                KG_SEED,
                KG_ACCOUNT,
                &host,
                "/v1/accounts/other/sources/keygen",
                &body,
                0,
            ),
            body.clone(),
            401,
            "SIGNATURE_INVALID",
        ),
        (
            "another Keygen account",
            sign(KG_SEED, "someone-else", &host, PATH, &body, 0),
            body.clone(),
            401,
            "SIGNATURE_KEYID_UNKNOWN",
        ),
        (
            "Date 10 minutes old",
            sign(KG_SEED, KG_ACCOUNT, &host, PATH, &body, -600),
            body.clone(),
            401,
            "DATE_OUTSIDE_WINDOW",
        ),
        (
            "Date 10 minutes ahead",
            sign(KG_SEED, KG_ACCOUNT, &host, PATH, &body, 600),
            body.clone(),
            401,
            "DATE_OUTSIDE_WINDOW",
        ),
    ];
    for (what, headers, body, status, code) in &cases {
        let r = post_signed(&c, &router, PATH, headers, "application/json", body).await;
        assert_eq!(
            r.status,
            *status,
            "{what}: {}",
            String::from_utf8_lossy(&r.body)
        );
        let e = &r.json()["errors"][0];
        assert_eq!(e["code"], *code, "{what}: {e}");
        assert!(!e["detail"].as_str().unwrap().is_empty());
    }
    // Not JSON: 415; the native form is not Keygen's: 400; an account
    // without a verify key (or none at all): 404 alike.
    let r = post_signed(&c, &router, PATH, &good, "text/plain", &body).await;
    assert_eq!(r.status, 415);
    let native = json!({"event": "license.created", "payload": {"data": {}}}).to_string();
    let signed_native = sign(KG_SEED, KG_ACCOUNT, &host, PATH, &native, 0);
    let r = post_signed(
        &c,
        &router,
        PATH,
        &signed_native,
        "application/json",
        &native,
    )
    .await;
    assert_eq!(r.status, 400);
    for account in ["other", "nobody"] {
        let path = format!("/v1/accounts/{account}/sources/keygen");
        let s = sign(KG_SEED, KG_ACCOUNT, &host, &path, &body, 0);
        let r = post_signed(&c, &router, &path, &s, "application/json", &body).await;
        assert_eq!(r.status, 404, "{account}");
    }
    // A bearer token is not a Keygen signature.
    let r = c
        .request(
            "POST",
            &router.url(PATH),
            &[
                ("content-type", "application/json"),
                ("authorization", &format!("Bearer {TOKEN}")),
            ],
            body.clone(),
        )
        .await;
    assert_eq!(r.status, 401);

    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(event_count(&c, &router).await, 0, "nothing is stored");
    assert_eq!(rx.count(), 0, "nothing is delivered");
    let metrics = String::from_utf8_lossy(
        &c.request("GET", &router.url("/metrics"), &[], "")
            .await
            .body,
    )
    .to_string();
    assert!(
        metrics.contains(&format!(
            "switchyard_keygen_source_rejected_total {}",
            cases.len() + 1
        )),
        "{metrics}"
    );
    // The good request still goes through afterwards.
    let r = post_signed(&c, &router, PATH, &good, "application/json", &body).await;
    assert_eq!(r.status, 202);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_captured_request_replayed_after_the_window_is_refused() {
    let rx = Receiver::ok().await;
    let router = Router::start(
        &config("keygen_date_window = \"2s\"", "", &rx.url("/all")),
        &[],
    );
    let c = Client::new();
    let host = router.addr.to_string();
    let body = envelope("e-replay", "license.renewed", &license_doc("l", "ACTIVE"));
    let signed = sign(KG_SEED, KG_ACCOUNT, &host, PATH, &body, 0);
    let first = post_signed(&c, &router, PATH, &signed, "application/json", &body).await;
    assert_eq!(first.status, 202);
    // Another event, captured and held back past the window.
    let other = envelope("e-held", "license.renewed", &license_doc("l2", "ACTIVE"));
    let held = sign(KG_SEED, KG_ACCOUNT, &host, PATH, &other, 0);
    tokio::time::sleep(Duration::from_millis(3200)).await;
    for (headers, body) in [(&signed, &body), (&held, &other)] {
        let r = post_signed(&c, &router, PATH, headers, "application/json", body).await;
        assert_eq!(r.status, 401);
        assert_eq!(r.json()["errors"][0]["code"], "DATE_OUTSIDE_WINDOW");
    }
    assert_eq!(event_count(&c, &router).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_proxy_the_configured_external_host_is_what_is_verified() {
    let rx = Receiver::ok().await;
    let router = Router::start(
        &config("external_host = \"hooks.example.com\"", "", &rx.url("/all")),
        &[],
    );
    let c = Client::new();
    let body = envelope(
        "e-proxy",
        "user.created",
        &json!({"data": {"id": "u", "type": "users"}}),
    );
    let for_proxy = sign(KG_SEED, KG_ACCOUNT, "hooks.example.com", PATH, &body, 0);
    let r = post_signed(&c, &router, PATH, &for_proxy, "application/json", &body).await;
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    let for_inside = sign(
        KG_SEED,
        KG_ACCOUNT,
        &router.addr.to_string(),
        PATH,
        &body,
        0,
    );
    let r = post_signed(&c, &router, PATH, &for_inside, "application/json", &body).await;
    assert_eq!(r.status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keygen_send_posts_a_sample_the_source_accepts() {
    let rx = Receiver::ok().await;
    let router = Router::start(&config("", "", &rx.url("/all")), &[]);
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/events/license.expiring-soon.json");
    let out = std::process::Command::new(BIN)
        .args([
            "keygen",
            "send",
            "--account",
            "acct",
            "--key",
            KG_SEED,
            "--url",
        ])
        .arg(router.url(""))
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let got = rx
        .wait_for(Duration::from_secs(10), "the sample", |g| !g.is_empty())
        .await;
    assert_eq!(
        got[0].json()["data"]["attributes"]["event"],
        "license.expiring-soon"
    );
    // With the wrong seed it fails, saying why.
    let out = std::process::Command::new(BIN)
        .args([
            "keygen",
            "send",
            "--account",
            "acct",
            "--key",
            WRONG_SEED,
            "--url",
        ])
        .arg(router.url(""))
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("HTTP 401"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
