//! The receiver's HTTPS accept loop: timeouts and caps on connections, so one hostile client
//! cannot hold every file descriptor or task of the receiver (issue 15, "Hostile load" in
//! docs/RELIABILITY.md).
//!
//! Written on hyper-util's connection builder rather than through axum-server because the
//! decisions below must be taken in the accept loop itself, before a connection is spawned
//! (axum-server spawns first and offers no hook to refuse, evict or count there).
//!
//! # Rules
//! - **Open files**: [`raise_open_files_limit`] lifts the soft `RLIMIT_NOFILE` to the hard limit
//!   at start; connections may use that limit less [`FD_RESERVE`] (or `max_connections`).
//! - **TLS handshake timeout**: a handshake not done within `tls_handshake_timeout` is dropped.
//! - **Header timeout**: a connection must deliver its first complete request head (handshake
//!   included) within `header_timeout` of being accepted, else the sweeper closes it: a
//!   half-sent request line holds a descriptor for at most that long.
//! - **Idle timeout**: a kept-alive connection with nothing in flight is closed after
//!   `idle_timeout` (longer than the heartbeat interval, so agents keep a warm connection).
//!   For HTTP/1 hyper's own `header_read_timeout` (with a timer) is set to the same value:
//!   hyper arms it as soon as it waits for the next request, so it *is* an idle timeout, and
//!   a shorter value would close every agent's connection between two heartbeats. The short
//!   limit on the first request is therefore ours, in the sweeper.
//! - **HTTP/2**: at most `h2_max_concurrent_streams` streams per connection, a bounded header
//!   list, and bounded reset streams (the "rapid reset" and "MadeYouReset" floods).
//!
//! # Caps, and the share kept for enrolled devices
//! A connection is *untrusted* until a request on it proved who sent it: a `2xx` answer to a
//! signed device request (`/v1/events`, `/v1/heartbeats`) or a valid console session (see
//! [`ConnectionHandle::trust`]). Then it is *trusted*.
//! - Untrusted connections of one address are capped (`max_per_address`), untrusted
//!   connections in total are capped at three quarters of the total; the last quarter is the
//!   **reserve** only trusted connections occupy. All connections together are capped
//!   (`max_connections`).
//! - Past a cap the new connection is still accepted, and the **oldest idle untrusted**
//!   connection in the same scope (that address, or everyone) is closed to make room — past
//!   the untrusted cap, first one of the address holding the most untrusted connections, when
//!   the newcomer comes from an address holding fewer (see `evict_from_the_greediest`); only
//!   past the total cap with no such victim may an idle trusted one go (its agent simply
//!   reconnects, nothing is lost). A connection with a request in flight is never closed to
//!   make room: if there is no idle victim the *new* connection is refused instead.
//!
//! Why evict rather than refuse: refusing at the cap hands the receiver to whoever filled it
//! first — the attacker, who got there first by definition — while an enrolled agent's alarm
//! arrives on a *new*, still untrusted connection. Evicting the oldest idle untrusted one
//! means the attacker must keep opening connections faster than an agent completes one
//! handshake and one request (a few ms on a campus network) to starve it, and even then every
//! connection it holds dies within `header_timeout` unless it completes requests, which the
//! per-device and sign-in limits bound. Trusted connections are never the attacker's victims
//! while the reserve holds them.
//!
//! Only counters, no per-request logs: a flood must not flood the log. The sweeper logs one
//! summary every `REPORT_EVERY` while connections are being evicted or timed out.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::ConnectInfo;
use axum::http::{Extensions, Request};
use futures::task::AtomicWaker;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceExt as _;

pub use crate::settings::{ConnectionLimits, FD_RESERVE};

