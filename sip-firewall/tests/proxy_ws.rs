//! SIP over WebSocket (issue 14, RFC 7118): a browser-like client (tokio-tungstenite)
//! upgrades with the `sip` subprotocol from an allowed Origin, registers with digest
//! authentication, and receives a MESSAGE a UDP phone sends through the edge, on the same
//! connection (its `;transport=ws` contact cannot be dialled). An upgrade without the `sip`
//! subprotocol, or from another Origin, is refused. The same over wss (`[wss]`, the `[tls]`
//! certificate): a client registers over TLS + WebSocket and is called from a UDP phone.

use std::{
    net::{SocketAddr, TcpStream, UdpSocket},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use futures_util::{SinkExt as _, StreamExt as _};
use sip_firewall::auth::digest::{Algorithm, response_auth};
use tokio_tungstenite::{
    WebSocketStream, client_async,
    tungstenite::{Message, client::IntoClientRequest as _, http::HeaderValue},
};

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

/// Open a WebSocket to `addr` offering `protocol` from `origin`.
async fn upgrade(
    addr: SocketAddr,
    protocol: Option<&str>,
    origin: &str,
) -> Result<WebSocketStream<tokio::net::TcpStream>, String> {
    let mut req = format!("ws://{addr}/")
        .into_client_request()
        .expect("request");
    if let Some(p) = protocol {
        req.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_str(p).expect("p"),
        );
    }
    req.headers_mut()
        .insert("Origin", HeaderValue::from_str(origin).expect("origin"));
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    match tokio::time::timeout(Duration::from_secs(10), client_async(req, tcp)).await {
        Ok(Ok((ws, resp))) => {
            assert_eq!(
                resp.headers()
                    .get("sec-websocket-protocol")
                    .and_then(|v| v.to_str().ok()),
                Some("sip"),
                "RFC 7118: the server answers with the sip subprotocol"
            );
            Ok(ws)
        }
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("upgrade timed out".into()),
    }
}

