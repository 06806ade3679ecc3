//! Routing: which URIs name this proxy, loose routing (RFC 3261 16.4, 16.12), and where a
//! URI leads.

use std::net::{IpAddr, SocketAddr};

use sip_firewall_sip::{
    Transport,
    headers::{HeaderName, name_addr},
    uri::{self, Host, SipUri, Uri},
};

use super::msg::SipMsg;
use crate::seams::Destination;

/// What "us" is: our domains, our listen addresses (a wildcard standing for every address
/// of the host), the advertised host.
#[derive(Clone, Debug)]
pub struct Local {
    /// Lower case.
    pub domains: Vec<String>,
    pub listen: Vec<SocketAddr>,
    /// Host and port written into Via and Record-Route.
    pub adv_host: String,
    pub adv_port: Option<u16>,
    /// Every IP address that is ours: the specific listen addresses, the advertised host
    /// when it is an address, and the host's interface addresses when we listen on a
    /// wildcard (refreshed by [`Local::refresh`]).
    pub addrs: Vec<IpAddr>,
    /// Our TLS listen addresses (`[tls] listen`): ours too, and the port written into a
    /// TLS Via or Record-Route.
    pub tls_listen: Vec<SocketAddr>,
    /// Our WebSocket listen addresses (`[ws] listen`), likewise.
    pub ws_listen: Vec<SocketAddr>,
    /// Our secure WebSocket listen addresses (`[wss] listen`), likewise (WSS Via).
    pub wss_listen: Vec<SocketAddr>,
}

/// Most interface addresses taken from the host: a bound on what one `getifaddrs` may add.
const MAX_HOST_ADDRS: usize = 1024;

/// The host's interface addresses (`getifaddrs`), at most [`MAX_HOST_ADDRS`].
pub fn host_addresses() -> Vec<IpAddr> {
    let mut out = Vec::new();
    let mut ifap: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `ifap` with a list we walk read-only and free once below.
    if unsafe { libc::getifaddrs(&mut ifap) } != 0 {
        tracing::warn!(
            "getifaddrs failed: {}; only the listen addresses are ours",
            std::io::Error::last_os_error()
        );
        return out;
    }
    let mut cur = ifap;
    while !cur.is_null() && out.len() < MAX_HOST_ADDRS {
        // SAFETY: `cur` is a node of the list getifaddrs returned, not yet freed.
        let ifa = unsafe { &*cur };
        if !ifa.ifa_addr.is_null() {
            // SAFETY: ifa_addr points to a sockaddr whose family says which struct it is.
            let family = i32::from(unsafe { (*ifa.ifa_addr).sa_family });
            if family == libc::AF_INET {
                // SAFETY: an AF_INET address is a sockaddr_in.
                let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
                out.push(IpAddr::V4(std::net::Ipv4Addr::from(u32::from_be(
                    sin.sin_addr.s_addr,
                ))));
            } else if family == libc::AF_INET6 {
                // SAFETY: an AF_INET6 address is a sockaddr_in6.
                let sin6 = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in6) };
                out.push(IpAddr::V6(std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr)));
            }
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: the list came from getifaddrs and is freed exactly once.
    unsafe { libc::freeifaddrs(ifap) };
    out
}

impl Local {
    /// What "us" is, our addresses taken from the host now.
    pub fn new(
        domains: Vec<String>,
        listen: Vec<SocketAddr>,
        adv_host: String,
        adv_port: Option<u16>,
    ) -> Local {
        let mut l = Local {
            domains,
            listen,
            adv_host,
            adv_port,
            addrs: Vec::new(),
            tls_listen: Vec::new(),
            ws_listen: Vec::new(),
            wss_listen: Vec::new(),
        };
        l.refresh();
        l
    }

    /// Take our addresses again (interfaces come and go): the specific listen addresses,
    /// the advertised address, and the host's addresses when a listen address is a
    /// wildcard.
    pub fn refresh(&mut self) {
        let wildcard = self
            .listen
            .iter()
            .chain(&self.tls_listen)
            .chain(&self.ws_listen)
            .chain(&self.wss_listen)
            .any(|l| l.ip().is_unspecified());
        let host = if wildcard {
            host_addresses()
        } else {
            Vec::new()
        };
        self.set_addrs(host);
    }

