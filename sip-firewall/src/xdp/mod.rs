//! The XDP fast path as user space sees it: loading and attaching the program
//! ([`program`]), its maps ([`maps`]) and the bans it reports ([`events`]).

pub mod config;
pub mod events;
pub mod maps;
pub mod pin;
pub mod program;

pub use maps::XdpMaps;
pub use program::{FastPath, XdpError};
