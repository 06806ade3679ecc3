//! SIP over WebSocket (RFC 7118), for browsers: the upgrade must ask for the `sip`
//! subprotocol (RFC 7118 4) and come from an allowed Origin; each WebSocket message carries
//! one SIP message, judged by the same gate and message layer as every other transport.
//! A connection takes a slot of the shared TCP bounds before its upgrade, the upgrade has a
//! timeout, frames and messages have size limits, and a quiet connection is pinged, then
//! closed after `tcp_idle_timeout` without traffic. Clients register `;transport=ws`
//! contacts that cannot be dialled: requests to them go back on this connection (the
//! flow, registered with the outbound under the peer's address).

use std::{net::SocketAddr, sync::Arc, time::Duration};

use futures_util::{SinkExt as _, StreamExt as _};
use sip_firewall_sip::{Transport, frame::PING};
use tokio::{
    net::TcpListener,
    sync::{mpsc, watch},
    time::{Instant, sleep_until, timeout_at},
};
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{
        Message,
        handshake::server::{ErrorResponse, Request, Response},
        http::{HeaderValue, StatusCode},
        protocol::WebSocketConfig,
    },
};
use tracing::debug;

use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncWrite};

use super::{
    Shared,
    accept::{Accepted, accept_loop, opened},
    tls::LiveTls,
};
use crate::{metrics, seams::Handler, server::config::WsConfig};

/// `[wss]`: SIP over WebSocket over TLS, with the `[tls]` certificate and the `[ws]` rules.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WssConfig {
    /// Addresses to accept TLS, then the WebSocket upgrade, on; empty: none.
    pub listen: Vec<SocketAddr>,
}

/// What every WebSocket connection needs from `[ws]`.
#[derive(Clone, Debug)]
pub(crate) struct WsSettings {
    /// Lower case; empty: any origin.
    origins: Vec<String>,
    config: WebSocketConfig,
    ping_interval: Duration,
    handshake_timeout: Duration,
    /// Ws or Wss, as the listener is (set by [`serve`]): the Via transport the proxy
    /// writes towards this connection's peer and the key of its flow.
    transport: Transport,
}

impl WsSettings {
    /// The transport's name in metrics and logs.
    fn label(t: Transport) -> &'static str {
        if t == Transport::Wss { "wss" } else { "ws" }
    }

    pub(crate) fn new(cfg: &WsConfig, max_message_bytes: usize) -> WsSettings {
        WsSettings {
            origins: cfg.origins.iter().map(|o| o.to_ascii_lowercase()).collect(),
            config: WebSocketConfig::default()
                .max_message_size(Some(max_message_bytes))
                .max_frame_size(Some(cfg.max_frame_bytes)),
            ping_interval: cfg.ping_interval,
            handshake_timeout: cfg.handshake_timeout,
            transport: Transport::Ws,
        }
    }
}

/// Why an upgrade is refused (counted in `sipfw_sip_ws_upgrades_total`).
fn refusal(code: StatusCode, why: &str) -> ErrorResponse {
    let mut r = ErrorResponse::new(Some(why.to_string()));
    *r.status_mut() = code;
    r
}

/// Check the upgrade: the `sip` subprotocol offered (RFC 7118 4: answered with it), an
/// allowed Origin when the list is set. The error type is tungstenite's `Callback`'s.
#[allow(clippy::result_large_err)]
fn check_upgrade(
    settings: &WsSettings,
    req: &Request,
    mut resp: Response,
) -> Result<Response, ErrorResponse> {
    let offers_sip = req
        .headers()
        .get_all("sec-websocket-protocol")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim().eq_ignore_ascii_case("sip"));
    if !offers_sip {
        crate::metrics::ws_upgrade("no_sip_subprotocol");
        return Err(refusal(
            StatusCode::BAD_REQUEST,
            "the sip subprotocol is required",
        ));
    }
    if !settings.origins.is_empty() {
        let origin = req
            .headers()
            .get("origin")
            .and_then(|v| v.to_str().ok())
            .map(|o| o.trim().to_ascii_lowercase());
        if !origin.is_some_and(|o| settings.origins.contains(&o)) {
            crate::metrics::ws_upgrade("origin_refused");
            return Err(refusal(StatusCode::FORBIDDEN, "origin not allowed"));
        }
    }
    resp.headers_mut()
        .insert("sec-websocket-protocol", HeaderValue::from_static("sip"));
    Ok(resp)
}

