//! `cargo xtask bench parse`: messages/s of the SIP parser for an INVITE with SDP and a
//! REGISTER, against rsip 0.4 on the same inputs in the same run (sip-firewall-sip's
//! `parse` bench, a plain timing loop: median of several rounds, no criterion).

/// Build and run the benchmark in release mode; it prints its own table and ratios.
pub fn run() -> anyhow::Result<()> {
    eprintln!(
        "xtask: parse benchmark: ours (parse, and parse + sanity) vs rsip 0.4 (parse, and typed headers)"
    );
    crate::run(crate::cargo().args(["bench", "-p", "sip-firewall-sip", "--bench", "parse"]))
}
