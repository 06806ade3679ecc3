//! Answering a digest challenge (RFC 3261 22.4, RFC 7616: MD5 or SHA-256, qop=auth) for an
//! account: the `Authorization` of a 401, the `Proxy-Authorization` of a 407.

use sip_firewall::auth::digest::{Algorithm, response_auth};

use super::{
    Account,
    msg::{headers, param, status},
};

/// The challenge of `resp` (a 401 or 407) offered for `alg`: a challenge without an
/// `algorithm` parameter is MD5 (RFC 7616 3.3).
pub fn challenge(resp: &str, alg: Algorithm) -> Option<&str> {
    let name = if status(resp) == 407 {
        "Proxy-Authenticate"
    } else {
        "WWW-Authenticate"
    };
    headers(resp, name).into_iter().find(|c| {
        param(c, "algorithm")
            .and_then(Algorithm::parse)
            .unwrap_or(Algorithm::Md5)
            == alg
    })
}

/// The credentials (nonce-count 1, client nonce `cnonce`) answering `challenge` for `method`
/// with digest `uri`, as the value of an `Authorization` header.
pub fn credentials(
    challenge: &str,
    account: &Account,
    alg: Algorithm,
    method: &str,
    uri: &str,
    cnonce: &str,
) -> String {
    let realm = param(challenge, "realm").unwrap_or_default();
    let nonce = param(challenge, "nonce").unwrap_or_default();
    let ha1 = alg.ha1(&account.user, realm, &account.password);
    let r = response_auth(alg, &ha1, nonce, "00000001", cnonce, method, uri);
    format!(
        "Digest username=\"{}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\", \
         response=\"{r}\", algorithm={}, qop=auth, nc=00000001, cnonce=\"{cnonce}\"",
        account.user,
        alg.as_str()
    )
}

/// The header line (`Authorization` for a 401, `Proxy-Authorization` for a 407) answering
/// `resp`'s challenge for `alg`; panics when `resp` offers none.
pub fn answer(resp: &str, account: &Account, alg: Algorithm, method: &str, uri: &str) -> String {
    let c =
        challenge(resp, alg).unwrap_or_else(|| panic!("no {} challenge in: {resp}", alg.as_str()));
    let name = if status(resp) == 407 {
        "Proxy-Authorization"
    } else {
        "Authorization"
    };
    let value = credentials(c, account, alg, method, uri, "c0ffee");
    format!("{name}: {value}\r\n")
}

#[cfg(test)]
mod tests {
    use sip_firewall::auth::digest::{self, Credentials};

    use super::*;

    /// The credentials name the algorithm of the challenge answered and verify as the
    /// daemon computes them, MD5 and SHA-256 alike.
    #[test]
    fn md5_and_sha256_challenges_are_answered_with_their_own_algorithm() {
        let account = Account::new("alice", "example.com", "s3cret");
        let resp = format!(
            "SIP/2.0 407 Proxy Authentication Required\r\nProxy-Authenticate: {}\r\n\
             Proxy-Authenticate: {}\r\nContent-Length: 0\r\n\r\n",
            digest::challenge("example.com", "n-md5", Algorithm::Md5, false),
            digest::challenge("example.com", "n-sha", Algorithm::Sha256, false),
        );
        for (alg, nonce) in [(Algorithm::Md5, "n-md5"), (Algorithm::Sha256, "n-sha")] {
            let line = answer(&resp, &account, alg, "INVITE", "sip:bob@example.com");
            let value = line
                .strip_prefix("Proxy-Authorization: ")
                .and_then(|v| v.strip_suffix("\r\n"))
                .expect("a Proxy-Authorization line");
            let c = Credentials::parse(value).expect("credentials");
            assert_eq!(c.algorithm.as_deref(), Some(alg.as_str()));
            assert_eq!(c.nonce, nonce);
            let ha1 = alg.ha1("alice", "example.com", "s3cret");
            let want = response_auth(
                alg,
                &ha1,
                nonce,
                "00000001",
                "c0ffee",
                "INVITE",
                "sip:bob@example.com",
            );
            assert_eq!(c.response, want);
        }
    }
}
