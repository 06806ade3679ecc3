//! Live reload (`sip-firewall reload`, SIGHUP): re-read the config file and apply what
//! changed without a restart: allow and deny lists and the fast path's limits go to the XDP
//! maps, subscribers to the proxy. Nothing that runs is torn down, so calls, registrations,
//! transactions and bans go on. An invalid file is refused with the same key-and-line error
//! as `config check`, and the running config stays. Settings that cannot change while running
//! are named in the answer ("needs a restart").

use std::sync::{Arc, Mutex, OnceLock};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::{
    config::{Config, ConfigError},
    enforce::Enforcer,
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
    /// Settings applied now, e.g. `policy.allow: +192.0.2.0/24`.
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
        }
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
        let mut report = ReloadReport::default();
        let old = &*current;
        // [tls] certificate, private_key and ca are read again (renewed in place, or other
        // paths) for new handshakes; a bad file refuses the reload before anything changed.
        let tls_files = crate::config::TlsConfig {
            certificate: new.tls.certificate.clone(),
            private_key: new.tls.private_key.clone(),
            ca: new.tls.ca.clone(),
            ..old.tls.clone()
        };
        if crate::server::tls::reload_certificates(&tls_files)
            .map_err(|e| format!("[tls]: {e:#}"))?
        {
            report.applied.push("tls.certificate".into());
        }
        let mut enforcer = self
            .enforcer
            .lock()
            .map_err(|_| "internal state poisoned".to_string())?;

        // Lists: the config's entries change; those added at run time (the state) stay.
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
            for n in was
                .iter()
                .filter(|n| !now.contains(n) && !stored.contains(n))
            {
                enforcer
                    .config_net(list, n, false)
                    .map_err(|e| format!("policy.{}: {e}", list.name()))?;
                report.applied.push(format!("policy.{}: -{n}", list.name()));
            }
        }

        // The fast path's limits, written to its config map at once.
        let xdp_live = [
            (
                "xdp.flood_rate",
                differs(&old.xdp.flood_rate, &new.xdp.flood_rate),
            ),
            (
                "xdp.flood_burst",
                differs(&old.xdp.flood_burst, &new.xdp.flood_burst),
            ),
            (
                "xdp.ban_time",
                differs(&old.xdp.ban_time, &new.xdp.ban_time),
            ),
            (
                "xdp.max_payload",
                differs(&old.xdp.max_payload, &new.xdp.max_payload),
            ),
            (
                "xdp.ban_scope",
                differs(&old.xdp.ban_scope, &new.xdp.ban_scope),
            ),
            (
                "xdp.pressure_budget",
                differs(&old.xdp.pressure_budget, &new.xdp.pressure_budget),
            ),
            (
                "xdp.via_scan_bytes",
                differs(&old.xdp.via_scan_bytes, &new.xdp.via_scan_bytes),
            ),
            (
                "xdp.sip_ports",
                differs(&old.xdp.sip_ports, &new.xdp.sip_ports),
            ),
            (
                "bans.learned_scope",
                differs(&old.bans.learned_scope, &new.bans.learned_scope),
            ),
        ];
        let xdp_changed: Vec<&str> = xdp_live
            .iter()
            .filter(|(_, c)| *c)
            .map(|(k, _)| *k)
            .collect();
        if !xdp_changed.is_empty() {
            if enforcer.has_fast_path() {
                enforcer
                    .set_xdp_settings(&new)
                    .map_err(|e| format!("writing the XDP settings: {e}"))?;
                report
                    .applied
                    .extend(xdp_changed.iter().map(|k| k.to_string()));
            } else {
                // Without XDP the user-space gate copied these at start.
                report.restart_needed.extend(
                    xdp_changed
                        .iter()
                        .map(|k| format!("{k} (user-space enforcement)")),
                );
            }
        }
        let enforcer_has_fast_path = enforcer.has_fast_path();
        drop(enforcer);

        // Subscribers of the config: added, changed (new hashes) and removed.
        if let Some(proxy) = &self.proxy {
            let key = |u: &crate::proxy::config::UserEntry| (u.user.clone(), u.domain.clone());
            for u in &new.auth.users {
                let before = old.auth.users.iter().find(|o| key(o) == key(u));
                if before.is_none_or(|b| format!("{b:?}") != format!("{u:?}")) {
                    proxy.add_user(u);
                    report
                        .applied
                        .push(format!("auth.users: {}@{}", u.user, u.domain));
                }
            }
            for u in &old.auth.users {
                if !new.auth.users.iter().any(|n| key(n) == key(u)) {
                    proxy.remove_user(&u.user, &u.domain);
                    report
                        .applied
                        .push(format!("auth.users: -{}@{}", u.user, u.domain));
                }
            }
        }

        // Everything else that changed waits for a restart; say which.
        let restart = [
            ("sip", differs(&old.sip, &new.sip)),
            (
                "xdp.interfaces",
                differs(&old.xdp.interfaces, &new.xdp.interfaces),
            ),
            ("xdp.mode", differs(&old.xdp.mode, &new.xdp.mode)),
            ("xdp.pin_dir", differs(&old.xdp.pin_dir, &new.xdp.pin_dir)),
            (
                "xdp.detach_on_stop",
                differs(&old.xdp.detach_on_stop, &new.xdp.detach_on_stop),
            ),
            (
                "policy.scanners",
                differs(&old.policy.scanners, &new.policy.scanners),
            ),
            ("metrics", differs(&old.metrics, &new.metrics)),
            ("proxy", differs(&old.proxy, &new.proxy)),
            ("timers", differs(&old.timers, &new.timers)),
            ("registrar", differs(&old.registrar, &new.registrar)),
            (
                "auth (but users)",
                differs(&old.auth.algorithms, &new.auth.algorithms)
                    || differs(&old.auth.nonce_lifetime, &new.auth.nonce_lifetime)
                    || differs(&old.auth.secret, &new.auth.secret),
            ),
            ("admin", differs(&old.admin, &new.admin)),
            ("state", differs(&old.state, &new.state)),
            (
                "bans (but learned_scope)",
                differs(
                    &format!(
                        "{:?}",
                        crate::enforce::learn::BansConfig {
                            learned_scope: new.bans.learned_scope,
                            ..old.bans.clone()
                        }
                    ),
                    &format!("{:?}", new.bans),
                ),
            ),
            ("log", differs(&old.log, &new.log)),
            ("fraud", differs(&old.fraud, &new.fraud)),
            // The Redis link and node name are set up once, at start.
            (
                "tls (but certificate, private_key, ca)",
                crate::server::tls::restart_only(&old.tls)
                    != crate::server::tls::restart_only(&new.tls),
            ),
            ("ws", differs(&old.ws, &new.ws)),
            ("wss", differs(&old.wss, &new.wss)),
            ("dns", differs(&old.dns, &new.dns)),
            ("cluster", differs(&old.cluster, &new.cluster)),
        ];
        report.restart_needed.extend(
            restart
                .iter()
                .filter(|(_, c)| *c)
                .map(|(k, _)| k.to_string()),
        );

        // The new file is the config in force, but for what only a restart changes: those
        // keep their running values, so the next reload names them again.
        let mut next = new;
        next.sip = current.sip.clone();
        next.xdp.interfaces = current.xdp.interfaces.clone();
        next.xdp.mode = current.xdp.mode;
        next.xdp.pin_dir = current.xdp.pin_dir.clone();
        next.xdp.detach_on_stop = current.xdp.detach_on_stop;
        next.admin = current.admin.clone();
        next.state = current.state.clone();
        next.metrics = current.metrics.clone();
        next.policy.scanners = current.policy.scanners.clone();
        next.proxy = current.proxy.clone();
        next.timers = current.timers.clone();
        next.registrar = current.registrar.clone();
        next.auth.algorithms = current.auth.algorithms.clone();
        next.auth.nonce_lifetime = current.auth.nonce_lifetime;
        next.auth.secret = current.auth.secret.clone();
        next.bans = crate::enforce::learn::BansConfig {
            learned_scope: next.bans.learned_scope,
            ..current.bans.clone()
        };
        next.log = current.log.clone();
        next.fraud = current.fraud.clone();
        next.tls = tls_files;
        next.ws = current.ws.clone();
        next.wss = current.wss.clone();
        next.dns = current.dns.clone();
        next.cluster = current.cluster.clone();
        if !enforcer_has_fast_path {
            next.xdp = current.xdp.clone();
        }
        *current = next;
        Ok(report)
    }
}

