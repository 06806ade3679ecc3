//! A minimal HTTP/1.1 server for `GET /metrics` (Prometheus text format), and `GET /feed`
//! (the edge's learned bans as a threat feed of the `cidr` format, for edges without a
//! shared Redis or a customer's PBX; off unless `[metrics] feed = true`); 404 elsewhere.
//! One request per connection, bounded request size and time: it is an internal endpoint,
//! but a stuck scraper must not hold a task forever.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context as _;
use serde::Deserialize;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
    sync::watch,
};
use tracing::{debug, info};

use super::Metrics;

/// `[metrics]`: the Prometheus endpoint.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Address of `GET /metrics`; absent disables it.
    pub listen: Option<SocketAddr>,
    /// Serve the learned bans as a feed (`GET /feed`) on the same address.
    pub feed: bool,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            listen: Some(SocketAddr::from(([127, 0, 0, 1], 9464))),
            feed: false,
        }
    }
}

/// What `GET /feed` serves (the enforcer's learned bans); `None`: 404.
pub type FeedSource = Option<Arc<dyn Fn() -> String + Send + Sync>>;

const MAX_REQUEST: usize = 8192;
const TIMEOUT: Duration = Duration::from_secs(5);

/// Serve `GET /metrics` on `addr` until `shutdown` flips to true.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    feed: FeedSource,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen for metrics on {addr}"))?;
    serve_on(listener, metrics, feed, shutdown).await
}

/// Serve on a listener bound beforehand (so that the endpoint answers before the daemon
/// says it is up).
pub async fn serve_on(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    feed: FeedSource,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, "metrics endpoint listening");
    }
    loop {
        tokio::select! {
            _ = shutdown.wait_for(|s| *s) => return Ok(()),
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        debug!("metrics accept: {e}");
                        continue;
                    }
                };
                let (m, f) = (metrics.clone(), feed.clone());
                tokio::spawn(async move {
                    if let Err(e) = tokio::time::timeout(TIMEOUT, handle(stream, &m, f)).await {
                        debug!(%peer, "metrics request timed out: {e}");
                    }
                });
            }
        }
    }
}

/// The metrics endpoint of a running daemon, which a reload may move to another address
/// (`[metrics] listen`): the new address is bound before the old one closes, so a reload
/// that cannot bind (address in use, not permitted) changes nothing and says why.
pub struct Endpoint {
    metrics: Arc<Metrics>,
    feed: FeedSource,
    runtime: tokio::runtime::Handle,
    shutdown: watch::Receiver<bool>,
    /// The address served now and the switch that stops its task.
    current: std::sync::Mutex<Option<(SocketAddr, watch::Sender<bool>)>>,
}

impl Endpoint {
    /// Serve on `addr` (none: no endpoint) until the daemon's `shutdown`; bound before this
    /// returns, so whoever waits for the daemon can scrape it at once.
    pub fn start(
        addr: Option<SocketAddr>,
        metrics: Arc<Metrics>,
        feed: FeedSource,
        shutdown: watch::Receiver<bool>,
    ) -> anyhow::Result<Endpoint> {
        let endpoint = Endpoint {
            metrics,
            feed,
            runtime: tokio::runtime::Handle::current(),
            shutdown,
            current: std::sync::Mutex::new(None),
        };
        endpoint.rebind(addr)?;
        Ok(endpoint)
    }

    /// Serve on `addr` from now on (none: stop serving); the old listener closes once the
    /// new one is bound. Open connections of the old one finish their request.
    pub fn rebind(&self, addr: Option<SocketAddr>) -> anyhow::Result<()> {
        // Poisoned only by a panic in this function, which leaves the value whole.
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if current.as_ref().map(|(a, _)| *a) == addr {
            return Ok(());
        }
        let next = match addr {
            Some(addr) => {
                let std = std::net::TcpListener::bind(addr)
                    .with_context(|| format!("cannot listen for metrics on {addr}"))?;
                std.set_nonblocking(true)
                    .with_context(|| format!("metrics listener on {addr}"))?;
                let listener = {
                    let _entered = self.runtime.enter();
                    TcpListener::from_std(std)
                        .with_context(|| format!("metrics listener on {addr}"))?
                };
                let (stop, mut stopped) = watch::channel(false);
                let (m, f, rx) = (
                    self.metrics.clone(),
                    self.feed.clone(),
                    self.shutdown.clone(),
                );
                self.runtime.spawn(async move {
                    tokio::select! {
                        r = serve_on(listener, m, f, rx) => r,
                        _ = stopped.wait_for(|s| *s) => Ok(()),
                    }
                });
                Some((addr, stop))
            }
            None => None,
        };
        if let Some((old, stop)) = std::mem::replace(&mut *current, next) {
            info!(%old, "metrics endpoint closed");
            let _ = stop.send(true);
        }
        Ok(())
    }
}

async fn handle(mut stream: TcpStream, metrics: &Metrics, feed: FeedSource) {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < MAX_REQUEST {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let line = buf.split(|&b| b == b'\n').next().unwrap_or(&[]);
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let (status, ctype, body) = match (method, path) {
        ("GET", "/metrics") => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            metrics.render(),
        ),
        ("GET", "/feed") if feed.is_some() => (
            "200 OK",
            "text/plain; charset=utf-8",
            feed.map(|f| f()).unwrap_or_default(),
        ),
        ("GET", _) => ("404 Not Found", "text/plain", "not found\n".to_string()),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "method not allowed\n".to_string(),
        ),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.write_all(body.as_bytes()).await;
    let _ = stream.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn get(addr: SocketAddr, path: &str) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    /// `GET /feed` is served only when turned on.
    #[tokio::test]
    async fn the_feed_is_off_by_default() {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = probe.local_addr().unwrap();
        drop(probe);
        let (tx, rx) = watch::channel(false);
        let task = tokio::spawn(serve(addr, Arc::new(Metrics::new()), None, rx));
        let mut text = String::new();
        for _ in 0..50 {
            if TcpStream::connect(addr).await.is_ok() {
                text = get(addr, "/feed").await;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(text.starts_with("HTTP/1.1 404 "), "{text}");
        assert!(!MetricsConfig::default().feed);
        tx.send(true).unwrap();
        task.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn metrics_and_404() {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = probe.local_addr().unwrap();
        drop(probe);
        let m = Arc::new(Metrics::new());
        m.accepted(true);
        let (tx, rx) = watch::channel(false);
        let feed: FeedSource = Some(Arc::new(|| "203.0.113.7/32 # scanner\n".to_string()));
        let task = tokio::spawn(serve(addr, m, feed, rx));
        let mut text = String::new();
        for _ in 0..50 {
            if let Ok(mut s) = TcpStream::connect(addr).await {
                drop(s.shutdown().await);
                text = get(addr, "/metrics").await;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(
            text.contains("sipfw_sip_accepted_total{kind=\"request\"} 1"),
            "{text}"
        );
        assert!(get(addr, "/other").await.starts_with("HTTP/1.1 404 "));
        let feed = get(addr, "/feed").await;
        assert!(
            feed.starts_with("HTTP/1.1 200 OK\r\n")
                && feed.ends_with("\r\n\r\n203.0.113.7/32 # scanner\n"),
            "{feed}"
        );
        tx.send(true).unwrap();
        task.await.unwrap().unwrap();
    }
}
