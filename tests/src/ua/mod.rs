//! The one SIP client of the tests: a transport-agnostic core and a connector per transport.
//!
//! - the core: reading and writing SIP text (`msg`: headers, status codes, the response a
//!   UAS builds, a request, the ACK of a failure), digest answers for an account, MD5 or
//!   SHA-256 (`digest`), and a user agent's requests (`Ua`: its Via, REGISTER, INVITE, BYE
//!   along a dialog's route set);
//! - UDP, blocking (`udp`): a phone that registers, calls, hangs up and answers the edge's
//!   requests, a trunk that answers calls as a UAS does, and a storm of registrations at a
//!   set rate (`storm`);
//! - streams, async (`wire`: TCP and TLS byte streams framed by Content-Length, and
//!   WebSocket; `tls` and `ws` make the connections), with the call sequences the transport
//!   tests run across a transport change (`calls`).

pub mod calls;
pub mod digest;
pub mod msg;
pub mod storm;
pub mod tls;
pub mod udp;
pub mod wire;
pub mod ws;

use sip_firewall::auth::digest::Algorithm;

pub use msg::{Request, header, headers, param, response_to, status};

/// Who a client is: a subscriber of `domain` with a password.
#[derive(Clone, Debug)]
pub struct Account {
    pub user: String,
    pub domain: String,
    pub password: String,
}

impl Account {
    pub fn new(user: &str, domain: &str, password: &str) -> Account {
        Account {
            user: user.into(),
            domain: domain.into(),
            password: password.into(),
        }
    }

    /// `sip:user@domain`.
    pub fn aor(&self) -> String {
        format!("sip:{}@{}", self.user, self.domain)
    }
}

/// A number no other branch or tag of this test process has.
pub fn unique() -> u32 {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);
    N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// A user agent's side of its requests, whatever carries them: its account and the digest
/// algorithm it answers with, its Via transport (`UDP`, `TCP`, `TLS`, `WS`, `WSS`) and
/// sent-by, and the Contact it registers.
#[derive(Clone, Debug)]
pub struct Ua {
    pub account: Account,
    pub algorithm: Algorithm,
    pub transport: &'static str,
    pub sent_by: String,
    pub contact: String,
}

impl Ua {
    /// A UA answering MD5 challenges.
    pub fn new(account: Account, transport: &'static str, sent_by: String, contact: String) -> Ua {
        Ua {
            account,
            algorithm: Algorithm::Md5,
            transport,
            sent_by,
            contact,
        }
    }

    /// A Via value with a new branch (RFC 3261 8.1.1.7) and `rport` (RFC 3581).
    pub fn via(&self) -> String {
        format!(
            "SIP/2.0/{} {};branch=z9hG4bK{}x{};rport",
            self.transport,
            self.sent_by,
            self.account.user,
            unique()
        )
    }

    /// A REGISTER of the account's address of record: `contact` is the Contact value (`<uri>`
    /// or `*`), `auth` a credentials line or nothing.
    pub fn register(
        &self,
        call_id: &str,
        cseq: u32,
        contact: &str,
        expires: u32,
        auth: &str,
    ) -> String {
        let aor = format!("<{}>", self.account.aor());
        Request {
            method: "REGISTER",
            uri: &format!("sip:{}", self.account.domain),
            via: &self.via(),
            from: &format!("{aor};tag=r{cseq}"),
            to: &aor,
            call_id,
            cseq,
            extra: &format!("Contact: {contact}\r\nExpires: {expires}\r\n{auth}"),
        }
        .text()
    }

    /// An INVITE to `uri` from the account (From-tag `from_tag`), its Contact, `auth` a
    /// credentials line or nothing.
    pub fn invite(
        &self,
        uri: &str,
        from_tag: &str,
        call_id: &str,
        cseq: u32,
        auth: &str,
    ) -> String {
        Request {
            method: "INVITE",
            uri,
            via: &self.via(),
            from: &format!("<{}>;tag={from_tag}", self.account.aor()),
            to: &format!("<{uri}>"),
            call_id,
            cseq,
            extra: &format!("Contact: <{}>\r\n{auth}", self.contact),
        }
        .text()
    }

    /// The credentials line answering the challenge of `resp` (401 or 407) for `method` with
    /// digest `uri`, in this UA's algorithm.
    pub fn authorize(&self, resp: &str, method: &str, uri: &str) -> String {
        digest::answer(resp, &self.account, self.algorithm, method, uri)
    }
}

/// A request inside the dialog a 2xx (`ok`) set up, sent by its caller: to the 2xx's
/// Contact along its Record-Route in reverse (RFC 3261 12.1.2, 12.2.1.1), with `via`, the
/// To-tag `to_tag` and CSeq `cseq`.
pub fn in_dialog(method: &str, ok: &str, via: &str, to_tag: &str, cseq: u32) -> String {
    let get = |name: &str| header(ok, name).unwrap_or("");
    let mut routes = msg::record_route(ok);
    routes.reverse();
    let to = get("To");
    let to = format!("{};tag={to_tag}", to.split(";tag=").next().unwrap_or(to));
    let dialog = Dialog {
        target: get("Contact"),
        routes,
        from: get("From"),
        to: &to,
        call_id: get("Call-ID"),
    };
    dialog.request(method, via, cseq)
}

/// A request inside the dialog an INVITE (`invite`, as the callee received it) set up,
/// sent by its callee whose 2xx carried the To-tag `my_tag`: to the INVITE's Contact along
/// its Record-Route in order (RFC 3261 12.1.1), From and To swapped.
pub fn in_dialog_as_callee(
    method: &str,
    invite: &str,
    via: &str,
    my_tag: &str,
    cseq: u32,
) -> String {
    let get = |name: &str| header(invite, name).unwrap_or("");
    let from = format!("{};tag={my_tag}", get("To"));
    let dialog = Dialog {
        target: get("Contact"),
        routes: msg::record_route(invite),
        from: &from,
        to: get("From"),
        call_id: get("Call-ID"),
    };
    dialog.request(method, via, cseq)
}

/// One side's view of a dialog (RFC 3261 12.2.1.1): the remote target (`<uri>` or a bare
/// URI), the route set in the order it is used, the local and remote party.
struct Dialog<'a> {
    target: &'a str,
    routes: Vec<String>,
    from: &'a str,
    to: &'a str,
    call_id: &'a str,
}

impl Dialog<'_> {
    /// Its request `method` with `via` and CSeq `cseq`.
    fn request(&self, method: &str, via: &str, cseq: u32) -> String {
        let target = self.target.trim_start_matches('<').trim_end_matches('>');
        let route = if self.routes.is_empty() {
            String::new()
        } else {
            format!("Route: {}\r\n", self.routes.join(", "))
        };
        Request {
            method,
            uri: target,
            via,
            from: self.from,
            to: self.to,
            call_id: self.call_id,
            cseq,
            extra: &route,
        }
        .text()
    }
}
