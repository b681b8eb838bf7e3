//! The HTTP/1.1 server under the router: an accept loop over hyper's
//! connection builder with the limits a server facing the open network needs
//! (`http.*` config keys): a header-read timeout, an idle keep-alive timeout,
//! a body-read timeout and a cap on open connections. Graceful shutdown stops
//! accepting, closes idle connections and lets requests in flight finish.
//!
//! The header-read and idle timeouts are kept here per connection rather than
//! with hyper's `header_read_timeout`: hyper starts that timer whenever a
//! connection waits for a request head, idle keep-alive waits included, so an
//! idle timeout longer than the header timeout could not be expressed.

use axum::body::{Body, Bytes, HttpBody};
use axum::http::{header, HeaderValue, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use hyper::body::{Frame, Incoming, SizeHint};
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, Sleep};

/// Limits of the HTTP server (config section `http`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerOptions {
    /// `http.header-read-timeout`: a request head (request line and headers)
    /// must arrive within this, counted from its first byte (from the accept
    /// for a connection's first request); else the connection is closed.
    pub header_read_timeout: Duration,
    /// `http.idle-timeout`: a keep-alive connection with no request in flight
    /// and no new request started for this long is closed.
    pub idle_timeout: Duration,
    /// `http.body-read-timeout`: a request body must have fully arrived within
    /// this of its request head; else the request gets 408 and the connection
    /// is closed.
    pub body_read_timeout: Duration,
    /// `http.max-connections`: connections open at once; past it a new
    /// connection gets 503 and is closed.
    pub max_connections: usize,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(120),
            body_read_timeout: Duration::from_secs(120),
            max_connections: 4096,
        }
    }
}

/// Connections being turned away at once (each holds a socket for up to
/// [`REJECT_LINGER`]); past this, further ones are closed without an answer.
const MAX_REJECTING: usize = 64;
/// How long a turned-away connection is read from after its 503, so the
/// client's request is not answered with a reset that could hide the 503.
const REJECT_LINGER: Duration = Duration::from_secs(1);

/// Serves `router` on `listener` until `shutdown` resolves, then stops
/// accepting, closes idle connections and waits for requests in flight.
pub(crate) async fn run(
    listener: TcpListener,
    router: Router,
    opts: ServerOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let opts = Arc::new(opts);
    let open = Arc::new(AtomicUsize::new(0));
    let rejecting = Arc::new(AtomicUsize::new(0));
    // Every connection task holds a receiver: `closed()` tells when all ended.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut builder = hyper::server::conn::http1::Builder::new();
    // Timeouts are kept per connection (see the module header).
    builder.header_read_timeout(None);
    let builder = Arc::new(builder);
    let mut accept_failing = false;
    let mut last_reject_log: Option<Instant> = None;
    let mut rejected_since_log = 0u64;
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            _ = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    if is_connection_error(&e) {
                        continue;
                    }
                    // EMFILE/ENFILE and the like: back off so the loop does
                    // not spin; log once per streak.
                    if !accept_failing {
                        tracing::warn!(?e, "accepting HTTP connections failed; retrying");
                        accept_failing = true;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        accept_failing = false;
        if open.load(Ordering::Relaxed) >= opts.max_connections {
            rejected_since_log += 1;
            if last_reject_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                tracing::warn!(
                    rejected = rejected_since_log,
                    max_connections = opts.max_connections,
                    "connections refused with 503: at http.max-connections"
                );
                last_reject_log = Some(Instant::now());
                rejected_since_log = 0;
            }
            if rejecting.fetch_add(1, Ordering::Relaxed) < MAX_REJECTING {
                let rejecting = rejecting.clone();
                tokio::spawn(async move {
                    reject(stream).await;
                    rejecting.fetch_sub(1, Ordering::Relaxed);
                });
            } else {
                rejecting.fetch_sub(1, Ordering::Relaxed);
                drop(stream);
            }
            continue;
        }
        let _ = stream.set_nodelay(true);
        open.fetch_add(1, Ordering::Relaxed);
        let task = ConnTask {
            _open: OpenSlot(open.clone()),
            opts: opts.clone(),
            builder: builder.clone(),
            router: router.clone(),
            stop: stop_rx.clone(),
        };
        tokio::spawn(task.run(stream));
    }
    // Stop accepting: the listening socket closes here.
    drop(listener);
    let _ = stop_tx.send(true);
    drop(stop_rx);
    stop_tx.closed().await;
    Ok(())
}

