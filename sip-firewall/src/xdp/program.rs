//! Loading the XDP program and attaching it to interfaces.
//!
//! The program is embedded in the daemon (built by `build.rs` from `sip-firewall-ebpf`), so a
//! daemon always runs the program of its own tree.

use std::io;

use std::path::{Path, PathBuf};

use aya::{
    Ebpf, EbpfLoader,
    maps::{MapData, RingBuf},
    programs::{
        ProgramError, Xdp, XdpMode as AyaMode,
        links::{FdLink, PinnedLink},
        xdp::{XdpLink, XdpLinkId},
    },
};
use tracing::{info, warn};

use super::{
    maps::{MapsError, XdpMaps},
    pin,
};
use crate::xdp::config::XdpMode;

/// The object file of the XDP program.
pub static PROGRAM_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sip-firewall"));

/// Helper programs of `cargo xtask bench xdp` (a frame injector and a pass-all program);
/// the daemon never loads them.
pub static BENCH_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sip-firewall-bench"));

/// The name of the XDP function in the object.
pub const PROGRAM_NAME: &str = "sip_firewall";

/// What went wrong with the fast path; every message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum XdpError {
    #[error(
        "loading the XDP program needs root (or CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN: the verifier refuses the program's pointer arithmetic without CAP_PERFMON): run as root or with those capabilities (the packaged systemd unit grants them), or pass --xdp-mode off to run without the fast path ({0})"
    )]
    Privilege(String),
    #[error(
        "the kernel refused the XDP program: {0}; pass --xdp-mode off to run without the fast path"
    )]
    Refused(String),
    #[error("interface {0} does not exist (see `ip link`); fix --iface or [xdp] interfaces")]
    NoSuchInterface(String),
    #[error(
        "cannot attach XDP to {iface} in {mode} mode: {message}; try --xdp-mode generic, or off"
    )]
    Attach {
        iface: String,
        mode: &'static str,
        message: String,
    },
    #[error(transparent)]
    Maps(#[from] MapsError),
}

/// The loaded program, its maps and where it is attached. Dropping it detaches the program
/// from every interface and unloads it.
pub struct FastPath {
    ebpf: Ebpf,
    /// Kept alive with the program: dropping it closes the log map.
    _logger: Option<aya_log::EbpfLogger<&'static dyn log::Log>>,
    pub maps: XdpMaps,
    attached: Vec<(String, Attachment, &'static str)>,
    /// The pin directory of a daemon's maps and links; `None` for a private program.
    pin_dir: Option<PathBuf>,
    /// On drop: remove the pins and detach (true), or leave the program attached and pinned
    /// for the next daemon to take over (false).
    detach_on_drop: bool,
}

/// How the program is attached to one interface.
enum Attachment {
    /// Owned by the program: detached with it.
    Owned(XdpLinkId),
    /// Pinned in bpffs: outlives this process until unpinned.
    Pinned(PathBuf),
}

/// Which of the capabilities the fast path needs this process lacks (effective set, from
/// `/proc/self/status`): CAP_BPF (maps and programs), CAP_PERFMON (the verifier allows
/// pointer arithmetic only with it) and CAP_NET_ADMIN (attaching XDP). CAP_SYS_ADMIN covers
/// the first two on kernels before 5.8.
pub fn missing_capabilities() -> Vec<&'static str> {
    const NET_ADMIN: u32 = 12;
    const SYS_ADMIN: u32 = 21;
    const PERFMON: u32 = 38;
    const BPF: u32 = 39;
    let Some(eff) = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
    else {
        return Vec::new();
    };
    let has = |bit: u32| eff & (1u64 << bit) != 0;
    let mut missing = Vec::new();
    if !has(BPF) && !has(SYS_ADMIN) {
        missing.push("CAP_BPF");
    }
    if !has(PERFMON) && !has(SYS_ADMIN) {
        missing.push("CAP_PERFMON");
    }
    if !has(NET_ADMIN) {
        missing.push("CAP_NET_ADMIN");
    }
    missing
}

/// The loader's error, and which capabilities the process lacks.
fn with_missing_capabilities(detail: String) -> String {
    let missing = missing_capabilities();
    if missing.is_empty() {
        detail
    } else {
        format!("this process lacks {}: {detail}", missing.join(", "))
    }
}

