//! Plugins written in Python (componentize-py) and JavaScript
//! (componentize-js), built from source here with the toolchains that
//! `tests/ci/polyglot.sh` installs:
//!
//! * the `event-filter` examples (`examples/plugins/{python,js}/event-filter`,
//!   built with the first shell block of their READMEs) answer exactly like
//!   the bundled Rust plugin on every event of `examples/events/`;
//! * misbehaving Python and JS plugins (endless loop, unbounded allocation,
//!   an exception) are contained by the deadline and the memory cap, with
//!   the error kind named, and other plugins keep working;
//! * what the sandbox shows a Python / JS plugin: no files, no environment,
//!   a frozen clock, (deterministic) randomness.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};
use switchyard::plugins::*;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("host/ has a parent")
        .to_path_buf()
}

/// componentize-js as installed by tests/ci/polyglot.sh.
fn componentize_js() -> PathBuf {
    let js = repo().join("target/js-toolchain/node_modules/.bin/componentize-js");
    assert!(
        js.exists(),
        "{} is missing: run `bash tests/ci/polyglot.sh` first (installs componentize-py and componentize-js)",
        js.display()
    );
    js
}

fn newest_mtime(paths: &[PathBuf]) -> SystemTime {
    let mut newest = SystemTime::UNIX_EPOCH;
    for p in paths {
        let entries: Vec<PathBuf> = if p.is_dir() {
            std::fs::read_dir(p)
                .unwrap()
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.is_file()
                        && p.extension()
                            .is_some_and(|e| e == "py" || e == "mjs" || e == "wit" || e == "md")
                })
                .collect()
        } else {
            vec![p.clone()]
        };
        for e in entries {
            if let Ok(t) = std::fs::metadata(&e).and_then(|m| m.modified()) {
                newest = newest.max(t);
            }
        }
    }
    newest
}

/// True when `out` exists and is newer than every source it is built from.
fn fresh(out: &Path, sources: &[PathBuf]) -> bool {
    std::fs::metadata(out)
        .and_then(|m| m.modified())
        .is_ok_and(|t| t > newest_mtime(sources))
}

/// Builds serialize: two toolchains at once would only slow each other.
static BUILD: Mutex<()> = Mutex::new(());

