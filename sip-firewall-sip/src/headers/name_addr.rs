//! name-addr / addr-spec with parameters: From, To, Contact, Route, Record-Route
//! (RFC 3261 20.10, 20.20, 20.39, 20.30, 20.34).

use crate::lex::{Cursor, is_token_str, parse_u32};
use crate::uri::{self, Uri};

/// A malformed name-addr or addr-spec.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed address")]
pub struct AddrError;

/// One address with its header parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NameAddr<'a> {
    /// The display name as written (quoted-string with quotes, or tokens).
    pub display: Option<&'a str>,
    /// The URI text.
    pub uri_text: &'a str,
    /// The parsed URI.
    pub uri: Uri<'a>,
    /// The raw header parameters after the address, without the first `;`.
    pub params: &'a str,
    /// The `tag` parameter.
    pub tag: Option<&'a str>,
}

/// Parse a value that holds exactly one address (From, To).
pub fn parse_single(value: &str) -> Result<NameAddr<'_>, AddrError> {
    let mut c = Cursor::new(value);
    let a = parse_one(&mut c, false)?;
    c.skip_ws();
    if c.at_end() { Ok(a) } else { Err(AddrError) }
}

/// Parse a comma-separated list of addresses; `brackets_required` for Route and Record-Route.
/// Calls `f` for each one.
pub fn parse_list<'a>(
    value: &'a str,
    brackets_required: bool,
    mut f: impl FnMut(NameAddr<'a>),
) -> Result<(), AddrError> {
    let mut c = Cursor::new(value);
    loop {
        f(parse_one(&mut c, brackets_required)?);
        c.skip_ws();
        if c.at_end() {
            return Ok(());
        }
        if !c.eat(b',') {
            return Err(AddrError);
        }
    }
}

/// Contact: `*` or a list of addresses. Returns whether it was `*`.
pub fn parse_contact<'a>(value: &'a str, f: impl FnMut(NameAddr<'a>)) -> Result<bool, AddrError> {
    if value.trim() == "*" {
        return Ok(true);
    }
    parse_list(value, false, f).map(|()| false)
}

fn parse_one<'a>(c: &mut Cursor<'a>, brackets_required: bool) -> Result<NameAddr<'a>, AddrError> {
    c.skip_ws();
    let (display, bracketed) = display_name(c)?;
    let uri_text;
    if bracketed {
        c.eat(b'<');
        // No whitespace inside the brackets (RFC 4475 badaspec).
        uri_text = c.take_while(|b| b != b'>');
        if !c.eat(b'>') {
            return Err(AddrError);
        }
    } else {
        if brackets_required {
            return Err(AddrError);
        }
        uri_text = c.take_while(|b| !matches!(b, b';' | b',' | b' ' | b'\t'));
        // A URI with '?' (or ',' or ';') must be written in brackets (RFC 3261 20.10).
        if uri_text.contains('?') {
            return Err(AddrError);
        }
    }
    let uri = uri::parse(uri_text).map_err(|_| AddrError)?;
    let mut tag = None;
    let params_start = c.pos();
    let mut params_end = params_start;
    while c.eat_sep(b';') {
        let (name, value) = c
            .generic_param(|v| is_token_str(v) || uri::parse_hostport(v).is_ok())
            .ok_or(AddrError)?;
        if name.eq_ignore_ascii_case("tag") {
            let v = value.filter(|v| is_token_str(v)).ok_or(AddrError)?;
            if tag.replace(v).is_some() {
                return Err(AddrError);
            }
        } else if name.eq_ignore_ascii_case("expires") {
            value.and_then(parse_u32).ok_or(AddrError)?;
        } else if name.eq_ignore_ascii_case("q") {
            value.filter(|v| is_qvalue(v)).ok_or(AddrError)?;
        }
        params_end = c.pos();
    }
    let params = c
        .slice(params_start, params_end)
        .map(|p| p.trim_start().trim_start_matches(';').trim_start())
        .unwrap_or("");
    Ok(NameAddr {
        display,
        uri_text,
        uri,
        params,
        tag,
    })
}

