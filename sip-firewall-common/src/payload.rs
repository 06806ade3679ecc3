//! The payload check of the SIP ports: what the XDP program lets reach the daemon.
//!
//! [`classify`] is the reference: user space runs it when XDP is not attached, and a test
//! runs the XDP program (`BPF_PROG_TEST_RUN`) and this function on the same payloads and
//! requires the same verdict. The XDP program mirrors it step by step with the constants and
//! character classes below (it cannot take a slice: every byte it reads is bounds-checked
//! against the end of the packet).
//!
//! The check is deliberately shallow: it tells SIP from junk at the first line and leaves
//! every finer judgement (and its reply code) to the daemon's parser.

/// Most bytes of a method token before its SP.
pub const MAX_METHOD_LEN: usize = 64;
/// Bytes scanned for the CR that ends a request line (longer lines are malformed).
pub const MAX_FIRST_LINE: usize = 1024;
/// `SIP/2.0` with a trailing SP, the start of every status line.
pub const STATUS_PREFIX: &[u8; 8] = b"SIP/2.0 ";
/// ` SIP/2.0`, the end of every request line (before its CR).
pub const REQUEST_SUFFIX: &[u8; 8] = b" SIP/2.0";
/// STUN magic cookie (RFC 5389), bytes 4..8 of every STUN message.
pub const STUN_MAGIC: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];
/// A STUN header is 20 bytes.
pub const STUN_HEADER_LEN: usize = 20;
/// The message type of a STUN Binding request (RFC 5389 6, 18.1), bytes 0..2.
pub const STUN_BINDING_REQUEST: [u8; 2] = [0x00, 0x01];
/// Most bytes of attributes a STUN keep-alive carries (a FINGERPRINT and a short SOFTWARE
/// fit); the daemon's STUN parser applies the same bound.
pub const STUN_MAX_ATTRIBUTES: usize = 64;

/// What a UDP payload on a SIP port is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PayloadClass {
    /// `\r\n` or `\r\n\r\n` (RFC 5626 keep-alive).
    KeepAlive,
    /// A STUN Binding request (RFC 5389 6), a keep-alive of RFC 5626 4.4.2: its type, the
    /// magic cookie, and a length that is a multiple of 4, at most [`STUN_MAX_ATTRIBUTES`]
    /// and exactly the rest of the payload. Any other STUN message is malformed here.
    Stun,
    /// First line is `token SP ... SP SIP/2.0`.
    Request,
    /// First line starts `SIP/2.0 SP 3DIGIT SP`.
    Response,
    /// Anything else.
    Malformed,
}

impl PayloadClass {
    /// Whether the payload may pass to the daemon.
    pub const fn passes(self) -> bool {
        !matches!(self, PayloadClass::Malformed)
    }
}

/// RFC 3261 `token` characters: alphanum and `-.!%*_+`'~`.
#[inline(always)]
pub const fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
        )
}

/// Whether `b` equals the upper-case ASCII byte `upper` ignoring case (the SIP version is
/// case-insensitive, RFC 3261 7.1).
#[inline(always)]
pub const fn eq_ignore_case(b: u8, upper: u8) -> bool {
    b == upper || (upper.is_ascii_uppercase() && b == upper + 32)
}

/// [`eq_ignore_case`] of the eight bytes of a little-endian word with `want` (upper-case
/// ASCII), in one comparison: the letters of `want` have their case bit (0x20) set in both.
#[inline(always)]
pub const fn eq8_ignore_case_word(x: u64, want: &[u8; 8]) -> bool {
    let mut case = [0u8; 8];
    let mut lower = *want;
    let mut i = 0;
    while i < 8 {
        if want[i].is_ascii_uppercase() {
            case[i] = 0x20;
            lower[i] |= 0x20;
        }
        i += 1;
    }
    x | u64::from_le_bytes(case) == u64::from_le_bytes(lower)
}

/// Whether a byte inside a request line is acceptable before its CR: no control character.
#[inline(always)]
pub const fn is_line_byte(b: u8) -> bool {
    b >= 0x20 && b != 0x7f
}