/// The next SIP message on the WebSocket (pings skipped).
async fn next_sip<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    ws: &mut WebSocketStream<S>,
) -> String {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a message in time")
            .expect("the connection open")
            .expect("a valid frame");
        match m {
            Message::Text(t) => return t.to_string(),
            Message::Binary(b) => return String::from_utf8_lossy(&b).into_owned(),
            _ => continue,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registers_over_websocket_and_receives_from_udp() {
    let dir = std::env::temp_dir().join(format!("sipfw-ws-{}-{}", std::process::id(), free_port()));
    std::fs::create_dir_all(&dir).expect("dir");
    let ha1 = Algorithm::Md5.ha1("alice", "example.com", "s3cret");
    let ha1_256 = Algorithm::Sha256.ha1("alice", "example.com", "s3cret");
    let sip: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let wsa: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let cfg = dir.join("c.toml");
    std::fs::write(
        &cfg,
        format!(
            "[sip]\ndomains = [\"example.com\"]\n\
             [proxy]\ninternal_next_hops = [\"127.0.0.0/8\"]\n\
             [auth]\nalgorithms = [\"MD5\"]\n\
             users = [{{ user = \"alice\", domain = \"example.com\", ha1 = \"{ha1}\", ha1_sha256 = \"{ha1_256}\" }}]\n\
             [ws]\nlisten = [\"{wsa}\"]\norigins = [\"https://phone.example.com\"]\n"
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
    let _d = Daemon {
        child,
        dir: dir.clone(),
    };
    let t0 = Instant::now();
    while TcpStream::connect(wsa).is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "daemon did not come up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let good = "https://phone.example.com";

    // Refused: no subprotocol, another subprotocol, another origin.
    assert!(upgrade(wsa, None, good).await.is_err(), "no subprotocol");
    assert!(upgrade(wsa, Some("chat"), good).await.is_err(), "not sip");
    let Err(e) = upgrade(wsa, Some("sip"), "https://evil.example").await else {
        panic!("another origin is refused");
    };
    assert!(e.contains("403"), "{e}");

    let mut ws = upgrade(wsa, Some("sip"), good)
        .await
        .expect("the upgrade from the allowed origin");
    let register = |cseq: u32, auth: &str| {
        format!(
            "REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/WS df7jal23ls0d.invalid;branch=z9hG4bKws{cseq}\r\nMax-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=w1\r\nTo: <sip:alice@example.com>\r\nCall-ID: reg-ws@x\r\nCSeq: {cseq} REGISTER\r\nContact: <sip:alice@df7jal23ls0d.invalid;transport=ws>\r\nExpires: 300\r\n{auth}Content-Length: 0\r\n\r\n"
        )
    };
    ws.send(Message::text(register(1, ""))).await.expect("send");
    let r = next_sip(&mut ws).await;
    assert!(r.starts_with("SIP/2.0 401"), "{r}");
    let challenge = r
        .split("\r\n")
        .find(|l| l.starts_with("WWW-Authenticate:"))
        .expect("a challenge");
    let at = challenge.find("nonce=\"").expect("nonce") + 7;
    let nonce = &challenge[at..at + challenge[at..].find('"').expect("quote")];
    let resp = response_auth(
        Algorithm::Md5,
        &ha1,
        nonce,
        "00000001",
        "f00d",
        "REGISTER",
        "sip:example.com",
    );
    let auth = format!(
        "Authorization: Digest username=\"alice\", realm=\"example.com\", nonce=\"{nonce}\", uri=\"sip:example.com\", response=\"{resp}\", algorithm=MD5, qop=auth, nc=00000001, cnonce=\"f00d\"\r\n"
    );
    ws.send(Message::text(register(2, &auth)))
        .await
        .expect("send");
    let r = next_sip(&mut ws).await;
    assert!(r.starts_with("SIP/2.0 200"), "{r}");

    // A UDP phone sends alice a MESSAGE: it arrives on her WebSocket.
    let phone = UdpSocket::bind("127.0.0.1:0").expect("phone");
    phone
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let me = phone.local_addr().expect("addr");
    let message = format!(
        "MESSAGE sip:alice@example.com SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKmsg1;rport\r\nMax-Forwards: 70\r\nFrom: <sip:bob@pbx.example>;tag=b1\r\nTo: <sip:alice@example.com>\r\nCall-ID: ws-msg-1\r\nCSeq: 1 MESSAGE\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello"
    );
    phone.send_to(message.as_bytes(), sip).expect("send");
    let req = next_sip(&mut ws).await;
    assert!(req.starts_with("MESSAGE "), "{req}");
    assert!(req.ends_with("hello"), "{req}");
    assert!(
        req.contains(&format!("Via: SIP/2.0/WS {wsa};branch=z9hG4bKsfw")),
        "our WS Via names the WebSocket listener: {req}"
    );
    // Alice answers 200 on the WebSocket: relayed to the phone over UDP.
    let mut ok = String::from("SIP/2.0 200 OK\r\n");
    for l in req.split("\r\n") {
        let lower = l.to_ascii_lowercase();
        if ["via:", "from:", "call-id:", "cseq:"]
            .iter()
            .any(|p| lower.starts_with(p))
        {
            ok.push_str(l);
            ok.push_str("\r\n");
        } else if lower.starts_with("to:") {
            ok.push_str(&format!("{l};tag=a1\r\n"));
        }
    }
    ok.push_str("Content-Length: 0\r\n\r\n");
    ws.send(Message::text(ok)).await.expect("send");
    let mut buf = [0u8; 4096];
    loop {
        let (n, _) = phone.recv_from(&mut buf).expect("the 200 over UDP");
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        if text.starts_with("SIP/2.0 200") {
            assert!(text.contains("branch=z9hG4bKmsg1"), "{text}");
            break;
        }
        assert!(text.starts_with("SIP/2.0 1"), "{text}");
    }
}

/// A wss upgrade over TLS (trusting `ca_pem`) to `addr`, offering `protocol` from `origin`.
async fn upgrade_wss(
    addr: SocketAddr,
    ca_pem: &str,
    protocol: &str,
    origin: &str,
) -> Result<WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>, String> {
    use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject as _};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.expect("CA PEM")).expect("root");
    }
    let cfg = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = ServerName::IpAddress(addr.ip().into());
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS: {e}"))?;
    let mut req = format!("wss://{addr}/")
        .into_client_request()
        .expect("request");
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_str(protocol).expect("p"),
    );
    req.headers_mut()
        .insert("Origin", HeaderValue::from_str(origin).expect("origin"));
    match tokio::time::timeout(Duration::from_secs(10), client_async(req, tls)).await {
        Ok(Ok((ws, resp))) => {
            assert_eq!(
                resp.headers()
                    .get("sec-websocket-protocol")
                    .and_then(|v| v.to_str().ok()),
                Some("sip")
            );
            Ok(ws)
        }
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("upgrade timed out".into()),
    }
}

