//! The RFC 4475 and RFC 5118 torture messages through the real daemon binary on loopback,
//! over UDP (every message) and TCP (the requests), each verdict checked exactly against
//! EXPECTED.tsv: the answer code for REJECT-NNN, the metrics for ACCEPT and DROP.
//! Also the TCP transport's framing behaviour: several messages per write, splits,
//! keep-alives, idle timeout. Needs no root: `--xdp-mode off`.

use std::{
    collections::HashMap,
    io::{Read, Write},
    net::{Shutdown, TcpStream, UdpSocket},
    path::Path,
    time::{Duration, Instant},
};

/// Codes that mean "refused for syntax": an ACCEPT verdict must never get one.
const SYNTAX_CODES: [u16; 7] = [400, 414, 416, 420, 483, 505, 513];

mod common;

use common::{Daemon, scrape_opt};

fn start(config: &str) -> Daemon {
    common::start("torture", config, None)
}

fn scrape(d: &Daemon) -> HashMap<String, f64> {
    scrape_opt(d.metrics).expect("metrics endpoint answers")
}

/// Sum of every series of `name` whose labels contain `filter`.
fn sum(m: &HashMap<String, f64>, name: &str, filter: impl Fn(&str) -> bool) -> f64 {
    m.iter()
        .filter(|(k, _)| k.starts_with(&format!("{name}{{")) && filter(k))
        .map(|(_, v)| v)
        .sum()
}

fn accepted(m: &HashMap<String, f64>, kind: &str) -> f64 {
    sum(m, "sipfw_sip_accepted_total", |k| {
        k.contains(&format!("kind=\"{kind}\""))
    })
}

fn drops_not_stray(m: &HashMap<String, f64>) -> f64 {
    sum(m, "sipfw_sip_dropped_total", |k| {
        !k.contains("stray_response")
    })
}

fn rejections(m: &HashMap<String, f64>, code: u16) -> f64 {
    sum(m, "sipfw_sip_rejections_total", |k| {
        k.contains(&format!("code=\"{code}\""))
    })
}

/// Wait until `cond` holds on a fresh scrape.
fn wait_metrics(d: &Daemon, cond: impl Fn(&HashMap<String, f64>) -> bool) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(3) {
        if cond(&scrape(d)) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

fn fixtures(set: &str) -> Vec<(String, String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(set);
    let tsv = std::fs::read_to_string(dir.join("EXPECTED.tsv")).expect("EXPECTED.tsv");
    tsv.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            let verdict = f[3].split_whitespace().next().unwrap_or("").to_string();
            let bytes = std::fs::read(dir.join(f[0])).expect("fixture file");
            (f[0].to_string(), verdict, bytes)
        })
        .collect()
}

/// Status codes of the responses in `buf` (our answers always have Content-Length 0).
fn codes(buf: &[u8]) -> Vec<u16> {
    let text = String::from_utf8_lossy(buf);
    text.split("\r\n\r\n")
        .filter_map(|r| r.trim_start_matches("\r\n").strip_prefix("SIP/2.0 "))
        .filter_map(|r| r.get(..3)?.parse().ok())
        .collect()
}

fn is_response(bytes: &[u8]) -> bool {
    bytes.starts_with(b"SIP/")
}

/// Whether the header section names a Content-Length (long or compact form).
fn has_content_length(bytes: &[u8]) -> bool {
    let head = String::from_utf8_lossy(bytes);
    let head = head.split("\r\n\r\n").next().unwrap_or("");
    head.lines().skip(1).any(|l| {
        l.split_once(':').is_some_and(|(n, _)| {
            let n = n.trim().to_ascii_lowercase();
            n == "content-length" || n == "l"
        })
    })
}

