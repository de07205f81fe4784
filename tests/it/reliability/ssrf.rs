//! SSRF.

use super::*;

/// Host names that resolve to 127.0.0.1 without being an IP literal to the
/// URL check: a trailing-dot localhost, decimal, hex, short and octal forms.
const NAMES: [&str; 5] = [
    "localhost.",
    "2130706433",
    "0x7f000001",
    "127.1",
    "0177.0.0.1",
];

/// Endpoint hosts that are (or resolve to) loopback, private, link-local or
/// metadata addresses are refused unless `allow_private_networks`: literals
/// by the config check (file and API), names at connect time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssrf_targets_are_refused() {
    let literals = [
        ("v4-loopback", "https://127.0.0.1/x"),
        ("v6-loopback", "https://[::1]/x"),
        ("v4-mapped-v6", "https://[::ffff:127.0.0.1]/x"),
        ("v4-mapped-hex", "https://[::ffff:7f00:1]/x"),
        ("private-10", "https://10.0.0.7/x"),
        ("private-192", "https://192.168.1.1/x"),
        ("metadata", "https://169.254.169.254/latest/meta-data"),
        ("mapped-metadata", "https://[::ffff:169.254.169.254]/x"),
        ("unspecified", "https://0.0.0.0/x"),
        ("localhost", "https://localhost/x"),
    ];
    let mut text = String::from("[[accounts]]\nid = \"acct\"\ntoken = \"test-token-aaaa-0001\"\n");
    for (id, url) in literals {
        text += &format!(
            "[[endpoints]]\nid = \"{id}\"\naccount = \"acct\"\nurl = \"{url}\"\nsecret = \"{SECRET}\"\n"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("router.toml");
    std::fs::write(&path, &text).unwrap();
    let out = std::process::Command::new(BIN)
        .args(["config", "check", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    for (id, _) in literals {
        assert!(
            err.contains(&format!("\"{id}\"")),
            "{id} not refused:\n{err}"
        );
    }

    // Names that resolve to loopback, with receivers on 127.0.0.1 and [::1].
    let rx4 = Receiver::ok().await;
    let rx6 = Receiver::on(
        format!("[::1]:{}", rx4.addr.port()).parse().unwrap(),
        |_, _| Reply::status(200),
    )
    .await;
    let port = rx4.addr.port();
    let config = format!(
        r#"
[server]
listen = "127.0.0.1:0"
data_dir = "data"
admin_token = "admin-token-0123456789"
[plugins]
dir = "plugins"
[delivery]
allow_http = true
[[accounts]]
id = "acct"
token = "test-token-aaaa-0001"
"#
    ) + &NAMES
        .iter()
        .enumerate()
        .map(|(i, h)| {
            endpoint(
                &format!("name{i}"),
                &format!("http://{h}:{port}/x"),
                "retry_schedule = [\"100ms\"]",
            )
        })
        .collect::<String>();
    let router = Router::start(&config, &[]);
    let c = Client::new();
    // The API applies the same rule to endpoints it creates.
    let mut api_refused = 0;
    for (id, url) in literals {
        let body = json!({"data": {"type": "webhook-endpoints", "id": format!("api-{id}"), "attributes": {"url": url.replace("https", "http")}}});
        let r = c
            .request(
                "POST",
                &router.url("/v1/accounts/acct/webhook-endpoints"),
                &[
                    ("authorization", "Bearer test-token-aaaa-0001"),
                    ("content-type", "application/vnd.api+json"),
                ],
                body.to_string(),
            )
            .await;
        assert!(
            (400..500).contains(&r.status),
            "API accepted {url}: {}",
            String::from_utf8_lossy(&r.body)
        );
        let detail = String::from_utf8_lossy(&r.body).to_string();
        assert!(
            detail.contains("allow_private_networks"),
            "refused for the address: {detail}"
        );
        api_refused += 1;
    }
    let r = c
        .post_event(&router, "acct", &event("user.created", json!({"data": {}})))
        .await;
    assert_eq!(r.status, 202);
    let id = r.json()["data"]["id"].as_str().unwrap().to_string();
    let mut errors = Vec::new();
    for i in 0..NAMES.len() {
        let d = wait_delivery(
            &c,
            &router,
            &id,
            &format!("name{i}"),
            Duration::from_secs(10),
            |d| d["status"] == "failed",
        )
        .await;
        errors.push(d["lastError"].as_str().unwrap_or("").to_string());
    }
    assert_eq!(
        rx4.count() + rx6.count(),
        0,
        "a loopback receiver was reached"
    );
    for e in &errors {
        assert!(e.contains("non-public") || e.contains("resolve"), "{e}");
    }
    eprintln!(
        "FIGURES ssrf_targets_are_refused: {} literal URLs refused by config check, {api_refused} by the API; {} names resolving to loopback refused at connect \
         (0 requests reached 127.0.0.1/[::1]); e.g. {:?}",
        literals.len(),
        NAMES.len(),
        errors[0]
    );
}
