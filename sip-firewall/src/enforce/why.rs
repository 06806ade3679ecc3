//! Why the edge would drop or throttle one source now (`sip-firewall why`): the checks of
//! the XDP program and the user-space gate that concern a source, in the order they decide
//! (allow list, deny list, bans, flood limit and trust tier, pressure budget), each read
//! from the state that decides (the enforcer's lists and bans, and the XDP maps when the
//! program is loaded: its ban entries, its flood state, its known entry, the shared budget),
//! never re-derived from counters. Each finding says what would lift it.

use std::{net::IpAddr, time::Duration};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use sip_firewall_common::{BanReason, BanScope, BanValue, XdpConfig};

use super::{EnforceError, Enforcer, bans::reason_code, known::known_group};
use crate::{
    clock::{monotonic_ns, unix_now},
    state::{BanRecord, List},
    xdp::maps::SourceEntries,
};

/// What a check does to the source now.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Effect {
    /// Passes at once: the checks after it are skipped.
    Pass,
    /// Dropped (or refused).
    Drop,
    /// Dropped over a limit, never banned.
    Throttle,
    /// Nothing dropped: the state, for the operator.
    Info,
}

/// One check's state for the source.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// The check: `allow`, `deny`, `ban`, `flood`, `known`, `pressure`, `tcp_slots`, `fraud`.
    pub check: String,
    pub effect: Effect,
    pub detail: String,
    /// What lifts it: a command, or the config change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lift: Option<String>,
}

impl Finding {
    pub fn new(check: &str, effect: Effect, detail: String, lift: Option<String>) -> Finding {
        Finding {
            check: check.to_string(),
            effect,
            detail,
            lift,
        }
    }
}

/// Seconds as an operator reads them (`1h 2m 3s`).
pub fn human(d: Duration) -> String {
    humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
}

/// The most specific entry of `nets` holding `ip`.
fn entry_of(nets: &[IpNet], ip: IpAddr) -> Option<IpNet> {
    nets.iter()
        .filter(|n| n.contains(&ip))
        .max_by_key(|n| n.prefix_len())
        .copied()
}

fn scope_name(scope: u32) -> &'static str {
    if scope == BanScope::SipPorts as u32 {
        "the SIP ports"
    } else {
        "all traffic"
    }
}

/// What made a ban, from its reason (`kind: trigger`).
fn trigger(reason: &str) -> String {
    let code = reason_code(reason);
    match (BanReason::from_u32(code), reason.split_once(':')) {
        (_, Some((_, what))) => what.trim().to_string(),
        (Some(BanReason::Flood), None) => {
            "over the flood limit (flood_rate, flood_burst) from its prefix".to_string()
        }
        (Some(BanReason::RequestRate), None) => {
            "over [bans] request_limit requests per request_window".to_string()
        }
        _ => "an operator's ban".to_string(),
    }
}

impl Enforcer {
    /// The findings of the enforcement checks for `ip`, in the order they decide; `limits`
    /// are the user-space gate's (used when no program is loaded).
    pub fn explain(&self, ip: IpAddr, limits: &XdpConfig) -> Result<Vec<Finding>, EnforceError> {
        // An IPv4-mapped address is the IPv4 source (as the maps key it).
        let ip = ip.to_canonical();
        let mut out = Vec::new();
        if let Some(net) = entry_of(&self.allow, ip) {
            let why = self.listed(List::Allow, &net);
            let why = format!("{why}: every other check is skipped");
            out.push(Finding::new("allow", Effect::Pass, why, None));
            return Ok(out);
        }
        if let Some(net) = entry_of(&self.deny, ip) {
            let lift = if self.is_config_net(List::Deny, &net) {
                format!("remove {net} from [policy] deny, then `sip-firewall reload`")
            } else {
                format!("sip-firewall deny del {net}")
            };
            let why = self.listed(List::Deny, &net);
            out.push(Finding::new("deny", Effect::Drop, why, Some(lift)));
        }
        let maps = match self.xdp.as_ref() {
            Some(x) => Some(x.maps.source(ip)?),
            None => None,
        };
        self.explain_bans(ip, maps.as_ref(), &mut out);
        let known = self.explain_known(ip, maps.as_ref(), &mut out);
        if let Some(m) = &maps {
            explain_flood(m, known, &mut out);
            explain_pressure(m.pressure_tat, &m.settings, known, &mut out);
        } else {
            explain_pressure(None, limits, known, &mut out);
        }
        Ok(out)
    }

