//! Plugin runtime benchmark: the per-call cost of real plugins (event-filter,
//! a transform, the segment and amplitude analytics plugins), warm and
//! fresh, against the same Rust code compiled natively in the same run;
//! instantiation cost; hot-reload latency. Figures go to `BENCHMARKS.md`.
//!
//! `cargo bench -p switchyard --bench plugins`

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criterion::Criterion;
use serde_json::{Value, json};
use switchyard::plugins::*;
use switchyard_guest::Plugin as _;

fn wasm(name: &str) -> PathBuf {
    // Compare builds (e.g. another opt-level) without touching the tree.
    if let Some(dir) = std::env::var_os("SWITCHYARD_BENCH_WASM_DIR") {
        return Path::new(&dir).join(format!("{}.wasm", name.replace('-', "_")));
    }
    let dist = Path::new(env!("SWITCHYARD_PLUGIN_DIST_DIR")).join(format!("{name}.wasm"));
    if dist.exists() {
        return dist;
    }
    Path::new(env!("SWITCHYARD_TEST_PLUGIN_DIR")).join(format!("{}.wasm", name.replace('-', "_")))
}

/// A Keygen `license.validation.succeeded` resource document (~1 KB).
fn payload() -> Vec<u8> {
    json!({
        "data": {
            "id": "9f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a",
            "type": "licenses",
            "attributes": {
                "name": "Acme Corp Pro (annual)",
                "key": "C1B6DE-39A6E3-DE1A05-D3A40A-E5AF58-V3",
                "expiry": "2025-05-01T12:00:00.000Z",
                "status": "ACTIVE",
                "uses": 3,
                "protected": true,
                "maxMachines": 5,
                "maxCores": null,
                "lastValidated": "2024-05-02T09:15:42.509Z",
                "metadata": {"customerId": "cus_Q2rT9xYv7LmN4a", "tier": "pro"},
                "created": "2024-05-01T12:00:00.000Z",
                "updated": "2024-05-02T09:15:42.509Z"
            },
            "relationships": {
                "account": {"data": {"type": "accounts", "id": "4d3f7a1c-9b2e-4f6a-8c51-2e7d9b0a6f13"}},
                "product": {"data": {"type": "products", "id": "8e1a2b3c-4d5e-4f60-9a7b-1c2d3e4f5a6b"}},
                "policy": {"data": {"type": "policies", "id": "c7d8e9f0-1a2b-4c3d-8e4f-5a6b7c8d9e0f"}},
                "owner": {"data": {"type": "users", "id": "a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d"}},
                "group": {"data": {"type": "groups", "id": "2b4c6d8e-0f1a-4b2c-9d3e-4f5a6b7c8d9e"}}
            },
            "links": {"self": "/v1/accounts/4d3f7a1c-9b2e-4f6a-8c51-2e7d9b0a6f13/licenses/9f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a"}
        },
        "meta": {
            "ts": "2024-05-02T09:15:42.509Z",
            "valid": true,
            "detail": "is valid",
            "code": "VALID"
        }
    })
    .to_string()
    .into_bytes()
}

fn event() -> PluginEvent {
    PluginEvent {
        id: "2d9a3b4c-5e6f-4a71-8c8d-9e0f1a2b3c4d".into(),
        account: "4d3f7a1c-9b2e-4f6a-8c51-2e7d9b0a6f13".into(),
        endpoint: "segment".into(),
        event_type: "license.validation.succeeded".into(),
        created: "2024-05-02T09:15:42.531Z".into(),
        created_ms: 1_714_641_342_531,
        payload: payload(),
    }
}

/// What the host hands a plugin natively: the same fields, copied.
fn guest_event(e: &PluginEvent) -> switchyard_guest::Event {
    switchyard_guest::Event {
        id: e.id.clone(),
        account: e.account.clone(),
        endpoint: e.endpoint.clone(),
        event_type: e.event_type.clone(),
        created: e.created.clone(),
        created_ms: e.created_ms,
        payload: e.payload.clone(),
    }
}

fn filter_config() -> Value {
    json!({
        "include": ["license.*"],
        "conditions": [{"pointer": "/data/attributes/status", "equals": "ACTIVE"}]
    })
}

fn transform_config() -> Value {
    json!({"mode": "transform", "tag": "d3JpdGVrZXk6"})
}

