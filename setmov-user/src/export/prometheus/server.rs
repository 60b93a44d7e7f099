//! The HTTP side: [`MetricsServer`] feeds the exporter the ticks the sampler hands to its
//! subscribers and serves `/metrics` and `/` (axum, driven by hyper per connection so that
//! the limits of `connections.rs` hold: a cap on open connections, a header-read timeout and a
//! response budget).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::header::{CONTENT_TYPE, RETRY_AFTER};
use axum::http::{Request, Response, StatusCode};
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{Semaphore, mpsc, oneshot, watch};
use tokio::task::JoinSet;

use super::PrometheusExporter;
use super::connections::{
    Closed, ConnectionId, ConnectionTable, Limits, RateLimit, WARNING_PERIOD,
};
use crate::sampler::WriterCounts;
use crate::store::TickRecord;

/// Where `--prometheus` without an address serves: loopback only.
pub const DEFAULT_ADDRESS: &str = "127.0.0.1:9739";

/// The media type of the text exposition format 0.0.4.
pub const CONTENT_TYPE_0_0_4: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The kernel's queue of connections not yet accepted (net.core.somaxconn caps it, 4096 by
/// default). A burst of connections waits there, taking no descriptor, while the accept loop
/// catches up; past it the kernel drops their SYNs and clients retry a second later, a new
/// scraper too.
const LISTEN_BACKLOG: u32 = 4096;

/// How long accepting pauses after the process or the system ran out of file descriptors
/// (or memory for a socket): retrying at once would spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The cause is the error's source (shown after it by `{:#}`).
    #[error("cannot serve Prometheus metrics on {addr}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

type Shared = Arc<Mutex<PrometheusExporter>>;
type Table = Arc<Mutex<ConnectionTable>>;

/// What the handlers share.
#[derive(Clone)]
struct AppState {
    exporter: Shared,
    /// One render at a time: scrapes that come while one runs wait for it (within the budget)
    /// rather than each taking a blocking thread.
    render_slot: Arc<Semaphore>,
    response_budget: Duration,
    over_budget_warnings: Arc<Mutex<RateLimit>>,
}

/// The HTTP side: `/metrics` (the exposition) and `/` (a page that links to it).
pub struct MetricsServer {
    listener: tokio::net::TcpListener,
    addr: SocketAddr,
    writer_counts: Option<Arc<WriterCounts>>,
    limits: Limits,
}

impl MetricsServer {
    /// Binds `addr` now, so that a port in use is an error at start. A non-loopback address
    /// is logged with a warning: the metrics are served to anyone who reaches it.
    pub async fn bind(addr: SocketAddr) -> Result<MetricsServer, ExportError> {
        let listener = listen(addr).map_err(|source| ExportError::Bind { addr, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| ExportError::Bind { addr, source })?;
        if addr.ip().is_loopback() {
            tracing::info!("Prometheus metrics on http://{addr}/metrics");
        } else {
            tracing::warn!(
                "Prometheus metrics on http://{addr}/metrics, not a loopback address: anyone who \
                 can reach it reads them, without authentication"
            );
        }
        let limits =
            match nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE) {
                Ok((soft, _hard)) => Limits::DEFAULT.within_open_files(soft),
                Err(e) => {
                    tracing::debug!("cannot read RLIMIT_NOFILE ({e}): the default limits");
                    Limits::DEFAULT
                }
            };
        tracing::debug!(
            "Prometheus endpoint limits: {} connections, {:?} to send a request head, {:?} \
             to render /metrics",
            limits.max_connections,
            limits.header_read_timeout,
            limits.response_budget
        );
        Ok(MetricsServer {
            listener,
            addr,
            writer_counts: None,
            limits,
        })
    }

    #[cfg(test)]
    fn with_limits(self, limits: Limits) -> MetricsServer {
        MetricsServer { limits, ..self }
    }

    /// Also reports what the database writer did with the ticks (stored, quarantined, dropped).
    pub fn count_writes(&mut self, counts: Arc<WriterCounts>) {
        self.writer_counts = Some(counts);
    }

    /// The address bound (with the port chosen when 0 was asked).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Feeds every tick of `ticks` to the exporter and serves it until `ticks` closes (the
    /// sampler stopped) and the open requests are answered.
    pub async fn serve(mut self, ticks: mpsc::Receiver<Arc<TickRecord>>) {
        let exporter = match self.writer_counts.take() {
            Some(counts) => PrometheusExporter::counting_writes(counts),
            None => PrometheusExporter::new(),
        };
        self.serve_exporter(Arc::new(Mutex::new(exporter)), ticks)
            .await;
    }