fn is_privilege_error(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        // EACCES is also the verifier's "no": only EPERM says the privilege is missing.
        if let Some(io) = err.downcast_ref::<io::Error>()
            && io.raw_os_error() == Some(libc::EPERM)
        {
            return true;
        }
        if let Some(ProgramError::LoadError { verifier_log, .. }) =
            err.downcast_ref::<ProgramError>()
            && !verifier_log.to_string().trim().is_empty()
        {
            // The verifier refuses what an unprivileged loader may not do (pointer
            // arithmetic needs CAP_PERFMON): a missing capability, not a bad program.
            return !missing_capabilities().is_empty();
        }
        cur = err.source();
    }
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() != 0 }
}

fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(err) = cur {
        s.push_str(": ");
        s.push_str(&err.to_string());
        cur = err.source();
    }
    s
}

static PRIVATE: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

impl FastPath {
    /// Load a private copy of the program with maps of its own (tests, benchmarks): nothing
    /// stays pinned, and dropping it detaches everything.
    pub fn load() -> Result<FastPath, XdpError> {
        let n = PRIVATE.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let dir =
            Path::new(pin::BPFFS).join(format!("sip-firewall-private-{}-{n}", std::process::id()));
        let fp = Self::load_in(&dir);
        // The maps live on through their fds; only the names go.
        let _ = pin::remove_all(&dir);
        let mut fp = fp?;
        fp.pin_dir = None;
        fp.detach_on_drop = true;
        Ok(fp)
    }

    /// Load the program with the maps pinned in `dir` (created, and bpffs mounted, when
    /// needed): maps left there by an earlier daemon are taken over with their content.
    /// Dropping the result leaves the program attached and pinned unless
    /// [`FastPath::detach_on_drop`] says otherwise.
    pub fn load_pinned(dir: &Path) -> Result<FastPath, XdpError> {
        match Self::load_in(dir) {
            Ok(fp) => Ok(fp),
            Err(XdpError::Maps(e)) => {
                // Pins from a build with other map layouts: the state database still has
                // every ban and list entry, so start the maps afresh.
                tracing::warn!(dir = %dir.display(), "pinned maps do not fit this build ({e}); replacing them");
                for name in sip_firewall_common::maps::PINNED {
                    let _ = std::fs::remove_file(dir.join(name));
                }
                Self::load_in(dir)
            }
            Err(e) => Err(e),
        }
    }

    /// Whether dropping detaches the program and removes the pins.
    pub fn detach_on_drop(&mut self, detach: bool) {
        self.detach_on_drop = detach;
    }

    fn load_in(dir: &Path) -> Result<FastPath, XdpError> {
        raise_memlock_limit();
        pin::ensure_bpffs()
            .and_then(|()| std::fs::create_dir_all(dir))
            .map_err(|e| {
                if e.raw_os_error() == Some(libc::EPERM) || unsafe { libc::geteuid() } != 0 {
                    XdpError::Privilege(format!("cannot use bpffs at {}: {e}", dir.display()))
                } else {
                    XdpError::Refused(format!("cannot use bpffs at {}: {e}", dir.display()))
                }
            })?;
        let mut ebpf = EbpfLoader::new()
            .default_map_pin_directory(dir)
            .load(PROGRAM_OBJECT)
            .map_err(|e| {
                if is_privilege_error(&e) {
                    XdpError::Privilege(with_missing_capabilities(describe(&e)))
                } else if matches!(e, aya::EbpfError::MapError(_)) {
                    XdpError::Maps(MapsError::Load(describe(&e)))
                } else {
                    XdpError::Refused(describe(&e))
                }
            })?;
        // The logger must outlive `program.load()`: it holds the log map's fd.
        let logger = match aya_log::EbpfLogger::init(&mut ebpf) {
            Ok(l) => Some(l),
            Err(e) => {
                tracing::debug!("XDP program has no log map: {e}");
                None
            }
        };
        let program: &mut Xdp = ebpf
            .program_mut(PROGRAM_NAME)
            .ok_or_else(|| XdpError::Refused(format!("no program {PROGRAM_NAME} in the object")))?
            .try_into()
            .map_err(|e: ProgramError| XdpError::Refused(describe(&e)))?;
        program.load().map_err(|e| {
            // The verifier's last lines say why; the whole log is thousands of lines.
            let detail = match &e {
                ProgramError::LoadError { verifier_log, .. }
                    if !verifier_log.to_string().trim().is_empty() =>
                {
                    let log = verifier_log.to_string();
                    let tail: Vec<&str> = log.lines().rev().take(8).collect();
                    tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
                }
                _ => describe(&e),
            };
            if is_privilege_error(&e) {
                XdpError::Privilege(with_missing_capabilities(detail))
            } else {
                XdpError::Refused(detail)
            }
        })?;
        super::capture::load_tap(&mut ebpf).map_err(XdpError::Refused)?;
        let maps = XdpMaps::take(&mut ebpf)?;
        Ok(FastPath {
            ebpf,
            _logger: logger,
            maps,
            attached: Vec::new(),
            pin_dir: Some(dir.to_path_buf()),
            detach_on_drop: false,
        })
    }

