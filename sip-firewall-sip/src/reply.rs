//! Stateless responses to requests (RFC 3261 8.2.6), and where to send them
//! (RFC 3261 18.2.2 with RFC 3581 rport).

use std::borrow::Cow;
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

use crate::headers::{HeaderName, name_addr, via};
use crate::parse::Message;

/// Most Via values copied into one answer: enough for any real path, and it bounds what a
/// spoofed request can make us send (no amplification).
const MAX_VIAS: usize = 16;

/// Longest header value copied into an answer; longer ones (only in requests refused for
/// size) are left out rather than echoed back.
const MAX_VALUE: usize = 4096;

/// The request headers a response copies (RFC 3261 8.2.6.2).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplyContext<'a> {
    /// Via header values in order (each may hold several via-parms).
    pub vias: Vec<Cow<'a, str>>,
    pub from: Option<Cow<'a, str>>,
    pub to: Option<Cow<'a, str>>,
    pub call_id: Option<Cow<'a, str>>,
    pub cseq: Option<Cow<'a, str>>,
}

impl<'a> ReplyContext<'a> {
    /// Take the headers from a parsed request.
    pub fn from_message(msg: &'a Message<'a>) -> Self {
        let mut ctx = ReplyContext::default();
        for h in &msg.headers {
            ctx.take(h.name, Cow::Borrowed(h.value.as_ref()));
        }
        ctx
    }

    /// Dig the headers out of a request the parser refused, tolerantly: the answer to a
    /// malformed request still needs its Via, From, To, Call-ID and CSeq (RFC 4475 3.3.1).
    pub fn salvage(buf: &'a [u8]) -> Self {
        let mut ctx = ReplyContext::default();
        let head = match buf.windows(4).position(|w| w == b"\r\n\r\n") {
            Some(p) => &buf[..p],
            None => buf,
        };
        let mut lines = head.split(|&b| b == b'\n').skip(1).peekable();
        while let Some(line) = lines.next() {
            let mut raw = line.strip_suffix(b"\r").unwrap_or(line).to_vec();
            while let Some(next) =
                lines.next_if(|l| l.first().is_some_and(|&b| b == b' ' || b == b'\t'))
            {
                raw.push(b' ');
                raw.extend_from_slice(next.strip_suffix(b"\r").unwrap_or(next));
            }
            let Ok(text) = String::from_utf8(raw) else {
                continue;
            };
            let Some((name, value)) = text.split_once(':') else {
                continue;
            };
            let name = HeaderName::parse(name.trim());
            ctx.take(name, Cow::Owned(value.trim().to_string()));
        }
        ctx
    }

    fn take(&mut self, name: HeaderName<'_>, value: Cow<'a, str>) {
        // Never copy a value that could break the answer's own framing.
        if value.len() > MAX_VALUE || value.contains(['\r', '\n']) {
            return;
        }
        match name {
            HeaderName::Via if self.vias.len() < MAX_VIAS => self.vias.push(value),
            HeaderName::From => set_once(&mut self.from, value),
            HeaderName::To => set_once(&mut self.to, value),
            HeaderName::CallId => set_once(&mut self.call_id, value),
            HeaderName::CSeq => set_once(&mut self.cseq, value),
            _ => {}
        }
    }
}

fn set_once<'a>(slot: &mut Option<Cow<'a, str>>, value: Cow<'a, str>) {
    if slot.is_none() {
        *slot = Some(value);
    }
}

/// An answer to build.
#[derive(Clone, Debug)]
pub struct Reply<'r> {
    pub code: u16,
    pub phrase: &'r str,
    /// Extra header lines, without CRLF (e.g. `Unsupported: foo`).
    pub extra: &'r [String],
    /// The `Server` header value; empty: no Server header.
    pub server: &'r str,
}

