//! Routing: which URIs name this proxy, loose routing (RFC 3261 16.4, 16.12), and where a
//! URI leads.

use std::net::SocketAddr;

use sip_firewall_sip::{
    Transport,
    headers::{HeaderName, name_addr},
    uri::{self, Host, SipUri, Uri},
};

use super::msg::SipMsg;
use crate::server::core::Destination;

/// What "us" is: our domains, our listen addresses, the advertised host.
#[derive(Clone, Debug)]
pub struct Local {
    /// Lower case.
    pub domains: Vec<String>,
    pub listen: Vec<SocketAddr>,
    /// Host and port written into Via and Record-Route.
    pub adv_host: String,
    pub adv_port: Option<u16>,
}

impl Local {
    /// Whether `host` (a domain name) is one of ours.
    pub fn is_our_domain(&self, host: &str) -> bool {
        let h = host.trim_end_matches('.');
        self.domains.iter().any(|d| d.eq_ignore_ascii_case(h))
    }

    /// Whether a SIP URI's host and port name this proxy.
    pub fn is_us(&self, u: &SipUri<'_>) -> bool {
        let port = u.port.unwrap_or(if u.secure { 5061 } else { 5060 });
        match u.host {
            Host::Domain(d) => {
                self.is_our_domain(d)
                    || (d.eq_ignore_ascii_case(&self.adv_host)
                        && self.adv_port.unwrap_or(5060) == port)
            }
            h => {
                let ip = h.ip();
                self.listen
                    .iter()
                    .any(|l| Some(l.ip()) == ip && (l.port() == port || u.port.is_none()))
                    || (ip.map(|i| i.to_string()).as_deref() == Some(self.adv_host.as_str())
                        && self.adv_port.unwrap_or(5060) == port)
            }
        }
    }

    /// The domain a URI's host stands for: the domain itself, or our first domain when the
    /// host is one of our addresses (phones that dial the proxy by IP).
    pub fn domain_of(&self, u: &SipUri<'_>) -> Option<String> {
        match u.host {
            Host::Domain(d) if self.is_our_domain(d) => {
                Some(d.trim_end_matches('.').to_ascii_lowercase())
            }
            _ if self.is_us(u) => self.domains.first().cloned(),
            _ => None,
        }
    }

    /// `host[:port]` as written in our Via and Record-Route.
    pub fn hostport(&self) -> String {
        match self.adv_port {
            Some(p) => format!("{}:{p}", self.adv_host),
            None => self.adv_host.clone(),
        }
    }
}

/// The Route entries of a message, in order, each as `<uri>;params`.
pub fn routes(msg: &SipMsg) -> Vec<String> {
    let mut out = Vec::new();
    for v in msg.all(HeaderName::Route) {
        let ok = name_addr::parse_list(v, true, |a| {
            out.push(if a.params.is_empty() {
                format!("<{}>", a.uri_text)
            } else {
                format!("<{}>;{}", a.uri_text, a.params)
            })
        });
        if ok.is_err() {
            // Keep what cannot be parsed as it was: it is not ours to pop.
            out.push(v.to_string());
        }
    }
    out
}

/// The URI inside a `<uri>;params` entry.
pub fn entry_uri(entry: &str) -> Option<&str> {
    let start = entry.find('<')? + 1;
    let end = entry[start..].find('>')? + start;
    Some(&entry[start..end])
}

/// The URI parameter of our Record-Route that binds it to its dialog.
pub const STAMP_PARAM: &str = "sfw";

/// The stamp of a dialog: an HMAC of its Call-ID under the proxy's key, so that only a
/// Record-Route we set for this very dialog routes an in-dialog request through us (a
/// forged `Route: <sip:us;lr>` would otherwise make us relay anything anywhere).
pub fn dialog_stamp(key: &[u8], call_id: &str) -> String {
    use hmac::{Hmac, Mac as _};
    let Ok(mut m) = Hmac::<sha2::Sha256>::new_from_slice(key) else {
        return String::new();
    };
    m.update(call_id.as_bytes());
    let mut h = crate::auth::digest::hex(&m.finalize().into_bytes());
    h.truncate(16);
    h
}

/// The stamp parameter of a `<uri>;params` Route entry.
pub fn stamp_of(entry: &str) -> Option<String> {
    match uri::parse(entry_uri(entry)?) {
        Ok(Uri::Sip(u)) => u.param(STAMP_PARAM).map(str::to_string),
        _ => None,
    }
}

/// Loose routing: remove the Route entries at the top that name us, and return them
/// (empty: the request was not routed through us).
pub fn pop_our_routes(msg: &mut SipMsg, local: &Local) -> Vec<String> {
    let list = routes(msg);
    let ours = list
        .iter()
        .take_while(|e| {
            entry_uri(e)
                .and_then(|u| uri::parse(u).ok())
                .is_some_and(|u| matches!(u, Uri::Sip(s) if local.is_us(&s)))
        })
        .count();
    if ours > 0 {
        msg.replace_all(HeaderName::Route, list[ours..].to_vec());
    }
    list[..ours].to_vec()
}

