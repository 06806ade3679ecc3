//! SIP over TLS: a test CA and certificates made here (rcgen); a phone registers over TLS
//! with digest authentication, is called from a UDP phone through the edge and calls it
//! (full dialogs, `sip_firewall_tests::ua::calls`: TLS Via, Record-Route doubled across the
//! transport change, in-dialog requests over each side's transport); a client whose
//! certificate chains to another CA is refused; a certificate reload keeps calls; the edge
//! reaches `sips:` and `;transport=tls` targets over verified TLS, with SNI for names.

use std::{
    net::{SocketAddr, TcpStream, UdpSocket},
    process::Command,
    time::{Duration, Instant},
};

use rcgen::{Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject as _};
use sip_firewall::auth::digest::Algorithm;
use sip_firewall_tests::{
    daemon::TempDir,
    ua::{
        calls::{self, Client, Edge as Hop},
        msg::peer_invite,
        response_to,
        tls::{acceptor, ca, connector, leaf},
        wire::{Stream, read_message},
    },
};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

mod common;

use common::free_port;

/// A running edge with a TLS listener: its addresses, the test CA and its issuer, and the
/// directory of its certificate and key.
struct Edge {
    daemon: common::Daemon,
    sip: SocketAddr,
    tls: SocketAddr,
    ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
    certs: TempDir,
}

impl Edge {
    /// Run the CLI with `args` against this daemon's admin socket.
    fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_sip-firewall"))
            .args(args)
            .arg("--socket")
            .arg(self.daemon.dir.path.join("admin.sock"))
            .output()
            .expect("sip-firewall CLI")
    }
}

/// Start the daemon with a TLS listener, a certificate for 127.0.0.1 from a CA made now,
/// `ca` set to that CA, and `extra` appended to the config.
async fn start(extra: &str) -> Edge {
    let certs = TempDir::new("tls-certs");
    let (ca_pem, issuer) = ca("sip-firewall test CA");
    let (cert, key) = leaf("127.0.0.1", &issuer);
    for (name, text) in [("ca.pem", &ca_pem), ("cert.pem", &cert), ("key.pem", &key)] {
        std::fs::write(certs.path.join(name), text).expect("write PEM");
    }
    let tls: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let config = format!(
        "[tls]\nlisten = [\"{tls}\"]\ncertificate = \"{}\"\nprivate_key = \"{}\"\nca = \"{}\"\n{extra}",
        certs.path.join("cert.pem").display(),
        certs.path.join("key.pem").display(),
        certs.path.join("ca.pem").display(),
    );
    let daemon = common::start("tls", &config, Some("warn"));
    let t0 = Instant::now();
    while TcpStream::connect(tls).is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "the TLS listener did not come up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Edge {
        sip: daemon.sip,
        daemon,
        tls,
        ca_pem,
        issuer,
        certs,
    }
}

/// A phone on TLS registers with digest, is called from a UDP phone through the
/// edge and calls it, each a full dialog (INVITE/100/180/200/ACK/BYE, `ua::calls`): our
/// TLS Via names the TLS listener, Record-Route is doubled across TLS<->UDP, in-dialog
/// requests go over TLS to the client and over UDP to the phone, in both directions. First,
/// a client certificate from another CA is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registers_over_tls_is_called_from_udp_and_calls_it() {
    let edge = start(&calls::alice_config()).await;
    let (sip, tls, ca_pem) = (edge.sip, edge.tls, edge.ca_pem.clone());
    let name = ServerName::IpAddress(std::net::IpAddr::from([127, 0, 0, 1]).into());

    // A client certificate from another CA: refused (the handshake fails, or, in TLS 1.3,
    // the server's alert closes the connection before any SIP is answered).
    let (_bad_ca, bad_issuer) = ca("somebody else's CA");
    let bad = leaf("127.0.0.1", &bad_issuer);
    let tcp = tokio::net::TcpStream::connect(tls).await.expect("connect");
    if let Ok(mut s) = connector(&ca_pem, Some(&bad))
        .connect(name.clone(), tcp)
        .await
    {
        let ping = "OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:1;branch=z9hG4bKbad\r\nMax-Forwards: 70\r\nFrom: <sip:x@example.org>;tag=1\r\nTo: <sip:127.0.0.1>\r\nCall-ID: bad@x\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";
        let _ = s.write_all(ping.as_bytes()).await;
        let _ = s.flush().await;
        assert_eq!(
            read_message(&mut s).await,
            None,
            "a client with an untrusted certificate was served"
        );
    }

    // Alice on TLS (no client certificate: allowed unless required).
    // Over TLS she answers the SHA-256 challenge (the WebSocket tests answer MD5).
    let mut client = tls_client(tls, &ca_pem)
        .await
        .with_algorithm(Algorithm::Sha256);
    let hop = Hop {
        sip,
        listener: tls,
        via: "TLS",
        rr_transport: "tls",
    };
    calls::register_called_and_calling(&mut client, &hop, "tls").await;
}

