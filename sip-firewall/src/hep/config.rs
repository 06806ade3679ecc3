//! `[hep]`: where SIP messages go as HEPv3 (Homer, heplify-server, `sngrep -L`).

use serde::Deserialize;

use crate::section::{Invalid, invalid};

/// How packets reach the collector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    Udp,
    Tcp,
}

/// The collector: scheme and `host:port`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Collector {
    pub scheme: Scheme,
    /// `host:port` (a name is resolved by the sender, again after a failure).
    pub address: String,
}

/// `[hep]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HepConfig {
    /// `udp://HOST:PORT` or `tcp://HOST:PORT`; absent: nothing is exported.
    pub collector: Option<String>,
    /// The capture agent id Homer shows (HEP chunk 0x000c).
    pub node_id: u32,
    /// The collector's password (HEP chunk 0x000e), if it wants one.
    pub password: Option<String>,
    /// What is exported: `sip` (every SIP message the proxy receives and sends), `drops`
    /// (the packets the XDP program dropped, sampled, each with its verdict).
    pub capture: Vec<String>,
    /// With `drops`: one dropped packet in this many is exported, chosen at random in the
    /// kernel (1: every one), 1..=[`MAX_DROPS_SAMPLE`]. Under a flood, what is copied still
    /// costs the XDP path a copy each: sample.
    pub drops_sample: u32,
    /// Messages waiting for the sender at most; beyond, they are dropped and counted in
    /// `sipfw_hep_dropped_total{reason="queue_full"}` (a slow collector never slows SIP).
    pub queue: usize,
}

impl Default for HepConfig {
    fn default() -> Self {
        HepConfig {
            collector: None,
            node_id: 2001,
            password: None,
            capture: vec!["sip".to_string()],
            drops_sample: 100,
            queue: 4096,
        }
    }
}

/// Most messages the queue may hold (a few hundred megabytes of the largest messages).
pub const MAX_QUEUE: usize = 65_536;
/// The sparsest sampling of `drops`.
pub const MAX_DROPS_SAMPLE: u32 = 1_000_000;

impl HepConfig {
    /// The collector, parsed (None: export off).
    pub fn collector(&self) -> Result<Option<Collector>, Invalid> {
        let Some(c) = &self.collector else {
            return Ok(None);
        };
        let (scheme, address) = match c.split_once("://") {
            Some(("udp", a)) => (Scheme::Udp, a),
            Some(("tcp", a)) => (Scheme::Tcp, a),
            _ => {
                return Err(invalid(
                    "hep.collector",
                    format!("{c:?}: write udp://HOST:PORT or tcp://HOST:PORT"),
                ));
            }
        };
        let port = address
            .rsplit_once(':')
            .and_then(|(host, p)| (!host.is_empty()).then_some(p))
            .and_then(|p| p.parse::<u16>().ok())
            .filter(|p| *p != 0);
        if port.is_none() {
            return Err(invalid(
                "hep.collector",
                format!("{c:?}: needs a host and a port, like udp://10.0.0.5:9060"),
            ));
        }
        Ok(Some(Collector {
            scheme,
            address: address.to_string(),
        }))
    }

    /// Whether SIP messages are captured.
    pub fn sip(&self) -> bool {
        self.capture.iter().any(|c| c == "sip")
    }

    /// Whether the packets the XDP program dropped are captured.
    pub fn drops(&self) -> bool {
        self.capture.iter().any(|c| c == "drops")
    }

    pub fn validate(&self) -> Result<(), Invalid> {
        self.collector()?;
        for c in &self.capture {
            match c.as_str() {
                "sip" | "drops" => {}
                other => {
                    return Err(invalid(
                        "hep.capture",
                        format!("{other:?} is not a capture: use \"sip\" and/or \"drops\""),
                    ));
                }
            }
        }
        if self.queue == 0 || self.queue > MAX_QUEUE {
            return Err(invalid(
                "hep.queue",
                format!("must be 1..={MAX_QUEUE} messages"),
            ));
        }
        if self.drops_sample == 0 || self.drops_sample > MAX_DROPS_SAMPLE {
            return Err(invalid(
                "hep.drops_sample",
                format!("must be 1..={MAX_DROPS_SAMPLE} (one dropped packet in N)"),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(collector: &str) -> HepConfig {
        HepConfig {
            collector: Some(collector.to_string()),
            ..HepConfig::default()
        }
    }

    #[test]
    fn collectors_parse_and_bad_ones_name_the_key() {
        assert_eq!(HepConfig::default().collector().unwrap(), None);
        let c = with("udp://10.0.0.5:9060").collector().unwrap().unwrap();
        assert_eq!(
            (c.scheme, c.address.as_str()),
            (Scheme::Udp, "10.0.0.5:9060")
        );
        let c = with("tcp://homer.example:9061")
            .collector()
            .unwrap()
            .unwrap();
        assert_eq!(c.scheme, Scheme::Tcp);
        let c = with("udp://[2001:db8::5]:9060")
            .collector()
            .unwrap()
            .unwrap();
        assert_eq!(c.address, "[2001:db8::5]:9060");
        for bad in [
            "10.0.0.5:9060",
            "http://x:1",
            "udp://x",
            "udp://:9060",
            "udp://x:0",
        ] {
            let e = with(bad).validate().unwrap_err();
            assert_eq!(e.key, "hep.collector", "{bad}");
        }
        let drops = HepConfig {
            capture: vec!["sip".into(), "drops".into()],
            ..HepConfig::default()
        };
        assert!(drops.validate().is_ok() && drops.sip() && drops.drops());
        let other = HepConfig {
            capture: vec!["rtp".into()],
            ..HepConfig::default()
        };
        assert_eq!(other.validate().unwrap_err().key, "hep.capture");
        for bad in [0, MAX_DROPS_SAMPLE + 1] {
            let s = HepConfig {
                drops_sample: bad,
                ..drops.clone()
            };
            assert_eq!(s.validate().unwrap_err().key, "hep.drops_sample", "{bad}");
        }
        let q = HepConfig {
            queue: 0,
            ..HepConfig::default()
        };
        assert_eq!(q.validate().unwrap_err().key, "hep.queue");
    }
}
