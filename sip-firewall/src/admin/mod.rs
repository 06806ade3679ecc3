//! The admin API: the running daemon serves it on a Unix socket (mode 0600, so root only);
//! the CLI (`sip-firewall status`, `ban add`, ...) is its client.
//!
//! One request per connection: a JSON line in, a JSON line out ([`protocol`]).

pub mod client;
pub mod commands;
pub mod protocol;
pub mod server;
pub mod top;

/// Where the socket lives unless `[admin] socket` says otherwise.
pub const DEFAULT_SOCKET: &str = "/run/sip-firewall/admin.sock";
