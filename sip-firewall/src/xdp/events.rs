//! Bans the XDP program makes by itself (flood), read from its ring buffer.

use std::net::IpAddr;

use aya::maps::{MapData, RingBuf};
use sip_firewall_common::{BanEvent, BanReason};
use tokio::io::unix::AsyncFd;

use super::maps::key_ip;

/// A ban reported by the XDP program.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelBan {
    pub ip: IpAddr,
    pub expires_ns: u64,
    pub reason: Option<BanReason>,
}

/// Decode one ring-buffer record.
pub fn decode(record: &[u8]) -> Option<KernelBan> {
    if record.len() < std::mem::size_of::<BanEvent>() {
        return None;
    }
    // SAFETY: BanEvent is plain old data and the record is long enough.
    let ev: BanEvent = unsafe { std::ptr::read_unaligned(record.as_ptr() as *const BanEvent) };
    Some(KernelBan {
        ip: key_ip(&ev.addr),
        expires_ns: ev.expires_ns,
        reason: BanReason::from_u32(ev.reason),
    })
}

/// Read ban events until `shutdown`, handing each to `on_ban`.
pub async fn watch(
    ring: RingBuf<MapData>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
    mut on_ban: impl FnMut(KernelBan),
) -> std::io::Result<()> {
    // SAFETY: the ring buffer owns its fd and keeps it open for as long as `fd` lives.
    let mut fd = unsafe { AsyncFd::register(ring) }.map_err(|e| e.into_parts().1)?;
    loop {
        tokio::select! {
            guard = fd.readable_mut() => {
                let mut guard = guard?;
                let ring = guard.get_inner_mut();
                while let Some(item) = ring.next() {
                    if let Some(ban) = decode(&item) {
                        on_ban(ban);
                    }
                }
                guard.clear_ready();
            }
            _ = shutdown.changed() => return Ok(()),
        }
    }
}
