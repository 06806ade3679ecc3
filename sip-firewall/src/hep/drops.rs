//! The packets the XDP program dropped, for the export (`[hep] capture = ["drops"]`): the
//! daemon holds one capture slot of its own program (`xdp::capture`, the tap `sip-firewall
//! capture` uses) with the filter "every dropping verdict, one in `drops_sample`, the whole
//! frame", reads the copies on a thread of its own (the perf buffers are read by `poll`),
//! parses each (`frame`) and queues it, verdict attached, like any captured message.
//!
//! Bounded at every step: the kernel loses a copy when the buffer is full (counted, as
//! `sipfw_hep_dropped_total{reason="ring_full"}`), and the queue is fed with `try_send`, so
//! the reader never waits for the sender. When every slot is taken by `sip-firewall capture`
//! runs, or the maps cannot be opened, the reader says so (rate-limited), counts it in
//! `sipfw_hep_drops_unavailable_total` and tries again every [`RETRY`]. Stopping the reader
//! (a reload without `drops`, the daemon's end) frees the slot.

use std::{
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant, UNIX_EPOCH},
};

use arc_swap::ArcSwapOption;
use sip_firewall_common::{
    capture::{CaptureFilter, CaptureHeader, SNAP_MAX},
    counters::Reason,
};

use super::{Counters, Live, encode::Packet, frame};
use crate::{
    logging::{RateLimit, Verdict, decide_shared},
    xdp::capture::{CaptureError, CaptureTap, dropping_verdicts},
};

/// After the slot could not be taken (or the reader failed), the next attempt waits this long.
pub const RETRY: Duration = Duration::from_secs(10);
/// How long one wait for copies lasts: how soon a stop is seen.
const POLL: Duration = Duration::from_millis(100);
/// Pages of perf buffer per CPU: a burst of about a thousand full frames a CPU.
const PAGES: usize = 256;
/// At most one warning about the slot per this long.
static WARNING: Mutex<RateLimit<()>> = Mutex::new(RateLimit::new(Duration::from_secs(60), 1));

/// The running reader; dropping it stops the thread and frees the slot.
pub(super) struct Reader {
    pub(super) sample: u32,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // At most one POLL: the slot is free when this returns.
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The kernel filter of the export: every dropping verdict, one packet in `sample`, the
/// whole frame.
pub fn filter(sample: u32) -> CaptureFilter {
    CaptureFilter {
        verdicts: dropping_verdicts(),
        snap: SNAP_MAX,
        sample,
        ..CaptureFilter::default()
    }
}

/// Start reading the drops of the program pinned in `pins` into the queue `live` holds.
pub(super) fn start(
    pins: PathBuf,
    sample: u32,
    live: Arc<ArcSwapOption<Live>>,
    counters: Counters,
) -> Option<Reader> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let spawned = std::thread::Builder::new()
        .name("hep-drops".into())
        .spawn(move || run(&pins, sample, &live, &counters, &flag));
    match spawned {
        Ok(t) => Some(Reader {
            sample,
            stop,
            thread: Some(t),
        }),
        Err(e) => {
            tracing::warn!("HEP export of drops: cannot start its reader: {e}");
            None
        }
    }
}

fn run(
    pins: &std::path::Path,
    sample: u32,
    live: &ArcSwapOption<Live>,
    counters: &Counters,
    stop: &AtomicBool,
) {
    while !stop.load(Ordering::SeqCst) {
        match CaptureTap::open(pins, filter(sample), PAGES) {
            Ok(tap) => {
                tracing::info!(
                    slot = tap.slot(),
                    sample,
                    "HEP export of XDP drops on (one capture slot held)"
                );
                counters.drops_slot.set(1);
                read(tap, live, counters, stop);
                counters.drops_slot.set(0);
            }
            Err(e) => {
                let reason = match e {
                    CaptureError::Busy(_) => "slots_busy",
                    _ => "error",
                };
                counters.drops_unavailable(reason);
                if let Verdict::Log { suppressed } = decide_shared(&WARNING, (), Instant::now()) {
                    tracing::warn!(
                        suppressed,
                        "HEP export of XDP drops: no capture slot ({e}); trying again every {}s",
                        RETRY.as_secs()
                    );
                }
            }
        }
        let until = Instant::now() + RETRY;
        while !stop.load(Ordering::SeqCst) && Instant::now() < until {
            std::thread::sleep(POLL);
        }
    }
}