fn runtime(options: RuntimeOptions) -> PluginRuntime {
    // A generous deadline: this measures cost, and the box is shared.
    let settings = RuntimeSettings {
        deadline: Duration::from_secs(2),
        ..RuntimeSettings::default()
    };
    let rt = PluginRuntime::with_options(settings, options).unwrap();
    for name in ["event-filter", "misbehave"] {
        rt.load_bytes(name, &std::fs::read(wasm(name)).unwrap())
            .unwrap();
    }
    rt
}

fn calls(c: &mut Criterion) {
    let ev = event();
    eprintln!("payload: {} bytes", ev.payload.len());
    let warm = runtime(RuntimeOptions::default());
    let fresh = runtime(RuntimeOptions {
        warm_instances: false,
        ..RuntimeOptions::default()
    });
    let fresh_od = runtime(RuntimeOptions {
        warm_instances: false,
        pooling: false,
        ..RuntimeOptions::default()
    });
    assert!(warm.stats().pooling, "pooling allocator not in use");
    assert!(!fresh_od.stats().pooling);

    // Same logic, native.
    let mut filter_native =
        switchyard_guest::configure::<event_filter::EventFilter>(&filter_config().to_string())
            .unwrap();
    let filter_wasm = warm.bind("event-filter", &filter_config()).unwrap();
    assert_eq!(filter_wasm.call(&ev).unwrap(), Outcome::Pass);
    assert_eq!(
        filter_native.handle(&guest_event(&ev)).unwrap(),
        switchyard_guest::Outcome::Pass
    );

    let transform_wasm = warm.bind("misbehave", &transform_config()).unwrap();
    let native_out = misbehave::transform(&guest_event(&ev), "d3JpdGVrZXk6").unwrap();
    match (transform_wasm.call(&ev).unwrap(), native_out) {
        (Outcome::Replace { body, .. }, switchyard_guest::Outcome::Replace(r)) => {
            assert_eq!(body, r.body, "wasm and native transforms differ");
            eprintln!("transform output: {} bytes", body.len());
        }
        other => panic!("{other:?}"),
    }
    let transform_fresh = fresh.bind("misbehave", &transform_config()).unwrap();
    let transform_fresh_od = fresh_od.bind("misbehave", &transform_config()).unwrap();

    // The cost of a call that does nothing: lowering the event into the
    // guest, the epoch deadline, the pool, lifting the outcome.
    let pass_wasm = warm.bind("misbehave", &json!({"mode": "pass"})).unwrap();
    let mut g = c.benchmark_group("call_overhead");
    g.bench_function("wasm_warm_pass", |b| {
        b.iter(|| black_box(pass_wasm.call(black_box(&ev)).unwrap()))
    });
    g.finish();

    let mut g = c.benchmark_group("event_filter");
    g.bench_function("native", |b| {
        b.iter(|| black_box(filter_native.handle(&guest_event(black_box(&ev))).unwrap()))
    });
    g.bench_function("wasm_warm", |b| {
        b.iter(|| black_box(filter_wasm.call(black_box(&ev)).unwrap()))
    });
    g.finish();

    let mut g = c.benchmark_group("transform");
    g.bench_function("native", |b| {
        b.iter(|| {
            black_box(misbehave::transform(&guest_event(black_box(&ev)), "d3JpdGVrZXk6").unwrap())
        })
    });
    g.bench_function("wasm_warm", |b| {
        b.iter(|| black_box(transform_wasm.call(black_box(&ev)).unwrap()))
    });
    g.bench_function("wasm_fresh_instance_pooling", |b| {
        b.iter(|| black_box(transform_fresh.call(black_box(&ev)).unwrap()))
    });
    g.bench_function("wasm_fresh_instance_on_demand", |b| {
        b.iter(|| black_box(transform_fresh_od.call(black_box(&ev)).unwrap()))
    });
    g.finish();

    // Instantiation: a new instance + `configure` (what `bind` does).
    let mut g = c.benchmark_group("instantiate");
    g.bench_function("misbehave_pooling", |b| {
        b.iter(|| black_box(fresh.bind("misbehave", &transform_config()).unwrap()))
    });
    g.bench_function("misbehave_on_demand", |b| {
        b.iter(|| black_box(fresh_od.bind("misbehave", &transform_config()).unwrap()))
    });
    g.bench_function("event_filter_pooling", |b| {
        b.iter(|| black_box(fresh.bind("event-filter", &filter_config()).unwrap()))
    });
    g.finish();

    // Concurrency: two threads (the box has two cores) on one binding.
    let mut g = c.benchmark_group("transform_2_threads");
    g.bench_function("wasm_warm_per_call", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            std::thread::scope(|s| {
                for _ in 0..2 {
                    let (bd, ev) = (&transform_wasm, &ev);
                    s.spawn(move || {
                        for _ in 0..iters / 2 {
                            black_box(bd.call(ev).unwrap());
                        }
                    });
                }
            });
            start.elapsed()
        })
    });
    g.finish();
}

