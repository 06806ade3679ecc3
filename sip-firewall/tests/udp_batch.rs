//! The UDP workers take what is queued on their socket in batches: 200 OPTIONS sent from
//! eight sockets as fast as they go (most of them wait in the socket's queue while the
//! worker judges the ones before) are each answered exactly once, and an oversized request
//! among them, cut by the kernel at the buffer, is answered 513 as it is when it comes alone.
//! Both ways of serving a worker socket: a task of the shared runtime and a thread of its
//! own (`[sip] udp_threads`). Needs no root: `--xdp-mode off`.

use std::{
    collections::HashMap,
    net::UdpSocket,
    time::{Duration, Instant},
};

mod common;

const SOCKETS: usize = 8;
const PER_SOCKET: usize = 25;

fn options(sock: usize, n: usize) -> Vec<u8> {
    format!(
        "OPTIONS sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK-{sock}-{n}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:a@example.com>;tag={sock}\r\nTo: <sip:example.com>\r\n\
         Call-ID: batch-{sock}-{n}@test\r\nCSeq: {n} OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

/// A request over the 16384-byte message limit, its headers within it.
fn oversized() -> Vec<u8> {
    let mut big = String::from_utf8(options(0, 999)).expect("ascii");
    big = big.replace("Content-Length: 0\r\n", "");
    big.insert_str(big.len() - 2, &format!("X-Pad: {}\r\n", "p".repeat(1500)));
    let mut bytes = big.into_bytes();
    bytes.extend(std::iter::repeat_n(b'z', 17000));
    bytes
}

/// The status code and Call-ID of an answer.
fn status_and_call(answer: &[u8]) -> (u16, String) {
    let text = String::from_utf8_lossy(answer);
    let code = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let call = text
        .lines()
        .find_map(|l| l.strip_prefix("Call-ID: "))
        .unwrap_or("")
        .to_string();
    (code, call)
}

#[test]
fn a_burst_is_answered_once_each_and_an_oversized_one_513() {
    burst(false);
}

#[test]
fn a_burst_is_answered_once_each_by_worker_threads() {
    burst(true);
}

/// The burst, with the UDP workers as tasks of the shared runtime or on `threads` of their
/// own (`[sip] udp_threads`).
fn burst(threads: bool) {
    // The flood limit of unknown sources (kept in user space without XDP) would drop most
    // of a burst this size from one address: raised out of the way.
    let config = format!(
        "[sip]\ndomains = [\"example.com\"]\nworkers = 2\nudp_threads = {threads}\n\
         [xdp]\nflood_rate = 100000\nflood_burst = 100000\n"
    );
    let d = common::start("udp-batch", &config, None);
    let socks: Vec<UdpSocket> = (0..SOCKETS)
        .map(|_| UdpSocket::bind("127.0.0.1:0").expect("client socket"))
        .collect();
    for n in 0..PER_SOCKET {
        for (i, s) in socks.iter().enumerate() {
            s.send_to(&options(i, n), d.sip).expect("send");
            if i == 0 && n == PER_SOCKET / 2 {
                s.send_to(&oversized(), d.sip).expect("send oversized");
            }
        }
    }

    // Every answer, by Call-ID: each must come once.
    let mut answers: HashMap<String, Vec<u16>> = HashMap::new();
    let want = SOCKETS * PER_SOCKET + 1;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = vec![0u8; 65535];
    let mut got = 0;
    while got < want && Instant::now() < deadline {
        for s in &socks {
            s.set_read_timeout(Some(Duration::from_millis(20)))
                .expect("timeout");
            while let Ok((n, _)) = s.recv_from(&mut buf) {
                let (code, call) = status_and_call(&buf[..n]);
                answers.entry(call).or_default().push(code);
                got += 1;
            }
        }
    }
    // Late duplicates, if any, would arrive now.
    std::thread::sleep(Duration::from_millis(200));
    for s in &socks {
        while let Ok((n, _)) = s.recv_from(&mut buf) {
            let (code, call) = status_and_call(&buf[..n]);
            answers.entry(call).or_default().push(code);
        }
    }

    let missing: Vec<String> = (0..SOCKETS)
        .flat_map(|i| (0..PER_SOCKET).map(move |n| format!("batch-{i}-{n}@test")))
        .filter(|c| !answers.contains_key(c))
        .collect();
    assert!(
        missing.is_empty(),
        "no answer to {missing:?}; answers: {answers:?}"
    );
    for (i, _) in socks.iter().enumerate() {
        for n in 0..PER_SOCKET {
            let call = format!("batch-{i}-{n}@test");
            assert_eq!(answers.get(&call), Some(&vec![200]), "{call}");
        }
    }
    assert_eq!(
        answers.get("batch-0-999@test"),
        Some(&vec![513]),
        "the oversized request"
    );
    assert_eq!(answers.len(), want, "answers to what was not sent");
}