/// Forward the tap's copies until `stop` (or the tap fails).
fn read(mut tap: CaptureTap, live: &ArcSwapOption<Live>, counters: &Counters, stop: &AtomicBool) {
    // The program's clock is CLOCK_MONOTONIC; HEP's is the wall clock.
    let offset = crate::clock::mono_to_wall_offset_ns();
    let mut lost_seen = 0;
    while !stop.load(Ordering::SeqCst) {
        let polled = tap.poll(POLL, |h, data| match packet(h, data, offset) {
            Some(p) => super::queue(live, counters, p),
            None => counters.dropped("not_udp_tcp"),
        });
        if let Err(e) = polled {
            tracing::warn!("HEP export of XDP drops: reading the capture failed: {e}");
            return;
        }
        if let Ok(lost) = tap.lost() {
            counters.dropped_n("ring_full", lost.saturating_sub(lost_seen));
            lost_seen = lost_seen.max(lost);
        }
    }
}

/// The HEP packet of one copy: its frame's addresses and payload, its time and verdict.
fn packet(h: &CaptureHeader, data: &[u8], offset: u64) -> Option<Packet> {
    let f = frame::parse(data)?;
    Some(Packet {
        time: UNIX_EPOCH + Duration::from_nanos(h.ktime_ns.saturating_add(offset)),
        src: f.src,
        dst: f.dst,
        stream: f.stream,
        payload: f.payload.to_vec(),
        verdict: Some(Reason::from_index(h.reason).map_or("dropped", Reason::name)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filter_takes_every_drop_and_the_whole_frame() {
        let f = filter(10);
        assert!(f.wants(Reason::Banned) && f.wants(Reason::Flood) && f.wants(Reason::Malformed));
        assert!(!f.wants(Reason::Passed) && !f.wants(Reason::Allowed));
        assert_eq!((f.sample, f.caplen(20_000)), (10, SNAP_MAX));
        assert!(f.any_source() && f.port == 0);
    }

    #[test]
    fn a_copy_becomes_a_packet_with_its_verdict_and_wall_time() {
        #[rustfmt::skip]
        let frame: Vec<u8> = [
            &[2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00][..],
            &[0x45, 0, 0, 32, 0, 1, 0x40, 0, 64, 17, 0, 0, 192, 0, 2, 7, 198, 51, 100, 2],
            &[0x13, 0xc6, 0x13, 0xc4, 0, 12, 0, 0], b"BYE ",
        ]
        .concat();
        let h = CaptureHeader {
            ktime_ns: 5_000_000_000,
            reason: Reason::Banned as u32,
            len: frame.len() as u32,
            caplen: frame.len() as u32,
            ..CaptureHeader::default()
        };
        let p = packet(&h, &frame, 1_000_000_000).expect("a packet");
        assert_eq!(p.src, "192.0.2.7:5062".parse().unwrap());
        assert_eq!(p.dst, "198.51.100.2:5060".parse().unwrap());
        assert_eq!(
            (p.payload.as_slice(), p.verdict),
            (&b"BYE "[..], Some("banned"))
        );
        assert_eq!(p.time, UNIX_EPOCH + Duration::from_secs(6));
        assert!(packet(&h, &frame[..20], 0).is_none());
    }

    #[test]
    fn without_the_pins_the_reader_counts_and_stops_when_dropped() {
        let counters = Counters::new(&prometheus::Registry::new());
        let reader = start(
            PathBuf::from("/nonexistent/sip-firewall-pins"),
            1,
            Arc::new(ArcSwapOption::empty()),
            counters.clone(),
        )
        .expect("started");
        let t0 = Instant::now();
        while counters.unavailable.with_label_values(&["error"]).get() == 0 {
            assert!(t0.elapsed() < Duration::from_secs(5), "counted");
            std::thread::sleep(Duration::from_millis(10));
        }
        drop(reader);
        assert!(
            t0.elapsed() < RETRY,
            "stopped without waiting for the retry"
        );
        assert_eq!(counters.drops_slot.get(), 0);
    }
}
