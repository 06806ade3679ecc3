//! Steering UDP datagrams to worker sockets by Call-ID (`[sip] udp_steering = "call_id"`):
//! the `SO_REUSEPORT` program of `sip-firewall-ebpf/src/reuseport.rs` picks, in each listen
//! address's group of worker sockets, socket `shard_of(Call-ID, workers)`, so every message
//! of one call (requests, responses, retransmissions, in-dialog requests, from any source)
//! reaches the same worker. A datagram without a Call-ID in its first bytes (keep-alive,
//! STUN) is left to the kernel's hash of its addresses.
//!
//! The program selects only sockets of the group it runs for (the kernel refuses any other),
//! so each group gets its own load of the object: its own program and socket array. The
//! object is a binary of its own in the eBPF crate: loading the XDP object for it would
//! create every XDP map again. Once attached, the group holds the program and the program
//! its maps: nothing here needs to stay loaded, and the program goes with the group's last
//! socket.
//!
//! Steering is an optimisation, never a condition: when the program cannot be loaded or
//! attached (an old kernel, no CAP_BPF), one warning says why and the kernel's hash spreads
//! datagrams as without it. `sipfw_udp_steering{mode}` says which is in effect.

use std::{
    error::Error as _,
    os::fd::{AsFd, AsRawFd},
};

use aya::{
    Ebpf,
    maps::{Array, MapError, ReusePortSockArray},
    programs::{ProgramError, SkReuseport},
};
use serde::Deserialize;
use sip_firewall_common::shard::MAX_SHARDS;
use tracing::{info, warn};

use crate::metrics::Metrics;

/// The object of the steering program (built by `build.rs` from `sip-firewall-ebpf`).
pub static STEER_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sip-firewall-steer"));

/// The program's name in the object.
pub const PROGRAM_NAME: &str = "steer_call_id";

/// `[sip] udp_steering`: how a datagram picks its worker socket among a listen address's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UdpSteering {
    /// By the hash of its Call-ID (the eBPF program), else as `Kernel`.
    #[default]
    CallId,
    /// By the kernel's hash of its addresses (SO_REUSEPORT's own).
    Kernel,
}

impl UdpSteering {
    /// The label of `sipfw_udp_steering{mode}`.
    pub fn as_str(self) -> &'static str {
        match self {
            UdpSteering::CallId => "call_id",
            UdpSteering::Kernel => "kernel",
        }
    }
}

