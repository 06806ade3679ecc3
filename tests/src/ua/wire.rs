//! The stream connectors, async: SIP text over a TCP or TLS byte stream (framed by
//! Content-Length, RFC 3261 18.3) or over a WebSocket (a message a frame, RFC 7118).

use std::time::Duration;

use futures_util::{SinkExt, StreamExt as _};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio_tungstenite::{WebSocketStream, tungstenite::Message};

use super::msg::header;

/// How long any one message may take to arrive.
pub const WAIT: Duration = Duration::from_secs(10);

/// Where SIP text goes to and comes from.
#[allow(async_fn_in_trait)]
pub trait Wire {
    async fn send(&mut self, text: &str);
    /// The next SIP message; `None` when the connection ended or nothing came in time.
    /// The edge's keep-alive pings met on the way go unanswered.
    async fn recv(&mut self) -> Option<String>;
    /// Wait for the edge's double-CRLF keep-alive ping and answer it with the single CRLF
    /// pong (RFC 5626 4.4.1); false when something else, or nothing, came in time.
    async fn pong(&mut self) -> bool;
}

/// A byte stream (TCP, TLS) carrying SIP framed by Content-Length.
pub struct Stream<S>(pub S);

impl<S: AsyncRead + AsyncWrite + Unpin> Wire for Stream<S> {
    async fn send(&mut self, text: &str) {
        self.0.write_all(text.as_bytes()).await.expect("send");
        self.0.flush().await.expect("flush");
    }

    async fn recv(&mut self) -> Option<String> {
        read_message(&mut self.0).await
    }

    async fn pong(&mut self) -> bool {
        let mut ping = [0u8; 4];
        match tokio::time::timeout(WAIT, self.0.read_exact(&mut ping)).await {
            Ok(Ok(_)) if &ping == b"\r\n\r\n" => {
                self.send("\r\n").await;
                true
            }
            _ => false,
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Wire for WebSocketStream<S> {
    async fn send(&mut self, text: &str) {
        SinkExt::send(self, Message::text(text.to_string()))
            .await
            .expect("send");
    }

    async fn recv(&mut self) -> Option<String> {
        loop {
            match tokio::time::timeout(WAIT, self.next()).await {
                // The edge's keep-alive ping, as its own message.
                Ok(Some(Ok(Message::Text(t)))) if t.as_str() == "\r\n\r\n" => continue,
                Ok(Some(Ok(Message::Text(t)))) => return Some(t.to_string()),
                Ok(Some(Ok(Message::Binary(b)))) => {
                    return Some(String::from_utf8_lossy(&b).into_owned());
                }
                Ok(Some(Ok(Message::Close(_)))) | Ok(Some(Err(_))) | Ok(None) | Err(_) => {
                    return None;
                }
                // Pings (answered by tungstenite), pongs.
                Ok(Some(Ok(_))) => continue,
            }
        }
    }

    async fn pong(&mut self) -> bool {
        loop {
            match tokio::time::timeout(WAIT, self.next()).await {
                Ok(Some(Ok(Message::Text(t)))) if t.as_str() == "\r\n\r\n" => {
                    Wire::send(self, "\r\n").await;
                    return true;
                }
                // WebSocket pings (answered by tungstenite) and pongs.
                Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
                _ => return false,
            }
        }
    }
}

/// Read one SIP message (headers and Content-Length body) from a byte stream; `None` at
/// EOF, on an error or after [`WAIT`] without a byte.
pub async fn read_message<S: AsyncRead + Unpin>(s: &mut S) -> Option<String> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        match tokio::time::timeout(WAIT, s.read(&mut byte)).await {
            Ok(Ok(1)) => buf.push(byte[0]),
            _ => return None,
        }
        // Keep-alive pongs and stray CRLFs between messages.
        if buf == b"\r\n" {
            buf.clear();
        }
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    let len = header(&text, "Content-Length")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).await.ok()?;
    Some(text + &String::from_utf8_lossy(&body))
}
