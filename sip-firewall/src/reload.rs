//! Live reload (`sip-firewall reload`, SIGHUP): re-read the config file and apply what
//! changed without a restart. Nothing that runs is torn down, so calls, registrations,
//! transactions and bans go on. An invalid file is refused with the same key-and-line error
//! as `config check`, and the running config stays.
//!
//! Applied at once:
//! - `[policy]`: the allow and deny lists (XDP maps, the user-space gate, and the proxy's
//!   trusted peers), the scanner list and the behavioural scanner thresholds
//!   (`scan_targets`, `scan_window`);
//! - `[xdp]` limits: flood rate and burst (also for known sources), ban time, payload bound,
//!   ban scope, pressure budget, Via scan bound, SIP ports; in the XDP config map and in the
//!   user-space gate;
//! - `[bans]`: every threshold, window and ban time (the learner and the gate read them for
//!   each event), and the learned-ban scope;
//! - `[proxy]` (but `advertise` and `reply_from_any`), `[timers]`, `[registrar]`, `[auth]`
//!   users, algorithms and nonce lifetime, and `[sip]` transaction caps and `force_rport`;
//! - `[tls]` certificate, private key and CA (renewed in place or under new paths): new
//!   handshakes (TLS and WSS) use them, open connections keep theirs; a file that cannot be
//!   read refuses the reload;
//! - `[hep]`: the export starts, moves to another collector or stops (a new queue and
//!   sender; the old one drains and ends); adding `drops` to `capture` takes a capture slot
//!   of the XDP program, removing it frees the slot;
//! - `[metrics] listen`: the endpoint moves (the new address is bound first, so a reload that
//!   cannot bind is refused).
//!
//! Everything else is read once at start; a reload names each such setting that changed in
//! the answer ("needs a restart") and keeps its running value, so the next reload names it
//! again: listen addresses and interfaces, the state and admin paths, `advertise` (our
//! Record-Route and Via names in dialogs under way), `reply_from_any` (the keys of open
//! transactions depend on it), the digest secret (nonces and dialog stamps), `[fraud]`
//! (its counters are per rule), `[log]`, the rest of `[tls]`, `[ws]`, `[wss]`, `[dns]` and
//! `[cluster]`, `[[feeds]]`.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, OnceLock},
};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::{
    config::{Config, ConfigError},
    enforce::{Enforcer, live::EnforceSettings},
    metrics::http::Endpoint,
    state::List,
};

/// Where a reload reads the config from: the file and the command line of `run` on top.
type Source = Box<dyn Fn() -> Result<Config, ConfigError> + Send + Sync>;

static SOURCE: OnceLock<Source> = OnceLock::new();

/// Set once by `main` before the daemon starts: how to read the config again.
pub fn set_source(f: impl Fn() -> Result<Config, ConfigError> + Send + Sync + 'static) {
    let _ = SOURCE.set(Box::new(f));
}

/// What a reload did.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ReloadReport {
    /// Settings applied now, e.g. `policy.allow: +192.0.2.0/24`, `bans.auth_failures`.
    pub applied: Vec<String>,
    /// Settings that changed in the file but take effect only after a restart.
    pub restart_needed: Vec<String>,
}

/// Re-reads and applies; shared by the admin API and the SIGHUP handler.
pub struct Reloader {
    /// The config in force (restart-only settings keep their running values).
    current: Mutex<Config>,
    enforcer: Arc<Mutex<Enforcer>>,
    proxy: Option<Arc<crate::proxy::Proxy>>,
    settings: Option<Arc<EnforceSettings>>,
    metrics: Option<Arc<Endpoint>>,
    hep: Option<Arc<crate::hep::Hep>>,
}

impl Reloader {
    pub fn new(
        config: Config,
        enforcer: Arc<Mutex<Enforcer>>,
        proxy: Option<Arc<crate::proxy::Proxy>>,
    ) -> Reloader {
        Reloader {
            current: Mutex::new(config),
            enforcer,
            proxy,
            settings: None,
            metrics: None,
            hep: None,
        }
    }