    /// [`MetricsServer::serve`] with the exporter given (a test holds its lock to make a
    /// render slow).
    async fn serve_exporter(self, exporter: Shared, mut ticks: mpsc::Receiver<Arc<TickRecord>>) {
        let app = Router::new()
            .route("/", get(index))
            .route("/metrics", get(metrics))
            .with_state(AppState {
                exporter: Arc::clone(&exporter),
                render_slot: Arc::new(Semaphore::new(1)),
                response_budget: self.limits.response_budget,
                over_budget_warnings: Arc::new(Mutex::new(RateLimit::new(WARNING_PERIOD))),
            });
        let mut feed = tokio::spawn(async move {
            while let Some(tick) = ticks.recv().await {
                lock(&exporter).observe(&tick);
            }
        });
        let limits = self.limits;
        let table: Table = Arc::new(Mutex::new(ConnectionTable::new(limits.max_connections)));
        let (shutdown, shutting_down) = watch::channel(());
        let mut connections = JoinSet::new();
        let mut accept_errors = RateLimit::new(WARNING_PERIOD);
        // What was closed after a warning is told by a later one, even if nothing more closes.
        let mut held_back_warnings = tokio::time::interval(WARNING_PERIOD);
        loop {
            tokio::select! {
                _ = &mut feed => break,
                _ = held_back_warnings.tick() => warn_of_closed(&mut lock(&table), limits),
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, _peer)) => {
                        let admitted = {
                            let mut table = lock(&table);
                            let admitted = table.admit(Instant::now());
                            warn_of_closed(&mut table, limits);
                            admitted
                        };
                        // Refused: dropping the stream closes it.
                        if let Some((id, close)) = admitted {
                            connections.spawn(serve_connection(
                                stream,
                                Connection { id, table: Arc::clone(&table), close },
                                shutting_down.clone(),
                                app.clone(),
                                limits,
                            ));
                        }
                    }
                    Err(e) if out_of_resources(&e) => {
                        if accept_errors.ready(Instant::now()) {
                            tracing::warn!(
                                "the Prometheus endpoint on {} cannot accept a connection: {e} \
                                 ({} open); retrying every {ACCEPT_BACKOFF:?}",
                                self.addr,
                                lock(&table).open()
                            );
                        }
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                    }
                    // A connection that failed before it was accepted (reset, aborted).
                    Err(e) => tracing::debug!("Prometheus endpoint: accept: {e}"),
                },
            }
        }
        drop(self.listener);
        // Idle connections close now, busy ones once answered.
        drop(shutdown);
        while connections.join_next().await.is_some() {}
    }
}

