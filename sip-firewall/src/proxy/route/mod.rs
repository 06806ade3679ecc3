//! Routing: which URIs name this proxy, loose routing (RFC 3261 16.4, 16.12), and where a
//! URI leads.

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use sip_firewall_sip::{
    Transport,
    headers::{HeaderName, name_addr},
    uri::{self, Host, SipUri, Uri},
};

use super::msg::SipMsg;
use crate::{seams::Destination, server::sides::Sides};

pub mod flow;
mod stamp;

#[cfg(test)]
pub use stamp::counters;
pub use stamp::{
    CLUSTER_HOP_WINDOW, CLUSTER_PARAM, Opened, STAMP_PARAM, StampKeys, cluster_hop_of, mac,
    open_cluster_hop, seal_cluster_hop, stamp_of,
};

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
    /// Per `listen` address (same order), the `host[:port]` it is advertised as: its
    /// entry's `advertise`, else `[proxy] advertise`; None: its own address.
    pub listen_advertise: Vec<Option<String>>,
    /// Whether `[proxy] advertise` names us for every listener (TLS and WebSocket ones too).
    pub advertised: bool,
    /// Which of our listen addresses a message to a destination leaves from.
    pub sides: Arc<Sides>,
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
            listen_advertise: Vec::new(),
            advertised: false,
            sides: Arc::default(),
        };
        l.refresh();
        l
    }

    /// With the host each listen address is advertised as (`listen` order; see
    /// [`Local::listen_advertise`]) and whether `[proxy] advertise` is set.
    pub fn with_advertised(mut self, per_listener: Vec<Option<String>>, global: bool) -> Local {
        self.listen_advertise = per_listener;
        self.advertised = global;
        self.refresh();
        self
    }

    /// Every listen address of every transport.
    fn all_listen(&self) -> impl Iterator<Item = &SocketAddr> {
        self.listen
            .iter()
            .chain(&self.tls_listen)
            .chain(&self.ws_listen)
            .chain(&self.wss_listen)
    }

    /// `host:port` for a Via or Record-Route on transport `t` of a message to `dest`: the
    /// listen address of `t` the message leaves from (the one routing to `dest`, see
    /// [`Sides`]) or what that listener is advertised as; [`Local::hostport_for`] when
    /// there is no choice to make.
    pub fn hostport_toward(&self, t: Transport, dest: IpAddr) -> String {
        let list = match t {
            Transport::Tls => &self.tls_listen,
            Transport::Ws => &self.ws_listen,
            Transport::Wss => &self.wss_listen,
            Transport::Datagram | Transport::Stream => &self.listen,
        };
        let side = self.sides.toward(dest).and_then(|src| {
            list.iter()
                .position(|l| l.ip().to_canonical() == src)
                .map(|i| (i, SocketAddr::new(src, list[i].port())))
        });
        let Some((i, at)) = side else {
            return self.hostport_for(t);
        };
        let own = match t {
            Transport::Datagram | Transport::Stream => {
                self.listen_advertise.get(i).cloned().flatten()
            }
            _ => None,
        };
        match own {
            Some(a) => a,
            None if self.advertised => self.hostport_for(t),
            None => at.to_string(),
        }
    }

    /// Take our addresses again (interfaces come and go): the specific listen addresses,
    /// the advertised address, and the host's addresses when a listen address is a
    /// wildcard.
    pub fn refresh(&mut self) {
        let wildcard = self.all_listen().any(|l| l.ip().is_unspecified());
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
            .all_listen()
            .map(|l| l.ip())
            .filter(|i| !i.is_unspecified())
            .chain(host)
            .chain(adv_ip(&self.adv_host))
            .chain(self.advertised_hosts().filter_map(adv_ip))
            .map(|i| i.to_canonical())
            .collect();
        addrs.sort();
        addrs.dedup();
        self.addrs = addrs;
        let specific: Vec<IpAddr> = self.all_listen().map(|l| l.ip()).collect();
        if self.sides.listen() != Sides::new(specific.iter().copied()).listen() {
            self.sides = Arc::new(Sides::new(specific));
        }
    }

    /// The hosts (without their ports) the listen addresses are advertised as.
    fn advertised_hosts(&self) -> impl Iterator<Item = &str> {
        self.listen_advertise
            .iter()
            .flatten()
            .map(|a| match uri::parse_hostport(a) {
                Ok((_, Some(_))) => a.rsplit_once(':').map_or(a.as_str(), |(h, _)| h),
                _ => a.as_str(),
            })
    }

    /// Whether `port` is one we listen on (or advertise).
    fn our_port(&self, port: u16) -> bool {
        self.all_listen().any(|l| l.port() == port)
            || self.adv_port == Some(port)
            || self
                .listen_advertise
                .iter()
                .flatten()
                .any(|a| matches!(uri::parse_hostport(a), Ok((_, Some(p))) if p == port))
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
                let d = d.trim_end_matches('.');
                self.is_our_domain(d)
                    || ((d.eq_ignore_ascii_case(&self.adv_host)
                        || self.advertised_hosts().any(|h| h.eq_ignore_ascii_case(d)))
                        && port_ok)
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
    entries(msg, HeaderName::Route)
}