/// The answers on `caller` up to the first final `code` (every one before it provisional):
/// that final.
fn answer_over_udp(caller: &UdpSocket, code: &str) -> String {
    let mut buf = [0u8; 4096];
    loop {
        let (n, _) = caller.recv_from(&mut buf).expect("an answer over UDP");
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        if text.starts_with(&format!("SIP/2.0 {code}")) {
            return text;
        }
        assert!(text.starts_with("SIP/2.0 1"), "{text}");
    }
}

/// A next hop named `name` on `tcp`: the edge completes the handshake with it (SNI `name`,
/// its certificate verified for that name) and sends a request: the stream and the request.
async fn hop_reads(
    hop: &tokio_rustls::TlsAcceptor,
    tcp: tokio::net::TcpStream,
    name: &str,
) -> (
    tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
    String,
) {
    let mut s = hop
        .accept(tcp)
        .await
        .expect("the edge completes the handshake with a certificate for the domain");
    assert_eq!(s.get_ref().1.server_name(), Some(name), "SNI");
    let req = read_message(&mut s).await.expect("the INVITE over TLS");
    (s, req)
}

/// The connection the edge opens to the next hop listening on `hop`, within `secs`.
async fn connection(hop: &tokio::net::TcpListener, secs: u64) -> tokio::net::TcpStream {
    let accepted = tokio::time::timeout(Duration::from_secs(secs), hop.accept()).await;
    accepted.expect("the edge connects").expect("accept").0
}

/// A TLS connection to the edge at `tls` (trusting `ca_pem`) as a SIP client whose Via
/// sent-by and `;transport=tls` Contact are its own address.
async fn tls_client(
    tls: SocketAddr,
    ca_pem: &str,
) -> Client<Stream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>> {
    let name = ServerName::IpAddress(std::net::IpAddr::from([127, 0, 0, 1]).into());
    let tcp = tokio::net::TcpStream::connect(tls).await.expect("connect");
    let me = tcp.local_addr().expect("local");
    let s = connector(ca_pem, None)
        .connect(name, tcp)
        .await
        .expect("TLS handshake with the edge");
    Client::new(
        Stream(s),
        "TLS",
        me.to_string(),
        format!("sip:alice@{me};transport=tls"),
    )
}

