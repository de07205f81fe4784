//! Finding 2: connections an unauthenticated client could hold forever.

use super::*;
use tokio::net::TcpStream;

/// Reads until the server closes the connection or `within` passes;
/// returns the bytes read and whether it closed.
async fn read_until_closed(s: &mut TcpStream, within: Duration) -> (usize, bool) {
    let deadline = tokio::time::Instant::now() + within;
    let mut buf = vec![0u8; 1 << 16];
    let mut n = 0;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (n, true),
            Ok(Ok(k)) => n += k,
            Err(_) => return (n, false),
        }
    }
}

/// A body trickled at one byte a second is cut off by `body_timeout` (408,
/// connection closed); a client that pipelines requests without reading
/// the answers is closed by `idle_timeout`; idle keep-alive connections
/// are closed too. Before, all three stayed open indefinitely.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_stuck_connections_are_closed() {
    let config =
        base_config("header_timeout = \"30s\"\nbody_timeout = \"2s\"\nidle_timeout = \"2s\"\n");
    let router = Router::start(&config, &[]);

    // A body trickled at 1 byte/s.
    let mut s = TcpStream::connect(router.addr).await.unwrap();
    let head = format!(
        "POST /v1/accounts/acct/events HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {TOKEN}\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let start = Instant::now();
    let mut answer = Vec::new();
    let mut closed = false;
    while start.elapsed() < Duration::from_secs(12) {
        if s.write_all(b" ").await.is_err() {
            closed = true;
            break;
        }
        let mut buf = [0u8; 4096];
        match tokio::time::timeout(Duration::from_secs(1), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            Ok(Ok(n)) => answer.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
    }
    let text = String::from_utf8_lossy(&answer).to_string();
    println!(
        "trickled body: answer after {:?}: {text:?}",
        start.elapsed()
    );
    assert!(text.starts_with("HTTP/1.1 408"), "{text:?}");
    assert!(closed || read_until_closed(&mut s, Duration::from_secs(5)).await.1);
    assert!(start.elapsed() < Duration::from_secs(8));

    // 1,500 pipelined GET /metrics, answers never read.
    let s = TcpStream::connect(router.addr).await.unwrap();
    let one = b"GET /metrics HTTP/1.1\r\nhost: x\r\n\r\n".repeat(1500);
    let writer = {
        let (mut r, mut w) = s.into_split();
        let h = tokio::spawn(async move {
            let _ = w.write_all(&one).await;
            w
        });
        // Do not read for a while: the router's writes stall.
        tokio::time::sleep(Duration::from_secs(5)).await;
        let (n, closed) = {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            let mut buf = vec![0u8; 1 << 16];
            let mut n = 0;
            let mut closed = false;
            loop {
                match tokio::time::timeout_at(deadline, r.read(&mut buf)).await {
                    Ok(Ok(0)) | Ok(Err(_)) => {
                        closed = true;
                        break;
                    }
                    Ok(Ok(k)) => n += k,
                    Err(_) => break,
                }
            }
            (n, closed)
        };
        println!("pipelined: read {n} bytes, closed: {closed}");
        assert!(
            closed,
            "the router kept a connection whose answers were not read"
        );
        h
    };
    drop(writer);

    // Idle keep-alive.
    let mut s = TcpStream::connect(router.addr).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let (_, closed) = read_until_closed(&mut s, Duration::from_secs(8)).await;
    assert!(closed, "an idle keep-alive connection stayed open");

    // Ordinary clients are unaffected.
    let r = Client::new()
        .request("GET", &router.url("/healthz"), &[], "")
        .await;
    assert_eq!(r.status, 200);
}

/// Open connections are capped per client address (and in total) with a
/// clear log line; the router raises its open-file limit to the hard limit
/// at start-up. Before, 95 idle connections with `ulimit -n 100` starved
/// every other client (`accept failed: Too many open files`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_capped_and_the_file_limit_raised() {
    let rx = Receiver::ok().await;
    let config =
        base_config("max_connections_per_client = 20\n") + &endpoint("e", &rx.url("/e"), "");
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tmp.path().join("plugins")).unwrap();
    std::fs::write(tmp.path().join("router.toml"), &config).unwrap();
    // Start under a low soft limit, as a shell with `ulimit -Sn 64` would.
    let mut child = std::process::Command::new("bash")
        .args([
            "-c",
            "ulimit -Sn 64 && exec \"$0\" serve -c router.toml",
            BIN,
        ])
        .current_dir(tmp.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let l = log.clone();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            l.lock().unwrap().push_str(&(line + "\n"));
        }
    });
    let (tx, rxl) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if let Some(a) = line.strip_prefix("listening on ") {
                let _ = tx.send(a.to_string());
            }
        }
    });
    let addr: std::net::SocketAddr = rxl
        .recv_timeout(Duration::from_secs(60))
        .expect("router started")
        .parse()
        .unwrap();
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", child.id())).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap()
        .to_string();
    let nums: Vec<&str> = line.split_whitespace().skip(3).take(2).collect();
    println!("{line}");
    assert_eq!(
        nums[0], nums[1],
        "soft limit not raised to the hard limit: {line}"
    );

    // 20 idle connections are allowed; the 21st is closed at once.
    let mut held = Vec::new();
    for _ in 0..20 {
        held.push(TcpStream::connect(addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut extra = TcpStream::connect(addr).await.unwrap();
    let _ = extra
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await;
    let (n, closed) = read_until_closed(&mut extra, Duration::from_secs(5)).await;
    assert!(
        closed && n == 0,
        "the 21st connection was served ({n} bytes)"
    );
    // The refusal is logged (read from the router's stderr by another
    // thread: wait for it).
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let text = loop {
        let text = log.lock().unwrap().clone();
        if text.contains("max_connections_per_client") || std::time::Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(text.contains("max_connections_per_client"), "{text}");
    // Freeing places lets clients in again.
    held.truncate(10);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = Client::new()
        .request("GET", &format!("http://{addr}/healthz"), &[], "")
        .await;
    assert_eq!(r.status, 200);
    let _ = child.kill();
    let _ = child.wait();
}