fn differs<T: std::fmt::Debug>(a: &T, b: &T) -> bool {
    format!("{a:?}") != format!("{b:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Config {
        Config::from_toml(text, std::path::Path::new("test.toml")).unwrap()
    }

    #[test]
    fn applies_lists_names_restart_settings_and_keeps_running_values() {
        let dir = std::env::temp_dir().join(format!("sfw-reload-unit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = crate::state::Store::open(&dir).unwrap();
        let old = parse("[policy]\ndeny = [\"198.51.100.0/24\"]\n");
        let enforcer = Arc::new(Mutex::new(Enforcer::new(store, None, &old).unwrap()));
        let r = Reloader::new(old, enforcer.clone(), None);
        let new = "[sip]\nlisten = [\"127.0.0.1:5099\"]\n[timers]\nt1 = \"1s\"\n\
                   [policy]\nallow = [\"192.0.2.0/24\"]\n";
        let report = r.apply(parse(new)).unwrap();
        assert!(
            report
                .applied
                .contains(&"policy.allow: +192.0.2.0/24".to_string())
                && report
                    .applied
                    .contains(&"policy.deny: -198.51.100.0/24".to_string()),
            "{report:?}"
        );
        assert!(
            report.restart_needed.contains(&"sip".to_string())
                && report.restart_needed.contains(&"timers".to_string()),
            "{report:?}"
        );
        let e = enforcer.lock().unwrap();
        assert_eq!(
            e.list(List::Allow),
            vec!["192.0.2.0/24".parse::<IpNet>().unwrap()]
        );
        assert!(e.list(List::Deny).is_empty());
        drop(e);
        // Still running with the old listen address and timers: named again next time.
        let again = r.apply(parse(new)).unwrap();
        assert!(again.applied.is_empty(), "{again:?}");
        assert!(
            again.restart_needed.contains(&"sip".to_string()),
            "{again:?}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