/// How often the sweeper looks for connections past their header or idle timeout.
const SWEEP_EVERY: Duration = Duration::from_millis(250);
/// How often, at most, the sweeper logs a summary of closed connections.
const REPORT_EVERY: Duration = Duration::from_secs(10);
/// Evicted connections whose descriptors are not closed yet before the accept loop waits for
/// them: each accept past a cap closes one, and the accept loop must not outrun the closing.
const MAX_DYING: usize = 32;
/// A new connection cannot be evicted during its first second: long enough for a handshake and
/// one request on a campus network, so an attacker who churns connections cannot evict an
/// agent's before it has proven itself; the price is that while every untrusted connection is
/// younger than this, a new one is refused (the agent retries, its alarm stays queued).
const EVICTION_GRACE: Duration = Duration::from_secs(1);
/// Bytes of HTTP/2 header list a request may carry (a real request has under 1 KB).
const H2_MAX_HEADER_LIST: u32 = 16 * 1024;

/// Raises the soft open-files limit to the hard limit and returns the soft limit now in force
/// (`None`: unlimited, or not a Unix system). Logs what it did.
pub fn raise_open_files_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
        let before = getrlimit(Resource::Nofile);
        let Some(soft) = before.current else {
            tracing::info!("open-files limit: unlimited");
            return None;
        };
        // macOS reports an unlimited hard limit that setrlimit refuses for descriptors.
        let target = before.maximum.unwrap_or(soft.max(65_536));
        if target <= soft {
            tracing::info!(soft, hard = ?before.maximum, "open-files limit already at the hard limit");
            return Some(soft);
        }
        match setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(target),
                maximum: before.maximum,
            },
        ) {
            Ok(()) => {
                tracing::info!(
                    from = soft,
                    to = target,
                    "raised the open-files soft limit to the hard limit"
                );
                Some(target)
            }
            Err(e) => {
                tracing::warn!(soft, target, error = %e, "could not raise the open-files limit");
                Some(soft)
            }
        }
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// The caps in force, derived from [`ConnectionLimits`] and the open-files limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    pub total: usize,
    pub untrusted: usize,
    pub per_address: usize,
}

impl Caps {
    /// `open_files`: the soft open-files limit (`None`: unlimited).
    pub fn new(limits: &ConnectionLimits, open_files: Option<u64>) -> Self {
        let from_files = open_files
            .map(|n| usize::try_from(n).unwrap_or(usize::MAX))
            .unwrap_or(65_536)
            .saturating_sub(FD_RESERVE);
        let total = limits.max_connections.unwrap_or(from_files).max(8);
        // A quarter is the reserve for trusted connections.
        let untrusted = (total - total / 4).max(4);
        Caps {
            total,
            untrusted,
            per_address: limits.max_per_address.clamp(1, untrusted),
        }
    }
}

/// Why the receiver closed a connection itself.
#[derive(Debug, Clone, Copy)]
enum Closed {
    Evicted,
    HeaderTimeout,
    IdleTimeout,
    Shutdown,
}

/// One accepted connection, shared by its IO, its requests and the registry.
#[derive(Debug)]
struct Conn {
    id: u64,
    ip: IpAddr,
    accepted: Instant,
    killed: AtomicBool,
    read_waker: AtomicWaker,
    write_waker: AtomicWaker,
    /// A request head arrived on it.
    started: AtomicBool,
    in_flight: AtomicUsize,
    /// When it last became idle: milliseconds since the registry's epoch.
    idle_since_ms: AtomicU64,
    trusted: AtomicBool,
}

impl Conn {
    /// Makes its IO fail at the next poll (and wakes it so that poll comes now): hyper ends
    /// the connection and its descriptor is closed when the task drops it.
    fn kill(&self) {
        self.killed.store(true, Ordering::SeqCst);
        self.read_waker.wake();
        self.write_waker.wake();
    }

    fn idle(&self) -> bool {
        self.in_flight.load(Ordering::SeqCst) == 0
    }
}

#[derive(Debug, Default)]
struct Inner {
    next_id: u64,
    /// By id, which is accept order: the first entries are the oldest.
    conns: BTreeMap<u64, Arc<Conn>>,
    untrusted: usize,
    untrusted_per_ip: HashMap<IpAddr, usize>,
    /// Removed from `conns` (evicted or timed out) but not yet dropped by their task.
    dying: usize,
}