/// Per-call time of each closure, measured in interleaved rounds so that
/// load from other processes hits all of them alike; returns (min, median)
/// over rounds, in µs per call.
/// A named closure timed by [`interleaved`].
type Timed<'a> = (&'a str, Box<dyn FnMut() + 'a>);

fn interleaved(fs: &mut [Timed<'_>], rounds: usize, per_round: usize) -> Vec<(f64, f64)> {
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); fs.len()];
    for _ in 0..rounds {
        for (i, (_, f)) in fs.iter_mut().enumerate() {
            let start = Instant::now();
            for _ in 0..per_round {
                f();
            }
            samples[i].push(start.elapsed().as_secs_f64() * 1e6 / per_round as f64);
        }
    }
    samples
        .into_iter()
        .map(|mut s| {
            s.sort_by(|a, b| a.partial_cmp(b).unwrap());
            (s[0], s[s.len() / 2])
        })
        .collect()
}

fn interleaved_summary() {
    let ev = event();
    let warm = runtime(RuntimeOptions::default());
    let small = runtime(RuntimeOptions {
        memory_reservation: Some(64 << 20),
        ..RuntimeOptions::default()
    });
    let mut filter_native =
        switchyard_guest::configure::<event_filter::EventFilter>(&filter_config().to_string())
            .unwrap();
    let filter_wasm = warm.bind("event-filter", &filter_config()).unwrap();
    let filter_small = small.bind("event-filter", &filter_config()).unwrap();
    let t_wasm = warm.bind("misbehave", &transform_config()).unwrap();
    let t_small = small.bind("misbehave", &transform_config()).unwrap();
    let mut fs: Vec<Timed<'_>> = vec![
        (
            "event_filter/native",
            Box::new(|| {
                black_box(filter_native.handle(&guest_event(black_box(&ev))).unwrap());
            }),
        ),
        (
            "event_filter/wasm_warm",
            Box::new(|| {
                black_box(filter_wasm.call(black_box(&ev)).unwrap());
            }),
        ),
        (
            "event_filter/wasm_warm_64MiB_reservation",
            Box::new(|| {
                black_box(filter_small.call(black_box(&ev)).unwrap());
            }),
        ),
        (
            "transform/native",
            Box::new(|| {
                black_box(
                    misbehave::transform(&guest_event(black_box(&ev)), "d3JpdGVrZXk6").unwrap(),
                );
            }),
        ),
        (
            "transform/wasm_warm",
            Box::new(|| {
                black_box(t_wasm.call(black_box(&ev)).unwrap());
            }),
        ),
        (
            "transform/wasm_warm_64MiB_reservation",
            Box::new(|| {
                black_box(t_small.call(black_box(&ev)).unwrap());
            }),
        ),
    ];
    let r = interleaved(&mut fs, 40, 500);
    println!("\n== interleaved rounds (40 x 500 calls each; min and median of rounds) ==");
    let base = |i: usize| if i < 3 { r[0] } else { r[3] };
    for (i, (name, _)) in fs.iter().enumerate() {
        let (min, med) = r[i];
        println!(
            "{name:45} min {min:7.2} µs ({:4.2}× native)   median {med:7.2} µs ({:4.2}× native)",
            min / base(i).0,
            med / base(i).1
        );
    }
}