/// Issue 14: `[wss] listen`. A browser-like client registers over WebSocket over TLS (the
/// `[tls]` certificate; no `[tls] listen` needed) and is called from a UDP phone: the INVITE
/// arrives on its connection and its 200 goes back to the phone. Over wss too, a wrong
/// Origin and a wrong subprotocol are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registers_over_secure_websocket_and_is_called_from_udp() {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let dir =
        std::env::temp_dir().join(format!("sipfw-wss-{}-{}", std::process::id(), free_port()));
    std::fs::create_dir_all(&dir).expect("dir");
    // A CA and a certificate for 127.0.0.1, made now.
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().expect("key");
    let ca_cert = ca.self_signed(&ca_key).expect("CA");
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let leaf_key = KeyPair::generate().expect("key");
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .expect("params")
        .signed_by(&leaf_key, &issuer)
        .expect("leaf");
    std::fs::write(dir.join("cert.pem"), leaf.pem()).expect("cert");
    std::fs::write(dir.join("key.pem"), leaf_key.serialize_pem()).expect("key");
    let ca_pem = ca_cert.pem();

    let ha1 = Algorithm::Md5.ha1("alice", "example.com", "s3cret");
    let ha1_256 = Algorithm::Sha256.ha1("alice", "example.com", "s3cret");
    let sip: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let wss: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let cfg = dir.join("c.toml");
    std::fs::write(
        &cfg,
        format!(
            "[sip]\ndomains = [\"example.com\"]\n\
             [proxy]\ninternal_next_hops = [\"127.0.0.0/8\"]\n\
             [auth]\nalgorithms = [\"MD5\"]\n\
             users = [{{ user = \"alice\", domain = \"example.com\", ha1 = \"{ha1}\", ha1_sha256 = \"{ha1_256}\" }}]\n\
             [tls]\ncertificate = \"{}\"\nprivate_key = \"{}\"\n\
             [ws]\norigins = [\"https://phone.example.com\"]\n\
             [wss]\nlisten = [\"{wss}\"]\n",
            dir.join("cert.pem").display(),
            dir.join("key.pem").display(),
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
    let _d = Daemon {
        child,
        dir: dir.clone(),
    };
    let t0 = Instant::now();
    while TcpStream::connect(wss).is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "daemon did not come up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let good = "https://phone.example.com";
    assert!(
        upgrade_wss(wss, &ca_pem, "chat", good).await.is_err(),
        "not sip"
    );
    let Err(e) = upgrade_wss(wss, &ca_pem, "sip", "https://evil.example").await else {
        panic!("another origin is refused over wss");
    };
    assert!(e.contains("403"), "{e}");

    let mut ws = upgrade_wss(wss, &ca_pem, "sip", good)
        .await
        .expect("the wss upgrade from the allowed origin");
    let register = |cseq: u32, auth: &str| {
        format!(
            "REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/WSS k3j4l5.invalid;branch=z9hG4bKwss{cseq}\r\nMax-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=s1\r\nTo: <sip:alice@example.com>\r\nCall-ID: reg-wss@x\r\nCSeq: {cseq} REGISTER\r\nContact: <sip:alice@k3j4l5.invalid;transport=ws>\r\nExpires: 300\r\n{auth}Content-Length: 0\r\n\r\n"
        )
    };
    ws.send(Message::text(register(1, ""))).await.expect("send");
    let r = next_sip(&mut ws).await;
    assert!(r.starts_with("SIP/2.0 401"), "{r}");
    let challenge = r
        .split("\r\n")
        .find(|l| l.starts_with("WWW-Authenticate:"))
        .expect("a challenge");
    let at = challenge.find("nonce=\"").expect("nonce") + 7;
    let nonce = &challenge[at..at + challenge[at..].find('"').expect("quote")];
    let resp = response_auth(
        Algorithm::Md5,
        &ha1,
        nonce,
        "00000001",
        "beef",
        "REGISTER",
        "sip:example.com",
    );
    let auth = format!(
        "Authorization: Digest username=\"alice\", realm=\"example.com\", nonce=\"{nonce}\", uri=\"sip:example.com\", response=\"{resp}\", algorithm=MD5, qop=auth, nc=00000001, cnonce=\"beef\"\r\n"
    );
    ws.send(Message::text(register(2, &auth)))
        .await
        .expect("send");
    let r = next_sip(&mut ws).await;
    assert!(r.starts_with("SIP/2.0 200"), "{r}");

    // A UDP phone calls alice: the INVITE comes on her wss connection.
    let phone = UdpSocket::bind("127.0.0.1:0").expect("phone");
    phone
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let me = phone.local_addr().expect("addr");
    let invite = format!(
        "INVITE sip:alice@example.com SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKwinv1;rport\r\nMax-Forwards: 70\r\nFrom: <sip:bob@pbx.example>;tag=b1\r\nTo: <sip:alice@example.com>\r\nCall-ID: wss-call-1\r\nCSeq: 1 INVITE\r\nContact: <sip:bob@{me}>\r\nContent-Length: 0\r\n\r\n"
    );
    phone.send_to(invite.as_bytes(), sip).expect("send");
    let req = next_sip(&mut ws).await;
    assert!(
        req.starts_with("INVITE sip:alice@k3j4l5.invalid;transport=ws"),
        "{req}"
    );
    let mut ok = String::from("SIP/2.0 200 OK\r\n");
    for l in req.split("\r\n") {
        let lower = l.to_ascii_lowercase();
        if ["via:", "from:", "call-id:", "cseq:", "record-route:"]
            .iter()
            .any(|p| lower.starts_with(p))
        {
            ok.push_str(l);
            ok.push_str("\r\n");
        } else if lower.starts_with("to:") {
            ok.push_str(&format!("{l};tag=a1\r\n"));
        }
    }
    ok.push_str("Contact: <sip:alice@k3j4l5.invalid;transport=ws>\r\nContent-Length: 0\r\n\r\n");
    ws.send(Message::text(ok)).await.expect("send");
    let mut buf = [0u8; 4096];
    loop {
        let (n, _) = phone.recv_from(&mut buf).expect("the 200 over UDP");
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        if text.starts_with("SIP/2.0 200") {
            assert!(text.contains("branch=z9hG4bKwinv1"), "{text}");
            break;
        }
        assert!(text.starts_with("SIP/2.0 1"), "{text}");
    }
}