    /// The loaded program (for `BPF_PROG_TEST_RUN` in tests and benchmarks).
    pub fn program(&self) -> &Xdp {
        match self.ebpf.program(PROGRAM_NAME) {
            Some(aya::programs::Program::Xdp(p)) => p,
            // `load` checked the name and type.
            _ => unreachable!("program {PROGRAM_NAME} was loaded as XDP"),
        }
    }

    /// The capture tap the program tail-calls while a capture runs.
    pub fn tap_program(&self) -> Option<&Xdp> {
        match self.ebpf.program(sip_firewall_common::capture::TAP_PROGRAM) {
            Some(aya::programs::Program::Xdp(p)) => Some(p),
            _ => None,
        }
    }

    fn program_mut(&mut self) -> &mut Xdp {
        match self.ebpf.program_mut(PROGRAM_NAME) {
            Some(aya::programs::Program::Xdp(p)) => p,
            _ => unreachable!("program {PROGRAM_NAME} was loaded as XDP"),
        }
    }

    /// Take the ring buffer of bans the program makes (flood bans). Once.
    pub fn take_ban_events(&mut self) -> Option<RingBuf<MapData>> {
        let map = self.ebpf.take_map(sip_firewall_common::maps::BAN_EVENTS)?;
        RingBuf::try_from(map).ok()
    }

    /// Attach to `iface`. `Auto` tries native mode, then generic with a warning. Returns
    /// the mode used (`"native"` or `"generic"`).
    pub fn attach(&mut self, iface: &str, mode: XdpMode) -> Result<&'static str, XdpError> {
        // if_nametoindex asks the calling thread's network namespace (sysfs may show another).
        let index = std::ffi::CString::new(iface)
            .map(|c| unsafe { libc::if_nametoindex(c.as_ptr()) })
            .unwrap_or(0);
        if index == 0 {
            return Err(XdpError::NoSuchInterface(iface.to_string()));
        }
        let tries: &[(AyaMode, &'static str)] = match mode {
            XdpMode::Auto => &[(AyaMode::Driver, "native"), (AyaMode::Skb, "generic")],
            XdpMode::Native => &[(AyaMode::Driver, "native")],
            XdpMode::Generic => &[(AyaMode::Skb, "generic")],
            XdpMode::Off => return Ok("off"),
        };
        if let Some(dir) = self.pin_dir.clone()
            && let Some((path, used)) = pin::find_link(&dir, iface)
        {
            return self.take_over(iface, &path, used);
        }
        let mut last = String::new();
        for (i, (aya_mode, name)) in tries.iter().enumerate() {
            match self.program_mut().attach(iface, *aya_mode) {
                Ok(link) => {
                    if i > 0 {
                        warn!(
                            iface,
                            "native XDP refused ({last}); attached in generic mode, which is slower"
                        );
                    } else {
                        info!(iface, mode = name, "XDP program attached");
                    }
                    let how = self.keep(iface, link, name)?;
                    self.attached.push((iface.to_string(), how, name));
                    return Ok(name);
                }
                Err(e) => {
                    if matches!(e, ProgramError::UnknownInterface { .. }) {
                        return Err(XdpError::NoSuchInterface(iface.to_string()));
                    }
                    last = describe(&e);
                }
            }
        }
        let mode_name = tries.last().map(|t| t.1).unwrap_or("auto");
        Err(XdpError::Attach {
            iface: iface.to_string(),
            mode: mode_name,
            message: last,
        })
    }