/// A sample event from `examples/events/` (ingest form), as the host hands
/// it to a plugin: the payload re-serialized compactly.
fn fixture(name: &str) -> PluginEvent {
    let path = format!(
        "{}/../examples/events/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap();
    let e = switchyard_guest::testing::event_from_json(&text).unwrap();
    PluginEvent {
        id: e.id,
        account: "4d3f7a1c-9b2e-4f6a-8c51-2e7d9b0a6f13".into(),
        endpoint: "analytics".into(),
        event_type: e.event_type,
        created: e.created,
        created_ms: e.created_ms,
        payload: e.payload,
    }
}

fn segment_config() -> Value {
    json!({"write_key": "wk"})
}

fn amplitude_config() -> Value {
    json!({"api_key": "k"})
}

/// The same body from the component and from the native crate.
fn same_replace(wasm: Outcome, native: switchyard_guest::Outcome, what: &str) -> usize {
    match (wasm, native) {
        (Outcome::Replace { body, .. }, switchyard_guest::Outcome::Replace(r)) => {
            assert_eq!(body, r.body, "{what}: wasm and native bodies differ");
            body.len()
        }
        other => panic!("{what}: {other:?}"),
    }
}

/// The analytics plugins (segment, amplitude), warm, against their own
/// crates compiled natively: criterion medians, then interleaved rounds for
/// the ratios.
fn analytics(c: &mut Criterion) {
    let settings = RuntimeSettings {
        deadline: Duration::from_secs(2),
        ..RuntimeSettings::default()
    };
    let rt = PluginRuntime::with_options(settings, RuntimeOptions::default()).unwrap();
    for name in ["segment", "amplitude"] {
        rt.load_bytes(name, &std::fs::read(wasm(name)).unwrap())
            .unwrap();
    }
    let track = fixture("license.validation.succeeded");
    let identify = fixture("user.created");
    eprintln!(
        "analytics payloads: license.validation.succeeded {} bytes, user.created {} bytes",
        track.payload.len(),
        identify.payload.len()
    );

    let seg_wasm = rt.bind("segment", &segment_config()).unwrap();
    let amp_wasm = rt.bind("amplitude", &amplitude_config()).unwrap();
    let mut seg_native =
        switchyard_guest::configure::<segment::Segment>(&segment_config().to_string()).unwrap();
    let mut amp_native =
        switchyard_guest::configure::<amplitude::Amplitude>(&amplitude_config().to_string())
            .unwrap();
    for (ev, what) in [(&track, "segment track"), (&identify, "segment identify")] {
        let n = same_replace(
            seg_wasm.call(ev).unwrap(),
            seg_native.handle(&guest_event(ev)).unwrap(),
            what,
        );
        eprintln!("{what} output: {n} bytes");
    }
    let n = same_replace(
        amp_wasm.call(&track).unwrap(),
        amp_native.handle(&guest_event(&track)).unwrap(),
        "amplitude",
    );
    eprintln!("amplitude output: {n} bytes");

    let mut g = c.benchmark_group("segment_track");
    g.bench_function("native", |b| {
        b.iter(|| black_box(seg_native.handle(&guest_event(black_box(&track))).unwrap()))
    });
    g.bench_function("wasm_warm", |b| {
        b.iter(|| black_box(seg_wasm.call(black_box(&track)).unwrap()))
    });
    g.finish();
    let mut g = c.benchmark_group("segment_identify");
    g.bench_function("native", |b| {
        b.iter(|| {
            black_box(
                seg_native
                    .handle(&guest_event(black_box(&identify)))
                    .unwrap(),
            )
        })
    });
    g.bench_function("wasm_warm", |b| {
        b.iter(|| black_box(seg_wasm.call(black_box(&identify)).unwrap()))
    });
    g.finish();
    let mut g = c.benchmark_group("amplitude");
    g.bench_function("native", |b| {
        b.iter(|| black_box(amp_native.handle(&guest_event(black_box(&track))).unwrap()))
    });
    g.bench_function("wasm_warm", |b| {
        b.iter(|| black_box(amp_wasm.call(black_box(&track)).unwrap()))
    });
    g.finish();

    // Both natives are borrowed mutably by their closures: one instance each
    // for the interleaved rounds.
    let mut seg_native_2 =
        switchyard_guest::configure::<segment::Segment>(&segment_config().to_string()).unwrap();
    let mut fs: Vec<Timed<'_>> = vec![
        (
            "segment_track/native",
            Box::new(|| {
                black_box(seg_native.handle(&guest_event(black_box(&track))).unwrap());
            }),
        ),
        (
            "segment_track/wasm_warm",
            Box::new(|| {
                black_box(seg_wasm.call(black_box(&track)).unwrap());
            }),
        ),
        (
            "segment_identify/native",
            Box::new(|| {
                black_box(
                    seg_native_2
                        .handle(&guest_event(black_box(&identify)))
                        .unwrap(),
                );
            }),
        ),
        (
            "segment_identify/wasm_warm",
            Box::new(|| {
                black_box(seg_wasm.call(black_box(&identify)).unwrap());
            }),
        ),
        (
            "amplitude/native",
            Box::new(|| {
                black_box(amp_native.handle(&guest_event(black_box(&track))).unwrap());
            }),
        ),
        (
            "amplitude/wasm_warm",
            Box::new(|| {
                black_box(amp_wasm.call(black_box(&track)).unwrap());
            }),
        ),
    ];
    let r = interleaved(&mut fs, 40, 500);
    println!(
        "\n== analytics plugins, interleaved rounds (40 x 500 calls each; min and median of rounds) =="
    );
    for (i, (name, _)) in fs.iter().enumerate() {
        let ((min, med), base) = (r[i], r[i - i % 2]);
        println!(
            "{name:45} min {min:7.2} µs ({:4.2}× native)   median {med:7.2} µs ({:4.2}× native)",
            min / base.0,
            med / base.1
        );
    }
}

