//! The UDP steering program's own cost per datagram (`SO_REUSEPORT`, by Call-ID), from the
//! kernel's run-time statistics (`BPF_ENABLE_STATS`, held only while this runs, read with
//! `bpftool prog show`): a group of four sockets on loopback is steered and sent each kind
//! of datagram. `cargo run --release -p sip-firewall-tests --example steer_cost` (as root).

use std::{
    net::{SocketAddr, UdpSocket},
    process::Command,
};

use aya::sys::{Stats, enable_stats};
use sip_firewall::server::steer::Steering;
use socket2::{Domain, Protocol, Socket, Type};

const RUNS: u64 = 20_000;

/// The `n`th datagram of a case.
type Datagram<'a> = Box<dyn Fn(u64) -> Vec<u8> + 'a>;

fn main() -> anyhow::Result<()> {
    let mut at: SocketAddr = ([127, 0, 0, 1], 0).into();
    let mut group = Vec::new();
    for _ in 0..4 {
        let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
        s.set_reuse_port(true)?;
        s.bind(&at.into())?;
        let u = UdpSocket::from(s);
        u.set_nonblocking(true)?;
        at = u.local_addr()?;
        group.push(u);
    }
    let steering = Steering::load()?;
    let id = steering.program()?.info()?.id();
    steering.attach(&group)?;
    let _stats = enable_stats(Stats::RunTime)?;
    let sources: Vec<UdpSocket> = (0..16)
        .map(|_| UdpSocket::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()?;
    let vias: String = (0..12)
        .map(|i| format!("Via: SIP/2.0/UDP 192.0.2.{i}:5060;branch=z9hG4bK-{i}\r\n"))
        .collect();
    let invite = |extra: &str, n: u64| {
        format!(
            "INVITE sip:alice@example.com SIP/2.0\r\n{extra}Via: SIP/2.0/UDP 198.51.100.2:5062;branch=z9hG4bK-{n}\r\nMax-Forwards: 70\r\nFrom: <sip:bob@example.com>;tag={n}\r\nTo: <sip:alice@example.com>\r\nCall-ID: {n}-a84b4c76e66710@pc33.example.com\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
        )
        .into_bytes()
    };
    let cases: Vec<(&str, Datagram)> = vec![
        ("CRLF keep-alive", Box::new(|_| b"\r\n\r\n".to_vec())),
        ("INVITE, Call-ID at byte ~190", Box::new(|n| invite("", n))),
        (
            "INVITE after 12 Via, Call-ID at byte ~850",
            Box::new(|n| invite(&vias, n)),
        ),
        (
            "1400 bytes of headers, no Call-ID",
            Box::new(|_| {
                let pad = "X-Pad: 0123456789012345678901234567890123456789\r\n".repeat(28);
                format!("OPTIONS sip:a@b SIP/2.0\r\n{pad}\r\n").into_bytes()
            }),
        ),
    ];
    let mut buf = [0u8; 4096];
    for (name, datagram) in cases {
        let (t0, n0) = stats(id)?;
        for n in 0..RUNS {
            sources[(n % 16) as usize].send_to(&datagram(n), at)?;
            if n % 64 == 0 {
                for s in &group {
                    while s.recv_from(&mut buf).is_ok() {}
                }
            }
        }
        let (t1, n1) = stats(id)?;
        let runs = n1 - n0;
        println!(
            "{name}: {:.0} ns per datagram ({runs} runs)",
            (t1 - t0) as f64 / runs.max(1) as f64
        );
    }
    Ok(())
}

/// The program's run time (ns) and run count so far.
fn stats(id: u32) -> anyhow::Result<(u64, u64)> {
    let out = Command::new("bpftool")
        .args(["prog", "show", "id", &id.to_string(), "--json"])
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "bpftool: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let field = |k: &str| v.get(k).and_then(serde_json::Value::as_u64).unwrap_or(0);
    Ok((field("run_time_ns"), field("run_cnt")))
}