/// A sips: target, and a sip target with `;transport=tls`, is reached over a TLS
/// connection the edge opens, verifying the next hop's
/// certificate against `[tls] ca`; a next hop whose certificate is from another CA gets
/// nothing (the handshake fails, counted), and the caller hears no 2xx from it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sips_targets_are_reached_over_verified_tls() {
    let edge = start(
        "[sip]\ndomains = [\"example.com\"]\n[policy]\nallow = [\"127.0.0.0/8\"]\n\
         [proxy]\ninternal_next_hops = [\"127.0.0.0/8\"]\n",
    )
    .await;
    // Two next hops: one with a certificate from our CA, one from a stranger's.
    let good_cert = leaf("127.0.0.1", &edge.issuer);
    let (_, stranger) = ca("a stranger's CA");
    let bad_cert = leaf("127.0.0.1", &stranger);
    let caller = UdpSocket::bind("127.0.0.1:0").expect("caller");
    caller
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let me = caller.local_addr().expect("addr");
    let invite = |uri: &str, n: u32| peer_invite(uri, me, &format!("sips{n}"));
    // Both ways of asking for TLS: a sips URI (RFC 3261 26.2.2) and a sip URI with
    // `;transport=tls` (a phone's Contact; RFC 5630 3.1.3 deprecates it only for sips).
    let forms: [fn(SocketAddr) -> String; 2] = [
        |a| format!("sips:dave@{a}"),
        |a| format!("sip:dave@{a};transport=tls"),
    ];
    for (round, uri_of) in forms.into_iter().enumerate() {
        let n = 2 * round as u32 + 1;
        // The stranger's next hop: the edge's handshake fails (it verifies), no INVITE is read.
        let bad = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let bad_addr = bad.local_addr().expect("addr");
        caller
            .send_to(invite(&uri_of(bad_addr), n).as_bytes(), edge.sip)
            .expect("send");
        let tcp = connection(&bad, 10).await;
        let refused = acceptor(&bad_cert).accept(tcp).await;
        if let Ok(mut s) = refused {
            assert_eq!(
                read_message(&mut s).await,
                None,
                "the edge sent a request to a next hop it could not verify"
            );
        }

        // Our CA's next hop: the INVITE arrives over TLS with a TLS Via and Record-Route.
        let good = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let good_addr = good.local_addr().expect("addr");
        caller
            .send_to(invite(&uri_of(good_addr), n + 1).as_bytes(), edge.sip)
            .expect("send");
        let tcp = connection(&good, 10).await;
        let mut s = acceptor(&good_cert)
            .accept(tcp)
            .await
            .expect("the edge completes the handshake");
        let req = read_message(&mut s).await.expect("the INVITE over TLS");
        assert!(
            req.starts_with(&format!("INVITE {} SIP/2.0", uri_of(good_addr))),
            "{req}"
        );
        assert!(
            req.contains(&format!("Via: SIP/2.0/TLS {};branch=z9hG4bKsfw", edge.tls)),
            "{req}"
        );
        assert!(
            req.contains(&format!(
                "Record-Route: <sip:{};transport=tls;lr;sfw=",
                edge.tls
            )),
            "{req}"
        );
        s.write_all(response_to(&req, "486 Busy Here", "alice1", "").as_bytes())
            .await
            .expect("send");
        // No 2xx: everything before the 486 is provisional.
        let text = answer_over_udp(&caller, "486");
        assert!(
            text.contains(&format!("branch=z9hG4bKsips{}", n + 1)),
            "{text}"
        );
    }
}

/// A `sips:` target named by domain is located by RFC 3263 (`_sips._tcp` SRV
/// from a real DNS server) and reached over TLS with SNI set to that domain, the next hop's
/// certificate verified against the domain (RFC 5922 7.1), not its address: a next hop
/// whose certificate names another host gets nothing. A `sip:...;transport=tls` URI naming
/// a domain is resolved and reached the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_to_a_domain_sends_sni_and_verifies_that_name() {
    let good = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let wrong = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let contact = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let (gp, wp, cp) = (
        good.local_addr().expect("addr").port(),
        wrong.local_addr().expect("addr").port(),
        contact.local_addr().expect("addr").port(),
    );
    let dns_port = free_port();
    let Some(_dns) = common::dnsmasq(
        "tls_to_a_domain_sends_sni_and_verifies_that_name",
        dns_port,
        &[
            &format!("--srv-host=_sips._tcp.secure.test,tls1.secure.test,{gp},10,0"),
            &format!("--srv-host=_sips._tcp.wrong.test,tls2.wrong.test,{wp},10,0"),
            "--host-record=tls1.secure.test,127.0.0.1",
            "--host-record=tls2.wrong.test,127.0.0.1",
            // RFC 3263 4.1: transport=tls is looked up as _sips._tcp too.
            &format!("--srv-host=_sips._tcp.contact.test,tls3.contact.test,{cp},10,0"),
            "--host-record=tls3.contact.test,127.0.0.1",
        ],
    ) else {
        return;
    };
    let edge = start(&format!(
        "[policy]\nallow = [\"127.0.0.0/8\"]\n\
         [proxy]\ninternal_next_hops = [\"127.0.0.0/8\"]\n\
         [dns]\nnameservers = [\"127.0.0.1:{dns_port}\"]\n"
    ))
    .await;
    // Both next hops hold a certificate of our CA for secure.test (no IP address in it).
    let secure = acceptor(&leaf("secure.test", &edge.issuer));
    let caller = UdpSocket::bind("127.0.0.1:0").expect("caller");
    caller
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let me = caller.local_addr().expect("addr");
    let invite =
        |domain: &str, n: u32| peer_invite(&format!("sips:dave@{domain}"), me, &format!("sni{n}"));

    // secure.test: SNI secure.test, the certificate verified by that name, the INVITE over.
    caller
        .send_to(invite("secure.test", 1).as_bytes(), edge.sip)
        .expect("send");
    let (mut s, req) = hop_reads(&secure, connection(&good, 15).await, "secure.test").await;
    assert!(
        req.starts_with("INVITE sips:dave@secure.test SIP/2.0"),
        "{req}"
    );
    s.write_all(response_to(&req, "486 Busy Here", "alice1", "").as_bytes())
        .await
        .expect("send");
    answer_over_udp(&caller, "486");

    // wrong.test: the next hop's certificate names secure.test, not wrong.test: the edge
    // refuses it (SNI wrong.test), and no INVITE is read.
    caller
        .send_to(invite("wrong.test", 2).as_bytes(), edge.sip)
        .expect("send");
    let tcp = connection(&wrong, 15).await;
    if let Ok(mut s) = secure.accept(tcp).await {
        assert_eq!(s.get_ref().1.server_name(), Some("wrong.test"), "SNI");
        assert_eq!(
            read_message(&mut s).await,
            None,
            "the edge sent a request to a next hop whose certificate names another host"
        );
    }

    // A sip URI with `;transport=tls` (a phone's Contact) naming a domain: TLS too, SNI
    // contact.test, the next hop's certificate verified for that name.
    let contact_hop = acceptor(&leaf("contact.test", &edge.issuer));
    let uri = "sip:dave@contact.test;transport=tls";
    let invite = peer_invite(uri, me, "sni3");
    caller.send_to(invite.as_bytes(), edge.sip).expect("send");
    let (_, req) = hop_reads(&contact_hop, connection(&contact, 15).await, "contact.test").await;
    assert!(req.starts_with(&format!("INVITE {uri} SIP/2.0")), "{req}");
    assert!(
        req.contains(&format!("Via: SIP/2.0/TLS {};branch=z9hG4bKsfw", edge.tls)),
        "{req}"
    );
}

