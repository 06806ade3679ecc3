//! Relay mode in front of a real registrar: Kamailio 5.6 (Debian package `kamailio`,
//! installed by `cargo xtask setup`) with digest users and `use_path`, started by the test
//! in namespace b beside the edge (198.51.100.2:5070, with the config written below),
//! the edge's `[registrar] mode = "relay"` pointing at it and its own user list empty.
//!
//! - svcrack from 198.51.100.1 against Kamailio's bob through the edge: banned at the edge
//!   after 5 refusals by Kamailio; it never finds the password.
//! - alice (198.51.100.3) and bob (198.51.100.4) register through the edge and get
//!   Kamailio's 200; alice calls bob: edge -> Kamailio -> edge (bob's Path) -> bob; the call
//!   completes and alice hangs up; a second call, bob hangs up.
//! - carol registers over TCP and is called over her registering connection.
//!
//! Skips loudly when not root, or when Kamailio or SIPVicious is missing.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    process::{Child, Stdio},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use sip_firewall_tests::{
    domain::{BOB_PASSWORD, EDGE_AT_B, SHORT_TIMERS},
    edge::edge,
    netns::{Pair, in_ns},
    sipp::in_netns,
    sipvicious::{self, spawn_svcrack, svcrack_output},
    ua::{Account, Ua, header, in_dialog, in_dialog_as_callee, response_to, status, udp::Phone},
};

/// Where Kamailio listens, in namespace b beside the edge.
const KAMAILIO: &str = "198.51.100.2:5070";
const ALICE_PASSWORD: &str = "alice-secret";
const CAROL_PASSWORD: &str = "carol-secret";
const AUTH_FAILURES: usize = 5;

/// The registrar's config: usrloc in memory, `use_path` (requests to a contact go through
/// the Path its REGISTER carried: the edge), digest on REGISTER and INVITE against fixed
/// passwords, record_route (in-dialog requests come through it, so that the edge's two
/// stamps of a call never end up adjacent).
fn kamailio_cfg() -> String {
    format!(
        r#"#!KAMAILIO
debug=2
log_stderror=yes
children=2
auto_aliases=no
alias="example.com"

loadmodule "kex.so"
loadmodule "corex.so"
loadmodule "tm.so"
loadmodule "tmx.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "xlog.so"
loadmodule "auth.so"

modparam("tm", "fr_timer", 5000)
modparam("tm", "fr_inv_timer", 20000)
modparam("rr", "enable_full_lr", 0)
modparam("registrar", "use_path", 1)
modparam("registrar", "path_mode", 2)
modparam("registrar", "max_expires", 3600)
modparam("usrloc", "db_mode", 0)

request_route {{
	if (!mf_process_maxfwd_header("10")) {{
		sl_send_reply("483", "Too Many Hops");
		exit;
	}}
	if (is_method("CANCEL")) {{
		if (t_check_trans()) {{
			t_relay();
		}}
		exit;
	}}
	if (!is_method("ACK")) {{
		if (t_precheck_trans()) {{
			t_check_trans();
			exit;
		}}
		t_check_trans();
	}}
	if (has_totag()) {{
		if (loose_route()) {{
			route(RELAY);
		}}
		if (is_method("ACK")) {{
			if (t_check_trans()) {{
				route(RELAY);
			}}
			exit;
		}}
		sl_send_reply("404", "Not here");
		exit;
	}}
	remove_hf("Route");
	route(PASSWORD);
	if (is_method("REGISTER")) {{
		if (!pv_www_authenticate("$td", "$var(pw)", "0")) {{
			www_challenge("$td", "0");
			exit;
		}}
		consume_credentials();
		if (!save("location")) {{
			sl_reply_error();
		}}
		exit;
	}}
	if (is_method("INVITE")) {{
		if (!pv_proxy_authenticate("$fd", "$var(pw)", "0")) {{
			proxy_challenge("$fd", "0");
			exit;
		}}
		consume_credentials();
		record_route();
	}}
	if (!lookup("location")) {{
		sl_send_reply("480", "Temporarily Unavailable");
		exit;
	}}
	route(RELAY);
}}

route[PASSWORD] {{
	$var(pw) = "-";
	if ($au == "alice") {{
		$var(pw) = "{ALICE_PASSWORD}";
	}} else if ($au == "bob") {{
		$var(pw) = "{BOB_PASSWORD}";
	}} else if ($au == "carol") {{
		$var(pw) = "{CAROL_PASSWORD}";
	}}
}}

route[RELAY] {{
	if (!t_relay()) {{
		sl_reply_error();
	}}
	exit;
}}
"#
    )
}

