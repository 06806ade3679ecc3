//! The message parser: start line, header lines (folds, compact names), and the body as
//! Content-Length delimits it. Zero-copy except for folded header values.

use std::borrow::Cow;

use crate::headers::{Header, HeaderName, scalar};
use crate::lex::{is_token, is_token_str, is_ws};
use crate::reason::Reason;

/// The searcher for CRLFCRLF, built once.
static EMPTY_LINE: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
    std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"\r\n\r\n"));

/// Size limits, after Kamailio's defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Whole message, headers and body.
    pub max_message_bytes: usize,
    /// One header field including its folded continuation lines.
    pub max_header_bytes: usize,
    /// The Request-URI.
    pub max_request_uri_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_bytes: 16384,
            max_header_bytes: 2048,
            max_request_uri_bytes: 512,
        }
    }
}

/// How the bytes arrived: decides what a missing Content-Length means (RFC 3261 18.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    /// UDP: one message per datagram; without Content-Length the body runs to the end.
    Datagram,
    /// TCP: Content-Length is mandatory (the framer already cut the message).
    Stream,
    /// TLS over TCP (RFC 3261 26.2): framed like TCP; a distinct transport for Via,
    /// Record-Route and the connections we open (RFC 5630).
    Tls,
    /// WebSocket (RFC 7118): one SIP message per WebSocket message, which frames it (so,
    /// as for a datagram, a missing Content-Length means the body runs to the end).
    Ws,
    /// WebSocket over TLS (RFC 7118 5.3: the Via transport `WSS`), framed like [`Ws`];
    /// a distinct transport so that our Via says `WSS` and the flow is found again.
    ///
    /// [`Ws`]: Transport::Ws
    Wss,
}

impl Transport {
    /// Whether messages arrive on a reliable byte stream (TCP or TLS) cut by a framer.
    pub fn is_stream(self) -> bool {
        matches!(self, Transport::Stream | Transport::Tls)
    }

    /// Whether the transport is reliable (no retransmissions, RFC 3261 17): all but UDP.
    pub fn is_reliable(self) -> bool {
        !matches!(self, Transport::Datagram)
    }
}

/// What the first line says the message is, known even when the rest fails to parse: it
/// decides between answering (requests other than ACK) and dropping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A request, with its method as a bounded label (an ACK is never answered).
    Request { method: Method },
    /// A response, with its status code when the status line has three digits there.
    Response { code: Option<u16> },
    /// Not SIP.
    Unknown,
}

/// A request's method as a bounded label: the methods of RFC 3261 and its extensions by
/// name, every other one `Other`, so that a peer cannot grow a metric's label set (RFC 4475
/// 3.1.1.2 has a method of 44 characters).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Invite,
    Ack,
    Bye,
    Cancel,
    Options,
    Register,
    Prack,
    Subscribe,
    Notify,
    Publish,
    Info,
    Refer,
    Message,
    Update,
    Other,
}

impl Method {
    const ALL: [(Method, &'static str); 14] = [
        (Method::Invite, "INVITE"),
        (Method::Ack, "ACK"),
        (Method::Bye, "BYE"),
        (Method::Cancel, "CANCEL"),
        (Method::Options, "OPTIONS"),
        (Method::Register, "REGISTER"),
        (Method::Prack, "PRACK"),
        (Method::Subscribe, "SUBSCRIBE"),
        (Method::Notify, "NOTIFY"),
        (Method::Publish, "PUBLISH"),
        (Method::Info, "INFO"),
        (Method::Refer, "REFER"),
        (Method::Message, "MESSAGE"),
        (Method::Update, "UPDATE"),
    ];

    /// The label of a method token (methods are case-sensitive, RFC 3261 7.1).
    pub fn of(token: &[u8]) -> Method {
        Method::ALL
            .iter()
            .find(|(_, name)| name.as_bytes() == token)
            .map_or(Method::Other, |(m, _)| *m)
    }

    /// The method's name, or `other`.
    pub fn as_str(self) -> &'static str {
        Method::ALL
            .iter()
            .find(|(m, _)| *m == self)
            .map_or("other", |(_, name)| name)
    }
}