/// The certificate is replaced without a restart and without dropping calls.
/// Alice registers over TLS and a UDP phone calls her; the certificate and key files are
/// rewritten and `sip-firewall reload` runs: a new TLS client sees the new certificate,
/// the phone's BYE for the call made before the reload reaches alice on her connection made
/// before it, and that connection carries a new call (alice calls the phone).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_puts_a_new_certificate_in_force_and_keeps_calls() {
    let edge = start(&calls::alice_config()).await;
    let name = ServerName::IpAddress(std::net::IpAddr::from([127, 0, 0, 1]).into());
    let peer_cert = |s: &tokio_rustls::client::TlsStream<tokio::net::TcpStream>| {
        s.get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.as_ref().to_vec())
            .expect("a server certificate")
    };
    let hop = Hop {
        sip: edge.sip,
        listener: edge.tls,
        via: "TLS",
        rr_transport: "tls",
    };
    let mut alice = tls_client(edge.tls, &edge.ca_pem).await;
    let first = peer_cert(&alice.wire.0);
    alice.register("reg-reload").await;
    let phone = calls::Phone::new(edge.sip).await;
    let call = calls::phone_calls_client(&phone, &hop, &mut alice, "before-reload").await;

    // A new certificate (and key) for the same name, from the same CA, in place.
    let (cert, key) = leaf("127.0.0.1", &edge.issuer);
    let new_der = CertificateDer::pem_slice_iter(cert.as_bytes())
        .next()
        .expect("one")
        .expect("PEM")
        .as_ref()
        .to_vec();
    assert_ne!(first, new_der);
    std::fs::write(edge.certs.path.join("key.pem"), &key).expect("key");
    std::fs::write(edge.certs.path.join("cert.pem"), &cert).expect("cert");
    let out = edge.cli(&["reload"]);
    assert!(out.status.success(), "{out:?}");

    // New clients get the new certificate (polled: the daemon may answer the reload
    // before a handshake already under way ends).
    let t0 = Instant::now();
    loop {
        let tcp = tokio::net::TcpStream::connect(edge.tls)
            .await
            .expect("connect");
        let s = connector(&edge.ca_pem, None)
            .connect(name.clone(), tcp)
            .await
            .expect("handshake");
        if peer_cert(&s) == new_der {
            break;
        }
        assert_eq!(
            peer_cert(&s),
            first,
            "neither the old nor the new certificate"
        );
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "the new certificate was not put in force"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The call made before the reload ends normally, over the connection made before it.
    call.bye_from_phone(&phone, &hop, &mut alice).await;
    // And that connection still carries calls.
    let call = calls::client_calls_phone(&phone, &hop, &mut alice, "after-reload").await;
    call.bye_from_client(&phone, &hop, &mut alice).await;
    assert_eq!(
        peer_cert(&alice.wire.0),
        first,
        "the same connection throughout"
    );
}

