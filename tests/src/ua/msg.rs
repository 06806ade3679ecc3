//! SIP text as the test clients read and write it: header values, status codes, parameters,
//! and the response a UAS builds from a request (RFC 3261 8.2.6.2).

/// The first value of header `name` (full form, case-insensitive) in the header section.
pub fn header<'a>(msg: &'a str, name: &str) -> Option<&'a str> {
    headers(msg, name).into_iter().next()
}

/// Every value of header `name` in the header section, one per line, in order.
pub fn headers<'a>(msg: &'a str, name: &str) -> Vec<&'a str> {
    msg.split("\r\n\r\n")
        .next()
        .unwrap_or("")
        .split("\r\n")
        .skip(1)
        .filter_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then_some(v.trim())
        })
        .collect()
}

/// The status code of a response, 0 for a request.
pub fn status(msg: &str) -> u16 {
    msg.strip_prefix("SIP/2.0 ")
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// The first line of a message, without its CRLF.
pub fn first_line(msg: &str) -> &str {
    msg.lines().next().unwrap_or("")
}

/// Whether `msg` is a final response (2xx-6xx).
pub fn is_final(msg: &str) -> bool {
    status(msg) >= 200
}

/// A quoted or bare parameter of a header value.
pub fn param<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    let at = header.find(&format!("{name}="))? + name.len() + 1;
    let rest = &header[at..];
    Some(match rest.strip_prefix('"') {
        Some(q) => &q[..q.find('"')?],
        None => rest.split([',', ' ', ';', '>']).next()?,
    })
}

/// A response `code` ("180 Ringing") to `req`: its Via, From, Call-ID and CSeq, its To with
/// `to_tag` unless already tagged, then `extra` lines. Record-Route is copied into the
/// answers that can set up a dialog (1xx, 2xx: RFC 3261 12.1.1), not into a failure.
pub fn response_to(req: &str, code: &str, to_tag: &str, extra: &str) -> String {
    let dialog = code.starts_with('1') || code.starts_with('2');
    let mut copied = vec!["via:", "from:", "call-id:", "cseq:"];
    if dialog {
        copied.push("record-route:");
    }
    let mut resp = format!("SIP/2.0 {code}\r\n");
    for l in req
        .split("\r\n\r\n")
        .next()
        .unwrap_or("")
        .split("\r\n")
        .skip(1)
    {
        let lower = l.to_ascii_lowercase();
        if copied.iter().any(|p| lower.starts_with(p)) {
            resp.push_str(l);
            resp.push_str("\r\n");
        } else if lower.starts_with("to:") {
            if lower.contains(";tag=") {
                resp.push_str(&format!("{l}\r\n"));
            } else {
                resp.push_str(&format!("{l};tag={to_tag}\r\n"));
            }
        }
    }
    resp + extra + "Content-Length: 0\r\n\r\n"
}

/// A request: its line, `Via: via`, Max-Forwards 70, `From`, `To`, Call-ID, CSeq, then
/// `extra` lines (Route, Contact, credentials...) and no body.
pub struct Request<'a> {
    pub method: &'a str,
    pub uri: &'a str,
    pub via: &'a str,
    pub from: &'a str,
    pub to: &'a str,
    pub call_id: &'a str,
    pub cseq: u32,
    pub extra: &'a str,
}

