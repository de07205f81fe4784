//! The plugin runtime against real components built from source by
//! `host/build.rs` (`plugins/event-filter`, `tests/plugins/misbehave`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use switchyard::plugins::*;

/// Bundled plugins from `plugins/dist` (where `router.toml` loads them),
/// test plugins from the nested build's target dir.
fn artifact(name: &str) -> PathBuf {
    let dist = Path::new(env!("SWITCHYARD_PLUGIN_DIST_DIR")).join(format!("{name}.wasm"));
    if dist.exists() {
        return dist;
    }
    Path::new(env!("SWITCHYARD_TEST_PLUGIN_DIR")).join(format!("{}.wasm", name.replace('-', "_")))
}

fn bytes(name: &str) -> Vec<u8> {
    std::fs::read(artifact(name)).expect("plugin artifact (built by host/build.rs)")
}

/// Timing-sensitive tests (deadline bounds, reload within 2 s) run alone;
/// the others share the box. The machine has two cores.
static SERIAL: std::sync::RwLock<()> = std::sync::RwLock::new(());

fn shared() -> std::sync::RwLockReadGuard<'static, ()> {
    SERIAL.read().unwrap_or_else(|e| e.into_inner())
}

fn exclusive() -> std::sync::RwLockWriteGuard<'static, ()> {
    SERIAL.write().unwrap_or_else(|e| e.into_inner())
}

fn settings() -> RuntimeSettings {
    RuntimeSettings {
        deadline: Duration::from_millis(50),
        ..RuntimeSettings::default()
    }
}

/// Settings for tests that are not about the deadline.
fn relaxed() -> RuntimeSettings {
    RuntimeSettings {
        deadline: Duration::from_secs(2),
        ..settings()
    }
}

fn runtime() -> PluginRuntime {
    let rt = PluginRuntime::new(settings()).unwrap();
    rt.load_file(&artifact("event-filter")).unwrap();
    rt.load_file(&artifact("misbehave")).unwrap();
    rt
}

fn event(event_type: &str, status: &str) -> PluginEvent {
    PluginEvent {
        id: "0193a0c4-0000-7000-8000-000000000001".into(),
        account: "acct".into(),
        endpoint: "ep".into(),
        event_type: event_type.into(),
        created: "2026-01-02T03:04:05.000Z".into(),
        created_ms: 1_767_323_045_000,
        payload: json!({
            "data": {"id": "lic-1", "type": "licenses",
                     "attributes": {"status": status, "uses": 3}},
            "meta": {"valid": true, "code": "VALID"}
        })
        .to_string()
        .into_bytes(),
    }
}

fn misbehave(rt: &PluginRuntime, config: Value) -> Binding {
    rt.bind("misbehave", &config).unwrap()
}

fn assert_healthy(rt: &PluginRuntime) {
    let b = misbehave(rt, json!({"mode": "pass"}));
    assert_eq!(
        b.call(&event("license.created", "ACTIVE")).unwrap(),
        Outcome::Pass
    );
}

#[test]
fn event_filter_pass_and_skip() {
    let _serial = shared();
    let rt = runtime();
    let f = rt
        .bind(
            "event-filter",
            &json!({
                "include": ["license.*"],
                "conditions": [{"pointer": "/data/attributes/status", "equals": "EXPIRED"}]
            }),
        )
        .unwrap();
    assert_eq!(f.plugin(), "event-filter");
    assert_eq!(
        f.call(&event("license.expired", "EXPIRED")).unwrap(),
        Outcome::Pass
    );
    match f.call(&event("license.expired", "ACTIVE")).unwrap() {
        Outcome::Skip(r) => assert!(r.contains("conditions"), "{r}"),
        o => panic!("{o:?}"),
    }
    match f.call(&event("user.created", "EXPIRED")).unwrap() {
        Outcome::Skip(r) => assert!(r.contains("not included"), "{r}"),
        o => panic!("{o:?}"),
    }
    let e = rt
        .bind("event-filter", &json!({"include": ["lic*nse"]}))
        .err()
        .unwrap();
    assert_eq!(e.kind, PluginErrorKind::BadConfig);
}

