//! Guards on client connections: a cap on open connections (in total and
//! per client address) applied at accept, a progress tracker that lets the
//! server close connections that neither send nor read (idle keep-alive,
//! a client that pipelines requests without reading the answers), and the
//! start-up raise of the open-file limit.

use std::collections::HashMap;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tracing::warn;

/// Open connections, in total and per client address.
pub struct ConnLimits {
    max_total: usize,
    max_per_client: usize,
    open: Mutex<Counts>,
    /// Last "refused" log line (ms since `start`), to log at most once a second.
    last_log_ms: AtomicU64,
    refused: AtomicU64,
    start: Instant,
}

#[derive(Default)]
struct Counts {
    total: usize,
    per_client: HashMap<IpAddr, usize>,
}

/// Held for a connection's life; frees its place when dropped.
pub struct ConnPermit {
    limits: Arc<ConnLimits>,
    ip: IpAddr,
}

impl ConnLimits {
    pub fn new(max_total: usize, max_per_client: usize) -> Self {
        ConnLimits {
            max_total,
            max_per_client,
            open: Mutex::new(Counts::default()),
            last_log_ms: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            start: Instant::now(),
        }
    }

    /// A place for a new connection from `ip`, or `None` (logged, at most
    /// once a second with the count refused since).
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<ConnPermit> {
        let why = {
            let mut c = self.open.lock().unwrap_or_else(|p| p.into_inner());
            let mine = c.per_client.get(&ip).copied().unwrap_or(0);
            if c.total >= self.max_total {
                Some("total")
            } else if mine >= self.max_per_client {
                Some("per_client")
            } else {
                c.total += 1;
                *c.per_client.entry(ip).or_insert(0) += 1;
                None
            }
        };
        let Some(which) = why else {
            return Some(ConnPermit {
                limits: self.clone(),
                ip,
            });
        };
        let refused = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
        let now = self.start.elapsed().as_millis() as u64;
        let last = self.last_log_ms.load(Ordering::Relaxed);
        if (now.saturating_sub(last) >= 1000 || last == 0)
            && self
                .last_log_ms
                .compare_exchange(last, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            if which == "total" {
                warn!(client = %ip, limit = self.max_total, refused_so_far = refused, "connection refused: too many open connections ([server] max_connections)");
            } else {
                warn!(client = %ip, limit = self.max_per_client, refused_so_far = refused, "connection refused: too many open connections from this client ([server] max_connections_per_client)");
            }
        }
        None
    }
}

impl Drop for ConnPermit {
    fn drop(&mut self) {
        let mut c = self.limits.open.lock().unwrap_or_else(|p| p.into_inner());
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.per_client.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                c.per_client.remove(&self.ip);
            }
        }
    }
}

/// What a connection did last: bytes moved, requests being handled.
pub struct Activity {
    start: Instant,
    last_progress_ms: AtomicU64,
    busy: AtomicUsize,
}

/// Marks a request as being handled (the connection is not idle while a
/// handler runs, however long it waits for a receiver).
pub struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.touch();
        self.0.busy.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Activity {
    fn touch(&self) {
        self.last_progress_ms
            .store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    pub fn busy(self: &Arc<Self>) -> Busy {
        self.busy.fetch_add(1, Ordering::Relaxed);
        Busy(self.clone())
    }

    /// When the connection will have been idle for `idle`, if nothing moves.
    pub fn idle_deadline(&self, idle: Duration) -> tokio::time::Instant {
        let last = Duration::from_millis(self.last_progress_ms.load(Ordering::Relaxed));
        tokio::time::Instant::from_std(self.start + last + idle)
    }

    /// No request is being handled and nothing moved for `idle`.
    pub fn is_idle(&self, idle: Duration) -> bool {
        self.busy.load(Ordering::Relaxed) == 0
            && self.start.elapsed().as_millis() as u64
                >= self.last_progress_ms.load(Ordering::Relaxed) + idle.as_millis() as u64
    }
}

/// A stream that records read and write progress in its [`Activity`].
pub struct Watched<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S> Watched<S> {
    pub fn new(inner: S) -> (Self, Arc<Activity>) {
        let activity = Arc::new(Activity {
            start: Instant::now(),
            last_progress_ms: AtomicU64::new(0),
            busy: AtomicUsize::new(0),
        });
        (
            Watched {
                inner,
                activity: activity.clone(),
            },
            activity,
        )
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Raises the soft open-file limit to the hard limit (every connection and
/// every store file takes one); returns the new soft limit.
pub fn raise_nofile_limit() -> Option<u64> {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => Some(n),
        Err(e) => {
            warn!(error = %e, "cannot raise the open-file limit (RLIMIT_NOFILE)");
            None
        }
    }
}