/// A client whose certificate chains to `[tls] ca` and names a host of `[tls]
/// trusted_peers` is a trusted peer on that connection, as an allow-listed address is: it
/// may relay to a foreign target. The same request over a connection whose certificate
/// (same CA) names another host is refused (403, no open relay).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_naming_a_trusted_peer_may_relay() {
    let edge = start(
        "trusted_peers = [\"trunk.example.com\"]\n\
         [proxy]\ninternal_next_hops = [\"127.0.0.0/8\"]\n",
    )
    .await;
    let callee = UdpSocket::bind("127.0.0.1:0").expect("callee");
    callee
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let target = callee.local_addr().expect("addr");
    let name = ServerName::IpAddress(std::net::IpAddr::from([127, 0, 0, 1]).into());
    let invite = |n: u32| {
        format!(
            "INVITE sip:dave@{target} SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:1;branch=z9hG4bKtp{n}\r\nMax-Forwards: 70\r\nFrom: <sip:pbx@carrier.example>;tag={n}\r\nTo: <sip:dave@{target}>\r\nCall-ID: trusted-{n}\r\nCSeq: 1 INVITE\r\nContact: <sip:pbx@127.0.0.1:1;transport=tls>\r\nContent-Length: 0\r\n\r\n"
        )
    };

    // Another host's certificate from the same CA: an outsider, 403.
    let other = leaf("other.example.com", &edge.issuer);
    let tcp = tokio::net::TcpStream::connect(edge.tls)
        .await
        .expect("connect");
    let mut s = connector(&edge.ca_pem, Some(&other))
        .connect(name.clone(), tcp)
        .await
        .expect("handshake");
    s.write_all(invite(1).as_bytes()).await.expect("send");
    let answer = read_message(&mut s).await.expect("an answer");
    assert!(answer.starts_with("SIP/2.0 403"), "{answer}");

    // The trunk's certificate: relayed to the target.
    let trunk = leaf("trunk.example.com", &edge.issuer);
    let tcp = tokio::net::TcpStream::connect(edge.tls)
        .await
        .expect("connect");
    let mut s = connector(&edge.ca_pem, Some(&trunk))
        .connect(name, tcp)
        .await
        .expect("handshake");
    s.write_all(invite(2).as_bytes()).await.expect("send");
    let mut buf = [0u8; 4096];
    let (n, _) = callee
        .recv_from(&mut buf)
        .expect("the trusted peer's INVITE is relayed");
    let req = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(
        req.starts_with(&format!("INVITE sip:dave@{target}")),
        "{req}"
    );
    assert!(req.contains("Call-ID: trusted-2"), "{req}");
}