impl Kind {
    /// Classify from the first bytes: a status line starts with `SIP/`; a request line starts
    /// with a method token followed by SP.
    pub fn sniff(buf: &[u8]) -> Kind {
        if buf.len() >= 4 && buf[..4].eq_ignore_ascii_case(b"SIP/") {
            let code = buf
                .get(8..11)
                .filter(|c| buf.get(7) == Some(&b' ') && c.iter().all(u8::is_ascii_digit))
                .and_then(|c| std::str::from_utf8(c).ok()?.parse().ok());
            return Kind::Response { code };
        }
        let n = buf.iter().take_while(|&&b| is_token(b)).count();
        if n == 0 || buf.get(n) != Some(&b' ') {
            return Kind::Unknown;
        }
        // A complete first line must end in a SIP version, however malformed the rest: an
        // HTTP probe ("GET / HTTP/1.1") is not a SIP request and gets no SIP answer.
        if let Some(lf) = memchr::memchr(b'\n', buf) {
            let line = buf[..lf].trim_ascii_end();
            let version = line.rsplit(|&b| b == b' ').next().unwrap_or(line);
            if !is_sip_version(version) {
                return Kind::Unknown;
            }
        }
        Kind::Request {
            method: Method::of(&buf[..n]),
        }
    }
}

/// A message the parser refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct ParseError {
    pub reason: Reason,
    pub kind: Kind,
}

/// The first line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartLine<'a> {
    Request { method: &'a str, uri: &'a str },
    Response { code: u16, reason: &'a str },
}

/// A parsed message borrowing from the input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message<'a> {
    pub start: StartLine<'a>,
    pub headers: Vec<Header<'a>>,
    /// The body, exactly Content-Length bytes when the header is present.
    pub body: &'a [u8],
}

impl<'a> Message<'a> {
    /// The request method, for requests.
    pub fn method(&self) -> Option<&'a str> {
        match self.start {
            StartLine::Request { method, .. } => Some(method),
            StartLine::Response { .. } => None,
        }
    }

    /// Whether this is a request.
    pub fn is_request(&self) -> bool {
        matches!(self.start, StartLine::Request { .. })
    }

    /// All headers with this name, in order.
    pub fn all<'s>(&'s self, name: HeaderName<'s>) -> impl Iterator<Item = &'s str> + 's {
        self.headers
            .iter()
            .filter(move |h| h.name == name)
            .map(|h| h.value.as_ref())
    }

    /// The first header with this name.
    pub fn get<'s>(&'s self, name: HeaderName<'s>) -> Option<&'s str> {
        self.all(name).next()
    }
}