/// Where a UDP answer goes (RFC 3261 18.2.2, RFC 3581): to the source address (that is the
/// `received` address whenever sent-by differs), at the source port when the top Via asks
/// for `rport` or `force_rport` is set, else at the sent-by port (5060 by default). `maddr`
/// is never followed: a stateless edge must not send where a packet merely asks it to.
pub fn udp_destination(
    ctx: &ReplyContext<'_>,
    source: SocketAddr,
    force_rport: bool,
) -> SocketAddr {
    let top = ctx
        .vias
        .first()
        .and_then(|v| via::parse_list(v).next())
        .and_then(Result::ok);
    match top {
        Some(v) if v.rport.is_none() && !force_rport => {
            SocketAddr::new(source.ip(), v.port.unwrap_or(5060))
        }
        _ => source,
    }
}

/// Serialize the answer to the request `ctx` came from, received from `source`.
pub fn build(ctx: &ReplyContext<'_>, reply: &Reply<'_>, source: SocketAddr) -> Vec<u8> {
    let mut out = String::with_capacity(512);
    let _ = write!(out, "SIP/2.0 {} {}\r\n", reply.code, reply.phrase);
    for (i, v) in ctx.vias.iter().enumerate() {
        let value = if i == 0 {
            top_via(v, source)
        } else {
            Cow::Borrowed(v.as_ref())
        };
        let _ = write!(out, "Via: {value}\r\n");
    }
    if let Some(f) = &ctx.from {
        let _ = write!(out, "From: {f}\r\n");
    }
    if let Some(t) = &ctx.to {
        let _ = write!(out, "To: {t}");
        if reply.code > 100 && !has_tag(t) {
            let _ = write!(out, ";tag={:016x}", to_tag(ctx));
        }
        out.push_str("\r\n");
    }
    if let Some(c) = &ctx.call_id {
        let _ = write!(out, "Call-ID: {c}\r\n");
    }
    if let Some(c) = &ctx.cseq {
        let _ = write!(out, "CSeq: {c}\r\n");
    }
    for e in reply.extra {
        let _ = write!(out, "{e}\r\n");
    }
    // An empty `server` leaves the header out (RFC 3261 20.35: optional): an answer to an
    // unverified source should be no larger than it must be.
    if !reply.server.is_empty() {
        let _ = write!(out, "Server: {}\r\n", reply.server);
    }
    out.push_str("Content-Length: 0\r\n\r\n");
    out.into_bytes()
}

/// The top Via with `received` added when sent-by is not the source address (RFC 3261
/// 18.2.1) and an empty `rport` filled in (RFC 3581 4). Copied as is when unparseable.
fn top_via<'v>(value: &'v str, source: SocketAddr) -> Cow<'v, str> {
    let Some(Ok(v)) = via::parse_list(value).next() else {
        return Cow::Borrowed(value);
    };
    // Where the first via-parm ends: the first comma outside quotes.
    let mut quoted = false;
    let end = value
        .char_indices()
        .find(|&(_, c)| {
            if c == '"' {
                quoted = !quoted;
            }
            c == ',' && !quoted
        })
        .map_or(value.len(), |(i, _)| i);
    let (first, rest) = value.split_at(end);
    let mut out = String::with_capacity(value.len() + 48);
    let mut params = first.trim_end().split(';');
    out.push_str(params.next().unwrap_or(""));
    for p in params {
        out.push(';');
        if v.rport == Some(None) && p.trim().eq_ignore_ascii_case("rport") {
            let _ = write!(out, "rport={}", source.port());
        } else {
            out.push_str(p);
        }
    }
    let ip = source.ip();
    if v.received.is_none() && v.host.ip() != Some(ip) {
        match ip {
            IpAddr::V4(a) => {
                let _ = write!(out, ";received={a}");
            }
            IpAddr::V6(a) => {
                let _ = write!(out, ";received=[{a}]");
            }
        }
    }
    out.push_str(rest);
    Cow::Owned(out)
}