#[test]
fn misbehave_outcomes() {
    let _serial = shared();
    let rt = runtime();
    let ev = event("license.created", "ACTIVE");
    assert_eq!(
        misbehave(&rt, json!({"mode": "pass"})).call(&ev).unwrap(),
        Outcome::Pass
    );
    assert_eq!(
        misbehave(&rt, json!({"mode": "skip", "tag": "t"}))
            .call(&ev)
            .unwrap(),
        Outcome::Skip("t skipped it".into())
    );
    match misbehave(&rt, json!({"mode": "rewrite", "tag": "t"}))
        .call(&ev)
        .unwrap()
    {
        Outcome::Rewrite(p) => {
            let v: Value = serde_json::from_slice(&p).unwrap();
            assert_eq!(v, json!({"rewritten": true, "tag": "t"}));
        }
        o => panic!("{o:?}"),
    }
    let b = misbehave(
        &rt,
        json!({"tag": "x", "headers": [["Authorization", "Basic eDo="]]}),
    );
    match b.call(&ev).unwrap() {
        Outcome::Replace {
            body,
            content_type,
            headers,
        } => {
            let v: Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(v["tag"], "x");
            assert_eq!(v["event"], "license.created");
            assert_eq!(v["id"], ev.id.as_str());
            assert_eq!(content_type, "application/json");
            assert_eq!(
                headers,
                vec![("Authorization".to_string(), "Basic eDo=".to_string())]
            );
        }
        o => panic!("{o:?}"),
    }
    let e = misbehave(&rt, json!({"mode": "error"}))
        .call(&ev)
        .unwrap_err();
    assert_eq!(e.kind, PluginErrorKind::BadInput);
    assert!(e.message.contains("refuses"), "{}", e.message);
}

#[test]
fn panic_is_a_trap_with_the_message() {
    let _serial = shared();
    let rt = runtime();
    let b = misbehave(&rt, json!({"mode": "panic"}));
    for _ in 0..2 {
        let e = b.call(&event("license.created", "ACTIVE")).unwrap_err();
        assert_eq!(e.kind, PluginErrorKind::Trap, "{e}");
        assert!(
            e.message.contains("misbehave panicked on purpose"),
            "{}",
            e.message
        );
        assert_eq!(e.plugin, "misbehave");
    }
    assert_healthy(&rt);
}

#[test]
fn loop_hits_the_deadline_within_twice_the_deadline() {
    let _serial = exclusive();
    let rt = runtime();
    let b = misbehave(&rt, json!({"mode": "loop"}));
    for _ in 0..3 {
        let start = Instant::now();
        let e = b.call(&event("license.created", "ACTIVE")).unwrap_err();
        let elapsed = start.elapsed();
        assert_eq!(e.kind, PluginErrorKind::Deadline, "{e}");
        // The instance is warm (configured at bind), so this is the call alone.
        assert!(
            elapsed < Duration::from_millis(100 + 10),
            "took {elapsed:?}"
        );
        assert!(elapsed >= Duration::from_millis(45), "took {elapsed:?}");
    }
    assert_healthy(&rt);
}

#[test]
fn unbounded_allocation_is_out_of_memory() {
    let _serial = exclusive();
    // Filling 32 MiB takes a while on a loaded box: this is about the cap.
    let rt = PluginRuntime::new(RuntimeSettings {
        deadline: Duration::from_secs(2),
        ..settings()
    })
    .unwrap();
    rt.load_file(&artifact("misbehave")).unwrap();
    let b = misbehave(&rt, json!({"mode": "alloc"}));
    let e = b.call(&event("license.created", "ACTIVE")).unwrap_err();
    assert_eq!(e.kind, PluginErrorKind::OutOfMemory, "{e}");
    assert!(e.message.contains("32 MiB"), "{}", e.message);
    assert_healthy(&rt);
    // The binding recovers with a fresh instance and fails the same way.
    let e = b.call(&event("license.created", "ACTIVE")).unwrap_err();
    assert_eq!(e.kind, PluginErrorKind::OutOfMemory, "{e}");
    let stats = rt.stats();
    assert!(
        stats.call_errors_by_kind.contains(&("out_of_memory", 2)),
        "{stats:?}"
    );
}

