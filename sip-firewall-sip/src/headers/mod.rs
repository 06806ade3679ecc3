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
        if name.is_empty() {
            return Other(name);
        }
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
        // Lower-case into a stack buffer and match whole names: the compiler turns this
        // into length and word comparisons.
        let mut lower = [0u8; 20];
        let Some(dst) = lower.get_mut(..name.len()) else {
            return Other(name);
        };
        for (d, s) in dst.iter_mut().zip(name.bytes()) {
            *d = s.to_ascii_lowercase();
        }
        match &*dst {
            b"via" => Via,
            b"from" => From,
            b"to" => To,
            b"call-id" => CallId,
            b"cseq" => CSeq,
            b"contact" => Contact,
            b"content-length" => ContentLength,
            b"content-type" => ContentType,
            b"max-forwards" => MaxForwards,
            b"expires" => Expires,
            b"route" => Route,
            b"record-route" => RecordRoute,
            b"proxy-require" => ProxyRequire,
            b"require" => Require,
            b"supported" => Supported,
            b"subject" => Subject,
            b"content-encoding" => ContentEncoding,
            b"event" => Event,
            b"allow-events" => AllowEvents,
            b"refer-to" => ReferTo,
            b"referred-by" => ReferredBy,
            b"session-expires" => SessionExpires,
            b"identity" => Identity,
            b"accept-contact" => AcceptContact,
            b"reject-contact" => RejectContact,
            b"request-disposition" => RequestDisposition,
            b"identity-info" => IdentityInfo,
            _ => Other(name),
        }
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
    /// The same name without the borrow, for the names this crate knows (None for
    /// [`HeaderName::Other`]): a copy can keep it, and its [`HeaderName::as_str`] is static.
    pub fn known(self) -> Option<HeaderName<'static>> {
        use HeaderName::*;
        Some(match self {
            Via => Via,
            From => From,
            To => To,
            CallId => CallId,
            CSeq => CSeq,
            Contact => Contact,
            ContentLength => ContentLength,
            ContentType => ContentType,
            MaxForwards => MaxForwards,
            Expires => Expires,
            Route => Route,
            RecordRoute => RecordRoute,
            ProxyRequire => ProxyRequire,
            Require => Require,
            Supported => Supported,
            Subject => Subject,
            ContentEncoding => ContentEncoding,
            Event => Event,
            AllowEvents => AllowEvents,
            ReferTo => ReferTo,
            ReferredBy => ReferredBy,
            SessionExpires => SessionExpires,
            Identity => Identity,
            AcceptContact => AcceptContact,
            RejectContact => RejectContact,
            RequestDisposition => RequestDisposition,
            IdentityInfo => IdentityInfo,
            Other(_) => return None,
        })
    }

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
