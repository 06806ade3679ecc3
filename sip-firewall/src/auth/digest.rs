//! HTTP Digest as SIP uses it (RFC 3261 22.4, RFC 7616, RFC 8760): the hashes, the
//! `Authorization` / `Proxy-Authorization` parameters, and the challenge header.

use md5::Md5;
use sha2::{Digest as _, Sha256};

/// A digest algorithm we offer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Algorithm {
    Md5,
    Sha256,
}

impl Algorithm {
    /// From the `algorithm` parameter (case-insensitive; `-sess` variants are not offered).
    pub fn parse(s: &str) -> Option<Algorithm> {
        if s.eq_ignore_ascii_case("MD5") {
            Some(Algorithm::Md5)
        } else if s.eq_ignore_ascii_case("SHA-256") {
            Some(Algorithm::Sha256)
        } else {
            None
        }
    }

    /// The name as written in headers.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Sha256 => "SHA-256",
        }
    }

    /// Lower-case hex of the hash of `data`.
    pub fn hex(self, data: &[u8]) -> String {
        #[cfg(test)]
        HASHES.with(|n| n.set(n.get() + 1));
        match self {
            Algorithm::Md5 => hex(&Md5::digest(data)),
            Algorithm::Sha256 => hex(&Sha256::digest(data)),
        }
    }

    /// HA1 = H(user:realm:password).
    pub fn ha1(self, user: &str, realm: &str, password: &str) -> String {
        self.hex(format!("{user}:{realm}:{password}").as_bytes())
    }
}

#[cfg(test)]
thread_local! {
    /// Digest hashes computed on this thread: tests count the work, never the time.
    pub(crate) static HASHES: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// The bytes of hex digits (either case; their number even), None for anything else (a
/// sign, a space: `from_str_radix` alone would take "+f").
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The expected `response` for qop=auth (RFC 7616 3.4.1):
/// H(HA1:nonce:nc:cnonce:qop:H(method:uri)).
pub fn response_auth(
    alg: Algorithm,
    ha1: &str,
    nonce: &str,
    nc: &str,
    cnonce: &str,
    method: &str,
    uri: &str,
) -> String {
    let ha2 = alg.hex(format!("{method}:{uri}").as_bytes());
    alg.hex(format!("{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}").as_bytes())
}

/// The parameters of a Digest credentials header.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub realm: String,
    pub nonce: String,
    pub uri: String,
    pub response: String,
    /// As written; absent means MD5.
    pub algorithm: Option<String>,
    pub cnonce: Option<String>,
    pub nc: Option<String>,
    pub qop: Option<String>,
}

/// Why credentials could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CredentialsError {
    #[error("not a Digest scheme")]
    Scheme,
    #[error("malformed parameter list")]
    Syntax,
    #[error("missing parameter {0}")]
    Missing(&'static str),
}

impl Credentials {
    /// Parse `Digest k=v, k="v", ...`.
    pub fn parse(value: &str) -> Result<Credentials, CredentialsError> {
        let value = value.trim_start();
        let (scheme, rest) = value
            .split_once([' ', '\t'])
            .ok_or(CredentialsError::Scheme)?;
        if !scheme.eq_ignore_ascii_case("Digest") {
            return Err(CredentialsError::Scheme);
        }
        let mut c = Credentials::default();
        let (mut user, mut realm, mut nonce, mut uri, mut response) =
            (None, None, None, None, None);
        for (k, v) in params(rest)? {
            let slot = match k.to_ascii_lowercase().as_str() {
                "username" => &mut user,
                "realm" => &mut realm,
                "nonce" => &mut nonce,
                "uri" => &mut uri,
                "response" => &mut response,
                "algorithm" => &mut c.algorithm,
                "cnonce" => &mut c.cnonce,
                "nc" => &mut c.nc,
                "qop" => &mut c.qop,
                _ => continue,
            };
            *slot = Some(v);
        }
        c.username = user.ok_or(CredentialsError::Missing("username"))?;
        c.realm = realm.ok_or(CredentialsError::Missing("realm"))?;
        c.nonce = nonce.ok_or(CredentialsError::Missing("nonce"))?;
        c.uri = uri.ok_or(CredentialsError::Missing("uri"))?;
        c.response = response.ok_or(CredentialsError::Missing("response"))?;
        Ok(c)
    }
}

/// Split `k=v, k="quoted", ...` into pairs, unescaping quoted-pairs.
fn params(s: &str) -> Result<Vec<(&str, String)>, CredentialsError> {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    loop {
        while i < b.len() && matches!(b[i], b' ' | b'\t' | b',') {
            i += 1;
        }
        if i >= b.len() {
            return Ok(out);
        }
        let k0 = i;
        while i < b.len() && sip_firewall_sip::lex::is_token(b[i]) {
            i += 1;
        }
        let key = s.get(k0..i).ok_or(CredentialsError::Syntax)?;
        while i < b.len() && matches!(b[i], b' ' | b'\t') {
            i += 1;
        }
        if key.is_empty() || b.get(i) != Some(&b'=') {
            return Err(CredentialsError::Syntax);
        }
        i += 1;
        while i < b.len() && matches!(b[i], b' ' | b'\t') {
            i += 1;
        }
        let mut v = String::new();
        if b.get(i) == Some(&b'"') {
            i += 1;
            loop {
                match b.get(i) {
                    None => return Err(CredentialsError::Syntax),
                    Some(b'"') => {
                        i += 1;
                        break;
                    }
                    Some(b'\\') => {
                        // quoted-pair (RFC 3261 25.1): the escaped character is a whole
                        // UTF-8 character, not one byte; a byte step would leave `i` inside
                        // it and the next slice would panic.
                        let ch = s
                            .get(i + 1..)
                            .and_then(|r| r.chars().next())
                            .ok_or(CredentialsError::Syntax)?;
                        v.push(ch);
                        i += 1 + ch.len_utf8();
                    }
                    Some(_) => {
                        // Copy one UTF-8 character (positions stay on char boundaries
                        // because every delimiter is ASCII).
                        let ch = s
                            .get(i..)
                            .and_then(|r| r.chars().next())
                            .ok_or(CredentialsError::Syntax)?;
                        v.push(ch);
                        i += ch.len_utf8();
                    }
                }
            }
        } else {
            let v0 = i;
            while i < b.len() && !matches!(b[i], b',' | b' ' | b'\t') {
                i += 1;
            }
            v.push_str(s.get(v0..i).ok_or(CredentialsError::Syntax)?);
        }
        out.push((key, v));
    }
}