/// Check one verdict given the answers received and the metrics before and after.
fn judge(
    d: &Daemon,
    want: &str,
    request: bool,
    answers: &[u16],
    before: &HashMap<String, f64>,
) -> Result<String, String> {
    let got = format!("answers {answers:?}");
    if let Some(code) = want.strip_prefix("REJECT-") {
        let code: u16 = code.parse().map_err(|_| format!("bad verdict {want}"))?;
        if answers.first() != Some(&code) {
            return Err(format!("want {want}, {got}"));
        }
        let after = scrape(d);
        if rejections(&after, code) != rejections(before, code) + 1.0 {
            return Err(format!("rejection counter for {code} did not move by 1"));
        }
        return Ok(got);
    }
    let kind = if request { "request" } else { "response" };
    match want {
        "ACCEPT" => {
            if let Some(c) = answers.iter().find(|c| SYNTAX_CODES.contains(c)) {
                return Err(format!("want ACCEPT, got syntax code {c}"));
            }
            if request && answers.is_empty() {
                return Err("accepted request got no answer from the core".into());
            }
            if !request && !answers.is_empty() {
                return Err(format!("a response was answered: {got}"));
            }
            let moved = wait_metrics(d, |m| accepted(m, kind) >= accepted(before, kind) + 1.0);
            if !moved {
                return Err(format!("accepted{{kind={kind}}} did not move"));
            }
            Ok(got)
        }
        "DROP" => {
            if !answers.is_empty() {
                return Err(format!("want DROP, {got}"));
            }
            let moved = wait_metrics(d, |m| drops_not_stray(m) >= drops_not_stray(before) + 1.0);
            if !moved {
                return Err("drop counter did not move".into());
            }
            if accepted(&scrape(d), kind) != accepted(before, kind) {
                return Err("a dropped message was counted as accepted".into());
            }
            Ok(got)
        }
        "EITHER-ACCEPT-OR-400" => {
            if answers.first() == Some(&400) {
                return Ok(got);
            }
            judge(d, "ACCEPT", request, answers, before)
        }
        other => Err(format!("unknown verdict {other}")),
    }
}

fn over_udp(d: &Daemon, set: &str) -> (usize, usize) {
    let sock = UdpSocket::bind("127.0.0.1:0").expect("udp client");
    let rows = fixtures(set);
    let mut failures = Vec::new();
    for (file, want, bytes) in &rows {
        let before = scrape(d);
        sock.send_to(bytes, d.sip).expect("send");
        let request = !is_response(bytes);
        // Requests are answered (or absorbed, if ACK); nothing else may come back.
        let wait = if request && want != "DROP" { 3000 } else { 300 };
        sock.set_read_timeout(Some(Duration::from_millis(wait)))
            .expect("timeout");
        let mut answers = Vec::new();
        let mut buf = [0u8; 65535];
        while let Ok((n, from)) = sock.recv_from(&mut buf) {
            assert_eq!(from, d.sip, "answer from the daemon's address");
            answers.extend(codes(&buf[..n]));
            sock.set_read_timeout(Some(Duration::from_millis(200)))
                .expect("timeout");
        }
        match judge(d, want, request, &answers, &before) {
            Ok(got) => println!("udp {set}/{file}: {want} ok ({got})"),
            Err(e) => failures.push(format!("udp {set}/{file}: {e}")),
        }
    }
    for f in &failures {
        println!("FAIL {f}");
    }
    (rows.len() - failures.len(), rows.len())
}

fn over_tcp(d: &Daemon, set: &str) -> (usize, usize) {
    let rows: Vec<_> = fixtures(set)
        .into_iter()
        .filter(|(_, _, b)| !is_response(b))
        .collect();
    let mut failures = Vec::new();
    for (file, want, bytes) in &rows {
        // On a stream, Content-Length is mandatory (RFC 3261 18.3, 20.14): a request without
        // it cannot be framed and is refused whatever the datagram verdict (RFC 4475 3.4.1).
        let want = if has_content_length(bytes) {
            want.clone()
        } else {
            "REJECT-400".into()
        };
        let before = scrape(d);
        let mut s = TcpStream::connect(d.sip).expect("connect");
        s.write_all(bytes).expect("write");
        // Half-close: the daemon answers what it can and closes, so reading to EOF is exact.
        s.shutdown(Shutdown::Write).expect("shutdown");
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut buf = Vec::new();
        if let Err(e) = s.read_to_end(&mut buf) {
            failures.push(format!("tcp {set}/{file}: read: {e}"));
            continue;
        }
        let answers = codes(&buf);
        match judge(d, &want, true, &answers, &before) {
            Ok(got) => println!("tcp {set}/{file}: {want} ok ({got})"),
            Err(e) => failures.push(format!("tcp {set}/{file}: {e}")),
        }
    }
    for f in &failures {
        println!("FAIL {f}");
    }
    (rows.len() - failures.len(), rows.len())
}

