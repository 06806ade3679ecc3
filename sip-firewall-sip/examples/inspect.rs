//! Print the verdict of the message layer for each file given: `cargo run --example inspect -- FILE...`.

use sip_firewall_sip::{Limits, Transport, inspect};

fn main() {
    for path in std::env::args().skip(1) {
        match std::fs::read(&path) {
            Ok(buf) => match inspect(&buf, &Limits::default(), Transport::Datagram, &[]) {
                Ok(m) => println!("{path}: accepted {:?}", m.start),
                Err(r) => println!("{path}: {} {} ({:?})", r.reason.status(), r.reason, r.kind),
            },
            Err(e) => println!("{path}: {e}"),
        }
    }
}