fn has_tag(to: &str) -> bool {
    match name_addr::parse_single(to) {
        Ok(a) => a.tag.is_some(),
        // Unparseable To: guess, so as not to add a second tag.
        Err(_) => to.to_ascii_lowercase().contains("tag"),
    }
}

/// A To-tag that is the same for retransmissions of one request, as a stateless UAS must
/// give (RFC 3261 8.2.7, 16.11): FNV-1a over Call-ID, CSeq and the top Via.
fn to_tag(ctx: &ReplyContext<'_>) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let parts = [
        ctx.call_id.as_deref(),
        ctx.cseq.as_deref(),
        ctx.vias.first().map(|v| v.as_ref()),
    ];
    for p in parts.into_iter().flatten() {
        for b in p.bytes().chain([0]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::{Limits, Transport, parse};

    const REQ: &[u8] = b"OPTIONS sip:b@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bK1;rport, SIP/2.0/UDP h2;branch=z9hG4bK0\r\nv: SIP/2.0/UDP h3;branch=z9hG4bKx\r\nf: <sip:a@example.com>;tag=1\r\nt: <sip:b@example.com>\r\ni: abc\r\nCSeq: 1 OPTIONS\r\nl: 0\r\n\r\n";

    fn text(v: Vec<u8>) -> String {
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn copies_and_fills_via() {
        let m = parse(REQ, &Limits::default(), Transport::Datagram).unwrap();
        let ctx = ReplyContext::from_message(&m);
        let src: SocketAddr = "198.51.100.7:40000".parse().unwrap();
        let r = Reply {
            code: 403,
            phrase: "No route",
            extra: &[],
            server: "t",
        };
        let out = text(build(&ctx, &r, src));
        assert!(out.starts_with("SIP/2.0 403 No route\r\nVia: SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bK1;rport=40000;received=198.51.100.7, SIP/2.0/UDP h2;branch=z9hG4bK0\r\nVia: SIP/2.0/UDP h3;branch=z9hG4bKx\r\n"), "{out}");
        assert!(out.contains("\r\nTo: <sip:b@example.com>;tag="), "{out}");
        assert!(
            out.contains("\r\nCall-ID: abc\r\nCSeq: 1 OPTIONS\r\n"),
            "{out}"
        );
        assert!(out.ends_with("Content-Length: 0\r\n\r\n"));
        // Retransmissions get the same tag.
        assert_eq!(out, text(build(&ctx, &r, src)));
        assert_eq!(udp_destination(&ctx, src, false), src);
    }

    #[test]
    fn destination_without_rport() {
        let req = b"OPTIONS sip:b@x.com SIP/2.0\r\nVia: SIP/2.0/UDP host.example.com:5080;branch=z9hG4bK1\r\n\r\n";
        let ctx = ReplyContext::salvage(req);
        let src: SocketAddr = "192.0.2.9:41000".parse().unwrap();
        assert_eq!(
            udp_destination(&ctx, src, false),
            "192.0.2.9:5080".parse().unwrap()
        );
        assert_eq!(udp_destination(&ctx, src, true), src);
    }

    #[test]
    fn salvage_malformed() {
        let req = b"INVITE <sip:x> SIP/2.0\r\nVia: SIP/2.0/UDP h;;,;,,\r\nTo: \"unbalanced <sip:a@b>\r\nCSeq: 8\r\n INVITE\r\nBad\rHeader: x\r\n\r\nbody";
        let ctx = ReplyContext::salvage(req);
        assert_eq!(ctx.vias, vec!["SIP/2.0/UDP h;;,;,,"]);
        assert_eq!(ctx.cseq.as_deref(), Some("8  INVITE"));
        let r = Reply {
            code: 400,
            phrase: "Bad",
            extra: &[],
            server: "t",
        };
        let out = text(build(&ctx, &r, "192.0.2.1:5060".parse().unwrap()));
        assert!(out.contains("Via: SIP/2.0/UDP h;;,;,,\r\n"), "{out}");
        assert_eq!(out.matches("\r\n").count(), 7, "{out}");
    }
}