#[test]
fn torture_messages_udp_and_tcp() {
    let d = start("[sip]\ndomains = [\"example.com\"]\n");
    let mut all_ok = true;
    let mut summary = Vec::new();
    for (set, count) in [("rfc4475", 49), ("rfc5118", 12)] {
        let (ok, n) = over_udp(&d, set);
        assert_eq!(n, count, "{set} has {count} messages");
        summary.push(format!("{set} udp: {ok}/{n}"));
        all_ok &= ok == n;
    }
    for set in ["rfc4475", "rfc5118"] {
        let (ok, n) = over_tcp(&d, set);
        summary.push(format!("{set} tcp (requests): {ok}/{n}"));
        all_ok &= ok == n;
    }
    for s in &summary {
        println!("{s}");
    }
    assert!(all_ok, "{}", summary.join(", "));
}

const OPTIONS: &str = "OPTIONS sip:example.com SIP/2.0\r\nVia: SIP/2.0/TCP 192.0.2.1;branch=z9hG4bK{N}\r\nMax-Forwards: 70\r\nFrom: <sip:a@example.com>;tag=1\r\nTo: <sip:example.com>\r\nCall-ID: tcp-{N}@192.0.2.1\r\nCSeq: {N} OPTIONS\r\nContent-Length: 0\r\n\r\n";

fn options(n: u32) -> String {
    OPTIONS.replace("{N}", &n.to_string())
}

/// Read until `want` answers arrived (or the timeout).
fn read_answers(s: &mut TcpStream, want: usize) -> Vec<u8> {
    s.set_read_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while codes(&buf).len() < want {
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    buf
}

#[test]
fn tcp_framing_keepalive_and_idle_timeout() {
    let d = start("[sip]\ndomains = [\"example.com\"]\ntcp_idle_timeout = \"1s\"\n");

    // Two messages and a ping in one write, then one message split across writes.
    let mut s = TcpStream::connect(d.sip).expect("connect");
    let mut two = options(1);
    two.push_str("\r\n\r\n");
    two.push_str(&options(2));
    s.write_all(two.as_bytes()).expect("write");
    let buf = read_answers(&mut s, 2);
    assert_eq!(
        codes(&buf),
        vec![200, 200],
        "{}",
        String::from_utf8_lossy(&buf)
    );
    let text = String::from_utf8_lossy(&buf);
    assert!(text.contains("CSeq: 1 OPTIONS") && text.contains("CSeq: 2 OPTIONS"));
    // The single-CRLF pong sits between the two answers.
    assert!(
        text.contains("\r\n\r\n\r\nSIP/2.0 200"),
        "pong missing: {text:?}"
    );

    let third = options(3);
    let (a, b) = third.split_at(40);
    s.write_all(a.as_bytes()).expect("write");
    std::thread::sleep(Duration::from_millis(200));
    s.write_all(b.as_bytes()).expect("write");
    assert_eq!(codes(&read_answers(&mut s, 1)), vec![200]);

    // A connection that never completes a message is closed after the idle timeout, and
    // meanwhile another connection is served as usual.
    let mut slow = TcpStream::connect(d.sip).expect("connect");
    slow.write_all(b"OPTIONS sip:example.com SIP/2.0\r\nVia: ")
        .expect("write");
    let t0 = Instant::now();
    let mut other = TcpStream::connect(d.sip).expect("connect");
    other.write_all(options(4).as_bytes()).expect("write");
    assert_eq!(codes(&read_answers(&mut other, 1)), vec![200]);
    slow.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut rest = Vec::new();
    let n = slow.read_to_end(&mut rest).expect("closed by the daemon");
    assert_eq!(n, 0, "no answer to an incomplete message");
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_millis(800) && waited < Duration::from_secs(4),
        "{waited:?}"
    );
    let m = scrape(&d);
    assert!(sum(&m, "sipfw_sip_keepalives_total", |k| k.contains("tcp")) >= 1.0);
    assert!(
        sum(&m, "sipfw_sip_tcp_closed_total", |k| k
            .contains("idle_timeout"))
            >= 1.0
    );
}