    /// Our addresses: the listen and advertised ones and `host` (the interface addresses).
    pub fn set_addrs(&mut self, host: Vec<IpAddr>) {
        let mut addrs: Vec<IpAddr> = self
            .listen
            .iter()
            .chain(&self.tls_listen)
            .chain(&self.ws_listen)
            .chain(&self.wss_listen)
            .map(|l| l.ip())
            .filter(|i| !i.is_unspecified())
            .chain(host)
            .chain(adv_ip(&self.adv_host))
            .map(|i| i.to_canonical())
            .collect();
        addrs.sort();
        addrs.dedup();
        self.addrs = addrs;
    }

    /// Whether `port` is one we listen on (or advertise).
    fn our_port(&self, port: u16) -> bool {
        self.listen.iter().any(|l| l.port() == port)
            || self.tls_listen.iter().any(|l| l.port() == port)
            || self.ws_listen.iter().any(|l| l.port() == port)
            || self.wss_listen.iter().any(|l| l.port() == port)
            || self.adv_port == Some(port)
    }

    /// Whether an IP address is ours (the unspecified address, which reaches this host,
    /// counts as ours).
    pub fn is_our_ip(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        ip.is_unspecified() || self.addrs.contains(&ip)
    }

    /// Whether a destination is this very proxy: one of our addresses at one of our ports.
    /// Never a next hop (RFC 3261 16.3 step 4: a request sent to ourselves loops).
    pub fn is_own_destination(&self, addr: SocketAddr) -> bool {
        self.is_our_ip(addr.ip()) && self.our_port(addr.port())
    }

    /// Whether `host` (a domain name) is one of ours.
    pub fn is_our_domain(&self, host: &str) -> bool {
        let h = host.trim_end_matches('.');
        self.domains.iter().any(|d| d.eq_ignore_ascii_case(h))
    }