impl Request<'_> {
    /// The request with a body of `content_type`.
    pub fn with_body(&self, content_type: &str, body: &str) -> String {
        let head = self.text();
        let head = head.trim_end_matches("Content-Length: 0\r\n\r\n");
        format!(
            "{head}Content-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    }

    pub fn text(&self) -> String {
        let Request {
            method,
            uri,
            via,
            from,
            to,
            call_id,
            cseq,
            extra,
        } = self;
        format!(
            "{method} {uri} SIP/2.0\r\nVia: {via}\r\nMax-Forwards: 70\r\nFrom: {from}\r\n\
             To: {to}\r\nCall-ID: {call_id}\r\nCSeq: {cseq} {method}\r\n{extra}\
             Content-Length: 0\r\n\r\n"
        )
    }
}

/// An INVITE to `uri` from a peer at `me` that needs no credentials (a trunk, an
/// allow-listed PBX): its branch and Call-ID made of `tag`, no dialog yet.
pub fn peer_invite(uri: &str, me: std::net::SocketAddr, tag: &str) -> String {
    Request {
        method: "INVITE",
        uri,
        via: &format!("SIP/2.0/UDP {me};branch=z9hG4bK{tag};rport"),
        from: &format!("<sip:pbx@pbx.example>;tag={tag}"),
        to: &format!("<{uri}>"),
        call_id: tag,
        cseq: 1,
        extra: &format!("Contact: <sip:pbx@{me}>\r\n"),
    }
    .text()
}

/// The ACK of a non-2xx final response `resp` to `invite`: hop by hop, with the INVITE's
/// Via (its branch) and the response's To (RFC 3261 17.1.1.3).
pub fn ack_of_failure(invite: &str, resp: &str) -> String {
    hop_by_hop(
        "ACK",
        invite,
        header(resp, "To").expect("the response's To"),
    )
}

/// The CANCEL of `invite` (RFC 3261 9.1): its Request-URI, Via (its branch), From, To,
/// Call-ID and CSeq number.
pub fn cancel_of(invite: &str) -> String {
    hop_by_hop(
        "CANCEL",
        invite,
        header(invite, "To").expect("the INVITE's To"),
    )
}

/// A request `method` of the INVITE's transaction, with the To `to`.
fn hop_by_hop(method: &str, invite: &str, to: &str) -> String {
    let uri = invite.split(' ').nth(1).expect("the INVITE's Request-URI");
    let cseq = header(invite, "CSeq")
        .and_then(|c| c.split(' ').next())
        .unwrap_or("1");
    Request {
        method,
        uri,
        via: header(invite, "Via").expect("the INVITE's Via"),
        from: header(invite, "From").expect("the INVITE's From"),
        to,
        call_id: header(invite, "Call-ID").expect("the INVITE's Call-ID"),
        cseq: cseq.parse().unwrap_or(1),
        extra: "",
    }
    .text()
}

/// The Record-Route lines of `msg`, top first.
pub fn record_route(msg: &str) -> Vec<String> {
    headers(msg, "Record-Route")
        .into_iter()
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_response_copies_what_a_uas_copies() {
        let req = "INVITE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1\r\n\
                   Record-Route: <sip:192.0.2.2;lr>\r\nFrom: <sip:a@example.com>;tag=a\r\n\
                   To: <sip:bob@example.com>\r\nCall-ID: c1\r\nCSeq: 1 INVITE\r\n\
                   Content-Length: 0\r\n\r\n";
        let ringing = response_to(req, "180 Ringing", "b", "Contact: <sip:bob@192.0.2.3>\r\n");
        assert_eq!(status(&ringing), 180);
        assert_eq!(header(&ringing, "To"), Some("<sip:bob@example.com>;tag=b"));
        assert_eq!(header(&ringing, "Record-Route"), Some("<sip:192.0.2.2;lr>"));
        assert_eq!(header(&ringing, "Contact"), Some("<sip:bob@192.0.2.3>"));
        let busy = response_to(req, "486 Busy Here", "b", "");
        assert_eq!(header(&busy, "Record-Route"), None);
        assert_eq!(header(&busy, "Call-ID"), Some("c1"));
        let ack = ack_of_failure(req, &busy);
        assert!(
            ack.starts_with("ACK sip:bob@example.com SIP/2.0\r\n"),
            "{ack}"
        );
        assert!(
            ack.contains("CSeq: 1 ACK\r\n") && ack.contains(";tag=b\r\n"),
            "{ack}"
        );
        assert_eq!(param("Digest realm=\"x\", nonce=abc", "nonce"), Some("abc"));
    }
}
