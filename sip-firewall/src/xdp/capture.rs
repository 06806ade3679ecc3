//! One capture's hold on the XDP program's capture maps (`sip_firewall_common::capture`),
//! opened from the daemon's pins: a slot claimed (its filter written, its bit set in the
//! word the program tests), the perf buffers of that slot, one per CPU, and the copies read
//! from them. Dropping the tap frees the slot: with no capture left the program is back to
//! one test of one word.
//!
//! Slots are claimed and freed under an exclusive `flock` of the pin directory, so two
//! captures starting at once never take the same slot or lose each other's bit; a slot
//! whose holder died (its process is gone) is taken over.

use std::{
    fs::File,
    io,
    os::fd::{AsFd as _, AsRawFd as _},
    path::{Path, PathBuf},
    time::Duration,
};

use aya::{
    Ebpf,
    maps::{
        Array, Map, MapData, PerCpuArray, PerCpuValues, ProgramArray,
        perf::{PerfEvent, PerfEventArray, PerfEventArrayBuffer},
    },
    programs::Xdp,
};
use sip_firewall_common::{
    capture::{
        CAPTURE, CAPTURE_LOST, CAPTURE_ON, CAPTURE_PROG, CAPTURE_RINGS, CAPTURE_SLOTS,
        CaptureFilter, CaptureHeader, TAP_PROGRAM,
    },
    counters::Reason,
};

/// Opening or holding the capture maps failed.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error(
        "no XDP program's pins in {0} (is the daemon running with --iface, and is this its --pin-dir?): {1}"
    )]
    NoPins(PathBuf, io::Error),
    #[error(
        "{0} has no capture maps: the daemon that pinned them was built without capture; restart it with this build"
    )]
    NoCaptureMaps(PathBuf),
    #[error(
        "all {CAPTURE_SLOTS} capture slots are in use by running captures (processes {0}); stop one first"
    )]
    Busy(String),
    #[error("capture map {0}: {1}")]
    Map(&'static str, String),
}

/// The verdict bits of every verdict that drops the packet (`--verdict drops`, `[hep]
/// capture = ["drops"]`).
pub fn dropping_verdicts() -> u32 {
    Reason::ALL
        .iter()
        .filter(|r| r.is_drop())
        .fold(0, |m, r| m | 1 << *r as u32)
}

/// Load the tap program of `ebpf` and put it in the program array the XDP program
/// tail-calls while a capture runs. On error, what went wrong (the verifier's last lines).
pub fn load_tap(ebpf: &mut Ebpf) -> Result<(), String> {
    let tap: &mut Xdp = ebpf
        .program_mut(TAP_PROGRAM)
        .ok_or_else(|| format!("no program {TAP_PROGRAM} in the object"))?
        .try_into()
        .map_err(|e: aya::programs::ProgramError| e.to_string())?;
    tap.load().map_err(|e| match &e {
        aya::programs::ProgramError::LoadError { verifier_log, .. } => {
            let log = verifier_log.to_string();
            let tail: Vec<&str> = log.lines().rev().take(8).collect();
            format!(
                "{TAP_PROGRAM}: {}",
                tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
            )
        }
        _ => format!("{TAP_PROGRAM}: {e}"),
    })?;
    let fd = tap
        .fd()
        .map_err(|e| e.to_string())?
        .try_clone()
        .map_err(|e| e.to_string())?;
    let map = ebpf
        .map_mut(CAPTURE_PROG)
        .ok_or_else(|| format!("no map {CAPTURE_PROG} in the object"))?;
    let mut progs: ProgramArray<&mut MapData> =
        ProgramArray::try_from(map).map_err(|e| e.to_string())?;
    progs
        .set(0, &fd, 0)
        .map_err(|e| format!("{CAPTURE_PROG}: {e}"))
}

/// A running capture's slot and perf buffers.
pub struct CaptureTap {
    dir: PathBuf,
    slot: u32,
    filters: Array<MapData, CaptureFilter>,
    on: Array<MapData, u32>,
    lost: PerCpuArray<MapData, u64>,
    buffers: Vec<PerfEventArrayBuffer<MapData>>,
}