/// Accept WebSocket connections until shutdown.
#[allow(clippy::result_large_err)] // the upgrade callback's type is tungstenite's
/// With `tls` (wss), the TLS handshake with the live certificate comes first; the TLS
/// handshake and the upgrade together must finish within `handshake_timeout`.
pub(super) async fn serve(
    listener: TcpListener,
    mut settings: WsSettings,
    tls: Option<Arc<LiveTls>>,
    shared: Arc<Shared>,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    // RFC 7118 5.3: WSS is a transport of its own (our Via says it), not WS.
    let transport = if tls.is_some() {
        Transport::Wss
    } else {
        Transport::Ws
    };
    let label = WsSettings::label(transport);
    settings.transport = transport;
    let (owner, rx) = (shared.clone(), shutdown.clone());
    accept_loop(listener, transport, label, owner, shutdown, |a| {
        let (shared, rx, settings) = (shared.clone(), rx.clone(), settings.clone());
        // The certificate in force at accept (a reload changes it for the next ones).
        let acceptor = tls.as_ref().map(|t| t.acceptor());
        tokio::spawn(async move {
            let Accepted { stream, peer, slot } = a;
            let _slot = slot;
            let Ok(local) = stream.local_addr() else {
                return;
            };
            let deadline = Instant::now() + settings.handshake_timeout;
            match acceptor {
                None => upgrade(stream, peer, local, shared, settings, rx, deadline).await,
                Some(acceptor) => match timeout_at(deadline, acceptor.accept(stream)).await {
                    Ok(Ok(s)) => {
                        crate::metrics::tls_handshake("ok");
                        upgrade(s, peer, local, shared, settings, rx, deadline).await;
                    }
                    Ok(Err(e)) => {
                        crate::metrics::tls_handshake("failed");
                        debug!(%peer, "WSS TLS handshake: {e}");
                    }
                    Err(_) => {
                        crate::metrics::tls_handshake("timeout");
                        debug!(%peer, "WSS TLS handshake timed out");
                    }
                },
            }
        });
    })
    .await
}

/// The upgrade (within `deadline`), then the connection until it ends.
#[allow(clippy::result_large_err)] // tungstenite's callback type
async fn upgrade<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    peer: SocketAddr,
    local: SocketAddr,
    shared: Arc<Shared>,
    settings: WsSettings,
    rx: watch::Receiver<bool>,
    deadline: Instant,
) {
    let label = WsSettings::label(settings.transport);
    let s = settings.clone();
    let upgrade = tokio_tungstenite::accept_hdr_async_with_config(
        stream,
        |req: &Request, resp: Response| check_upgrade(&s, req, resp),
        Some(settings.config),
    );
    let upgrade = timeout_at(deadline, upgrade).await;
    let Some(ws) = opened(upgrade, "WebSocket upgrade", peer, metrics::ws_upgrade) else {
        return;
    };
    let (tx, out_rx) = mpsc::channel(super::tcp::TCP_QUEUE);
    shared.outbound.register(peer, settings.transport, tx);
    shared.metrics.tcp_opened();
    crate::metrics::connection_open(label, 1);
    let why = match connection(ws, peer, local, &shared, &settings, rx, out_rx).await {
        Ok(why) => why,
        Err(e) => {
            debug!(%peer, "WebSocket connection: {e}");
            "error"
        }
    };
    shared.outbound.unregister(peer, settings.transport);
    shared.flow(peer, settings.transport, <dyn Handler>::flow_closed);
    shared.metrics.tcp_closed(why);
    crate::metrics::connection_open(label, -1);
}

/// The bytes of a SIP message as a WebSocket message: text when it is UTF-8 (what browser
/// stacks expect), else binary (RFC 7118 5.1 allows both).
fn frame(bytes: Vec<u8>) -> Message {
    match String::from_utf8(bytes) {
        Ok(text) => Message::text(text),
        Err(e) => Message::binary(e.into_bytes()),
    }
}

/// What a connection does next: decided inside its select, acted upon outside it (the
/// shutdown watch's guard must not live across an await).
enum Next {
    Stop,
    Out(Vec<u8>),
    Ping,
    In(Option<Result<Message, tokio_tungstenite::tungstenite::Error>>),
    Idle,
}