/// Parse one message. For `Transport::Datagram` bytes after Content-Length are discarded
/// (RFC 4475 3.1.1.8); on both transports fewer bytes than announced are an error.
pub fn parse<'a>(
    buf: &'a [u8],
    limits: &Limits,
    transport: Transport,
) -> Result<Message<'a>, ParseError> {
    let kind = Kind::sniff(buf);
    let err = |reason| ParseError { reason, kind };
    if kind == Kind::Unknown {
        return Err(err(Reason::NotSip));
    }
    if buf.len() > limits.max_message_bytes {
        return Err(err(Reason::MessageTooLarge));
    }
    let line_end = find_crlf(buf, 0).ok_or(err(Reason::UnterminatedHeaders))?;
    let first = std::str::from_utf8(&buf[..line_end]).map_err(|_| {
        err(match kind {
            Kind::Response { .. } => Reason::BadStatusLine,
            _ => Reason::BadRequestLine,
        })
    })?;
    let start = match kind {
        Kind::Response { .. } => parse_status_line(first).map_err(err)?,
        _ => parse_request_line(first, limits).map_err(err)?,
    };

    // The empty line, then the header lines between it and the start line, checked as
    // UTF-8 in one pass (header values are TEXT-UTF8; names and the rest are ASCII).
    let empty = EMPTY_LINE
        .find(&buf[line_end..])
        .map(|p| line_end + p + 2)
        .ok_or(err(Reason::UnterminatedHeaders))?;
    let body_start = empty + 2;
    let head = std::str::from_utf8(&buf[..empty]).map_err(|_| err(Reason::BadHeaderLine))?;
    let hb = head.as_bytes();
    let mut headers = Vec::with_capacity(16);
    let mut pos = line_end + 2;
    while pos < empty {
        let end = find_crlf(hb, pos).ok_or(err(Reason::BadHeaderLine))?;
        // The header ends where a line no longer starts with whitespace (a fold).
        let mut last = end;
        while matches!(hb.get(last + 2), Some(b' ' | b'\t')) {
            last = find_crlf(hb, last + 2).ok_or(err(Reason::BadHeaderLine))?;
        }
        if last - pos > limits.max_header_bytes {
            return Err(err(Reason::HeaderTooLarge));
        }
        let raw = head.get(pos..last).ok_or(err(Reason::BadHeaderLine))?;
        headers.push(parse_header(raw).ok_or(err(Reason::BadHeaderLine))?);
        pos = last + 2;
    }

    let rest = &buf[body_start..];
    let mut lengths = headers
        .iter()
        .filter(|h| h.name == HeaderName::ContentLength);
    let body = match (lengths.next(), lengths.next()) {
        (Some(_), Some(_)) => return Err(err(Reason::DuplicateHeader)),
        (Some(h), None) => {
            let n = scalar::content_length(&h.value).ok_or(err(Reason::BadContentLength))?;
            let body = rest.get(..n).ok_or(err(Reason::BodyTooShort))?;
            if transport.is_stream() && rest.len() != n {
                // The framer cut exactly; anything else is a framing bug, not a peer's fault.
                return Err(err(Reason::BadContentLength));
            }
            body
        }
        (None, _) => match transport {
            Transport::Datagram | Transport::Ws | Transport::Wss => rest,
            Transport::Stream | Transport::Tls => return Err(err(Reason::MissingContentLength)),
        },
    };
    Ok(Message {
        start,
        headers,
        body,
    })
}

/// Position of the next CRLF at or after `from`. A bare LF or CR is not a line end here, so
/// it stays inside the line and fails the character checks.
fn find_crlf(buf: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while let Some(off) = memchr::memchr(b'\n', buf.get(i..)?) {
        let lf = i + off;
        if lf > from && buf[lf - 1] == b'\r' {
            return Some(lf - 1);
        }
        i = lf + 1;
    }
    None
}

/// `Method SP Request-URI SP SIP-Version`: exactly single spaces (RFC 4475 3.1.2.8-3.1.2.10).
fn parse_request_line<'a>(line: &'a str, limits: &Limits) -> Result<StartLine<'a>, Reason> {
    let mut parts = line.split(' ');
    let (Some(method), Some(uri), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Reason::BadRequestLine);
    };
    if uri.len() > limits.max_request_uri_bytes {
        return Err(Reason::RequestUriTooLong);
    }
    if !is_token_str(method) || uri.is_empty() {
        return Err(Reason::BadRequestLine);
    }
    check_version(version)?;
    Ok(StartLine::Request { method, uri })
}

/// `SIP-Version SP Status-Code SP Reason-Phrase`, Status-Code three digits 100-699.
fn parse_status_line(line: &str) -> Result<StartLine<'_>, Reason> {
    let (version, rest) = line.split_once(' ').ok_or(Reason::BadStatusLine)?;
    let (code, reason) = rest.split_once(' ').ok_or(Reason::BadStatusLine)?;
    match check_version(version) {
        Err(Reason::BadVersion) => return Err(Reason::BadVersion),
        Err(_) => return Err(Reason::BadStatusLine),
        Ok(()) => {}
    }
    if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Reason::BadStatusLine);
    }
    let code: u16 = code.parse().map_err(|_| Reason::BadStatusLine)?;
    if !(100..=699).contains(&code) || reason.bytes().any(|b| is_ctl(b) && b != b'\t') {
        return Err(Reason::BadStatusLine);
    }
    Ok(StartLine::Response { code, reason })
}