    /// The `[bans]` and gate limits the learner and the user-space gate read.
    pub fn with_settings(mut self, settings: Arc<EnforceSettings>) -> Reloader {
        self.settings = Some(settings);
        self
    }

    /// The metrics endpoint, moved when `[metrics] listen` changes.
    pub fn with_metrics_endpoint(mut self, endpoint: Arc<Endpoint>) -> Reloader {
        self.metrics = Some(endpoint);
        self
    }

    /// The live `[bans]` and gate limits, if this reloader changes them.
    pub fn settings(&self) -> Option<&Arc<EnforceSettings>> {
        self.settings.as_ref()
    }

    /// The HEP export, restarted when `[hep]` changes.
    pub fn with_hep(mut self, hep: Arc<crate::hep::Hep>) -> Reloader {
        self.hep = Some(hep);
        self
    }

    /// Read the file again and apply what changed; `Err` (nothing changed) when the file is
    /// unreadable or invalid, or when no source was set.
    pub fn reload(&self) -> Result<ReloadReport, String> {
        let source = SOURCE
            .get()
            .ok_or("this daemon was not started from a config file it can re-read")?;
        let new = source().map_err(|e| e.to_string())?;
        self.apply(new)
    }

    /// Apply `new` over the running config.
    pub fn apply(&self, new: Config) -> Result<ReloadReport, String> {
        let mut current = self
            .current
            .lock()
            .map_err(|_| "internal state poisoned".to_string())?;
        let old = current.clone();
        let mut step = Step {
            old: &old,
            new: &new,
            run: old.clone(),
            report: ReloadReport::default(),
        };
        // First what can fail before anything changed: the files and the metrics address.
        self.reload_files(&mut step)?;
        self.apply_enforcement(&mut step)?;
        self.apply_proxy(&mut step);
        let Step {
            mut run,
            mut report,
            ..
        } = step;
        if let Some(hep) = &self.hep {
            hep.apply(&new.hep, advertised_ip(&run))
                .map_err(|e| format!("{}: {}", e.key, e.message))?;
            run.hep = new.hep.clone();
        }

        // Name what changed: applied (but the lists and users, named entry by entry above),
        // and what differs between what runs and the file (needs a restart).
        let detailed = ["policy.allow", "policy.deny", "auth.users"];
        report.applied.extend(
            changed_settings(&old, &run)
                .into_iter()
                .filter(|k| !detailed.contains(&k.as_str())),
        );
        // A certificate renewed in place and one under a new path are one line.
        let mut seen = std::collections::HashSet::new();
        report.applied.retain(|k| seen.insert(k.clone()));
        report.restart_needed = changed_settings(&run, &new);
        *current = run;
        Ok(report)
    }

    /// [tls] certificate, private_key and ca are read again (renewed in place, or other
    /// paths) for new handshakes, a bad file refusing the reload before anything changed;
    /// then a new metrics address is bound.
    fn reload_files(&self, step: &mut Step) -> Result<(), String> {
        let tls_files = crate::server::config::TlsConfig {
            certificate: step.new.tls.certificate.clone(),
            private_key: step.new.tls.private_key.clone(),
            ca: step.new.tls.ca.clone(),
            ..step.old.tls.clone()
        };
        if crate::server::tls::reload_certificates(&tls_files)
            .map_err(|e| format!("[tls]: {e:#}"))?
        {
            step.report.applied.push("tls.certificate".into());
        }
        step.run.tls = tls_files;
        if step.old.metrics.listen != step.new.metrics.listen
            && let Some(endpoint) = &self.metrics
        {
            endpoint
                .rebind(step.new.metrics.listen)
                .map_err(|e| format!("metrics.listen: {e:#}"))?;
            step.run.metrics.listen = step.new.metrics.listen;
        }
        Ok(())
    }

