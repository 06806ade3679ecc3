//! The scanners an edge must stop: the real SIPVicious 0.3.8 (PyPI `sipvicious`, installed by
//! `cargo xtask setup` into `target/sipvicious-venv`) from namespace a against the daemon in
//! namespace b, with XDP attached and with XDP off.
//!
//! - `svmap` is a scanner by its User-Agent: its source is banned; a second scan is dropped
//!   before the daemon's message layer (in XDP, or by the user-space gate without XDP).
//! - `svcrack` against bob, with a word list whose 11th word is his password: banned after
//!   the configured failures (5), it never finds the password, and what it sends once banned
//!   is dropped before the daemon's message layer.
//!
//! Skips loudly when not root or when the virtualenv is missing.

use std::time::Duration;

use sip_firewall_tests::{
    daemon::DaemonDirs,
    domain::{BOB_PASSWORD, config},
    edge::edge,
    metrics::Metrics,
    netns::Pair,
    said,
    sipvicious::{self, spawn_svcrack, svcrack_output, svmap},
};

/// The wrong guesses before bob's password in svcrack's word list: twice the threshold.
const WRONG_FIRST: usize = 10;
const AUTH_FAILURES: usize = 5;

/// Where the drops of a banned source are counted: the XDP counter, or the user-space gate's.
fn banned_drops(m: &Metrics, xdp: bool) -> f64 {
    if xdp {
        m.xdp("banned")
    } else {
        m.userspace_drops("banned")
    }
}

fn svmap_is_banned(test: &str, xdp: bool) {
    let Some(bin) = sipvicious::command(test, "sipvicious_svmap") else {
        return;
    };
    // The default scanner list (friendly-scanner, sipvicious...) and scanner bans on.
    let config = config("");
    let Some(mut e) = edge(test, if xdp { "vmx" } else { "vmo" }, &config, xdp) else {
        return;
    };
    let (pair, d) = (&e.pair, &e.dirs);
    let a4 = pair.a4.to_string();
    let b4 = pair.b4.to_string();

    let m0 = Metrics::scrape(pair);
    let first = svmap(pair, &bin, std::slice::from_ref(&b4));
    let reason = d
        .wait_ban(&a4, Duration::from_secs(5))
        .unwrap_or_else(|| panic!("svmap's source is not banned; svmap reply:\n{first}"));
    assert!(
        reason.starts_with("scanner: ") && reason.contains("friendly-scanner"),
        "ban reason: {reason}"
    );
    let m1 = Metrics::scrape(pair);
    assert_eq!(
        m1.get("sipfw_scanner_drops_total") - m0.get("sipfw_scanner_drops_total"),
        1.0,
        "the daemon saw the scan once and dropped it unanswered"
    );
    assert_eq!(m1.get("sipfw_bans_total{reason=\"scanner\"}"), 1.0);
    assert!(
        !first.contains(&format!("{b4}:5060")),
        "svmap found nothing (the scanner gets no answer):\n{first}"
    );

    // Scanned again, three times over: every packet dropped before the daemon's message layer.
    let m1 = Metrics::settled(pair, Duration::from_secs(5), |m| banned_drops(m, xdp));
    let again = svmap(pair, &bin, &[b4.clone(), b4.clone(), b4.clone()]);
    let m2 = Metrics::settled(pair, Duration::from_secs(5), |m| banned_drops(m, xdp));
    let dropped = banned_drops(&m2, xdp) - banned_drops(&m1, xdp);
    eprintln!(
        "{test}: ban reason {reason:?}; second scan: {dropped} packets dropped as banned ({})",
        if xdp { "XDP" } else { "user space" }
    );
    assert_eq!(
        dropped, 3.0,
        "the three OPTIONS of the second scan dropped as banned; svmap reply:\n{again}"
    );
    unseen_once_banned(&m1, &m2, xdp, "the banned scanner");
    if !xdp {
        assert_eq!(m2.xdp("banned"), 0.0);
    }
    e.stop_clean();
}

/// Run svcrack to its end: what it reply.
fn svcrack(pair: &Pair, bin: &std::path::Path, d: &DaemonDirs) -> String {
    svcrack_output(spawn_svcrack(pair, bin, d, WRONG_FIRST))
}

