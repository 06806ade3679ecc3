//! Reading the daemon's `/metrics`, from inside a namespace or from here: one sample, every
//! sample by its series (`name{labels}`), and the scrapes of the daemon in namespace b
//! (`Metrics`).

use std::{
    collections::HashMap,
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    time::{Duration, Instant},
};

use crate::netns::{Pair, in_ns};

/// `GET /metrics` from inside namespace `ns`.
pub fn scrape(ns: &str, addr: SocketAddr) -> String {
    in_ns(ns, move || {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    })
    .expect("scrape")
}

/// The value of one sample (`name{labels}` exactly as exposed) in a scrape.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// The samples of an exposition text, by series.
pub fn parse(text: &str) -> HashMap<String, f64> {
    sip_firewall::metrics::samples(text).collect()
}

/// `GET /metrics` at `addr` (reachable from here): the samples, or `None` when the endpoint
/// does not answer 200.
pub fn scrape_opt(addr: SocketAddr) -> Option<HashMap<String, f64>> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n")
        .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let (_, body) = text.split_once("\r\n\r\n")?;
    if !text.starts_with("HTTP/1.1 200") {
        return None;
    }
    Some(parse(body))
}

/// The metrics of the daemon in namespace b.
pub struct Metrics(pub String);

impl Metrics {
    pub fn scrape(pair: &Pair) -> Metrics {
        Metrics(scrape(
            &pair.ns_b,
            "127.0.0.1:9464".parse().expect("metrics address"),
        ))
    }

    /// Scrape until `done` holds or `within` has passed: the last scrape either way, for the
    /// caller's exact assertions (instead of a fixed sleep before counting).
    pub fn poll(pair: &Pair, within: Duration, done: impl Fn(&Metrics) -> bool) -> Metrics {
        let t0 = Instant::now();
        loop {
            let m = Metrics::scrape(pair);
            if done(&m) || t0.elapsed() > within {
                return m;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Scrape until what `value` reads stops moving (equal in two scrapes 200 ms apart) or
    /// `within` has passed: for counts whose final value the test does not know beforehand.
    pub fn settled(pair: &Pair, within: Duration, value: impl Fn(&Metrics) -> f64) -> Metrics {
        let t0 = Instant::now();
        let mut last = Metrics::scrape(pair);
        loop {
            std::thread::sleep(Duration::from_millis(200));
            let m = Metrics::scrape(pair);
            if value(&m) == value(&last) || t0.elapsed() > within {
                return m;
            }
            last = m;
        }
    }

    /// One series, 0 when absent (not yet created).
    pub fn get(&self, series: &str) -> f64 {
        sample(&self.0, series).unwrap_or(0.0)
    }

    /// The sum of every series of metric `name` (all label values).
    pub fn sum(&self, name: &str) -> f64 {
        self.0
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter(|l| {
                l.strip_prefix(name)
                    .is_some_and(|r| r.starts_with('{') || r.starts_with(' '))
            })
            .filter_map(|l| l.rsplit_once(' ')?.1.trim().parse::<f64>().ok())
            .sum()
    }

    pub fn xdp(&self, reason: &str) -> f64 {
        self.get(&format!("sipfw_xdp_packets_total{{reason=\"{reason}\"}}"))
    }

    pub fn userspace_drops(&self, reason: &str) -> f64 {
        self.get(&format!(
            "sipfw_userspace_drops_total{{reason=\"{reason}\"}}"
        ))
    }

    /// Every SIP message the daemon's message layer saw (requests and responses).
    pub fn messages_seen(&self) -> f64 {
        self.sum("sipfw_sip_requests_total") + self.sum("sipfw_sip_responses_total")
    }
}
