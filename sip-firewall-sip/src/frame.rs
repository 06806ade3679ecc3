//! Stream framing (TCP/TLS, RFC 3261 18.3): cut a byte stream into messages by the empty
//! line and Content-Length, with CRLF keep-alives (RFC 5626 4.4.1) handled on the way.
//!
//! Datagram framing needs no state: one datagram is one message and [`crate::parse::parse`]
//! lets Content-Length decide where its body ends.

use crate::headers::{HeaderName, scalar};
use crate::parse::{Kind, Limits};
use crate::reason::Reason;

/// The double-CRLF keep-alive ping of RFC 5626 4.4.1 (answered with a single CRLF pong).
pub const PING: &[u8] = b"\r\n\r\n";

/// What the framer produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// One whole message: header section, empty line, exactly Content-Length body bytes.
    Message(Vec<u8>),
    /// A double-CRLF keep-alive ping, to be answered with a single CRLF pong.
    Ping,
    /// The single CRLF pong answering our ping ([`StreamFramer::expect_pong`]).
    Pong,
}

/// The stream can no longer be framed; the connection must be closed after answering.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("stream framing: {reason}")]
pub struct FrameError {
    pub reason: Reason,
    pub kind: Kind,
    /// The header section received so far (bounded), to build an answer from.
    pub head: Vec<u8>,
}

/// An incremental stream framer with bounded buffering.
#[derive(Debug)]
pub struct StreamFramer {
    buf: Vec<u8>,
    /// Where the search for the empty line resumes, so a slow sender costs linear time.
    scanned: usize,
    limits: Limits,
    /// We sent a ping: the next CRLF is its pong.
    pong_expected: bool,
}

impl StreamFramer {
    /// A framer enforcing `limits.max_message_bytes` on each message.
    pub fn new(limits: Limits) -> Self {
        StreamFramer {
            buf: Vec::new(),
            scanned: 0,
            limits,
            pong_expected: false,
        }
    }

    /// Append received bytes. Callers read in bounded chunks and drain with [`Self::next`]
    /// after each one, so the buffer stays under the message limit plus one chunk.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// We sent a double-CRLF ping (RFC 5626 4.4.1): the next CRLF before a message is its
    /// pong, reported as [`Event::Pong`] (a lone CRLF is otherwise ignored, RFC 3261 7.5, or
    /// waits as half of a ping).
    pub fn expect_pong(&mut self) {
        self.pong_expected = true;
    }

    /// Bytes buffered and not yet framed.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next event, `Ok(None)` when more bytes are needed.
    pub fn next_event(&mut self) -> Result<Option<Event>, FrameError> {
        // Leading CRLFs: a ping (CRLFCRLF) or a pong / stray CRLF (RFC 3261 7.5 says ignore).
        while self.buf.starts_with(b"\r\n") {
            if self.pong_expected {
                self.pong_expected = false;
                self.consume(2);
                return Ok(Some(Event::Pong));
            }
            if self.buf.starts_with(b"\r\n\r\n") {
                self.consume(4);
                return Ok(Some(Event::Ping));
            }
            if self.buf.len() < 4 && b"\r\n\r\n".starts_with(&self.buf) {
                return Ok(None); // maybe the first half of a ping
            }
            self.consume(2);
        }
        if self.buf.is_empty() {
            return Ok(None);
        }
        let max = self.limits.max_message_bytes;
        let from = self.scanned.saturating_sub(3);
        let Some(end) = find(&self.buf[from..], b"\r\n\r\n").map(|p| p + from) else {
            self.scanned = self.buf.len();
            if self.buf.len() > max {
                return Err(self.error(Reason::MessageTooLarge, max));
            }
            return Ok(None);
        };
        let head_len = end + 4;
        if head_len > max {
            return Err(self.error(Reason::MessageTooLarge, max));
        }
        let body_len = content_length(&self.buf[..end]).map_err(|r| self.error(r, head_len))?;
        let total = head_len + body_len;
        if total > max {
            return Err(self.error(Reason::MessageTooLarge, head_len));
        }
        if self.buf.len() < total {
            return Ok(None);
        }
        let msg = self.buf[..total].to_vec();
        self.consume(total);
        Ok(Some(Event::Message(msg)))
    }

    /// The peer closed its side: an unfinished message left over is an error.
    pub fn finish(&mut self) -> Result<(), FrameError> {
        if self.buf.iter().all(|&b| b == b'\r' || b == b'\n') {
            return Ok(());
        }
        let n = self.buf.len().min(self.limits.max_message_bytes);
        let reason = if find(&self.buf, b"\r\n\r\n").is_some() {
            Reason::BodyTooShort
        } else {
            Reason::UnterminatedHeaders
        };
        Err(self.error(reason, n))
    }

    fn consume(&mut self, n: usize) {
        self.buf.drain(..n.min(self.buf.len()));
        self.scanned = 0;
    }