/// `"SIP" "/" 1*DIGIT "." 1*DIGIT`, case-insensitive (RFC 3261 7.1); only 2.0 is served.
fn check_version(v: &str) -> Result<(), Reason> {
    let num = match v.get(..4) {
        Some(p) if p.eq_ignore_ascii_case("SIP/") => &v[4..],
        _ => return Err(Reason::BadRequestLine),
    };
    let ok = num
        .split_once('.')
        .is_some_and(|(a, b)| crate::lex::is_digits(a) && crate::lex::is_digits(b));
    if !ok {
        return Err(Reason::BadRequestLine);
    }
    if num != "2.0" {
        return Err(Reason::BadVersion);
    }
    Ok(())
}

/// `"SIP" "/" 1*DIGIT "." 1*DIGIT`, any version.
fn is_sip_version(v: &[u8]) -> bool {
    let Some(num) = v.get(4..).filter(|_| v[..4].eq_ignore_ascii_case(b"SIP/")) else {
        return false;
    };
    let mut parts = num.split(|&b| b == b'.');
    let digits =
        |p: Option<&[u8]>| p.is_some_and(|p| !p.is_empty() && p.iter().all(u8::is_ascii_digit));
    digits(parts.next()) && digits(parts.next()) && parts.next().is_none()
}

fn is_ctl(b: u8) -> bool {
    b < 0x20 || b == 0x7f
}

/// One header field (possibly folded): `token *(SP/HTAB) ":" value`.
fn parse_header(raw: &str) -> Option<Header<'_>> {
    let (name, value) = raw.split_once(':')?;
    let name = name.trim_end_matches([' ', '\t']);
    if !is_token_str(name) {
        return None;
    }
    // Most values hold no control character at all, hence no fold: borrow them.
    let value = if crate::lex::is_plain_text(value.as_bytes()) {
        Cow::Borrowed(value.trim_matches([' ', '\t']))
    } else if value_chars_ok(value.as_bytes()) {
        Cow::Owned(unfold(value))
    } else {
        return None;
    };
    Some(Header {
        name: HeaderName::parse(name),
        value,
    })
}

/// No control characters except HTAB and folds (CRLF followed by whitespace); inside a
/// quoted-string a backslash may escape any octet up to 0x7F but CR and LF (RFC 3261
/// quoted-pair, used by RFC 4475 3.1.1.2).
fn value_chars_ok(v: &[u8]) -> bool {
    let mut quoted = false;
    let mut i = 0;
    while i < v.len() {
        let b = v[i];
        match b {
            b'"' => quoted = !quoted,
            b'\\' if quoted => match v.get(i + 1) {
                Some(&c) if c <= 0x7f && c != b'\r' && c != b'\n' => i += 1,
                _ => return false,
            },
            b'\r' => {
                if v.get(i + 1) != Some(&b'\n') || !v.get(i + 2).is_some_and(|&c| is_ws(c)) {
                    return false;
                }
                i += 1;
            }
            b'\t' => {}
            _ if is_ctl(b) => return false,
            _ => {}
        }
        i += 1;
    }
    true
}