async fn connection<S: AsyncRead + AsyncWrite + Unpin>(
    mut ws: WebSocketStream<S>,
    peer: SocketAddr,
    local: SocketAddr,
    shared: &Shared,
    settings: &WsSettings,
    mut shutdown: watch::Receiver<bool>,
    mut outgoing: mpsc::Receiver<Vec<u8>>,
) -> Result<&'static str, tokio_tungstenite::tungstenite::Error> {
    let idle = shared.tcp_idle_timeout;
    let mut deadline = Instant::now() + idle;
    let mut ping_at = Instant::now() + settings.ping_interval;
    // The registrar's keep-alive ping went out: the next CRLF message is its pong.
    let mut pong_expected = false;
    loop {
        let next = tokio::select! {
            _ = shutdown.wait_for(|s| *s) => Next::Stop,
            Some(bytes) = outgoing.recv() => Next::Out(bytes),
            _ = sleep_until(ping_at) => Next::Ping,
            m = timeout_at(deadline, ws.next()) => match m {
                Ok(m) => Next::In(m),
                Err(_) => Next::Idle,
            },
        };
        let m = match next {
            Next::Stop => break,
            Next::Out(bytes) => {
                shared
                    .outbound
                    .capture(local, peer, settings.transport, &bytes);
                pong_expected |= bytes == PING;
                send(&mut ws, frame(bytes), Instant::now() + idle).await?;
                continue;
            }
            Next::Ping => {
                // RFC 7118 defines no keep-alive; a WebSocket ping finds dead peers.
                ping_at = Instant::now() + settings.ping_interval;
                let ping = Message::Ping(Vec::new().into());
                send(&mut ws, ping, Instant::now() + idle).await?;
                continue;
            }
            Next::Idle => {
                debug!(%peer, "WebSocket idle timeout: closing");
                return Ok("idle_timeout");
            }
            Next::In(None) => return Ok("peer"),
            // Oversized frames and messages end here (tungstenite's limits).
            Next::In(Some(Err(e))) => {
                debug!(%peer, "WebSocket: {e}");
                return Ok("framing");
            }
            Next::In(Some(Ok(m))) => m,
        };
        let bytes = match inbound(&m, &mut pong_expected) {
            Inbound::Sip(bytes) => bytes,
            Inbound::KeepAlive { pong } => {
                if keepalive(shared, (peer, local), settings, pong) {
                    deadline = Instant::now() + idle;
                }
                continue;
            }
            Inbound::Ignore => continue,
            Inbound::Closed => return Ok("peer"),
        };
        deadline = Instant::now() + idle;
        ping_at = Instant::now() + settings.ping_interval;
        if let Some(out) = shared.process(bytes, peer, local, settings.transport) {
            send(&mut ws, frame(out.bytes), deadline).await?;
        }
    }
    let _ = timeout_at(Instant::now() + idle, ws.close(None)).await;
    Ok("shutdown")
}

/// What a WebSocket message received is to the connection.
enum Inbound<'m> {
    /// One SIP message (RFC 7118 5: one per WebSocket message, text or binary).
    Sip(&'m [u8]),
    /// A ping or pong: alive (`pong`: the one of our keep-alive ping).
    KeepAlive {
        pong: bool,
    },
    Ignore,
    Closed,
}

/// What `m` is; `pong_expected`: the registrar's keep-alive ping went out, and the next CRLF
/// message is its pong (RFC 5626 4.4.1, carried as one WebSocket message as SIP stacks over
/// WebSocket send it).
fn inbound<'m>(m: &'m Message, pong_expected: &mut bool) -> Inbound<'m> {
    match m {
        Message::Text(t) if *pong_expected && t.as_str() == "\r\n" => {
            *pong_expected = false;
            Inbound::KeepAlive { pong: true }
        }
        Message::Text(t) => Inbound::Sip(t.as_bytes()),
        Message::Binary(b) => Inbound::Sip(b),
        Message::Pong(_) | Message::Ping(_) => Inbound::KeepAlive { pong: false },
        Message::Close(_) => Inbound::Closed,
        Message::Frame(_) => Inbound::Ignore,
    }
}

/// A ping or pong from `peer`, gated like a message: a banned or over-rate source keeps no
/// connection alive with pongs (tungstenite answers pings itself). True: it counts as
/// activity. `pong`: the pong of the registrar's keep-alive ping, told to the handler.
fn keepalive(
    shared: &Shared,
    (peer, local): (SocketAddr, SocketAddr),
    settings: &WsSettings,
    pong: bool,
) -> bool {
    if !shared.admit_keepalive((peer, local), settings.transport, b"\r\n\r\n") {
        return false;
    }
    shared
        .metrics
        .keepalive(WsSettings::label(settings.transport));
    if pong {
        shared.flow(peer, settings.transport, <dyn Handler>::flow_pong);
    }
    true
}

/// Send before the deadline (a peer that never reads must not hold us).
async fn send<S: AsyncRead + AsyncWrite + Unpin>(
    ws: &mut WebSocketStream<S>,
    m: Message,
    deadline: Instant,
) -> Result<(), tokio_tungstenite::tungstenite::Error> {
    match timeout_at(deadline, ws.send(m)).await {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "write timed out").into()),
    }
}
