//! sip-firewall: the daemon and CLI as a library, so that integration tests and benchmarks
//! drive the same code as the binary.

pub mod config;