/// Accept errors that concern one connection only (as axum's serve treats them).
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

const REJECT_BODY: &str = "too many open connections (http.max-connections)\n";

/// Answers a connection over the cap with 503 and closes it.
async fn reject(mut s: TcpStream) {
    let resp = format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\nRetry-After: 1\r\n\r\n{REJECT_BODY}",
        REJECT_BODY.len()
    );
    let _ = tokio::time::timeout(REJECT_LINGER, async {
        if s.write_all(resp.as_bytes()).await.is_ok() {
            let _ = s.shutdown().await;
            // Drain what the client sent (bounded) so closing does not reset
            // the connection before the client has read the answer.
            let mut buf = [0u8; 4096];
            let mut left = 64 * 1024usize;
            while left > 0 {
                match tokio::io::AsyncReadExt::read(&mut s, &mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => left = left.saturating_sub(n),
                }
            }
        }
    })
    .await;
}

struct ConnTask {
    _open: OpenSlot,
    opts: Arc<ServerOptions>,
    builder: Arc<hyper::server::conn::http1::Builder>,
    router: Router,
    stop: tokio::sync::watch::Receiver<bool>,
}

impl ConnTask {
    async fn run(mut self, stream: TcpStream) {
        let act = Arc::new(Activity::new());
        let io = hyper_util::rt::TokioIo::new(TrackedIo {
            inner: stream,
            act: act.clone(),
        });
        let svc = Svc {
            router: self.router.clone(),
            act: act.clone(),
            body_timeout: self.opts.body_read_timeout,
        };
        let conn = self.builder.serve_connection(io, svc);
        tokio::pin!(conn);
        if *self.stop.borrow() {
            // Accepted as the server began shutting down: nothing read yet.
            return;
        }
        let mut stopping = false;
        let mut idle_closing = false;
        let timer = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(timer);
        loop {
            let (phase, since) = act.state();
            let deadline = match phase {
                Phase::New | Phase::Head => Some(since + self.opts.header_read_timeout),
                Phase::Idle => Some(since + self.opts.idle_timeout),
                Phase::Busy => None,
            };
            if let Some(d) = deadline {
                timer.as_mut().reset(d);
            }
            // Created before polling: a change from now on is not missed.
            let changed = act.changed.notified();
            tokio::select! {
                _ = changed => continue,
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(?e, "http connection ended with an error");
                    }
                    break;
                }
                _ = timer.as_mut(), if deadline.is_some() => {
                    if act.state() != (phase, since) {
                        continue;
                    }
                    match phase {
                        // A request head that did not arrive in time: close.
                        Phase::New | Phase::Head => break,
                        // Idle: hyper closes at once if it is idle too, else after the
                        // response in progress; a second idle period ends it.
                        Phase::Idle if idle_closing => break,
                        Phase::Idle => {
                            idle_closing = true;
                            conn.as_mut().graceful_shutdown();
                            act.touch_idle();
                        }
                        Phase::Busy => {}
                    }
                }
                _ = self.stop.changed(), if !stopping => {
                    stopping = true;
                    if act.state().0 == Phase::New {
                        break;
                    }
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// One connection counted against `http.max-connections`, released when its
/// task ends, by return or by a panic unwinding out of a handler.
struct OpenSlot(Arc<AtomicUsize>);

impl Drop for OpenSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    /// A new connection, nothing received yet: timed as a request head from
    /// the accept (as Go's server does), closed at once on shutdown.
    New,
    /// Waiting for the rest of a request head whose first byte has arrived.
    Head,
    /// A request is being served.
    Busy,
    /// Between requests on a keep-alive connection.
    Idle,
}

/// What one connection is doing, for its timeouts. Written from the
/// connection's own task (its I/O, its service and the watchdog all run
/// there), so relaxed atomics suffice.
struct Activity {
    base: Instant,
    phase: AtomicU8,
    since_ms: AtomicU64,
    in_flight: AtomicU32,
    /// Woken on every phase change (a new deadline for the watchdog).
    changed: tokio::sync::Notify,
}

impl Activity {
    fn new() -> Self {
        Self {
            base: Instant::now(),
            phase: AtomicU8::new(Phase::New as u8),
            since_ms: AtomicU64::new(0),
            in_flight: AtomicU32::new(0),
            changed: tokio::sync::Notify::new(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.base.elapsed().as_millis() as u64
    }

    fn state(&self) -> (Phase, Instant) {
        let phase = match self.phase.load(Ordering::Relaxed) {
            0 => Phase::New,
            1 => Phase::Head,
            2 => Phase::Busy,
            _ => Phase::Idle,
        };
        let since = self.base + Duration::from_millis(self.since_ms.load(Ordering::Relaxed));
        (phase, since)
    }

    fn set(&self, phase: Phase) {
        self.since_ms.store(self.now_ms(), Ordering::Relaxed);
        self.phase.store(phase as u8, Ordering::Relaxed);
        self.changed.notify_one();
    }

    /// Bytes arrived: on an idle connection they start a request head (on a
    /// new one, its head has been timed since the accept).
    fn on_read(&self) {
        let p = self.phase.load(Ordering::Relaxed);
        if p == Phase::Idle as u8 {
            self.set(Phase::Head);
        } else if p == Phase::New as u8 {
            self.phase.store(Phase::Head as u8, Ordering::Relaxed);
        }
    }

    /// Restarts the idle period (after asking hyper to close).
    fn touch_idle(&self) {
        if self.phase.load(Ordering::Relaxed) == Phase::Idle as u8 {
            self.set(Phase::Idle);
        }
    }

    fn begin_request(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.set(Phase::Busy);
        InFlight(self.clone())
    }
}

/// A request in flight, until its response body is done (or dropped).
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.0.set(Phase::Idle);
        }
    }
}

/// The TCP stream, noting when bytes arrive.
struct TrackedIo {
    inner: TcpStream,
    act: Arc<Activity>,
}

impl AsyncRead for TrackedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.act.on_read();
        }
        r
    }
}