/// The gate at accept. A banned source (`sip-firewall ban add`) is refused on TCP,
/// TLS and WebSocket before any handshake: the connection is closed unread, counted in
/// `sipfw_sip_connections_total{result="refused_gate"}`; another source is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_banned_source_is_refused_at_accept_on_every_stream_transport() {
    let wsa: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let edge = start(&format!("[ws]\nlisten = [\"{wsa}\"]\n")).await;
    let out = edge.cli(&["ban", "add", "127.0.0.2", "--for", "1h"]);
    assert!(out.status.success(), "{out:?}");
    let name = ServerName::IpAddress(std::net::IpAddr::from([127, 0, 0, 1]).into());
    let from = |ip: [u8; 4]| {
        let s = tokio::net::TcpSocket::new_v4().expect("socket");
        s.bind(SocketAddr::from((ip, 0))).expect("bind");
        s
    };
    // Closed unread: EOF (or a reset) before anything is sent back.
    let closed = |mut s: tokio::net::TcpStream| async move {
        let mut b = [0u8; 64];
        matches!(
            tokio::time::timeout(Duration::from_secs(10), s.read(&mut b)).await,
            Ok(Ok(0) | Err(_))
        )
    };

    // TLS: no handshake for the banned source.
    let tcp = from([127, 0, 0, 2])
        .connect(edge.tls)
        .await
        .expect("connect");
    assert!(
        connector(&edge.ca_pem, None)
            .connect(name.clone(), tcp)
            .await
            .is_err(),
        "a banned source completed a TLS handshake"
    );
    // TCP and WebSocket: closed at once, though the client says nothing.
    let tcp = from([127, 0, 0, 2])
        .connect(edge.sip)
        .await
        .expect("connect");
    assert!(closed(tcp).await, "TCP from a banned source stayed open");
    let tcp = from([127, 0, 0, 2]).connect(wsa).await.expect("connect");
    assert!(
        closed(tcp).await,
        "WebSocket from a banned source stayed open"
    );

    // Another source is served, and `status` shows its connection under tls.
    let tcp = from([127, 0, 0, 1])
        .connect(edge.tls)
        .await
        .expect("connect");
    let _held = connector(&edge.ca_pem, None)
        .connect(name, tcp)
        .await
        .expect("an unbanned source completes the handshake");
    let t0 = Instant::now();
    loop {
        let out = edge.cli(&["status", "--json"]);
        assert!(out.status.success(), "{out:?}");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
        let open = |t: &str| {
            v["connections"]
                .as_array()
                .and_then(|a| a.iter().find(|e| e[0] == t))
                .and_then(|e| e[1].as_i64())
        };
        assert_eq!(open("wss"), Some(0), "{v}");
        if open("tls") == Some(1) {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "{v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let m = common::scrape_opt(edge.daemon.metrics).expect("metrics");
    for t in ["tcp", "tls", "ws"] {
        let k = format!("sipfw_sip_connections_total{{result=\"refused_gate\",transport=\"{t}\"}}");
        assert_eq!(m.get(&k).copied(), Some(1.0), "{k}");
    }
    assert_eq!(
        m.get("sipfw_userspace_drops_total{reason=\"banned\"}")
            .copied(),
        Some(3.0)
    );
}

/// A TLS handshake flood from one source: connections that never start their handshake
/// hold at most `max_tcp_per_source` slots (one more is closed at once), and each is
/// dropped at the handshake timeout, after which the source is served again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_handshakes_are_capped_per_source_and_timed_out() {
    // A handshake timeout long enough that the two silent connections still hold their
    // slots when the third arrives, however slow the machine.
    let edge = start("handshake_timeout = \"15s\"\n[sip]\nmax_tcp_per_source = 2\n").await;
    let name = ServerName::IpAddress(std::net::IpAddr::from([127, 0, 0, 1]).into());
    // The edge's own count of the source's slots, as `why` reports it.
    let slots_in_use = |edge: &Edge| -> String {
        let out = edge.cli(&["why", "127.0.0.1", "--json"]);
        assert!(out.status.success(), "{out:?}");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("why JSON");
        v["findings"]
            .as_array()
            .and_then(|f| f.iter().find(|f| f["check"] == "tcp_slots"))
            .and_then(|f| f["detail"].as_str())
            .unwrap_or_default()
            .to_string()
    };
    async fn wait_for(edge: &Edge, what: &str, slots_in_use: impl Fn(&Edge) -> String) {
        let t0 = Instant::now();
        loop {
            let now = slots_in_use(edge);
            if now.starts_with(what) {
                return;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "the source's slots never reached {what:?}: {now:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // The readiness probe's slot is given back when its handshake fails.
    wait_for(&edge, "0 of 2", slots_in_use).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(
            tokio::net::TcpStream::connect(edge.tls)
                .await
                .expect("connect"),
        );
    }
    wait_for(&edge, "2 of 2", slots_in_use).await;
    // A third is closed unread by the edge: EOF or a reset, well before the handshake timeout.
    let mut third = tokio::net::TcpStream::connect(edge.tls)
        .await
        .expect("connect");
    let mut b = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(10), third.read(&mut b)).await;
    assert!(
        matches!(read, Ok(Ok(0) | Err(_))),
        "a third connection from the source was not refused: {read:?}"
    );
    // The silent ones are dropped at the handshake timeout (5 s by default): then the
    // source completes a handshake again.
    let t0 = Instant::now();
    loop {
        let tcp = tokio::net::TcpStream::connect(edge.tls)
            .await
            .expect("connect");
        let hs = tokio::time::timeout(
            Duration::from_secs(5),
            connector(&edge.ca_pem, None).connect(name.clone(), tcp),
        )
        .await;
        if matches!(hs, Ok(Ok(_))) {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(40),
            "the silent handshakes were never timed out"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(held);
}
