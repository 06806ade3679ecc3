//! Character classes and a small cursor over header values (RFC 3261 section 25.1).
//!
//! Everything here works on `&str` that is already valid UTF-8 and slices only at ASCII
//! delimiters, through `str::get`, so no input can make it panic.

/// Byte classes, looked up rather than computed: the parser's inner loops run on them.
const TOKEN: u8 = 1;
/// Allowed as-is in a header value: visible ASCII, SP, HTAB and UTF-8 bytes.
const TEXT: u8 = 2;

static CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        let token = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
            );
        let text = (b >= 0x20 && b != 0x7f) || b == b'\t';
        t[i] = if token { TOKEN } else { 0 } | if text { TEXT } else { 0 };
        i += 1;
    }
    t
};

/// `token` characters: alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~".
#[inline]
pub fn is_token(b: u8) -> bool {
    CLASS[usize::from(b)] & TOKEN != 0
}

/// Whether every byte may stand in a header value as-is (no control characters, hence
/// no folds either).
#[inline]
pub fn is_plain_text(s: &[u8]) -> bool {
    s.iter().all(|&b| CLASS[usize::from(b)] & TEXT != 0)
}

/// `unreserved` = alphanum / mark.
pub fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'_' | b'.' | b'!' | b'~' | b'*' | b'\'' | b'(' | b')'
        )
}

/// `reserved` characters of RFC 3261.
pub fn is_reserved(b: u8) -> bool {
    matches!(
        b,
        b';' | b'/' | b'?' | b':' | b'@' | b'&' | b'=' | b'+' | b'$' | b','
    )
}

/// SP or HTAB.
pub fn is_ws(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// A non-empty string made only of `token` characters.
pub fn is_token_str(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_token)
}

/// Whether `s` is `1*DIGIT`.
pub fn is_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// Parse `1*DIGIT` into a u32, failing on overflow (RFC 4475 scalar02/scalarlg).
pub fn parse_u32(s: &str) -> Option<u32> {
    if !is_digits(s) {
        return None;
    }
    let mut v: u32 = 0;
    for b in s.bytes() {
        v = v.checked_mul(10)?.checked_add(u32::from(b - b'0'))?;
    }
    Some(v)
}

/// Validate a run of characters where `%` must start a `%HH` escape and every other byte must
/// satisfy `allowed`; `s` must be non-empty when `nonempty`.
pub fn check_escaped(s: &str, nonempty: bool, allowed: impl Fn(u8) -> bool) -> bool {
    if nonempty && s.is_empty() {
        return false;
    }
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            match (b.get(i + 1), b.get(i + 2)) {
                (Some(h), Some(l)) if h.is_ascii_hexdigit() && l.is_ascii_hexdigit() => i += 3,
                _ => return false,
            }
        } else if allowed(b[i]) {
            i += 1;
        } else {
            return false;
        }
    }
    true
}

/// A cursor over a header value.
#[derive(Clone, Copy, Debug)]
pub struct Cursor<'s> {
    s: &'s str,
    pos: usize,
}

impl<'s> Cursor<'s> {
    /// A cursor at the start of `s`.
    pub fn new(s: &'s str) -> Self {
        Cursor { s, pos: 0 }
    }

    /// The next byte, if any.
    pub fn peek(&self) -> Option<u8> {
        self.s.as_bytes().get(self.pos).copied()
    }

    /// Whether everything was consumed.
    pub fn at_end(&self) -> bool {
        self.pos >= self.s.len()
    }

    /// Current byte offset.
    pub fn pos(&self) -> usize {
        self.pos
    }

