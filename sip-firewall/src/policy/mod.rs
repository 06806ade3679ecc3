//! The policies that make the proxy a firewall: no open relay, scanners dropped (by their
//! User-Agent, `scanner.rs`, and by their sweep over user names, `sweep.rs`).

pub mod config;
pub mod relay;
pub mod scanner;
pub mod sweep;
