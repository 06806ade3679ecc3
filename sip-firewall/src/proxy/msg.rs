//! An owned, editable SIP message: what the proxy forwards is the received message with a
//! few header edits (Via, Route, Record-Route, Max-Forwards, credentials), serialized again.
//! Header values are kept as received (folds already removed by the parser); compact names
//! are written out in full.

use std::borrow::Cow;

use sip_firewall_sip::{Message, StartLine, headers::HeaderName};

/// One header line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hdr {
    /// A known name is the static full form (no allocation per header); others are copied.
    pub name: Cow<'static, str>,
    pub value: String,
    /// The name parsed once, when known: comparisons do not parse it again.
    known: Option<HeaderName<'static>>,
}

impl Hdr {
    fn new(name: HeaderName<'_>, value: String) -> Hdr {
        match name.known() {
            Some(k) => Hdr {
                name: Cow::Borrowed(k.as_str()),
                value,
                known: Some(k),
            },
            // An `Other` spelling a known name still compares as that name, as before.
            None => Hdr {
                name: Cow::Owned(name.as_str().to_string()),
                value,
                known: HeaderName::parse(name.as_str()).known(),
            },
        }
    }

    fn is(&self, name: HeaderName<'_>) -> bool {
        match name {
            HeaderName::Other(n) => self.name.eq_ignore_ascii_case(n),
            n => self.known == n.known(),
        }
    }
}

/// An editable message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SipMsg {
    /// The start line without CRLF.
    pub start: String,
    pub headers: Vec<Hdr>,
    pub body: Vec<u8>,
}

impl SipMsg {
    /// Copy a parsed message.
    pub fn from_parsed(m: &Message<'_>) -> SipMsg {
        let start = match m.start {
            StartLine::Request { method, uri } => format!("{method} {uri} SIP/2.0"),
            StartLine::Response { code, reason } => format!("SIP/2.0 {code} {reason}"),
        };
        SipMsg {
            start,
            headers: m
                .headers
                .iter()
                .filter(|h| h.name != HeaderName::ContentLength)
                .map(|h| Hdr::new(h.name, h.value.to_string()))
                .collect(),
            body: m.body.to_vec(),
        }
    }

