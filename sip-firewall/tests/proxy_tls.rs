//! SIP over TLS (issue 14): a test CA and certificates made here (rcgen); a phone registers
//! over TLS with digest authentication and is called from a UDP peer through the edge (TLS
//! Via, Record-Route doubled across the transport change, the answer relayed back over
//! UDP); a client whose certificate chains to another CA is refused.

use std::{
    net::{SocketAddr, TcpStream, UdpSocket},
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::{
    ClientConfig, RootCertStore,
    pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject as _},
};
use sip_firewall::auth::digest::{Algorithm, response_auth};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWriteExt as _};
use tokio_rustls::TlsConnector;

mod common;

use common::free_port;

struct Daemon {
    child: Child,
    dir: std::path::PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A CA: its certificate (PEM) and what signs with it.
fn ca(name: &str) -> (String, Issuer<'static, KeyPair>) {
    let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name
        .push(rcgen::DnType::CommonName, name.to_string());
    let key = KeyPair::generate().expect("key");
    let cert = p.self_signed(&key).expect("CA");
    (cert.pem(), Issuer::new(p, key))
}

/// A leaf for `san` signed by `issuer`: (certificate PEM, key PEM).
fn leaf(san: &str, issuer: &Issuer<'static, KeyPair>) -> (String, String) {
    let p = CertificateParams::new(vec![san.to_string()]).expect("params");
    let key = KeyPair::generate().expect("key");
    let cert = p.signed_by(&key, issuer).expect("leaf");
    (cert.pem(), key.serialize_pem())
}

/// A TLS client trusting `ca_pem`, presenting `client` (certificate, key) when given.
fn connector(ca_pem: &str, client: Option<&(String, String)>) -> TlsConnector {
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.expect("CA PEM")).expect("root");
    }
    let b = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots);
    let cfg = match client {
        Some((cert, key)) => b
            .with_client_auth_cert(
                CertificateDer::pem_slice_iter(cert.as_bytes())
                    .collect::<Result<Vec<_>, _>>()
                    .expect("cert"),
                PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("key"),
            )
            .expect("client cert"),
        None => b.with_no_client_auth(),
    };
    TlsConnector::from(Arc::new(cfg))
}

/// Read one SIP message (headers and Content-Length body); `None` at EOF or an error.
async fn read_message<S: AsyncRead + Unpin>(s: &mut S) -> Option<String> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        match tokio::time::timeout(Duration::from_secs(10), s.read(&mut byte)).await {
            Ok(Ok(1)) => buf.push(byte[0]),
            _ => return None,
        }
        // Keep-alive pongs and stray CRLFs between messages.
        if buf == b"\r\n" {
            buf.clear();
        }
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    let len = text
        .split("\r\n")
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse::<usize>().unwrap_or(0))
        })
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).await.ok()?;
    Some(text + &String::from_utf8_lossy(&body))
}

/// A response to `req` with `code`, echoing its Via, From, To (tagged), Call-ID and CSeq.
fn response_to(req: &str, code: &str) -> String {
    let mut resp = format!("SIP/2.0 {code}\r\n");
    for l in req.split("\r\n") {
        let lower = l.to_ascii_lowercase();
        if ["via:", "from:", "call-id:", "cseq:", "record-route:"]
            .iter()
            .any(|p| lower.starts_with(p))
        {
            resp.push_str(l);
            resp.push_str("\r\n");
        } else if lower.starts_with("to:") {
            resp.push_str(&format!("{l};tag=alice1\r\n"));
        }
    }
    resp + "Content-Length: 0\r\n\r\n"
}

fn param<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    let at = header.find(&format!("{name}="))? + name.len() + 1;
    let rest = &header[at..];
    Some(match rest.strip_prefix('"') {
        Some(q) => &q[..q.find('"')?],
        None => rest.split([',', ' ', '\r']).next()?,
    })
}

