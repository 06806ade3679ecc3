//! Small single-purpose header values: CSeq, Call-ID, numbers, Content-Type, option tags.

use crate::lex::{Cursor, is_digits, is_token_str, parse_u32};

/// CSeq: `1*DIGIT LWS Method`, the number a 32-bit unsigned integer (RFC 3261 8.1.1.5).
pub fn cseq(value: &str) -> Option<(u32, &str)> {
    let mut c = Cursor::new(value);
    let n = parse_u32(c.take_while(|b| b.is_ascii_digit()))?;
    if !c.skip_ws() {
        return None;
    }
    let method = c.token()?;
    c.skip_ws();
    c.at_end().then_some((n, method))
}

/// Content-Length: `1*DIGIT`, bounded to keep arithmetic safe.
pub fn content_length(value: &str) -> Option<usize> {
    // Anything with more than 9 digits is far beyond any limit this layer allows.
    if !is_digits(value) {
        return None;
    }
    let v = value.trim_start_matches('0');
    if v.len() > 9 {
        return None;
    }
    Some(v.parse().unwrap_or(0))
}

/// Max-Forwards: `1*DIGIT`, at most 255 (RFC 3261 20.22 gives the range 0-255).
pub fn max_forwards(value: &str) -> Option<u8> {
    parse_u32(value).and_then(|v| u8::try_from(v).ok())
}

/// Expires: delta-seconds, 0 to 2^32-1 (RFC 3261 20.19).
pub fn expires(value: &str) -> Option<u32> {
    parse_u32(value)
}

/// callid = word [ "@" word ]
pub fn call_id(value: &str) -> bool {
    fn is_word(s: &str) -> bool {
        !s.is_empty()
            && s.bytes().all(|b| {
                crate::lex::is_token(b) && b != b'@'
                    || matches!(
                        b,
                        b'(' | b')'
                            | b'<'
                            | b'>'
                            | b':'
                            | b'\\'
                            | b'"'
                            | b'/'
                            | b'['
                            | b']'
                            | b'?'
                            | b'{'
                            | b'}'
                    )
            })
    }
    match value.split_once('@') {
        Some((a, b)) => is_word(a) && is_word(b),
        None => is_word(value),
    }
}

/// Content-Type: `m-type SLASH m-subtype *(SEMI m-parameter)`.
pub fn content_type(value: &str) -> bool {
    let mut c = Cursor::new(value);
    if c.token().is_none() || !c.eat_sep(b'/') || c.token().is_none() {
        return false;
    }
    while c.eat_sep(b';') {
        if c.token().is_none() || !c.eat_sep(b'=') {
            return false;
        }
        let ok = if c.peek() == Some(b'"') {
            c.quoted().is_some()
        } else {
            c.token().is_some()
        };
        if !ok {
            return false;
        }
    }
    c.skip_ws();
    c.at_end()
}

/// An option-tag list (`token *(COMMA token)`); calls `f` with each tag. `allow_empty` for
/// Supported, which may be empty.
pub fn option_tags<'a>(value: &'a str, allow_empty: bool, mut f: impl FnMut(&'a str)) -> bool {
    if value.trim().is_empty() {
        return allow_empty;
    }
    value.split(',').all(|t| {
        let t = t.trim_matches(|c| c == ' ' || c == '\t');
        let ok = is_token_str(t);
        if ok {
            f(t);
        }
        ok
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cseq_forms() {
        assert_eq!(cseq("0009 INVITE"), Some((9, "INVITE")));
        assert_eq!(cseq("36893488147419103232 REGISTER"), None);
        assert_eq!(cseq("1INVITE"), None);
        assert_eq!(cseq("1 INVITE x"), None);
        assert_eq!(cseq("1 RE%47IST%45R"), Some((1, "RE%47IST%45R")));
    }

    #[test]
    fn numbers() {
        assert_eq!(content_length("-999"), None);
        assert_eq!(content_length("000150"), Some(150));
        assert_eq!(content_length("9999999999"), None);
        assert_eq!(max_forwards("0068"), Some(68));
        assert_eq!(max_forwards("300"), None);
        assert_eq!(expires("10000000000000000000"), None);
    }

    #[test]
    fn call_ids() {
        assert!(call_id("intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{"));
        assert!(call_id("a@b"));
        assert!(!call_id("a@b@c"));
        assert!(!call_id("a b"));
        assert!(!call_id(""));
        assert!(!call_id("a@"));
    }

    #[test]
    fn types_and_tags() {
        assert!(content_type("multipart/mixed;boundary=7a9cbec02ceef655"));
        assert!(content_type("application/sdp"));
        assert!(!content_type("application"));
        let mut tags = vec![];
        assert!(option_tags(
            "noProxiesSupportThis, norDoAnyProxiesSupportThis",
            false,
            |t| tags.push(t)
        ));
        assert_eq!(tags, ["noProxiesSupportThis", "norDoAnyProxiesSupportThis"]);
        assert!(!option_tags("a,,b", false, |_| {}));
        assert!(option_tags("", true, |_| {}));
    }
}