fn run_script(dir: &Path, script: &str) {
    let out = Command::new("bash")
        .arg("-euo")
        .arg("pipefail")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .env("COMPONENTIZE_JS", componentize_js())
        .output()
        .expect("bash runs");
    assert!(
        out.status.success(),
        "build in {} failed:\n{script}\nstdout: {}\nstderr: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The first ```sh block of a README.
pub(crate) fn first_sh_block(readme: &Path) -> String {
    let text = std::fs::read_to_string(readme).unwrap();
    let start = text.find("```sh\n").expect("README has a ```sh block") + 6;
    let end = text[start..].find("```").unwrap() + start;
    text[start..end].to_string()
}

/// Builds `examples/plugins/<lang>/event-filter` with its README's first
/// shell block (unless the artifact is newer than its sources).
fn example(lang: &str) -> PathBuf {
    let _build = BUILD.lock().unwrap_or_else(|e| e.into_inner());
    let dir = repo()
        .join("examples/plugins")
        .join(lang)
        .join("event-filter");
    let out = dir.join("event-filter.wasm");
    let helper = match lang {
        "python" => repo().join("guest-sdk/python/switchyard_plugin.py"),
        _ => repo().join("guest-sdk/js/switchyard-plugin.mjs"),
    };
    let sources = [
        dir.join("app.py"),
        dir.join("plugin.mjs"),
        dir.join("README.md"),
        helper,
        repo().join("wit/plugin.wit"),
    ];
    if !fresh(&out, &sources) {
        run_script(&dir, &first_sh_block(&dir.join("README.md")));
    }
    assert!(out.exists(), "{} was not built", out.display());
    out
}

/// Builds a test plugin of `tests/plugins/polyglot/<name>` into
/// `target/polyglot/<name>.wasm`.
fn probe(name: &str) -> PathBuf {
    let _build = BUILD.lock().unwrap_or_else(|e| e.into_inner());
    let root = repo();
    let src = root.join("tests/plugins/polyglot").join(name);
    let out_dir = root.join("target/polyglot");
    std::fs::create_dir_all(&out_dir).unwrap();
    let out = out_dir.join(format!("{name}.wasm"));
    let sources = [
        src.clone(),
        root.join("guest-sdk/python/switchyard_plugin.py"),
        root.join("guest-sdk/js/switchyard-plugin.mjs"),
        root.join("wit/plugin.wit"),
    ];
    if fresh(&out, &sources) {
        return out;
    }
    if src.join("app.py").exists() {
        let script = format!(
            "componentize-py -d {wit} -w plugin componentize -p {sdk} -p . app -o {out}",
            wit = root.join("wit").display(),
            sdk = root.join("guest-sdk/python").display(),
            out = out.display()
        );
        run_script(&src, &script);
    } else {
        // componentize-js resolves `./switchyard-plugin.mjs` next to the
        // source: build from a scratch copy holding both.
        let scratch = tempfile::tempdir().unwrap();
        std::fs::copy(src.join("plugin.mjs"), scratch.path().join("plugin.mjs")).unwrap();
        std::fs::copy(
            root.join("guest-sdk/js/switchyard-plugin.mjs"),
            scratch.path().join("switchyard-plugin.mjs"),
        )
        .unwrap();
        let script = format!(
            "\"$COMPONENTIZE_JS\" plugin.mjs --wit {wit} --world-name plugin \
             --disable random stdio clocks http fetch-event -o {out}",
            wit = root.join("wit").display(),
            out = out.display()
        );
        run_script(scratch.path(), &script);
    }
    out
}

fn rust_filter() -> PathBuf {
    PathBuf::from(env!("SWITCHYARD_PLUGIN_DIST_DIR")).join("event-filter.wasm")
}

/// The compiled-artifact cache the tests share: each Python / JS component
/// is compiled once (tens of seconds on a loaded box), then deserialized.
fn cache() -> PathBuf {
    repo().join("target/polyglot/cache")
}

fn settings() -> RuntimeSettings {
    RuntimeSettings {
        // Not a deadline test: the box is shared while these run.
        deadline: Duration::from_secs(1),
        cache_dir: Some(cache()),
        ..RuntimeSettings::default()
    }
}

fn events() -> Vec<(String, PluginEvent)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo().join("examples/events"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert!(files.len() >= 5, "examples/events holds the sample events");
    files
        .into_iter()
        .map(|p| {
            let doc: Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
            let ev = switchyard::plugins::cli::event_from_json(&doc).unwrap();
            (p.file_name().unwrap().to_string_lossy().into_owned(), ev)
        })
        .collect()
}

/// An outcome or the error kind, comparable across languages.
fn answer(binding: &Binding, event: &PluginEvent) -> Result<Outcome, PluginErrorKind> {
    binding.call(event).map_err(|e| e.kind)
}

fn pe(event_type: &str, payload: &[u8]) -> PluginEvent {
    PluginEvent {
        id: "e1".into(),
        account: "acct".into(),
        endpoint: "ep".into(),
        event_type: event_type.into(),
        created: "2024-05-01T12:00:00.000Z".into(),
        created_ms: 1_714_564_800_000,
        payload: payload.to_vec(),
    }
}

#[test]
fn event_filter_answers_the_same_in_rust_python_and_javascript() {
    let rt = PluginRuntime::new(settings()).unwrap();
    rt.load_file(&rust_filter()).unwrap();
    rt.load_bytes("py-filter", &std::fs::read(example("python")).unwrap())
        .unwrap();
    rt.load_bytes("js-filter", &std::fs::read(example("js")).unwrap())
        .unwrap();
    let configs = [
        json!({}),
        json!({"include": ["license.*"]}),
        json!({"include": ["license.*", "user.created"], "exclude": ["license.validation.*"]}),
        json!({"conditions": [{"pointer": "/data/attributes/status", "equals": "EXPIRED"}]}),
        json!({"match": "any", "conditions": [
            {"pointer": "/data/attributes/status", "in": ["SUSPENDED", "EXPIRED"]},
            {"pointer": "/meta/valid", "exists": true}
        ]}),
        json!({"conditions": [
            {"pointer": "/data/attributes/uses", "not_equals": 3},
            {"pointer": "/data/relationships/policy/data/type", "equals": "policies"},
            {"pointer": "/data/attributes/metadata/missing", "exists": false}
        ]}),
        json!({"include": ["machine.*"], "conditions": [{"pointer": "/data/attributes/name", "exists": true}]}),
        json!({"conditions": [{"pointer": "/meta/code", "in": ["EXPIRED", "VALID", "SUSPENDED"]}]}),
        json!({"conditions": [{"pointer": "/data/attributes/suspended", "equals": false}]}),
    ];
    let mut with_bad_payload = events();
    with_bad_payload.push(("not-json".into(), pe("license.created", b"not json")));
    with_bad_payload.push(("array".into(), pe("license.created", b"[1,2]")));
    let mut compared = 0;
    let mut kinds = std::collections::HashSet::new();
    for config in &configs {
        let rs = rt.bind("event-filter", config).unwrap();
        let py = rt.bind("py-filter", config).unwrap();
        let js = rt.bind("js-filter", config).unwrap();
        for (name, ev) in &with_bad_payload {
            let want = answer(&rs, ev);
            kinds.insert(format!("{:?}", want.as_ref().map(std::mem::discriminant)));
            assert_eq!(
                answer(&py, ev),
                want,
                "Python, event {name}, config {config}"
            );
            assert_eq!(
                answer(&js, ev),
                want,
                "JavaScript, event {name}, config {config}"
            );
            compared += 1;
        }
    }
    assert!(compared >= 70, "compared {compared} answers");
    assert!(
        kinds.len() >= 3,
        "the configs exercise pass, skip and errors: {kinds:?}"
    );

    // Configurations the Rust plugin refuses are refused by the others too.
    for bad in [
        json!({"include": ["lic*nse"]}),
        json!({"include": ["a.*.*"]}),
        json!({"conditions": [{"pointer": "data", "equals": 1}]}),
        json!({"conditions": [{"pointer": "/a"}]}),
        json!({"conditions": [{"pointer": "/a", "equals": 1, "exists": true}]}),
        json!({"unknown": 1}),
        json!({"match": "some"}),
    ] {
        for plugin in ["event-filter", "py-filter", "js-filter"] {
            let err = rt.bind(plugin, &bad).err();
            assert_eq!(
                err.as_ref().map(|e| e.kind),
                Some(PluginErrorKind::BadConfig),
                "{plugin} with config {bad}: {err:?}"
            );
        }
    }
}

fn contained(lang: &str, raise_kind: PluginErrorKind, raise_text: &str) {
    let rt = PluginRuntime::new(RuntimeSettings {
        deadline: Duration::from_millis(500),
        ..settings()
    })
    .unwrap();
    rt.load_file(&rust_filter()).unwrap();
    rt.load_bytes("probe", &std::fs::read(probe(lang)).unwrap())
        .unwrap();
    let probe = rt.bind("probe", &json!({})).unwrap();
    let other = rt
        .bind("event-filter", &json!({"include": ["license.*"]}))
        .unwrap();
    let ok = pe("license.created", br#"{"data":{"id":"l1"}}"#);
    assert_eq!(probe.call(&ok).unwrap(), Outcome::Pass);

    let start = std::time::Instant::now();
    let e = probe.call(&pe("probe.loop", b"{}")).unwrap_err();
    assert_eq!(e.kind, PluginErrorKind::Deadline, "{lang}: {e}");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{lang}: the endless loop was stopped after {:?}",
        start.elapsed()
    );
    assert_eq!(other.call(&ok).unwrap(), Outcome::Pass);

    let e = probe.call(&pe("probe.alloc", b"{}")).unwrap_err();
    assert_eq!(e.kind, PluginErrorKind::OutOfMemory, "{lang}: {e}");
    assert!(e.message.contains("memory cap"), "{lang}: {e}");
    assert_eq!(other.call(&ok).unwrap(), Outcome::Pass);

    let e = probe.call(&pe("probe.raise", b"{}")).unwrap_err();
    assert_eq!(e.kind, raise_kind, "{lang}: {e}");
    assert!(e.message.contains(raise_text), "{lang}: {e}");

    // The plugin itself recovers: a fresh instance serves the next event.
    assert_eq!(probe.call(&ok).unwrap(), Outcome::Pass);
    let stats = rt.stats();
    assert!(stats.call_errors >= 3, "{stats:?}");
}

#[test]
fn python_loop_allocation_and_exception_are_contained() {
    contained(
        "probe-py",
        PluginErrorKind::Internal,
        "ValueError: the probe raised on purpose",
    );
}

#[test]
fn javascript_loop_allocation_and_exception_are_contained() {
    contained(
        "probe-js",
        PluginErrorKind::Internal,
        "RangeError: the probe threw on purpose",
    );
}

fn skip_reason(binding: &Binding, event_type: &str) -> Value {
    match binding.call(&pe(event_type, b"{}")) {
        Ok(Outcome::Skip(reason)) => serde_json::from_str(&reason).unwrap(),
        other => panic!("{event_type}: {other:?}"),
    }
}

#[test]
fn python_sees_no_files_no_environment_and_a_frozen_clock() {
    let rt = PluginRuntime::new(settings()).unwrap();
    rt.load_bytes("probe", &std::fs::read(probe("probe-py")).unwrap())
        .unwrap();
    let b = rt.bind("probe", &json!({})).unwrap();

    let files = skip_reason(&b, "probe.open");
    eprintln!("python open(): {files}");
    for path in ["/etc/passwd", "plugin.txt", "/"] {
        let seen = files[path].as_str().unwrap();
        assert!(!seen.starts_with("read"), "open({path}) gave {seen}");
    }
    assert_ne!(files["write"], "ok", "writing a file must fail");

    let env = skip_reason(&b, "probe.env");
    eprintln!("python os.environ: {env}");
    assert_eq!(env, json!({}), "os.environ is empty");

    let t = skip_reason(&b, "probe.time");
    eprintln!("python time: {t}");
    assert_eq!(t["time"], json!(0.0), "time.time() is the Unix epoch");
    let again = skip_reason(&b, "probe.time");
    assert_eq!(
        again["monotonic"], t["monotonic"],
        "the monotonic clock does not move"
    );
}

#[test]
fn javascript_sees_a_frozen_clock_and_deterministic_random() {
    let rt = PluginRuntime::new(settings()).unwrap();
    rt.load_bytes("probe", &std::fs::read(probe("probe-js")).unwrap())
        .unwrap();
    let b = rt.bind("probe", &json!({})).unwrap();

    let r1 = skip_reason(&b, "probe.random");
    eprintln!("js Math.random(): {r1}");
    let values: Vec<f64> = r1
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert!(values.iter().all(|v| (0.0..1.0).contains(v)), "{values:?}");
    // A fresh instance (another binding) draws the same sequence: the
    // seed is fixed at build time, not read from the host.
    let b2 = rt.bind("probe", &json!({"other": true})).unwrap();
    assert_eq!(skip_reason(&b2, "probe.random"), r1);

    // Date.now() is frozen at the time the component was built (the
    // snapshot componentize-js takes), not read from the host.
    let t = skip_reason(&b, "probe.time");
    eprintln!("js clock: {t}");
    std::thread::sleep(Duration::from_millis(50));
    let t2 = skip_reason(&b, "probe.time");
    assert_eq!(t, t2, "the clock does not move");
    let built = std::fs::metadata(probe("probe-js"))
        .unwrap()
        .modified()
        .unwrap()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as f64;
    let now = t["now"].as_f64().unwrap();
    assert!(
        now <= built + 1000.0,
        "Date.now() {now} is not the real time (built at {built})"
    );

    // performance.now() needs the monotonic clock, left out of the build
    // (`--disable clocks`): it traps, contained like any trap.
    let e = b.call(&pe("probe.perf", b"{}")).unwrap_err();
    assert_eq!(e.kind, PluginErrorKind::Trap, "{e}");

    let env = skip_reason(&b, "probe.env");
    eprintln!("js globals: {env}");
    assert_eq!(env["process"], "undefined", "no `process` (no environment)");
}

/// `switchyard plugin new` for one language: write the project, build it
/// with its README's first shell block, `plugin check` and `plugin run` it
/// on its sample event (passes) and on an event it filters out.
fn scaffold(lang: &str) {
    let bin = crate::common::BIN;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("my-filter");
    let out = Command::new(bin)
        .args(["plugin", "new", "my-filter", "--lang", lang, "--dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("README.md"), "{said}");
    // The WIT is the router's own.
    assert_eq!(
        std::fs::read_to_string(dir.join("wit/plugin.wit")).unwrap(),
        std::fs::read_to_string(repo().join("wit/plugin.wit")).unwrap()
    );
    // Writing over a project is refused.
    let again = Command::new(bin)
        .args(["plugin", "new", "my-filter", "--lang", lang, "--dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("not empty"));

    {
        let _build = BUILD.lock().unwrap_or_else(|e| e.into_inner());
        let toolchain = std::fs::read_to_string(repo().join("rust-toolchain.toml")).unwrap();
        let channel = toolchain
            .lines()
            .find_map(|l| l.trim().strip_prefix("channel"))
            .and_then(|v| v.split('"').nth(1))
            .unwrap_or("stable")
            .to_string();
        let script = first_sh_block(&dir.join("README.md"));
        let out = Command::new("bash")
            .args(["-euo", "pipefail", "-c", &script])
            .current_dir(&dir)
            .env("COMPONENTIZE_JS", componentize_js())
            // The project lives outside the repo: use the repo's toolchain.
            .env("RUSTUP_TOOLCHAIN", channel)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{lang}: README build failed:\n{script}\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let wasm = dir.join("my-filter.wasm");
    let check = Command::new(bin)
        .args(["plugin", "check"])
        .arg(&wasm)
        .arg("--cache-dir")
        .arg(cache())
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let report: Value = serde_json::from_slice(&check.stdout).unwrap();
    // A Rust plugin exports the SDK's optional `batch` interface too.
    let world = if lang == "rust" {
        "switchyard:plugin/batching-plugin@0.2.0"
    } else {
        "switchyard:plugin/plugin@0.2.0"
    };
    assert_eq!(report["world"], world);

    let run = |event: &Path| -> Value {
        let out = Command::new(bin)
            .args(["plugin", "run"])
            .arg(&wasm)
            .arg("--event")
            .arg(event)
            .args([
                "--config",
                "@config.json",
                "--deadline-ms",
                "1000",
                "--cache-dir",
            ])
            .arg(cache())
            .current_dir(&dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{lang}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let sample = run(&dir.join("event.json"));
    assert_eq!(sample["outcome"], "pass", "{lang}: {sample}");
    let active = run(&repo().join("examples/events/license.created.json"));
    assert_eq!(active["outcome"], "skip", "{lang}: {active}");
    assert_eq!(active["reason"], "status ACTIVE is not selected", "{lang}");
    let user = run(&repo().join("examples/events/user.created.json"));
    assert_eq!(
        user["reason"], "event type user.created is not selected",
        "{lang}"
    );
}

#[test]
fn plugin_new_rust_builds_checks_and_runs() {
    scaffold("rust");
}

#[test]
fn plugin_new_python_builds_checks_and_runs() {
    scaffold("python");
}

#[test]
fn plugin_new_js_builds_checks_and_runs() {
    scaffold("js");
}

#[test]
fn per_plugin_limits_and_idle_pools_bounded_in_bytes() {
    let mut limits = std::collections::HashMap::new();
    limits.insert(
        "probe".to_string(),
        PluginLimits {
            deadline: Some(Duration::from_millis(300)),
            memory: Some(48 << 20),
            pool_size: Some(1),
        },
    );
    let rt = PluginRuntime::new(RuntimeSettings {
        deadline: Duration::from_secs(20),
        limits: limits.clone(),
        ..settings()
    })
    .unwrap();
    rt.load_file(&rust_filter()).unwrap();
    rt.load_bytes("probe", &std::fs::read(probe("probe-py")).unwrap())
        .unwrap();
    let probe = rt.bind("probe", &json!({})).unwrap();
    let ok = pe("license.created", br#"{"data":{"id":"l1"}}"#);
    assert_eq!(probe.call(&ok).unwrap(), Outcome::Pass);
    // The plugin's own deadline, not the runtime's 20 s.
    let start = std::time::Instant::now();
    let e = probe.call(&pe("probe.loop", b"{}")).unwrap_err();
    assert_eq!(e.kind, PluginErrorKind::Deadline);
    assert!(e.message.contains("300 ms"), "{e}");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    // The plugin's own memory cap.
    let e = probe.call(&pe("probe.alloc", b"{}")).unwrap_err();
    assert_eq!(e.kind, PluginErrorKind::OutOfMemory);
    assert!(e.message.contains("48 MiB"), "{e}");

    // One idle CPython instance: several MiB of linear memory.
    assert_eq!(probe.call(&ok).unwrap(), Outcome::Pass);
    let stats = rt.stats();
    eprintln!(
        "idle: {} instances, {} bytes",
        stats.idle_instances, stats.idle_bytes
    );
    assert_eq!(stats.idle_instances, 1, "pool_size = 1");
    let per_instance = stats.idle_bytes;
    assert!(
        per_instance > 4 << 20,
        "a CPython instance holds {per_instance} bytes"
    );

    // A byte budget smaller than one CPython instance: the Python plugin
    // runs on fresh instances, the small Rust one is still pooled.
    let tight = PluginRuntime::new(RuntimeSettings {
        idle_memory_budget: 4 << 20,
        limits,
        ..settings()
    })
    .unwrap();
    tight.load_file(&rust_filter()).unwrap();
    tight
        .load_bytes("probe", &std::fs::read(self::probe("probe-py")).unwrap())
        .unwrap();
    let py = tight.bind("probe", &json!({})).unwrap();
    let rs = tight.bind("event-filter", &json!({})).unwrap();
    for _ in 0..3 {
        assert_eq!(py.call(&ok).unwrap(), Outcome::Pass);
        assert_eq!(rs.call(&ok).unwrap(), Outcome::Pass);
    }
    let stats = tight.stats();
    assert!(stats.idle_bytes <= 4 << 20, "{stats:?}");
    assert!(
        stats.idle_instances >= 1,
        "the Rust instance is kept: {stats:?}"
    );
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// The language comparison of docs/PLUGINS.md (run by hand, on a quiet
/// box if you have one):
/// `cargo test --release -p switchyard --test it polyglot::figures -- --ignored --nocapture`
#[test]
#[ignore = "a benchmark (minutes of CPU): run by hand for BENCHMARKS.md"]
fn figures() {
    let event_doc: Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("examples/events/license.created.json")).unwrap(),
    )
    .unwrap();
    let event = switchyard::plugins::cli::event_from_json(&event_doc).unwrap();
    eprintln!("event payload: {} bytes", event.payload.len());
    let segment_config = json!({"write_key": "wk"});
    let filter_config = json!({"include": ["license.*"], "conditions": [
        {"pointer": "/data/attributes/status", "equals": "ACTIVE"}]});
    let langs: [(&str, PathBuf, PathBuf); 3] = [
        (
            "rust",
            rust_filter(),
            PathBuf::from(env!("SWITCHYARD_PLUGIN_DIST_DIR")).join("segment.wasm"),
        ),
        ("python", example("python"), probe("segment-py")),
        ("js", example("js"), probe("segment-js")),
    ];
    let rounds = 400;
    for (lang, filter, transform) in &langs {
        let cache = tempfile::tempdir().unwrap();
        let s = RuntimeSettings {
            deadline: Duration::from_secs(5),
            cache_dir: Some(cache.path().to_path_buf()),
            ..RuntimeSettings::default()
        };
        let bytes = std::fs::read(filter).unwrap();
        let rt = PluginRuntime::new(s.clone()).unwrap();
        let compiled = rt.load_bytes("filter", &bytes).unwrap();
        let rt2 = PluginRuntime::new(s.clone()).unwrap();
        let cached = rt2.load_bytes("filter", &bytes).unwrap();
        assert!(cached.from_cache);
        rt2.load_bytes("transform", &std::fs::read(transform).unwrap())
            .unwrap();
        let mut inst = Vec::new();
        for _ in 0..5 {
            let t = std::time::Instant::now();
            let b = rt2.bind("filter", &filter_config).unwrap();
            inst.push(t.elapsed());
            drop(b);
        }
        let f = rt2.bind("filter", &filter_config).unwrap();
        let x = rt2.bind("transform", &segment_config).unwrap();
        assert_eq!(f.call(&event).unwrap(), Outcome::Pass);
        assert!(matches!(x.call(&event).unwrap(), Outcome::Replace { .. }));
        let before = rt2.stats();
        let mut fc = Vec::new();
        let mut xc = Vec::new();
        for _ in 0..rounds {
            let t = std::time::Instant::now();
            f.call(&event).unwrap();
            fc.push(t.elapsed());
            let t = std::time::Instant::now();
            x.call(&event).unwrap();
            xc.push(t.elapsed());
        }
        let st = rt2.stats();
        eprintln!(
            "FIGURES {lang}: size {:.1} MB, compile {:.2} s, from cache {:.0} ms, instantiate {:.2} ms, \
             warm filter {:.1} us, warm transform {:.1} us, idle memory per instance {:.1} MiB ({} instances)",
            bytes.len() as f64 / 1e6,
            compiled.compile_time.as_secs_f64(),
            cached.compile_time.as_secs_f64() * 1e3,
            median(inst).as_secs_f64() * 1e3,
            median(fc).as_secs_f64() * 1e6,
            median(xc).as_secs_f64() * 1e6,
            st.idle_bytes as f64 / st.idle_instances.max(1) as f64 / (1 << 20) as f64,
            st.idle_instances,
        );
        let _ = before;
    }
}

/// Through the real router: a Python and a JavaScript plugin that loop
/// forever, allocate without bound and raise, each on its own endpoint,
/// leave a neighbour endpoint (no plugin) and each other's good events
/// delivering normally; each failure is in that delivery's attempt log,
/// read back through the API, with its kind named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misbehaving_python_and_js_plugins_are_contained_in_the_router() {
    use crate::common::*;
    let py = probe("probe-py");
    let js = probe("probe-js");
    let rx = Receiver::ok().await;
    let limits = |name: &str| {
        // Deadline: generous (a shared box), still stops the loop in time.
        format!("[plugins.limits.{name}]\nmemory = \"64MiB\"\ndeadline = \"1s\"\n")
    };
    let config = base_config("admin_token = \"admin-token-0123456789\"\n").replace(
        "[delivery]\n",
        &format!("{}{}[delivery]\n", limits("probe-py"), limits("probe-js")),
    ) + &endpoint(
        "py",
        &rx.url("/py"),
        "plugins = [ { name = \"probe-py\" } ]\nretry_schedule = [\"1h\"]",
    ) + &endpoint(
        "js",
        &rx.url("/js"),
        "plugins = [ { name = \"probe-js\" } ]\nretry_schedule = [\"1h\"]",
    ) + &endpoint("plain", &rx.url("/plain"), "");
    // Start with the compiled artifacts of earlier runs (an 18 MB component
    // takes tens of seconds of Cranelift on a loaded box), keep the new ones.
    let warm = repo().join("target/polyglot/router-cache");
    std::fs::create_dir_all(&warm).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("data/plugin-cache");
    std::fs::create_dir_all(&cache).unwrap();
    std::fs::create_dir_all(dir.path().join("plugins")).unwrap();
    // (Also the artifacts the in-process tests compiled: same engine key.)
    for from in [&warm, &self::cache()] {
        for e in std::fs::read_dir(from).into_iter().flatten().flatten() {
            let _ = std::fs::copy(e.path(), cache.join(e.file_name()));
        }
    }
    std::fs::copy(&py, dir.path().join("plugins/probe-py.wasm")).unwrap();
    std::fs::copy(&js, dir.path().join("plugins/probe-js.wasm")).unwrap();
    std::fs::write(dir.path().join("router.toml"), &config).unwrap();
    let router = Router::start_in(dir.path().to_path_buf());
    let c = Client::new();
    let admin = [("authorization", "Bearer admin-token-0123456789")];
    let start = std::time::Instant::now();
    loop {
        let doc = c
            .request("GET", &router.url("/v1/plugins"), &admin, String::new())
            .await
            .json();
        let loaded = doc["data"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|p| p["attributes"]["loaded"] == true)
                    .count()
            })
            .unwrap_or(0);
        if loaded == 2 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(240),
            "the plugins did not load: {doc}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!("plugins loaded in {:?}", start.elapsed());
    for e in std::fs::read_dir(&cache).unwrap().flatten() {
        if !self::cache().join(e.file_name()).exists() && !warm.join(e.file_name()).exists() {
            let _ = std::fs::copy(e.path(), warm.join(e.file_name()));
        }
    }
    let post = |kind: &'static str| {
        let (c, router) = (&c, &router);
        async move {
            let r = c
                .post_event(
                    router,
                    "acct",
                    &json!({"event": kind, "payload": {"data": {"id": kind}}}),
                )
                .await;
            assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
            r.json()["data"]["id"].as_str().unwrap().to_string()
        }
    };
    let bad = [
        ("probe.loop", "deadline"),
        ("probe.alloc", "out_of_memory"),
        ("probe.raise", "the probe"),
    ];
    let mut bad_ids = Vec::new();
    for (kind, _) in bad {
        bad_ids.push(post(kind).await);
    }
    let good = post("license.created").await;
    // Every event reaches the plain endpoint; the good one also reaches
    // the Python and JS endpoints, each through its plugin.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let paths = || -> Vec<String> { rx.received().iter().map(|r| r.path.clone()).collect() };
    while !(paths().iter().filter(|p| *p == "/plain").count() == 4
        && paths().contains(&"/py".to_string())
        && paths().contains(&"/js".to_string()))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "not delivered: {:?}\n{}",
            paths(),
            router.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for r in rx.received().iter().filter(|r| r.path != "/plain") {
        assert!(
            String::from_utf8_lossy(&r.body).contains("license.created"),
            "{}: {}",
            r.path,
            String::from_utf8_lossy(&r.body)
        );
    }
    // Each failure, in its delivery's attempt log.
    // (Deliveries run side by side: wait for each failed attempt's record.)
    for ((kind, needle), id) in bad.iter().zip(&bad_ids) {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let doc = loop {
            let doc = c
                .request(
                    "GET",
                    &router.url(&format!("/v1/accounts/acct/webhook-events/{id}")),
                    &[("authorization", &format!("Bearer {TOKEN}"))],
                    String::new(),
                )
                .await
                .json();
            let tried = doc["data"]["attributes"]["deliveries"]
                .as_array()
                .is_some_and(|ds| ds.iter().all(|d| d["attemptCount"].as_u64() >= Some(1)));
            if tried {
                break doc;
            }
            assert!(std::time::Instant::now() < deadline, "{kind}: {doc}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let deliveries = doc["data"]["attributes"]["deliveries"].as_array().unwrap();
        for ep in ["py", "js"] {
            let d = deliveries
                .iter()
                .find(|d| d["endpoint"] == ep)
                .unwrap_or_else(|| panic!("{kind}: no delivery to {ep}: {doc}"));
            assert_eq!(d["status"], "failing", "{kind} on {ep}: {d}");
            let error = d["attempts"][0]["error"].as_str().unwrap_or_default();
            assert!(error.contains(needle), "{kind} on {ep}: {error}");
        }
        let plain = deliveries
            .iter()
            .find(|d| d["endpoint"] == "plain")
            .unwrap();
        assert_eq!(plain["status"], "delivered", "{kind}: {plain}");
    }
    let _ = good;
}