    fn list_source(&self, list: List, net: &IpNet) -> &'static str {
        if self.is_config_net(list, net) {
            "in the config file"
        } else {
            "added at run time (CLI or cluster)"
        }
    }

    /// "allow-listed by 192.0.2.0/24 (in the config file)".
    fn listed(&self, list: List, net: &IpNet) -> String {
        let source = self.list_source(list, net);
        format!("{}-listed by {net} ({source})", list.name())
    }

    /// The live bans of `ip` and of its prefix: the record (reason, age) and, with the
    /// program, its map entry (what XDP enforces, its scope).
    fn explain_bans(&self, ip: IpAddr, maps: Option<&SourceEntries>, out: &mut Vec<Finding>) {
        let now = unix_now();
        let prefix = self.learned_key(ip);
        let keys: &[IpAddr] = if prefix == ip { &[ip] } else { &[ip, prefix] };
        let records: Vec<&BanRecord> = keys
            .iter()
            .filter_map(|k| self.bans.get(k))
            .filter(|b| b.is_live(now))
            .collect();
        let mono = monotonic_ns();
        let live = |v: &Option<BanValue>| v.filter(|b| b.expires_ns > mono);
        let entries = maps.map_or((None, None), |m| {
            (live(&m.manual_ban), live(&m.learned_ban))
        });
        for rec in &records {
            let manual = reason_code(&rec.reason) == BanReason::Manual as u32;
            let entry = if manual { entries.0 } else { entries.1 };
            let left = rec.expires_unix.map_or("permanent".to_string(), |t| {
                human(Duration::from_secs(t.saturating_sub(now)))
            });
            let configured = if manual {
                self.manual_scope
            } else {
                self.learned_scope
            };
            let scope = entry.map_or(configured as u32, |e| e.scope);
            out.push(Finding::new(
                "ban",
                Effect::Drop,
                format!(
                    "{} ban of {} ({}): made {} ago, time left {left}, blocks {}; trigger: {}{}",
                    if manual { "manual" } else { "learned" },
                    rec.ip,
                    rec.reason.split(':').next().unwrap_or_default(),
                    human(Duration::from_secs(now.saturating_sub(rec.created_unix))),
                    scope_name(scope),
                    trigger(&rec.reason),
                    if maps.is_some() && entry.is_none() {
                        " (not in the XDP map: enforced by the user-space gate)"
                    } else {
                        ""
                    },
                ),
                Some(format!("sip-firewall ban del {ip}")),
            ));
        }
        // An entry the program holds that the daemon has no record of (made by the program
        // and not reported yet, or left by an earlier daemon).
        let recorded = |manual: bool| {
            records
                .iter()
                .any(|r| (reason_code(&r.reason) == BanReason::Manual as u32) == manual)
        };
        for (manual, entry) in [(true, entries.0), (false, entries.1)] {
            if let Some(e) = entry.filter(|_| !recorded(manual)) {
                let kind = BanReason::from_u32(e.reason).map_or("manual", BanReason::name);
                out.push(Finding::new(
                    "ban",
                    Effect::Drop,
                    format!(
                        "XDP map ban ({kind}) of {}, time left {}, blocks {}; trigger: {}",
                        if manual { ip } else { prefix },
                        crate::clock::remaining(e.expires_ns).map_or("permanent".into(), human),
                        scope_name(e.scope),
                        trigger(kind),
                    ),
                    Some(format!("sip-firewall ban del {ip}")),
                ));
            }
        }
    }

    /// The trust tier: whether the source is known good (user space, and the program's
    /// entry); returns whether it is.
    fn explain_known(
        &self,
        ip: IpAddr,
        maps: Option<&SourceEntries>,
        out: &mut Vec<Finding>,
    ) -> bool {
        let mono = monotonic_ns();
        let in_map = maps.and_then(|m| m.known_until).filter(|t| *t > mono);
        let known = match maps {
            Some(_) => in_map.is_some(),
            None => self.is_known(ip),
        };
        let detail = if known {
            format!(
                "known good ({} is a registered contact, an authenticated subscriber or a peer \
                 of a transaction){}: the known flood limit, passes the pressure budget, never \
                 banned on unauthenticated evidence",
                known_group(ip),
                in_map.map_or(String::new(), |t| format!(
                    " for {} more",
                    human(Duration::from_nanos(t - mono))
                )),
            )
        } else {
            "not known good: the flood limit of unknown sources (banned over it) and the shared \
             pressure budget apply"
                .to_string()
        };
        out.push(Finding::new("known", Effect::Info, detail, None));
        known
    }
}

