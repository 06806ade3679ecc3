//! A feed's document to prefixes: what is not an address or a prefix is counted, never
//! guessed at. The document is the feed's text, hostile as any input.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::Deserialize;

use super::config::FeedFormat;

/// What a document holds.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Parsed {
    /// Each prefix once, host bits cleared.
    pub nets: Vec<IpNet>,
    /// Lines or items that are neither an address nor a prefix.
    pub invalid: usize,
}

/// Why a document is not a feed at all (its last good entries stay).
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    #[error("not APIBan JSON (an object with an \"ipaddress\" list): {0}")]
    Apiban(#[from] serde_json::Error),
    #[error("not text: {0}")]
    Text(#[from] std::str::Utf8Error),
}

/// APIBan's answer: `ipaddress` lists the addresses (`ID` is its paging cursor).
#[derive(Deserialize)]
struct Apiban {
    ipaddress: Vec<String>,
}

/// The prefixes of `body` in `format`.
pub fn parse(format: FeedFormat, body: &[u8]) -> Result<Parsed, ParseError> {
    let items: Vec<String> = match format {
        FeedFormat::Apiban => serde_json::from_slice::<Apiban>(body)?.ipaddress,
        FeedFormat::Cidr => std::str::from_utf8(body)?
            .lines()
            .map(|l| {
                let l = l.split(['#', ';']).next().unwrap_or("");
                l.trim().to_string()
            })
            .filter(|l| !l.is_empty())
            .collect(),
    };
    let mut out = Parsed::default();
    let mut seen = std::collections::HashSet::new();
    for item in items {
        match net_of(item.trim()) {
            Some(n) if seen.insert(n) => out.nets.push(n),
            Some(_) => {}
            None => out.invalid += 1,
        }
    }
    Ok(out)
}

/// An address (a host prefix) or a prefix; IPv4-mapped IPv6 as the IPv4 it maps.
fn net_of(s: &str) -> Option<IpNet> {
    let n = match s.parse::<IpNet>() {
        Ok(n) => n,
        Err(_) => IpNet::from(s.parse::<IpAddr>().ok()?),
    };
    Some(
        match n {
            IpNet::V6(v6) => match v6.addr().to_ipv4_mapped() {
                Some(v4) if v6.prefix_len() >= 96 => {
                    IpNet::new(IpAddr::V4(v4), v6.prefix_len() - 96).ok()?
                }
                _ => n,
            },
            IpNet::V4(_) => n,
        }
        .trunc(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(v: &[&str]) -> Vec<IpNet> {
        v.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn cidr_lines_comments_and_junk() {
        let body = b"# a list\n192.0.2.1\n198.51.100.0/24 ; a comment\n\n2001:db8::/48\n\
                     ::ffff:203.0.113.9\nnot-an-address\n192.0.2.1\n10.1.2.3/8\n999.1.1.1\n";
        let p = parse(FeedFormat::Cidr, body).unwrap();
        assert_eq!(
            p.nets,
            nets(&[
                "192.0.2.1/32",
                "198.51.100.0/24",
                "2001:db8::/48",
                "203.0.113.9/32",
                "10.0.0.0/8"
            ])
        );
        assert_eq!(p.invalid, 2);
        assert!(parse(FeedFormat::Cidr, b"\xff\xfe").is_err());
    }

    #[test]
    fn apiban_json() {
        let body = br#"{"ipaddress":["192.0.2.7","2001:db8::7","bogus"],"ID":"1700000000"}"#;
        let p = parse(FeedFormat::Apiban, body).unwrap();
        assert_eq!(p.nets, nets(&["192.0.2.7/32", "2001:db8::7/128"]));
        assert_eq!(p.invalid, 1);
        assert!(parse(FeedFormat::Apiban, b"{\"ID\":\"none\"}").is_err());
        assert!(parse(FeedFormat::Apiban, b"192.0.2.7\n").is_err());
    }
}