/// The display name, if any: a quoted string or tokens before `<`; and whether an
/// addr-spec in brackets follows (else the cursor is back where it was: a bare addr-spec).
fn display_name<'a>(c: &mut Cursor<'a>) -> Result<(Option<&'a str>, bool), AddrError> {
    let start = c.pos();
    let mut display = None;
    let bracketed = match c.peek() {
        Some(b'"') => {
            display = Some(c.quoted().ok_or(AddrError)?);
            c.skip_ws();
            if c.peek() != Some(b'<') {
                return Err(AddrError);
            }
            true
        }
        Some(b'<') => true,
        _ => {
            // display-name = *(token LWS): tokens up to '<', else this is a bare addr-spec.
            let save = *c;
            let mut found = false;
            while c.token().is_some() {
                let after_token = c.pos();
                c.skip_ws();
                if c.peek() == Some(b'<') {
                    display = c.slice(start, after_token);
                    found = true;
                    break;
                }
            }
            if !found {
                *c = save;
            }
            found
        }
    };
    Ok((display, bracketed))
}

/// qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )
fn is_qvalue(v: &str) -> bool {
    let (int, frac) = v.split_once('.').unwrap_or((v, ""));
    frac.len() <= 3
        && frac.bytes().all(|b| b.is_ascii_digit())
        && match int {
            "0" => true,
            "1" => frac.bytes().all(|b| b == b'0'),
            _ => false,
        }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torture_addresses() {
        let a = parse_single("sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n").unwrap();
        assert_eq!(a.tag, Some("1918181833n"));
        let a = parse_single(
            "\"J Rosenberg \\\\\\\"\"       <sip:jdrosen@example.com> ;  tag = 98asjd8",
        )
        .unwrap();
        assert_eq!(a.tag, Some("98asjd8"));
        assert_eq!(a.display, Some("\"J Rosenberg \\\\\\\"\""));
        let a = parse_single("token1~` token2'+_ token3*%!.- <sip:mundane@example.com>;fromParam''~+*_!.-%=\"\u{440}\u{430}\";tag=_token~1'+`*%!-.").unwrap();
        assert_eq!(a.display, Some("token1~` token2'+_ token3*%!.-"));
        assert_eq!(a.tag, Some("_token~1'+`*%!-."));
        let a = parse_single("caller<sip:caller@example.com>;tag=323").unwrap();
        assert_eq!(a.display, Some("caller"));
        assert!(parse_single("isbn:2983792873").is_ok());
        assert!(parse_single("<http://www.example.com>;tag=3234233").is_ok());
        let mut n = 0;
        parse_contact("\"Quoted string \\\"\\\"\" <sip:jdrosen@example.com> ; newparam = newvalue ; secondparam ; q = 0.33", |_| n += 1).unwrap();
        assert_eq!(n, 1);
        assert!(parse_contact("*", |_| {}).unwrap());
    }

    #[test]
    fn refused() {
        assert!(parse_single("\"Mr. J. User <sip:j.user@example.com>").is_err());
        assert!(parse_single("\"Watson, Thomas\" < sip:t.watson@example.org >").is_err());
        assert!(parse_single("Watson, Thomas <sip:t.watson@example.org>").is_err());
        assert!(
            parse_contact(
                "sip:user@example.com?Route=%3Csip:sip.example.com%3E",
                |_| {}
            )
            .is_err()
        );
        assert!(
            parse_contact(
                "<sip:user@example.com?Route=%3Csip:sip.example.com%3E>",
                |_| {}
            )
            .is_ok()
        );
        assert!(parse_contact("\"Joe\" <sip:joe@example.org>;;;;", |_| {}).is_err());
        assert!(parse_single("sip:a@b.com;tag=1;tag=2").is_err());
        assert!(parse_single("sip:a@b.com, sip:c@d.com").is_err());
        assert!(parse_contact("<sip:a@b.com>;q=2", |_| {}).is_err());
        assert!(parse_contact("<sip:a@b.com>;expires=99999999999", |_| {}).is_err());
        assert!(parse_list("sip:a@b.com", true, |_| {}).is_err());
    }
}