fn svcrack_is_banned(test: &str, xdp: bool) {
    let Some(bin) = sipvicious::command(test, "sipvicious_svcrack") else {
        return;
    };
    // svcrack's User-Agent is `friendly-scanner` and it has no option to change it: with the
    // scanner list empty, the failed authentications are what must ban it. The flood limit
    // is raised so that nothing but the auth failures can ban it either.
    let config = config(&format!(
        "[policy]\nscanners = []\n[bans]\nauth_failures = {AUTH_FAILURES}\n\
             [xdp]\nflood_rate = 10000\nflood_burst = 10000\n"
    ));
    let Some(mut e) = edge(test, if xdp { "vcx" } else { "vco" }, &config, xdp) else {
        return;
    };
    let (pair, d) = (&e.pair, &e.dirs);
    let a4 = pair.a4.to_string();
    let clean = d.why(&a4);
    assert_eq!(clean["verdict"], "nothing", "before svcrack: {clean:#}");

    let m0 = Metrics::scrape(pair);
    let child = spawn_svcrack(pair, &bin, d, WRONG_FIRST);
    let reason = d.wait_ban(&a4, Duration::from_secs(20));
    // From the moment the ban is listed it is in the ban map: what svcrack sends from here on
    // must not reach the message layer (once what was already queued is through).
    let at_ban = Metrics::settled(pair, Duration::from_secs(5), |m| {
        m.get("sipfw_sip_requests_total{method=\"REGISTER\"}")
    });
    let reply = svcrack_output(child);
    let reason = reason.unwrap_or_else(|| panic!("svcrack is not banned; it reply:\n{reply}"));
    let end = Metrics::scrape(pair);

    let failures = end.get("sipfw_auth_total{result=\"wrong_password\"}")
        - m0.get("sipfw_auth_total{result=\"wrong_password\"}");
    let after_ban = banned_drops(&end, xdp) - banned_drops(&at_ban, xdp);
    let registers = at_ban.get("sipfw_sip_requests_total{method=\"REGISTER\"}");
    eprintln!(
        "{test}: {reason:?}; REGISTERs that reached the daemon: {registers}, with a wrong \
         password: {failures}; packets dropped as banned after the ban: {after_ban} ({})",
        if xdp { "XDP" } else { "user space" }
    );
    assert!(
        reason == format!("auth_failure: {AUTH_FAILURES} failed authentications"),
        "ban reason: {reason}"
    );
    assert!(
        !reply.contains(BOB_PASSWORD) && !reply.contains("The password for"),
        "svcrack found the password:\n{reply}"
    );
    assert_eq!(
        end.get("sipfw_auth_total{result=\"success\"}"),
        0.0,
        "no REGISTER of svcrack authenticated"
    );
    assert_eq!(end.get("sipfw_registrar_bindings"), 0.0);
    // Banned at the threshold: at most a guess or two in flight while the ban was being made.
    assert!(
        failures >= AUTH_FAILURES as f64 && failures < WRONG_FIRST as f64,
        "{failures} wrong passwords reached the daemon (threshold {AUTH_FAILURES}):\n{reply}"
    );
    assert!(
        after_ban > 0.0,
        "svcrack kept sending after the ban, and it was dropped as banned"
    );
    unseen_once_banned(&at_ban, &end, xdp, "svcrack once banned");
    // `why` names the ban, what triggered it and what lifts it.
    let w = d.why(&a4);
    assert_eq!(w["verdict"], "drop", "{w:#}");
    let ban = w["findings"]
        .as_array()
        .and_then(|f| f.iter().find(|f| f["check"] == "ban"))
        .unwrap_or_else(|| panic!("a ban finding: {w:#}"));
    let detail = ban["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains(&format!("trigger: {AUTH_FAILURES} failed authentications")),
        "{ban:#}"
    );
    assert_eq!(ban["lift"], format!("sip-firewall ban del {a4}"));
    eprintln!("{test}: {}", said(&d.cli(&["why", &a4])));
    e.stop_clean();
}

/// The control of the svcrack tests: with a threshold it never reaches, svcrack does find
/// bob's password in the same word list (so what stops it above is the ban, not a digest
/// svcrack cannot speak).
#[test]
fn svcrack_finds_the_password_when_nothing_bans_it() {
    let test = "svcrack_finds_the_password_when_nothing_bans_it";
    let Some(bin) = sipvicious::command(test, "sipvicious_svcrack") else {
        return;
    };
    let config = config(
        "[policy]\nscanners = []\n[bans]\nauth_failures = 1000\n\
             [xdp]\nflood_rate = 10000\nflood_burst = 10000\n",
    );
    let Some(mut e) = edge(test, "vcc", &config, false) else {
        return;
    };
    let (pair, d) = (&e.pair, &e.dirs);
    let reply = svcrack(pair, &bin, d);
    assert!(
        reply.contains(BOB_PASSWORD),
        "svcrack should find the password when nothing bans it:\n{reply}"
    );
    let m = Metrics::scrape(pair);
    assert_eq!(
        m.get("sipfw_auth_total{result=\"wrong_password\"}"),
        WRONG_FIRST as f64
    );
    assert!(d.bans().is_empty(), "nothing banned");
    e.stop_clean();
}

#[test]
fn svmap_is_banned_and_then_dropped_in_xdp() {
    svmap_is_banned("svmap_is_banned_and_then_dropped_in_xdp", true);
}

#[test]
fn svmap_is_banned_and_then_dropped_in_user_space_without_xdp() {
    svmap_is_banned(
        "svmap_is_banned_and_then_dropped_in_user_space_without_xdp",
        false,
    );
}

#[test]
fn svcrack_is_banned_before_the_password_and_then_dropped_in_xdp() {
    svcrack_is_banned(
        "svcrack_is_banned_before_the_password_and_then_dropped_in_xdp",
        true,
    );
}

#[test]
fn svcrack_is_banned_before_the_password_and_then_dropped_in_user_space_without_xdp() {
    svcrack_is_banned(
        "svcrack_is_banned_before_the_password_and_then_dropped_in_user_space_without_xdp",
        false,
    );
}

/// Between the snapshots `before` and `after`, the daemon's message layer saw nothing of
/// `who`; with XDP, nothing of it was dropped in user space either (XDP dropped it all).
fn unseen_once_banned(before: &Metrics, after: &Metrics, xdp: bool, who: &str) {
    assert_eq!(
        after.messages_seen(),
        before.messages_seen(),
        "the daemon's message layer saw nothing of {who}"
    );
    if xdp {
        assert_eq!(after.userspace_drops("banned"), 0.0, "XDP dropped them all");
    }
}