    /// The lists of the config, the fast path's limits and `[bans]`: to the enforcer, its
    /// maps and the live settings of the gate and the learner.
    fn apply_enforcement(&self, step: &mut Step) -> Result<(), String> {
        let mut enforcer = self
            .enforcer
            .lock()
            .map_err(|_| "internal state poisoned".to_string())?;
        apply_lists(&mut enforcer, step.old, step.new, &mut step.report)?;
        step.run.policy.allow = step.new.policy.allow.clone();
        step.run.policy.deny = step.new.policy.deny.clone();
        step.run.policy.scanners = step.new.policy.scanners.clone();
        step.run.policy.scan_targets = step.new.policy.scan_targets;
        step.run.policy.scan_window = step.new.policy.scan_window;

        // The fast path's limits, written to its config map at once (and to the gate below).
        take_xdp_limits(&mut step.run.xdp, &step.new.xdp);
        step.run.bans = step.new.bans.clone();
        step.run.pressure = step.new.pressure.clone();
        if enforcer.has_fast_path()
            && (differs(&step.old.xdp, &step.run.xdp)
                || differs(&step.old.bans.learned_scope, &step.run.bans.learned_scope))
        {
            enforcer
                .set_xdp_settings(&step.run)
                .map_err(|e| format!("writing the XDP settings: {e}"))?;
        }
        drop(enforcer);
        if let Some(settings) = &self.settings {
            settings.set(&step.run);
        }
        Ok(())
    }

    /// The proxy's live settings, and the subscribers of the config: added, changed (new
    /// hashes) and removed.
    fn apply_proxy(&self, step: &mut Step) {
        step.run.proxy.outbound = step.new.proxy.outbound.clone();
        step.run.proxy.internal_next_hops = step.new.proxy.internal_next_hops.clone();
        step.run.proxy.unavailable = step.new.proxy.unavailable;
        step.run.proxy.identity_headers = step.new.proxy.identity_headers.clone();
        step.run.proxy.stamp_lifetime = step.new.proxy.stamp_lifetime;
        step.run.timers = step.new.timers.clone();
        step.run.registrar = step.new.registrar.clone();
        step.run.auth.algorithms = step.new.auth.algorithms.clone();
        step.run.auth.nonce_lifetime = step.new.auth.nonce_lifetime;
        step.run.sip.max_transactions = step.new.sip.max_transactions;
        step.run.sip.max_transactions_per_source = step.new.sip.max_transactions_per_source;
        step.run.sip.force_rport = step.new.sip.force_rport;
        if let Some(proxy) = &self.proxy {
            proxy.reconfigure(&step.run);
            let key = |u: &crate::auth::config::UserEntry| (u.user.clone(), u.domain.clone());
            for u in &step.new.auth.users {
                let before = step.old.auth.users.iter().find(|o| key(o) == key(u));
                if before.is_none_or(|b| differs(b, u)) {
                    proxy.add_user(u);
                    step.report
                        .applied
                        .push(format!("auth.users: {}@{}", u.user, u.domain));
                }
            }
            for u in &step.old.auth.users {
                if !step.new.auth.users.iter().any(|n| key(n) == key(u)) {
                    proxy.remove_user(&u.user, &u.domain);
                    step.report
                        .applied
                        .push(format!("auth.users: -{}@{}", u.user, u.domain));
                }
            }
        }
        step.run.auth.users = step.new.auth.users.clone();
    }
}

/// One reload under way: the config that ran, the file's new one, what will run (the old
/// config, taking the new one's live settings part by part) and what the report names.
struct Step<'a> {
    old: &'a Config,
    new: &'a Config,
    run: Config,
    report: ReloadReport,
}

