//! Scanners caught by what they do: SIPVicious 0.3.8 `svwar` (installed by `cargo xtask
//! setup` into `target/sipvicious-venv`) with a harmless-looking User-Agent (`Linphone/5.0`,
//! the one-line change an attacker makes) from namespace a against the daemon in namespace
//! b, XDP attached.
//!
//! - `svwar` walks extensions with INVITE; bob is registered (from another address of
//!   namespace a) and answers, and comes after more than `[policy] scan_targets` unknown
//!   names in its dictionary. The edge answers the unknown ones 480: at the threshold the
//!   source is banned as a scanner and svwar never finds bob; the User-Agent list never
//!   matched.
//! - The control: with a threshold svwar never reaches, the same run finds bob (so what stops
//!   it above is the ban).
//! - An allow-listed trunk that calls 200 distinct numbers (through `[proxy] outbound` to a
//!   carrier that answers them all) is not a scanner, and neither are 50 numbers the edge
//!   refuses it: it is never banned by this evidence (the refusal is counted).
//!
//! Skips loudly when not root or when the virtualenv is missing.

use std::{process::Stdio, time::Duration};

use sip_firewall_tests::{
    domain::{BOB_PASSWORD, config},
    edge::edge,
    metrics::Metrics,
    netns::Pair,
    said,
    sipp::wait_bounded,
    sipvicious,
    ua::{
        Account,
        udp::{Phone, Trunk, socket_in},
    },
};

/// The unknown names svwar tries before bob: six times the threshold.
const UNKNOWN_FIRST: usize = 60;
const SCAN_TARGETS: usize = 10;

/// bob registered from 198.51.100.20:5070 (an address of namespace a that svwar does not
/// use), then answering INVITEs 200 there until dropped.
fn bob_answers(pair: &Pair) -> Trunk {
    let bob_at = pair.add_a4(20).expect("a second address in namespace a");
    let mut phone = Phone::in_ns(
        pair,
        &format!("{bob_at}:5070"),
        Account::new("bob", "example.com", BOB_PASSWORD),
    );
    let (_, ok) = phone.register("bob-reg", None, 3600);
    let ok = ok.expect("an answer to bob's REGISTER");
    assert!(ok.starts_with("SIP/2.0 200"), "bob's REGISTER: {ok}");
    Trunk::start(phone.sock.try_clone().expect("bob's socket"), 200)
}