fn map_err(name: &'static str) -> impl FnOnce(aya::maps::MapError) -> CaptureError {
    move |e| CaptureError::Map(name, e.to_string())
}

/// The pinned map `name` of `dir`.
fn pinned(dir: &Path, name: &'static str) -> Result<MapData, CaptureError> {
    let path = dir.join(name);
    if !path.exists() {
        return Err(CaptureError::NoCaptureMaps(dir.to_path_buf()));
    }
    MapData::from_pin(&path).map_err(|e| CaptureError::Map(name, e.to_string()))
}

/// An exclusive `flock` of the pin directory, released when dropped.
struct DirLock(File);

impl DirLock {
    fn take(dir: &Path) -> Result<DirLock, CaptureError> {
        let f = File::open(dir).map_err(|e| CaptureError::NoPins(dir.to_path_buf(), e))?;
        // SAFETY: flock(2) on a descriptor this function owns.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(CaptureError::NoPins(
                dir.to_path_buf(),
                io::Error::last_os_error(),
            ));
        }
        Ok(DirLock(f))
    }
}

impl Drop for DirLock {
    fn drop(&mut self) {
        // SAFETY: as above; closing the file would release it too.
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }
}

/// Whether process `pid` still runs.
fn alive(pid: u32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    pid != 0
        && (unsafe { libc::kill(pid as i32, 0) } == 0
            || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM))
}

