//! Building the core from the configuration, and taking a reload: its addresses
//! (advertised host and port), keys, subscribers and settings.

use super::*;

impl Core {
    /// A core from the configuration, its clock starting at `now`: the only shard (the
    /// unit tests').
    #[cfg(test)]
    pub fn new<'a>(
        config: impl Into<Sections<'a>>,
        metrics: ProxyMetrics,
        observer: Arc<dyn Observer>,
        now: Instant,
    ) -> anyhow::Result<Core> {
        let config = config.into();
        let shared = Shared::new(config, metrics, 1, now)?;
        Ok(Core::shard(config, &shared, 0, observer))
    }

    /// The core of shard `shard` (of `shared.shards()`): its own transaction state, the
    /// rest `shared` with the other shards.
    pub fn shard<'a>(
        config: impl Into<Sections<'a>>,
        shared: &Shared,
        shard: usize,
        observer: Arc<dyn Observer>,
    ) -> Core {
        let config = &config.into();
        let s = shared.clone();
        let now = s.origin.0;
        Core {
            shard,
            local: local_of(config),
            settings: Settings::of(config),
            reply_from_any: config.proxy.reply_from_any.clone(),
            silent: silent::Silent::default(),
            counted: (0, 0),
            sealed_dialogs: s.sealed_dialogs.clone(),
            identities: s.identities.clone(),
            servers: Servers::new(s.txns.clone()),
            clients: Clients::default(),
            heap: BinaryHeap::new(),
            store: s.store.clone(),
            cluster: s.cluster.clone(),
            relayed: s.relayed.clone(),
            auth: s.auth.clone(),
            fraud: s.fraud.clone(),
            metrics: s.metrics.clone(),
            observer,
            sends: Vec::new(),
            answers: Vec::new(),
            salt: s.salt,
            keys: s.keys.clone(),
            origin: s.origin,
            last_housekeeping: now,
            last_addr_refresh: now,
            keepalive: s.keepalive.clone(),
            keepalive_log: s.keepalive_log.clone(),
            parked: resolve::Parked::new(config.dns.timeout + Duration::from_secs(2)),
            shared: s,
        }
    }

    /// Take the settings a reload may change while running (`sip-firewall reload`): the
    /// allow list (trusted peers), `[proxy]` but `advertise` and `reply_from_any`, the
    /// scanner list, `[timers]`, `[registrar]`, the offered digest algorithms and the nonce
    /// lifetime, and the transaction caps of `[sip]`. What runs keeps going: an open
    /// transaction keeps the deadlines it has and takes the new timer values at its next
    /// step; a binding keeps its expiry until its next REGISTER. The rest of the config is
    /// read once at start (the reloader names it as needing a restart).
    pub fn reconfigure<'a>(&mut self, config: impl Into<Sections<'a>>) {
        let config = &config.into();
        self.settings = Settings::of(config);
        self.keepalive.lock().reconfigure(config.registrar);
        let mut auth = self.auth.lock();
        auth.set_algorithms(algorithms(config));
        auth.set_nonce_lifetime(config.auth.nonce_lifetime);
        drop(auth);
        self.servers.set_max((
            config.sip.max_transactions,
            config.sip.max_transactions_per_source,
        ));
    }
}

impl Settings {
    fn of(config: &Sections<'_>) -> Settings {
        Settings {
            outbound: config.proxy.outbound.as_ref().and_then(|o| o.addr()),
            outbound_name: config
                .proxy
                .outbound
                .as_ref()
                .and_then(|o| o.name().map(str::to_string)),
            allow: config.policy.allow.clone(),
            internal_next_hops: config.proxy.internal_next_hops.clone(),
            unavailable: config.proxy.unavailable,
            identity_headers: config.proxy.identity_headers.clone(),
            stamp_lifetime: config.proxy.effective_stamp_lifetime(config.fraud),
            force_rport: config.sip.force_rport,
            scanners: Scanners::new(config.policy.scanners.as_deref()),
            registrar: config.registrar.clone(),
            inbound: config.proxy.inbound.clone(),
            timers: Timers::from_config(config.timers),
            topology_hiding: config.proxy.topology_hiding,
        }
    }
}