/// svwar with INVITE from namespace a's first address over a dictionary of
/// [`UNKNOWN_FIRST`] unknown names, then bob, then a few more: what it said, within 60 s.
fn svwar(test: &str, pair: &Pair, dir: &std::path::Path) -> Option<String> {
    let mut words: Vec<String> = (0..UNKNOWN_FIRST).map(|i| format!("staff{i}")).collect();
    words.push("bob".into());
    words.extend((0..3).map(|i| format!("later{i}")));
    let list = dir.join("extensions.txt");
    std::fs::write(&list, words.join("\n") + "\n").expect("dictionary");
    let a4 = pair.a4.to_string();
    let child = sipvicious::with_user_agent(test, pair, "svwar", "Linphone/5.0")?
        .args(["-m", "INVITE", "-d"])
        .arg(&list)
        .args(["-p", "5060", "-x", &a4, "-b", &a4, "--maximumtime", "3"])
        .arg(pair.b4.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn svwar");
    let (out, killed) = wait_bounded(child, Duration::from_secs(60));
    let reply = said(&out);
    assert!(!killed, "svwar did not end within 60 s:\n{reply}");
    Some(reply)
}

/// Whether svwar's table of results names bob (`| bob | noauth |`).
fn found_bob(reply: &str) -> bool {
    reply
        .lines()
        .any(|l| l.trim_start().starts_with('|') && l.contains(" bob "))
}

/// The daemon's config: the scanner User-Agent list as shipped, the flood limit raised so
/// that only the sweep can ban svwar.
fn scan_config(scan_targets: usize) -> String {
    config(&format!(
        "[policy]\nscan_targets = {scan_targets}\nscan_window = \"60s\"\n\
         [xdp]\nflood_rate = 10000\nflood_burst = 10000\n"
    ))
}

#[test]
fn svwar_with_a_harmless_user_agent_is_banned_before_it_finds_an_extension() {
    let test = "svwar_with_a_harmless_user_agent_is_banned_before_it_finds_an_extension";
    let Some(mut e) = edge(test, "swb", &scan_config(SCAN_TARGETS), true) else {
        return;
    };
    let (pair, d) = (&e.pair, &e.dirs);
    let _bob = bob_answers(pair);
    let Some(reply) = svwar(test, pair, &d.dir.path) else {
        return;
    };
    let a4 = pair.a4.to_string();
    let reason = d
        .wait_ban(&a4, Duration::from_secs(5))
        .unwrap_or_else(|| panic!("svwar's source is not banned; svwar said:\n{reply}"));
    let m = Metrics::scrape(pair);
    let invites = m.get("sipfw_sip_requests_total{method=\"INVITE\"}");
    eprintln!("{test}: {reason:?}; INVITEs that reached the daemon: {invites}");
    assert_eq!(
        reason,
        format!("scanner: {SCAN_TARGETS} distinct users refused within 1m")
    );
    assert_eq!(
        m.get("sipfw_scanner_drops_total"),
        0.0,
        "the User-Agent list did not match"
    );
    assert!(
        !found_bob(&reply),
        "svwar found bob before it was banned:\n{reply}"
    );
    // Its probe of a random name and the names before the ban; bob comes after them.
    assert!(
        invites <= (UNKNOWN_FIRST + 1) as f64,
        "{invites} INVITEs reached the daemon:\n{reply}"
    );
    assert!(
        m.xdp("banned") > 0.0,
        "what it sent after the ban was dropped in XDP"
    );
    e.stop_clean();
}

#[test]
fn svwar_finds_bob_when_nothing_bans_it() {
    let test = "svwar_finds_bob_when_nothing_bans_it";
    let Some(mut e) = edge(test, "swc", &scan_config(1000), true) else {
        return;
    };
    let (pair, d) = (&e.pair, &e.dirs);
    let _bob = bob_answers(pair);
    let Some(reply) = svwar(test, pair, &d.dir.path) else {
        return;
    };
    assert!(
        found_bob(&reply),
        "svwar should find bob when nothing bans it:\n{reply}"
    );
    assert!(d.bans().is_empty(), "nothing banned");
    e.stop_clean();
}

#[test]
fn an_allow_listed_trunks_burst_over_many_numbers_is_not_a_scanner() {
    let test = "an_allow_listed_trunks_burst_over_many_numbers_is_not_a_scanner";
    let pbx = "198.51.100.30";
    let carrier = "198.51.100.40:5060";
    let config = config(&format!(
        "[policy]\nallow = [\"{pbx}/32\"]\nscan_targets = {SCAN_TARGETS}\n\
         [xdp]\nflood_rate = 10000\nflood_burst = 10000\n"
    ))
    .replace("[proxy]\n", &format!("[proxy]\noutbound = \"{carrier}\"\n"));
    let Some(mut e) = edge(test, "swt", &config, true) else {
        return;
    };
    let (pair, d) = (&e.pair, &e.dirs);
    pair.add_a4(30).expect("the PBX's address");
    pair.add_a4(40).expect("the carrier's address");
    let carrier = Trunk::start(socket_in(pair, carrier, Duration::from_millis(50)), 200);
    let mut trunk = Phone::in_ns(
        pair,
        &format!("{pbx}:5060"),
        Account::new("pbx", "pbx.example", "unused"),
    );
    trunk.resend = true;
    // 200 distinct valid numbers, all answered by the carrier.
    for i in 0..200 {
        let uri = format!("sip:+4930555{i:04}@carrier.example");
        let ok = trunk
            .invite(&uri, &uri, &format!("burst-{i}"), &format!("b{i}"))
            .unwrap_or_else(|| panic!("no answer to call {i}"));
        assert!(ok.starts_with("SIP/2.0 200"), "call {i}: {ok}");
    }
    assert!(carrier.wait("INVITE", 200, Duration::from_secs(5)));
    // 50 numbers of ours nobody has: refused (480), and still not a ban.
    for i in 0..50 {
        let uri = format!("sip:{}@example.com", 7000 + i);
        let no = trunk
            .invite(&uri, &uri, &format!("miss-{i}"), &format!("m{i}"))
            .unwrap_or_else(|| panic!("no answer to call {uri}"));
        assert!(no.starts_with("SIP/2.0 480"), "{uri}: {no}");
    }
    let m = Metrics::poll(pair, Duration::from_secs(5), |m| {
        m.get("sipfw_ban_refused_total{reason=\"scan_targets\"}") >= 5.0
    });
    assert_eq!(
        m.get("sipfw_ban_refused_total{reason=\"scan_targets\"}"),
        5.0,
        "each tenth refused number reached the threshold, and the ban was refused"
    );
    assert!(
        d.bans().is_empty(),
        "the trunk is not banned: {:?}",
        d.bans()
    );
    e.stop_clean();
}
