//! Accounts, tokens and API bounds (findings 8, 10, 12).

use super::*;

fn config_check(text: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("router.toml");
    std::fs::write(&path, text).unwrap();
    let out = std::process::Command::new(BIN)
        .args(["config", "check", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Finding 8: `Bearer bogus` answered 401 for an existing account and 404
/// for an unknown one, so account ids could be enumerated; `/metrics`
/// (every account, endpoint and event type) could not be protected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn account_ids_cannot_be_enumerated() {
    let config = base_config("metrics_token = \"metrics-token-0123456789\"\n");
    let router = Router::start(&config, &[]);
    let c = Client::new();
    let mut answers = Vec::new();
    for account in ["acct", "no-such-account"] {
        for path in ["events", "webhook-endpoints", "webhook-events"] {
            let method = if path == "events" { "POST" } else { "GET" };
            let r = c
                .request(
                    method,
                    &router.url(&format!("/v1/accounts/{account}/{path}")),
                    &[
                        ("authorization", "Bearer bogus-token-000000"),
                        ("content-type", "application/json"),
                    ],
                    "{}",
                )
                .await;
            let mut v = r.json();
            answers.push((path, r.status, v["errors"][0].take()));
        }
    }
    println!("{answers:?}");
    for i in 0..3 {
        assert_eq!(
            answers[i],
            answers[i + 3],
            "existing vs unknown account differ"
        );
        assert_eq!(answers[i].1, 401);
    }
    // A valid token of another account learns nothing either: 404 for
    // both an existing and an unknown account.
    for account in ["acct", "no-such-account"] {
        let r = c
            .request(
                "GET",
                &router.url(&format!("/v1/accounts/{account}/webhook-endpoints")),
                &[("authorization", "Bearer other-token-bbbb")],
                "",
            )
            .await;
        assert_eq!(r.status, 404, "{account}");
    }
    // /metrics is the operator's.
    let r = c.request("GET", &router.url("/metrics"), &[], "").await;
    assert_eq!(r.status, 401);
    let r = c
        .request(
            "GET",
            &router.url("/metrics"),
            &[("authorization", "Bearer metrics-token-0123456789")],
            "",
        )
        .await;
    assert_eq!(r.status, 200);
    assert!(String::from_utf8_lossy(&r.body).contains("switchyard_events_ingested_total"));
}

/// Finding 12: two accounts sharing a token (also the admin token) passed
/// `config check`; account tokens had a lower minimum than the admin's.
#[test]
fn shared_and_short_tokens_are_refused() {
    let text = r#"
[server]
admin_token = "shared-token-0123456789"
[[accounts]]
id = "alice"
token = "shared-token-0123456789"
[[accounts]]
id = "bob"
token = "shared-token-0123456789"
[[accounts]]
id = "carol"
token = "short-token-123"
"#;
    let (ok, err) = config_check(text);
    assert!(!ok);
    println!("{err}");
    assert!(
        err.contains("\"bob\"") && err.contains("same as the token of"),
        "{err}"
    );
    assert!(
        err.contains("\"alice\"") && err.contains("admin_token"),
        "{err}"
    );
    assert!(
        err.contains("\"carol\"") && err.contains("at least 16"),
        "{err}"
    );
}

/// Finding 10: `retrySchedule: ["9223372036854776s"]` wrapped the next
/// attempt time to 1970 (never retried, failed or pruned) and a huge
/// rotation grace dropped the old secret at once. Now durations are
/// bounded where they are parsed, with a 4xx naming the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_durations_are_refused() {
    let rx = Receiver::ok().await;
    let router = Router::start(&base_config(""), &[]);
    let c = Client::new();
    let path = "/v1/accounts/acct/webhook-endpoints";
    let doc =
        endpoint_doc(json!({"url": rx.url("/x"), "retrySchedule": ["1s", "9223372036854776s"]}));
    let r = api(&c, &router, "POST", path, TOKEN, Some(doc)).await;
    assert_eq!(r.status, 422, "{}", String::from_utf8_lossy(&r.body));
    let body = String::from_utf8_lossy(&r.body).to_string();
    assert!(
        body.contains("/data/attributes/retrySchedule/1") && body.contains("7 days"),
        "{body}"
    );

    let doc = json!({"data": {"type": "webhook-endpoints", "id": "e", "attributes": {"url": rx.url("/x")}}});
    assert_eq!(
        api(&c, &router, "POST", path, TOKEN, Some(doc))
            .await
            .status,
        201
    );
    let r = api(
        &c,
        &router,
        "POST",
        &format!("{path}/e/actions/rotate-secret?grace=9223372036854776s"),
        TOKEN,
        None,
    )
    .await;
    assert_eq!(r.status, 422, "{}", String::from_utf8_lossy(&r.body));
    assert!(String::from_utf8_lossy(&r.body).contains("30 days"));

    let (ok, err) = config_check(
        &(base_config("")
            + &endpoint(
                "e",
                "http://127.0.0.1:9/x",
                "retry_schedule = [\"9223372036854776s\"]",
            )),
    );
    assert!(!ok && err.contains("7 days"), "{err}");
}

/// Finding 9: 2,000 event types from one account pushed another account's
/// new type into `overflow="true"`, and same-named endpoints of two
/// accounts shared one `deliveries_total` series. Now series are capped per
/// account and labelled by account and endpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_account_cannot_blind_anothers_metrics() {
    let rx = Receiver::ok().await;
    let config = base_config("")
        + &endpoint("same", &rx.url("/acct"), "")
        + &format!(
            "[[endpoints]]\nid = \"same\"\naccount = \"other\"\nurl = \"{}\"\nsecret = \"{SECRET}\"\n",
            rx.url("/other")
        );
    let router = Router::start(&config, &[]);
    let c = std::sync::Arc::new(Client::new());
    let url = router.events_url("acct");
    let mut tasks = Vec::new();
    for w in 0..8 {
        let c = c.clone();
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            for i in (w..2100).step_by(8) {
                let body =
                    json!({"event": format!("spam.type{i}"), "payload": {"data": {"id": "x"}}});
                let r = c
                    .request(
                        "POST",
                        &url,
                        &[
                            ("authorization", &format!("Bearer {TOKEN}")),
                            ("content-type", "application/json"),
                        ],
                        body.to_string(),
                    )
                    .await;
                assert_eq!(r.status, 202);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let r = c
        .request(
            "POST",
            &router.events_url("other"),
            &[
                ("authorization", "Bearer other-token-bbbb"),
                ("content-type", "application/json"),
            ],
            json!({"event": "bob.type", "payload": {"data": {"id": "b"}}}).to_string(),
        )
        .await;
    assert_eq!(r.status, 202);
    rx.wait_for(Duration::from_secs(30), "bob's delivery", |g| {
        g.iter().any(|r| r.path == "/other")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let m = c.request("GET", &router.url("/metrics"), &[], "").await;
    let text = String::from_utf8_lossy(&m.body).to_string();
    assert!(
        text.contains("switchyard_events_ingested_total{account=\"other\",event=\"bob.type\"} 1"),
        "bob's type is hidden"
    );
    assert!(text.contains("switchyard_events_ingested_total{account=\"acct\",overflow=\"true\"}"));
    assert!(text.contains("switchyard_deliveries_total{account=\"other\",endpoint=\"same\",outcome=\"delivered\"} 1"), "{}", text.lines().filter(|l| l.contains("deliveries_total")).collect::<Vec<_>>().join("\n"));
}