    /// Whether a SIP URI's host and port name this proxy: one of our domains, or our
    /// advertised name or one of our addresses, without a port or with one of ours.
    pub fn is_us(&self, u: &SipUri<'_>) -> bool {
        let port_ok = u.port.is_none_or(|p| self.our_port(p));
        match u.host {
            Host::Domain(d) => {
                self.is_our_domain(d)
                    || (d.trim_end_matches('.').eq_ignore_ascii_case(&self.adv_host) && port_ok)
            }
            h => h.ip().is_some_and(|ip| self.is_our_ip(ip)) && port_ok,
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

    /// With TLS listeners (`[tls] listen`): ours too, and named in TLS Via/Record-Route.
    pub fn with_tls(mut self, tls_listen: Vec<SocketAddr>) -> Local {
        self.tls_listen = tls_listen;
        self.refresh();
        self
    }

    /// `host:port` for a Via or Record-Route on transport `t`: TLS names our TLS port
    /// (RFC 3261 26.2: a separate listener, 5061 by default), the others our SIP port.
    pub fn hostport_for(&self, t: Transport) -> String {
        let listener = match t {
            Transport::Tls => self.tls_listen.first(),
            Transport::Ws => self.ws_listen.first(),
            Transport::Wss => self.wss_listen.first(),
            Transport::Datagram | Transport::Stream => None,
        };
        match listener {
            Some(l) => format!("{}:{}", self.adv_host, l.port()),
            None => self.hostport(),
        }
    }

    /// With WebSocket listeners (`[ws] listen`): ours too, and named in WS Via/Record-Route.
    pub fn with_ws(mut self, ws_listen: Vec<SocketAddr>) -> Local {
        self.ws_listen = ws_listen;
        self.refresh();
        self
    }

    /// With secure WebSocket listeners (`[wss] listen`): ours too, and named in WSS Via
    /// and Record-Route.
    pub fn with_wss(mut self, wss_listen: Vec<SocketAddr>) -> Local {
        self.wss_listen = wss_listen;
        self.refresh();
        self
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

/// HMAC-SHA256 of `parts` (each length-prefixed, so that no two lists collide) under
/// `key`.
pub fn mac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    use hmac::{Hmac, Mac as _};
    let Ok(mut m) = Hmac::<sha2::Sha256>::new_from_slice(key) else {
        // HMAC takes keys of any length: unreachable, and harmless (all zero).
        return [0; 32];
    };
    for p in parts {
        m.update(&(p.len() as u64).to_le_bytes());
        m.update(p);
    }
    m.finalize().into_bytes().into()
}

/// Bytes of the stamp's authentication tag (96 bits).
const STAMP_TAG: usize = 12;
/// Bytes of one sealed party: transport, IPv6 (IPv4-mapped) address, port.
const PARTY: usize = 19;

fn party_bytes(d: &Destination) -> [u8; PARTY] {
    let mut out = [0u8; PARTY];
    out[0] = match d.transport {
        Transport::Datagram => 0,
        Transport::Stream => 1,
        Transport::Tls => 2,
        Transport::Ws => 3,
        Transport::Wss => 4,
    };
    let ip = match d.addr.ip() {
        IpAddr::V4(v) => v.to_ipv6_mapped(),
        IpAddr::V6(v) => v,
    };
    out[1..17].copy_from_slice(&ip.octets());
    out[17..].copy_from_slice(&d.addr.port().to_be_bytes());
    out
}

fn party_of(b: &[u8]) -> Option<Destination> {
    let transport = match b.first()? {
        0 => Transport::Datagram,
        1 => Transport::Stream,
        2 => Transport::Tls,
        3 => Transport::Ws,
        4 => Transport::Wss,
        _ => return None,
    };
    let ip: [u8; 16] = b.get(1..17)?.try_into().ok()?;
    let port: [u8; 2] = b.get(17..19)?.try_into().ok()?;
    Some(Destination {
        addr: SocketAddr::new(
            std::net::Ipv6Addr::from(ip).to_canonical(),
            u16::from_be_bytes(port),
        ),
        transport,
    })
}

/// The keystream that hides the parties: as long as both, from the tag (a synthetic IV).
fn keystream(key: &[u8], tag: &[u8]) -> [u8; 2 * PARTY] {
    let a = mac(key, &[b"dialog-stream", tag, b"0"]);
    let b = mac(key, &[b"dialog-stream", tag, b"1"]);
    let mut out = [0u8; 2 * PARTY];
    out[..32].copy_from_slice(&a);
    out[32..].copy_from_slice(&b[..2 * PARTY - 32]);
    out
}

fn stamp_tag(key: &[u8], call_id: &str, from_tag: &str, parties: &[u8]) -> [u8; 32] {
    mac(
        key,
        &[b"dialog", call_id.as_bytes(), from_tag.as_bytes(), parties],
    )
}

/// The stamp of a dialog, sealed in our Record-Route: it binds the Call-ID, the caller's
/// From-tag and the two parties as the edge reaches them (`caller`: where the dialog-creating
/// request came from; `callee`: where it went), authenticated (HMAC-SHA256, 96 bits) and
/// encrypted (the parties' addresses are not shown to each other) under the proxy's key, a
/// deterministic authenticated encryption (SIV: the tag is the IV). Only the parties of
/// this very dialog get anything relayed with it, and only toward each other.
///
/// The To-tag is not bound: it does not exist yet when the dialog-creating request is
/// record-routed, and a forked request gets one per branch; the parties' addresses are what
/// keeps a replayed stamp from being used by or toward anybody else.
pub fn seal_dialog(
    key: &[u8],
    call_id: &str,
    from_tag: &str,
    caller: Destination,
    callee: Destination,
) -> String {
    let mut data = [0u8; 2 * PARTY];
    data[..PARTY].copy_from_slice(&party_bytes(&caller));
    data[PARTY..].copy_from_slice(&party_bytes(&callee));
    let tag = stamp_tag(key, call_id, from_tag, &data);
    let ks = keystream(key, &tag[..STAMP_TAG]);
    for (d, k) in data.iter_mut().zip(ks) {
        *d ^= k;
    }
    let mut out = crate::auth::digest::hex(&tag[..STAMP_TAG]);
    out.push_str(&crate::auth::digest::hex(&data));
    out
}

/// The parties (caller, callee) of a stamp, when it is one of ours for this Call-ID and one
/// of `tags` (the From-tag of the dialog-creating request: From or To of an in-dialog
/// request, depending on who sends it).
pub fn open_dialog(
    key: &[u8],
    call_id: &str,
    tags: &[&str],
    stamp: &str,
) -> Option<(Destination, Destination)> {
    let raw = unhex(stamp)?;
    if raw.len() != STAMP_TAG + 2 * PARTY {
        return None;
    }
    let (tag, sealed) = raw.split_at(STAMP_TAG);
    let ks = keystream(key, tag);
    let data: Vec<u8> = sealed.iter().zip(ks).map(|(c, k)| c ^ k).collect();
    let ok = tags.iter().any(|t| {
        let want = stamp_tag(key, call_id, t, &data);
        // Constant time: no early exit on the first differing byte.
        want[..STAMP_TAG]
            .iter()
            .zip(tag)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    });
    if !ok {
        return None;
    }
    Some((party_of(&data[..PARTY])?, party_of(&data[PARTY..])?))
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || s.len() > 2 * (STAMP_TAG + 2 * PARTY) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The Route parameter of a request one cluster node sends another through the Path of a
/// registration (RFC 3327; issue 13).
pub const CLUSTER_PARAM: &str = "sfwc";
/// How far the time of a cluster hop's seal may be from ours (clock skew between nodes and
/// the time in flight); older seals are refused, so a copied one is good for this long only,
/// and only for the same Call-ID and Request-URI.
pub const CLUSTER_HOP_WINDOW: u64 = 60;
/// Bytes of a cluster hop's tag (128 bits).
const HOP_TAG: usize = 16;
/// The longest AOR a cluster hop carries.
const HOP_MAX_AOR: usize = 512;

fn hop_tag(key: &[u8], unix: u64, aor: &str, call_id: &str, ruri: &str) -> [u8; 32] {
    mac(
        key,
        &[
            b"cluster-hop",
            &unix.to_le_bytes(),
            aor.as_bytes(),
            call_id.as_bytes(),
            ruri.as_bytes(),
        ],
    )
}

/// The seal a node puts on the Path Route of a request it sends to the node holding the
/// flow of `aor`'s contact `ruri`: only a node with the cluster's key (from the shared
/// `[auth] secret`) makes one, so the holding node relays to its flow for cluster nodes
/// only, never for an outsider who writes the same Route (no open relay).
pub fn seal_cluster_hop(key: &[u8], unix: u64, aor: &str, call_id: &str, ruri: &str) -> String {
    let tag = hop_tag(key, unix, aor, call_id, ruri);
    format!(
        "{unix}.{}.{}",
        crate::auth::digest::hex(aor.as_bytes()),
        crate::auth::digest::hex(&tag[..HOP_TAG])
    )
}

/// The AOR of a cluster hop's seal, when it is valid for this request now.
pub fn open_cluster_hop(
    key: &[u8],
    now_unix: u64,
    seal: &str,
    call_id: &str,
    ruri: &str,
) -> Option<String> {
    let mut it = seal.split('.');
    let unix: u64 = it.next()?.parse().ok()?;
    let aor_hex = it.next()?;
    let tag_hex = it.next()?;
    if it.next().is_some()
        || aor_hex.len() > 2 * HOP_MAX_AOR
        || tag_hex.len() != 2 * HOP_TAG
        || unix.abs_diff(now_unix) > CLUSTER_HOP_WINDOW
    {
        return None;
    }
    let hexbytes = |s: &str| -> Option<Vec<u8>> {
        if !s.len().is_multiple_of(2) {
            return None;
        }
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
            .collect()
    };
    let aor = String::from_utf8(hexbytes(aor_hex)?).ok()?;
    let tag = hexbytes(tag_hex)?;
    let want = hop_tag(key, unix, &aor, call_id, ruri);
    let diff = want[..HOP_TAG]
        .iter()
        .zip(&tag)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b));
    (diff == 0).then_some(aor)
}

/// The cluster hop parameter of a `<uri>;params` Route entry.
pub fn cluster_hop_of(entry: &str) -> Option<String> {
    match uri::parse(entry_uri(entry)?) {
        Ok(Uri::Sip(u)) => u.param(CLUSTER_PARAM).map(str::to_string),
        _ => None,
    }
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
    // RFC 3261 26.2.2 / RFC 5630: a sips URI is reached over TLS, as is transport=tls.
    let transport = match u.param("transport") {
        // RFC 7118: a ws contact cannot be dialled; sending to it fails unless the flow
        // it came on is open (the outbound finds no connection and opens none). A sips
        // one is a wss flow (5.2: `ws` names both).
        Some(t) if t.eq_ignore_ascii_case("ws") => {
            if u.secure {
                Transport::Wss
            } else {
                Transport::Ws
            }
        }
        _ if u.secure => Transport::Tls,
        Some(t) if t.eq_ignore_ascii_case("tls") => Transport::Tls,
        Some(t) if t.eq_ignore_ascii_case("tcp") => Transport::Stream,
        _ => Transport::Datagram,
    };
    match u.host.ip() {
        Some(ip) => Some(Destination {
            addr: SocketAddr::new(
                ip,
                u.port.unwrap_or(if transport == Transport::Tls {
                    5061
                } else {
                    5060
                }),
            ),
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

/// The advertised host as an address, when it is one (`[::1]` or `192.0.2.1`).
fn adv_ip(host: &str) -> Option<IpAddr> {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local() -> Local {
        Local::new(
            vec!["example.com".into()],
            vec!["127.0.0.1:5070".parse().unwrap()],
            "127.0.0.1".into(),
            Some(5070),
        )
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
        assert!(l.is_us(&sip("sip:127.0.0.1")), "no port: ours");
        assert!(!l.is_us(&sip("sip:127.0.0.2:5070")));
        assert!(!l.is_us(&sip("sip:other.org")));
        assert_eq!(
            l.domain_of(&sip("sip:bob@127.0.0.1:5070")).as_deref(),
            Some("example.com")
        );
        assert_eq!(l.hostport(), "127.0.0.1:5070");
    }

    #[test]
    fn wildcard_stands_for_every_host_address() {
        let mut l = Local::new(
            vec![],
            vec![
                "0.0.0.0:5060".parse().unwrap(),
                "[::]:5080".parse().unwrap(),
            ],
            "sip.example.net".into(),
            None,
        );
        l.set_addrs(vec![
            "192.0.2.7".parse().unwrap(),
            "2001:db8::7".parse().unwrap(),
        ]);
        assert!(l.is_us(&sip("sip:192.0.2.7")));
        assert!(l.is_us(&sip("sip:192.0.2.7:5060")));
        assert!(l.is_us(&sip("sip:[2001:db8::7]:5080")));
        assert!(!l.is_us(&sip("sip:192.0.2.7:5070")), "not our port");
        assert!(!l.is_us(&sip("sip:192.0.2.8")));
        assert!(l.is_us(&sip("sip:SIP.example.net.")), "the advertised name");
        assert!(l.is_own_destination("192.0.2.7:5080".parse().unwrap()));
        assert!(l.is_own_destination("[::ffff:192.0.2.7]:5060".parse().unwrap()));
        assert!(l.is_own_destination("0.0.0.0:5060".parse().unwrap()));
        assert!(!l.is_own_destination("192.0.2.7:5070".parse().unwrap()));
        // The real host: its loopback is ours when we listen on a wildcard.
        l.refresh();
        assert!(l.is_us(&sip("sip:127.0.0.1:5060")), "{:?}", l.addrs);
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
        let d = |a: &str, t| Destination {
            addr: a.parse().unwrap(),
            transport: t,
        };
        let (a, b) = (
            d("192.0.2.1:5060", Transport::Datagram),
            d("[2001:db8::5]:5070", Transport::Stream),
        );
        let stamp = seal_dialog(key, "call-1", "ft", a, b);
        assert_eq!(stamp.len(), 100);
        assert!(!stamp.contains("c0000201"), "the parties are not shown");
        assert_eq!(
            open_dialog(key, "call-1", &["x", "ft"], &stamp),
            Some((a, b))
        );
        assert_eq!(open_dialog(key, "call-2", &["ft"], &stamp), None);
        assert_eq!(open_dialog(key, "call-1", &["other"], &stamp), None);
        assert_eq!(open_dialog(b"other", "call-1", &["ft"], &stamp), None);
        // Any change to the sealed parties breaks the tag.
        let mut t = stamp.clone().into_bytes();
        t[60] = if t[60] == b'0' { b'1' } else { b'0' };
        let t = String::from_utf8(t).unwrap();
        assert_eq!(open_dialog(key, "call-1", &["ft"], &t), None);
        assert_eq!(open_dialog(key, "call-1", &["ft"], "zz"), None);
        assert_eq!(open_dialog(key, "call-1", &["ft"], "é1"), None);
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
        // TLS: a sips URI (RFC 3261 26.2.2) or transport=tls, 5061 by default.
        assert_eq!(
            resolve("sips:a@192.0.2.8", None),
            Some(Destination {
                addr: "192.0.2.8:5061".parse().unwrap(),
                transport: Transport::Tls
            })
        );
        assert_eq!(
            resolve("sip:a@192.0.2.8:5071;transport=TLS", None),
            Some(Destination {
                addr: "192.0.2.8:5071".parse().unwrap(),
                transport: Transport::Tls
            })
        );
        // A TLS party survives the dialog seal.
        let (a, c) = (
            d("192.0.2.1:5060", Transport::Datagram),
            d("192.0.2.9:40000", Transport::Tls),
        );
        let stamp = seal_dialog(b"k", "call-3", "ft", a, c);
        assert_eq!(open_dialog(b"k", "call-3", &["ft"], &stamp), Some((a, c)));
        // The TLS listener is ours and named in a TLS Via/Record-Route.
        let l = Local::new(
            vec![],
            vec!["127.0.0.1:5070".parse().unwrap()],
            "127.0.0.1".into(),
            Some(5070),
        )
        .with_tls(vec!["127.0.0.1:5071".parse().unwrap()]);
        assert_eq!(l.hostport_for(Transport::Tls), "127.0.0.1:5071");
        assert_eq!(l.hostport_for(Transport::Datagram), "127.0.0.1:5070");
        assert!(l.is_own_destination("127.0.0.1:5071".parse().unwrap()));
        // WebSocket (RFC 7118): a ws contact resolves to a WS destination, which only an
        // open flow reaches; our WS listener is named in a WS Via.
        assert_eq!(
            resolve("sip:a@192.0.2.8:8088;transport=ws", None).map(|d| d.transport),
            Some(Transport::Ws)
        );
        let l = l.with_ws(vec!["127.0.0.1:8088".parse().unwrap()]);
        assert_eq!(l.hostport_for(Transport::Ws), "127.0.0.1:8088");
        assert!(l.is_own_destination("127.0.0.1:8088".parse().unwrap()));
        let w = d("192.0.2.9:40001", Transport::Ws);
        let stamp = seal_dialog(b"k", "call-4", "ft", a, w);
        assert_eq!(open_dialog(b"k", "call-4", &["ft"], &stamp), Some((a, w)));
        // WSS is its own transport (RFC 7118 5.3): its listener, its flows in stamps.
        let l = l.with_wss(vec!["127.0.0.1:8443".parse().unwrap()]);
        assert_eq!(l.hostport_for(Transport::Wss), "127.0.0.1:8443");
        assert_eq!(l.hostport_for(Transport::Ws), "127.0.0.1:8088");
        assert!(l.is_own_destination("127.0.0.1:8443".parse().unwrap()));
        let s = d("192.0.2.9:40002", Transport::Wss);
        let stamp = seal_dialog(b"k", "call-5", "ft", a, s);
        assert_eq!(open_dialog(b"k", "call-5", &["ft"], &stamp), Some((a, s)));
        assert_eq!(
            resolve("sips:a@192.0.2.8:8443;transport=ws", None).map(|d| d.transport),
            Some(Transport::Wss)
        );
    }
}