    fn error(&self, reason: Reason, head: usize) -> FrameError {
        let head = &self.buf[..head.min(self.buf.len())];
        FrameError {
            reason,
            kind: Kind::sniff(head),
            head: head.to_vec(),
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The single Content-Length of a header section (start line included), looked up lexically:
/// the framer must not depend on the rest of the message being well-formed.
fn content_length(head: &[u8]) -> Result<usize, Reason> {
    let mut found = None;
    let mut lines = head.split(|&b| b == b'\n').skip(1).peekable();
    while let Some(line) = lines.next() {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let name = String::from_utf8_lossy(&line[..colon]);
        if HeaderName::parse(name.trim_end_matches([' ', '\t'])) != HeaderName::ContentLength {
            continue;
        }
        let mut value = String::from_utf8_lossy(&line[colon + 1..]).into_owned();
        while let Some(next) =
            lines.next_if(|l| l.first().is_some_and(|&b| b == b' ' || b == b'\t'))
        {
            value.push_str(&String::from_utf8_lossy(next));
        }
        let n = scalar::content_length(value.trim_matches([' ', '\t', '\r']))
            .ok_or(Reason::BadContentLength)?;
        if found.replace(n).is_some() {
            return Err(Reason::DuplicateHeader);
        }
    }
    found.ok_or(Reason::MissingContentLength)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(f: &mut StreamFramer) -> Result<Vec<Event>, FrameError> {
        let mut out = vec![];
        while let Some(e) = f.next_event()? {
            out.push(e);
        }
        Ok(out)
    }

    const M1: &[u8] = b"OPTIONS sip:a@b.com SIP/2.0\r\nl: 3\r\n\r\nabc";
    const M2: &[u8] = b"BYE sip:a@b.com SIP/2.0\r\nContent-Length:\r\n 0\r\n\r\n";

    #[test]
    fn several_per_read_and_keepalives() {
        let mut f = StreamFramer::new(Limits::default());
        let mut all = b"\r\n\r\n".to_vec();
        all.extend_from_slice(M1);
        all.extend_from_slice(b"\r\n");
        all.extend_from_slice(M2);
        f.push(&all);
        let ev = events(&mut f).unwrap();
        assert_eq!(
            ev,
            vec![
                Event::Ping,
                Event::Message(M1.to_vec()),
                Event::Message(M2.to_vec())
            ]
        );
        assert_eq!(f.buffered(), 0);
        assert!(f.finish().is_ok());
    }

    #[test]
    fn split_across_reads() {
        let mut f = StreamFramer::new(Limits::default());
        let mut got = vec![];
        for chunk in M1.chunks(1) {
            f.push(chunk);
            got.extend(events(&mut f).unwrap());
        }
        assert_eq!(got, vec![Event::Message(M1.to_vec())]);
        // A lone CRLF waits: it may be half of a ping, unless we await a pong.
        let mut p = StreamFramer::new(Limits::default());
        p.expect_pong();
        p.push(b"\r\n");
        assert_eq!(events(&mut p).unwrap(), vec![Event::Pong]);
        p.push(b"\r\n");
        assert_eq!(events(&mut p).unwrap(), vec![], "one pong per ping");
        p.push(b"\r\n");
        assert_eq!(events(&mut p).unwrap(), vec![Event::Ping]);
        f.push(b"\r\n");
        assert_eq!(events(&mut f).unwrap(), vec![]);
        f.push(b"\r\n");
        assert_eq!(events(&mut f).unwrap(), vec![Event::Ping]);
    }

    #[test]
    fn errors() {
        let mut f = StreamFramer::new(Limits::default());
        f.push(b"OPTIONS sip:a@b.com SIP/2.0\r\nTo: x\r\n\r\n");
        let e = f.next_event().unwrap_err();
        assert_eq!(e.reason, Reason::MissingContentLength);
        assert!(matches!(e.kind, Kind::Request { .. }), "{:?}", e.kind);

        let mut f = StreamFramer::new(Limits::default());
        f.push(b"OPTIONS sip:a@b.com SIP/2.0\r\nl: 1\r\nl: 1\r\n\r\n");
        assert_eq!(f.next_event().unwrap_err().reason, Reason::DuplicateHeader);

        let mut f = StreamFramer::new(Limits::default());
        f.push(b"OPTIONS sip:a@b.com SIP/2.0\r\nl: 99999\r\n\r\n");
        assert_eq!(f.next_event().unwrap_err().reason, Reason::MessageTooLarge);

        let mut f = StreamFramer::new(Limits::default());
        f.push(b"OPTIONS sip:a@b.com SIP/2.0\r\nX: ");
        for _ in 0..20 {
            f.push(&[b'a'; 1000]);
            if let Err(e) = f.next_event() {
                assert_eq!(e.reason, Reason::MessageTooLarge);
                assert!(e.head.len() <= 16384);
                return;
            }
        }
        panic!("endless header was not cut");
    }

    #[test]
    fn truncated_at_eof() {
        let mut f = StreamFramer::new(Limits::default());
        f.push(b"OPTIONS sip:a@b.com SIP/2.0\r\nl: 9\r\n\r\nabc");
        assert_eq!(f.next_event().unwrap(), None);
        assert_eq!(f.finish().unwrap_err().reason, Reason::BodyTooShort);
    }
}
