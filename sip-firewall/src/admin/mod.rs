//! The admin API: the running daemon serves it on a Unix socket (mode 0600, so root only);
//! the CLI (`sip-firewall status`, `ban add`, ...) is its client. One request per connection: a
//! JSON line in, a JSON line out ([`protocol`]); a gate capture's answer line is followed by
//! the copies the daemon streams until the capture ends (`crate::tap`).
//!
//! **Decides**: nothing about traffic; it carries out operators' commands (bans, lists, users,
//! reload, status) through the enforcer and the proxy.
//!
//! | module | job |
//! | --- | --- |
//! | `protocol` | requests and answers |
//! | `server` | the socket and what each request does |
//! | `client` | the CLI's side |
//! | `commands` | the CLI commands and their output (tables, JSON, exit codes) |
//! | `user_cli` | `sip-firewall user add/del/list` |
//! | `fraud_cli` | `sip-firewall fraud status/unblock/events` |
//! | `top` | `sip-firewall top` |
//! | `why` | `sip-firewall why`: the daemon's answer and the CLI's output |
//!
//! **Config**: `[admin]` ([`AdminConfig`]). **Metrics**: none of its own (it reads
//! `sipfw_sip_*`, `sipfw_proxy_transactions_active`, `sipfw_registrar_bindings` for `status`).

pub mod client;
pub mod commands;
pub mod fraud_cli;
pub mod protocol;
pub mod server;
pub mod top;
pub mod user_cli;
pub mod why;
