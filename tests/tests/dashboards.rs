//! The Grafana dashboard and the Prometheus alert rules in `deploy/` reference only metrics
//! the daemon registers (every `"sipfw_..."` name in its source).

use std::{collections::BTreeSet, path::Path};

/// Every `sipfw_...` identifier in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("sipfw_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        out.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    out
}

/// The names the daemon registers: string literals in its source.
fn registered() -> BTreeSet<String> {
    fn walk(dir: &Path, out: &mut BTreeSet<String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let text = std::fs::read_to_string(&p).unwrap();
                for part in text.split('"').skip(1).step_by(2) {
                    if part.starts_with("sipfw_")
                        && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    {
                        out.insert(part.to_string());
                    }
                }
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../sip-firewall/src"),
        &mut out,
    );
    out
}

#[test]
fn dashboards_and_alerts_use_existing_metrics() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let known = registered();
    assert!(known.contains("sipfw_xdp_packets_total"), "{known:?}");
    let dashboard = std::fs::read_to_string(root.join("deploy/grafana/sip-firewall.json")).unwrap();
    let parsed: serde_json::Value = serde_json::from_str(&dashboard).expect("dashboard is JSON");
    let mut exprs = String::new();
    for panel in parsed["panels"].as_array().expect("panels") {
        for t in panel["targets"].as_array().expect("targets") {
            exprs.push_str(t["expr"].as_str().expect("expr"));
            exprs.push('\n');
        }
    }
    let alerts = std::fs::read_to_string(root.join("deploy/prometheus/alerts.yml")).unwrap();
    let alert_exprs: String = alerts
        .lines()
        .filter_map(|l| l.trim().strip_prefix("expr:"))
        .collect::<Vec<_>>()
        .join("\n");
    assert_eq!(
        alerts.matches("- alert:").count(),
        6,
        "ban storm, fast path detached, flood, map filling, fraud suspension, cluster cut off"
    );
    assert!(
        alerts.contains("sipfw_map_entries / sipfw_map_capacity) > 0.8"),
        "an alert at 80% map fill"
    );
    // The fraud guard's metrics are on the dashboard and a suspension alerts.
    for m in [
        "sipfw_calls_active",
        "sipfw_fraud_refused_total",
        "sipfw_fraud_suspended_accounts",
    ] {
        assert!(exprs.contains(m), "the dashboard shows {m}");
    }
    assert!(alert_exprs.contains("sipfw_fraud_suspended_accounts"));
    // Connections by transport, TLS handshakes and DNS routing are on the dashboard.
    for m in [
        "sipfw_sip_connections_open",
        "sipfw_sip_connections_total",
        "sipfw_sip_tls_handshakes_total",
        "sipfw_proxy_dns_routing_total",
    ] {
        assert!(exprs.contains(m), "the dashboard shows {m}");
    }
    // A node cut off from the cluster's Redis alerts.
    assert!(alert_exprs.contains("sipfw_cluster_connected == 0"));
    for (what, text) in [("dashboard", exprs), ("alerts", alert_exprs)] {
        let used = metric_names(&text);
        assert!(!used.is_empty(), "{what} uses no metric");
        // A histogram is exposed as its _bucket, _sum and _count series.
        let unknown: Vec<_> = used
            .difference(&known)
            .filter(|n| {
                !["_bucket", "_sum", "_count"]
                    .iter()
                    .any(|s| n.strip_suffix(s).is_some_and(|b| known.contains(b)))
            })
            .collect();
        assert!(
            unknown.is_empty(),
            "{what} uses metrics the daemon does not have: {unknown:?}"
        );
    }
}
