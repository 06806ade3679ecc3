//! WebSocket connections to the edge (RFC 7118): the upgrade with a subprotocol and an
//! Origin, over TCP (ws) or TLS (wss).

use std::{net::SocketAddr, time::Duration};

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::{
    WebSocketStream, client_async,
    tungstenite::{client::IntoClientRequest as _, http::HeaderValue},
};

/// The upgrade on `stream` to `url`, offering `protocol` from `origin`; the server must
/// answer with the `sip` subprotocol (RFC 7118 4).
pub async fn upgrade<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    url: &str,
    protocol: Option<&str>,
    origin: &str,
) -> Result<WebSocketStream<S>, String> {
    let mut req = url.into_client_request().expect("request");
    if let Some(p) = protocol {
        req.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_str(p).expect("p"),
        );
    }
    req.headers_mut()
        .insert("Origin", HeaderValue::from_str(origin).expect("origin"));
    match tokio::time::timeout(Duration::from_secs(10), client_async(req, stream)).await {
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

/// A ws connection to `addr`.
pub async fn ws(
    addr: SocketAddr,
    protocol: Option<&str>,
    origin: &str,
) -> Result<WebSocketStream<tokio::net::TcpStream>, String> {
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    upgrade(tcp, &format!("ws://{addr}/"), protocol, origin).await
}

/// A wss connection to `addr`, trusting `ca_pem`.
pub async fn wss(
    addr: SocketAddr,
    ca_pem: &str,
    protocol: Option<&str>,
    origin: &str,
) -> Result<WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>, String> {
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let tls = super::tls::connector(ca_pem, None)
        .connect(ServerName::IpAddress(addr.ip().into()), tcp)
        .await
        .map_err(|e| format!("TLS: {e}"))?;
    upgrade(tls, &format!("wss://{addr}/"), protocol, origin).await
}
