//! TCP connection slots, in total and per source (IPv6: per /64), shared by the connections
//! we accept and those the proxy opens (one source must not hold them all with CRLF
//! keep-alives, and connections opened toward any next hop count too).

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex},
};

use crate::seams::source_key;

/// The slots.
pub struct TcpSlots {
    total: usize,
    per_source: usize,
    used: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

/// Why a slot was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Full {
    Total,
    PerSource,
}

/// A slot held; given back on drop.
pub struct Slot {
    slots: Arc<TcpSlots>,
    key: IpAddr,
}

impl TcpSlots {
    pub fn new(total: usize, per_source: usize) -> Arc<TcpSlots> {
        Arc::new(TcpSlots {
            total,
            per_source,
            used: Mutex::new((0, HashMap::new())),
        })
    }

    /// Take a slot for a connection with `peer`.
    pub fn take(self: &Arc<Self>, peer: IpAddr) -> Result<Slot, Full> {
        let key = source_key(peer);
        let mut g = crate::guard::lock(&self.used, "tcp slots");
        let (total, per) = &mut *g;
        if *total >= self.total {
            return Err(Full::Total);
        }
        let n = per.entry(key).or_insert(0);
        if *n >= self.per_source {
            return Err(Full::PerSource);
        }
        *n += 1;
        *total += 1;
        Ok(Slot {
            slots: self.clone(),
            key,
        })
    }

    /// The bounds: (in total, per source).
    pub fn limits(&self) -> (usize, usize) {
        (self.total, self.per_source)
    }

    /// Connections held (total, with `peer`'s key).
    pub fn used(&self, peer: IpAddr) -> (usize, usize) {
        let g = crate::guard::lock(&self.used, "tcp slots");
        (g.0, g.1.get(&source_key(peer)).copied().unwrap_or(0))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut g = crate::guard::lock(&self.slots.used, "tcp slots");
        let (total, per) = &mut *g;
        *total = total.saturating_sub(1);
        if let Some(n) = per.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                per.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_in_total_and_per_source() {
        let s = TcpSlots::new(4, 2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let a1 = s.take(a).unwrap();
        let _a2 = s.take(a).unwrap();
        assert_eq!(s.take(a).err(), Some(Full::PerSource));
        let _b1 = s.take(b).unwrap();
        let v6a: IpAddr = "2001:db8::1".parse().unwrap();
        let v6b: IpAddr = "2001:db8::ffff:2".parse().unwrap();
        let _c = s.take(v6a).unwrap();
        assert_eq!(s.take(v6b).err(), Some(Full::Total));
        drop(a1);
        assert_eq!(s.used(a), (3, 1));
        let _c2 = s.take(v6b).unwrap();
        // The same /64: counted together.
        assert_eq!(s.used(v6a), (4, 2));
    }
}
