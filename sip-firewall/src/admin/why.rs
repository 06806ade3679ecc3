//! `sip-firewall why ADDRESS[:PORT]`: every reason the edge would drop or throttle a source
//! now, in the order the XDP program and the gate decide, and what lifts each. The daemon
//! answers from its own state: the enforcer's lists, bans and the XDP maps
//! ([`crate::enforce::why`]), the user-space gate's request window and flood state, the TCP
//! connection slots, the registrations from the source and the fraud guard's suspensions of
//! their accounts.

use std::{net::IpAddr, process::ExitCode};

use super::{
    commands::{Common, ask, decode, table},
    protocol::{Request, Response, WhyView},
};
use crate::enforce::{
    Enforcer,
    why::{Effect, Finding, human},
};

/// The daemon's answer, from the enforcer, the live gate limits (through the reloader), the
/// user-space gate's windows, the TCP slots and the proxy.
pub(super) fn answer(
    e: &Enforcer,
    reloader: Option<&crate::reload::Reloader>,
    gate: Option<&crate::enforce::gate::UserGate>,
    slots: Option<&crate::server::slots::TcpSlots>,
    proxy: Option<&crate::proxy::Proxy>,
    (ip, port): (IpAddr, Option<u16>),
) -> anyhow::Result<Response> {
    let limits = reloader
        .and_then(|r| r.settings())
        .map(|s| *s.gate_limits())
        .unwrap_or_default();
    let mut findings = e.explain(ip, &limits)?;
    let allowed = findings.first().is_some_and(|f| f.effect == Effect::Pass);
    if !allowed && let Some(gate) = gate {
        findings.extend(gate.explain(ip.to_canonical(), e.is_known(ip)));
    }
    if !allowed && let Some(slots) = slots {
        findings.push(tcp_slots(slots, ip));
    }
    if let Some(proxy) = proxy {
        findings.extend(accounts(proxy, ip, port));
    }
    let verdict = if findings.iter().any(|f| f.effect == Effect::Drop) {
        "drop"
    } else if findings.iter().any(|f| f.effect == Effect::Throttle) {
        "throttle"
    } else if allowed {
        "pass"
    } else {
        "nothing"
    };
    let source = match port {
        Some(p) => std::net::SocketAddr::new(ip, p).to_string(),
        None => ip.to_string(),
    };
    Ok(Response::ok(WhyView {
        source,
        verdict: verdict.to_string(),
        findings,
    }))
}

/// The source's TCP connections against the per-source bound (`[sip] max_tcp_per_source`).
fn tcp_slots(slots: &crate::server::slots::TcpSlots, ip: IpAddr) -> Finding {
    let (total, per_source) = slots.limits();
    let (in_use, of_source) = slots.used(ip);
    let (effect, what) = if of_source >= per_source {
        (Effect::Drop, "its new connections are refused")
    } else if in_use >= total {
        (
            Effect::Drop,
            "every slot is taken: new connections are refused",
        )
    } else {
        (Effect::Info, "below the bounds")
    };
    Finding::new(
        "tcp_slots",
        effect,
        format!(
            "{of_source} of {per_source} TCP/TLS/WebSocket connections per source in use \
             ({in_use} of {total} in total): {what}"
        ),
        (effect == Effect::Drop)
            .then(|| "close idle connections; [sip] max_tcp_per_source and reload".to_string()),
    )
}

/// The registrations from the source, and the fraud guard's suspension of their accounts
/// (and of the source as a trunk peer).
fn accounts(proxy: &crate::proxy::Proxy, ip: IpAddr, port: Option<u16>) -> Vec<Finding> {
    let bindings = proxy.bindings_from(ip, port);
    let mut out: Vec<Finding> = bindings
        .iter()
        .map(|(aor, b, left)| {
            Finding::new(
                "registered",
                Effect::Info,
                format!(
                    "{aor} registered from {} over {:?} (contact {}), {} left",
                    b.source,
                    b.transport,
                    b.contact,
                    human(*left)
                ),
                None,
            )
        })
        .collect();
    let mut names: Vec<String> = bindings.into_iter().map(|(aor, _, _)| aor).collect();
    names.push(format!("peer:{}", ip.to_canonical()));
    for s in proxy.fraud_status(None).suspended {
        if names.contains(&s.account) {
            let since = crate::clock::unix_now().saturating_sub(s.since_unix);
            out.push(Finding::new(
                "fraud",
                Effect::Drop,
                format!(
                    "{} suspended by the fraud guard {} ago ({}): its calls get 403",
                    s.account,
                    human(std::time::Duration::from_secs(since)),
                    s.reason
                ),
                Some(format!("sip-firewall fraud unblock {}", s.account)),
            ));
        }
    }
    out
}

/// `ADDRESS`, `ADDRESS:PORT` or `[IPv6]:PORT`.
pub fn parse_source(s: &str) -> Result<(IpAddr, Option<u16>), String> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok((ip, None));
    }
    s.parse::<std::net::SocketAddr>()
        .map(|a| (a.ip(), Some(a.port())))
        .map_err(|_| {
            format!("{s:?} is not an address (192.0.2.7, 192.0.2.7:5060, [2001:db8::7]:5060)")
        })
}

/// The CLI command.
pub fn why(common: &Common, source: (IpAddr, Option<u16>)) -> ExitCode {
    let (ip, port) = source;
    ask(common, Request::Why { ip, port }, |d| {
        let w: WhyView = decode(d)?;
        Ok(render(&w))
    })
}

fn render(w: &WhyView) -> String {
    let mut out = match w.verdict.as_str() {
        "nothing" => format!("{}: nothing drops or throttles it now\n", w.source),
        "pass" => format!("{}: allow-listed, passes every check\n", w.source),
        v => format!("{}: {v}\n", w.source),
    };
    let rows: Vec<Vec<String>> = w
        .findings
        .iter()
        .map(|f| {
            vec![
                f.check.clone(),
                format!("{:?}", f.effect).to_lowercase(),
                f.detail.clone(),
                f.lift.clone().unwrap_or_default(),
            ]
        })
        .collect();
    out.push_str(&table(&["check", "effect", "detail", "lifted by"], &rows));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_parse_with_and_without_port() {
        assert_eq!(
            parse_source("192.0.2.7").unwrap(),
            ("192.0.2.7".parse().unwrap(), None)
        );
        assert_eq!(
            parse_source("192.0.2.7:5062").unwrap(),
            ("192.0.2.7".parse().unwrap(), Some(5062))
        );
        assert_eq!(
            parse_source("[2001:db8::7]:5060").unwrap(),
            ("2001:db8::7".parse().unwrap(), Some(5060))
        );
        assert!(
            parse_source("phone.example")
                .unwrap_err()
                .contains("phone.example")
        );
    }
}