    /// A request with this start line and no headers.
    pub fn request(method: &str, uri: &str) -> SipMsg {
        SipMsg {
            start: format!("{method} {uri} SIP/2.0"),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// A copy with room for `more` headers more: what a branch adds on top (our Via and
    /// up to two Record-Route entries) goes in without growing the list again, which for a
    /// list of a few hundred bytes means copying it to a new block under the shard's lock.
    pub fn copy_with_room(&self, more: usize) -> SipMsg {
        let mut headers = Vec::with_capacity(self.headers.len() + more);
        headers.extend_from_slice(&self.headers);
        SipMsg {
            start: self.start.clone(),
            headers,
            body: self.body.clone(),
        }
    }

    /// The Request-URI, for requests.
    pub fn request_uri(&self) -> Option<&str> {
        let mut parts = self.start.split(' ');
        let _method = parts.next()?;
        let uri = parts.next()?;
        (!self.start.starts_with("SIP/")).then_some(uri)
    }

    /// Replace the Request-URI of a request.
    pub fn set_request_uri(&mut self, uri: &str) {
        if let Some((method, _)) = self.start.split_once(' ') {
            self.start = format!("{method} {uri} SIP/2.0");
        }
    }

    /// Every value of a header, in order.
    pub fn all<'s>(&'s self, name: HeaderName<'s>) -> impl Iterator<Item = &'s str> + 's {
        self.headers
            .iter()
            .filter(move |h| h.is(name))
            .map(|h| h.value.as_str())
    }

    /// The first value of a header.
    pub fn get<'s>(&'s self, name: HeaderName<'s>) -> Option<&'s str> {
        self.all(name).next()
    }

    /// Remove every header of this name.
    pub fn remove(&mut self, name: HeaderName<'_>) {
        self.headers.retain(|h| !h.is(name));
    }

    /// Remove the headers of this name whose value `pred` selects.
    pub fn remove_where(&mut self, name: HeaderName<'_>, pred: impl Fn(&str) -> bool) {
        self.headers.retain(|h| !(h.is(name) && pred(&h.value)));
    }

    /// Insert a header before the first one of the same name (or first of all): a new top
    /// Via or Record-Route.
    pub fn push_front(&mut self, name: HeaderName<'_>, value: String) {
        let at = self.headers.iter().position(|h| h.is(name)).unwrap_or(0);
        self.headers.insert(at, Hdr::new(name, value));
    }

    /// Append a header.
    pub fn push(&mut self, name: HeaderName<'_>, value: String) {
        self.headers.push(Hdr::new(name, value));
    }

    /// Set the first header of this name (appending when absent).
    pub fn set(&mut self, name: HeaderName<'_>, value: String) {
        match self.headers.iter_mut().find(|h| h.is(name)) {
            Some(h) => h.value = value,
            None => self.push(name, value),
        }
    }

    /// Replace every header of this name by one line per value in `values`, where the
    /// first of them stood.
    pub fn replace_all(&mut self, name: HeaderName<'_>, values: Vec<String>) {
        let at = self.headers.iter().position(|h| h.is(name));
        self.remove(name);
        let at = at.unwrap_or(self.headers.len()).min(self.headers.len());
        for (i, v) in values.into_iter().enumerate() {
            self.headers.insert(at + i, Hdr::new(name, v));
        }
    }

    /// Remove the first via-parm of the top Via (a proxy's own, from a response).
    pub fn pop_via(&mut self) {
        let Some(i) = self.headers.iter().position(|h| h.is(HeaderName::Via)) else {
            return;
        };
        match split_first_param(&self.headers[i].value) {
            (_, Some(rest)) => self.headers[i].value = rest.to_string(),
            (_, None) => {
                self.headers.remove(i);
            }
        }
    }

    /// The first via-parm of the top Via.
    pub fn top_via(&self) -> Option<&str> {
        self.get(HeaderName::Via).map(|v| split_first_param(v).0)
    }

    /// Serialize, with a Content-Length that matches the body.
    pub fn to_bytes(&self) -> Vec<u8> {
        // The exact size (Content-Length's line at most 40 bytes): one allocation.
        let size = self.start.len()
            + self
                .headers
                .iter()
                .map(|h| h.name.len() + h.value.len() + 4)
                .sum::<usize>()
            + 40
            + self.body.len();
        let mut out = Vec::with_capacity(size);
        out.extend_from_slice(self.start.as_bytes());
        out.extend_from_slice(b"\r\n");
        for h in &self.headers {
            out.extend_from_slice(h.name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(h.value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        // Formatted in place (writing into a Vec cannot fail).
        let _ = std::io::Write::write_fmt(
            &mut out,
            format_args!("Content-Length: {}\r\n\r\n", self.body.len()),
        );
        out.extend_from_slice(&self.body);
        out
    }
}

/// Split a comma-separated header value at its first top-level comma (outside quotes and
/// angle brackets): the first element, and the rest when there is one.
pub fn split_first_param(value: &str) -> (&str, Option<&str>) {
    let mut quoted = false;
    let mut angle = false;
    let mut escape = false;
    for (i, c) in value.char_indices() {
        if escape {
            escape = false;
            continue;
        }
        match c {
            '\\' if quoted => escape = true,
            '"' => quoted = !quoted,
            '<' if !quoted => angle = true,
            '>' if !quoted => angle = false,
            ',' if !quoted && !angle => {
                let rest = value[i + 1..].trim();
                return (
                    value[..i].trim(),
                    if rest.is_empty() { None } else { Some(rest) },
                );
            }
            _ => {}
        }
    }
    (value.trim(), None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sip_firewall_sip::{Limits, Transport, parse::parse};

    #[test]
    fn a_copy_with_room_is_the_message_with_room_for_that_many_headers() {
        let text = "INVITE sip:bob@example.com SIP/2.0\r\nv: SIP/2.0/UDP a.com;branch=z9hG4bK1\r\nl: 4\r\n\r\nbody";
        let m = parse(text.as_bytes(), &Limits::default(), Transport::Datagram).unwrap();
        let s = SipMsg::from_parsed(&m);
        let c = s.copy_with_room(3);
        assert_eq!(c, s);
        assert!(
            c.headers.capacity() >= s.headers.len() + 3,
            "room for 3 more"
        );
    }

    #[test]
    fn round_trip_and_edits() {
        let text = "INVITE sip:bob@example.com SIP/2.0\r\nv: SIP/2.0/UDP a.com;branch=z9hG4bK1, SIP/2.0/UDP b.com;branch=z9hG4bK2\r\nRoute: <sip:p1;lr>\r\nl: 4\r\n\r\nbody";
        let m = parse(text.as_bytes(), &Limits::default(), Transport::Datagram).unwrap();
        let mut s = SipMsg::from_parsed(&m);
        assert_eq!(s.request_uri(), Some("sip:bob@example.com"));
        assert_eq!(s.top_via(), Some("SIP/2.0/UDP a.com;branch=z9hG4bK1"));
        s.push_front(HeaderName::Via, "SIP/2.0/UDP me;branch=z9hG4bKx".into());
        s.set_request_uri("sip:bob@192.0.2.1");
        s.remove(HeaderName::Route);
        let out = String::from_utf8(s.to_bytes()).unwrap();
        assert_eq!(
            out,
            "INVITE sip:bob@192.0.2.1 SIP/2.0\r\nVia: SIP/2.0/UDP me;branch=z9hG4bKx\r\nVia: SIP/2.0/UDP a.com;branch=z9hG4bK1, SIP/2.0/UDP b.com;branch=z9hG4bK2\r\nContent-Length: 4\r\n\r\nbody"
        );
        s.pop_via();
        s.pop_via();
        assert_eq!(s.top_via(), Some("SIP/2.0/UDP b.com;branch=z9hG4bK2"));
        s.pop_via();
        assert_eq!(s.top_via(), None);
    }

    #[test]
    fn split() {
        assert_eq!(split_first_param("a, b"), ("a", Some("b")));
        assert_eq!(
            split_first_param("\"x, y\" <sip:a,b>;p, c"),
            ("\"x, y\" <sip:a,b>;p", Some("c"))
        );
        assert_eq!(split_first_param("a ,"), ("a", None));
    }
}