impl AsyncWrite for TrackedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The router as a hyper service: request bodies under the body-read
/// timeout, responses holding the connection busy until sent.
#[derive(Clone)]
struct Svc {
    router: Router,
    act: Arc<Activity>,
    body_timeout: Duration,
}

impl hyper::service::Service<Request<Incoming>> for Svc {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let in_flight = self.act.begin_request();
        let timed_out = Arc::new(AtomicBool::new(false));
        let limit = self.body_timeout;
        let req = req.map(|b| {
            Body::new(TimedBody {
                inner: b,
                deadline: Instant::now() + limit,
                sleep: None,
                limit,
                timed_out: timed_out.clone(),
            })
        });
        let mut router = self.router.clone();
        Box::pin(async move {
            let resp = tower::Service::call(&mut router, req).await?;
            let resp = if timed_out.load(Ordering::Relaxed) {
                body_timeout_response(limit)
            } else {
                resp
            };
            Ok(resp.map(|b| {
                Body::new(InFlightBody {
                    inner: b,
                    _in_flight: in_flight,
                })
            }))
        })
    }
}

fn body_timeout_response(limit: Duration) -> Response {
    let mut r = (
        StatusCode::REQUEST_TIMEOUT,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!(
            "request body not received within {} (http.body-read-timeout)\n",
            fmt_duration(limit)
        ),
    )
        .into_response();
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

/// `2m`, `30s`, `1500ms`: as the config writes durations.
fn fmt_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(60_000) && ms > 0 {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// The request body has not fully arrived within the body-read timeout.
#[derive(Debug)]
struct BodyTimeout(Duration);

impl std::fmt::Display for BodyTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "request body not received within {} (http.body-read-timeout)",
            fmt_duration(self.0)
        )
    }
}