/// The Path entries of a message (RFC 3327), in order, each as `<uri>;params`.
pub fn paths(msg: &SipMsg) -> Vec<String> {
    entries(msg, HeaderName::Other("Path"))
}

/// The Record-Route entries of a message, in order, each as `<uri>;params`.
pub fn record_routes(msg: &SipMsg) -> Vec<String> {
    entries(msg, HeaderName::RecordRoute)
}

/// The entries of a Route-like header (`name`), in order, each as `<uri>;params`.
fn entries(msg: &SipMsg, name: HeaderName<'_>) -> Vec<String> {
    let mut out = Vec::new();
    for v in msg.all(name) {
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

/// The most Route entries naming us that a request may carry at its top. Honest ones
/// carry one per pass through us, two where the pass changed transport (RFC 5658 double
/// record-routing), and two passes end up adjacent only on a spiral through a hop that does
/// not record-route: four. Beyond, the request is refused before any stamp is opened, so
/// that a Route set of made-up stamps costs no cryptography.
pub const MAX_OUR_ROUTES: usize = 4;

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

    /// Two listen addresses: what leaves toward a destination names the listener the kernel
    /// routes from (every loopback destination is reached from 127.0.0.1), or what that
    /// listener is advertised as, which is then us too.
    #[test]
    fn each_side_names_its_listener_or_its_advertise() {
        let listen = vec![
            "127.0.0.1:5070".parse().unwrap(),
            "127.0.0.2:5072".parse().unwrap(),
        ];
        let l = Local::new(vec![], listen.clone(), "127.0.0.1".into(), Some(5070));
        let to: IpAddr = "127.0.0.2".parse().unwrap();
        assert_eq!(l.hostport_toward(Transport::Datagram, to), "127.0.0.1:5070");
        let l = Local::new(vec![], listen.clone(), "127.0.0.1".into(), Some(5070))
            .with_advertised(vec![Some("edge.example.net:5080".into()), None], false);
        assert_eq!(
            l.hostport_toward(Transport::Stream, to),
            "edge.example.net:5080"
        );
        assert!(l.is_us(&sip("sip:edge.example.net:5080;lr")));
        assert!(!l.is_us(&sip("sip:other.example.net:5080;lr")));
        // `[proxy] advertise` for every listener without its own.
        let l = Local::new(vec![], listen, "sip.example.com".into(), None)
            .with_advertised(vec![Some("sip.example.com".into()); 2], true);
        assert_eq!(
            l.hostport_toward(Transport::Datagram, to),
            "sip.example.com"
        );
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
        // WSS is its own transport (RFC 7118 5.3): its listener.
        let l = l.with_wss(vec!["127.0.0.1:8443".parse().unwrap()]);
        assert_eq!(l.hostport_for(Transport::Wss), "127.0.0.1:8443");
        assert_eq!(l.hostport_for(Transport::Ws), "127.0.0.1:8088");
        assert!(l.is_own_destination("127.0.0.1:8443".parse().unwrap()));
        assert_eq!(
            resolve("sips:a@192.0.2.8:8443;transport=ws", None).map(|d| d.transport),
            Some(Transport::Wss)
        );
    }
}
