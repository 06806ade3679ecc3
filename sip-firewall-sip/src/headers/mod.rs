//! Header names (with compact forms) and typed parsers for the headers the firewall judges.

pub mod name_addr;
pub mod scalar;
pub mod via;

use std::borrow::Cow;

/// Header names the message layer knows; everything else is `Other`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderName<'a> {
    Via,
    From,
    To,
    CallId,
    CSeq,
    Contact,
    ContentLength,
    ContentType,
    MaxForwards,
    Expires,
    Route,
    RecordRoute,
    ProxyRequire,
    Require,
    Supported,
    Subject,
    ContentEncoding,
    Event,
    AllowEvents,
    ReferTo,
    ReferredBy,
    SessionExpires,
    Identity,
    AcceptContact,
    RejectContact,
    RequestDisposition,
    IdentityInfo,
    /// Any other (extension) header, as written.
    Other(&'a str),
}

impl<'a> HeaderName<'a> {
    /// Look up a header name case-insensitively, mapping compact forms (RFC 3261 7.3.3 and the
    /// IANA registry) to their long names.
    pub fn parse(name: &'a str) -> HeaderName<'a> {
        use HeaderName::*;
        if name.len() == 1 {
            return match name.as_bytes()[0].to_ascii_lowercase() {
                b'v' => Via,
                b'f' => From,
                b't' => To,
                b'i' => CallId,
                b'm' => Contact,
                b'l' => ContentLength,
                b'c' => ContentType,
                b's' => Subject,
                b'k' => Supported,
                b'e' => ContentEncoding,
                b'o' => Event,
                b'u' => AllowEvents,
                b'r' => ReferTo,
                b'b' => ReferredBy,
                b'x' => SessionExpires,
                b'y' => Identity,
                b'a' => AcceptContact,
                b'j' => RejectContact,
                b'd' => RequestDisposition,
                b'n' => IdentityInfo,
                _ => Other(name),
            };
        }
        const LONG: &[(&str, HeaderName<'static>)] = &[
            ("via", Via),
            ("from", From),
            ("to", To),
            ("call-id", CallId),
            ("cseq", CSeq),
            ("contact", Contact),
            ("content-length", ContentLength),
            ("content-type", ContentType),
            ("max-forwards", MaxForwards),
            ("expires", Expires),
            ("route", Route),
            ("record-route", RecordRoute),
            ("proxy-require", ProxyRequire),
            ("require", Require),
            ("supported", Supported),
            ("subject", Subject),
            ("content-encoding", ContentEncoding),
            ("event", Event),
            ("allow-events", AllowEvents),
            ("refer-to", ReferTo),
            ("referred-by", ReferredBy),
            ("session-expires", SessionExpires),
            ("identity", Identity),
            ("accept-contact", AcceptContact),
            ("reject-contact", RejectContact),
            ("request-disposition", RequestDisposition),
            ("identity-info", IdentityInfo),
        ];
        LONG.iter()
            .find(|(n, _)| n.len() == name.len() && n.eq_ignore_ascii_case(name))
            .map(|&(_, h)| h)
            .unwrap_or(Other(name))
    }

    /// The canonical long name.
    pub fn as_str(&self) -> &'a str {
        use HeaderName::*;
        match *self {
            Via => "Via",
            From => "From",
            To => "To",
            CallId => "Call-ID",
            CSeq => "CSeq",
            Contact => "Contact",
            ContentLength => "Content-Length",
            ContentType => "Content-Type",
            MaxForwards => "Max-Forwards",
            Expires => "Expires",
            Route => "Route",
            RecordRoute => "Record-Route",
            ProxyRequire => "Proxy-Require",
            Require => "Require",
            Supported => "Supported",
            Subject => "Subject",
            ContentEncoding => "Content-Encoding",
            Event => "Event",
            AllowEvents => "Allow-Events",
            ReferTo => "Refer-To",
            ReferredBy => "Referred-By",
            SessionExpires => "Session-Expires",
            Identity => "Identity",
            AcceptContact => "Accept-Contact",
            RejectContact => "Reject-Contact",
            RequestDisposition => "Request-Disposition",
            IdentityInfo => "Identity-Info",
            Other(n) => n,
        }
    }

    /// Headers that may appear at most once (RFC 3261 7.3.1: not comma-separated lists).
    pub fn single_valued(&self) -> bool {
        use HeaderName::*;
        matches!(
            self,
            From | To | CallId | CSeq | ContentLength | ContentType | MaxForwards | Expires
        )
    }
}

/// One header field: its name and its value with folds replaced by a single space and
/// surrounding whitespace trimmed (borrowed unless the line was folded).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header<'a> {
    pub name: HeaderName<'a>,
    pub value: Cow<'a, str>,
}
