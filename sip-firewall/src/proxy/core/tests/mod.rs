//! The core's unit tests, one file per topic, on the fixture here: a core from a
//! configuration text on a fake clock, a message fed from a source, what the core sent, the
//! clock advanced with the timers run as the timer task runs them. Each file's harness keeps
//! its own state and calls these.
//!
//! `calls.rs` forking, best response, CANCEL, timeouts, strays; `edge.rs` the edge of the
//! trust (own addresses, loops, stamps, enumeration, flows); `fraud.rs` the toll-fraud guard;
//! `dns.rs` RFC 3263 routing; `cluster.rs` two cluster nodes; `auth.rs` digest credentials
//! from elsewhere; `dialog.rs` the dialog stamp; `hiding.rs` topology hiding.

use super::*;
use crate::{proxy::metrics::ProxyMetrics, seams::NoObserver};
use sip_firewall_sip::{Limits, parse::parse};

/// The configuration `rest` behind the `[sip]` and `[policy]` of a [`Loopback`] core: our
/// domain example.com on 127.0.0.1:5060, 10.0.0.0/8 allow-listed.
pub(super) fn loopback(rest: &str) -> String {
    format!(
        "[sip]\ndomains = [\"example.com\"]\nlisten = [\"127.0.0.1:5060\"]\n\
         [policy]\nallow = [\"10.0.0.0/8\"]\n{rest}"
    )
}

/// A core on 127.0.0.1:5060 over UDP, on a fake clock: the harness of the files whose
/// messages all come over that one listener; each adds what its topic needs.
pub(super) struct Loopback {
    pub(super) core: Core,
    pub(super) now: Instant,
}

impl Loopback {
    pub(super) fn with_config(text: &str) -> Loopback {
        Loopback::observed_by(text, Arc::new(NoObserver))
    }

    pub(super) fn observed_by(text: &str, observer: Arc<dyn Observer>) -> Loopback {
        let now = Instant::now();
        Loopback {
            core: observed_core(text, now, observer),
            now,
        }
    }

    /// Feed a message from `source`: the action and what the core sent, as text.
    pub(super) fn feed(&mut self, text: &str, source: &str) -> (Action, Vec<(SocketAddr, String)>) {
        let ctx = ctx_on(source, "127.0.0.1:5060", Transport::Datagram);
        feed(&mut self.core, self.now, text, &ctx)
    }

    /// The same, what the core sent only.
    pub(super) fn feed_sent(&mut self, text: &str, source: &str) -> Vec<(SocketAddr, String)> {
        self.feed(text, source).1
    }

    pub(super) fn sent(&mut self) -> Vec<(SocketAddr, String)> {
        sent(&mut self.core)
    }

    /// Advance the fake clock, running timers every 10ms as the timer task does.
    pub(super) fn advance(&mut self, d: Duration) -> Vec<(SocketAddr, String)> {
        advance(&mut self.core, &mut self.now, d, Duration::from_millis(10))
    }
}

/// A core from the configuration `text`, its clock starting at `now`.
pub(super) fn core(text: &str, now: Instant) -> Core {
    observed_core(text, now, Arc::new(NoObserver))
}

/// The same, telling `observer` what the fast path learns from.
pub(super) fn observed_core(text: &str, now: Instant, observer: Arc<dyn Observer>) -> Core {
    let config = Config::from_toml(text, std::path::Path::new("t.toml")).expect("config");
    Core::new(&config, ProxyMetrics::new(None), observer, now).expect("core")
}

/// The context of a message from `source` to `local` over `transport`.
pub(super) fn ctx_on(source: &str, local: &str, transport: Transport) -> Context {
    Context::new(
        source.parse().expect("addr"),
        local.parse().expect("addr"),
        transport,
    )
}

/// Feed the message `text` to `core` at `now` in `ctx`: the action, and what the core sent.
pub(super) fn feed(
    core: &mut Core,
    now: Instant,
    text: &str,
    ctx: &Context,
) -> (Action, Vec<(SocketAddr, String)>) {
    let m = parse(text.as_bytes(), &Limits::default(), ctx.transport).expect("parse");
    let a = if m.is_request() {
        core.request(&m, ctx, now)
    } else {
        core.response(&m, ctx, now)
    };
    (a, sent(core))
}