    /// Pin a new link when this program has a pin directory.
    fn keep(
        &mut self,
        iface: &str,
        link: XdpLinkId,
        mode: &'static str,
    ) -> Result<Attachment, XdpError> {
        let Some(dir) = self.pin_dir.clone() else {
            return Ok(Attachment::Owned(link));
        };
        let pin_err = |e: String| XdpError::Attach {
            iface: iface.to_string(),
            mode,
            message: format!("cannot pin the link: {e}"),
        };
        let link = self
            .program_mut()
            .take_link(link)
            .map_err(|e| pin_err(describe(&e)))?;
        let fd: FdLink = link.try_into().map_err(|_| {
            pin_err("the kernel attached it without a bpf_link (too old for pinning)".into())
        })?;
        let path = pin::link_path(&dir, iface, mode);
        fd.pin(&path).map_err(|e| pin_err(describe(&e)))?;
        Ok(Attachment::Pinned(path))
    }

    /// Replace the program behind a link an earlier daemon pinned: atomic, no packet goes
    /// unjudged.
    fn take_over(
        &mut self,
        iface: &str,
        path: &Path,
        mode: &'static str,
    ) -> Result<&'static str, XdpError> {
        let err = |e: String| XdpError::Attach {
            iface: iface.to_string(),
            mode,
            message: format!("cannot take over the pinned link {}: {e}", path.display()),
        };
        let fd: FdLink = PinnedLink::from_pin(path)
            .map_err(|e| err(describe(&e)))?
            .into();
        let link = XdpLink::try_from(fd).map_err(|e| err(describe(&e)))?;
        let id = self
            .program_mut()
            .attach_to_link(link)
            .map_err(|e| err(describe(&e)))?;
        // The pin stays; the fd this program holds goes with it.
        drop(
            self.program_mut()
                .take_link(id)
                .map_err(|e| err(describe(&e)))?,
        );
        info!(
            iface,
            mode, "took over the pinned XDP link of the previous daemon"
        );
        self.attached.push((
            iface.to_string(),
            Attachment::Pinned(path.to_path_buf()),
            mode,
        ));
        Ok(mode)
    }

    /// Interfaces the program is attached to, with their mode.
    pub fn attachments(&self) -> Vec<(String, &'static str)> {
        self.attached
            .iter()
            .map(|(i, _, m)| (i.clone(), *m))
            .collect()
    }

    /// Detach from every interface and remove the pins.
    pub fn detach_all(&mut self) {
        let attached = std::mem::take(&mut self.attached);
        for (iface, how, _) in attached {
            let done = match how {
                Attachment::Owned(link) => {
                    self.program_mut().detach(link).map_err(|e| describe(&e))
                }
                // The pin holds the last reference: removing it detaches.
                Attachment::Pinned(path) => std::fs::remove_file(&path).map_err(|e| e.to_string()),
            };
            match done {
                Ok(()) => info!(iface, "XDP program detached"),
                Err(e) => warn!(iface, "detaching XDP: {e}"),
            }
        }
        if let Some(dir) = self.pin_dir.take()
            && let Err(e) = pin::remove_all(&dir)
        {
            warn!(dir = %dir.display(), "removing pinned maps: {e}");
        }
    }

    /// Leave the program attached and its maps pinned for the next daemon.
    fn leave_pinned(&mut self) {
        for (iface, how, mode) in std::mem::take(&mut self.attached) {
            match how {
                Attachment::Pinned(path) => {
                    info!(iface, mode, pin = %path.display(), "XDP program stays attached (pinned) for the next daemon; stop with --detach to remove it");
                }
                Attachment::Owned(link) => {
                    let _ = self.program_mut().detach(link);
                }
            }
        }
    }
}

impl Drop for FastPath {
    fn drop(&mut self) {
        if self.detach_on_drop {
            self.detach_all();
        } else {
            self.leave_pinned();
        }
    }
}

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK; lift it so they load there too.
fn raise_memlock_limit() {
    let rlim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: a valid pointer to a local struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rlim) } != 0 {
        tracing::debug!(
            "cannot raise RLIMIT_MEMLOCK: {}",
            io::Error::last_os_error()
        );
    }
}