/// A listener on `addr` with a backlog of [`LISTEN_BACKLOG`], SO_REUSEADDR set as
/// `TcpListener::bind` does (a restart does not wait for the old connections' TIME_WAIT).
fn listen(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Whether accepting failed for want of descriptors or memory, not because of the connection.
fn out_of_resources(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// Logs what the limits closed since the last warning, at most once a minute.
fn warn_of_closed(table: &mut ConnectionTable, limits: Limits) {
    if let Some(closed) = table.warning_due(Instant::now()) {
        tracing::warn!(
            "the Prometheus endpoint closed {} ({} open, cap {}; told at most once a minute)",
            describe(closed, limits),
            table.open(),
            limits.max_connections
        );
    }
}

fn describe(closed: Closed, limits: Limits) -> String {
    format!(
        "{} idle connection(s) to make room at the cap, {} new one(s) with every connection \
         busy, {} without a whole request head within {:?}",
        closed.evicted, closed.refused, closed.timed_out, limits.header_read_timeout
    )
}

/// A connection's place in the table: its task removes it when the connection ends.
struct Connection {
    id: ConnectionId,
    table: Table,
    /// Resolves when the table evicts the connection.
    close: oneshot::Receiver<()>,
}

/// Serves one connection over HTTP/1 until the client closes it, the header-read timeout
/// closes it, the table evicts it, or the server shuts down (after the request in progress).
async fn serve_connection(
    stream: TcpStream,
    connection: Connection,
    mut shutting_down: watch::Receiver<()>,
    app: Router,
    limits: Limits,
) {
    let Connection { id, table, close } = connection;
    let service = Tracked {
        id,
        table: Arc::clone(&table),
        app: TowerToHyperService::new(app),
    };
    let served = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .serve_connection(TokioIo::new(stream), service);
    let mut served = std::pin::pin!(served);
    let ended = tokio::select! {
        ended = served.as_mut() => ended,
        // Evicted: dropping the connection closes the socket.
        _ = close => return,
        _ = shutting_down.changed() => {
            served.as_mut().graceful_shutdown();
            served.await
        }
    };
    let mut table = lock(&table);
    match ended {
        Err(e) if e.is_timeout() => {
            table.timed_out(id);
            warn_of_closed(&mut table, limits);
        }
        Err(e) => {
            tracing::debug!("Prometheus endpoint: connection {id}: {e}");
            table.remove(id);
        }
        Ok(()) => table.remove(id),
    }
}

/// The router, marking its connection busy in the table while a request is in progress.
struct Tracked {
    id: ConnectionId,
    table: Table,
    app: TowerToHyperService<Router>,
}

type Answer = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

impl hyper::service::Service<Request<Incoming>> for Tracked {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Answer;

    fn call(&self, request: Request<Incoming>) -> Answer {
        lock(&self.table).busy(self.id);
        let answer = self.app.call(request);
        let (id, table) = (self.id, Arc::clone(&self.table));
        Box::pin(async move {
            let response = answer.await;
            lock(&table).idle(id, Instant::now());
            response
        })
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The exposition, rendered on a blocking thread so that a render past the budget is answered
/// 503 (and the connection freed) while it finishes.
async fn metrics(State(state): State<AppState>) -> Response<Body> {
    let exporter = Arc::clone(&state.exporter);
    let rendered = tokio::time::timeout(state.response_budget, async {
        // The semaphore is never closed: an error would only mean rendering without the slot.
        let slot = Arc::clone(&state.render_slot).acquire_owned().await;
        tokio::task::spawn_blocking(move || {
            let _slot = slot;
            lock(&exporter).render()
        })
        .await
    })
    .await;
    match rendered {
        Ok(Ok(text)) => ([(CONTENT_TYPE, CONTENT_TYPE_0_0_4)], text).into_response(),
        Ok(Err(e)) => {
            tracing::error!("rendering /metrics failed: {e}");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
        Err(_) => {
            if lock(&state.over_budget_warnings).ready(Instant::now()) {
                tracing::warn!(
                    "rendering /metrics took longer than {:?}: answered 503",
                    state.response_budget
                );
            }
            (
                StatusCode::SERVICE_UNAVAILABLE,
                [(RETRY_AFTER, "1")],
                format!(
                    "the exposition took longer than {:?} to render\n",
                    state.response_budget
                ),
            )
                .into_response()
        }
    }
}

async fn index() -> Html<&'static str> {
    Html(
        "<!DOCTYPE html>\n<html><head><title>SETMOV</title></head><body>\n\
         <h1>SETMOV</h1>\n<p><a href=\"/metrics\">Metrics</a> (Prometheus text format)</p>\n\
         </body></html>\n",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::prometheus::fixtures::full_tick;

    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A server with `limits` on loopback, serving until the returned sender is dropped.
    async fn start(
        limits: Limits,
        exporter: Shared,
    ) -> (SocketAddr, mpsc::Sender<Arc<TickRecord>>) {
        let server = MetricsServer::bind("127.0.0.1:0".parse().expect("address"))
            .await
            .expect("bind")
            .with_limits(limits);
        let addr = server.local_addr();
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(server.serve_exporter(exporter, rx));
        (addr, tx)
    }

    /// `GET /metrics` on a new connection: the whole response.
    async fn scrape(addr: SocketAddr) -> String {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .expect("write");
        let mut response = String::new();
        stream.read_to_string(&mut response).await.expect("read");
        response
    }

    /// Whether the server closed `stream` (EOF or reset) within `within`.
    async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
        let mut buf = [0; 256];
        matches!(
            tokio::time::timeout(within, stream.read(&mut buf)).await,
            Ok(Ok(0) | Err(_))
        )
    }

    #[tokio::test]
    async fn the_server_serves_the_exposition_and_a_busy_port_is_an_error() {
        let server = MetricsServer::bind("127.0.0.1:0".parse().expect("address"))
            .await
            .expect("bind");
        let addr = server.local_addr();
        let busy = MetricsServer::bind(addr).await;
        assert!(
            matches!(busy, Err(ExportError::Bind { .. })),
            "a second bind must fail"
        );
        let (tx, rx) = mpsc::channel(4);
        let served = tokio::spawn(server.serve(rx));
        tx.send(Arc::new(full_tick(1))).await.expect("send");
        let get = |path: &'static str| async move {
            let mut stream = TcpStream::connect(addr).await.expect("connect");
            let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            stream.write_all(request.as_bytes()).await.expect("write");
            let mut response = String::new();
            stream.read_to_string(&mut response).await.expect("read");
            response
        };
        let mut metrics = get("/metrics").await;
        // The tick may not be observed yet on the first request.
        for _ in 0..50 {
            if metrics.contains("setmov_vm_up") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
            metrics = get("/metrics").await;
        }
        assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
        assert!(
            metrics.contains("content-type: text/plain; version=0.0.4; charset=utf-8"),
            "{metrics}"
        );
        assert!(metrics.contains("setmov_vm_up{host=\"hv-1\",vm=\"desk-1\",uuid=\"u-1\"} 1"));
        let index = get("/").await;
        assert!(index.contains("href=\"/metrics\""), "{index}");
        assert!(get("/nothing").await.starts_with("HTTP/1.1 404"));
        // The sampler stops: the server stops too.
        drop(tx);
        tokio::time::timeout(Duration::from_secs(5), served)
            .await
            .expect("stops")
            .expect("no panic");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn at_the_cap_a_new_client_is_served_and_the_longest_idle_connections_closed() {
        let limits = Limits {
            max_connections: 3,
            header_read_timeout: Duration::from_secs(30),
            ..Limits::DEFAULT
        };
        let (addr, _ticks) = start(limits, Arc::default()).await;
        let mut idle = Vec::new();
        for _ in 0..6 {
            idle.push(TcpStream::connect(addr).await.expect("connect"));
            // In the order they were accepted.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let response = tokio::time::timeout(Duration::from_secs(2), scrape(addr))
            .await
            .expect("answered at once");
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        // The new client took the place of the oldest: the first four are closed, the two
        // newest stay open.
        for (i, stream) in idle.iter_mut().enumerate() {
            let closed = closed_within(stream, Duration::from_millis(300)).await;
            assert_eq!(closed, i < 4, "connection {i}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_request_head_not_sent_in_time_closes_the_connection_as_does_keep_alive_idleness() {
        let limits = Limits {
            header_read_timeout: Duration::from_millis(300),
            ..Limits::DEFAULT
        };
        let (addr, _ticks) = start(limits, Arc::default()).await;
        let mut slow = TcpStream::connect(addr).await.expect("connect");
        slow.write_all(b"GET /metrics HTTP/1.1\r\nHo")
            .await
            .expect("write");
        assert!(closed_within(&mut slow, Duration::from_secs(2)).await);
        // After a response, a keep-alive connection left idle is closed by the same timer.
        let mut kept = TcpStream::connect(addr).await.expect("connect");
        kept.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("write");
        let mut buf = [0; 4096];
        let n = kept.read(&mut buf).await.expect("response");
        assert!(buf.get(..n).is_some_and(|b| b.starts_with(b"HTTP/1.1 200")));
        assert!(closed_within(&mut kept, Duration::from_secs(2)).await);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_render_past_the_budget_is_answered_503() {
        let limits = Limits {
            response_budget: Duration::from_millis(200),
            ..Limits::DEFAULT
        };
        let exporter: Shared = Arc::default();
        let (addr, _ticks) = start(limits, Arc::clone(&exporter)).await;
        // The exporter locked for a second: the render waits for it.
        let (locked_tx, locked) = std::sync::mpsc::channel();
        let holder = std::thread::spawn(move || {
            let _held = lock(&exporter);
            let _ = locked_tx.send(());
            std::thread::sleep(Duration::from_secs(1));
        });
        locked.recv().expect("locked");
        let response = tokio::time::timeout(Duration::from_secs(2), scrape(addr))
            .await
            .expect("answered within the budget, not after the render");
        assert!(response.starts_with("HTTP/1.1 503"), "{response}");
        holder.join().expect("holder");
        assert!(scrape(addr).await.starts_with("HTTP/1.1 200"));
    }
}
