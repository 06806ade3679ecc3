//! The stateful proxy and registrar: the [`Handler`] the SIP server hands accepted messages
//! to. One lock guards the transaction tables, the location store and the nonce counts;
//! every decision is synchronous and non-blocking, sends are queued on the server's
//! [`Outbound`], and a timer task drives retransmissions and expiries
//! ([`Proxy::run_timers`]).
//!
//! Order of processing a request (after the message layer): scanner check, ACK and
//! retransmission matching, CANCEL, then routing: loose routing for in-dialog requests,
//! OPTIONS keep-alives, REGISTER (digest, 401) to the registrar, digest (407) for requests
//! claiming to be from our users, the no-open-relay rule, and forwarding to every
//! registered contact (parallel forking).

pub mod config;
mod core;
pub mod fork;
pub mod forward;
pub mod metrics;
pub mod msg;
pub mod observer;
pub mod route;
pub mod transaction;

use std::{
    sync::{Arc, Mutex, OnceLock},
    time::{Duration, Instant},
};

use sip_firewall_sip::Message;
use tokio::sync::watch;

use crate::{
    config::Config,
    server::core::{Action, Context, Handler, Outbound},
};
use core::Core;
pub use metrics::ProxyMetrics;
pub use observer::{NoObserver, Observer};

/// How often the timer task runs: fine enough for T1 = 500ms (and for tests with shorter
/// timers), cheap when idle.
const TICK: Duration = Duration::from_millis(10);

/// The proxy: shared by every listener task and the timer task.
pub struct Proxy {
    core: Mutex<Core>,
    out: OnceLock<Arc<dyn Outbound>>,
}

impl Proxy {
    /// A proxy configured from `config`; its metrics go into `registry`.
    pub fn new(
        config: &Config,
        registry: Option<&prometheus::Registry>,
        observer: Arc<dyn Observer>,
    ) -> anyhow::Result<Proxy> {
        let metrics = ProxyMetrics::new(registry);
        Ok(Proxy {
            core: Mutex::new(Core::new(config, metrics, observer, Instant::now())?),
            out: OnceLock::new(),
        })
    }

    /// Add or replace a subscriber while running.
    pub fn add_user(&self, e: &crate::proxy::config::UserEntry) {
        self.with_core(|c| {
            c.users_mut().insert(e);
            c.set_identities(&e.user, &e.domain, &e.identities);
        });
    }

    /// Remove a subscriber; whether there was one.
    pub fn remove_user(&self, user: &str, domain: &str) -> bool {
        self.with_core(|c| {
            c.set_identities(user, domain, &[]);
            c.users_mut().remove(user, domain)
        })
    }

    /// The subscribers, hashes only.
    pub fn users(&self) -> Vec<crate::proxy::config::UserEntry> {
        self.with_core(|c| {
            let entries: Vec<_> = {
                let users = c.users_mut();
                users
                    .ids()
                    .into_iter()
                    .filter_map(|(u, d)| users.entry(&u, &d))
                    .collect()
            };
            entries
                .into_iter()
                .map(|mut e| {
                    e.identities = c.identities_of(&e.user, &e.domain);
                    e
                })
                .collect()
        })
    }

    /// Run `f` on the core, then send what it queued (outside the lock).
    fn with_core<R>(&self, f: impl FnOnce(&mut Core) -> R) -> R {
        let (r, sends) = {
            let mut core = match self.core.lock() {
                Ok(c) => c,
                // A panic under the lock left the tables as they were; keep serving.
                Err(p) => p.into_inner(),
            };
            let r = f(&mut core);
            (r, core.take_sends())
        };
        if let Some(out) = self.out.get() {
            for (dest, bytes) in sends {
                if !out.send(dest, &bytes) {
                    tracing::debug!(?dest, "send failed");
                }
            }
        }
        r
    }

    /// Run timers due now.
    pub fn tick(&self) {
        self.with_core(|c| c.tick(Instant::now()));
    }

    /// Drive the timers until `shutdown` flips to true.
    pub async fn run_timers(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut every = tokio::time::interval(TICK);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.wait_for(|s| *s) => return,
                _ = every.tick() => self.tick(),
            }
        }
    }
}

impl Handler for Proxy {
    fn on_request(&self, req: &Message<'_>, ctx: &Context) -> Action {
        self.with_core(|c| c.request(req, ctx, Instant::now()))
    }

    fn on_response(&self, resp: &Message<'_>, ctx: &Context) -> Action {
        self.with_core(|c| c.response(resp, ctx, Instant::now()))
    }

    fn attach(&self, out: Arc<dyn Outbound>) {
        let _ = self.out.set(out);
    }
}
