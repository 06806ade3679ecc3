//! [`Registrar`]: a unit defines its metrics and registers them in the daemon's registry in
//! one step, so no list of them is written twice.

use prometheus::{
    Gauge, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, core::Collector,
};

/// Defines a unit's metrics and registers each in one registry as it is made; one the
/// registry refuses (a name taken twice) is logged as part of `what`, and the daemon runs on
/// without it.
pub struct Registrar<'a> {
    registry: &'a Registry,
    what: &'a str,
}

impl<'a> Registrar<'a> {
    /// Metrics of `what` (as the log names them), registered in `registry`.
    pub fn new(registry: &'a Registry, what: &'a str) -> Registrar<'a> {
        Registrar { registry, what }
    }

    /// Register `metric` and hand it back (a handle on the registered series).
    pub fn add<M: Collector + Clone + 'static>(&self, metric: M) -> M {
        if let Err(e) = self.registry.register(Box::new(metric.clone())) {
            tracing::warn!("registering {}: {e}", self.what);
        }
        metric
    }

    /// A counter of a static definition, registered.
    pub fn counter(&self, name: &str, help: &str) -> IntCounter {
        self.add(IntCounter::new(name, help).expect(STATIC_DEFINITION))
    }

    /// A counter family ([`super::counter_family`]), registered.
    pub fn counter_family(&self, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
        self.add(super::counter_family(name, help, labels))
    }

    /// An integer gauge of a static definition, registered.
    pub fn int_gauge(&self, name: &str, help: &str) -> IntGauge {
        self.add(IntGauge::new(name, help).expect(STATIC_DEFINITION))
    }

    /// An integer gauge family of a static definition, registered.
    pub fn int_gauge_family(&self, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
        self.add(IntGaugeVec::new(Opts::new(name, help), labels).expect(STATIC_DEFINITION))
    }

    /// A float gauge of a static definition, registered.
    pub fn gauge(&self, name: &str, help: &str) -> Gauge {
        self.add(Gauge::new(name, help).expect(STATIC_DEFINITION))
    }
}

/// Why defining a metric of fixed name, help and labels cannot fail.
const STATIC_DEFINITION: &str = "static metric definition is valid";
