//! Packet capture from the XDP program: which packets a running `sip-firewall capture`
//! wants (its filter, one slot of [`CAPTURE`]), and what the program sends with each copy.
//!
//! Up to [`CAPTURE_SLOTS`] captures run at once, each owning one slot and one perf event
//! array ([`CAPTURE_RINGS`]): a perf event array delivers each CPU's buffer to one reader, so
//! two captures sharing one would steal each other's packets. [`CAPTURE_ON`] holds the slots
//! in use as a bit mask: with no capture running the program tests that one word and goes
//! on. The filter is applied in the kernel, so a capture of one source's drops costs the
//! other packets nothing but the test. The program copies a packet with
//! `bpf_perf_event_output` and the frame length in the upper 32 bits of its flags: the
//! kernel copies the frame bytes itself, no loop over the packet, and a full buffer loses
//! the copy (the reader is told how many) instead of slowing the XDP path.

use crate::{addr::KeyWords, counters::Reason};

/// Array of [`CAPTURE_SLOTS`] [`CaptureFilter`]s, one per running capture.
pub const CAPTURE: &str = "SIPFW_CAPTURE";
/// Array with one `u32`: bit `i` set while slot `i` of [`CAPTURE`] is in use.
pub const CAPTURE_ON: &str = "SIPFW_CAPON";
/// The perf event array of each slot: [`CaptureHeader`] then the frame's first bytes.
pub const CAPTURE_RINGS: [&str; CAPTURE_SLOTS] =
    ["SIPFW_CAP0", "SIPFW_CAP1", "SIPFW_CAP2", "SIPFW_CAP3"];
/// Program array whose entry 0 is the capture tap program ([`TAP_PROGRAM`]), which the XDP
/// program tail-calls while a capture runs.
pub const CAPTURE_PROG: &str = "SIPFW_CAPPROG";
/// Per-CPU array of one `u32`: the verdict the XDP program hands its tap across the tail
/// call.
pub const CAPTURE_REASON: &str = "SIPFW_CAPWHY";
/// Per-CPU array of [`CAPTURE_SLOTS`] `u64`s: copies of each slot lost to a full buffer.
pub const CAPTURE_LOST: &str = "SIPFW_CAPLOST";
/// The name of the tap program in the object.
pub const TAP_PROGRAM: &str = "sip_firewall_capture";
/// How many captures can run at once.
pub const CAPTURE_SLOTS: usize = 4;
/// The largest snap length: a jumbo frame's worth (a perf record holds at most 64 KiB).
pub const SNAP_MAX: u32 = 9216;
/// Every verdict bit of [`CaptureFilter::verdicts`].
pub const ALL_VERDICTS: u32 = (1 << Reason::COUNT) - 1;

/// What one capture wants. All zero: the slot is free.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CaptureFilter {
    /// Bit `1 << reason` ([`Reason`] as index) for each verdict captured.
    pub verdicts: u32,
    /// Only UDP or TCP packets from or to this port; 0: any packet.
    pub port: u16,
    pub _pad: u16,
    /// Bytes of each frame copied, 1..=[`SNAP_MAX`].
    pub snap: u32,
    /// One matching packet in `sample` is copied (chosen at random); 0 or 1: every one.
    pub sample: u32,
    /// The source prefix, masked: a packet matches when `src & mask == prefix`. A zero mask
    /// takes every source (and every packet that is not IP).
    pub prefix: KeyWords,
    pub mask: KeyWords,
    /// Process id of the capture holding the slot (read by user space only: a slot whose
    /// holder died is taken over).
    pub owner: u32,
    pub _pad2: u32,
}

impl CaptureFilter {
    /// Whether this filter takes packets of `reason`.
    #[inline(always)]
    pub const fn wants(&self, reason: Reason) -> bool {
        self.verdicts & (1 << reason as u32) != 0
    }

    /// Whether a source (as key words) is in the filter's prefix.
    #[inline(always)]
    pub const fn takes_source(&self, src: &KeyWords) -> bool {
        src[0] & self.mask[0] == self.prefix[0] && src[1] & self.mask[1] == self.prefix[1]
    }

    /// Whether a filter takes any source (no prefix given).
    #[inline(always)]
    pub const fn any_source(&self) -> bool {
        self.mask[0] == 0 && self.mask[1] == 0
    }

    /// The bytes copied of a frame of `len` bytes.
    #[inline(always)]
    pub const fn caplen(&self, len: u32) -> u32 {
        let snap = if self.snap == 0 || self.snap > SNAP_MAX {
            SNAP_MAX
        } else {
            self.snap
        };
        if len < snap { len } else { snap }
    }
}

/// Sent before the frame's bytes with each captured packet.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CaptureHeader {
    /// When the program saw it: `bpf_ktime_get_ns` (CLOCK_MONOTONIC).
    pub ktime_ns: u64,
    /// The interface it arrived on.
    pub ifindex: u32,
    /// Its verdict, a [`Reason`] as `u32`.
    pub reason: u32,
    /// The frame's length on the wire.
    pub len: u32,
    /// How many of its bytes follow.
    pub caplen: u32,
}

#[cfg(feature = "user")]
mod pod {
    unsafe impl aya::Pod for super::CaptureFilter {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addr::{to_words, v4_key};
    use core::mem::size_of;

    #[test]
    fn layouts_are_fixed() {
        assert_eq!(size_of::<CaptureFilter>(), 56);
        assert_eq!(size_of::<CaptureHeader>(), 24);
    }

    #[test]
    fn filter_matches() {
        let src = to_words(&v4_key([192, 0, 2, 77]));
        let f = CaptureFilter {
            verdicts: 1 << Reason::Banned as u32 | 1 << Reason::Malformed as u32,
            prefix: to_words(&v4_key([192, 0, 2, 0])),
            mask: to_words(&[
                0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                0xff, 0,
            ]),
            snap: 100,
            ..CaptureFilter::default()
        };
        assert!(f.wants(Reason::Banned) && f.wants(Reason::Malformed));
        assert!(!f.wants(Reason::Passed) && !f.wants(Reason::Flood));
        assert!(f.takes_source(&src));
        assert!(!f.takes_source(&to_words(&v4_key([192, 0, 3, 77]))));
        assert!(!f.any_source());
        assert_eq!(f.caplen(60), 60);
        assert_eq!(f.caplen(1500), 100);
        let any = CaptureFilter::default();
        assert!(any.any_source() && any.takes_source(&src));
        assert_eq!(any.caplen(20_000), SNAP_MAX);
        assert_eq!(ALL_VERDICTS.count_ones(), Reason::COUNT);
    }
}
