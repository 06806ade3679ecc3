//! The SIP message layer of sip-firewall: a strict zero-copy parser, stream framing, sanity
//! checks with the RFC 3261 answer codes, and stateless replies.
//!
//! The pipeline for one message is [`inspect`]: [`parse::parse`] (start line, headers, body
//! by Content-Length), then [`sanity::check`]. A refusal carries a [`Reason`], which names
//! the metrics label and, for requests, the status code to answer with.
//!
//! **Decides**: whether bytes are a SIP message this edge accepts (exact grammar, bounded
//! sizes, the sanity checks) and, for a refused request, the answer (RFC 3261 8.2.6, 18.2.2).
//! **Config**: the daemon's `[sip]` limits (`max_message_bytes`, `max_header_bytes`,
//! `max_request_uri_bytes`) as [`Limits`]. **Metrics**: none of its own; the daemon counts
//! every [`Reason`] as `sipfw_sip_rejections_total{reason}` and `sipfw_sip_dropped_total`.
//! The module table is in this crate's README.

pub mod frame;
pub mod headers;
pub mod lex;
pub mod parse;
pub mod reason;
pub mod reply;
pub mod sanity;
pub mod stun;
pub mod uri;

pub use parse::{Kind, Limits, Message, Method, StartLine, Transport};
pub use reason::Reason;

/// Why [`inspect`] refused a message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct Rejection {
    pub reason: Reason,
    /// Request (and whether ACK), response, or not SIP: decides answer or drop.
    pub kind: Kind,
    /// For 420: the option tags for the `Unsupported` header.
    pub unsupported: Option<String>,
}

/// Parse and sanity-check one message. `extensions` are the option tags this proxy supports.
pub fn inspect<'a>(
    buf: &'a [u8],
    limits: &Limits,
    transport: Transport,
    extensions: &[&str],
) -> Result<Message<'a>, Rejection> {
    let msg = parse::parse(buf, limits, transport).map_err(|e| Rejection {
        reason: e.reason,
        kind: e.kind,
        unsupported: None,
    })?;
    sanity::check(&msg, extensions).map_err(|f| Rejection {
        reason: f.reason,
        kind: match msg.start {
            StartLine::Request { method, .. } => Kind::Request {
                method: Method::of(method.as_bytes()),
            },
            StartLine::Response { code, .. } => Kind::Response { code: Some(code) },
        },
        unsupported: f.unsupported,
    })?;
    Ok(msg)
}