/// File written into the watched folder → binding serving the new version.
fn hot_reload() -> Vec<Duration> {
    let dir = tempfile::tempdir().unwrap();
    let rt = PluginRuntime::new(RuntimeSettings::default()).unwrap();
    let _w = switchyard::plugins::PluginWatcher::start(rt.clone(), dir.path()).unwrap();
    let b = rt.bind("p", &json!({})).unwrap();
    let ev = event();
    let filter = std::fs::read(wasm("event-filter")).unwrap();
    let replace = std::fs::read(wasm("misbehave")).unwrap();
    let path = dir.path().join("p.wasm");
    let mut out = Vec::new();
    for i in 0..12 {
        let (bytes, want_pass) = if i % 2 == 0 {
            (&filter, true)
        } else {
            (&replace, false)
        };
        let start = Instant::now();
        std::fs::write(&path, bytes).unwrap();
        loop {
            let r = b.call(&ev);
            let pass = matches!(r, Ok(Outcome::Pass));
            let replaced = matches!(r, Ok(Outcome::Replace { .. }));
            if (want_pass && pass) || (!want_pass && replaced) {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "reload did not happen"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        if i >= 2 {
            out.push(start.elapsed());
        }
    }
    out.sort();
    out
}

fn estimate(dir: &Path, id: &str) -> Option<f64> {
    let text = std::fs::read_to_string(dir.join(id).join("new").join("estimates.json")).ok()?;
    let v: Value = serde_json::from_str(&text).ok()?;
    v["median"]["point_estimate"].as_f64()
}

fn main() {
    let out_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/criterion");
    let mut c = Criterion::default()
        .output_directory(&out_dir)
        .sample_size(50)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    calls(&mut c);
    analytics(&mut c);
    c.final_summary();

    interleaved_summary();
    let reload = hot_reload();
    let ms = |d: &Duration| d.as_secs_f64() * 1000.0;

    // Summary with ratios against the native baseline measured above.
    let us = |id: &str| estimate(&out_dir, id).map(|ns| ns / 1000.0);
    println!("\n== plugin runtime summary (median per call) ==");
    let rows = [
        ("call_overhead/wasm_warm_pass", ""),
        ("event_filter/native", "event_filter/native"),
        ("event_filter/wasm_warm", "event_filter/native"),
        ("transform/native", "transform/native"),
        ("transform/wasm_warm", "transform/native"),
        ("transform/wasm_fresh_instance_pooling", "transform/native"),
        (
            "transform/wasm_fresh_instance_on_demand",
            "transform/native",
        ),
        ("transform_2_threads/wasm_warm_per_call", "transform/native"),
        ("instantiate/misbehave_pooling", ""),
        ("instantiate/misbehave_on_demand", ""),
        ("instantiate/event_filter_pooling", ""),
        ("segment_track/native", "segment_track/native"),
        ("segment_track/wasm_warm", "segment_track/native"),
        ("segment_identify/native", "segment_identify/native"),
        ("segment_identify/wasm_warm", "segment_identify/native"),
        ("amplitude/native", "amplitude/native"),
        ("amplitude/wasm_warm", "amplitude/native"),
    ];
    for (id, base) in rows {
        match (us(id), us(base)) {
            (Some(v), Some(b)) => println!("{id:45} {v:9.2} µs   {:5.2}× native", v / b),
            (Some(v), None) => println!("{id:45} {v:9.2} µs"),
            _ => println!("{id:45} (not measured)"),
        }
    }
    println!(
        "{:45} median {:.1} ms, min {:.1} ms, max {:.1} ms (n = {}, debounce {} ms)",
        "hot_reload/file_written_to_serving",
        ms(&reload[reload.len() / 2]),
        ms(&reload[0]),
        ms(reload.last().unwrap()),
        reload.len(),
        DEBOUNCE.as_millis()
    );
}
