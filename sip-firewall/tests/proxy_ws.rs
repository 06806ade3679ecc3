//! SIP over WebSocket (RFC 7118), over ws and wss: a browser-like client
//! (tokio-tungstenite) upgrades with the `sip` subprotocol from an allowed Origin,
//! registers with digest authentication, is called from a UDP phone through the edge (on
//! its own connection: its `;transport=ws` contact cannot be dialled) and calls that phone,
//! each a full dialog (the sequences of `sip_firewall_tests::ua::calls`). Our Via says WS or WSS as the
//! client's connection is (RFC 7118 5.3) and names that listener. An upgrade without the
//! `sip` subprotocol, with another one, or from another Origin is refused, on ws and wss.

use std::{
    net::{SocketAddr, TcpStream},
    time::{Duration, Instant},
};

use sip_firewall_tests::{
    daemon::TempDir,
    ua::{
        calls::{self, Client, Edge},
        tls::{ca, leaf},
        wire::Wire,
        ws::{ws, wss},
    },
};

mod common;

use common::free_port;

const ORIGIN: &str = "https://phone.example.com";

/// The edge with a ws and a wss listener side by side (so that a wss connection cannot
/// pass for the ws listener), alice's account, and the test CA of its certificate.
struct WsEdge {
    daemon: common::Daemon,
    ws: SocketAddr,
    wss: SocketAddr,
    ca_pem: String,
    _certs: TempDir,
}

fn start(tag: &str) -> WsEdge {
    let certs = TempDir::new(tag);
    // A CA and a certificate for 127.0.0.1, made now.
    let (ca_pem, issuer) = ca("sip-firewall test CA");
    let (leaf_pem, key_pem) = leaf("127.0.0.1", &issuer);
    let (cert, key) = (certs.path.join("cert.pem"), certs.path.join("key.pem"));
    std::fs::write(&cert, leaf_pem).expect("cert");
    std::fs::write(&key, key_pem).expect("key");
    let ws: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let wss: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let config = format!(
        "{}[tls]\ncertificate = \"{}\"\nprivate_key = \"{}\"\n\
         [ws]\nlisten = [\"{ws}\"]\norigins = [\"{ORIGIN}\"]\n\
         [wss]\nlisten = [\"{wss}\"]\n",
        calls::alice_config(),
        cert.display(),
        key.display(),
    );
    let daemon = common::start(tag, &config, Some("warn"));
    let t0 = Instant::now();
    while TcpStream::connect(ws).is_err() || TcpStream::connect(wss).is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "WebSocket listeners did not come up"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    WsEdge {
        daemon,
        ws,
        wss,
        ca_pem,
        _certs: certs,
    }
}

/// RFC 7118 4 and the `[ws] origins` list, on ws and on wss alike: no subprotocol, a
/// subprotocol other than `sip`, and another Origin are refused (the last with 403); the
/// allowed Origin with `sip` is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_origin_or_subprotocol_is_refused_on_ws_and_wss() {
    let e = start("ws-refused");
    let evil = "https://evil.example";
    for (label, refused) in [
        ("no subprotocol", ws(e.ws, None, ORIGIN).await.err()),
        ("chat", ws(e.ws, Some("chat"), ORIGIN).await.err()),
        ("origin", ws(e.ws, Some("sip"), evil).await.err()),
        (
            "wss no subprotocol",
            wss(e.wss, &e.ca_pem, None, ORIGIN).await.err(),
        ),
        (
            "wss chat",
            wss(e.wss, &e.ca_pem, Some("chat"), ORIGIN).await.err(),
        ),
        (
            "wss origin",
            wss(e.wss, &e.ca_pem, Some("sip"), evil).await.err(),
        ),
    ] {
        let why = refused.unwrap_or_else(|| panic!("{label}: the upgrade was accepted"));
        if label.ends_with("origin") {
            assert!(why.contains("403"), "{label}: {why}");
        }
    }
    assert!(ws(e.ws, Some("sip"), ORIGIN).await.is_ok());
    assert!(wss(e.wss, &e.ca_pem, Some("sip"), ORIGIN).await.is_ok());
    // Counted by the edge (the two served ones once their upgrade is through).
    let t0 = Instant::now();
    loop {
        let m = common::scrape_opt(e.daemon.metrics).expect("metrics");
        let got: Vec<Option<f64>> = ["no_sip_subprotocol", "origin_refused", "ok"]
            .iter()
            .map(|r| {
                m.get(&format!("sipfw_sip_ws_upgrades_total{{result=\"{r}\"}}"))
                    .copied()
            })
            .collect();
        if got == [Some(4.0), Some(2.0), Some(2.0)] {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "{got:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Over plain ws: register, be called from the UDP phone (the client hangs up), call the
/// phone (the phone hangs up). Our Via towards the client is `WS` with the ws listener.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registers_over_websocket_is_called_from_udp_and_calls_it() {
    let e = start("ws-calls");
    let conn = ws(e.ws, Some("sip"), ORIGIN).await.expect("the upgrade");
    calls_over(&e, conn, "WS", e.ws, "df7jal23ls0d.invalid").await;
}

/// Over wss: the same, and our Via towards the client says `WSS` (RFC 7118 5.3) with the
/// wss listener, not the ws one; the Record-Route on its side is
/// `<sip:wss-listener;transport=ws;lr>` (5.2: `ws` for both, as in its 8.2 example).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registers_over_secure_websocket_is_called_from_udp_and_calls_it() {
    let e = start("wss-calls");
    let conn = wss(e.wss, &e.ca_pem, Some("sip"), ORIGIN)
        .await
        .expect("the upgrade");
    calls_over(&e, conn, "WSS", e.wss, "k3j4l5.invalid").await;
}

/// alice on `conn` to `listener` (her Via transport `via`, her host `host`, a
/// `;transport=ws` contact) registers, is called from the UDP phone and calls it.
async fn calls_over<W: Wire>(
    e: &WsEdge,
    conn: W,
    via: &'static str,
    listener: SocketAddr,
    host: &str,
) {
    let contact = format!("sip:alice@{host};transport=ws");
    let mut client = Client::new(conn, via, host.into(), contact);
    let edge = Edge {
        sip: e.daemon.sip,
        listener,
        via,
        rr_transport: "ws",
    };
    let tag = via.to_ascii_lowercase();
    calls::register_called_and_calling(&mut client, &edge, &tag).await;
}