/// One `WWW-Authenticate` / `Proxy-Authenticate` value (RFC 7616 3.3).
pub fn challenge(realm: &str, nonce: &str, alg: Algorithm, stale: bool) -> String {
    format!(
        "Digest realm=\"{realm}\", nonce=\"{nonce}\", algorithm={}, qop=\"auth\"{}",
        alg.as_str(),
        if stale { ", stale=true" } else { "" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 2617 3.5 (qop=auth, MD5): Mufasa / "Circle Of Life".
    #[test]
    fn rfc2617_vector() {
        let alg = Algorithm::Md5;
        let ha1 = alg.ha1("Mufasa", "testrealm@host.com", "Circle Of Life");
        let r = response_auth(
            alg,
            &ha1,
            "dcd98b7102dd2f0e8b11d0f600bfb0c093",
            "00000001",
            "0a4f113b",
            "GET",
            "/dir/index.html",
        );
        assert_eq!(r, "6629fae49393a05397450978507c4ef1");
    }

    /// RFC 7616 3.9.1: the same exchange with MD5 and SHA-256 (password "Circle of Life").
    #[test]
    fn rfc7616_vectors() {
        let nonce = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v";
        let cnonce = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ";
        let uri = "/dir/index.html";
        let md5 = Algorithm::Md5.ha1("Mufasa", "http-auth@example.org", "Circle of Life");
        assert_eq!(
            response_auth(Algorithm::Md5, &md5, nonce, "00000001", cnonce, "GET", uri),
            "8ca523f5e9506fed4657c9700eebdbec"
        );
        let sha = Algorithm::Sha256.ha1("Mufasa", "http-auth@example.org", "Circle of Life");
        assert_eq!(
            response_auth(
                Algorithm::Sha256,
                &sha,
                nonce,
                "00000001",
                cnonce,
                "GET",
                uri
            ),
            "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
        );
    }

    #[test]
    fn parse_credentials() {
        let c = Credentials::parse(
            "Digest username=\"bob\",realm=\"example.com\", nonce=\"abc\", uri=\"sip:example.com\", response=\"0123\", algorithm=MD5, cnonce=\"x\\\"y\", qop=auth, nc=00000001",
        )
        .unwrap();
        assert_eq!(c.username, "bob");
        assert_eq!(c.realm, "example.com");
        assert_eq!(c.cnonce.as_deref(), Some("x\"y"));
        assert_eq!(c.qop.as_deref(), Some("auth"));
        assert_eq!(c.nc.as_deref(), Some("00000001"));
        assert_eq!(
            Credentials::parse("Basic dXNlcjpwYXNz"),
            Err(CredentialsError::Scheme)
        );
        assert_eq!(
            Credentials::parse("Digest username=\"bob\", realm=\"r\""),
            Err(CredentialsError::Missing("nonce"))
        );
        assert_eq!(
            Credentials::parse("Digest username=\"bob"),
            Err(CredentialsError::Syntax)
        );
    }

    /// A backslash before a multi-byte character inside a quoted string ("\\é") must not
    /// leave the scanner in the middle of the character (a panic, "byte index is not a char
    /// boundary", would kill the SIP listener): the pair is one
    /// character, and every other spelling around it is an error or a value, never a panic.
    #[test]
    fn quoted_pair_before_multibyte_character() {
        let c = Credentials::parse(
            "Digest username=\"\\é\", realm=\"r\", nonce=\"n\", uri=\"u\", response=\"x\"",
        )
        .unwrap();
        assert_eq!(c.username, "é");
        for hostile in [
            "Digest username=\"\\é",
            "Digest username=\"\\",
            "Digest username=\"\\\u{10ffff}\"",
            "Digest username=\"é\\€\\😀\", realm=\\é",
            "Digest é=\"x\"",
            "Digest username=é\\é, realm=\"\\\"\\é\"",
        ] {
            let _ = Credentials::parse(hostile);
        }
    }

    /// Every prefix of a credentials line full of multi-byte characters and escapes: no panic.
    #[test]
    fn every_prefix_of_hostile_credentials() {
        let line =
            "Digest username=\"a\\é\\\\ü\", realm=\"é€\", nonce=\\😀, uri=\"\\\"\", response=é";
        for (i, _) in line.char_indices() {
            let _ = Credentials::parse(&line[..i]);
        }
    }

    #[test]
    fn challenge_text() {
        assert_eq!(
            challenge("example.com", "n1", Algorithm::Sha256, true),
            "Digest realm=\"example.com\", nonce=\"n1\", algorithm=SHA-256, qop=\"auth\", stale=true"
        );
    }
}