/// A running edge with a TLS listener: its addresses, the test CA and its issuer.
struct Edge {
    _daemon: Daemon,
    sip: SocketAddr,
    tls: SocketAddr,
    ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
    dir: std::path::PathBuf,
}

/// Start the daemon with a TLS listener, a certificate for 127.0.0.1 from a CA made now,
/// `ca` set to that CA, and `extra` appended to the config.
async fn start(extra: &str) -> Edge {
    let dir =
        std::env::temp_dir().join(format!("sipfw-tls-{}-{}", std::process::id(), free_port()));
    std::fs::create_dir_all(&dir).expect("dir");
    let (ca_pem, issuer) = ca("sip-firewall test CA");
    let (cert, key) = leaf("127.0.0.1", &issuer);
    for (name, text) in [("ca.pem", &ca_pem), ("cert.pem", &cert), ("key.pem", &key)] {
        std::fs::write(dir.join(name), text).expect("write PEM");
    }
    let sip: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let tls: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let cfg = dir.join("c.toml");
    std::fs::write(
        &cfg,
        format!(
            "[tls]\nlisten = [\"{tls}\"]\ncertificate = \"{}\"\nprivate_key = \"{}\"\nca = \"{}\"\n{extra}",
            dir.join("cert.pem").display(),
            dir.join("key.pem").display(),
            dir.join("ca.pem").display(),
        ),
    )
    .expect("config");
    let child = Command::new(env!("CARGO_BIN_EXE_sip-firewall"))
        .args(["run", "--xdp-mode", "off", "--config"])
        .arg(&cfg)
        .args(["--sip-listen", &sip.to_string()])
        .args(["--metrics-listen", &format!("127.0.0.1:{}", free_port())])
        .arg("--state-dir")
        .arg(dir.join("state"))
        .arg("--admin-socket")
        .arg(dir.join("admin.sock"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn");
    let daemon = Daemon {
        child,
        dir: dir.clone(),
    };
    let t0 = Instant::now();
    while TcpStream::connect(tls).is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "daemon did not come up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Edge {
        _daemon: daemon,
        sip,
        tls,
        ca_pem,
        issuer,
        dir,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registers_over_tls_and_is_called_from_udp() {
    let ha1 = Algorithm::Md5.ha1("alice", "example.com", "s3cret");
    let ha1_256 = Algorithm::Sha256.ha1("alice", "example.com", "s3cret");
    let Edge {
        _daemon,
        sip,
        tls,
        ca_pem,
        ..
    } = start(&format!(
        "[sip]\ndomains = [\"example.com\"]\n\
         [proxy]\ninternal_next_hops = [\"127.0.0.0/8\"]\n\
         [auth]\nalgorithms = [\"MD5\"]\n\
         users = [{{ user = \"alice\", domain = \"example.com\", ha1 = \"{ha1}\", ha1_sha256 = \"{ha1_256}\" }}]\n"
    ))
    .await;
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

    // Alice registers over TLS (no client certificate: allowed unless required).
    let tcp = tokio::net::TcpStream::connect(tls).await.expect("connect");
    let me = tcp.local_addr().expect("local");
    let mut s = connector(&ca_pem, None)
        .connect(name, tcp)
        .await
        .expect("TLS handshake with the edge");
    let register = |cseq: u32, auth: &str| {
        format!(
            "REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/TLS {me};branch=z9hG4bKreg{cseq};rport\r\nMax-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=a1\r\nTo: <sip:alice@example.com>\r\nCall-ID: reg-tls@x\r\nCSeq: {cseq} REGISTER\r\nContact: <sip:alice@{me};transport=tls>\r\nExpires: 300\r\n{auth}Content-Length: 0\r\n\r\n"
        )
    };
    s.write_all(register(1, "").as_bytes()).await.expect("send");
    let r = read_message(&mut s).await.expect("an answer over TLS");
    assert!(r.starts_with("SIP/2.0 401"), "{r}");
    let challenge = r
        .split("\r\n")
        .find(|l| l.starts_with("WWW-Authenticate:"))
        .expect("a challenge");
    let nonce = param(challenge, "nonce").expect("nonce");
    let resp = response_auth(
        Algorithm::Md5,
        &ha1,
        nonce,
        "00000001",
        "c0ffee",
        "REGISTER",
        "sip:example.com",
    );
    let auth = format!(
        "Authorization: Digest username=\"alice\", realm=\"example.com\", nonce=\"{nonce}\", uri=\"sip:example.com\", response=\"{resp}\", algorithm=MD5, qop=auth, nc=00000001, cnonce=\"c0ffee\"\r\n"
    );
    s.write_all(register(2, &auth).as_bytes())
        .await
        .expect("send");
    let r = read_message(&mut s).await.expect("an answer over TLS");
    assert!(r.starts_with("SIP/2.0 200"), "{r}");

    // A UDP phone calls alice: the INVITE reaches her over her TLS connection.
    let caller = UdpSocket::bind("127.0.0.1:0").expect("caller");
    caller
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let bob = caller.local_addr().expect("addr");
    let invite = format!(
        "INVITE sip:alice@example.com SIP/2.0\r\nVia: SIP/2.0/UDP {bob};branch=z9hG4bKinv1;rport\r\nMax-Forwards: 70\r\nFrom: <sip:bob@pbx.example>;tag=b1\r\nTo: <sip:alice@example.com>\r\nCall-ID: tls-call-1\r\nCSeq: 1 INVITE\r\nContact: <sip:bob@{bob}>\r\nContent-Length: 0\r\n\r\n"
    );
    caller.send_to(invite.as_bytes(), sip).expect("send");
    let req = read_message(&mut s).await.expect("the INVITE over TLS");
    assert!(req.starts_with("INVITE "), "{req}");
    assert!(
        req.contains(&format!("Via: SIP/2.0/TLS {tls};branch=z9hG4bKsfw")),
        "our TLS Via names the TLS listener: {req}"
    );
    // RFC 5658: alice reaches us over TLS, bob over UDP; both entries carry the stamp.
    let rr: Vec<&str> = req
        .split("\r\n")
        .filter_map(|l| l.strip_prefix("Record-Route: "))
        .collect();
    assert_eq!(rr.len(), 2, "{req}");
    let stamp = rr[0]
        .strip_prefix(&format!("<sip:{tls};transport=tls;lr;sfw="))
        .expect("TLS side first");
    assert_eq!(
        rr[1].strip_prefix(&format!("<sip:{sip};lr;sfw=")),
        Some(stamp),
        "{req}"
    );
    // Alice is busy: the answer goes back to bob over UDP.
    s.write_all(response_to(&req, "486 Busy Here").as_bytes())
        .await
        .expect("send");
    let mut buf = [0u8; 4096];
    let mut codes = Vec::new();
    while !codes.contains(&486) {
        let (n, _) = caller.recv_from(&mut buf).expect("an answer over UDP");
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        codes.push(
            text.get(8..11)
                .and_then(|c| c.parse::<u16>().ok())
                .expect("status"),
        );
        if text.starts_with("SIP/2.0 486") {
            assert!(text.contains("branch=z9hG4bKinv1"), "{text}");
        }
    }
    assert_eq!(codes, vec![100, 486]);
    // The edge acknowledges the 486 hop by hop over the same TLS connection.
    let ack = read_message(&mut s).await.expect("the ACK over TLS");
    assert!(
        ack.starts_with("ACK ") && ack.contains("CSeq: 1 ACK"),
        "{ack}"
    );
}

/// A sips: target is reached over a TLS connection the edge opens, verifying the next hop's
/// certificate against `[tls] ca`; a next hop whose certificate is from another CA gets
/// nothing (the handshake fails, counted), and the caller hears no 2xx from it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sips_targets_are_reached_over_verified_tls() {
    let edge = start(
        "[sip]\ndomains = [\"example.com\"]\n[policy]\nallow = [\"127.0.0.0/8\"]\n\
         [proxy]\ninternal_next_hops = [\"127.0.0.0/8\"]\n",
    )
    .await;
    let _keep = &edge.dir;
    // Two next hops: one with a certificate from our CA, one from a stranger's.
    let (good_cert, good_key) = leaf("127.0.0.1", &edge.issuer);
    let (_, stranger) = ca("a stranger's CA");
    let (bad_cert, bad_key) = leaf("127.0.0.1", &stranger);
    let acceptor = |cert: &str, key: &str| {
        let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(
            CertificateDer::pem_slice_iter(cert.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .expect("cert"),
            PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("key"),
        )
        .expect("server config");
        tokio_rustls::TlsAcceptor::from(Arc::new(cfg))
    };
    let caller = UdpSocket::bind("127.0.0.1:0").expect("caller");
    caller
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let me = caller.local_addr().expect("addr");
    let invite = |target: SocketAddr, n: u32| {
        format!(
            "INVITE sips:dave@{target} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKsips{n};rport\r\nMax-Forwards: 70\r\nFrom: <sip:trunk@pbx.example>;tag={n}\r\nTo: <sips:dave@{target}>\r\nCall-ID: sips-{n}\r\nCSeq: 1 INVITE\r\nContact: <sip:trunk@{me}>\r\nContent-Length: 0\r\n\r\n"
        )
    };

    // The stranger's next hop: the edge's handshake fails (it verifies), no INVITE is read.
    let bad = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let bad_addr = bad.local_addr().expect("addr");
    caller
        .send_to(invite(bad_addr, 1).as_bytes(), edge.sip)
        .expect("send");
    let (tcp, _) = tokio::time::timeout(Duration::from_secs(10), bad.accept())
        .await
        .expect("the edge connects")
        .expect("accept");
    let refused = acceptor(&bad_cert, &bad_key).accept(tcp).await;
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
        .send_to(invite(good_addr, 2).as_bytes(), edge.sip)
        .expect("send");
    let (tcp, _) = tokio::time::timeout(Duration::from_secs(10), good.accept())
        .await
        .expect("the edge connects")
        .expect("accept");
    let mut s = acceptor(&good_cert, &good_key)
        .accept(tcp)
        .await
        .expect("the edge completes the handshake");
    let req = read_message(&mut s).await.expect("the INVITE over TLS");
    assert!(
        req.starts_with(&format!("INVITE sips:dave@{good_addr} SIP/2.0")),
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
    s.write_all(response_to(&req, "486 Busy Here").as_bytes())
        .await
        .expect("send");
    let mut buf = [0u8; 4096];
    loop {
        let (n, _) = caller.recv_from(&mut buf).expect("an answer over UDP");
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        assert!(!text.starts_with("SIP/2.0 2"), "{text}");
        if text.starts_with("SIP/2.0 486") {
            assert!(text.contains("branch=z9hG4bKsips2"), "{text}");
            break;
        }
    }
}

/// Issue 14: a `sips:` target named by domain is located by RFC 3263 (`_sips._tcp` SRV
/// from a real DNS server) and reached over TLS with SNI set to that domain, the next hop's
/// certificate verified against the domain (RFC 5922 7.1), not its address: a next hop
/// whose certificate names another host gets nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_to_a_domain_sends_sni_and_verifies_that_name() {
    let good = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let wrong = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let (gp, wp) = (
        good.local_addr().expect("addr").port(),
        wrong.local_addr().expect("addr").port(),
    );
    let dns_port = free_port();
    let Some(_dns) = common::dnsmasq(
        dns_port,
        &[
            &format!("--srv-host=_sips._tcp.secure.test,tls1.secure.test,{gp},10,0"),
            &format!("--srv-host=_sips._tcp.wrong.test,tls2.wrong.test,{wp},10,0"),
            "--host-record=tls1.secure.test,127.0.0.1",
            "--host-record=tls2.wrong.test,127.0.0.1",
        ],
    ) else {
        common::skip::skip(
            "tls_to_a_domain_sends_sni_and_verifies_that_name",
            "dnsmasq not installed (cargo xtask setup)",
        );
        return;
    };
    let edge = start(&format!(
        "[policy]\nallow = [\"127.0.0.0/8\"]\n\
         [proxy]\ninternal_next_hops = [\"127.0.0.0/8\"]\n\
         [dns]\nnameservers = [\"127.0.0.1:{dns_port}\"]\n"
    ))
    .await;
    let _keep = &edge.dir;
    // Both next hops hold a certificate of our CA for secure.test (no IP address in it).
    let (cert, key) = leaf("secure.test", &edge.issuer);
    let acceptor = {
        let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(
            CertificateDer::pem_slice_iter(cert.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .expect("cert"),
            PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("key"),
        )
        .expect("server config");
        tokio_rustls::TlsAcceptor::from(Arc::new(cfg))
    };
    let caller = UdpSocket::bind("127.0.0.1:0").expect("caller");
    caller
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let me = caller.local_addr().expect("addr");
    let invite = |domain: &str, n: u32| {
        format!(
            "INVITE sips:dave@{domain} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKsni{n};rport\r\nMax-Forwards: 70\r\nFrom: <sip:trunk@pbx.example>;tag={n}\r\nTo: <sips:dave@{domain}>\r\nCall-ID: sni-{n}\r\nCSeq: 1 INVITE\r\nContact: <sip:trunk@{me}>\r\nContent-Length: 0\r\n\r\n"
        )
    };

    // secure.test: SNI secure.test, the certificate verified by that name, the INVITE over.
    caller
        .send_to(invite("secure.test", 1).as_bytes(), edge.sip)
        .expect("send");
    let (tcp, _) = tokio::time::timeout(Duration::from_secs(15), good.accept())
        .await
        .expect("the edge connects")
        .expect("accept");
    let mut s = acceptor
        .accept(tcp)
        .await
        .expect("the edge completes the handshake with a certificate for the domain");
    assert_eq!(s.get_ref().1.server_name(), Some("secure.test"), "SNI");
    let req = read_message(&mut s).await.expect("the INVITE over TLS");
    assert!(
        req.starts_with("INVITE sips:dave@secure.test SIP/2.0"),
        "{req}"
    );
    s.write_all(response_to(&req, "486 Busy Here").as_bytes())
        .await
        .expect("send");
    let mut buf = [0u8; 4096];
    loop {
        let (n, _) = caller.recv_from(&mut buf).expect("an answer over UDP");
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        if text.starts_with("SIP/2.0 486") {
            break;
        }
        assert!(text.starts_with("SIP/2.0 1"), "{text}");
    }

    // wrong.test: the next hop's certificate names secure.test, not wrong.test: the edge
    // refuses it (SNI wrong.test), and no INVITE is read.
    caller
        .send_to(invite("wrong.test", 2).as_bytes(), edge.sip)
        .expect("send");
    let (tcp, _) = tokio::time::timeout(Duration::from_secs(15), wrong.accept())
        .await
        .expect("the edge connects")
        .expect("accept");
    if let Ok(mut s) = acceptor.accept(tcp).await {
        assert_eq!(s.get_ref().1.server_name(), Some("wrong.test"), "SNI");
        assert_eq!(
            read_message(&mut s).await,
            None,
            "the edge sent a request to a next hop whose certificate names another host"
        );
    }
}

/// Issue 14: the certificate is replaced without a restart. A TLS connection is up; the
/// certificate and key files are rewritten and the daemon gets SIGHUP (as `sip-firewall
/// reload` does): a new TLS client sees the new certificate, and the connection that was up
/// keeps being served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_puts_a_new_certificate_in_force_and_keeps_connections() {
    let edge = start("").await;
    let name = ServerName::IpAddress(std::net::IpAddr::from([127, 0, 0, 1]).into());
    let peer_cert = |s: &tokio_rustls::client::TlsStream<tokio::net::TcpStream>| {
        s.get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.as_ref().to_vec())
            .expect("a server certificate")
    };
    let options = |n: u32| {
        format!(
            "OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:1;branch=z9hG4bKrl{n}\r\nMax-Forwards: 70\r\nFrom: <sip:x@example.org>;tag={n}\r\nTo: <sip:127.0.0.1>\r\nCall-ID: reload-{n}@x\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        )
    };
    let tcp = tokio::net::TcpStream::connect(edge.tls)
        .await
        .expect("connect");
    let mut old = connector(&edge.ca_pem, None)
        .connect(name.clone(), tcp)
        .await
        .expect("handshake");
    let first = peer_cert(&old);
    old.write_all(options(1).as_bytes()).await.expect("send");
    let answer = read_message(&mut old).await.expect("an answer");
    assert!(answer.starts_with("SIP/2.0 200"), "{answer}");

    // A new certificate (and key) for the same name, from the same CA, in place.
    let (cert, key) = leaf("127.0.0.1", &edge.issuer);
    let new_der = CertificateDer::pem_slice_iter(cert.as_bytes())
        .next()
        .expect("one")
        .expect("PEM")
        .as_ref()
        .to_vec();
    assert_ne!(first, new_der);
    std::fs::write(edge.dir.join("key.pem"), &key).expect("key");
    std::fs::write(edge.dir.join("cert.pem"), &cert).expect("cert");
    // SAFETY: kill has no memory preconditions; the pid is our child's.
    let pid = edge._daemon.child.id() as libc::pid_t;
    assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);

    // New clients get the new certificate (polled: the reload runs in the daemon's loop).
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
    // The connection made before the reload is still served.
    old.write_all(options(2).as_bytes()).await.expect("send");
    let answer = read_message(&mut old)
        .await
        .expect("an answer after the reload");
    assert!(answer.starts_with("SIP/2.0 200"), "{answer}");
    assert!(answer.contains("reload-2@x"), "{answer}");
}

/// A TLS handshake flood from one source: connections that never start their handshake
/// hold at most `max_tcp_per_source` slots (one more is closed at once), and each is
/// dropped at the handshake timeout, after which the source is served again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_handshakes_are_capped_per_source_and_timed_out() {
    let edge = start("[sip]\nmax_tcp_per_source = 2\n").await;
    let name = ServerName::IpAddress(std::net::IpAddr::from([127, 0, 0, 1]).into());
    // Two silent connections take the source's slots (the readiness probe's is given back
    // when its handshake fails, so wait until a third is refused).
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(
            tokio::net::TcpStream::connect(edge.tls)
                .await
                .expect("connect"),
        );
    }
    async fn refused(s: &mut tokio::net::TcpStream) -> bool {
        let mut b = [0u8; 1];
        // Closed unread by the edge: EOF or a reset, well before any handshake timeout.
        matches!(
            tokio::time::timeout(Duration::from_secs(3), s.read(&mut b)).await,
            Ok(Ok(0) | Err(_))
        )
    }
    let t0 = Instant::now();
    loop {
        let mut third = tokio::net::TcpStream::connect(edge.tls)
            .await
            .expect("connect");
        if refused(&mut third).await {
            break;
        }
        // It got a slot (one of the two above was refused while the readiness probe's
        // slot was still taken): keep it silent too, so the source's slots fill.
        held.push(third);
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "a third connection from the source was never refused"
        );
    }
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
            t0.elapsed() < Duration::from_secs(30),
            "the silent handshakes were never timed out"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(held);
}
