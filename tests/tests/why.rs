//! `sip-firewall why`: a clean source is dropped by nothing; a source that flooded the edge
//! (XDP attached, a flood limit of 1/s with bursts of 100) is named with the program's flood
//! ban, what triggered it and the flood state of its prefix read from the XDP map, and
//! what lifts it. (The ban of a source svcrack got banned is asserted in `sipvicious.rs`.)

use std::{
    net::{SocketAddr, UdpSocket},
    time::Duration,
};

use sip_firewall_tests::{domain::config, edge::edge, frames, netns::in_ns};

const BURST: usize = 100;

#[test]
fn why_names_the_flood_ban_and_flood_state_and_nothing_for_a_clean_source() {
    let test = "why_names_the_flood_ban_and_flood_state_and_nothing_for_a_clean_source";
    let config = config(&format!(
        "[xdp]\nflood_rate = 1\nflood_burst = {BURST}\nban_time = \"1h\"\n"
    ));
    let Some(mut e) = edge(test, "why", &config, true) else {
        return;
    };
    let (pair, d) = (&e.pair, &e.dirs);
    let a4 = pair.a4.to_string();

    let clean = d.why(&a4);
    assert_eq!(clean["verdict"], "nothing", "{clean:#}");
    let text = String::from_utf8_lossy(&d.cli(&["why", &a4]).stdout).into_owned();
    assert!(text.contains("nothing drops or throttles it"), "{text}");
    eprintln!("{test}: {text}");

    // Over the burst from namespace a: the program bans the source.
    let tx = in_ns(&pair.ns_a, || Ok(UdpSocket::bind("0.0.0.0:0")?)).expect("socket in a");
    let to = SocketAddr::new(pair.b4.into(), 5060);
    for i in 0..BURST + 20 {
        tx.send_to(&frames::sip_request("OPTIONS", i), to)
            .expect("send");
    }
    let reason = d
        .wait_ban(&a4, Duration::from_secs(10))
        .expect("the flood is banned");
    assert_eq!(reason, "flood");

    let w = d.why(&a4);
    assert_eq!(w["verdict"], "drop", "{w:#}");
    let findings = w["findings"].as_array().expect("findings");
    let ban = findings
        .iter()
        .find(|f| f["check"] == "ban")
        .unwrap_or_else(|| panic!("a ban finding: {w:#}"));
    let detail = ban["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("learned ban") && detail.contains("trigger: over the flood limit"),
        "{ban:#}"
    );
    assert_eq!(ban["effect"], "drop");
    assert_eq!(ban["lift"], format!("sip-firewall ban del {a4}"));
    let flood = findings
        .iter()
        .find(|f| f["check"] == "flood")
        .unwrap_or_else(|| panic!("the flood state from the XDP map: {w:#}"));
    assert!(
        flood["detail"]
            .as_str()
            .unwrap_or_default()
            .contains(&format!("of a burst of {BURST} spent at 1/s")),
        "{flood:#}"
    );
    // The order of the program: bans before the flood limit.
    let at = |c: &str| findings.iter().position(|f| f["check"] == c);
    assert!(at("ban") < at("flood"), "{w:#}");
    eprintln!(
        "{test}: {}",
        String::from_utf8_lossy(&d.cli(&["why", &a4]).stdout)
    );

    // Lifted as it says: nothing left.
    assert!(d.cli(&["ban", "del", &a4]).status.success());
    let after = d.why(&a4);
    assert!(
        !after["findings"]
            .as_array()
            .expect("findings")
            .iter()
            .any(|f| f["check"] == "ban"),
        "{after:#}"
    );
    e.stop_clean();
}
