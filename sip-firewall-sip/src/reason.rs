//! Why a message was refused: one enum for parse, framing and sanity failures, so that every
//! rejection and drop is counted under a stable metrics label and answered with one code.

/// The reason a message was rejected (requests) or dropped (responses and non-SIP input).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// Not recognisably SIP at all (no request or status line).
    NotSip,
    /// Whole message over `max_message_bytes`.
    MessageTooLarge,
    /// One header line (with its folds) over `max_header_bytes`.
    HeaderTooLarge,
    /// Request-URI over `max_request_uri_bytes`.
    RequestUriTooLong,
    /// Malformed request line.
    BadRequestLine,
    /// Malformed status line or status code outside 100-699.
    BadStatusLine,
    /// SIP version other than 2.0.
    BadVersion,
    /// Request-URI is not a well-formed URI.
    BadRequestUri,
    /// Request-URI scheme other than sip, sips, tel.
    UnsupportedUriScheme,
    /// A header line that is not `token HCOLON value`, or with forbidden characters.
    BadHeaderLine,
    /// No empty line ends the header section.
    UnterminatedHeaders,
    /// A required header is absent.
    MissingHeader,
    /// A single-valued header appears more than once.
    DuplicateHeader,
    BadVia,
    BadFrom,
    BadTo,
    BadContact,
    BadRoute,
    BadCallId,
    BadCSeq,
    /// CSeq method differs from the request method.
    CSeqMethodMismatch,
    BadContentLength,
    /// Missing Content-Length on a stream transport.
    MissingContentLength,
    /// Fewer body bytes than Content-Length announces.
    BodyTooShort,
    BadMaxForwards,
    BadExpires,
    BadContentType,
    /// A malformed option-tag list (Require, Proxy-Require, Supported).
    BadOptionTags,
    /// Proxy-Require names an extension this proxy lacks (420).
    UnsupportedExtension,
    /// Max-Forwards is 0 (483).
    TooManyHops,
    /// A response whose Via would send it to a broadcast, multicast or unspecified address.
    ViaBadAddress,
}

impl Reason {
    /// Label for metrics.
    pub fn as_str(self) -> &'static str {
        use Reason::*;
        match self {
            NotSip => "not_sip",
            MessageTooLarge => "message_too_large",
            HeaderTooLarge => "header_too_large",
            RequestUriTooLong => "request_uri_too_long",
            BadRequestLine => "bad_request_line",
            BadStatusLine => "bad_status_line",
            BadVersion => "bad_version",
            BadRequestUri => "bad_request_uri",
            UnsupportedUriScheme => "unsupported_uri_scheme",
            BadHeaderLine => "bad_header_line",
            UnterminatedHeaders => "unterminated_headers",
            MissingHeader => "missing_header",
            DuplicateHeader => "duplicate_header",
            BadVia => "bad_via",
            BadFrom => "bad_from",
            BadTo => "bad_to",
            BadContact => "bad_contact",
            BadRoute => "bad_route",
            BadCallId => "bad_call_id",
            BadCSeq => "bad_cseq",
            CSeqMethodMismatch => "cseq_method_mismatch",
            BadContentLength => "bad_content_length",
            MissingContentLength => "missing_content_length",
            BodyTooShort => "body_too_short",
            BadMaxForwards => "bad_max_forwards",
            BadExpires => "bad_expires",
            BadContentType => "bad_content_type",
            BadOptionTags => "bad_option_tags",
            UnsupportedExtension => "unsupported_extension",
            TooManyHops => "too_many_hops",
            ViaBadAddress => "via_bad_address",
        }
    }

    /// The status code a request refused for this reason is answered with (RFC 3261 21).
    pub fn status(self) -> u16 {
        use Reason::*;
        match self {
            MessageTooLarge | HeaderTooLarge => 513,
            RequestUriTooLong => 414,
            BadVersion => 505,
            UnsupportedUriScheme => 416,
            UnsupportedExtension => 420,
            TooManyHops => 483,
            _ => 400,
        }
    }

    /// The reason phrase of that answer: the code's own phrase, or a precise one for 400.
    pub fn phrase(self) -> &'static str {
        use Reason::*;
        match self {
            MessageTooLarge | HeaderTooLarge => "Message Too Large",
            RequestUriTooLong => "Request-URI Too Long",
            BadVersion => "Version Not Supported",
            UnsupportedUriScheme => "Unsupported URI Scheme",
            UnsupportedExtension => "Bad Extension",
            TooManyHops => "Too Many Hops",
            NotSip | BadStatusLine | ViaBadAddress => "Bad Request",
            BadRequestLine => "Bad Request Line",
            BadRequestUri => "Bad Request-URI",
            BadHeaderLine => "Bad Header Line",
            UnterminatedHeaders => "Unterminated Headers",
            MissingHeader => "Missing Required Header",
            DuplicateHeader => "Duplicate Header",
            BadVia => "Bad Via",
            BadFrom => "Bad From",
            BadTo => "Bad To",
            BadContact => "Bad Contact",
            BadRoute => "Bad Route",
            BadCallId => "Bad Call-ID",
            BadCSeq => "Bad CSeq",
            CSeqMethodMismatch => "CSeq Method Mismatch",
            BadContentLength => "Bad Content-Length",
            MissingContentLength => "Missing Content-Length",
            BodyTooShort => "Body Shorter Than Content-Length",
            BadMaxForwards => "Bad Max-Forwards",
            BadExpires => "Bad Expires",
            BadContentType => "Bad Content-Type",
            BadOptionTags => "Bad Option Tags",
        }
    }

    /// Every reason, for tests and for pre-registering metric labels.
    pub const ALL: [Reason; 31] = {
        use Reason::*;
        [
            NotSip,
            MessageTooLarge,
            HeaderTooLarge,
            RequestUriTooLong,
            BadRequestLine,
            BadStatusLine,
            BadVersion,
            BadRequestUri,
            UnsupportedUriScheme,
            BadHeaderLine,
            UnterminatedHeaders,
            MissingHeader,
            DuplicateHeader,
            BadVia,
            BadFrom,
            BadTo,
            BadContact,
            BadRoute,
            BadCallId,
            BadCSeq,
            CSeqMethodMismatch,
            BadContentLength,
            MissingContentLength,
            BodyTooShort,
            BadMaxForwards,
            BadExpires,
            BadContentType,
            BadOptionTags,
            UnsupportedExtension,
            TooManyHops,
            ViaBadAddress,
        ]
    };
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_unique_and_codes_known() {
        let mut labels: Vec<&str> = Reason::ALL.iter().map(|r| r.as_str()).collect();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), Reason::ALL.len());
        for r in Reason::ALL {
            assert!(
                [400, 414, 416, 420, 483, 505, 513].contains(&r.status()),
                "{r}"
            );
            assert!(!r.phrase().is_empty());
        }
    }
}
