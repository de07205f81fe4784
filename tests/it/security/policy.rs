//! The URL policy (findings 4 and 13).

use super::*;

fn strict(cfg: String) -> String {
    cfg.replace(
        "allow_private_networks = true",
        "allow_private_networks = false",
    )
}

/// Finding 4: tightening `allow_private_networks` (hot reload or restart)
/// left stored API endpoints delivering to loopback, and `127.1` (resolved
/// by the stale resolver) was accepted for new ones. Now the policy in
/// force applies to every attempt: refused attempts say which rule, the
/// endpoint lists the violation, and the receiver gets nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tightening_the_url_policy_applies_to_every_attempt() {
    let rx = Receiver::ok().await;
    let port = rx.addr.port();
    let config = base_config("");
    let mut router = Router::start(&config, &[]);
    let c = Client::new();
    let path = "/v1/accounts/acct/webhook-endpoints";
    for (id, url) in [
        ("literal", format!("http://127.0.0.1:{port}/literal")),
        ("short", format!("http://127.1:{port}/short")),
    ] {
        let doc = json!({"data": {"type": "webhook-endpoints", "id": id, "attributes": {"url": url, "retrySchedule": ["1h"]}}});
        let r = api(&c, &router, "POST", path, TOKEN, Some(doc)).await;
        assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    }
    let r = c
        .post_event(
            &router,
            "acct",
            &event("user.created", json!({"data": {"id": "0"}})),
        )
        .await;
    assert_eq!(r.status, 202);
    rx.wait_for(
        Duration::from_secs(15),
        "both endpoints while allowed",
        |g| g.len() >= 2,
    )
    .await;

    std::fs::write(&router.config_path, strict(config.clone())).unwrap();
    wait_log(&router, Duration::from_secs(10), "the reload", |l| {
        l.contains("configuration reloaded")
    })
    .await;
    let before = rx.count();
    let check = |router: &Router| {
        let router_url = router.url("");
        async move {
            let c = Client::new();
            let r = post_event_to(
                &c,
                &router_url,
                "acct",
                &event("user.created", json!({"data": {"id": "1"}})),
            )
            .await;
            assert_eq!(r.status, 202);
            let id = r.json()["data"]["id"].as_str().unwrap().to_string();
            let deadline = Instant::now() + Duration::from_secs(15);
            loop {
                let r = c
                    .request(
                        "GET",
                        &format!("{router_url}/v1/accounts/acct/webhook-events/{id}"),
                        &[("authorization", &format!("Bearer {TOKEN}"))],
                        "",
                    )
                    .await;
                let v = r.json();
                let errs: Vec<String> = v["data"]["attributes"]["deliveries"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|d| d["lastError"].as_str().unwrap_or_default().to_string())
                    .collect();
                if errs.len() == 2 && errs.iter().all(|e| e.contains("allow_private_networks")) {
                    return;
                }
                assert!(Instant::now() < deadline, "{v}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    check(&router).await;
    let r = api(&c, &router, "GET", &format!("{path}/literal"), TOKEN, None).await;
    let v = r.json();
    assert!(
        v["data"]["attributes"]["policyViolation"]
            .as_str()
            .is_some_and(|m| m.contains("allow_private_networks")),
        "{v}"
    );
    // New endpoints: refused by literal, and 127.1 fails at connect time.
    let doc = endpoint_doc(json!({"url": format!("http://127.0.0.1:{port}/x")}));
    assert_eq!(
        api(&c, &router, "POST", path, TOKEN, Some(doc))
            .await
            .status,
        422
    );

    // After a restart with the flag false: still refused.
    router.stop();
    router.spawn();
    check(&router).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        rx.count(),
        before,
        "a refused endpoint reached the receiver"
    );
    let metrics = c.request("GET", &router.url("/metrics"), &[], "").await;
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(text.contains("cause=\"refused\""), "{text}");
}

/// Finding 13: IPv4-embedding IPv6 forms, scoped literals and local-use
/// NAT64 passed the address check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_forms_that_embed_private_addresses_are_refused() {
    let router = Router::start(&strict(base_config("")), &[]);
    let c = Client::new();
    for host in [
        "[::ffff:0:7f00:1]",
        "[2002:7f00:1::1]",
        "[2002:a9fe:a9fe::1]",
        "[::1%25lo]",
        "[fe80::1%25eth0]",
        "[64:ff9b:1::a00:1]",
        "[2001:0:4136:e378:8000:63bf:3fff:fdd2]",
    ] {
        let doc = endpoint_doc(json!({"url": format!("https://{host}/hook")}));
        let r = api(
            &c,
            &router,
            "POST",
            "/v1/accounts/acct/webhook-endpoints",
            TOKEN,
            Some(doc),
        )
        .await;
        assert_eq!(
            r.status,
            422,
            "{host} accepted: {}",
            String::from_utf8_lossy(&r.body)
        );
        assert!(
            String::from_utf8_lossy(&r.body).contains("allow_private_networks"),
            "{host}"
        );
    }
    // A public 6to4 address is still fine.
    let doc = endpoint_doc(json!({"url": "https://[2002:808:808::1]/hook"}));
    let r = api(
        &c,
        &router,
        "POST",
        "/v1/accounts/acct/webhook-endpoints",
        TOKEN,
        Some(doc),
    )
    .await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
}