/// Lists: the config's entries change; those added at run time (the state) stay.
fn apply_lists(
    enforcer: &mut Enforcer,
    old: &Config,
    new: &Config,
    report: &mut ReloadReport,
) -> Result<(), String> {
    for (list, was, now) in [
        (List::Allow, &old.policy.allow, &new.policy.allow),
        (List::Deny, &old.policy.deny, &new.policy.deny),
    ] {
        let was: Vec<IpNet> = was.iter().map(IpNet::trunc).collect();
        let now: Vec<IpNet> = now.iter().map(IpNet::trunc).collect();
        let stored = enforcer
            .store()
            .nets(list)
            .map_err(|e| format!("reading the state: {e}"))?;
        for n in now.iter().filter(|n| !was.contains(n)) {
            enforcer
                .config_net(list, n, true)
                .map_err(|e| format!("policy.{}: {e}", list.name()))?;
            report.applied.push(format!("policy.{}: +{n}", list.name()));
        }
        for n in was.iter().filter(|n| !now.contains(n)) {
            // One the state also holds stays in force (the enforcer keeps it).
            enforcer
                .config_net(list, n, false)
                .map_err(|e| format!("policy.{}: {e}", list.name()))?;
            if !stored.contains(n) {
                report.applied.push(format!("policy.{}: -{n}", list.name()));
            }
        }
    }
    Ok(())
}

/// The `[xdp]` settings a reload changes: the fast path's limits and ports.
fn take_xdp_limits(x: &mut crate::xdp::config::XdpSection, n: &crate::xdp::config::XdpSection) {
    x.flood_rate = n.flood_rate;
    x.flood_burst = n.flood_burst;
    x.known_flood_rate = n.known_flood_rate;
    x.known_flood_burst = n.known_flood_burst;
    x.ban_time = n.ban_time;
    x.max_payload = n.max_payload;
    x.ban_scope = n.ban_scope;
    x.pressure_budget = n.pressure_budget;
    x.via_scan_bytes = n.via_scan_bytes;
    x.sip_ports = n.sip_ports.clone();
}

/// The address of `[proxy] advertise` when it is one: what stands for a listener bound to
/// the unspecified address in what is exported (the address peers send to).
pub fn advertised_ip(c: &Config) -> Option<std::net::IpAddr> {
    let a = c.proxy.advertise.as_deref()?;
    a.parse::<std::net::SocketAddr>()
        .map(|s| s.ip())
        .or_else(|_| a.trim_matches(['[', ']']).parse())
        .ok()
}

fn differs<T: std::fmt::Debug>(a: &T, b: &T) -> bool {
    format!("{a:?}") != format!("{b:?}")
}

/// The settings (`section.key`, or `section` for a section that is not a table of keys, such
/// as an absent `[cluster]`) whose values differ between `a` and `b`.
pub fn changed_settings(a: &Config, b: &Config) -> Vec<String> {
    let (a, b) = (settings(a), settings(b));
    let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    keys.into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .cloned()
        .collect()
}