impl std::error::Error for BodyTimeout {}

/// A request body that fails once its deadline passes before its end.
struct TimedBody {
    inner: Incoming,
    deadline: Instant,
    /// Made on the first wait: bodies that arrive with their head need none.
    sleep: Option<Pin<Box<Sleep>>>,
    limit: Duration,
    timed_out: Arc<AtomicBool>,
}

impl HttpBody for TimedBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if this.timed_out.load(Ordering::Relaxed) {
            return Poll::Ready(Some(Err(Box::new(BodyTimeout(this.limit)))));
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(r) => Poll::Ready(r.map(|f| f.map_err(Into::into))),
            Poll::Pending => {
                let deadline = this.deadline;
                let sleep = this
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if sleep.as_mut().poll(cx).is_ready() {
                    this.timed_out.store(true, Ordering::Relaxed);
                    return Poll::Ready(Some(Err(Box::new(BodyTimeout(this.limit)))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that keeps its connection busy (no idle timeout) until it
/// is sent.
struct InFlightBody {
    inner: Body,
    _in_flight: InFlight,
}

impl HttpBody for InFlightBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Serves `router` on an already-bound listener until `shutdown` resolves,
/// with the default [`ServerOptions`].
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(listener, router, ServerOptions::default(), shutdown).await
}

/// Serves `router` on an already-bound listener with the given timeouts and
/// connection cap until `shutdown` resolves; then stops accepting, closes
/// idle connections and returns once the requests in flight are answered.
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    opts: ServerOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    run(listener, router, opts, shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::{get, post};
    use tokio::io::AsyncReadExt;

    async fn start(
        opts: ServerOptions,
    ) -> (
        std::net::SocketAddr,
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<io::Result<()>>,
    ) {
        let router = Router::new()
            .route("/", get(|| async { "ok" }))
            .route("/echo", post(|b: Bytes| async move { b }))
            .route(
                "/panic",
                get(|| async {
                    panic!("handler panic (expected by the test)");
                    #[allow(unreachable_code)]
                    ""
                }),
            )
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    "slow"
                }),
            );
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let h = tokio::spawn(run(l, router, opts, async move {
            let _ = rx.await;
        }));
        (addr, tx, h)
    }

    /// Reads until EOF (or `limit`), returning what arrived.
    async fn read_to_close(s: &mut TcpStream, limit: Duration) -> Option<String> {
        let mut out = Vec::new();
        let r = tokio::time::timeout(limit, async {
            let mut buf = [0u8; 4096];
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => out.extend_from_slice(&buf[..n]),
                }
            }
        })
        .await;
        r.ok().map(|_| String::from_utf8_lossy(&out).into_owned())
    }

    #[tokio::test]
    async fn partial_head_is_closed_after_the_header_timeout() {
        let (addr, _tx, _h) = start(ServerOptions {
            header_read_timeout: Duration::from_millis(200),
            ..Default::default()
        })
        .await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.unwrap();
        let got = read_to_close(&mut s, Duration::from_secs(10)).await;
        assert_eq!(got.as_deref(), Some(""), "closed without an answer");
    }

    #[tokio::test]
    async fn idle_keep_alive_is_closed_after_the_idle_timeout_not_the_header_timeout() {
        let (addr, _tx, _h) = start(ServerOptions {
            header_read_timeout: Duration::from_millis(100),
            idle_timeout: Duration::from_millis(600),
            ..Default::default()
        })
        .await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        let t0 = Instant::now();
        // A request slower than the header timeout is not cut by it.
        s.write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 1024];
        let n = s.read(&mut buf).await.unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).contains("slow"));
        let got = read_to_close(&mut s, Duration::from_secs(10)).await;
        assert_eq!(got.as_deref(), Some(""));
        assert!(
            t0.elapsed() >= Duration::from_millis(800),
            "idle, not header timeout: {:?}",
            t0.elapsed()
        );
        // An idle timeout shorter than the header timeout applies too.
        let (addr, _tx, _h) = start(ServerOptions {
            header_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_millis(200),
            ..Default::default()
        })
        .await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let n = s.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        let got = read_to_close(&mut s, Duration::from_secs(10)).await;
        assert_eq!(got.as_deref(), Some(""));
    }

    #[tokio::test]
    async fn slow_body_gets_408_naming_the_key() {
        let (addr, _tx, _h) = start(ServerOptions {
            body_read_timeout: Duration::from_millis(300),
            ..Default::default()
        })
        .await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nab")
            .await
            .unwrap();
        let got = read_to_close(&mut s, Duration::from_secs(10))
            .await
            .unwrap();
        assert!(got.starts_with("HTTP/1.1 408"), "{got}");
        assert!(got.contains("http.body-read-timeout"), "{got}");
        // A body that arrives in time is served.
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 2\r\n\r\nhi",
        )
        .await
        .unwrap();
        let got = read_to_close(&mut s, Duration::from_secs(10))
            .await
            .unwrap();
        assert!(
            got.starts_with("HTTP/1.1 200") && got.ends_with("hi"),
            "{got}"
        );
    }

    #[tokio::test]
    async fn connections_over_the_cap_get_503_and_shutdown_waits_for_requests() {
        let (addr, tx, h) = start(ServerOptions {
            max_connections: 2,
            ..Default::default()
        })
        .await;
        let mut held = Vec::new();
        for _ in 0..2 {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                .await
                .unwrap();
            let mut buf = [0u8; 1024];
            let n = s.read(&mut buf).await.unwrap();
            assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
            held.push(s);
        }
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let got = read_to_close(&mut s, Duration::from_secs(10))
            .await
            .unwrap();
        assert!(
            got.starts_with("HTTP/1.1 503") && got.contains("http.max-connections"),
            "{got}"
        );
        // A request in flight at shutdown is answered; idle ones are closed.
        let mut busy = held.pop().unwrap();
        busy.write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        tx.send(()).unwrap();
        let got = read_to_close(&mut busy, Duration::from_secs(10))
            .await
            .unwrap();
        assert!(got.contains("slow"), "{got}");
        let got = read_to_close(&mut held[0], Duration::from_secs(10)).await;
        assert_eq!(got.as_deref(), Some(""));
        tokio::time::timeout(Duration::from_secs(10), h)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert!(TcpStream::connect(addr).await.is_err(), "listener closed");
    }

    #[tokio::test]
    async fn a_panicking_handler_releases_its_connection_slot() {
        let (addr, _tx, _h) = start(ServerOptions {
            max_connections: 1,
            ..Default::default()
        })
        .await;
        for _ in 0..3 {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(b"GET /panic HTTP/1.1\r\nHost: x\r\n\r\n")
                .await
                .unwrap();
            read_to_close(&mut s, Duration::from_secs(10))
                .await
                .unwrap();
        }
        // The slot may be released just after the close is seen.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .await
                .unwrap();
            let got = read_to_close(&mut s, Duration::from_secs(10))
                .await
                .unwrap();
            if got.starts_with("HTTP/1.1 200") {
                break;
            }
            assert!(Instant::now() < deadline, "slot never released: {got}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