#[test]
fn rejected_config_fails_at_bind() {
    let _serial = shared();
    let rt = runtime();
    let e = rt
        .bind("misbehave", &json!({"mode": "reject"}))
        .err()
        .unwrap();
    assert_eq!(e.kind, PluginErrorKind::BadConfig);
    assert!(
        e.message.contains("rejects this configuration on purpose"),
        "{}",
        e.message
    );
    assert_healthy(&rt);
}

#[test]
fn output_rules_are_enforced() {
    let _serial = shared();
    let rt = PluginRuntime::new(RuntimeSettings {
        max_output: 1000,
        ..settings()
    })
    .unwrap();
    rt.load_file(&artifact("misbehave")).unwrap();
    let ev = event("license.created", "ACTIVE");
    for headers in [
        json!([["Host", "evil.example"]]),
        json!([["content-length", "1"]]),
        json!([["Transfer-Encoding", "chunked"]]),
        json!([["Webhook-Signature", "v1,xxx"]]),
        json!([["Keygen-Signature", "x"]]),
        json!([["bad header", "x"]]),
        json!([["X-Split", "a\r\nInjected: yes"]]),
        json!([["X-Nul", "a\u{0}b"]]),
    ] {
        let b = misbehave(&rt, json!({"headers": headers}));
        let e = b.call(&ev).unwrap_err();
        assert_eq!(e.kind, PluginErrorKind::InvalidOutput, "{headers}: {e}");
    }
    let e = misbehave(&rt, json!({"mode": "huge", "size": 1001}))
        .call(&ev)
        .unwrap_err();
    assert_eq!(e.kind, PluginErrorKind::InvalidOutput);
    assert!(e.message.contains("1001 bytes"), "{}", e.message);
    assert!(
        misbehave(&rt, json!({"mode": "huge", "size": 1000}))
            .call(&ev)
            .is_ok()
    );
    assert_healthy(&rt);
}

#[test]
fn binding_before_load_is_not_loaded_then_configures_lazily() {
    let _serial = shared();
    let rt = PluginRuntime::new(settings()).unwrap();
    let good = rt.bind("misbehave", &json!({"mode": "pass"})).unwrap();
    let bad = rt.bind("misbehave", &json!({"mode": "reject"})).unwrap();
    let ev = event("license.created", "ACTIVE");
    assert_eq!(good.call(&ev).unwrap_err().kind, PluginErrorKind::NotLoaded);
    assert!(!rt.is_loaded("misbehave"));
    rt.load_file(&artifact("misbehave")).unwrap();
    assert!(rt.is_loaded("misbehave"));
    assert_eq!(good.call(&ev).unwrap(), Outcome::Pass);
    assert_eq!(bad.call(&ev).unwrap_err().kind, PluginErrorKind::BadConfig);
    assert!(rt.unload("misbehave"));
    assert_eq!(good.call(&ev).unwrap_err().kind, PluginErrorKind::NotLoaded);
}

