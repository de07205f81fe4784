//! Operator surfaces: recover, config reload, CLI output (findings 5, 6, 11).

use super::*;

/// Finding 5: events accepted while an endpoint was auto-disabled were
/// never fanned out to it, so `recover` after re-enabling it could not
/// deliver them. Now recover also delivers the events it subscribes to
/// that it has no delivery for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recover_delivers_what_a_disabled_endpoint_missed() {
    let rx = Receiver::scripted(|n, _| Reply::status(if n == 0 { 410 } else { 200 })).await;
    let router = Router::start(&base_config(""), &[]);
    let c = Client::new();
    let path = "/v1/accounts/acct/webhook-endpoints";
    let doc = json!({"data": {"type": "webhook-endpoints", "id": "gone", "attributes": {"url": rx.url("/gone")}}});
    assert_eq!(
        api(&c, &router, "POST", path, TOKEN, Some(doc))
            .await
            .status,
        201
    );
    let since =
        humantime::format_rfc3339_millis(std::time::SystemTime::now() - Duration::from_secs(1))
            .to_string();
    let r = c
        .post_event(
            &router,
            "acct",
            &event("user.created", json!({"data": {"id": "g0"}})),
        )
        .await;
    assert_eq!(r.status, 202);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let v = api(&c, &router, "GET", &format!("{path}/gone"), TOKEN, None)
            .await
            .json();
        if v["data"]["attributes"]["status"] == "auto-disabled" {
            break;
        }
        assert!(Instant::now() < deadline, "{v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for id in ["g1", "g2", "g3"] {
        let r = c
            .post_event(
                &router,
                "acct",
                &event("user.created", json!({"data": {"id": id}})),
            )
            .await;
        assert_eq!(r.status, 202);
    }
    let patch = json!({"data": {"type": "webhook-endpoints", "id": "gone", "attributes": {"enabled": true}}});
    let r = api(
        &c,
        &router,
        "PATCH",
        &format!("{path}/gone"),
        TOKEN,
        Some(patch),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let r = api(
        &c,
        &router,
        "POST",
        &format!("{path}/gone/actions/recover?since={since}"),
        TOKEN,
        None,
    )
    .await;
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    assert_eq!(v["meta"]["requeued"], 4, "{v}");
    let got = rx
        .wait_for(Duration::from_secs(20), "g0-g3 after recover", |g| {
            ["g0", "g1", "g2", "g3"].iter().all(|id| {
                g.iter()
                    .any(|r| r.path == "/gone" && String::from_utf8_lossy(&r.body).contains(id))
            })
        })
        .await;
    println!("received {} requests", got.len());
}

/// Finding 6: reading `router.toml` (`cat`, `config check`, an editor)
/// made the running router reload ~3 times a second forever. Now only a
/// change of its content reloads, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_the_config_does_not_reload_it() {
    let router = Router::start(&base_config(""), &[]);
    let path = router.config_path.clone();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(3) {
        let _ = std::fs::read(&path).unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let out = std::process::Command::new(BIN)
        .args(["config", "check", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success());
    // Rewriting the same bytes is not a change either.
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, &text).unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let reloads = router.log().matches("configuration reloaded").count();
    assert_eq!(reloads, 0, "{}", router.log());
    std::fs::write(&path, text + "\n# a real change\n").unwrap();
    wait_log(&router, Duration::from_secs(10), "one reload", |l| {
        l.contains("configuration reloaded")
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(router.log().matches("configuration reloaded").count(), 1);
}

/// Finding 11: `endpoints ping` and `events show` printed a receiver's
/// answer raw: ANSI colours, an OSC title sequence, newlines that break
/// the table. Now human output escapes them; `--json` stays exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_output_escapes_receiver_control_characters() {
    let nasty = "\u{1b}[31mRED\u{1b}]0;pwned\u{7}\nforged line";
    let rx = Receiver::scripted(move |_, _| {
        let mut r = Reply::status(200);
        r.body = bytes::Bytes::from(nasty);
        r
    })
    .await;
    let router = Router::start(&base_config(""), &[]);
    let c = Client::new();
    let doc = json!({"data": {"type": "webhook-endpoints", "id": "p", "attributes": {"url": rx.url("/p")}}});
    assert_eq!(
        api(
            &c,
            &router,
            "POST",
            "/v1/accounts/acct/webhook-endpoints",
            TOKEN,
            Some(doc)
        )
        .await
        .status,
        201
    );

    let (ok, out, err) = cli(
        &router,
        TOKEN,
        &["endpoints", "ping", "--account", "acct", "p"],
    )
    .await;
    assert!(ok, "{err}");
    println!("{out}");
    assert!(!out.contains('\u{1b}') && !out.contains('\u{7}'), "{out:?}");
    assert!(out.contains("\\u{1b}[31mRED"), "{out:?}");
    assert!(
        !out.lines().any(|l| l.starts_with("forged line")),
        "{out:?}"
    );
    let (ok, out, _) = cli(
        &router,
        TOKEN,
        &["endpoints", "ping", "--account", "acct", "p", "--json"],
    )
    .await;
    assert!(ok);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["data"]["attributes"]["responseBody"], nasty);

    let r = c
        .post_event(
            &router,
            "acct",
            &event("user.created", json!({"data": {"id": "1"}})),
        )
        .await;
    let id = r.json()["data"]["id"].as_str().unwrap().to_string();
    rx.wait_for(Duration::from_secs(15), "the delivery", |g| g.len() >= 2)
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (ok, out, err) = cli(
        &router,
        TOKEN,
        &["events", "show", "--account", "acct", &id],
    )
    .await;
    assert!(ok, "{err}");
    println!("{out}");
    assert!(!out.contains('\u{1b}'), "{out:?}");
    assert!(
        !out.lines().any(|l| l.starts_with("forged line")),
        "{out:?}"
    );
}
