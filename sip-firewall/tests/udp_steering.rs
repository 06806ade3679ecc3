//! UDP steering by Call-ID on the daemon (`[sip] udp_steering`): with two workers the
//! daemon attaches the eBPF `SO_REUSEPORT` program and says so in
//! `sipfw_udp_steering{mode="call_id"}`; a registration over UDP goes through it. With
//! `udp_steering = "kernel"` it attaches nothing and says `kernel`. Without the capabilities
//! to load it (the daemon started by root through `setpriv` with none) it runs on, with the
//! kernel's hash, and says `kernel`. Loading the program needs root (CAP_BPF): without it
//! the first test is skipped, loudly (and fails under CI=true).

use std::{
    net::UdpSocket,
    time::{Duration, Instant},
};

use sip_firewall_tests::{
    daemon::{Loopback, TempDir},
    require_root,
    skip::require_tool,
    ua::{
        Account,
        calls::{DOMAIN, USER, alice_config},
        msg::status,
        udp::Phone,
    },
};

mod common;

/// The daemon with alice's account, two UDP workers and `steering`.
fn start(tag: &str, steering: &str) -> common::Daemon {
    let config = alice_config().replacen(
        "[sip]\n",
        &format!("[sip]\nworkers = 2\nudp_steering = \"{steering}\"\n"),
        1,
    );
    common::start(tag, &config, Some("warn"))
}

/// `sipfw_udp_steering{mode}` of the daemon (None: not exported).
fn mode(d: &common::Daemon, mode: &str) -> Option<f64> {
    common::scrape_opt(d.metrics)?
        .get(&format!("sipfw_udp_steering{{mode=\"{mode}\"}}"))
        .copied()
}

#[test]
fn two_workers_steer_by_call_id() {
    if !require_root("two_workers_steer_by_call_id") {
        return;
    }
    let d = start("udp-steering", "call_id");
    assert_eq!(mode(&d, "call_id"), Some(1.0), "steering not on");
    assert_eq!(mode(&d, "kernel"), Some(0.0));

    // Several registrations, each from its own socket: every one is answered through the
    // steered group.
    for n in 0..4 {
        let sock = UdpSocket::bind("127.0.0.1:0").expect("phone");
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .expect("timeout");
        let mut phone = Phone::new(sock, d.sip, Account::new(USER, DOMAIN, "s3cret"));
        let t0 = Instant::now();
        let (_, ok) = phone.register(&format!("steer-{n}@test"), None, 300);
        assert_eq!(ok.as_deref().map(status), Some(200), "{ok:?}");
        assert!(t0.elapsed() < Duration::from_secs(10));
    }
}

#[test]
fn kernel_steering_attaches_nothing() {
    let d = start("udp-steering-kernel", "kernel");
    assert_eq!(mode(&d, "kernel"), Some(1.0));
    assert_eq!(mode(&d, "call_id"), Some(0.0));
}

#[test]
fn without_cap_bpf_the_daemon_runs_on_the_kernels_hash() {
    const TEST: &str = "without_cap_bpf_the_daemon_runs_on_the_kernels_hash";
    if !require_root(TEST) || !require_tool(TEST, "setpriv", "util-linux") {
        return;
    }
    // The daemon exec'd with an empty bounding set: root without any capability.
    let dir = TempDir::new("udp-steering-nocap");
    let wrapper = dir.path.join("sip-firewall");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexec setpriv --bounding-set=-all --inh-caps=-all {} \"$@\"\n",
            env!("CARGO_BIN_EXE_sip-firewall")
        ),
    )
    .expect("wrapper");
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    let config = alice_config().replacen("[sip]\n", "[sip]\nworkers = 2\n", 1);
    let d = Loopback::start(&wrapper, "udp-steering-nocap", &config, Some("warn"), &[]);
    assert_eq!(
        mode(&d, "kernel"),
        Some(1.0),
        "steering claimed without CAP_BPF"
    );
    assert_eq!(mode(&d, "call_id"), Some(0.0));
    let sock = UdpSocket::bind("127.0.0.1:0").expect("phone");
    sock.set_read_timeout(Some(Duration::from_millis(50)))
        .expect("timeout");
    let mut phone = Phone::new(sock, d.sip, Account::new(USER, DOMAIN, "s3cret"));
    let (_, ok) = phone.register("nocap@test", None, 300);
    assert_eq!(ok.as_deref().map(status), Some(200), "{ok:?}");
}
