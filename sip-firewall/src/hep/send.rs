//! The sender task: takes captured messages off the queue, frames them (HEPv3) and sends
//! them to the collector. A collector that is unreachable costs one attempt per
//! [`RETRY`]; what comes meanwhile is dropped and counted, never queued without bound.

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

use tokio::{
    io::AsyncWriteExt as _,
    net::{TcpStream, UdpSocket},
    sync::mpsc,
};

use super::{
    Counters,
    config::{Collector, Scheme},
    encode::{Agent, Packet, encode},
};
use crate::logging::{RateLimit, Verdict, decide_shared};

/// After a failure, the next attempt to reach the collector waits this long.
pub const RETRY: Duration = Duration::from_secs(1);
/// How long one write to a TCP collector may take (behind it, the queue fills and drops).
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);
/// At most one warning about the collector per this long.
static WARNING: Mutex<RateLimit<()>> = Mutex::new(RateLimit::new(Duration::from_secs(60), 1));

enum Link {
    Udp(UdpSocket),
    Tcp(TcpStream),
}

impl Link {
    async fn open(c: &Collector) -> std::io::Result<Link> {
        let addr = tokio::net::lookup_host(c.address.as_str())
            .await?
            .next()
            .ok_or_else(|| std::io::Error::other("the name has no address"))?;
        Ok(match c.scheme {
            Scheme::Udp => {
                let any: std::net::SocketAddr = if addr.is_ipv4() {
                    ([0, 0, 0, 0], 0).into()
                } else {
                    (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
                };
                let s = UdpSocket::bind(any).await?;
                // Connected: an ICMP refusal surfaces on the next send.
                s.connect(addr).await?;
                Link::Udp(s)
            }
            Scheme::Tcp => Link::Tcp(
                tokio::time::timeout(WRITE_TIMEOUT, TcpStream::connect(addr))
                    .await
                    .map_err(|_| std::io::Error::other("connect timed out"))??,
            ),
        })
    }

    async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Link::Udp(s) => s.send(bytes).await.map(|_| ()),
            Link::Tcp(s) => tokio::time::timeout(WRITE_TIMEOUT, s.write_all(bytes))
                .await
                .map_err(|_| std::io::Error::other("write timed out"))?,
        }
    }
}

fn warn(collector: &Collector, what: &str, e: &std::io::Error) {
    if let Verdict::Log { suppressed } = decide_shared(&WARNING, (), Instant::now()) {
        tracing::warn!(
            collector = %collector.address,
            suppressed,
            "HEP collector {what}: {e}; messages are dropped (sipfw_hep_dropped_total) until it is back"
        );
    }
}

/// Send until the queue closes (the export was stopped or changed).
pub(super) async fn run(
    collector: Collector,
    agent: Agent,
    mut rx: mpsc::Receiver<Packet>,
    counters: Counters,
) {
    let mut link: Option<Link> = None;
    let mut next_try = Instant::now();
    while let Some(p) = rx.recv().await {
        let Some(bytes) = encode(&p, &agent) else {
            counters.dropped("too_large");
            continue;
        };
        if link.is_none() && Instant::now() >= next_try {
            match Link::open(&collector).await {
                Ok(l) => link = Some(l),
                Err(e) => {
                    warn(&collector, "unreachable", &e);
                    next_try = Instant::now() + RETRY;
                }
            }
        }
        let Some(l) = link.as_mut() else {
            counters.dropped("collector_down");
            continue;
        };
        match l.send(&bytes).await {
            Ok(()) => counters.sent.inc(),
            Err(e) => {
                counters.dropped("send_failed");
                warn(&collector, "refused a message", &e);
                link = None;
                next_try = Instant::now() + RETRY;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt as _;

    fn packet(n: u8) -> Packet {
        Packet {
            time: std::time::UNIX_EPOCH,
            src: "192.0.2.1:5060".parse().unwrap(),
            dst: "192.0.2.2:5060".parse().unwrap(),
            stream: false,
            payload: vec![b'0' + n; 10],
            verdict: None,
        }
    }

    #[tokio::test]
    async fn udp_and_tcp_collectors_get_the_framed_packets() {
        let agent = Agent {
            node_id: 9,
            password: None,
        };
        // UDP: one datagram per message.
        let collector = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let c = Collector {
            scheme: Scheme::Udp,
            address: collector.local_addr().unwrap().to_string(),
        };
        let (tx, rx) = mpsc::channel(8);
        let counters = Counters::new(&prometheus::Registry::new());
        let task = tokio::spawn(run(c, agent.clone(), rx, counters.clone()));
        tx.send(packet(1)).await.unwrap();
        let mut buf = vec![0; 2048];
        let n = collector.recv(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], &encode(&packet(1), &agent).unwrap()[..]);
        drop(tx);
        task.await.unwrap();
        assert_eq!(counters.sent.get(), 1);

        // TCP: the frames back to back on one connection.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let c = Collector {
            scheme: Scheme::Tcp,
            address: listener.local_addr().unwrap().to_string(),
        };
        let (tx, rx) = mpsc::channel(8);
        let task = tokio::spawn(run(c, agent.clone(), rx, counters.clone()));
        tx.send(packet(2)).await.unwrap();
        tx.send(packet(3)).await.unwrap();
        drop(tx);
        let (mut conn, _) = listener.accept().await.unwrap();
        task.await.unwrap();
        let mut got = Vec::new();
        conn.read_to_end(&mut got).await.unwrap();
        let want = [
            encode(&packet(2), &agent).unwrap(),
            encode(&packet(3), &agent).unwrap(),
        ]
        .concat();
        assert_eq!(got, want);
        assert_eq!(counters.sent.get(), 3);
    }

    #[tokio::test]
    async fn a_collector_that_is_not_there_costs_drops_counted() {
        // A port nobody listens on: the connection is refused, the messages counted.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let c = Collector {
            scheme: Scheme::Tcp,
            address: port.to_string(),
        };
        let (tx, rx) = mpsc::channel(8);
        let counters = Counters::new(&prometheus::Registry::new());
        let task = tokio::spawn(run(c, Agent::default(), rx, counters.clone()));
        for n in 0..5 {
            tx.send(packet(n)).await.unwrap();
        }
        drop(tx);
        task.await.unwrap();
        assert_eq!(counters.sent.get(), 0);
        assert_eq!(
            counters
                .dropped
                .with_label_values(&["collector_down"])
                .get(),
            5
        );
    }
}