    /// The text between two positions of this cursor.
    pub fn slice(&self, start: usize, end: usize) -> Option<&'s str> {
        self.s.get(start..end)
    }

    /// The unconsumed remainder.
    pub fn rest(&self) -> &'s str {
        self.s.get(self.pos..).unwrap_or("")
    }

    /// Skip SP/HTAB; returns whether any was skipped.
    pub fn skip_ws(&mut self) -> bool {
        let start = self.pos;
        while self.peek().is_some_and(is_ws) {
            self.pos += 1;
        }
        self.pos > start
    }

    /// Consume `b` if it is next.
    pub fn eat(&mut self, b: u8) -> bool {
        if self.peek() == Some(b) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    /// Skip whitespace, consume `b`, skip whitespace (the RFC's SEMI, COMMA, EQUAL, SLASH...).
    pub fn eat_sep(&mut self, b: u8) -> bool {
        let save = self.pos;
        self.skip_ws();
        if self.eat(b) {
            self.skip_ws();
            true
        } else {
            self.pos = save;
            false
        }
    }

    /// Consume the longest run of bytes satisfying `f` (ASCII predicates only).
    pub fn take_while(&mut self, f: impl Fn(u8) -> bool) -> &'s str {
        let start = self.pos;
        while self.peek().is_some_and(&f) {
            self.pos += 1;
        }
        self.s.get(start..self.pos).unwrap_or("")
    }

    /// A non-empty token, or None (cursor unchanged).
    pub fn token(&mut self) -> Option<&'s str> {
        let t = self.take_while(is_token);
        if t.is_empty() { None } else { Some(t) }
    }

    /// A quoted-string including its quotes; None if unterminated or malformed.
    pub fn quoted(&mut self) -> Option<&'s str> {
        let b = self.s.as_bytes();
        let start = self.pos;
        if b.get(start) != Some(&b'"') {
            return None;
        }
        let mut i = start + 1;
        loop {
            match b.get(i) {
                None => return None,
                Some(b'"') => {
                    self.pos = i + 1;
                    return self.s.get(start..self.pos);
                }
                // quoted-pair = "\" (%x00-09 / %x0B-0C / %x0E-7F)
                Some(b'\\') => match b.get(i + 1) {
                    Some(&c) if c <= 0x7f && c != b'\n' && c != b'\r' => i += 2,
                    _ => return None,
                },
                // qdtext = LWS / %x21 / %x23-5B / %x5D-7E / UTF8-NONASCII
                Some(&c) if is_ws(c) || c == 0x21 || (0x23..=0x7e).contains(&c) || c >= 0x80 => {
                    i += 1
                }
                Some(_) => return None,
            }
        }
    }

    /// The rest of a `;` generic-param (RFC 3261 25.1: `token [EQUAL gen-value]`, gen-value
    /// = token / host / quoted-string): its name and its value, a quoted one with its quotes.
    /// An unquoted value is a run of token characters, ':' and brackets that `unquoted_ok`
    /// must accept (what a token or a host is, the header says). None when malformed.
    pub fn generic_param(
        &mut self,
        unquoted_ok: impl Fn(&str) -> bool,
    ) -> Option<(&'s str, Option<&'s str>)> {
        let name = self.token()?;
        if !self.eat_sep(b'=') {
            return Some((name, None));
        }
        let value = if self.peek() == Some(b'"') {
            self.quoted()?
        } else {
            let v = self.take_while(|b| is_token(b) || matches!(b, b':' | b'[' | b']'));
            unquoted_ok(v).then_some(v)?
        };
        Some((name, Some(value)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_strings() {
        let mut c = Cursor::new("\"J Rosenberg \\\\\\\"\" <x>");
        assert_eq!(c.quoted(), Some("\"J Rosenberg \\\\\\\"\""));
        assert_eq!(c.rest(), " <x>");
        assert_eq!(Cursor::new("\"Mr. J. User <sip:x>").quoted(), None);
        assert_eq!(Cursor::new("\"a\u{1}b\"").quoted(), None);
        assert_eq!(
            Cursor::new("\"NUL:\\\u{0}\"").quoted(),
            Some("\"NUL:\\\u{0}\"")
        );
    }

    #[test]
    fn numbers() {
        assert_eq!(parse_u32("0009"), Some(9));
        assert_eq!(parse_u32("4294967295"), Some(u32::MAX));
        assert_eq!(parse_u32("4294967296"), None);
        assert_eq!(parse_u32("-1"), None);
        assert_eq!(parse_u32(""), None);
    }

    #[test]
    fn escapes() {
        assert!(check_escaped("a%41b", true, is_unreserved));
        assert!(!check_escaped("a%4", true, is_unreserved));
        assert!(!check_escaped("a%zz", true, is_unreserved));
        assert!(!check_escaped("", true, is_unreserved));
    }
}
