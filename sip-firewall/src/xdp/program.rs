//! Loading the XDP program and attaching it to interfaces.
//!
//! The program is embedded in the daemon (built by `build.rs` from `sip-firewall-ebpf`), so a
//! daemon always runs the program of its own tree.

use std::io;

use aya::{
    Ebpf,
    maps::{MapData, RingBuf},
    programs::{ProgramError, Xdp, XdpMode as AyaMode, xdp::XdpLinkId},
};
use tracing::{info, warn};

use super::maps::{MapsError, XdpMaps};
use crate::config::XdpMode;

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
        "loading the XDP program needs root (or CAP_BPF and CAP_NET_ADMIN): run as root, or pass --xdp-mode off to run without the fast path ({0})"
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
    attached: Vec<(String, XdpLinkId, &'static str)>,
}

fn is_privilege_error(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<io::Error>()
            && matches!(io.raw_os_error(), Some(libc::EPERM) | Some(libc::EACCES))
        {
            return true;
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

impl FastPath {
    /// Load the program into the kernel (not attached yet).
    pub fn load() -> Result<FastPath, XdpError> {
        raise_memlock_limit();
        let mut ebpf = Ebpf::load(PROGRAM_OBJECT).map_err(|e| {
            if is_privilege_error(&e) {
                XdpError::Privilege(describe(&e))
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
            if is_privilege_error(&e) {
                XdpError::Privilege(describe(&e))
            } else {
                let detail = match &e {
                    ProgramError::LoadError { verifier_log, .. } => {
                        let log = verifier_log.to_string();
                        let tail: Vec<&str> = log.lines().rev().take(8).collect();
                        tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
                    }
                    _ => describe(&e),
                };
                XdpError::Refused(detail)
            }
        })?;
        let maps = XdpMaps::take(&mut ebpf)?;
        Ok(FastPath {
            ebpf,
            _logger: logger,
            maps,
            attached: Vec::new(),
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
                    self.attached.push((iface.to_string(), link, name));
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

    /// Interfaces the program is attached to, with their mode.
    pub fn attachments(&self) -> Vec<(String, &'static str)> {
        self.attached
            .iter()
            .map(|(i, _, m)| (i.clone(), *m))
            .collect()
    }

    /// Detach from every interface.
    pub fn detach_all(&mut self) {
        let attached = std::mem::take(&mut self.attached);
        for (iface, link, _) in attached {
            match self.program_mut().detach(link) {
                Ok(()) => info!(iface, "XDP program detached"),
                Err(e) => warn!(iface, "detaching XDP: {}", describe(&e)),
            }
        }
    }
}

impl Drop for FastPath {
    fn drop(&mut self) {
        self.detach_all();
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