/// What the core sent since the last call, by destination address, as text.
pub(super) fn sent(core: &mut Core) -> Vec<(SocketAddr, String)> {
    core.take_sends()
        .into_iter()
        .map(|(d, b)| (d.addr, String::from_utf8(b).expect("utf8")))
        .collect()
}

/// The messages of `sent` that went to `addr` and start with `start`.
pub(super) fn to(sent: &[(SocketAddr, String)], addr: &str, start: &str) -> Vec<String> {
    let addr: SocketAddr = addr.parse().expect("addr");
    sent.iter()
        .filter(|(a, m)| *a == addr && m.starts_with(start))
        .map(|(_, m)| m.clone())
        .collect()
}

/// The first message in `sent` that starts with `start` (a method or a status line).
pub(super) fn sent_starting<'a>(sent: &'a [(SocketAddr, String)], start: &str) -> &'a str {
    sent.iter()
        .find(|(_, m)| m.starts_with(start))
        .map(|(_, m)| m.as_str())
        .unwrap_or_else(|| panic!("nothing sent starts with {start}: {sent:?}"))
}

/// Advance the fake clock `now` by `d`, running the timers every `step`; what was sent.
pub(super) fn advance(
    core: &mut Core,
    now: &mut Instant,
    d: Duration,
    step: Duration,
) -> Vec<(SocketAddr, String)> {
    let end = *now + d;
    let mut out = Vec::new();
    while *now < end {
        *now += step.min(end - *now);
        core.tick(*now);
        out.extend(sent(core));
    }
    out
}

/// The nonce of the first challenge in an answer.
pub(super) fn nonce_of(challenge: &str) -> String {
    let i = challenge.find("nonce=\"").expect("a challenge") + 7;
    challenge[i..]
        .split('"')
        .next()
        .expect("closing quote")
        .to_string()
}

/// `header` with digest credentials of bob (SHA-256, nonce-count `nc`) for `method` over
/// `uri`.
pub(super) fn credentials(header: &str, nonce: &str, nc: &str, method: &str, uri: &str) -> String {
    credentials_of("bob", header, nonce, nc, method, uri)
}

/// [`credentials`] of `user` at example.com (password `pw`).
pub(super) fn credentials_of(
    user: &str,
    header: &str,
    nonce: &str,
    nc: &str,
    method: &str,
    uri: &str,
) -> String {
    use crate::auth::digest::{Algorithm, response_auth};
    let ha1 = Algorithm::Sha256.ha1(user, "example.com", "pw");
    let r = response_auth(Algorithm::Sha256, &ha1, nonce, nc, "cn", method, uri);
    format!(
        "{header}: Digest username=\"{user}\", realm=\"example.com\", nonce=\"{nonce}\", \
         uri=\"{uri}\", response=\"{r}\", algorithm=SHA-256, qop=auth, nc={nc}, cnonce=\"cn\"\r\n"
    )
}

/// The header lines of a response to the request `req` (as the proxy forwarded it): its
/// Via, From, Call-ID, CSeq and Record-Route, and its To with the tag `to_tag`.
pub(super) fn response_lines(req: &str, to_tag: &str) -> String {
    let mut out = String::new();
    for line in req.split("\r\n").skip(1) {
        let lower = line.to_ascii_lowercase();
        if ["via:", "from:", "call-id:", "cseq:", "record-route:"]
            .iter()
            .any(|p| lower.starts_with(p))
        {
            out.push_str(line);
            out.push_str("\r\n");
        } else if lower.starts_with("to:") {
            out.push_str(&format!("{line};tag={to_tag}\r\n"));
        }
    }
    out
}

/// Whether `core`'s location store binds no contact to `aor` at `now` (the store every shard
/// shares, behind its lock).
pub(super) fn unbound(core: &Core, aor: &str, now: Instant) -> bool {
    core.store.lock().lookup(aor, now).is_empty()
}

/// Requests `core` refused for routing integrity with `reason` (`sipfw_dialog_refused_total`).
pub(super) fn refused(core: &Core, reason: &str) -> u64 {
    core.metrics
        .dialog_refused
        .with_label_values(&[reason])
        .get()
}

mod auth;
mod calls;
mod cluster;
mod dialog;
mod dns;
mod edge;
mod fraud;
mod hiding;
mod keepalive;
mod relay_fraud;
mod relay_mode;
