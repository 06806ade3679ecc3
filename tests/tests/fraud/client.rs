//! Our subscriber's phone (MD5 digest, like SIPp) and the trunk, both UDP sockets in
//! namespace a (the library's UDP client, `sip_firewall_tests::ua::udp`): the phone places
//! calls through the daemon; the trunk (the daemon's `[proxy] outbound`) answers INVITEs
//! with a chosen code and BYEs as a UAS does (200 for its dialog, 481 for a To-tag it never
//! gave, 420 for a `Require` it lacks), and records everything it receives.

use std::time::Duration;

use sip_firewall_tests::{
    domain,
    edge::{Turn, edge},
    netns::Pair,
    ua::{
        Account,
        msg::first_line,
        udp::{self, socket_in},
    },
};

pub const PHONE: &str = "198.51.100.1:5091";
pub const TRUNK: &str = "198.51.100.1:5099";

pub use udp::Trunk;

/// The daemon's config for these tests: the trunk as outbound, `fraud` appended.
pub fn fraud_config(fraud: &str) -> String {
    domain::config(&format!("[fraud]\n{fraud}\n"))
        .replace("[proxy]\n", &format!("[proxy]\noutbound = \"{TRUNK}\"\n"))
}

/// `test`'s daemon with [`fraud_config`]`(fraud)`, the trunk answering INVITEs with
/// `code`, and alice's phone; None (skipped loudly) when the test cannot run.
pub fn start(test: &str, tag: &str, fraud: &str, code: u16) -> Option<(Turn, Trunk, Phone)> {
    let e = edge(test, tag, &fraud_config(fraud), false)?;
    let trunk = trunk(&e.pair, code);
    let phone = Phone::new(&e.pair, "alice", "alice-secret");
    Some((e, trunk, phone))
}

/// The trunk in namespace a, answering INVITEs with `code`.
pub fn trunk(pair: &Pair, code: u16) -> Trunk {
    Trunk::start(socket_in(pair, TRUNK, Duration::from_millis(50)), code)
}

/// Our subscriber's phone.
pub struct Phone(pub udp::Phone);

impl Phone {
    pub fn new(pair: &Pair, user: &str, password: &str) -> Phone {
        Phone(udp::Phone::in_ns(
            pair,
            PHONE,
            Account::new(user, "example.com", password),
        ))
    }

    /// Call `number` at the trunk's domain (407 answered with MD5 digest): the first line
    /// of the final response ("nothing" when none came).
    pub fn call(&mut self, number: &str) -> String {
        line(self.place(number))
    }

    /// Call `number` as [`Phone::call`] does: the whole final response (None when none
    /// came).
    pub fn place(&mut self, number: &str) -> Option<String> {
        let n = self.0.next_number();
        let uri = format!("sip:{number}@trunk.example");
        let user = &self.0.ua.account.user;
        let call_id = format!("fraud-{user}-{}-{n}", std::process::id());
        self.0.invite(&uri, &uri, &call_id, &format!("ft{n}"))
    }

    /// A BYE for the call whose 2xx the phone got (`ok`), with the To-tag `to_tag`: to the
    /// 2xx's Contact along its Record-Route in reverse (RFC 3261 12.1.2). The first line of
    /// the answer ("nothing" when none came).
    pub fn bye(&mut self, ok: &str, to_tag: &str) -> String {
        line(self.0.bye(ok, to_tag))
    }

    /// Receive requests from the edge (answered 200) until `until` holds or `within` passes.
    pub fn listen(&mut self, within: Duration, until: impl Fn(&[String]) -> bool) {
        self.0.listen(within, until)
    }

    /// Requests the phone received (BYEs from the edge), answered 200.
    pub fn requests(&self) -> &[String] {
        &self.0.requests
    }
}

/// The first line of a final response, or "nothing".
fn line(m: Option<String>) -> String {
    m.map(|m| first_line(&m).to_string())
        .unwrap_or_else(|| "nothing".into())
}
