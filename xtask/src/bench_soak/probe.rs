//! What the soak reads while it runs: the daemon's `/metrics` (scraped with curl inside the
//! edge's namespace, where it listens), SIPp's statistics file, and the setup times SIPp
//! wrote since the last look.

use std::{collections::BTreeMap, io::Read as _, io::Seek as _, path::PathBuf};

use crate::bench_flood::net::Net;

/// Where the daemon serves its metrics, inside ns E.
pub const METRICS: &str = "127.0.0.1:9464";

/// The daemon's samples by series (`name{labels}`).
pub struct Metrics(BTreeMap<String, f64>);

impl Metrics {
    /// `GET /metrics` from inside ns E; empty when it does not answer.
    pub fn scrape(net: &Net) -> Metrics {
        let out = net
            .exec(&net.e, "curl")
            .args([
                "-s",
                "--max-time",
                "5",
                &format!("http://{METRICS}/metrics"),
            ])
            .output();
        let text = out
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        Metrics::parse(&text)
    }

    pub fn parse(text: &str) -> Metrics {
        Metrics(
            text.lines()
                .filter(|l| !l.starts_with('#'))
                .filter_map(|l| {
                    let (k, v) = l.rsplit_once(' ')?;
                    Some((k.to_string(), v.parse().ok()?))
                })
                .collect(),
        )
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The series of metric `name`, each with its labels.
    pub fn series<'a>(&'a self, name: &'a str) -> impl Iterator<Item = (&'a str, f64)> + 'a {
        self.0.iter().filter_map(move |(k, v)| {
            let rest = k.strip_prefix(name)?;
            (rest.is_empty() || rest.starts_with('{')).then_some((rest, *v))
        })
    }

    /// Non-zero samples of what looks like a gauge: no counter (`_total`), no histogram
    /// part, no fixed capacity, none of the process collector's.
    pub fn gauges(&self) -> impl Iterator<Item = (&str, f64)> {
        self.0.iter().filter_map(|(k, v)| {
            let name = k.split('{').next().unwrap_or(k);
            let skip = ["_total", "_bucket", "_sum", "_count", "_capacity"]
                .iter()
                .any(|s| name.ends_with(s))
                || !name.starts_with("sipfw_");
            (!skip && *v != 0.0).then_some((k.as_str(), *v))
        })
    }

    /// The sum of metric `name`'s series.
    pub fn sum(&self, name: &str) -> f64 {
        self.series(name).map(|(_, v)| v).sum()
    }
}

/// Columns of the last line of a SIPp statistics file (`-trace_stat`), by header name.
pub fn stat(csv: &str, names: &[&str]) -> Vec<u64> {
    let lines: Vec<&str> = csv.lines().filter(|l| !l.trim().is_empty()).collect();
    let (Some(head), Some(last)) = (lines.first(), lines.get(1..).and_then(|l| l.last())) else {
        return vec![0; names.len()];
    };
    let header: Vec<&str> = head.split(';').collect();
    let last: Vec<&str> = last.split(';').collect();
    names
        .iter()
        .map(|n| {
            header
                .iter()
                .position(|h| h == n)
                .and_then(|i| last.get(i)?.trim().parse().ok())
                .unwrap_or(0)
        })
        .collect()
}

/// SIPp's counts of one statistics file: (created, successful, failed).
pub fn counts(path: &std::path::Path) -> (u64, u64, u64) {
    let csv = std::fs::read_to_string(path).unwrap_or_default();
    let v = stat(
        &csv,
        &["OutgoingCall(C)", "SuccessfulCall(C)", "FailedCall(C)"],
    );
    (v[0], v[1], v[2])
}

/// The response-time file SIPp writes (`-trace_rtt`, one line per call), read from where
/// the last look stopped.
pub struct Rtts {
    dir: PathBuf,
    offset: u64,
}

impl Rtts {
    pub fn new(dir: PathBuf) -> Rtts {
        Rtts { dir, offset: 0 }
    }

    /// The setup times (ms) written since the last call, sorted; a line not yet complete
    /// waits for the next.
    pub fn since_last(&mut self) -> Vec<f64> {
        let Some(path) = std::fs::read_dir(&self.dir).ok().and_then(|d| {
            d.flatten()
                .map(|e| e.path())
                .find(|p| p.to_string_lossy().ends_with("_rtt.csv"))
        }) else {
            return Vec::new();
        };
        let mut text = String::new();
        let read = std::fs::File::open(&path).and_then(|mut f| {
            f.seek(std::io::SeekFrom::Start(self.offset))?;
            f.read_to_string(&mut text)
        });
        if read.is_err() {
            return Vec::new();
        }
        let Some(end) = text.rfind('\n') else {
            return Vec::new();
        };
        self.offset += end as u64 + 1;
        let mut out: Vec<f64> = text[..end]
            .lines()
            // date_ms;response_time_ms;rtd_no (the header has no number there)
            .filter_map(|l| l.split(';').nth(1)?.trim().parse().ok())
            .collect();
        out.sort_by(f64::total_cmp);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_by_name_and_sipp_columns() {
        let m = Metrics::parse(
            "# HELP x\nsipfw_proxy_transactions_active{side=\"server\"} 3\n\
             sipfw_proxy_transactions_active{side=\"client\"} 4\n\
             sipfw_proxy_transactions_active_x 9\nsipfw_registrar_bindings 10\n",
        );
        assert_eq!(m.sum("sipfw_proxy_transactions_active"), 7.0);
        assert_eq!(m.sum("sipfw_registrar_bindings"), 10.0);
        assert_eq!(m.sum("sipfw_calls_active"), 0.0);
        let gauges: Vec<&str> = m.gauges().map(|(k, _)| k).collect();
        assert_eq!(gauges.len(), 4);
        let csv = "A;SuccessfulCall(C);FailedCall(C)\n1;2;3\n4;5;6\n";
        assert_eq!(stat(csv, &["FailedCall(C)", "SuccessfulCall(C)"]), [6, 5]);
        assert_eq!(stat("", &["A"]), [0]);
    }
}