/// Classify a UDP payload on a SIP port.
///
/// ```
/// use sip_firewall_common::payload::{classify, PayloadClass};
/// assert_eq!(classify(b"\r\n\r\n"), PayloadClass::KeepAlive);
/// assert_eq!(classify(b"OPTIONS sip:a@b SIP/2.0\r\n"), PayloadClass::Request);
/// assert_eq!(classify(b"SIP/2.0 200 OK\r\n"), PayloadClass::Response);
/// assert_eq!(classify(b"GET / HTTP/1.1\r\n"), PayloadClass::Malformed);
/// ```
pub fn classify(p: &[u8]) -> PayloadClass {
    if p == b"\r\n" || p == b"\r\n\r\n" {
        return PayloadClass::KeepAlive;
    }
    if is_stun_binding_request(p) {
        return PayloadClass::Stun;
    }
    if is_status_line(p) {
        return PayloadClass::Response;
    }
    if is_request_line(p) {
        return PayloadClass::Request;
    }
    PayloadClass::Malformed
}

fn is_stun_binding_request(p: &[u8]) -> bool {
    if p.len() < STUN_HEADER_LEN || p[0..2] != STUN_BINDING_REQUEST || p[4..8] != STUN_MAGIC {
        return false;
    }
    let attributes = usize::from(u16::from_be_bytes([p[2], p[3]]));
    attributes % 4 == 0
        && attributes <= STUN_MAX_ATTRIBUTES
        && attributes + STUN_HEADER_LEN == p.len()
}

fn is_status_line(p: &[u8]) -> bool {
    if p.len() < 12 {
        return false;
    }
    let version_ok = STATUS_PREFIX
        .iter()
        .zip(p)
        .all(|(&want, &got)| eq_ignore_case(got, want));
    version_ok
        && p[8].is_ascii_digit()
        && p[9].is_ascii_digit()
        && p[10].is_ascii_digit()
        && p[11] == b' '
}

fn is_request_line(p: &[u8]) -> bool {
    // The method: 1..=MAX_METHOD_LEN token characters, then SP.
    let mut sp = None;
    for (i, &b) in p.iter().enumerate().take(MAX_METHOD_LEN + 1) {
        if b == b' ' {
            sp = Some(i);
            break;
        }
        if !is_token_char(b) {
            return false;
        }
    }
    let sp = match sp {
        Some(0) | None => return false,
        Some(i) => i,
    };
    // The rest of the line up to CR: no control characters, found within the bound.
    let mut cr = None;
    for (i, &b) in p.iter().enumerate().take(MAX_FIRST_LINE).skip(sp + 1) {
        if b == b'\r' {
            cr = Some(i);
            break;
        }
        if !is_line_byte(b) {
            return false;
        }
    }
    let Some(cr) = cr else { return false };
    // At least one byte of Request-URI between the two SPs.
    if cr < sp + 2 + REQUEST_SUFFIX.len() {
        return false;
    }
    REQUEST_SUFFIX
        .iter()
        .zip(&p[cr - REQUEST_SUFFIX.len()..cr])
        .all(|(&want, &got)| eq_ignore_case(got, want))
}

#[cfg(test)]
mod tests {
    use super::*;
    use PayloadClass::*;

    #[test]
    fn word_compare_ignoring_case_equals_the_bytewise_one() {
        for want in [STATUS_PREFIX, REQUEST_SUFFIX] {
            for pos in 0..8 {
                for b in 0..=255u8 {
                    let mut w = *want;
                    w[pos] = b;
                    let bytewise = w.iter().zip(want).all(|(g, u)| eq_ignore_case(*g, *u));
                    assert_eq!(
                        eq8_ignore_case_word(u64::from_le_bytes(w), want),
                        bytewise,
                        "{b:#x} at {pos}"
                    );
                }
            }
        }
        assert!(eq8_ignore_case_word(
            u64::from_le_bytes(*b" sIp/2.0"),
            REQUEST_SUFFIX
        ));
    }

    fn check(cases: &[(&[u8], PayloadClass)]) {
        for &(payload, want) in cases {
            assert_eq!(classify(payload), want, "{:?}", payload.escape_ascii());
        }
    }

    #[test]
    fn keepalives() {
        let cases: &[(&[u8], PayloadClass)] = &[
            (b"\r\n", KeepAlive),
            (b"\r\n\r\n", KeepAlive),
            (b"\r\n\r\n\r\n", Malformed),
            (b"\n", Malformed),
            (b"", Malformed),
        ];
        check(cases);
    }