/// The edge: our domain, relay mode to Kamailio, no users; the scanner list empty (svcrack's
/// User-Agent is a scanner's: its refused logins must be what bans it), the flood limit out
/// of the way.
fn edge_config() -> String {
    format!(
        "{EDGE_AT_B}{SHORT_TIMERS}[registrar]\nmode = \"relay\"\nrelay_to = \"sip:{KAMAILIO}\"\n\
         [policy]\nscanners = []\n[bans]\nauth_failures = {AUTH_FAILURES}\n\
         [xdp]\nflood_rate = 10000\nflood_burst = 10000\n"
    )
}

/// Kamailio in namespace b, in the foreground (-DD: its main process stays our child), its
/// log in the test's directory; stopped (SIGTERM, then SIGKILL) when dropped.
struct Kamailio(Child);

impl Kamailio {
    fn start(pair: &Pair, dir: &std::path::Path) -> Kamailio {
        let cfg = dir.join("kamailio.cfg");
        std::fs::write(&cfg, kamailio_cfg()).expect("kamailio.cfg");
        let run = dir.join("kamailio-run");
        std::fs::create_dir_all(&run).expect("kamailio run dir");
        let log = std::fs::File::create(dir.join("kamailio.log")).expect("kamailio.log");
        let child = in_netns(&pair.ns_b, "kamailio")
            .args(["-DD", "-E", "-f"])
            .arg(&cfg)
            .args(["-l", &format!("udp:{KAMAILIO}"), "-Y"])
            .arg(&run)
            .args(["-m", "64", "-M", "8"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start kamailio");
        Kamailio(child)
    }
}

impl Drop for Kamailio {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.0.id()) {
            // SAFETY: a signal to our own child, which has not been waited for.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let t0 = Instant::now();
        while matches!(self.0.try_wait(), Ok(None)) && t0.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Whether Kamailio is installed; else a loud skip.
fn kamailio_installed(test: &str) -> bool {
    let ok = std::process::Command::new("kamailio")
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        sip_firewall_tests::skip(test, "kamailio missing: `cargo xtask setup` installs it");
    }
    ok
}

/// A UDP phone of `user` on `addr` in namespace a, re-sending while Kamailio starts.
fn phone(pair: &Pair, addr: &str, user: &str, password: &str) -> Phone {
    let mut p = Phone::in_ns(pair, addr, Account::new(user, "example.com", password));
    p.resend = true;
    p
}

/// `phone` registers through the edge: Kamailio's challenge, then its 200.
fn registers(p: &mut Phone, call_id: &str) {
    let (_, last) = p.register(call_id, None, 600);
    let last =
        last.unwrap_or_else(|| panic!("{call_id}: no answer to the REGISTER with credentials"));
    assert_eq!(status(&last), 200, "{call_id}: {last}");
    assert!(
        header(&last, "Path").is_some_and(|p| p.contains("sfwf=")),
        "Kamailio kept the edge's Path: {last}"
    );
}

/// The callee's side of a call, in a thread: it answers the INVITE 200 (the phone does),
/// then, with `hangs_up`, sends the BYE itself; else it waits for the caller's BYE. The
/// requests it received and the final answer to its own BYE.
fn callee(mut p: Phone, hangs_up: bool) -> JoinHandle<(Phone, Option<String>)> {
    std::thread::spawn(move || {
        p.listen(Duration::from_secs(10), |r| {
            r.iter().any(|m| m.starts_with("ACK "))
        });
        if !hangs_up {
            p.listen(Duration::from_secs(10), |r| {
                r.iter().any(|m| m.starts_with("BYE "))
            });
            return (p, None);
        }
        let invite = p
            .requests
            .iter()
            .find(|m| m.starts_with("INVITE "))
            .cloned()
            .unwrap_or_default();
        let bye = in_dialog_as_callee("BYE", &invite, &p.ua.via(), "ph", 1);
        let answer = p.final_of(&bye);
        (p, answer)
    })
}

/// `caller` calls `user` at example.com: the 2xx, ACKed.
fn call(caller: &mut Phone, user: &str, call_id: &str) -> String {
    let uri = format!("sip:{user}@example.com");
    let ok = caller
        .invite(&uri, &uri, call_id, call_id)
        .unwrap_or_else(|| panic!("{call_id}: no final answer"));
    assert_eq!(status(&ok), 200, "{call_id}: {ok}");
    let ack = in_dialog("ACK", &ok, &caller.ua.via(), "ph", 2);
    caller.send(&ack);
    ok
}

#[test]
fn relay_to_kamailio() {
    let test = "relay_to_kamailio";
    if !kamailio_installed(test) {
        return;
    }
    let Some(svcrack) = sipvicious::command(test, "sipvicious_svcrack") else {
        return;
    };
    let Some(e) = edge(test, "kam", &edge_config(), false) else {
        return;
    };
    let (pair, d) = (&e.pair, &e.dirs);
    let _kamailio = Kamailio::start(pair, e.dir());
    let alice_ip = pair.add_a4(3).expect("alice's address");
    let bob_ip = pair.add_a4(4).expect("bob's address");

    // Kamailio answers through the edge (it may take a moment to start).
    let mut alice = phone(pair, &format!("{alice_ip}:5062"), "alice", ALICE_PASSWORD);
    let first = alice.register_once("ready", None, 600, "");
    assert!(
        first.as_deref().is_some_and(|m| status(m) == 401),
        "{first:?}\nKamailio said:\n{}",
        std::fs::read_to_string(e.dir().join("kamailio.log")).unwrap_or_default()
    );

    // svcrack against bob through the edge: Kamailio refuses its guesses, the edge bans it.
    let child = spawn_svcrack(pair, &svcrack, d, 2 * AUTH_FAILURES);
    let reason = d.wait_ban(&pair.a4.to_string(), Duration::from_secs(20));
    let reply = svcrack_output(child);
    let reason = reason.unwrap_or_else(|| panic!("svcrack is not banned; it said:\n{reply}"));
    assert_eq!(
        reason,
        format!("auth_failure: {AUTH_FAILURES} failed authentications")
    );
    assert!(
        !reply.contains(BOB_PASSWORD) && !reply.contains("The password for"),
        "svcrack found the password:\n{reply}"
    );

    // Two phones behind different addresses register through the edge.
    registers(&mut alice, "reg-alice");
    let mut bob = phone(pair, &format!("{bob_ip}:5064"), "bob", BOB_PASSWORD);
    registers(&mut bob, "reg-bob");
    assert_eq!(e.status()["relayed_registrations"], 2, "{}", e.status());
    assert_eq!(e.metric("sipfw_registrar_relayed_flows"), 2.0);

    // alice calls bob: edge -> Kamailio -> edge -> bob; alice hangs up.
    bob.resend = false;
    let answering = callee(bob, false);
    let ok = call(&mut alice, "bob", "call-1");
    let bye = alice.bye(&ok, "ph").expect("an answer to alice's BYE");
    assert_eq!(status(&bye), 200, "{bye}");
    let (mut bob, _) = answering.join().expect("bob's side");
    let invite = bob
        .requests
        .iter()
        .find(|m| m.starts_with("INVITE "))
        .expect("bob was called");
    assert!(
        header(invite, "Via").is_some_and(|v| v.contains("198.51.100.2:5060")),
        "{invite}"
    );
    assert!(
        bob.requests.iter().any(|m| m.starts_with("BYE ")),
        "{:?}",
        bob.requests
    );

    // A second call: bob hangs up.
    bob.requests.clear();
    let answering = callee(bob, true);
    call(&mut alice, "bob", "call-2");
    // alice answers the BYE bob sends through the edge, Kamailio and the edge again.
    alice.listen(Duration::from_secs(10), |r| {
        r.iter().any(|m| m.starts_with("BYE "))
    });
    let (bob, bye) = answering.join().expect("bob's side");
    assert!(
        alice.requests.iter().any(|m| m.starts_with("BYE ")),
        "{:?}",
        alice.requests
    );
    let bye = bye.unwrap_or_else(|| panic!("no answer to bob's BYE: {:?}", bob.requests));
    assert_eq!(status(&bye), 200, "{bye}");

    // carol registers over TCP and is called over that connection.
    let carol_ip = pair.add_a4(5).expect("carol's address");
    let mut carol = TcpPhone::connect(pair, carol_ip, e.sip());
    carol.register();
    let ringing = std::thread::spawn(move || carol.answer_call());
    call(&mut alice, "carol", "call-3");
    let (carol, invite) = ringing.join().expect("carol's side");
    assert!(invite.starts_with("INVITE "), "{invite}");
    drop(carol);

    assert!(e.users().is_empty(), "the edge holds no user");
    assert_eq!(e.metric("sipfw_auth_total{result=\"success\"}"), 0.0);
}

/// A phone over one TCP connection from namespace a: it registers on it and is called on
/// it (the edge must use this very connection: the phone accepts no other).
struct TcpPhone {
    stream: TcpStream,
    ua: Ua,
    buf: Vec<u8>,
}

impl TcpPhone {
    fn connect(pair: &Pair, ip: std::net::Ipv4Addr, edge: SocketAddr) -> TcpPhone {
        let stream = in_ns(&pair.ns_a, move || {
            let s = bind_connect(ip, edge)?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            Ok(s)
        })
        .expect("TCP connection from namespace a");
        let me = stream.local_addr().expect("local address");
        let ua = Ua::new(
            Account::new("carol", "example.com", CAROL_PASSWORD),
            "TCP",
            me.to_string(),
            format!("sip:carol@{me};transport=tcp"),
        );
        TcpPhone {
            stream,
            ua,
            buf: Vec::new(),
        }
    }

    fn send(&mut self, text: &str) {
        self.stream
            .write_all(text.as_bytes())
            .expect("send over TCP");
    }

    /// The next message on the connection (framed by Content-Length).
    fn next(&mut self) -> String {
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end + 4]).into_owned();
                let len: usize = header(&head, "Content-Length")
                    .and_then(|l| l.trim().parse().ok())
                    .unwrap_or(0);
                if self.buf.len() >= end + 4 + len {
                    let m: Vec<u8> = self.buf.drain(..end + 4 + len).collect();
                    return String::from_utf8_lossy(&m).into_owned();
                }
            }
            let mut chunk = [0u8; 4096];
            let n = self.stream.read(&mut chunk).expect("read over TCP");
            assert!(n > 0, "the edge closed carol's connection");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// The final response to `req` (provisional ones skipped).
    fn final_of(&mut self, req: &str) -> String {
        self.send(req);
        loop {
            let m = self.next();
            if m.starts_with("SIP/2.0 ") && status(&m) >= 200 {
                return m;
            }
        }
    }

