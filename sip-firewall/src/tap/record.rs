//! A copy as the daemon streams it to a capture: its layer, its reason, the addresses and
//! ports it travelled between, and its first bytes (base64 in the JSON line); and the
//! comment the capture file gives it.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// Which layer a copy comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Layer {
    /// The gate refused it (the message never reached the message layer).
    Gate,
    /// The message layer (or the proxy through it) answered it itself: the request, and
    /// the answer.
    Answered,
}

/// One copy: a message as it crossed the daemon's socket.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TapRecord {
    /// Wall-clock time, nanoseconds since the epoch.
    pub unix_ns: u64,
    pub layer: Layer,
    /// The gate's reason (`request_rate`, `banned`, `tcp_per_source`...) or the answer's
    /// status (`400 Bad Request`).
    pub reason: String,
    /// `false`: received (refused, or answered); `true`: the local answer we sent.
    pub sent: bool,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    /// Over a stream transport (TCP, TLS, WebSocket) rather than UDP.
    pub stream: bool,
    /// The message's length; `data` holds its first bytes (the snap length).
    pub len: u32,
    #[serde(with = "b64")]
    pub data: Vec<u8>,
}

impl TapRecord {
    /// The packet comment of the capture file: the layer and the reason.
    pub fn comment(&self) -> String {
        let stream = if self.stream {
            " (stream transport, shown as UDP)"
        } else {
            ""
        };
        match (self.layer, self.sent) {
            (Layer::Gate, _) => format!("gate: {}{stream}", self.reason),
            (Layer::Answered, false) => format!("answered: {} (the request){stream}", self.reason),
            (Layer::Answered, true) => format!("answered: {} (our answer){stream}", self.reason),
        }
    }
}

/// Bytes as base64 in the JSON lines.
mod b64 {
    use base64::Engine as _;
    use serde::{Deserialize as _, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(s)
            .map_err(serde::de::Error::custom)
    }
}

/// A line the daemon streams after accepting a capture.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "line", rename_all = "snake_case")]
pub enum TapLine {
    Record(TapRecord),
    /// The last line: copies dropped because this capture's queue was full.
    End {
        dropped: u64,
    },
}