/// Replace each fold (CRLF and the whitespace around it) by one SP, trimming the ends.
fn unfold(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for (i, part) in v.split("\r\n").enumerate() {
        let part = part.trim_matches([' ', '\t']);
        if part.is_empty() {
            continue;
        }
        if i > 0 && !out.is_empty() {
            out.push(' ');
        }
        out.push_str(part);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{Reason::*, *};

    fn p(s: &str) -> Result<Message<'_>, Reason> {
        parse(s.as_bytes(), &Limits::default(), Transport::Datagram).map_err(|e| e.reason)
    }

    const BASIC: &str = "OPTIONS sip:a@b.com SIP/2.0\r\nVia: SIP/2.0/UDP h.com;branch=z9hG4bK1\r\nl: 3\r\n\r\nabcdef";

    #[test]
    fn basic_and_body_cut() {
        let m = p(BASIC).unwrap();
        assert_eq!(m.method(), Some("OPTIONS"));
        assert_eq!(m.body, b"abc");
        assert_eq!(m.get(HeaderName::ContentLength), Some("3"));
    }

    #[test]
    fn folding_and_compact() {
        let m = p("INVITE sip:a@b.com SIP/2.0\r\nTO :\r\n sip:x@y.com ;\r\n  tag = 1\r\ncseq: 0009\r\n  INVITE\r\n\r\n").unwrap();
        assert_eq!(m.get(HeaderName::To), Some("sip:x@y.com ; tag = 1"));
        assert_eq!(m.get(HeaderName::CSeq), Some("0009 INVITE"));
    }

    /// Each message is refused for its reason.
    fn refused(cases: &[(&str, Reason)]) {
        for (msg, reason) in cases {
            assert_eq!(p(msg).err(), Some(*reason), "{msg:?}");
        }
    }

    #[test]
    fn start_lines() {
        let long = format!("INVITE sip:{}@b.com SIP/2.0\r\n\r\n", "a".repeat(600));
        refused(&[
            ("INVITE  sip:a@b.com SIP/2.0\r\n\r\n", BadRequestLine),
            ("INVITE sip:a@b.com SIP/2.0 \r\n\r\n", BadRequestLine),
            ("INVITE sip:a@b.com SIP/7.0\r\n\r\n", BadVersion),
            ("SIP/2.0 4294967301 x\r\n\r\n", BadStatusLine),
            ("SIP/2.0 099 x\r\n\r\n", BadStatusLine),
            ("\u{1}\u{2}garbage", NotSip),
            ("GET / HTTP/1.1\r\nHost: x\r\n\r\n", NotSip),
            ("OPTIONS sip:a@b.com SIP/2.0  \r\n\r\n", BadRequestLine),
            (&long, RequestUriTooLong),
        ]);
        assert!(p("SIP/2.0 100 \r\n\r\n").is_ok());
        assert_eq!(
            Kind::sniff(b"OPTIONS sip:a@b.com SI"),
            Kind::Request {
                method: Method::Options
            }
        );
    }

    #[test]
    fn lengths() {
        let big = format!(
            "OPTIONS sip:a@b.com SIP/2.0\r\nX: {}\r\n\r\n",
            "a".repeat(3000)
        );
        let huge = format!("OPTIONS sip:a@b.com SIP/2.0\r\n\r\n{}", "a".repeat(20000));
        refused(&[
            (
                "OPTIONS sip:a@b.com SIP/2.0\r\nl: 9\r\n\r\nabc",
                BodyTooShort,
            ),
            (
                "OPTIONS sip:a@b.com SIP/2.0\r\nl: -9\r\n\r\n",
                BadContentLength,
            ),
            (
                "OPTIONS sip:a@b.com SIP/2.0\r\nl: 1\r\nContent-Length: 1\r\n\r\na",
                DuplicateHeader,
            ),
            (
                "OPTIONS sip:a@b.com SIP/2.0\r\nl: 1\r\n",
                UnterminatedHeaders,
            ),
            (&big, HeaderTooLarge),
            (&huge, MessageTooLarge),
        ]);
        let s = parse(
            b"OPTIONS sip:a@b.com SIP/2.0\r\n\r\n",
            &Limits::default(),
            Transport::Stream,
        );
        assert_eq!(
            s.err().map(|e| e.reason),
            Some(Reason::MissingContentLength)
        );
    }

    #[test]
    fn header_lines() {
        refused(&[
            (
                "OPTIONS sip:a@b.com SIP/2.0\r\nBad Name: x\r\n\r\n",
                BadHeaderLine,
            ),
            (
                "OPTIONS sip:a@b.com SIP/2.0\r\nX: a\rb\r\n\r\n",
                BadHeaderLine,
            ),
            (
                "OPTIONS sip:a@b.com SIP/2.0\r\nX: a\u{0}b\r\n\r\n",
                BadHeaderLine,
            ),
            (
                "OPTIONS sip:a@b.com SIP/2.0\r\nNoColon\r\n\r\n",
                BadHeaderLine,
            ),
        ]);
        assert!(
            p("OPTIONS sip:a@b.com SIP/2.0\r\nTo: \"NUL:\\\u{0}\" <sip:a@b.com>\r\n\r\n").is_ok()
        );
    }
}
