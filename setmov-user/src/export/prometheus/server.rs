//! The HTTP side: [`MetricsServer`] feeds the exporter the ticks the sampler hands to its
//! subscribers and serves `/metrics` and `/` (axum).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use axum::Router;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use tokio::sync::mpsc;

use super::PrometheusExporter;
use crate::store::TickRecord;

/// Where `--prometheus` without an address serves: loopback only.
pub const DEFAULT_ADDRESS: &str = "127.0.0.1:9739";

/// The media type of the text exposition format 0.0.4.
pub const CONTENT_TYPE_0_0_4: &str = "text/plain; version=0.0.4; charset=utf-8";

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

/// The HTTP side: `/metrics` (the exposition) and `/` (a page that links to it).
pub struct MetricsServer {
    listener: tokio::net::TcpListener,
    addr: SocketAddr,
}

impl MetricsServer {
    /// Binds `addr` now, so that a port in use is an error at start. A non-loopback address
    /// is logged with a warning: the metrics are served to anyone who reaches it.
    pub async fn bind(addr: SocketAddr) -> Result<MetricsServer, ExportError> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| ExportError::Bind { addr, source })?;
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
        Ok(MetricsServer { listener, addr })
    }

    /// The address bound (with the port chosen when 0 was asked).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Feeds every tick of `ticks` to the exporter and serves it until `ticks` closes (the
    /// sampler stopped) and the open requests are answered.
    pub async fn serve(self, mut ticks: mpsc::UnboundedReceiver<Arc<TickRecord>>) {
        let exporter: Shared = Arc::default();
        let app = Router::new()
            .route("/", get(index))
            .route("/metrics", get(metrics))
            .with_state(Arc::clone(&exporter));
        let feed = async move {
            while let Some(tick) = ticks.recv().await {
                exporter
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .observe(&tick);
            }
        };
        let addr = self.addr;
        if let Err(e) = axum::serve(self.listener, app)
            .with_graceful_shutdown(feed)
            .await
        {
            tracing::error!("the Prometheus endpoint on {addr} stopped: {e}");
        }
    }
}

async fn metrics(State(exporter): State<Shared>) -> impl IntoResponse {
    let text = exporter
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .render();
    ([(CONTENT_TYPE, CONTENT_TYPE_0_0_4)], text)
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

    #[tokio::test]
    async fn the_server_serves_the_exposition_and_a_busy_port_is_an_error() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let server = MetricsServer::bind("127.0.0.1:0".parse().expect("address"))
            .await
            .expect("bind");
        let addr = server.local_addr();
        let busy = MetricsServer::bind(addr).await;
        assert!(
            matches!(busy, Err(ExportError::Bind { .. })),
            "a second bind must fail"
        );
        let (tx, rx) = mpsc::unbounded_channel();
        let served = tokio::spawn(server.serve(rx));
        tx.send(Arc::new(full_tick(1))).expect("send");
        let get = |path: &'static str| async move {
            let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
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
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
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
        tokio::time::timeout(std::time::Duration::from_secs(5), served)
            .await
            .expect("stops")
            .expect("no panic");
    }
}