impl CaptureTap {
    /// Claim a free slot of the program pinned in `dir` for `filter`, with `pages` pages of
    /// perf buffer per CPU (a power of two).
    pub fn open(
        dir: &Path,
        filter: CaptureFilter,
        pages: usize,
    ) -> Result<CaptureTap, CaptureError> {
        let _lock = DirLock::take(dir)?;
        let filters: Array<MapData, CaptureFilter> =
            Array::try_from(Map::Array(pinned(dir, CAPTURE)?)).map_err(map_err(CAPTURE))?;
        let on: Array<MapData, u32> =
            Array::try_from(Map::Array(pinned(dir, CAPTURE_ON)?)).map_err(map_err(CAPTURE_ON))?;
        let mut holders = Vec::new();
        let mut free = None;
        for i in 0..CAPTURE_SLOTS as u32 {
            let f = filters.get(&i, 0).map_err(map_err(CAPTURE))?;
            if f.verdicts == 0 || !alive(f.owner) {
                free = Some(i);
                break;
            }
            holders.push(f.owner.to_string());
        }
        let slot = free.ok_or_else(|| CaptureError::Busy(holders.join(", ")))?;
        let mut lost: PerCpuArray<MapData, u64> =
            PerCpuArray::try_from(Map::PerCpuArray(pinned(dir, CAPTURE_LOST)?))
                .map_err(map_err(CAPTURE_LOST))?;
        // A slot's count starts at zero for each capture.
        let cpus = aya::util::nr_cpus()
            .map_err(|(what, e)| CaptureError::Map(CAPTURE_LOST, format!("{what}: {e}")))?;
        let zeros = PerCpuValues::try_from(vec![0u64; cpus])
            .map_err(|e| CaptureError::Map(CAPTURE_LOST, e.to_string()))?;
        lost.set(slot, zeros, 0).map_err(map_err(CAPTURE_LOST))?;
        let ring_name = CAPTURE_RINGS[slot as usize];
        let mut ring: PerfEventArray<MapData> =
            PerfEventArray::try_from(Map::PerfEventArray(pinned(dir, ring_name)?))
                .map_err(map_err(ring_name))?;
        let cpus = aya::util::online_cpus()
            .map_err(|(what, e)| CaptureError::Map(ring_name, format!("{what}: {e}")))?;
        // The buffers first, so that the first copies have somewhere to go.
        let buffers = cpus
            .into_iter()
            .map(|cpu| ring.open(cpu, Some(pages)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| CaptureError::Map(ring_name, e.to_string()))?;
        let mut tap = CaptureTap {
            dir: dir.to_path_buf(),
            slot,
            filters,
            on,
            lost,
            buffers,
        };
        let filter = CaptureFilter {
            owner: std::process::id(),
            ..filter
        };
        tap.filters.set(slot, filter, 0).map_err(map_err(CAPTURE))?;
        let mask = tap.on.get(&0, 0).map_err(map_err(CAPTURE_ON))?;
        tap.on
            .set(0, mask | 1 << slot, 0)
            .map_err(map_err(CAPTURE_ON))?;
        Ok(tap)
    }

    /// The slot this capture holds.
    pub fn slot(&self) -> u32 {
        self.slot
    }

    /// Copies the program could not hand to this capture since it started, because its
    /// buffer was full: the kernel's count, summed over the CPUs.
    pub fn lost(&self) -> Result<u64, CaptureError> {
        let values = self
            .lost
            .get(&self.slot, 0)
            .map_err(map_err(CAPTURE_LOST))?;
        Ok(values.iter().sum())
    }

    /// Wait up to `timeout` for copies, and hand each to `each` (its header and the frame's
    /// captured bytes).
    pub fn poll(
        &mut self,
        timeout: Duration,
        mut each: impl FnMut(&CaptureHeader, &[u8]),
    ) -> io::Result<()> {
        let mut fds: Vec<libc::pollfd> = self
            .buffers
            .iter()
            .map(|b| libc::pollfd {
                fd: b.as_fd().as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: a valid array of pollfds of this length.
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted {
                Ok(())
            } else {
                Err(e)
            };
        }
        let mut joined = Vec::new();
        for b in &mut self.buffers {
            b.for_each(|event| match event {
                PerfEvent::Sample { head, tail } => {
                    // A record that wraps around the ring's end comes in two pieces.
                    let record = if tail.is_empty() {
                        head
                    } else {
                        joined.clear();
                        joined.extend_from_slice(head);
                        joined.extend_from_slice(tail);
                        &joined
                    };
                    if let Some((h, data)) = decode(record) {
                        each(&h, data);
                    }
                }
                // The same losses as the program's own count (`lost`), which is exact
                // even when no copy comes after them to carry this record.
                PerfEvent::Lost { .. } => {}
            });
        }
        Ok(())
    }
}

/// A perf record: the header, then `caplen` frame bytes (the kernel pads the record to
/// eight bytes; the padding is not the frame's).
pub fn decode(record: &[u8]) -> Option<(CaptureHeader, &[u8])> {
    let size = std::mem::size_of::<CaptureHeader>();
    let head = record.get(..size)?;
    // SAFETY: CaptureHeader is plain old data and `head` holds its size.
    let h: CaptureHeader =
        unsafe { std::ptr::read_unaligned(head.as_ptr() as *const CaptureHeader) };
    let data = record.get(size..size.checked_add(h.caplen as usize)?)?;
    Some((h, data))
}

impl Drop for CaptureTap {
    fn drop(&mut self) {
        let Ok(_lock) = DirLock::take(&self.dir) else {
            return;
        };
        if let Ok(mask) = self.on.get(&0, 0) {
            let _ = self.on.set(0, mask & !(1 << self.slot), 0);
        }
        let _ = self.filters.set(self.slot, CaptureFilter::default(), 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_takes_the_header_and_caplen_bytes() {
        let h = CaptureHeader {
            ktime_ns: 7,
            ifindex: 3,
            reason: 6,
            len: 100,
            caplen: 5,
        };
        let mut rec = Vec::new();
        // SAFETY: plain old data, read as bytes.
        rec.extend_from_slice(unsafe {
            std::slice::from_raw_parts(&h as *const CaptureHeader as *const u8, 24)
        });
        rec.extend_from_slice(b"hello\0\0\0");
        let (got, data) = decode(&rec).expect("decodes");
        assert_eq!(got, h);
        assert_eq!(data, b"hello");
        assert!(decode(&rec[..20]).is_none(), "a short header");
        assert!(decode(&rec[..27]).is_none(), "fewer bytes than caplen");
    }
}