/// Why steering could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SteerError {
    #[error("cannot load its object: {0}")]
    Object(#[from] aya::EbpfError),
    #[error("the object has no {0}")]
    Missing(&'static str),
    #[error("its program: {0}")]
    Program(#[from] ProgramError),
    #[error("its maps: {0}")]
    Map(#[from] MapError),
    #[error("{0} sockets in one group (steering takes 2 to {MAX_SHARDS})")]
    Count(usize),
}

impl SteerError {
    /// What to tell an operator: the errors' chain (each part once: aya's messages repeat
    /// their sources), with the verifier's log (long, and only useful to a developer) left
    /// out, and what a refusal for want of privilege needs.
    fn cause(&self) -> String {
        let mut text = match self {
            SteerError::Program(ProgramError::LoadError { io_error, .. }) => {
                format!("the kernel refused its program: {io_error}")
            }
            _ => self.to_string(),
        };
        let mut denied = false;
        let mut source = self.source();
        while let Some(e) = source {
            let part = e.to_string();
            if !text.contains(&part) {
                text.push_str(": ");
                text.push_str(&part);
            }
            denied |= e
                .downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.raw_os_error() == Some(libc::EPERM));
            source = e.source();
        }
        if denied {
            text.push_str(" (loading it needs root, or CAP_BPF)");
        }
        text
    }
}

/// The steering program loaded (verified) and its maps created, not yet attached.
pub struct Steering {
    ebpf: Ebpf,
}

impl Steering {
    /// Load the object and its program into the kernel.
    pub fn load() -> Result<Steering, SteerError> {
        let mut ebpf = Ebpf::load(STEER_OBJECT)?;
        let program: &mut SkReuseport = ebpf
            .program_mut(PROGRAM_NAME)
            .ok_or(SteerError::Missing(PROGRAM_NAME))?
            .try_into()?;
        program.load()?;
        Ok(Steering { ebpf })
    }

    /// The loaded program (its verifier statistics: `program().info()`).
    pub fn program(&self) -> Result<&SkReuseport, SteerError> {
        Ok(self
            .ebpf
            .program(PROGRAM_NAME)
            .ok_or(SteerError::Missing(PROGRAM_NAME))?
            .try_into()?)
    }

    /// Steer the group of `sockets` (all bound with SO_REUSEPORT to one address; socket i
    /// is worker i): fill the socket array, write the count, attach through the first.
    pub fn attach<S: AsFd + AsRawFd>(mut self, sockets: &[S]) -> Result<(), SteerError> {
        let n = u32::try_from(sockets.len())
            .ok()
            .filter(|n| (2..=MAX_SHARDS).contains(n))
            .ok_or(SteerError::Count(sockets.len()))?;
        let map = |ebpf: &mut Ebpf, name: &'static str| {
            ebpf.take_map(name).ok_or(SteerError::Missing(name))
        };
        let mut array = ReusePortSockArray::try_from(map(&mut self.ebpf, "STEER_SOCKETS")?)?;
        for (i, s) in (0u32..).zip(sockets) {
            array.set(i, s, 0)?;
        }
        let mut config: Array<_, u32> = Array::try_from(map(&mut self.ebpf, "STEER_CONFIG")?)?;
        config.set(0, n, 0)?;
        self.program()?.attach(&sockets[0])?;
        Ok(())
    }
}

/// Steer each of `groups` (a listen address's worker sockets) as `mode` asks, and say which
/// steering is in effect (`sipfw_udp_steering{mode}` in `metrics`). Groups of one socket
/// need none. When one group cannot be steered, none is (the ones already steered are
/// detached), with one warning: every worker then sees datagrams the same way.
pub fn start<S: AsFd + AsRawFd>(
    groups: &[&[S]],
    mode: UdpSteering,
    metrics: &Metrics,
) -> UdpSteering {
    let steered: Vec<&[S]> = groups.iter().copied().filter(|g| g.len() > 1).collect();
    let effect = if mode == UdpSteering::Kernel || steered.is_empty() {
        UdpSteering::Kernel
    } else {
        match steer_all(&steered) {
            Ok(()) => {
                info!(
                    groups = steered.len(),
                    "UDP datagrams steered to workers by Call-ID"
                );
                UdpSteering::CallId
            }
            Err(e) => {
                warn!(
                    "UDP steering by Call-ID is off: {}; calls still work, the kernel's hash of \
                     the addresses picks each datagram's worker socket",
                    e.cause()
                );
                UdpSteering::Kernel
            }
        }
    };
    publish(metrics, effect);
    effect
}

/// Attach to every group, or to none.
fn steer_all<S: AsFd + AsRawFd>(groups: &[&[S]]) -> Result<(), SteerError> {
    for (done, group) in groups.iter().enumerate() {
        if let Err(e) = Steering::load().and_then(|s| s.attach(group)) {
            for g in &groups[..done] {
                let _ = SkReuseport::detach(&g[0]);
            }
            return Err(e);
        }
    }
    Ok(())
}

/// `sipfw_udp_steering{mode}`: 1 for the steering in effect, 0 for the other.
fn publish(metrics: &Metrics, effect: UdpSteering) {
    let gauge = crate::metrics::Registrar::new(metrics.registry(), "UDP steering")
        .int_gauge_family(
            "sipfw_udp_steering",
            "How UDP datagrams pick their worker socket: 1 for the mode in effect \
             (call_id: by Call-ID, the eBPF program; kernel: the kernel's address hash)",
            &["mode"],
        );
    for m in [UdpSteering::CallId, UdpSteering::Kernel] {
        gauge
            .with_label_values(&[m.as_str()])
            .set(i64::from(m == effect));
    }
}

#[cfg(test)]
mod tests {
    use std::{
        collections::HashMap,
        net::{IpAddr, SocketAddr, UdpSocket},
        time::{Duration, Instant},
    };

    use sip_firewall_tests::skip::skip;
    use socket2::{Domain, Protocol, Socket, Type};

    use sip_firewall_common::shard::shard_of;
    use sip_firewall_sip::{Message, headers::HeaderName};

    use super::*;

    const WORKERS: usize = 4;

    /// The socket of `shards` the program should pick for `msg`, by the message layer's
    /// reading of its Call-ID (what user space hashes); `None` without one.
    fn shard_of_message(msg: &Message<'_>, shards: u32) -> Option<u32> {
        Some(shard_of(msg.get(HeaderName::CallId)?.as_bytes(), shards))
    }
    const CALLS: usize = 40;
    const SOURCES: usize = 16;

    /// `WORKERS` sockets sharing one port of `ip` through SO_REUSEPORT.
    fn group(ip: IpAddr) -> std::io::Result<Vec<UdpSocket>> {
        let mut at = SocketAddr::new(ip, 0);
        (0..WORKERS)
            .map(|_| {
                let s = Socket::new(Domain::for_address(at), Type::DGRAM, Some(Protocol::UDP))?;
                s.set_reuse_port(true)?;
                s.bind(&at.into())?;
                let u = UdpSocket::from(s);
                u.set_nonblocking(true)?;
                at = u.local_addr()?;
                Ok(u)
            })
            .collect()
    }

    /// The Call-ID of call `c`: some long (past the hashed bytes), some with spaces or tabs
    /// after them.
    fn call_id(c: usize) -> String {
        match c % 4 {
            0 => format!("a84b4c76e66710{c}@pc33.example.com"),
            1 => format!("{c}-{}", "x".repeat(90)),
            2 => format!("{c}.f81d4fae-7dec-11d0-a765-00a0c91e6bf6"),
            _ => format!("{c}@{}", "y".repeat(62)),
        }
    }

    /// The three messages of call `c`: the INVITE (`Call-ID:`, after a long Via set for
    /// some calls), its 100 (`call-id:`), the ACK (compact `i:`, white space after the
    /// value). Each says its call in `X-Call`.
    fn messages(c: usize) -> [String; 3] {
        let id = call_id(c);
        let vias = if c.is_multiple_of(5) {
            (0..12)
                .map(|i| format!("Via: SIP/2.0/UDP 192.0.2.{i}:5060;branch=z9hG4bK-{c}-{i}\r\n"))
                .collect::<String>()
        } else {
            String::new()
        };
        let head = |start: &str, method: &str, call_id: &str| {
            format!(
                "{start}\r\n{vias}Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK{c}\r\n\
                 From: <sip:alice@example.com>;tag=1\r\nTo: <sip:bob@example.com>\r\n\
                 X-Call: {c}\r\n{call_id}\r\nCSeq: 1 {method}\r\nContent-Length: 0\r\n\r\n"
            )
        };
        [
            head(
                "INVITE sip:bob@example.com SIP/2.0",
                "INVITE",
                &format!("Call-ID: {id}"),
            ),
            head("SIP/2.0 100 Trying", "INVITE", &format!("call-id:{id}")),
            head(
                "ACK sip:bob@example.com SIP/2.0",
                "ACK",
                &format!("i : \t{id} \t "),
            ),
        ]
    }

    /// What each of `sockets` received within `within`, until `want` datagrams in all.
    fn receive(sockets: &[UdpSocket], want: usize, within: Duration) -> Vec<Vec<Vec<u8>>> {
        let mut got = vec![Vec::new(); sockets.len()];
        let t0 = Instant::now();
        let mut buf = [0u8; 4096];
        while got.iter().map(Vec::len).sum::<usize>() < want && t0.elapsed() < within {
            let mut idle = true;
            for (i, s) in sockets.iter().enumerate() {
                if let Ok((n, _)) = s.recv_from(&mut buf) {
                    got[i].push(buf[..n].to_vec());
                    idle = false;
                }
            }
            if idle {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        got
    }

    /// The call a datagram says it belongs to.
    fn call_of(d: &[u8]) -> usize {
        let text = std::str::from_utf8(d).unwrap();
        let (_, rest) = text.split_once("X-Call: ").unwrap();
        rest.split("\r\n").next().unwrap().parse().unwrap()
    }

    /// Steer a group of `WORKERS` sockets on `ip` (loopback) and send it `CALLS` calls from
    /// `SOURCES` sockets, then datagrams the program leaves to the kernel's hash.
    fn steers_calls_on(test: &str, ip: IpAddr) {
        let Ok(sockets) = group(ip) else {
            skip(
                test,
                &format!("cannot bind {ip} (no loopback for its family)"),
            );
            return;
        };
        let to = sockets[0].local_addr().unwrap();
        if let Err(e) = Steering::load().and_then(|s| s.attach(&sockets)) {
            skip(test, &format!("cannot steer: {}", e.cause()));
            return;
        }
        let sources: Vec<UdpSocket> = (0..SOURCES)
            .map(|_| UdpSocket::bind((ip, 0)).unwrap())
            .collect();
        let mut sent = 0;
        for c in 0..CALLS {
            for (k, m) in messages(c).iter().enumerate() {
                sources[(c * 3 + k) % SOURCES]
                    .send_to(m.as_bytes(), to)
                    .unwrap();
                sent += 1;
            }
        }
        let got = receive(&sockets, sent, Duration::from_secs(5));
        let mut socket_of: HashMap<usize, usize> = HashMap::new();
        let mut count = 0;
        for (i, datagrams) in got.iter().enumerate() {
            for d in datagrams {
                let c = call_of(d);
                count += 1;
                assert_eq!(
                    *socket_of.entry(c).or_insert(i),
                    i,
                    "call {c} on two sockets"
                );
                let msg = sip_firewall_sip::parse::parse(
                    d,
                    &sip_firewall_sip::Limits::default(),
                    sip_firewall_sip::Transport::Datagram,
                )
                .expect("parses");
                assert_eq!(shard_of_message(&msg, WORKERS as u32), Some(i as u32));
            }
        }
        assert_eq!(count, sent, "datagrams lost");
        for (c, i) in &socket_of {
            assert_eq!(
                *i as u32,
                shard_of(call_id(*c).as_bytes(), WORKERS as u32),
                "call {c}"
            );
        }
        let used: std::collections::HashSet<_> = socket_of.values().collect();
        assert!(used.len() > 1, "{CALLS} calls on one socket");

        // Left to the kernel's hash, and still delivered: a keep-alive, a STUN request, a
        // folded Call-ID, one only in the body, one past the scanned bytes.
        let stun = [
            0u8, 1, 0, 0, 0x21, 0x12, 0xa4, 0x42, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,
        ];
        let head = "OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK1\r\n";
        let others = [
            b"\r\n\r\n".to_vec(),
            stun.to_vec(),
            format!("{head}Call-ID:\r\n folded@b\r\n\r\n").into_bytes(),
            format!("{head}Content-Length: 17\r\n\r\nCall-ID: body@b\r\n").into_bytes(),
            format!(
                "{head}X-Pad: {}\r\nCall-ID: late@b\r\n\r\n",
                "p".repeat(2100)
            )
            .into_bytes(),
        ];
        for (n, d) in others.iter().enumerate() {
            sources[n].send_to(d, to).unwrap();
        }
        let got = receive(&sockets, others.len(), Duration::from_secs(5));
        assert_eq!(got.iter().map(Vec::len).sum::<usize>(), others.len());
    }

    #[test]
    fn every_message_of_a_call_reaches_its_shards_socket() {
        steers_calls_on(
            "every_message_of_a_call_reaches_its_shards_socket",
            IpAddr::from([127, 0, 0, 1]),
        );
    }

    #[test]
    fn every_message_of_a_call_reaches_its_shards_socket_over_ipv6() {
        steers_calls_on(
            "every_message_of_a_call_reaches_its_shards_socket_over_ipv6",
            IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
        );
    }
}
