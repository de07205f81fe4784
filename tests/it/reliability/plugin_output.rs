//! Plugin output rules end to end.

use super::*;

/// A plugin cannot set Host, Content-Length, Transfer-Encoding, Connection,
/// webhook-* or Keygen-* headers, nor CR/LF in values, nor return 10 MB:
/// the delivery fails with a clear recorded error and nothing is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_output_rules_end_to_end() {
    let rx = Receiver::ok().await;
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "host",
            r#"{ mode = "replace", headers = [["Host", "evil.example"]] }"#.into(),
            "reserved",
        ),
        (
            "content-length",
            r#"{ mode = "replace", headers = [["Content-Length", "1"]] }"#.into(),
            "reserved",
        ),
        (
            "transfer-encoding",
            r#"{ mode = "replace", headers = [["Transfer-Encoding", "chunked"]] }"#.into(),
            "reserved",
        ),
        (
            "connection",
            r#"{ mode = "replace", headers = [["Connection", "close"]] }"#.into(),
            "reserved",
        ),
        (
            "webhook-signature",
            r#"{ mode = "replace", headers = [["Webhook-Signature", "v1,forged"]] }"#.into(),
            "reserved",
        ),
        (
            "webhook-id",
            r#"{ mode = "replace", headers = [["webhook-id", "msg_forged"]] }"#.into(),
            "reserved",
        ),
        (
            "keygen-signature",
            r#"{ mode = "replace", headers = [["Keygen-Signature", "forged"]] }"#.into(),
            "reserved",
        ),
        (
            "crlf",
            r#"{ mode = "replace", headers = [["X-Note", "a\r\nInjected: 1"]] }"#.into(),
            "CR",
        ),
        (
            "lf",
            r#"{ mode = "replace", headers = [["X-Note", "a\nInjected: 1"]] }"#.into(),
            "CR",
        ),
        (
            "bad-name",
            r#"{ mode = "replace", headers = [["X Bad", "1"]] }"#.into(),
            "not a valid",
        ),
        ("huge", r#"{ mode = "huge" }"#.into(), "limit"),
    ];
    let mut config = base_config("");
    for (name, cfg, _) in &cases {
        config += &endpoint(
            name,
            &rx.url(&format!("/{name}")),
            &format!(
                "retry_schedule = [\"100ms\"]\nplugins = [ {{ name = \"misbehave\", config = {cfg} }} ]"
            ),
        );
    }
    config += &endpoint(
        "control",
        &rx.url("/control"),
        r#"plugins = [ { name = "misbehave", config = { mode = "replace", headers = [["X-Fine", "yes"]] } } ]"#,
    );
    let router = Router::start(&config, &[("misbehave", test_plugin("misbehave"))]);
    let c = Client::new();
    let r = c
        .post_event(
            &router,
            "acct",
            &event("user.created", json!({"data": {"id": "p"}})),
        )
        .await;
    assert_eq!(r.status, 202);
    let id = r.json()["data"]["id"].as_str().unwrap().to_string();
    let mut rows = Vec::new();
    for (name, _, needle) in &cases {
        let d = wait_delivery(&c, &router, &id, name, Duration::from_secs(15), |d| {
            d["status"] == "failed"
        })
        .await;
        let err = d["lastError"].as_str().unwrap_or("").to_string();
        assert!(err.contains(needle), "{name}: {err}");
        assert!(
            err.contains("invalid") || err.contains("output") || err.contains("misbehave"),
            "{name}: {err}"
        );
        rows.push(format!("{name}: {err:.110}"));
    }
    let got = rx
        .wait_for(Duration::from_secs(5), "the control delivery", |g| {
            !g.is_empty()
        })
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let paths: Vec<String> = rx.received().iter().map(|r| r.path.clone()).collect();
    assert_eq!(
        paths,
        vec!["/control".to_string()],
        "only the well-behaved output was sent"
    );
    assert_eq!(got[0].header("x-fine"), "yes");
    eprintln!(
        "FIGURES plugin_output_rules_end_to_end: {} refused, nothing sent; errors: {}",
        cases.len(),
        rows.join(" | ")
    );
}
