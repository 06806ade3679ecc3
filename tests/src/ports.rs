//! Loopback ports for tests that run side by side.

use std::net::{TcpListener, UdpSocket};

/// A loopback port free on both UDP and TCP (at the time of asking).
pub fn free_port() -> u16 {
    loop {
        let t = TcpListener::bind("127.0.0.1:0").expect("bind tcp");
        let port = t.local_addr().expect("addr").port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}
