//! What every shard's core shares (`crate::proxy` holds `[proxy] shards` cores, a message
//! on the one of its Call-ID): the state that is not per call, each part behind its own
//! short lock, taken and let go within one step of the core (never two at once), always
//! under the shard's own lock, never the reverse: no deadlock between shards.
//!
//! Per shard (a field of [`Core`] itself): the server and client transaction tables, the
//! timer heap, the requests parked for DNS, the sends and answers queued, the silent
//! contacts, the housekeeping clocks, our addresses (`local`, refreshed by each) and the
//! settings (a copy; a reload reaches every shard).
//!
//! Shared ([`Shared`], a handle cloned into each core):
//!
//! | part | why global | locked by |
//! |---|---|---|
//! | `store` | a REGISTER and the INVITE to its user have different Call-IDs | its mutex |
//! | `auth` | users, nonce counts (a nonce used on one shard is used on all) | its mutex |
//! | `identities` | per user | its mutex |
//! | `fraud` | per-account counters and concurrent calls span calls | its mutex; whether it tracks any call or has writes queued is read without it (`fraud_presence`) |
//! | `keepalive`, `keepalive_log` | per flow (pings are answered on any shard) | their mutexes |
//! | `relayed` | per flow (relay mode) | its mutex |
//! | `cluster` | this node | its mutex |
//! | `sealed_dialogs` | a Replaces names another call than its own | its mutex |
//! | `txns` | `[sip] max_transactions` (total, per source) bound the whole proxy | its mutex |
//! | `keys`, `salt`, `origin` | one seal, one clock for every shard | read only (`Arc`) |
//! | `seq` | branch ids unique across shards | an atomic |
//!
//! Global housekeeping (bindings, nonce counts, relayed flows, keep-alive pings) runs on
//! shard 0 only; the calls the fraud guard ends are each ended by the shard of their
//! Call-ID (which holds their transactions).

use std::sync::{
    Mutex, MutexGuard,
    atomic::{AtomicU64, Ordering},
};

use super::*;

/// A part of the shared state behind its own lock.
pub struct Locked<T>(Arc<Mutex<T>>);

impl<T> Clone for Locked<T> {
    fn clone(&self) -> Self {
        Locked(self.0.clone())
    }
}

impl<T> Locked<T> {
    pub(super) fn new(v: T) -> Locked<T> {
        Locked(Arc::new(Mutex::new(v)))
    }

    /// The part, locked (a lock poisoned by a panic is recovered: `crate::guard::lock`).
    pub fn lock(&self) -> MutexGuard<'_, T> {
        crate::guard::lock(&self.0, std::any::type_name::<T>())
    }
}

/// The state every shard's core shares (see the module doc).
#[derive(Clone)]
pub struct Shared {
    /// How many shards.
    pub(super) shards: usize,
    pub(super) keys: Arc<CoreKeys>,
    pub(super) salt: u64,
    pub(super) origin: (Instant, u64),
    pub(super) seq: Arc<AtomicU64>,
    pub(super) store: Locked<Box<dyn LocationStore>>,
    pub(super) auth: Locked<Authenticator>,
    pub(super) identities: Locked<HashMap<(String, String), Vec<String>>>,
    pub(super) fraud: Locked<crate::fraud::Fraud>,
    /// What `fraud` holds, read without its lock: a message of a call it cannot track, or a
    /// step that queued no write, skips that lock.
    pub(super) fraud_presence: crate::fraud::presence::Presence,
    pub(super) keepalive: Locked<Keepalive>,
    pub(super) keepalive_log: Locked<crate::logging::RateLimit<&'static str>>,
    pub(super) relayed: Locked<registrar::relay::Flows>,
    pub(super) cluster: Locked<Option<Member>>,
    pub(super) sealed_dialogs: Locked<hide::dialog_refs::SealedDialogs>,
    pub(super) txns: Locked<servers::Counts>,
    pub(super) metrics: ProxyMetrics,
}

impl Shared {
    /// The shared state of `shards` cores from the configuration, the clock starting at
    /// `now`.
    pub fn new<'a>(
        config: impl Into<Sections<'a>>,
        metrics: ProxyMetrics,
        shards: usize,
        now: Instant,
    ) -> anyhow::Result<Shared> {
        let config = &config.into();
        let keys =
            KeyRing::from_config(config.auth.secret.as_deref(), &config.auth.previous_secrets)?;
        let salt = u64::from_le_bytes(
            setup::random_bytes(8)?
                .try_into()
                .map_err(|_| anyhow::anyhow!("randomness"))?,
        );
        let nonces = setup::nonces(config, &keys, &metrics)?;
        let shards = shards.max(1);
        let fraud = crate::fraud::Fraud::new(config.fraud, metrics.fraud.clone());
        Ok(Shared {
            shards,
            keys: Arc::new(CoreKeys::new(&keys)),
            salt,
            origin: (now, crate::clock::unix_now()),
            seq: Arc::new(AtomicU64::new(0)),
            store: Locked::new(Box::new(MemoryStore::default())),
            auth: Locked::new(Authenticator::new(
                Users::from_config(&config.auth.users),
                setup::algorithms(config),
                nonces,
            )),
            identities: Locked::new(setup::identities(&config.auth.users)),
            fraud_presence: fraud.presence(),
            fraud: Locked::new(fraud),
            keepalive: Locked::new(Keepalive::new(config.registrar)),
            keepalive_log: Locked::new(crate::logging::RateLimit::new(
                keepalive::KEEPALIVE_LOG_EVERY,
                16,
            )),
            relayed: Locked::new(registrar::relay::Flows::default()),
            cluster: Locked::new(None),
            sealed_dialogs: Locked::new(Default::default()),
            txns: Locked::new(servers::Counts::new((
                config.sip.max_transactions,
                config.sip.max_transactions_per_source,
            ))),
            metrics,
        })
    }

    /// The shard of a message whose Call-ID is `call_id`: by its inner Call-ID when it is
    /// one of our seals (`crate::proxy::hide`), so that the answers and in-dialog requests
    /// of a dialog made inside meet its transactions; any other value as it is.
    pub fn shard_of(&self, call_id: &str) -> usize {
        if self.shards <= 1 {
            return 0;
        }
        let n = u32::try_from(self.shards).unwrap_or(u32::MAX);
        let opened = self.keys.call_id.open(call_id);
        let inner = opened.as_deref().unwrap_or(call_id);
        sip_firewall_common::shard::shard_of(inner.as_bytes(), n) as usize
    }

    /// `inner` sealed as a Call-ID toward the outside (the tests of the shard choice).
    #[cfg(test)]
    pub fn seal_call_id(&self, inner: &str) -> Option<String> {
        self.keys.call_id.seal(inner, 0)
    }

    /// The proxy's metrics (the tests read the gauges).
    #[cfg(test)]
    pub fn metrics(&self) -> &ProxyMetrics {
        &self.metrics
    }

    /// The next value of the counter behind branch ids when the OS has no randomness.
    pub(super) fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed) + 1
    }
}

impl CoreKeys {
    fn new(keys: &KeyRing) -> CoreKeys {
        CoreKeys {
            stamp: route::StampKeys::new(keys),
            hop: keys.derive_all(Purpose::ClusterHop),
            loop_tag: keys.current().derive::<32>(Purpose::LoopTag).to_vec(),
            flow: route::flow::FlowKeys::new(keys),
            contact: hide::ContactSeal::new(keys),
            call_id: hide::call_id::CallIdSeal::new(keys),
            path: hide::path::PathSeal::new(keys),
        }
    }
}