#[test]
fn not_a_component_and_wrong_world() {
    let _serial = shared();
    let rt = PluginRuntime::new(settings()).unwrap();
    let e = rt.load_bytes("garbage", b"hello, not wasm").unwrap_err();
    assert_eq!(e.kind, PluginErrorKind::NotAComponent);
    let e = rt.load_bytes("core", b"\0asm\x01\0\0\0").unwrap_err();
    assert_eq!(e.kind, PluginErrorKind::NotAComponent);
    assert!(e.message.contains("wasm32-wasip2"), "{}", e.message);
    // An empty (valid) component: exports nothing.
    let e = rt.load_bytes("empty", b"\0asm\x0d\0\x01\0").unwrap_err();
    assert_eq!(e.kind, PluginErrorKind::WrongWorld, "{e}");
    let half = bytes("misbehave");
    let e = rt.load_bytes("half", &half[..half.len() / 2]).unwrap_err();
    assert_eq!(e.kind, PluginErrorKind::NotAComponent, "{e}");
    assert_eq!(rt.stats().load_failures, 4);
    let st = rt.statuses();
    assert_eq!(st.len(), 4);
    assert!(st.iter().all(|s| !s.loaded && s.last_error.is_some()));
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if f() {
            return start.elapsed();
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("timed out after {timeout:?} waiting for {what}");
}

#[test]
fn hot_reload() {
    let _serial = exclusive();
    let dir = tempfile::tempdir().unwrap();
    let rt = PluginRuntime::new(settings()).unwrap();
    assert!(rt.load_dir(dir.path()).is_empty());
    let _watch = switchyard::plugins::PluginWatcher::start(rt.clone(), dir.path()).unwrap();
    // `{}` is a valid config for both plugins: event-filter passes
    // everything, misbehave replaces the body.
    let b = rt.bind("p", &json!({})).unwrap();
    let ev = event("license.created", "ACTIVE");
    let path = dir.path().join("p.wasm");
    let is_replace = |b: &Binding| matches!(b.call(&ev), Ok(Outcome::Replace { .. }));

    // New file → loaded.
    std::fs::write(&path, bytes("event-filter")).unwrap();
    wait_for("first load", Duration::from_secs(2), || {
        b.call(&ev) == Ok(Outcome::Pass)
    });
    let v1 = rt.statuses()[0].version;

    // New version → new behaviour within 2 s.
    std::fs::write(&path, bytes("misbehave")).unwrap();
    wait_for("reload", Duration::from_secs(2), || is_replace(&b));
    assert!(rt.statuses()[0].version > v1);
    assert_eq!(rt.stats().reloads, 1);

    // Garbage, a core module, a component of the wrong world: the old
    // version keeps answering and the error is reported.
    for (what, junk) in [
        ("garbage", b"this is not wasm at all".to_vec()),
        ("core module", b"\0asm\x01\0\0\0".to_vec()),
        ("wrong world", b"\0asm\x0d\0\x01\0".to_vec()),
    ] {
        let failures = rt.stats().load_failures;
        std::fs::write(&path, &junk).unwrap();
        wait_for(what, Duration::from_secs(2), || {
            rt.stats().load_failures > failures
        });
        assert!(is_replace(&b), "{what}: old version no longer serving");
        let st = &rt.statuses()[0];
        assert!(st.loaded);
        let err = st.last_error.clone().unwrap_or_default();
        assert!(!err.is_empty(), "{what}: no error in statuses");
        if what == "wrong world" {
            assert!(err.contains("wrong_world"), "{err}");
        }
    }

    // Editor temp files and other names are ignored.
    std::fs::write(dir.path().join(".p.wasm.swp"), b"x").unwrap();
    std::fs::write(dir.path().join("p.wasm~"), b"x").unwrap();
    std::fs::write(dir.path().join("p.wasm.tmp"), b"x").unwrap();
    std::fs::write(dir.path().join("notes.txt"), b"x").unwrap();

    // Delete → unloaded.
    std::fs::remove_file(&path).unwrap();
    wait_for("unload", Duration::from_secs(2), || {
        b.call(&ev).err().map(|e| e.kind) == Some(PluginErrorKind::NotLoaded)
    });
    assert!(!rt.is_loaded("p"));

    // A half-written file is not loaded as garbage; the complete one is.
    let full = bytes("event-filter");
    let (head, tail) = full.split_at(full.len() / 2);
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&path).unwrap();
        f.write_all(head).unwrap();
        f.flush().unwrap();
        std::thread::sleep(Duration::from_millis(600));
        assert!(b.call(&ev).is_err(), "half a file must not serve");
        f.write_all(tail).unwrap();
    }
    wait_for("complete file", Duration::from_secs(2), || {
        b.call(&ev) == Ok(Outcome::Pass)
    });
    assert_eq!(rt.statuses()[0].last_error, None);
    // Other names never showed up.
    assert_eq!(rt.statuses().len(), 1, "{:?}", rt.statuses());
}

