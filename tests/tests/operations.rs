//! Operating the daemon: every CLI command against a running daemon (tables, JSON, exit
//! codes), the metrics endpoint, and a restart (kill -9) that leaves no packet of a banned
//! source through.

use std::{
    net::{SocketAddr, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use sip_firewall_tests::{
    daemon::daemon_bin,
    edge::{Edge, err, json, out, xdp_args},
    metrics::{sample, scrape},
    netns::{Pair, in_ns},
};

/// A receiver on UDP 7000 in namespace b (not a SIP port: bans cover all traffic).
fn receiver(pair: &Pair) -> UdpSocket {
    let s = in_ns(&pair.ns_b, || Ok(UdpSocket::bind("0.0.0.0:7000")?)).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    s
}

fn sender(pair: &Pair) -> UdpSocket {
    in_ns(&pair.ns_a, || Ok(UdpSocket::bind("0.0.0.0:0")?)).unwrap()
}

fn drain(s: &UdpSocket) -> usize {
    let mut buf = [0u8; 2048];
    let mut n = 0;
    while s.recv(&mut buf).is_ok() {
        n += 1;
    }
    n
}

fn send(tx: &UdpSocket, pair: &Pair, n: usize) {
    for _ in 0..n {
        tx.send_to(b"ping", SocketAddr::new(pair.b(false), 7000))
            .unwrap();
    }
}

/// Every sample line of a scrape is `name{labels} value` with a Prometheus metric name.
fn assert_exposition(text: &str) {
    let body = text.split("\r\n\r\n").nth(1).unwrap_or(text);
    let mut samples = 0;
    for line in body.lines().filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# ") {
            assert!(
                rest.starts_with("HELP ") || rest.starts_with("TYPE "),
                "bad comment: {line}"
            );
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value: {line}"));
        assert!(value.parse::<f64>().is_ok(), "bad value: {line}");
        let name = series.split('{').next().unwrap();
        assert!(
            name.starts_with("sipfw_")
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name: {line}"
        );
        if let Some(labels) = series.strip_prefix(name) {
            assert!(
                labels.is_empty() || (labels.starts_with('{') && labels.ends_with('}')),
                "bad labels: {line}"
            );
        }
        samples += 1;
    }
    assert!(samples > 20, "too few samples: {body}");
}

#[test]
fn cli_commands_against_a_running_daemon() {
    let test = "cli_commands_against_a_running_daemon";
    let Some(mut daemon) = Edge::root(test, "cli", "", xdp_args(true)) else {
        return;
    };
    let (pair, d) = (&daemon.pair, &daemon.dirs);
    let rx = receiver(pair);
    let tx = sender(pair);
    let a4 = pair.a4.to_string();
    let metrics: SocketAddr = "127.0.0.1:9464".parse().unwrap();

    // status, table and JSON.
    let s = d.cli(&["status"]);
    assert!(s.status.success(), "{}", err(&s));
    assert!(
        out(&s).contains("veth-b (generic)")
            && out(&s)
                .lines()
                .any(|l| l.split_whitespace().eq(["enforcement", "xdp"])),
        "{}",
        out(&s)
    );
    let j = json(&d.cli(&["status", "--json"]));
    assert_eq!(j["enforcement"], "xdp");
    assert_eq!(j["xdp"][0][0], "veth-b");

    // ban add: enforced in XDP at once, listed with reason and time left.
    let b = d.cli(&["ban", "add", &a4, "--for", "1h", "--reason", "test scanner"]);
    assert!(b.status.success(), "{}", err(&b));
    assert!(
        out(&b).contains(&format!("banned {a4} (manual: test scanner) for 1h")),
        "{}",
        out(&b)
    );
    send(&tx, pair, 20);
    assert_eq!(drain(&rx), 0, "a banned source gets nothing through");
    let text = scrape(&pair.ns_b, metrics);
    assert_exposition(&text);
    let banned = sample(&text, "sipfw_xdp_packets_total{reason=\"banned\"}").unwrap();
    assert!(banned >= 20.0, "the XDP counter moved: {banned}");
    assert_eq!(sample(&text, "sipfw_bans_active"), Some(1.0));
    assert_eq!(sample(&text, "sipfw_xdp_attached"), Some(1.0));
    assert_eq!(
        sample(&text, "sipfw_bans_total{reason=\"manual\"}"),
        Some(1.0)
    );

    let l = d.cli(&["ban", "list"]);
    let table = out(&l);
    assert!(
        table.starts_with("address")
            && table.contains(&a4)
            && table.contains("manual: test scanner")
            && (table.contains("59m") || table.contains("1h")),
        "{table}"
    );
    let j = json(&d.cli(&["ban", "list", "--json"]));
    assert_eq!(j[0]["ip"], a4.as_str());
    let left = j[0]["remaining_secs"].as_u64().unwrap();
    assert!(left > 3500 && left <= 3600, "{left}");

    let s = json(&d.cli(&["stats", "--json"]));
    assert!(xdp_verdicts(&s, "banned") >= 20, "{s}");
    assert!(out(&d.cli(&["stats"])).contains("xdp verdict"));

    // ban del: traffic flows again; a second del is refused with exit code 1.
    assert!(d.cli(&["ban", "del", &a4]).status.success());
    let again = d.cli(&["ban", "del", &a4]);
    assert_eq!(again.status.code(), Some(1));
    assert!(err(&again).contains("not banned"), "{}", err(&again));
    send(&tx, pair, 5);
    assert_eq!(drain(&rx), 5, "unbanned");

    // deny: an address is a host prefix; listed; removed.
    assert!(d.cli(&["deny", "add", &a4]).status.success());
    send(&tx, pair, 5);
    assert_eq!(drain(&rx), 0, "denied");
    assert!(out(&d.cli(&["deny", "list"])).contains(&format!("{a4}/32")));
    assert_eq!(
        json(&d.cli(&["deny", "list", "--json"]))[0],
        format!("{a4}/32")
    );
    assert!(d.cli(&["deny", "del", &a4]).status.success());
    send(&tx, pair, 5);
    assert_eq!(drain(&rx), 5, "no longer denied");

    // allow: wins over a ban.
    assert!(d.cli(&["allow", "add", "198.51.100.0/24"]).status.success());
    assert!(d.cli(&["ban", "add", &a4]).status.success());
    send(&tx, pair, 5);
    assert_eq!(drain(&rx), 5, "allow skips the ban");
    assert_eq!(
        json(&d.cli(&["allow", "list", "--json"]))[0],
        "198.51.100.0/24"
    );
    assert!(d.cli(&["allow", "del", "198.51.100.0/24"]).status.success());
    assert_eq!(
        d.cli(&["allow", "del", "198.51.100.0/24"]).status.code(),
        Some(1)
    );
    assert!(d.cli(&["ban", "del", &a4]).status.success());

    // Subscribers: added at once (and the config line printed), listed, removed.
    let add = daemon.add_user("carol", "pw-carol");
    assert!(
        out(&add).contains("user = \"carol\"") && out(&add).contains("done: carol@example.com"),
        "{}",
        out(&add)
    );
    assert!(
        !out(&add).contains("pw-carol"),
        "the password is never printed"
    );
    let users = json(&d.cli(&["user", "list", "--json"]));
    assert_eq!(users[0]["user"], "carol");
    assert!(out(&d.cli(&["user", "list"])).contains("carol  example.com"));
    assert!(
        d.cli(&["user", "del", "carol", "--domain", "example.com"])
            .status
            .success()
    );
    assert_eq!(
        d.cli(&["user", "del", "carol", "--domain", "example.com"])
            .status
            .code(),
        Some(1)
    );
    assert_eq!(
        json(&d.cli(&["user", "list", "--json"]))
            .as_array()
            .map(Vec::len),
        Some(0)
    );

    // Usage errors exit 2 and say what is wrong.
    let bad = d.cli(&["ban", "add", "not-an-ip"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(err(&bad).contains("not-an-ip"));
    let bad = d.cli(&["deny", "add", "example.com"]);
    assert_eq!(bad.status.code(), Some(2));

    daemon.stop_clean();

    // The daemon is gone: one line that says how to start it.
    let gone = daemon.cli(&["status"]);
    assert_eq!(gone.status.code(), Some(1));
    let e = err(&gone);
    assert_eq!(e.trim_end().lines().count(), 1, "{e}");
    assert!(
        e.contains("not running") && e.contains("sip-firewall run"),
        "{e}"
    );
}

#[test]
fn restart_keeps_bans_enforced_without_a_gap() {
    let test = "restart_keeps_bans_enforced_without_a_gap";
    // Without --detach: the program stays attached when the daemon dies.
    let args = ["--iface", "veth-b", "--xdp-mode", "generic"];
    let Some(mut daemon) = Edge::root(test, "rst", "", &args) else {
        return;
    };
    let (pair, d) = (&daemon.pair, &daemon.dirs);
    let rx = receiver(pair);
    let a4 = pair.a4.to_string();
    assert!(
        d.cli(&["ban", "add", &a4, "--for", "1h", "--reason", "restart test"])
            .status
            .success()
    );
    assert!(
        d.cli(&[
            "user",
            "add",
            "dave",
            "--domain",
            "example.com",
            "--password",
            "pw-dave"
        ])
        .status
        .success()
    );

    // A sender in namespace a keeps trying through the whole restart.
    let stop_flag = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let tx = sender(pair);
    let to = SocketAddr::new(pair.b(false), 7000);
    let pump = {
        let (stop_flag, sent) = (stop_flag.clone(), sent.clone());
        std::thread::spawn(move || {
            // Bounded: at most 30 s at one packet per 2 ms.
            for _ in 0..15_000 {
                if stop_flag.load(Ordering::Relaxed) {
                    break;
                }
                if tx.send_to(b"knock", to).is_ok() {
                    sent.fetch_add(1, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    std::thread::sleep(Duration::from_millis(300));

    // kill -9: the program stays attached (pinned) and keeps dropping.
    daemon.kill();
    let pair = &daemon.pair;
    std::thread::sleep(Duration::from_millis(500));
    let show = std::process::Command::new("ip")
        .args(["netns", "exec", &pair.ns_b, "ip", "link", "show", pair.if_b])
        .output()
        .unwrap();
    assert!(
        out(&show).contains("xdpgeneric"),
        "still attached after kill -9: {}",
        out(&show)
    );

    daemon.run(xdp_args(true));
    let (pair, d) = (&daemon.pair, &daemon.dirs);
    std::thread::sleep(Duration::from_millis(300));
    stop_flag.store(true, Ordering::Relaxed);
    pump.join().unwrap();
    let sent = sent.load(Ordering::Relaxed);
    assert!(
        sent > 200,
        "the sender ran through the restart ({sent} packets)"
    );
    assert_eq!(
        drain(&rx),
        0,
        "not one of {sent} packets got through during the restart"
    );

    // The new daemon lists the ban with its reason and remaining time.
    let j = json(&d.cli(&["ban", "list", "--json"]));
    assert_eq!(j[0]["ip"], a4.as_str());
    assert_eq!(j[0]["reason"], "manual: restart test");
    assert!(j[0]["remaining_secs"].as_u64().unwrap() > 3500);
    let s = json(&d.cli(&["status", "--json"]));
    assert_eq!(s["enforcement"], "xdp");
    let users = json(&d.cli(&["user", "list", "--json"]));
    assert_eq!(
        users[0]["user"], "dave",
        "subscribers added at run time survive the restart"
    );
    // The counters were taken over too: every packet the sender sent was dropped as banned.
    let banned = xdp_verdicts(&json(&d.cli(&["stats", "--json"])), "banned");
    assert!(banned >= sent, "banned counter {banned} >= sent {sent}");

    assert!(d.cli(&["ban", "del", &a4]).status.success());
    let tx = sender(pair);
    tx.send_to(b"hello", to).unwrap();
    assert_eq!(
        drain(&rx),
        1,
        "the receiver works: the zero above was the ban"
    );
    daemon.stop_clean();
    assert!(
        !std::path::Path::new(&daemon.dirs.pin_dir).exists(),
        "--detach removed the pins"
    );
}

#[test]
fn config_check_and_default() {
    let dir = sip_firewall_tests::daemon::TempDir::new("cfg");
    let default = std::process::Command::new(daemon_bin())
        .args(["config", "default"])
        .output()
        .unwrap();
    assert!(default.status.success());
    let file = dir.path.join("default.toml");
    std::fs::write(&file, &default.stdout).unwrap();
    let check = std::process::Command::new(daemon_bin())
        .args(["config", "check"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(check.status.success(), "{}", err(&check));
    assert!(out(&check).contains(": ok"));

    let bad = dir.path.join("bad.toml");
    std::fs::write(&bad, "[xdp]\nsip_ports = [5060]\nflod_rate = 10\n").unwrap();
    let check = std::process::Command::new(daemon_bin())
        .args(["config", "check"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(check.status.code(), Some(1));
    let e = err(&check);
    assert!(
        e.contains("flod_rate") && e.contains("line 3") && e.contains("bad.toml"),
        "{e}"
    );
}

/// `config check` refuses a weak `[auth] secret` (one character, empty, a pass phrase)
/// naming the key and how to make a good one; `secret generate` makes one that passes, and
/// `previous_secrets` is a key it knows.
#[test]
fn config_check_refuses_a_weak_secret_and_secret_generate_makes_a_good_one() {
    let dir = sip_firewall_tests::daemon::TempDir::new("cfg-secret");
    let check = |name: &str, auth: &str| {
        let file = dir.path.join(name);
        std::fs::write(&file, format!("[auth]\n{auth}\n")).unwrap();
        std::process::Command::new(daemon_bin())
            .args(["config", "check"])
            .arg(&file)
            .output()
            .unwrap()
    };
    for (name, weak) in [
        ("x.toml", "secret = \"x\""),
        ("empty.toml", "secret = \"\""),
        ("phrase.toml", "secret = \"the same long random string\""),
    ] {
        let o = check(name, weak);
        assert_eq!(o.status.code(), Some(1), "{weak} accepted: {}", out(&o));
        let e = err(&o);
        assert!(
            e.contains("auth.secret") && e.contains("sip-firewall secret generate"),
            "{e}"
        );
    }
    let generated = std::process::Command::new(daemon_bin())
        .args(["secret", "generate"])
        .output()
        .unwrap();
    assert!(generated.status.success(), "{}", err(&generated));
    let secret = out(&generated).trim().to_string();
    assert_eq!(secret.len(), 64, "{secret}");
    assert!(secret.bytes().all(|b| b.is_ascii_hexdigit()), "{secret}");
    let again = std::process::Command::new(daemon_bin())
        .args(["secret", "generate"])
        .output()
        .unwrap();
    assert_ne!(out(&again).trim(), secret, "random each time");
    let o = check(
        "good.toml",
        &format!(
            "secret = \"{secret}\"\nprevious_secrets = [\"{}\"]",
            out(&again).trim()
        ),
    );
    assert!(o.status.success(), "{}", err(&o));
}

/// The count of XDP `verdict`s in the `stats --json` output `stats` (its `xdp` rows are
/// `[verdict, count]`).
fn xdp_verdicts(stats: &serde_json::Value, verdict: &str) -> u64 {
    stats["xdp"]
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r[0] == verdict))
        .and_then(|r| r[1].as_u64())
        .unwrap_or_else(|| panic!("no count of {verdict} in {stats}"))
}
