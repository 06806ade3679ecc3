//! The policies that make the proxy a firewall: no open relay, scanners dropped.

pub mod config;
pub mod relay;
pub mod scanner;
