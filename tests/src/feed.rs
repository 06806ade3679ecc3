//! A threat feed served over HTTPS in a namespace of a test: a certificate of a CA made on
//! the spot (`ua::tls`), one `GET` answered per connection with the body set now (or a 500,
//! a feed that fails), in a thread until dropped.

use std::{
    net::{SocketAddr, TcpListener},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::{netns::in_ns, ua::tls};

/// See the module doc.
pub struct FeedServer {
    pub addr: SocketAddr,
    /// The CA the server's certificate chains to (PEM): the daemon's `ca`.
    pub ca_pem: String,
    /// The body served; `None`: every request gets 500.
    body: Arc<Mutex<Option<String>>>,
    /// Requests answered so far.
    served: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FeedServer {
    /// Serve on `addr` (an address and port in namespace `ns`) with a certificate for its
    /// address.
    pub fn start(ns: &str, addr: SocketAddr, body: &str) -> FeedServer {
        let (ca_pem, issuer) = tls::ca("feed CA");
        let cert = tls::leaf(&addr.ip().to_string(), &issuer);
        let listener = in_ns(ns, move || {
            let l = TcpListener::bind(addr)?;
            l.set_nonblocking(true)?;
            Ok(l)
        })
        .expect("feed listener in the namespace");
        let body = Arc::new(Mutex::new(Some(body.to_string())));
        let served = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (b, n, st) = (body.clone(), served.clone(), stop.clone());
        let acceptor = tls::acceptor(&cert);
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                let t0 = Instant::now();
                // Bounded: no test runs this long.
                while !st.load(Ordering::Relaxed) && t0.elapsed() < Duration::from_secs(300) {
                    let accepted =
                        tokio::time::timeout(Duration::from_millis(100), listener.accept()).await;
                    let Ok(Ok((tcp, _))) = accepted else {
                        continue;
                    };
                    let Ok(Ok(mut s)) =
                        tokio::time::timeout(Duration::from_secs(5), acceptor.accept(tcp)).await
                    else {
                        continue;
                    };
                    let mut buf = vec![0u8; 4096];
                    let _ = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await;
                    let current = b.lock().map(|b| b.clone()).unwrap_or_default();
                    let answer = match current {
                        Some(body) => format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
                             Connection: close\r\n\r\n{body}",
                            body.len()
                        ),
                        None => "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\
                                 Connection: close\r\n\r\n"
                            .to_string(),
                    };
                    let _ = s.write_all(answer.as_bytes()).await;
                    let _ = s.shutdown().await;
                    n.fetch_add(1, Ordering::Relaxed);
                }
            });
        });
        FeedServer {
            addr,
            ca_pem,
            body,
            served,
            stop,
            thread: Some(thread),
        }
    }

    /// Serve `body` from now on (`None`: fail with 500).
    pub fn set(&self, body: Option<&str>) {
        if let Ok(mut b) = self.body.lock() {
            *b = body.map(str::to_string);
        }
    }

    /// Requests answered so far.
    pub fn served(&self) -> usize {
        self.served.load(Ordering::Relaxed)
    }
}

impl Drop for FeedServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
