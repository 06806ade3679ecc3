//! Held resources over TCP: one source opening 200 connections and keeping them open with
//! CRLF keep-alives would take every slot under one global cap. A source holds at most
//! `[sip] max_tcp_per_source` (default 32) at once; the rest are closed at accept and
//! counted, and another source still gets in.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    time::{Duration, Instant},
};

use sip_firewall_tests::{domain::config, edge::edge, metrics::Metrics, netns::in_ns};

/// Whether the daemon answers a ping on `s` with a pong (and so keeps it).
fn pong(s: &mut TcpStream) -> bool {
    if s.write_all(b"\r\n\r\n").is_err() {
        return false;
    }
    let mut b = [0u8; 2];
    matches!(s.read(&mut b), Ok(n) if n > 0)
}

#[test]
fn one_source_cannot_hold_every_tcp_slot() {
    let test = "one_source_cannot_hold_every_tcp_slot";
    let Some(mut e) = edge(test, "tcpslot", &config(""), false) else {
        return;
    };
    let (pair, to) = (&e.pair, e.sip());

    let mut conns = in_ns(&pair.ns_a, move || {
        let mut v = Vec::new();
        for _ in 0..200 {
            let s = TcpStream::connect_timeout(&to, Duration::from_secs(3))?;
            s.set_read_timeout(Some(Duration::from_secs(2)))?;
            v.push(s);
        }
        Ok(v)
    })
    .unwrap();
    let held = conns.iter_mut().map(pong).filter(|&ok| ok).count();
    // Pinged again: the ones kept stay kept (keep-alives pass the gate).
    let still = conns.iter_mut().map(pong).filter(|&ok| ok).count();
    println!("one source: 200 connections opened, {held} kept after a ping, {still} after two");
    assert_eq!(held, 32, "connections one source holds");
    assert_eq!(still, 32);

    // Another host still gets a connection and an answer.
    let other_host = pair.add_a4(6).unwrap();
    let mut other = in_ns(&pair.ns_a, move || {
        Ok(socket2_connect_from(other_host, to)?)
    })
    .unwrap();
    let local = other.local_addr().unwrap();
    let msg = format!(
        "OPTIONS sip:example.com SIP/2.0\r\nVia: SIP/2.0/TCP {local};branch=z9hG4bK-other\r\n\
         Max-Forwards: 70\r\nFrom: <sip:mon@example.net>;tag=o\r\nTo: <sip:example.com>\r\n\
         Call-ID: other@x\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    );
    other.write_all(msg.as_bytes()).unwrap();
    other
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let mut buf = [0u8; 2048];
    let n = other.read(&mut buf).unwrap();
    assert!(
        buf[..n].starts_with(b"SIP/2.0 200"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );

    let t0 = Instant::now();
    let m = loop {
        let m = Metrics::scrape(pair);
        if m.get("sipfw_limits_refused_total{what=\"tcp_per_source\"}") >= 168.0
            || t0.elapsed() > Duration::from_secs(5)
        {
            break m;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        m.get("sipfw_limits_refused_total{what=\"tcp_per_source\"}"),
        168.0
    );
    assert_eq!(m.get("sipfw_sip_tcp_connections"), 33.0);
    drop(conns);
    drop(other);
    e.stop_clean();
}

/// A TCP connection to `to` from address `from` (any port).
fn socket2_connect_from(from: std::net::Ipv4Addr, to: SocketAddr) -> std::io::Result<TcpStream> {
    // std has no bind-before-connect: libc, as the tests' helpers do elsewhere.
    use std::os::fd::FromRawFd as _;
    let SocketAddr::V4(to4) = to else {
        return Err(std::io::Error::other("IPv4 only"));
    };
    // SAFETY: plain socket calls on a descriptor we own; the sockaddr structs are initialised.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let stream = TcpStream::from_raw_fd(fd);
        on_address(fd, &sockaddr(from, 0), libc::bind)?;
        on_address(fd, &sockaddr(*to4.ip(), to4.port()), libc::connect)?;
        Ok(stream)
    }
}

/// The IPv4 socket address `ip`:`port` as the socket calls take it.
fn sockaddr(ip: std::net::Ipv4Addr, port: u16) -> libc::sockaddr_in {
    // SAFETY: sockaddr_in is plain data, all zeroes a valid value.
    let mut a: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    a.sin_family = libc::AF_INET as libc::sa_family_t;
    a.sin_port = port.to_be();
    a.sin_addr.s_addr = u32::from_ne_bytes(ip.octets());
    a
}

/// `call` (bind or connect) of the socket `fd` with the address `addr`: the OS's error when
/// it fails.
///
/// # Safety
/// `fd` is an open socket.
unsafe fn on_address(
    fd: libc::c_int,
    addr: &libc::sockaddr_in,
    call: unsafe extern "C" fn(libc::c_int, *const libc::sockaddr, libc::socklen_t) -> libc::c_int,
) -> std::io::Result<()> {
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: `addr` points to an initialised sockaddr_in of `len` bytes.
    if unsafe { call(fd, (addr as *const libc::sockaddr_in).cast(), len) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
