//! sip-firewall: the daemon and CLI as a library, so that integration tests and benchmarks
//! drive the same code as the binary.

pub mod admin;
pub mod auth;
pub mod capture;
pub mod cli;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod daemon;
pub mod enforce;
pub mod feeds;
pub mod fraud;
/// The socket-less receive path of the pipeline fuzz target: not part of the product's API.
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod guard;
pub mod hep;
pub mod logging;
pub mod metrics;
pub mod notify;
pub mod policy;
pub mod proxy;
pub mod registrar;
pub mod reload;
pub mod seams;
pub mod section;
pub mod server;
pub mod state;
pub mod tap;
pub mod xdp;