/// Each setting of `c` with its value as text, from the derived pretty `Debug` of [`Config`]:
/// sections are its fields (4 spaces in), keys the fields of those (8 spaces in); what is
/// nested deeper belongs to the key above it. Every section and key is covered without a
/// list to keep in step with the config types (a new key is named by a reload at once).
fn settings(c: &Config) -> BTreeMap<String, String> {
    let text = format!("{c:#?}");
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    let mut section = String::new();
    let mut key = String::new();
    let field = |line: &str, indent: usize| -> Option<String> {
        let rest = line.strip_prefix(&" ".repeat(indent))?;
        let (name, _) = rest.split_once(": ")?;
        (!name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'_' || b.is_ascii_digit()))
        .then(|| name.to_string())
    };
    for line in text.lines().skip(1) {
        let indent = line.len() - line.trim_start().len();
        if indent == 4
            && let Some(name) = field(line, 4)
        {
            section = name;
            key = section.clone();
        } else if indent == 8
            && let Some(name) = field(line, 8)
        {
            key = format!("{section}.{name}");
        }
        if !key.is_empty() {
            let v = out.entry(key.clone()).or_default();
            v.push_str(line.trim());
            v.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Config {
        Config::from_toml(text, std::path::Path::new("test.toml")).unwrap()
    }

    fn reloader(old: &str, tag: &str) -> (Reloader, Arc<Mutex<Enforcer>>, Arc<EnforceSettings>) {
        let old = parse(old);
        let (enforcer, _) = Enforcer::scratch(&format!("reload-{tag}"), &old);
        let enforcer = Arc::new(Mutex::new(enforcer));
        let settings = EnforceSettings::new(&old);
        let r = Reloader::new(old, enforcer.clone(), None).with_settings(settings.clone());
        (r, enforcer, settings)
    }

    #[test]
    fn applies_lists_names_restart_settings_and_keeps_running_values() {
        let (r, enforcer, _) = reloader("[policy]\ndeny = [\"198.51.100.0/24\"]\n", "lists");
        let new = "[sip]\nlisten = [\"127.0.0.1:5099\"]\n[timers]\nt1 = \"1s\"\n\
                   [policy]\nallow = [\"192.0.2.0/24\"]\n";
        let report = r.apply(parse(new)).unwrap();
        assert!(
            report
                .applied
                .contains(&"policy.allow: +192.0.2.0/24".to_string())
                && report
                    .applied
                    .contains(&"policy.deny: -198.51.100.0/24".to_string())
                && report.applied.contains(&"timers.t1".to_string()),
            "{report:?}"
        );
        assert_eq!(report.restart_needed, vec!["sip.listen".to_string()]);
        let e = enforcer.lock().unwrap();
        assert_eq!(
            e.list(List::Allow),
            vec!["192.0.2.0/24".parse::<IpNet>().unwrap()]
        );
        assert!(e.list(List::Deny).is_empty());
        drop(e);
        // Still running with the old listen address: named again next time; the timers
        // are in force, so not again.
        let again = r.apply(parse(new)).unwrap();
        assert!(again.applied.is_empty(), "{again:?}");
        assert_eq!(again.restart_needed, vec!["sip.listen".to_string()]);
    }

    #[test]
    fn bans_thresholds_and_gate_limits_are_live() {
        let (r, _, settings) = reloader("", "bans");
        assert_eq!(settings.bans().auth_failures, 5);
        let report = r
            .apply(parse(
                "[bans]\nauth_failures = 2\nscanner_ban_time = \"5m\"\n\
                 [xdp]\nflood_rate = 7\n[policy]\nscanners = [\"evil\"]\n\
                 scan_targets = 4\nscan_window = \"2m\"\n",
            ))
            .unwrap();
        for k in [
            "bans.auth_failures",
            "bans.scanner_ban_time",
            "xdp.flood_rate",
            "policy.scanners",
            "policy.scan_targets",
            "policy.scan_window",
        ] {
            assert!(report.applied.contains(&k.to_string()), "{k}: {report:?}");
        }
        assert!(report.restart_needed.is_empty(), "{report:?}");
        assert_eq!(settings.bans().auth_failures, 2);
        assert_eq!(settings.sweep().targets, 4);
        assert_eq!(settings.sweep().window, std::time::Duration::from_secs(120));
        assert_eq!(
            settings.bans().scanner_ban_time,
            std::time::Duration::from_secs(300)
        );
        let default_interval = EnforceSettings::new(&Config::default())
            .gate_limits()
            .flood_interval_ns;
        assert_ne!(settings.gate_limits().flood_interval_ns, default_interval);
    }

    #[test]
    fn restart_only_settings_are_named_by_key() {
        let a = Config::default();
        let b = parse(
            "[proxy]\nadvertise = \"edge.example.com\"\n\
             [cluster]\nredis = \"redis://127.0.0.1/\"\n[auth]\nsecret = \"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\"\n",
        );
        assert_eq!(
            changed_settings(&a, &b),
            vec!["auth.secret", "cluster", "proxy.advertise"]
        );
        assert!(changed_settings(&b, &b).is_empty());
    }
}
