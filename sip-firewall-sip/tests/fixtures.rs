//! The RFC 4475 and RFC 5118 torture messages through the message layer in-process: the
//! verdict `inspect` gives must be the one EXPECTED.tsv names. (The daemon test in
//! sip-firewall/tests/torture.rs drives the same files through the real binary.)

use std::path::PathBuf;

use sip_firewall_sip::{Kind, Limits, Transport, inspect};

fn fixtures(set: &str) -> (PathBuf, Vec<(String, String)>) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(set);
    let tsv = std::fs::read_to_string(dir.join("EXPECTED.tsv")).expect("EXPECTED.tsv");
    let rows = tsv
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            let verdict = f[3].split_whitespace().next().unwrap_or("").to_string();
            (f[0].to_string(), verdict)
        })
        .collect();
    (dir, rows)
}

/// The verdict word the layer gives.
fn verdict(buf: &[u8]) -> String {
    match inspect(buf, &Limits::default(), Transport::Datagram, &[]) {
        Ok(_) => "ACCEPT".into(),
        Err(r) => match r.kind {
            Kind::Request { .. } => format!("REJECT-{}", r.reason.status()),
            _ => "DROP".into(),
        },
    }
}

fn run(set: &str, expected_count: usize) {
    let (dir, rows) = fixtures(set);
    assert_eq!(rows.len(), expected_count);
    let mut failures = vec![];
    for (file, want) in &rows {
        let buf = std::fs::read(dir.join(file)).expect("fixture");
        let got = verdict(&buf);
        let ok = got == *want
            || (want == "EITHER-ACCEPT-OR-400" && (got == "ACCEPT" || got == "REJECT-400"));
        if !ok {
            let why = inspect(&buf, &Limits::default(), Transport::Datagram, &[]).err();
            failures.push(format!("{file}: want {want}, got {got} ({why:?})"));
        }
    }
    println!("{set}: {}/{}", rows.len() - failures.len(), rows.len());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn rfc4475() {
    run("rfc4475", 49);
}

#[test]
fn rfc5118() {
    run("rfc5118", 12);
}