#[test]
fn reload_refused_by_a_live_binding_keeps_the_old_version() {
    let _serial = shared();
    let rt = PluginRuntime::new(settings()).unwrap();
    rt.load_file(&artifact("misbehave")).unwrap();
    // Valid for misbehave, unknown fields for event-filter (deny_unknown_fields).
    let b = rt
        .bind("misbehave", &json!({"mode": "pass", "tag": "x"}))
        .unwrap();
    let e = rt
        .load_bytes("misbehave", &bytes("event-filter"))
        .unwrap_err();
    assert_eq!(e.kind, PluginErrorKind::BadConfig, "{e}");
    assert_eq!(
        b.call(&event("license.created", "ACTIVE")).unwrap(),
        Outcome::Pass
    );
    assert!(
        rt.statuses()[0]
            .last_error
            .as_deref()
            .unwrap()
            .contains("bad_config")
    );
}

#[test]
fn thousand_concurrent_calls() {
    let _serial = shared();
    // The epoch deadline is wall-clock time: with 8 threads on 2 cores (and
    // a shared box) a call can wait longer than 50 ms for a core. This test
    // is about concurrency, so it gets a generous deadline.
    let rt = PluginRuntime::new(relaxed()).unwrap();
    rt.load_file(&artifact("event-filter")).unwrap();
    rt.load_file(&artifact("misbehave")).unwrap();
    let b = misbehave(&rt, json!({"tag": "c"}));
    let f = rt
        .bind("event-filter", &json!({"include": ["license.*"]}))
        .unwrap();
    let ok = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    std::thread::scope(|s| {
        for t in 0..8 {
            let (b, f, ok) = (b.clone(), f.clone(), ok.clone());
            s.spawn(move || {
                for i in 0..125 {
                    let mut ev = event(
                        if i % 2 == 0 {
                            "license.created"
                        } else {
                            "user.created"
                        },
                        "ACTIVE",
                    );
                    ev.id = format!("{t}-{i}");
                    match b.call(&ev).unwrap() {
                        Outcome::Replace { body, .. } => {
                            let v: Value = serde_json::from_slice(&body).unwrap();
                            assert_eq!(v["id"], ev.id.as_str());
                            assert_eq!(v["event"], ev.event_type.as_str());
                        }
                        o => panic!("{o:?}"),
                    }
                    let expect_pass = i % 2 == 0;
                    assert_eq!(f.call(&ev).unwrap() == Outcome::Pass, expect_pass);
                    ok.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            });
        }
    });
    assert_eq!(ok.load(std::sync::atomic::Ordering::Relaxed), 1000);
    assert!(rt.stats().calls >= 2000);
    assert_eq!(rt.stats().call_errors, 0);
}

#[test]
fn compiled_artifacts_are_cached() {
    let _serial = shared();
    let cache = tempfile::tempdir().unwrap();
    let s = RuntimeSettings {
        cache_dir: Some(cache.path().to_path_buf()),
        ..settings()
    };
    let first = PluginRuntime::new(s.clone()).unwrap();
    let r = first.load_file(&artifact("misbehave")).unwrap();
    assert!(!r.from_cache);
    assert_eq!((first.stats().compiles, first.stats().cache_hits), (1, 0));
    drop(first);

    let second = PluginRuntime::new(s.clone()).unwrap();
    let r = second.load_file(&artifact("misbehave")).unwrap();
    assert!(r.from_cache);
    assert_eq!((second.stats().compiles, second.stats().cache_hits), (0, 1));
    assert_healthy(&second);

    // A corrupt entry is recompiled, never trusted.
    for entry in std::fs::read_dir(cache.path()).unwrap() {
        let p = entry.unwrap().path();
        let mut data = std::fs::read(&p).unwrap();
        let n = data.len();
        data[n / 2] ^= 0xff;
        std::fs::write(&p, &data).unwrap();
    }
    let third = PluginRuntime::new(s).unwrap();
    let r = third.load_file(&artifact("misbehave")).unwrap();
    assert!(!r.from_cache);
    assert_healthy(&third);
}

#[test]
fn fresh_instance_strategy_works_too() {
    let _serial = shared();
    let rt = PluginRuntime::with_options(
        settings(),
        RuntimeOptions {
            warm_instances: false,
            ..RuntimeOptions::default()
        },
    )
    .unwrap();
    rt.load_file(&artifact("misbehave")).unwrap();
    let b = misbehave(&rt, json!({"mode": "skip", "tag": "f"}));
    for _ in 0..3 {
        assert_eq!(
            b.call(&event("x.y", "A")).unwrap(),
            Outcome::Skip("f skipped it".into())
        );
    }
    let e = misbehave(&rt, json!({"mode": "panic"}))
        .call(&event("x.y", "A"))
        .unwrap_err();
    assert_eq!(e.kind, PluginErrorKind::Trap);
}

#[test]
fn cli_run_output_shape() {
    let _serial = exclusive();
    let dir = tempfile::tempdir().unwrap();
    let ev = dir.path().join("event.json");
    std::fs::write(
        &ev,
        json!({"event": "license.created", "payload": {"data": {"id": "l1", "type": "licenses",
              "attributes": {"status": "ACTIVE"}}}})
        .to_string(),
    )
    .unwrap();
    let wasm = artifact("misbehave");
    let out = cli::cli_run(
        wasm.to_str().unwrap(),
        None,
        &ev,
        Some(r#"{"tag": "cli", "headers": [["X-A", "1"]]}"#),
        settings(),
        None,
    )
    .unwrap();
    assert_eq!(out["outcome"], "replace");
    assert_eq!(out["content_type"], "application/json");
    assert_eq!(out["headers"], json!({"X-A": "1"}));
    let body: Value = serde_json::from_str(out["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["tag"], "cli");
    assert_eq!(body["event"], "license.created");
    // A uuid was filled in.
    assert_eq!(body["id"].as_str().unwrap().len(), 36);
    assert!(out["duration_us"].is_u64());
    assert!(out.get("reason").is_none());

    // Name lookup in a plugins dir, skip outcome, config from @file.
    let plugins = tempfile::tempdir().unwrap();
    std::fs::copy(&wasm, plugins.path().join("mb.wasm")).unwrap();
    let cfg = dir.path().join("cfg.json");
    std::fs::write(&cfg, r#"{"mode": "skip", "tag": "t"}"#).unwrap();
    let at = format!("@{}", cfg.display());
    let out = cli::cli_run("mb", None, &ev, Some(&at), settings(), Some(plugins.path())).unwrap();
    assert_eq!(out["outcome"], "skip");
    assert_eq!(out["reason"], "t skipped it");
    assert!(out.get("body").is_none());

    // Actionable errors.
    let e = cli::cli_run("nope", None, &ev, None, settings(), Some(plugins.path())).unwrap_err();
    assert!(format!("{e:#}").contains("plugins dir"), "{e:#}");
    let e = cli::cli_run(
        "mb",
        None,
        &ev,
        Some(r#"{"mode":"reject"}"#),
        settings(),
        Some(plugins.path()),
    )
    .unwrap_err();
    assert!(
        format!("{e:#}").contains("rejects this configuration"),
        "{e:#}"
    );
    let e = cli::cli_run(
        "mb",
        None,
        &ev,
        Some(r#"{"mode":"loop"}"#),
        settings(),
        Some(plugins.path()),
    )
    .unwrap_err();
    assert!(format!("{e:#}").contains("--deadline-ms"), "{e:#}");
    let e = cli::cli_run(
        "mb",
        None,
        &ev,
        Some(r#"{"mode":"panic"}"#),
        settings(),
        Some(plugins.path()),
    )
    .unwrap_err();
    assert!(format!("{e:#}").contains("panicked on purpose"), "{e:#}");
    let e = cli::cli_run(
        "mb",
        None,
        &ev,
        Some(r#"{"mode":"alloc"}"#),
        RuntimeSettings {
            deadline: Duration::from_secs(2),
            ..settings()
        },
        Some(plugins.path()),
    )
    .unwrap_err();
    assert!(format!("{e:#}").contains("memory cap"), "{e:#}");
    std::fs::write(plugins.path().join("core.wasm"), b"\0asm\x01\0\0\0").unwrap();
    let e = cli::cli_run("core", None, &ev, None, settings(), Some(plugins.path())).unwrap_err();
    assert!(format!("{e:#}").contains("--target wasm32-wasip2"), "{e:#}");

    let check = cli::cli_check(&wasm, settings()).unwrap();
    assert_eq!(check["world"], "switchyard:plugin/batching-plugin@0.2.0");
    assert_eq!(
        check["exports"],
        json!(["configure", "handle", "switchyard:plugin/batch@0.2.0"])
    );
    assert_eq!(check["sha256"].as_str().unwrap().len(), 64);
}

#[test]
fn switchyard_plugin_run_binary() {
    let _serial = shared();
    use std::process::Command;
    let dir = tempfile::tempdir().unwrap();
    let ev = dir.path().join("event.json");
    std::fs::write(
        &ev,
        json!({"event": "license.expired", "id": "evt-1", "created": "2026-01-02T03:04:05Z",
               "payload": {"data": {"id": "l1", "type": "licenses", "attributes": {"status": "EXPIRED"}}}})
        .to_string(),
    )
    .unwrap();
    let bin = env!("CARGO_BIN_EXE_switchyard");
    let wasm = artifact("misbehave");

    let out = Command::new(bin)
        .args(["plugin", "run", wasm.to_str().unwrap(), "--event"])
        .arg(&ev)
        .args(["--config", r#"{"tag": "bin"}"#])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        stdout.trim_end().lines().count(),
        1,
        "one line of JSON: {stdout}"
    );
    let v: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["outcome"], "replace");
    let body: Value = serde_json::from_str(v["body"].as_str().unwrap()).unwrap();
    assert_eq!(
        body,
        json!({"tag": "bin", "event": "license.expired", "id": "evt-1"})
    );

    // A name in --plugins-dir, event-filter skipping.
    let plugins = tempfile::tempdir().unwrap();
    std::fs::copy(
        artifact("event-filter"),
        plugins.path().join("event-filter.wasm"),
    )
    .unwrap();
    let out = Command::new(bin)
        .args(["plugin", "run", "event-filter", "--event"])
        .arg(&ev)
        .args(["--config", r#"{"include": ["user.*"]}"#, "--plugins-dir"])
        .arg(plugins.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["outcome"], "skip");
    assert!(v["reason"].as_str().unwrap().contains("not included"));

    // Deadline: exit 1, actionable message on stderr, the error as one
    // JSON line on stdout.
    let out = Command::new(bin)
        .args(["plugin", "run", wasm.to_str().unwrap(), "--event"])
        .arg(&ev)
        .args(["--config", r#"{"mode": "loop"}"#, "--deadline-ms", "20"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("deadline") && stderr.contains("--deadline-ms"),
        "{stderr}"
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["outcome"], "error");
    assert_eq!(v["kind"], "deadline");

    let out = Command::new(bin)
        .args(["plugin", "check"])
        .arg(&wasm)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["world"], "switchyard:plugin/batching-plugin@0.2.0");
    assert_eq!(
        v["exports"],
        json!(["configure", "handle", "switchyard:plugin/batch@0.2.0"])
    );
}

#[test]
fn many_bindings_do_not_exhaust_a_small_pool() {
    let _serial = shared();
    // 8 pool slots, 40 bindings: idle warm instances are capped so calls
    // always find a slot for a fresh instance.
    let rt = PluginRuntime::with_options(
        relaxed(),
        RuntimeOptions {
            pool_instances: 8,
            ..RuntimeOptions::default()
        },
    )
    .unwrap();
    assert!(rt.stats().pooling);
    rt.load_file(&artifact("misbehave")).unwrap();
    let bindings: Vec<Binding> = (0..40)
        .map(|i| misbehave(&rt, json!({"mode": "skip", "tag": format!("b{i}")})))
        .collect();
    for round in 0..3 {
        for (i, b) in bindings.iter().enumerate() {
            let out = b.call(&event("license.created", "ACTIVE"));
            assert_eq!(
                out,
                Ok(Outcome::Skip(format!("b{i} skipped it"))),
                "round {round}"
            );
        }
    }
    std::thread::scope(|s| {
        for chunk in bindings.chunks(10) {
            s.spawn(move || {
                for b in chunk {
                    assert!(b.call(&event("license.created", "ACTIVE")).is_ok());
                }
            });
        }
    });
}
