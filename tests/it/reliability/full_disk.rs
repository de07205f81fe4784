//! Storage: full disk.

use super::*;

/// The data directory on an 8 MiB tmpfs, filled up: ingest answers 503 with
/// a JSON:API error and acknowledges nothing it could not store; the process
/// lives on; when space returns it accepts again; every 202 is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_full_disk() {
    let rx = Receiver::ok().await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let out = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=8m", "tmpfs"])
        .arg(&data)
        .output()
        .unwrap();
    if !out.status.success() {
        eprintln!(
            "\n\n*** SKIPPED storage_full_disk: cannot mount a tmpfs here ({}). This case is NOT covered on this machine. ***\n\n",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        return;
    }
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .status();
        }
    }
    let _unmount = Unmount(data.clone());
    let config = base_config("")
        + &endpoint(
            "e",
            &rx.url("/e"),
            "retry_schedule = [\"200ms\", \"200ms\", \"200ms\", \"200ms\", \"200ms\", \"1s\", \"1s\", \"1s\", \"1s\", \"1s\", \"5s\", \"5s\", \"5s\", \"5s\"]",
        );
    std::fs::create_dir_all(dir.join("plugins")).unwrap();
    std::fs::write(dir.join("router.toml"), &config).unwrap();
    let mut router = Router::start_in(dir.clone());
    pin_port(&router, &config);
    let c = Client::new();
    let url = router.events_url("acct");
    // Some events while there is space.
    let mut acked: Vec<String> = Vec::new();
    for i in 0..20 {
        let r = post_disk(&c, &url, i).await;
        assert_eq!(r.status, 202);
        acked.push(format!("disk{i}"));
    }
    rx.wait_for(
        Duration::from_secs(10),
        "events before the disk fills",
        |g| g.len() >= 20,
    )
    .await;
    // Fill the filesystem.
    let filler = data.join("filler");
    {
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 64 << 10];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.sync_all();
    }
    let mut first_503 = None;
    let mut n503 = 0;
    let mut other = Vec::new();
    let mut refused_keys = Vec::new();
    for i in 20..400 {
        let r = post_disk(&c, &url, i).await;
        match r.status {
            202 => acked.push(format!("disk{i}")),
            503 => {
                assert_jsonapi_error(&r, 503, "full disk");
                n503 += 1;
                refused_keys.push(format!("disk{i}"));
                first_503.get_or_insert(i);
            }
            s => other.push(s),
        }
        if n503 >= 20 {
            break;
        }
    }
    assert!(
        other.is_empty(),
        "unexpected statuses on a full disk: {other:?}"
    );
    assert!(n503 > 0, "the disk never filled up?");
    assert!(
        alive(&mut router),
        "the router crashed on a full disk\n{}",
        router.log()
    );
    let h = c.request("GET", &router.url("/healthz"), &[], "").await;
    assert_eq!(h.status, 200);
    let ready = c.request("GET", &router.url("/readyz"), &[], "").await;
    assert_eq!(
        ready.status,
        503,
        "readyz must report the failing store: {}",
        String::from_utf8_lossy(&ready.body)
    );
    assert!(ready.json()["store_error"].is_string());
    // Delivery pauses while attempts cannot be recorded: no resend storm.
    let during = rx.count();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let storm = rx.count() - during;
    // Space returns.
    std::fs::remove_file(&filler).unwrap();
    let freed_at = Instant::now();
    let mut recovered_without_restart = false;
    let mut i = 1000;
    while freed_at.elapsed() < Duration::from_secs(5) {
        let r = post_disk(&c, &url, i).await;
        if r.status == 202 {
            acked.push(format!("disk{i}"));
            recovered_without_restart = true;
            break;
        }
        i += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut restarted = false;
    if !recovered_without_restart {
        // The store refuses writes after an I/O error until restart (see
        // RELIABILITY.md); /readyz says so. A restart brings it back.
        let ready = c.request("GET", &router.url("/readyz"), &[], "").await;
        eprintln!(
            "after space returned, readyz={} {}",
            ready.status,
            String::from_utf8_lossy(&ready.body)
        );
        router.stop();
        router.spawn();
        restarted = true;
        let r = post_disk(&c, &url, 2000).await;
        assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
        acked.push("disk2000".into());
    }
    // The producer retries the refused events, as a 503 asks it to.
    for k in &refused_keys {
        let i: usize = k.trim_start_matches("disk").parse().unwrap();
        let r = post_disk(&c, &url, i).await;
        assert_eq!(r.status, 202);
        acked.push(k.clone());
    }
    let want: HashSet<String> = acked.iter().cloned().collect();
    rx.wait_for(Duration::from_secs(60), "every acknowledged event", |g| {
        let have: HashSet<String> = g.iter().filter_map(payload_id).collect();
        want.iter().all(|k| have.contains(k))
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let dups = rx.count() - counts_by_payload(&rx.received()).len();
    eprintln!(
        "FIGURES storage_full_disk: tmpfs 8 MiB; acked={} (all delivered, lost=0); 503s={n503} (first at request #{}), other statuses={other:?}; \
         process alive; readyz 503 with store_error; deliveries sent in 2 s while full={storm}; \
         recovered when space returned without restart={recovered_without_restart} (restart needed={restarted}); duplicates={dups}",
        want.len(),
        first_503.unwrap_or(0),
    );
    assert!(
        storm <= 40,
        "deliveries kept being resent while the store could not record them: {storm} in 2 s"
    );
    assert!(
        dups <= want.len(),
        "too many duplicates: {dups} for {} events",
        want.len()
    );
}

async fn post_disk(c: &Client, url: &str, i: usize) -> Resp {
    let body = json!({"event": "user.created", "payload": {"data": {"id": format!("disk{i}"), "pad": "p".repeat(4000)}}}).to_string();
    let key = format!("disk{i}");
    let a = auth();
    c.request(
        "POST",
        url,
        &[
            (a.0, &a.1),
            ("content-type", "application/json"),
            ("idempotency-key", &key),
        ],
        body,
    )
    .await
}
