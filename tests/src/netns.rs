//! The namespaces of the tests (`sip-firewall-netns`), with `in_ns` taking the tests'
//! `anyhow` results.

pub use sip_firewall_netns::*;

/// Run `f` on a new thread that lives in namespace `ns` (see [`sip_firewall_netns::in_ns`]).
pub fn in_ns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    sip_firewall_netns::in_ns(ns, f)
}