    fn register(&mut self) {
        let contact = format!("<{}>", self.ua.contact);
        let chal = self.final_of(&self.ua.register("reg-carol", 1, &contact, 600, ""));
        assert_eq!(status(&chal), 401, "{chal}");
        let auth = self.ua.authorize(&chal, "REGISTER", "sip:example.com");
        let ok = self.final_of(&self.ua.register("reg-carol", 2, &contact, 600, &auth));
        assert_eq!(status(&ok), 200, "{ok}");
    }

    /// Answer the INVITE that comes on the connection with 200, then wait for its ACK: the
    /// INVITE.
    fn answer_call(mut self) -> (TcpPhone, String) {
        let invite = loop {
            let m = self.next();
            if m.starts_with("INVITE ") {
                break m;
            }
        };
        let contact = format!("Contact: <{}>\r\n", self.ua.contact);
        self.send(&response_to(&invite, "200 OK", "ph", &contact));
        while !self.next().starts_with("ACK ") {}
        (self, invite)
    }
}

/// A TCP connection to `edge` from `ip` (bound first, so that the edge sees that source),
/// blocking.
fn bind_connect(ip: std::net::Ipv4Addr, edge: SocketAddr) -> std::io::Result<TcpStream> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    let stream = rt.block_on(async {
        let s = tokio::net::TcpSocket::new_v4()?;
        s.bind(SocketAddr::new(ip.into(), 0))?;
        s.connect(edge).await
    })?;
    let stream = stream.into_std()?;
    stream.set_nonblocking(false)?;
    Ok(stream)
}