#[test]
fn oversized_messages_are_answered_513() {
    let d = start("[sip]\ndomains = [\"example.com\"]\n");
    // An endless header: cut at the message limit, answered 513, connection closed.
    let mut s = TcpStream::connect(d.sip).expect("connect");
    s.write_all(b"OPTIONS sip:example.com SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\nX: ")
        .expect("write");
    let filler = vec![b'a'; 4096];
    for _ in 0..5 {
        if s.write_all(&filler).is_err() {
            break;
        }
    }
    let buf = read_answers(&mut s, 1);
    assert_eq!(codes(&buf), vec![513], "{}", String::from_utf8_lossy(&buf));
    assert_eq!(
        s.read(&mut [0u8; 16]).unwrap_or(0),
        0,
        "connection closed after 513"
    );

    // UDP: the same oversized request is answered 513 as well.
    let u = UdpSocket::bind("127.0.0.1:0").expect("udp");
    let mut big = options(9).replace("Content-Length: 0\r\n", "");
    big.insert_str(big.len() - 2, &format!("X-Pad: {}\r\n", "p".repeat(1500)));
    let mut padded = big.into_bytes();
    padded.extend(std::iter::repeat_n(b'z', 17000));
    u.send_to(&padded, d.sip).expect("send");
    u.set_read_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");
    let mut rb = [0u8; 65535];
    let (n, _) = u.recv_from(&mut rb).expect("answer to oversized datagram");
    assert_eq!(codes(&rb[..n]), vec![513]);
}

#[test]
fn non_sip_gets_no_answer() {
    let d = start("[sip]\n");
    let before = scrape(&d);
    let not_sip = |m: &HashMap<String, f64>| {
        sum(m, "sipfw_sip_dropped_total", |k| {
            k.contains("reason=\"not_sip\"")
        })
    };
    // An HTTP probe and binary junk over UDP: dropped and counted, never answered.
    let u = UdpSocket::bind("127.0.0.1:0").expect("udp");
    u.send_to(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", d.sip)
        .expect("send");
    u.send_to(&[0x16, 0x03, 0x01, 0x00, 0xff], d.sip)
        .expect("send");
    u.set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    assert!(
        u.recv_from(&mut [0u8; 2048]).is_err(),
        "non-SIP datagram answered"
    );
    assert!(wait_metrics(&d, |m| not_sip(m) >= not_sip(&before) + 2.0));

    // Over TCP: the connection is closed without a byte.
    let mut s = TcpStream::connect(d.sip).expect("connect");
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("write");
    s.set_read_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).expect("closed");
    assert!(buf.is_empty(), "{}", String::from_utf8_lossy(&buf));
    assert!(wait_metrics(&d, |m| not_sip(m) >= not_sip(&before) + 3.0));
}

#[test]
fn answer_headers_follow_rfc3261() {
    let d = start("[sip]\n");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/rfc4475");
    let bext = std::fs::read(dir.join("bext01.dat")).expect("fixture");
    let u = UdpSocket::bind("127.0.0.1:0").expect("udp");
    u.send_to(&bext, d.sip).expect("send");
    u.set_read_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");
    let mut buf = [0u8; 4096];
    let (n, _) = u.recv_from(&mut buf).expect("answer");
    let text = String::from_utf8_lossy(&buf[..n]);
    let lines: Vec<&str> = text.split("\r\n").collect();
    assert_eq!(lines[0], "SIP/2.0 420 Bad Extension", "{text}");
    // RFC 3261 8.2.6.2: Via (with received, 18.2.1), From, To with a tag, Call-ID, CSeq.
    let want = [
        "Via: SIP/2.0/TLS fold-and-staple.example.com;branch=z9hG4bKkdjuw;received=127.0.0.1",
        "From: sip:caller@example.net;tag=242etr",
        "Call-ID: bext01.0ha0isndaksdj",
        "CSeq: 8 OPTIONS",
        // RFC 3261 8.2.2.3: the unsupported extensions, listed.
        "Unsupported: noProxiesSupportThis, norDoAnyProxiesSupportThis",
        "Content-Length: 0",
    ];
    for w in want {
        assert!(lines.contains(&w), "missing {w:?} in {text}");
    }
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("To: sip:j_user@example.com;tag=")),
        "{text}"
    );
    assert!(text.ends_with("\r\n\r\n"));
}