/// Counters of the registry (for logs and tests).
#[derive(Debug, Default)]
pub struct ConnectionStats {
    pub accepted: AtomicU64,
    pub refused: AtomicU64,
    pub evicted: AtomicU64,
    pub header_timeouts: AtomicU64,
    pub idle_timeouts: AtomicU64,
    pub peak: AtomicUsize,
}

/// Every open connection, and the caps.
#[derive(Debug)]
pub struct Registry {
    caps: Caps,
    limits: ConnectionLimits,
    epoch: Instant,
    eviction_grace: Duration,
    inner: Mutex<Inner>,
    pub stats: ConnectionStats,
}

impl Registry {
    pub fn new(caps: Caps, limits: ConnectionLimits) -> Self {
        Registry {
            caps,
            limits,
            epoch: Instant::now(),
            eviction_grace: EVICTION_GRACE,
            inner: Mutex::new(Inner::default()),
            stats: ConnectionStats::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding this lock leaves counts that are at worst slightly off; the
        // receiver must keep accepting, so poisoning is ignored.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.lock().conns.len()
    }

    /// Registers a new connection from `ip`, closing an idle untrusted one when a cap is
    /// reached (see the module documentation); `None`: refuse it.
    fn admit(&self, ip: IpAddr) -> Option<Arc<Conn>> {
        let mut g = self.lock();
        if g.untrusted_per_ip.get(&ip).copied().unwrap_or(0) >= self.caps.per_address
            && !self.evict(&mut g, |c| c.ip == ip && !c.trusted.load(Ordering::SeqCst))
        {
            self.stats.refused.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        if g.untrusted >= self.caps.untrusted
            && !self.evict_from_the_greediest(&mut g, ip)
            && !self.evict(&mut g, |c| !c.trusted.load(Ordering::SeqCst))
        {
            self.stats.refused.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        if g.conns.len() >= self.caps.total
            && !self.evict(&mut g, |c| !c.trusted.load(Ordering::SeqCst))
            && !self.evict(&mut g, |_| true)
        {
            self.stats.refused.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        g.next_id += 1;
        let conn = Arc::new(Conn {
            id: g.next_id,
            ip,
            accepted: Instant::now(),
            killed: AtomicBool::new(false),
            read_waker: AtomicWaker::new(),
            write_waker: AtomicWaker::new(),
            started: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(self.now_ms()),
            trusted: AtomicBool::new(false),
        });
        g.conns.insert(conn.id, conn.clone());
        g.untrusted += 1;
        *g.untrusted_per_ip.entry(ip).or_insert(0) += 1;
        let open = g.conns.len();
        self.stats.peak.fetch_max(open, Ordering::Relaxed);
        self.stats.accepted.fetch_add(1, Ordering::Relaxed);
        Some(conn)
    }

    /// Past the untrusted cap, the address holding the most untrusted connections pays: its
    /// oldest idle one is closed even if young, provided the newcomer comes from another
    /// address holding fewer. So one hostile address churning connections cannot starve an
    /// agent connecting from anywhere else, however fast it reconnects.
    fn evict_from_the_greediest(&self, g: &mut Inner, newcomer: IpAddr) -> bool {
        let Some((&greedy, &held)) = g.untrusted_per_ip.iter().max_by_key(|(_, n)| **n) else {
            return false;
        };
        let own = g.untrusted_per_ip.get(&newcomer).copied().unwrap_or(0);
        if greedy == newcomer || held <= own + 1 {
            return false;
        }
        let victim = g
            .conns
            .values()
            .find(|c| c.ip == greedy && c.idle() && !c.trusted.load(Ordering::SeqCst))
            .map(|c| c.id);
        match victim {
            Some(id) => {
                self.close(g, id, Closed::Evicted);
                true
            }
            None => false,
        }
    }

    /// Closes the oldest idle connection matching `which`; false when there is none.
    fn evict(&self, g: &mut Inner, which: impl Fn(&Conn) -> bool) -> bool {
        let now = Instant::now();
        let victim = g
            .conns
            .values()
            .find(|c| c.idle() && now.duration_since(c.accepted) >= self.eviction_grace && which(c))
            .map(|c| c.id);
        match victim {
            Some(id) => {
                self.close(g, id, Closed::Evicted);
                true
            }
            None => false,
        }
    }

    /// Takes connection `id` out of the counts and kills it.
    fn close(&self, g: &mut Inner, id: u64, why: Closed) {
        let Some(conn) = g.conns.remove(&id) else {
            return;
        };
        Self::forget_untrusted(g, &conn);
        g.dying += 1;
        conn.kill();
        let counter = match why {
            Closed::Evicted => &self.stats.evicted,
            Closed::HeaderTimeout => &self.stats.header_timeouts,
            Closed::IdleTimeout => &self.stats.idle_timeouts,
            Closed::Shutdown => return,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn forget_untrusted(g: &mut Inner, conn: &Conn) {
        if conn.trusted.load(Ordering::SeqCst) {
            return;
        }
        g.untrusted = g.untrusted.saturating_sub(1);
        if let Some(n) = g.untrusted_per_ip.get_mut(&conn.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                g.untrusted_per_ip.remove(&conn.ip);
            }
        }
    }

    /// The connection's task dropped it: its descriptor is closed.
    fn release(&self, conn: &Conn) {
        let mut g = self.lock();
        if g.conns.remove(&conn.id).is_some() {
            Self::forget_untrusted(&mut g, conn);
        } else {
            // Closed by us earlier (counted in `dying` then).
            g.dying = g.dying.saturating_sub(1);
        }
    }

    fn trust(&self, conn: &Conn) {
        let mut g = self.lock();
        if conn.trusted.load(Ordering::SeqCst) || !g.conns.contains_key(&conn.id) {
            return;
        }
        Self::forget_untrusted(&mut g, conn);
        conn.trusted.store(true, Ordering::SeqCst);
    }

    /// Waits (bounded) while too many closed connections still hold their descriptors.
    async fn wait_for_dying(&self) {
        for _ in 0..200 {
            if self.lock().dying <= MAX_DYING {
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Closes connections past their header or idle timeout.
    fn sweep(&self) {
        let now = Instant::now();
        let now_ms = self.now_ms();
        let idle_ms = u64::try_from(self.limits.idle_timeout.as_millis()).unwrap_or(u64::MAX);
        let mut g = self.lock();
        let expired: Vec<(u64, Closed)> = g
            .conns
            .values()
            .filter_map(|c| {
                if !c.started.load(Ordering::SeqCst) {
                    (now.duration_since(c.accepted) >= self.limits.header_timeout)
                        .then_some((c.id, Closed::HeaderTimeout))
                } else if c.idle()
                    && now_ms.saturating_sub(c.idle_since_ms.load(Ordering::SeqCst)) >= idle_ms
                {
                    Some((c.id, Closed::IdleTimeout))
                } else {
                    None
                }
            })
            .collect();
        for (id, why) in expired {
            self.close(&mut g, id, why);
        }
    }

    fn close_all(&self) {
        let mut g = self.lock();
        let ids: Vec<u64> = g.conns.keys().copied().collect();
        for id in ids {
            self.close(&mut g, id, Closed::Shutdown);
        }
    }

    async fn run_sweeper(self: Arc<Self>) {
        let mut reported = (0, 0, 0, 0);
        let mut last_report = Instant::now();
        loop {
            tokio::time::sleep(SWEEP_EVERY).await;
            self.sweep();
            if last_report.elapsed() >= REPORT_EVERY {
                let now = (
                    self.stats.evicted.load(Ordering::Relaxed),
                    self.stats.refused.load(Ordering::Relaxed),
                    self.stats.header_timeouts.load(Ordering::Relaxed),
                    self.stats.idle_timeouts.load(Ordering::Relaxed),
                );
                if now.0 != reported.0 || now.1 != reported.1 || now.2 != reported.2 {
                    tracing::warn!(
                        open = self.open(),
                        evicted = now.0 - reported.0,
                        refused = now.1 - reported.1,
                        header_timeouts = now.2 - reported.2,
                        idle_timeouts = now.3 - reported.3,
                        cap_total = self.caps.total,
                        cap_untrusted = self.caps.untrusted,
                        cap_per_address = self.caps.per_address,
                        "connections closed by the receiver's limits"
                    );
                }
                reported = now;
                last_report = Instant::now();
            }
        }
    }
}

/// Put in every request's extensions: lets a handler or middleware mark the connection as
/// proven (see [`ConnectionHandle::trust`]).
#[derive(Debug, Clone)]
pub struct ConnectionHandle {
    conn: Arc<Conn>,
    registry: Arc<Registry>,
}

impl ConnectionHandle {
    /// The request proved who sent it (a valid device signature, a valid console session):
    /// the connection moves to the trusted share and is no longer an eviction victim while
    /// the reserve holds it.
    pub fn trust(&self) {
        self.registry.trust(&self.conn);
    }
}

/// Marks the connection a request arrived on as trusted (no-op outside [`serve`]).
pub fn trust_connection(extensions: &Extensions) {
    if let Some(handle) = extensions.get::<ConnectionHandle>() {
        handle.trust();
    }
}

/// The TCP stream of a registered connection: fails once the registry killed it, and leaves
/// the registry when dropped (which is when its descriptor is closed).
struct TrackedIo {
    inner: TcpStream,
    conn: Arc<Conn>,
    registry: Arc<Registry>,
}

fn killed_error() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "connection closed by the receiver's limits",
    )
}

impl AsyncRead for TrackedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.conn.read_waker.register(cx.waker());
        if self.conn.killed.load(Ordering::SeqCst) {
            return Poll::Ready(Err(killed_error()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for TrackedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.conn.write_waker.register(cx.waker());
        if self.conn.killed.load(Ordering::SeqCst) {
            return Poll::Ready(Err(killed_error()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.conn.write_waker.register(cx.waker());
        if self.conn.killed.load(Ordering::SeqCst) {
            return Poll::Ready(Err(killed_error()));
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.conn.write_waker.register(cx.waker());
        if self.conn.killed.load(Ordering::SeqCst) {
            return Poll::Ready(Err(killed_error()));
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl Drop for TrackedIo {
    fn drop(&mut self) {
        self.registry.release(&self.conn);
    }
}

/// A request in flight on a connection: while one exists the connection is not idle.
struct Busy {
    conn: Arc<Conn>,
    registry: Arc<Registry>,
}

impl Busy {
    fn new(conn: Arc<Conn>, registry: Arc<Registry>) -> Self {
        conn.started.store(true, Ordering::SeqCst);
        conn.in_flight.fetch_add(1, Ordering::SeqCst);
        Busy { conn, registry }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.conn
            .idle_since_ms
            .store(self.registry.now_ms(), Ordering::SeqCst);
        self.conn.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// An answer's body that keeps its request [`Busy`] until it is sent (or dropped), so a live
/// stream (SSE) is never idle.
struct BusyBody {
    inner: Body,
    _busy: Busy,
}

impl HttpBody for BusyBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Signed device requests: a `2xx` answer to one proves the connection's sender.
fn is_signed_device_path(path: &str) -> bool {
    matches!(path, "/v1/events" | "/v1/heartbeats")
}

fn http_builder(limits: &ConnectionLimits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.idle_timeout)
        .max_headers(64)
        .max_buf_size(64 * 1024);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.h2_max_concurrent_streams)
        .max_header_list_size(H2_MAX_HEADER_LIST)
        .max_pending_accept_reset_streams(Some(20))
        .max_local_error_reset_streams(Some(64));
    builder
}

/// Serves `app` over TLS on `listener` until `shutdown` resolves, then stops accepting, lets
/// in-flight requests finish for up to `grace` and closes what is left. `ready` is sent once
/// the loop accepts.
pub async fn serve(
    listener: std::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    app: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
    ready: Option<tokio::sync::oneshot::Sender<()>>,
) -> io::Result<()> {
    let open_files = raise_open_files_limit();
    let caps = Caps::new(&limits, open_files);
    tracing::info!(
        open_files = ?open_files,
        max_connections = caps.total,
        max_untrusted = caps.untrusted,
        max_per_address = caps.per_address,
        header_timeout_s = limits.header_timeout.as_secs_f64(),
        idle_timeout_s = limits.idle_timeout.as_secs_f64(),
        "connection limits"
    );
    listener.set_nonblocking(true)?;
    let listener = TcpListener::from_std(listener)?;
    let registry = Arc::new(Registry::new(caps, limits.clone()));
    let builder = Arc::new(http_builder(&limits));
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let sweeper = tokio::spawn(registry.clone().run_sweeper());
    if let Some(ready) = ready {
        let _ = ready.send(());
    }
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    on_accept_error(&registry, &e);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let Some(conn) = registry.admit(peer.ip()) else {
            continue; // dropping `tcp` closes it
        };
        // TCP_NODELAY: an answer leaves as its TLS records are written. Without it Nagle held
        // the last record of an answer for the client's delayed ACK (≈ 40 ms) whenever several
        // requests were in flight (measured: a queue of alarms drained at 16 per 43 ms).
        let _ = tcp.set_nodelay(true);
        let io = TrackedIo {
            inner: tcp,
            conn: conn.clone(),
            registry: registry.clone(),
        };
        let handle = ConnectionHandle {
            conn,
            registry: registry.clone(),
        };
        let acceptor = acceptor.clone();
        let builder = builder.clone();
        let app = app.clone();
        let watcher = graceful.watcher();
        let handshake_timeout = limits.tls_handshake_timeout;
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(handshake_timeout, acceptor.accept(io)).await {
                Ok(Ok(stream)) => stream,
                // A failed or slow handshake: nothing to answer, the socket just closes.
                Ok(Err(_)) => {
                    crate::metrics::global().tls_refused(crate::metrics::HandshakeRefusal::Failed);
                    return;
                }
                Err(_) => {
                    crate::metrics::global().tls_refused(crate::metrics::HandshakeRefusal::Timeout);
                    return;
                }
            };
            let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
                let app = app.clone();
                let handle = handle.clone();
                async move {
                    let busy = Busy::new(handle.conn.clone(), handle.registry.clone());
                    let device = is_signed_device_path(request.uri().path());
                    request.extensions_mut().insert(ConnectInfo(peer));
                    request.extensions_mut().insert(handle.clone());
                    let response = match app.oneshot(request).await {
                        Ok(response) => response,
                        Err(never) => match never {},
                    };
                    if device && response.status().is_success() {
                        handle.trust();
                    }
                    Ok::<_, Infallible>(
                        response.map(|inner| Body::new(BusyBody { inner, _busy: busy })),
                    )
                }
            });
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            let _ = watcher.watch(connection).await;
        });
        registry.wait_for_dying().await;
    }
    drop(listener);
    tracing::info!("shutting down: finishing in-flight requests");
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("requests still in flight after the shutdown grace: closing them");
    }
    // Connections still in their handshake were never watched: close them too.
    registry.close_all();
    for _ in 0..100 {
        if registry.lock().dying == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    sweeper.abort();
    Ok(())
}

/// Out of descriptors (`EMFILE`/`ENFILE`): close the oldest idle untrusted connection so the
/// next accept — perhaps an agent's alarm — finds one. Other errors (a client that reset
/// before we accepted) need nothing.
fn on_accept_error(registry: &Registry, error: &io::Error) {
    #[cfg(unix)]
    let out_of_files = matches!(
        error.raw_os_error(),
        Some(code) if code == rustix::io::Errno::MFILE.raw_os_error()
            || code == rustix::io::Errno::NFILE.raw_os_error()
    );
    #[cfg(not(unix))]
    let out_of_files = false;
    if out_of_files {
        let mut g = registry.lock();
        if !registry.evict(&mut g, |c| !c.trusted.load(Ordering::SeqCst)) {
            registry.evict(&mut g, |_| true);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn limits(total: usize, per_address: usize) -> ConnectionLimits {
        let mut l = ConnectionLimits::for_heartbeat(60);
        l.max_connections = Some(total);
        l.max_per_address = per_address;
        l
    }

    #[test]
    fn caps_come_from_the_open_files_limit() {
        let l = ConnectionLimits::for_heartbeat(60);
        let caps = Caps::new(&l, Some(1024));
        assert_eq!(caps.total, 1024 - FD_RESERVE);
        assert_eq!(caps.untrusted, caps.total - caps.total / 4);
        assert_eq!(caps.per_address, 256);
    }

    #[test]
    fn over_a_cap_the_oldest_idle_untrusted_goes_and_busy_or_trusted_stay() {
        let mut r = Registry::new(Caps::new(&limits(8, 100), None), limits(8, 100));
        r.eviction_grace = Duration::ZERO;
        // untrusted cap: 8 - 2 = 6.
        let conns: Vec<_> = (0..6)
            .map(|i| r.admit(IpAddr::from([10, 0, 0, i])).unwrap())
            .collect();
        // The oldest is busy, the second trusted: the third is the victim.
        conns[0].in_flight.store(1, Ordering::SeqCst);
        r.trust(&conns[1]);
        // Trusted left the untrusted share: one more fits before the cap.
        let _fits = r.admit(IpAddr::from([10, 0, 0, 98])).unwrap();
        assert_eq!(r.stats.evicted.load(Ordering::Relaxed), 0);
        let _new = r.admit(IpAddr::from([10, 0, 0, 99])).unwrap();
        assert!(!conns[0].killed.load(Ordering::SeqCst));
        assert!(!conns[1].killed.load(Ordering::SeqCst));
        assert!(conns[2].killed.load(Ordering::SeqCst));
        assert_eq!(r.stats.evicted.load(Ordering::Relaxed), 1);
        // Everything untrusted busy: the new connection is refused, nothing killed.
        for c in r.lock().conns.values() {
            c.in_flight.store(1, Ordering::SeqCst);
        }
        assert!(r.admit(IpAddr::from([10, 0, 0, 100])).is_none());
        assert_eq!(r.stats.evicted.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn per_address_cap_evicts_within_that_address_only() {
        let mut r = Registry::new(Caps::new(&limits(100, 2), None), limits(100, 2));
        r.eviction_grace = Duration::ZERO;
        let other = r.admit(IpAddr::from([10, 0, 0, 1])).unwrap();
        let a1 = r.admit(IpAddr::from([10, 0, 0, 2])).unwrap();
        let _a2 = r.admit(IpAddr::from([10, 0, 0, 2])).unwrap();
        let _a3 = r.admit(IpAddr::from([10, 0, 0, 2])).unwrap();
        assert!(a1.killed.load(Ordering::SeqCst));
        assert!(!other.killed.load(Ordering::SeqCst));
        assert_eq!(r.open(), 3);
    }

    #[test]
    fn past_the_untrusted_cap_the_greediest_address_pays_even_when_young() {
        // Untrusted cap 6, per address 100; grace as in production (1 s).
        let r = Registry::new(Caps::new(&limits(8, 100), None), limits(8, 100));
        let hostile: Vec<_> = (0..6)
            .map(|_| r.admit(IpAddr::from([10, 0, 0, 2])).unwrap())
            .collect();
        let agent = r.admit(IpAddr::from([10, 0, 0, 1]));
        assert!(agent.is_some(), "the agent gets in");
        assert!(
            hostile[0].killed.load(Ordering::SeqCst),
            "the hostile oldest went"
        );
        // The hostile address itself gets no such help: all its connections are young.
        assert!(r.admit(IpAddr::from([10, 0, 0, 2])).is_none());
    }

    #[test]
    fn a_young_connection_is_not_evicted() {
        let r = Registry::new(Caps::new(&limits(100, 1), None), limits(100, 1));
        let first = r.admit(IpAddr::from([10, 0, 0, 2])).unwrap();
        assert!(r.admit(IpAddr::from([10, 0, 0, 2])).is_none(), "refused");
        assert!(!first.killed.load(Ordering::SeqCst));
        assert_eq!(r.stats.refused.load(Ordering::Relaxed), 1);
    }
}
