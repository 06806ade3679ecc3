//! Why a message was refused: one enum for parse, framing and sanity failures, so that every
//! rejection and drop is counted under a stable metrics label and answered with one code.

/// Declares [`Reason`] from one table, so that a reason's label, code and phrase stand on
/// one line: `Variant => ("metrics_label", status code (RFC 3261 21), "reason phrase")`.
macro_rules! reasons {
    ($($(#[$doc:meta])* $v:ident => ($label:literal, $code:literal, $phrase:literal),)*) => {
        /// The reason a message was rejected (requests) or dropped (responses and non-SIP
        /// input).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Reason {
            $($(#[$doc])* $v,)*
        }

        impl Reason {
            /// Every reason, for tests and for pre-registering metric labels.
            pub const ALL: &[Reason] = &[$(Reason::$v,)*];

            /// Label for metrics.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Reason::$v => $label,)*
                }
            }

            /// The status code a request refused for this reason is answered with (RFC 3261
            /// 21).
            pub fn status(self) -> u16 {
                match self {
                    $(Reason::$v => $code,)*
                }
            }

            /// The reason phrase of that answer: the code's own phrase, or a precise one for
            /// 400.
            pub fn phrase(self) -> &'static str {
                match self {
                    $(Reason::$v => $phrase,)*
                }
            }
        }
    };
}

reasons! {
    /// Not recognisably SIP at all (no request or status line).
    NotSip => ("not_sip", 400, "Bad Request"),
    /// Whole message over `max_message_bytes`.
    MessageTooLarge => ("message_too_large", 513, "Message Too Large"),
    /// One header line (with its folds) over `max_header_bytes`.
    HeaderTooLarge => ("header_too_large", 513, "Message Too Large"),
    /// Request-URI over `max_request_uri_bytes`.
    RequestUriTooLong => ("request_uri_too_long", 414, "Request-URI Too Long"),
    /// Malformed request line.
    BadRequestLine => ("bad_request_line", 400, "Bad Request Line"),
    /// Malformed status line or status code outside 100-699.
    BadStatusLine => ("bad_status_line", 400, "Bad Request"),
    /// SIP version other than 2.0.
    BadVersion => ("bad_version", 505, "Version Not Supported"),
    /// Request-URI is not a well-formed URI.
    BadRequestUri => ("bad_request_uri", 400, "Bad Request-URI"),
    /// Request-URI scheme other than sip, sips, tel.
    UnsupportedUriScheme => ("unsupported_uri_scheme", 416, "Unsupported URI Scheme"),
    /// A header line that is not `token HCOLON value`, or with forbidden characters.
    BadHeaderLine => ("bad_header_line", 400, "Bad Header Line"),
    /// No empty line ends the header section.
    UnterminatedHeaders => ("unterminated_headers", 400, "Unterminated Headers"),
    /// A required header is absent.
    MissingHeader => ("missing_header", 400, "Missing Required Header"),
    /// A single-valued header appears more than once.
    DuplicateHeader => ("duplicate_header", 400, "Duplicate Header"),
    BadVia => ("bad_via", 400, "Bad Via"),
    BadFrom => ("bad_from", 400, "Bad From"),
    BadTo => ("bad_to", 400, "Bad To"),
    BadContact => ("bad_contact", 400, "Bad Contact"),
    BadRoute => ("bad_route", 400, "Bad Route"),
    BadCallId => ("bad_call_id", 400, "Bad Call-ID"),
    BadCSeq => ("bad_cseq", 400, "Bad CSeq"),
    /// CSeq method differs from the request method.
    CSeqMethodMismatch => ("cseq_method_mismatch", 400, "CSeq Method Mismatch"),
    BadContentLength => ("bad_content_length", 400, "Bad Content-Length"),
    /// Missing Content-Length on a stream transport.
    MissingContentLength => ("missing_content_length", 400, "Missing Content-Length"),
    /// Fewer body bytes than Content-Length announces.
    BodyTooShort => ("body_too_short", 400, "Body Shorter Than Content-Length"),
    BadMaxForwards => ("bad_max_forwards", 400, "Bad Max-Forwards"),
    BadExpires => ("bad_expires", 400, "Bad Expires"),
    BadContentType => ("bad_content_type", 400, "Bad Content-Type"),
    /// A malformed option-tag list (Require, Proxy-Require, Supported).
    BadOptionTags => ("bad_option_tags", 400, "Bad Option Tags"),
    /// Proxy-Require names an extension this proxy lacks (420).
    UnsupportedExtension => ("unsupported_extension", 420, "Bad Extension"),
    /// Max-Forwards is 0 (483).
    TooManyHops => ("too_many_hops", 483, "Too Many Hops"),
    /// A response whose Via would send it to a broadcast, multicast or unspecified address.
    ViaBadAddress => ("via_bad_address", 400, "Bad Request"),
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
        for &r in Reason::ALL {
            assert!(
                [400, 414, 416, 420, 483, 505, 513].contains(&r.status()),
                "{r}"
            );
            assert!(!r.phrase().is_empty());
        }
    }
}
