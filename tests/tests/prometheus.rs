//! Prometheus conformance: `promtool check rules` on the alert rules, `promtool check metrics`
//! on a scrape of a running daemon (with XDP attached, and some drops and a ban so the
//! labelled series exist).

use std::{
    io::Write as _,
    net::SocketAddr,
    process::{Command, Stdio},
};

use sip_firewall_tests::{
    edge::{Edge, xdp_args},
    metrics::scrape,
    run_said, said,
    skip::require_tool,
};

fn promtool(test: &str) -> bool {
    require_tool(
        test,
        "promtool",
        "apt-get install prometheus; cargo xtask setup does",
    )
}

#[test]
fn alert_rules_pass_promtool() {
    if !promtool("alert_rules_pass_promtool") {
        return;
    }
    let rules =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/prometheus/alerts.yml");
    let (ok, text) = run_said(
        Command::new("promtool")
            .args(["check", "rules"])
            .arg(&rules),
    );
    eprintln!("{text}");
    assert!(ok, "{text}");
    assert!(text.contains("SUCCESS"), "{text}");
}

#[test]
fn a_scrape_passes_promtool_check_metrics() {
    let test = "a_scrape_passes_promtool_check_metrics";
    if !promtool(test) {
        return;
    }
    let Some(mut d) = Edge::root(test, "prom", "", xdp_args(true)) else {
        return;
    };
    // A ban and a list entry, so the labelled series have samples.
    let b = d.cli(&["ban", "add", "192.0.2.77", "--for", "1h"]);
    assert!(b.status.success());
    let text = scrape(
        &d.pair.ns_b,
        "127.0.0.1:9464".parse::<SocketAddr>().unwrap(),
    );
    let (_, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
    assert!(body.contains("sipfw_xdp_packets_total"), "{body}");
    let mut p = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool");
    p.stdin
        .take()
        .expect("stdin")
        .write_all(body.as_bytes())
        .expect("feed promtool");
    let out = p.wait_with_output().expect("promtool");
    let report = said(&out);
    let (code, _) = d.stop();
    assert_eq!(code, 0);
    eprintln!("promtool check metrics: {report}");
    assert!(out.status.success(), "promtool check metrics:\n{report}");
    assert!(
        report.trim().is_empty(),
        "promtool check metrics:\n{report}"
    );
}