/// The nonce authority of this start: the nonce keys of the ring (current first), a random
/// boot id its nonces carry (they are accepted in this process only), verifications under a
/// previous key counted.
pub(super) fn nonces(
    config: &Sections<'_>,
    keys: &KeyRing,
    metrics: &ProxyMetrics,
) -> anyhow::Result<Nonces> {
    let boot = u64::from_le_bytes(
        random_bytes(8)?
            .try_into()
            .map_err(|_| anyhow::anyhow!("randomness"))?,
    );
    let mut nonces = Nonces::new(
        keys.derive_all(Purpose::Nonce),
        config.auth.nonce_lifetime,
        boot,
    );
    nonces.count_previous_key(metrics.auth_previous_key.with_label_values(&["nonce"]));
    Ok(nonces)
}

/// The digest algorithms `[auth] algorithms` offers, in its order.
pub(super) fn algorithms(config: &Sections<'_>) -> Vec<Algorithm> {
    config
        .auth
        .algorithms
        .iter()
        .filter_map(|a| Algorithm::parse(a))
        .collect()
}

pub(super) fn random_bytes(n: usize) -> anyhow::Result<Vec<u8>> {
    let mut b = vec![0u8; n];
    getrandom::getrandom(&mut b).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    Ok(b)
}

/// Our addresses and names: the domains, the listen addresses of every transport, the
/// advertised host and port.
fn local_of(config: &Sections<'_>) -> Local {
    let domains: Vec<String> = config
        .sip
        .domains
        .iter()
        .map(|d| d.to_ascii_lowercase())
        .collect();
    let (adv_host, adv_port) = advertised(config);
    let global = &config.proxy.advertise;
    let per_listener = config
        .sip
        .listen
        .iter()
        .map(|l| l.advertise.clone().or_else(|| global.clone()))
        .collect();
    Local::new(domains, config.sip.addrs(), adv_host, adv_port)
        .with_advertised(per_listener, global.is_some())
        .with_tls(config.tls.listen.clone())
        .with_ws(config.ws.listen.clone())
        .with_wss(config.wss.listen.clone())
}

/// `host[:port]` for our Via and Record-Route: `[proxy] advertise`, else the first listen
/// address, else the first domain.
fn advertised(config: &Sections<'_>) -> (String, Option<u16>) {
    if let Some(a) = &config.proxy.advertise {
        return match uri::parse_hostport(a) {
            Ok((_, port)) => {
                let host = match port {
                    Some(_) => a.rsplit_once(':').map_or(a.as_str(), |(h, _)| h),
                    None => a.as_str(),
                };
                (host.to_string(), port)
            }
            Err(_) => (a.clone(), None),
        };
    }
    match config.sip.listen.first().map(|l| &l.addr) {
        Some(l) if !l.ip().is_unspecified() => {
            let host = match l {
                SocketAddr::V4(v) => v.ip().to_string(),
                SocketAddr::V6(v) => format!("[{}]", v.ip()),
            };
            (host, Some(l.port()))
        }
        l => {
            // A wildcard and no domain: one of the host's own addresses (the first global
            // one), so that in-dialog requests find their way back without configuration.
            let host_addr = || {
                route::host_addresses()
                    .into_iter()
                    .find(|i| {
                        // 0.0.0.0 receives IPv4 only: advertise an IPv4 address then.
                        let family_ok = !matches!(l, Some(SocketAddr::V4(_))) || i.is_ipv4();
                        family_ok
                            && !i.is_loopback()
                            && !i.is_unspecified()
                            && match i {
                                IpAddr::V4(v) => !v.is_link_local(),
                                IpAddr::V6(v) => !v.is_unicast_link_local(),
                            }
                    })
                    .map(|i| match i {
                        IpAddr::V4(v) => v.to_string(),
                        IpAddr::V6(v) => format!("[{v}]"),
                    })
            };
            let host = config
                .sip
                .domains
                .first()
                .cloned()
                .or_else(host_addr)
                .unwrap_or_else(|| {
                    // Nothing names us: in-dialog requests will not find their way back.
                    tracing::warn!(
                        "no [proxy] advertise, no specific listen address, no domain and no \
                     address on the host: Via and Record-Route say localhost"
                    );
                    "localhost".into()
                });
            (host, l.map(SocketAddr::port))
        }
    }
}

/// The identities each user may assert besides its own (RFC 3325), by user and domain.
pub(super) fn identities(
    users: &[crate::auth::config::UserEntry],
) -> HashMap<(String, String), Vec<String>> {
    users
        .iter()
        .filter(|u| !u.identities.is_empty())
        .map(|u| {
            (
                (u.user.clone(), u.domain.to_ascii_lowercase()),
                u.identities.clone(),
            )
        })
        .collect()
}
