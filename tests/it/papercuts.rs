//! Issue #17's papercuts, as a new plugin author and an operator meet them:
//! `config check` agreeing with `serve`, one endpoint rule for router.toml
//! and the API, errors that name the field and the line, `plugin run`
//! errors as JSON, the store lock after `kill -9`, and friends.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use crate::common::*;

const ADMIN: &str = "admin-token-0123456789";

fn check(config: &Path, cwd: &Path) -> (bool, String, String) {
    let out = Command::new(BIN)
        .args(["config", "check", "-c"])
        .arg(config)
        .current_dir(cwd)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `config check` configures the plugins that are present as `serve`
/// does, and both name the endpoint's line and the field; relative paths
/// are the config file's, whatever the working directory.
#[test]
fn config_check_configures_plugins_like_serve_and_names_the_line() {
    let tmp = tempfile::tempdir().unwrap();
    let conf_dir = tmp.path().join("etc");
    std::fs::create_dir_all(conf_dir.join("plugins")).unwrap();
    std::fs::copy(
        test_plugin("misbehave"),
        conf_dir.join("plugins/misbehave.wasm"),
    )
    .unwrap();
    let good = base_config("")
        + &endpoint(
            "crm",
            "http://127.0.0.1:9/x",
            r#"plugins = [ { name = "misbehave", config = { mode = "pass" } } ]"#,
        );
    let path = conf_dir.join("router.toml");
    std::fs::write(&path, &good).unwrap();
    // Run from elsewhere: `plugins` is found next to router.toml.
    let elsewhere = tmp.path();
    let (ok, stdout, stderr) = check(&path, elsewhere);
    assert!(ok, "{stdout}{stderr}");
    assert!(
        stdout.contains(": ok (2 account(s), 1 endpoint(s))"),
        "{stdout}"
    );
    assert!(!stdout.contains("warning"), "{stdout}");

    // A config the plugin cannot deserialize: the field, the line.
    let bad = good.replace(r#"mode = "pass""#, "mode = 5");
    std::fs::write(&path, &bad).unwrap();
    let line = bad.lines().position(|l| l == "[[endpoints]]").unwrap() + 1;
    let (ok, stdout, stderr) = check(&path, elsewhere);
    assert!(!ok, "{stdout}");
    let want = format!(
        "router.toml:{line}: endpoints[0] (\"crm\"): plugin \"misbehave\" rejects its config: `mode`: expected a string, got integer `5`"
    );
    assert!(stderr.contains(&want), "want {want}\ngot {stderr}");
    // `serve` refuses to start with the same line.
    let out = Command::new(BIN)
        .args(["serve", "-c"])
        .arg(&path)
        .current_dir(elsewhere)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let serve_err = String::from_utf8_lossy(&out.stderr);
    assert!(serve_err.contains(&want), "{serve_err}");
    // Logs to a pipe carry no colour codes.
    assert!(!serve_err.contains('\u{1b}'), "{serve_err}");

    // A plugin's own refusal, same shape.
    std::fs::write(
        &path,
        good.replace(r#"mode = "pass""#, r#"mode = "reject""#),
    )
    .unwrap();
    let (ok, _, stderr) = check(&path, elsewhere);
    assert!(!ok);
    assert!(
        stderr.contains(&format!("router.toml:{line}: endpoints[0] (\"crm\"): plugin \"misbehave\" rejects its config: misbehave rejects this configuration on purpose")),
        "{stderr}"
    );

    // A typo: a warning with the nearest plugin that is there.
    std::fs::write(
        &path,
        good.replace("name = \"misbehave\"", "name = \"misbehav\""),
    )
    .unwrap();
    let (ok, stdout, _) = check(&path, elsewhere);
    assert!(ok);
    assert!(
        stdout.contains(&format!(
            "router.toml:{line}: endpoints[0] (\"crm\"): plugin \"misbehav\""
        )) && stdout.contains("did you mean \"misbehave\"?"),
        "{stdout}"
    );

    // No account: a warning.
    std::fs::write(&path, "[server]\nlisten = \"127.0.0.1:0\"\n").unwrap();
    let (ok, stdout, _) = check(&path, elsewhere);
    assert!(ok);
    assert!(stdout.contains("warning: no [[accounts]]"), "{stdout}");
}

/// The same attribute values are accepted or refused by `router.toml` and
/// by the API, and the API names the attribute.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn router_toml_and_the_api_share_one_endpoint_rule() {
    let rx = Receiver::ok().await;
    let router = Router::start(
        &base_config(&format!("admin_token = \"{ADMIN}\"")),
        &[("misbehave", test_plugin("misbehave"))],
    );
    let c = Client::new();
    // (toml lines, API attributes, accepted, pointer when refused)
    let cases: Vec<(&str, Value, bool, &str)> = vec![
        ("signatures = []", json!({"signatures": []}), true, ""),
        (r#"timeout = "5m""#, json!({"timeout": "5m"}), true, ""),
        (
            r#"timeout = "6m""#,
            json!({"timeout": "6m"}),
            false,
            "/data/attributes/timeout",
        ),
        (
            r#"timeout = "0s""#,
            json!({"timeout": "0s"}),
            false,
            "/data/attributes/timeout",
        ),
        (
            "max_in_flight = 1025",
            json!({"maxInFlight": 1025}),
            false,
            "/data/attributes/maxInFlight",
        ),
        (
            r#"plugins = [ { name = "acme.filter" } ]"#,
            json!({"plugins": [{"name": "acme.filter"}]}),
            false,
            "/data/attributes/plugins/0/name",
        ),
        (
            r#"plugins = [ { name = ".hidden" } ]"#,
            json!({"plugins": [{"name": ".hidden"}]}),
            false,
            "/data/attributes/plugins/0/name",
        ),
        (
            r#"signatures = ["rot13"]"#,
            json!({"signatures": ["rot13"]}),
            false,
            "/data/attributes/signatures/0",
        ),
        (
            &*Box::leak(
                format!("retry_schedule = [{}]", vec!["\"1s\""; 101].join(", ")).into_boxed_str(),
            ),
            json!({"retrySchedule": vec!["1s"; 101]}),
            false,
            "/data/attributes/retrySchedule",
        ),
    ];
    for (i, (toml_line, attrs, accepted, pointer)) in cases.iter().enumerate() {
        let text = base_config("") + &endpoint("e", "http://127.0.0.1:9/x", toml_line);
        let parsed = switchyard::config::Config::parse(
            Path::new("router.toml"),
            &text,
            &switchyard::config::ProcessEnv,
        );
        assert_eq!(
            parsed.is_ok(),
            *accepted,
            "router.toml with {toml_line}: {:?}",
            parsed.err().map(|e| e.to_string())
        );
        let mut a = attrs.clone();
        a["url"] = json!(rx.url("/x"));
        let body =
            json!({"data": {"type": "webhook-endpoints", "id": format!("e{i}"), "attributes": a}});
        let r = c
            .request(
                "POST",
                &router.url("/v1/accounts/acct/webhook-endpoints"),
                &[
                    ("authorization", &format!("Bearer {TOKEN}")),
                    ("content-type", "application/vnd.api+json"),
                ],
                body.to_string(),
            )
            .await;
        if *accepted {
            assert_eq!(r.status, 201, "API with {attrs}: {}", r.json());
        } else {
            assert_eq!(r.status, 422, "API with {attrs}: {}", r.json());
            assert_eq!(
                r.json()["errors"][0]["source"]["pointer"],
                *pointer,
                "{attrs}"
            );
            // router.toml's message names the same field.
            let msg = parsed.err().unwrap().to_string();
            let key = pointer
                .rsplit('/')
                .find(|s| s.parse::<usize>().is_err())
                .unwrap();
            let key = match key {
                "maxInFlight" => "max_in_flight",
                "retrySchedule" => "retry_schedule",
                k => k,
            };
            assert!(msg.contains(key), "{key} in {msg}");
        }
    }

    // A plugin name that is not loaded: accepted with a warning naming the
    // nearest loaded plugin.
    let body = json!({"data": {"type": "webhook-endpoints", "id": "typo",
        "attributes": {"url": rx.url("/x"), "plugins": [{"name": "misbehav"}]}}});
    let r = c
        .request(
            "POST",
            &router.url("/v1/accounts/acct/webhook-endpoints"),
            &[
                ("authorization", &format!("Bearer {TOKEN}")),
                ("content-type", "application/vnd.api+json"),
            ],
            body.to_string(),
        )
        .await;
    assert_eq!(r.status, 201);
    let w = r.json()["meta"]["warnings"][0]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(w.contains("did you mean \"misbehave\"?"), "{}", r.json());

    // An account sees the plugins read-only: names and errors, no counters,
    // no paths; the admin sees the counters.
    std::fs::write(router.dir.join("plugins/broken.wasm"), b"not wasm").unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    let r = c
        .request(
            "GET",
            &router.url("/v1/plugins"),
            &[("authorization", &format!("Bearer {TOKEN}"))],
            "",
        )
        .await;
    assert_eq!(r.status, 200);
    let doc = r.json();
    assert!(doc.get("meta").is_none(), "{doc}");
    let names: Vec<&str> = doc["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["id"].as_str())
        .collect();
    assert!(
        names.contains(&"misbehave") && names.contains(&"broken"),
        "{doc}"
    );
    let text = doc.to_string();
    assert!(!text.contains(&router.dir.display().to_string()), "{text}");
    let r = c
        .request(
            "GET",
            &router.url("/v1/plugins"),
            &[("authorization", &format!("Bearer {ADMIN}"))],
            "",
        )
        .await;
    assert!(r.json()["meta"]["calls"].is_u64(), "{}", r.json());
}

/// `webhook-id` is the receivers' dedupe key: sent with no signature too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsigned_endpoints_still_get_webhook_id() {
    let rx = Receiver::ok().await;
    let router = Router::start(
        &(base_config("") + &endpoint("plain", &rx.url("/plain"), "signatures = []")),
        &[],
    );
    let c = Client::new();
    let r = c
        .post_event(
            &router,
            "acct",
            &event("license.created", license_doc("l1", "ACTIVE")),
        )
        .await;
    assert_eq!(r.status, 202);
    let got = rx
        .wait_for(Duration::from_secs(10), "the delivery", |r| !r.is_empty())
        .await;
    assert_eq!(got[0].header("webhook-id").len(), 36, "a UUID");
    assert_eq!(got[0].header("webhook-signature"), "");
}

/// `plugin run` prints a failure as one JSON line too, exits non-zero, and
/// names a Cargo artifact after its crate.
#[test]
fn plugin_run_errors_are_json_and_named_as_deployed() {
    let tmp = tempfile::tempdir().unwrap();
    let ev = tmp.path().join("event.json");
    std::fs::write(
        &ev,
        json!({"event": "license.created", "payload": license_doc("l1", "ACTIVE")}).to_string(),
    )
    .unwrap();
    // A crate laid out as Cargo builds it.
    let krate = tmp.path().join("slack-notify");
    let release = krate.join("target/wasm32-wasip2/release");
    std::fs::create_dir_all(&release).unwrap();
    std::fs::write(
        krate.join("Cargo.toml"),
        "[package]\nname = \"slack-notify\"\nversion = \"0.1.0\"\n",
    )
    .unwrap();
    let wasm = release.join("slack_notify.wasm");
    std::fs::copy(test_plugin("misbehave"), &wasm).unwrap();

    let run = |config: &str| {
        let out = Command::new(BIN)
            .args(["plugin", "run"])
            .arg(&wasm)
            .arg("--event")
            .arg(&ev)
            .args(["--config", config])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert_eq!(
            stdout.trim_end().lines().count(),
            1,
            "one JSON line: {stdout}"
        );
        let v: Value = serde_json::from_str(&stdout).unwrap();
        (
            out.status.success(),
            v,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, v, _) = run(r#"{"mode": "pass"}"#);
    assert!(ok);
    assert_eq!(v["outcome"], "pass");
    assert_eq!(v["plugin"], "slack-notify");

    let (ok, v, stderr) = run(r#"{"mode": "panic"}"#);
    assert!(!ok);
    assert_eq!(v["outcome"], "error");
    assert_eq!(v["kind"], "trap");
    assert_eq!(v["plugin"], "slack-notify");
    let msg = v["message"].as_str().unwrap();
    assert!(
        msg.starts_with("panic at ")
            && msg.contains("src/lib.rs:")
            && msg.ends_with(": misbehave panicked on purpose"),
        "{msg}"
    );
    assert!(!msg.contains('\n'));
    assert!(
        !stderr.contains('\u{1b}'),
        "no colour into a pipe: {stderr}"
    );

    let (ok, v, _) = run(r#"{"mode": 5}"#);
    assert!(!ok);
    assert_eq!(v["kind"], "bad_config");
    assert_eq!(v["message"], "`mode`: expected a string, got integer `5`");

    let (ok, v, _) = run("not json");
    assert!(!ok);
    assert_eq!(v["kind"], "usage");
}

/// A supervisor restarting right after `kill -9`: the new router waits for
/// the store lock instead of failing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_right_after_kill9_waits_for_the_store_lock() {
    let mut first = Router::start(&base_config(""), &[]);
    let dir = first.dir.clone();
    let config = first.config_path.clone();
    let second = std::thread::spawn(move || {
        let out = Command::new(BIN)
            .args(["serve", "-c"])
            .arg(&config)
            .current_dir(&dir)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut child = out;
        use std::io::{BufRead, BufReader};
        let stdout = child.stdout.take().unwrap();
        let line = BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find(|l| l.starts_with("listening on"));
        unsafe_kill(&mut child);
        let mut err = String::new();
        use std::io::Read;
        let _ = child.stderr.take().unwrap().read_to_string(&mut err);
        (line, err)
    });
    std::thread::sleep(Duration::from_millis(1500));
    first.kill9();
    let (line, err) = second.join().unwrap();
    assert!(line.is_some(), "the second router did not start: {err}");
    assert!(err.contains("waiting for the lock"), "{err}");
}

async fn last_error(c: &Client, router: &Router) -> Value {
    let r = c
        .request(
            "GET",
            &router.url("/v1/plugins"),
            &[("authorization", &format!("Bearer {ADMIN}"))],
            "",
        )
        .await;
    r.json()["data"][0]["attributes"]["lastError"].clone()
}

fn unsafe_kill(child: &mut std::process::Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Putting back the version that still serves after a failed load says
/// the error is cleared (and the statuses agree).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn putting_back_the_serving_version_clears_the_error_in_the_log() {
    let router = Router::start(
        &format!("{}\n", base_config(&format!("admin_token = \"{ADMIN}\""))),
        &[("misbehave", test_plugin("misbehave"))],
    );
    let file = router.dir.join("plugins/misbehave.wasm");
    std::fs::write(&file, b"\0asm garbage").unwrap();
    let c = Client::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while last_error(&c, &router).await.is_null() {
        assert!(
            std::time::Instant::now() < deadline,
            "the bad file was not seen"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    std::fs::copy(test_plugin("misbehave"), &file).unwrap();
    while !last_error(&c, &router).await.is_null() {
        assert!(
            std::time::Instant::now() < deadline,
            "the good file was not seen"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let log = router.log();
    assert!(log.contains("last load error cleared"), "{log}");
    // No account declared: said at start-up.
    let empty = Router::start(
        "[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = \"data\"\n",
        &[],
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(empty.log().contains("no [[accounts]]"), "{}", empty.log());
}

/// The sample events cover branches a plugin author wants to try: a large
/// seat count, metadata to filter on, a suspended license, a heartbeat.
#[test]
fn example_events_exercise_plugin_branches() {
    use switchyard::plugins::{Outcome, PluginRuntime, RuntimeSettings, cli};
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/events");
    let rt = PluginRuntime::new(RuntimeSettings::default()).unwrap();
    rt.load_file(&dist_plugin("event-filter")).unwrap();
    let enterprise = rt
        .bind(
            "event-filter",
            &json!({"conditions": [
                {"pointer": "/data/attributes/metadata/tier", "equals": "enterprise"},
                {"pointer": "/data/attributes/maxMachines", "exists": true}]}),
        )
        .unwrap();
    let suspended = rt
        .bind(
            "event-filter",
            &json!({"conditions": [{"pointer": "/data/attributes/suspended", "equals": true}]}),
        )
        .unwrap();
    let heartbeat = rt
        .bind("event-filter", &json!({"include": ["machine.heartbeat.*"]}))
        .unwrap();
    let mut passed = std::collections::BTreeMap::new();
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    for f in &files {
        let doc: Value = serde_json::from_str(&std::fs::read_to_string(f).unwrap()).unwrap();
        let ev = cli::event_from_json(&doc).unwrap();
        for (what, b) in [
            ("enterprise", &enterprise),
            ("suspended", &suspended),
            ("heartbeat", &heartbeat),
        ] {
            if b.call(&ev).unwrap() == Outcome::Pass {
                passed
                    .entry(what)
                    .or_insert_with(Vec::new)
                    .push(ev.event_type.clone());
            }
        }
    }
    assert_eq!(passed["enterprise"], vec!["license.updated"], "{passed:?}");
    assert_eq!(passed["suspended"], vec!["license.suspended"], "{passed:?}");
    assert_eq!(
        passed["heartbeat"],
        vec!["machine.heartbeat.ping"],
        "{passed:?}"
    );
}