    #[test]
    fn stun() {
        let mut m = [0u8; 20];
        m[1] = 1; // Binding request
        m[4..8].copy_from_slice(&STUN_MAGIC);
        assert_eq!(classify(&m), Stun);
        assert_eq!(classify(&m[..19]), Malformed);
        m[0] = 0x80; // top bits set: not STUN
        assert_eq!(classify(&m), Malformed);
        m[0] = 0;
        // With 8 bytes of attributes (a FINGERPRINT), counted in the length.
        let mut f = [0u8; 28];
        f[..20].copy_from_slice(&m);
        f[3] = 8;
        assert_eq!(classify(&f), Stun);
        // A length that disagrees with the payload, is not a multiple of 4, or is too large.
        for (len, bytes) in [(4u16, 28usize), (12, 28), (7, 27), (68, 88), (0, 24)] {
            let mut v = [0u8; 88];
            v[..20].copy_from_slice(&m);
            v[2..4].copy_from_slice(&len.to_be_bytes());
            assert_eq!(
                classify(&v[..bytes]),
                Malformed,
                "length {len}, {bytes} bytes"
            );
        }
        // A Binding success response, an indication: not a keep-alive request.
        for kind in [[0x01, 0x01], [0x00, 0x11]] {
            let mut r = m;
            r[..2].copy_from_slice(&kind);
            assert_eq!(classify(&r), Malformed, "{kind:?}");
        }
    }

    #[test]
    fn status_lines() {
        let cases: &[(&[u8], PayloadClass)] = &[
            (b"SIP/2.0 180 Ringing\r\n", Response),
            (b"sip/2.0 200 \r\n", Response),
            (b"SIP/2.0 20 OK\r\n", Malformed),
            (b"SIP/2.0 2000 OK\r\n", Malformed),
            (b"SIP/3.0 200 OK\r\n", Malformed),
        ];
        check(cases);
    }

    #[test]
    fn request_lines() {
        let cases: &[(&[u8], PayloadClass)] = &[
            (b"INVITE sip:bob@example.com SIP/2.0\r\n", Request),
            (
                b"!interesting-Method0123456789_*+`.%indeed'~ sip:1 SIP/2.0\r\n",
                Request,
            ),
            (b"REGISTER sip:x sip/2.0\r\n", Request),
            // No URI, no version, bad method characters, control bytes, no CR.
            (b"INVITE  SIP/2.0\r\n", Malformed),
            (b"INVITE sip:x\r\n", Malformed),
            (b"INV(TE sip:x SIP/2.0\r\n", Malformed),
            (b"INVITE sip:\x01x SIP/2.0\r\n", Malformed),
            (b"INVITE sip:x SIP/2.0", Malformed),
            (b" INVITE sip:x SIP/2.0\r\n", Malformed),
            (b"GET / HTTP/1.1\r\n\r\n", Malformed),
        ];
        check(cases);
    }

    #[test]
    fn bounds() {
        let long_method = [b'A'; MAX_METHOD_LEN + 1];
        let mut m = [0u8; 96];
        m[..MAX_METHOD_LEN].copy_from_slice(&long_method[..MAX_METHOD_LEN]);
        let rest = b" sip:x SIP/2.0\r\n";
        m[MAX_METHOD_LEN..MAX_METHOD_LEN + rest.len()].copy_from_slice(rest);
        assert_eq!(classify(&m[..MAX_METHOD_LEN + rest.len()]), Request);
        let mut over = [0u8; 96];
        over[..MAX_METHOD_LEN + 1].copy_from_slice(&long_method);
        over[MAX_METHOD_LEN + 1..MAX_METHOD_LEN + 1 + rest.len()].copy_from_slice(rest);
        assert_eq!(
            classify(&over[..MAX_METHOD_LEN + 1 + rest.len()]),
            Malformed
        );

        // A request line whose CR is the last byte scanned passes; one byte more does not.
        let mut line = [b'x'; MAX_FIRST_LINE + 2];
        line[..4].copy_from_slice(b"MSG ");
        let end = MAX_FIRST_LINE - 1;
        line[end - 8..end].copy_from_slice(REQUEST_SUFFIX);
        line[end] = b'\r';
        line[end + 1] = b'\n';
        assert_eq!(classify(&line[..end + 2]), Request);
        let mut longer = [b'x'; MAX_FIRST_LINE + 2];
        longer[..4].copy_from_slice(b"MSG ");
        longer[end + 1 - 8..end + 1].copy_from_slice(REQUEST_SUFFIX);
        longer[end + 1] = b'\r';
        assert_eq!(classify(&longer[..end + 2]), Malformed);
    }
}