/// The flood limit of the source's prefix, from the program's GCRA state.
fn explain_flood(m: &SourceEntries, known: bool, out: &mut Vec<Finding>) {
    let prefix = m.prefix.map_or(String::new(), |p| p.to_string());
    let Some(tat) = m.flood_tat else {
        return;
    };
    let state = FloodState {
        tat,
        now: monotonic_ns(),
        known,
    };
    out.extend(flood_finding(&prefix, state, &m.settings));
}

/// A source group's GCRA state (the program's or the user-space gate's, each on its own
/// clock).
pub struct FloodState {
    pub tat: u64,
    pub now: u64,
    /// Judged by the known sources' limit.
    pub known: bool,
}

/// The flood limit's finding for `prefix` under the limits `s`; None when the group has
/// nothing of its burst spent.
pub fn flood_finding(prefix: &str, f: FloodState, s: &XdpConfig) -> Option<Finding> {
    let known = f.known;
    let (interval, tolerance) = if known {
        (s.known_flood_interval_ns, s.known_flood_tolerance_ns)
    } else {
        (s.flood_interval_ns, s.flood_tolerance_ns)
    };
    let ahead = f.tat.saturating_sub(f.now);
    if ahead == 0 || interval == 0 {
        return None;
    }
    let rate = 1_000_000_000 / interval;
    let burst = tolerance / interval + 1;
    let used = ahead.div_ceil(interval);
    let (effect, lift) = match (ahead > tolerance, known) {
        (true, true) => (Effect::Throttle, None),
        (true, false) => (
            Effect::Drop,
            Some("slow down; an allow entry (sip-firewall allow add) skips the limit".to_string()),
        ),
        _ => (Effect::Info, None),
    };
    Some(Finding::new(
        "flood",
        effect,
        format!(
            "flood state of {prefix}: {used} of a burst of {burst} spent at {rate}/s ({}), {}",
            if known { "known tier" } else { "unknown tier" },
            if ahead > tolerance {
                "over the limit now"
            } else {
                "within the limit"
            }
        ),
        lift,
    ))
}

/// The budget unknown sources share (known ones always pass it).
fn explain_pressure(tat: Option<u64>, s: &XdpConfig, known: bool, out: &mut Vec<Finding>) {
    if known || s.pressure_interval_ns == 0 {
        return;
    }
    let budget = 1_000_000_000 / s.pressure_interval_ns;
    let hit = tat.is_some_and(|t| t.saturating_sub(monotonic_ns()) > s.pressure_tolerance_ns);
    out.push(Finding::new(
        "pressure",
        if hit { Effect::Drop } else { Effect::Info },
        format!(
            "unknown sources share a budget of {budget} requests/s{}",
            match (tat, hit) {
                (_, true) => ": spent now, their requests are dropped",
                (Some(_), false) => ": not spent",
                // The user-space gate keeps its own spending (without a program).
                (None, false) => "",
            }
        ),
        hit.then(|| {
            "a registration or authentication makes it known; an allow entry skips it".to_string()
        }),
    ));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn findings_name_the_ban_the_deny_entry_and_nothing_for_a_clean_source() {
        let mut config = Config::default();
        config.policy.deny = vec!["198.51.100.0/24".parse().unwrap()];
        let (mut e, d) = Enforcer::scratch("why", &config);
        let limits = XdpConfig::default().with_pressure_budget(100);

        let clean: IpAddr = "192.0.2.7".parse().unwrap();
        let f = e.explain(clean, &limits).unwrap();
        assert!(f.iter().all(|f| f.effect == Effect::Info), "{f:?}");

        let bad: IpAddr = "192.0.2.9".parse().unwrap();
        e.ban(
            bad,
            Some(Duration::from_secs(600)),
            "auth_failure: 5 failed authentications",
        )
        .unwrap();
        let f = e.explain(bad, &limits).unwrap();
        let ban = f.iter().find(|f| f.check == "ban").expect("a ban finding");
        assert_eq!(ban.effect, Effect::Drop);
        assert!(
            ban.detail.contains("trigger: 5 failed authentications"),
            "{ban:?}"
        );
        assert_eq!(ban.lift.as_deref(), Some("sip-firewall ban del 192.0.2.9"));

        let f = e.explain("198.51.100.3".parse().unwrap(), &limits).unwrap();
        assert_eq!(f[0].check, "deny");
        assert!(
            f[0].lift.as_deref().unwrap().contains("[policy] deny"),
            "{f:?}"
        );

        e.list_add(List::Allow, &"192.0.2.0/24".parse().unwrap())
            .unwrap();
        let f = e.explain(bad, &limits).unwrap();
        assert_eq!(f.len(), 1, "the allow entry decides alone: {f:?}");
        assert_eq!(f[0].effect, Effect::Pass);
        let _ = std::fs::remove_dir_all(&d);
    }
}