/// Where a URI leads: its host when that is an IP address (port 5060/5061 by default,
/// TCP when `transport=tcp`), else the outbound proxy when one is configured. DNS is not
/// resolved here (the core must never block).
pub fn resolve(uri_text: &str, outbound: Option<SocketAddr>) -> Option<Destination> {
    let Ok(Uri::Sip(u)) = uri::parse(uri_text) else {
        return None;
    };
    let transport = match u.param("transport") {
        Some(t) if t.eq_ignore_ascii_case("tcp") => Transport::Stream,
        _ => Transport::Datagram,
    };
    match u.host.ip() {
        Some(ip) => Some(Destination {
            addr: SocketAddr::new(ip, u.port.unwrap_or(if u.secure { 5061 } else { 5060 })),
            transport,
        }),
        None => outbound.map(|addr| Destination {
            addr,
            transport: Transport::Datagram,
        }),
    }
}

/// The next hop of a request: the top Route when there is one, else the Request-URI.
pub fn next_hop(msg: &SipMsg, outbound: Option<SocketAddr>) -> Option<Destination> {
    match routes(msg).first() {
        Some(e) => resolve(entry_uri(e)?, outbound),
        None => resolve(msg.request_uri()?, outbound),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local() -> Local {
        Local {
            domains: vec!["example.com".into()],
            listen: vec!["127.0.0.1:5070".parse().unwrap()],
            adv_host: "127.0.0.1".into(),
            adv_port: Some(5070),
        }
    }

    fn sip(s: &str) -> SipUri<'_> {
        match uri::parse(s).unwrap() {
            Uri::Sip(u) => u,
            _ => panic!(),
        }
    }

    #[test]
    fn us() {
        let l = local();
        assert!(l.is_us(&sip("sip:example.com")));
        assert!(l.is_us(&sip("sip:bob@EXAMPLE.com.")));
        assert!(l.is_us(&sip("sip:127.0.0.1:5070;lr")));
        assert!(!l.is_us(&sip("sip:127.0.0.1:5060;lr")));
        assert!(!l.is_us(&sip("sip:other.org")));
        assert_eq!(
            l.domain_of(&sip("sip:bob@127.0.0.1:5070")).as_deref(),
            Some("example.com")
        );
        assert_eq!(l.hostport(), "127.0.0.1:5070");
    }

    #[test]
    fn loose_routing() {
        let l = local();
        let mut m = SipMsg::request("BYE", "sip:bob@192.0.2.5:5062");
        m.push(
            HeaderName::Route,
            "<sip:127.0.0.1:5070;lr>, <sip:192.0.2.9;lr>".into(),
        );
        m.push(
            HeaderName::Route,
            "<sip:192.0.2.10;lr;transport=tcp>".into(),
        );
        assert_eq!(pop_our_routes(&mut m, &l), vec!["<sip:127.0.0.1:5070;lr>"]);
        assert_eq!(
            routes(&m),
            vec!["<sip:192.0.2.9;lr>", "<sip:192.0.2.10;lr;transport=tcp>"]
        );
        assert_eq!(
            next_hop(&m, None),
            Some(Destination {
                addr: "192.0.2.9:5060".parse().unwrap(),
                transport: Transport::Datagram
            })
        );
        assert!(pop_our_routes(&mut m, &l).is_empty());
        let key = b"k";
        let stamp = dialog_stamp(key, "call-1");
        assert_eq!(stamp.len(), 16);
        assert_ne!(stamp, dialog_stamp(key, "call-2"));
        assert_ne!(stamp, dialog_stamp(b"other", "call-1"));
        assert_eq!(stamp_of(&format!("<sip:p;lr;sfw={stamp}>")), Some(stamp));
        assert_eq!(stamp_of("<sip:p;lr>"), None);
        m.remove(HeaderName::Route);
        assert_eq!(
            next_hop(&m, None).unwrap().addr,
            "192.0.2.5:5062".parse().unwrap()
        );
        assert_eq!(resolve("sip:x@other.org", None), None);
        assert_eq!(
            resolve("sip:x@other.org", Some("192.0.2.1:5080".parse().unwrap()))
                .unwrap()
                .addr,
            "192.0.2.1:5080".parse().unwrap()
        );
        assert_eq!(
            resolve("sip:a@[2001:db8::1]:5070;transport=TCP", None),
            Some(Destination {
                addr: "[2001:db8::1]:5070".parse().unwrap(),
                transport: Transport::Stream
            })
        );
    }
}
