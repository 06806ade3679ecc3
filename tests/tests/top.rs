//! `sip-firewall top` against a running daemon, run under tmux and read with
//! `tmux capture-pane`: the XDP verdicts move, a ban made shows with its reason, `q` quits.

use std::{
    net::UdpSocket,
    process::Command,
    time::{Duration, Instant},
};

use sip_firewall_tests::{
    daemon::daemon_bin,
    edge::{Edge, xdp_args},
    netns::in_ns,
    skip,
};

/// tmux on a server of its own (`-L`), so no user session is touched.
fn tmux(server: &str, args: &[&str]) -> std::process::Output {
    Command::new("tmux")
        .arg("-L")
        .arg(server)
        .args(args)
        .output()
        .expect("tmux")
}

fn capture(server: &str) -> String {
    String::from_utf8_lossy(&tmux(server, &["capture-pane", "-p", "-t", "top"]).stdout).into_owned()
}

/// Poll the screen until `want` holds; the last screen either way.
fn screen_until(server: &str, want: impl Fn(&str) -> bool) -> (bool, String) {
    let t0 = Instant::now();
    let mut screen = String::new();
    while t0.elapsed() < Duration::from_secs(20) {
        screen = capture(server);
        if want(&screen) {
            return (true, screen);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    (false, screen)
}

/// The packets/s of the `banned` row of the verdict table.
fn banned_rate(screen: &str) -> Option<f64> {
    screen.lines().find_map(|l| {
        let mut cells = l.trim_matches('│').split_whitespace();
        (cells.next()? == "banned").then_some(())?;
        cells.next()?.parse().ok()
    })
}

struct KillServer(String);

impl Drop for KillServer {
    fn drop(&mut self) {
        let _ = tmux(&self.0, &["kill-server"]);
    }
}

#[test]
fn top_shows_verdicts_bans_and_quits_on_q() {
    let test = "top_shows_verdicts_bans_and_quits_on_q";
    if Command::new("tmux").arg("-V").output().is_err() {
        skip(test, "tmux is missing (cargo xtask setup installs it)");
        return;
    }
    let Some(mut daemon) = Edge::root(test, "top", "", xdp_args(true)) else {
        return;
    };
    let (pair, d) = (&daemon.pair, &daemon.dirs);
    // A banned sender whose packets XDP drops, counted as `banned`.
    let a4 = pair.a4.to_string();
    let b = d.cli(&["ban", "add", &a4, "--for", "10m", "--reason", "top test"]);
    assert!(b.status.success());

    let server = format!("sfw-top-{}", std::process::id());
    let _guard = KillServer(server.clone());
    let cmd = format!(
        "{} top --socket {}",
        daemon_bin().display(),
        d.socket().display()
    );
    let out = tmux(
        &server,
        &[
            "new-session",
            "-d",
            "-s",
            "top",
            "-x",
            "110",
            "-y",
            "32",
            &cmd,
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Keep the banned source sending while top refreshes, so its rate is above zero.
    let to = std::net::SocketAddr::new(pair.b4.into(), 5060);
    let sender = std::thread::spawn({
        let ns = pair.ns_a.clone();
        move || {
            in_ns(&ns, move || {
                let s = UdpSocket::bind("0.0.0.0:0")?;
                for _ in 0..60 {
                    for _ in 0..20 {
                        let _ = s.send_to(b"OPTIONS sip:x SIP/2.0\r\n\r\n", to);
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                Ok(())
            })
        }
    });
    let (ok, screen) = screen_until(&server, |s| {
        s.contains("XDP verdicts")
            && s.contains(&a4)
            && s.contains("manual: top test")
            && banned_rate(s).is_some_and(|r| r > 0.0)
    });
    eprintln!("top screen:\n{screen}");
    let _ = sender.join();
    assert!(
        ok,
        "top did not show the verdicts, the ban and a banned rate:\n{screen}"
    );
    assert!(
        screen.contains("enforcement: xdp on veth-b generic"),
        "{screen}"
    );
    assert!(screen.contains("registrations"), "{screen}");

    // q quits: the pane's program ends, and with it the session.
    let out = tmux(&server, &["send-keys", "-t", "top", "q"]);
    assert!(out.status.success());
    let t0 = Instant::now();
    while tmux(&server, &["has-session", "-t", "top"])
        .status
        .success()
    {
        assert!(t0.elapsed() < Duration::from_secs(10), "q did not quit top");
        std::thread::sleep(Duration::from_millis(100));
    }
    daemon.stop_clean();
}

#[test]
fn top_without_a_daemon_says_so() {
    let out = Command::new(daemon_bin())
        .args(["top", "--socket", "/nonexistent/sfw-top.sock"])
        .output()
        .expect("run top");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not running"), "{err}");
}
