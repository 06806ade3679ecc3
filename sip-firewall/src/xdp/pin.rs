//! bpffs: where the maps and the XDP links are pinned so that they outlive the daemon. A
//! restarted daemon finds them there and takes over without a moment unprotected.

use std::{
    io,
    path::{Path, PathBuf},
};

/// Where bpffs lives.
pub const BPFFS: &str = "/sys/fs/bpf";
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// Mount bpffs at /sys/fs/bpf unless it is there already.
pub fn ensure_bpffs() -> io::Result<()> {
    let path = std::ffi::CString::new(BPFFS).map_err(io::Error::other)?;
    // SAFETY: a valid path and a zeroed out-struct.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(path.as_ptr(), &mut st) } == 0 && st.f_type as i64 == BPF_FS_MAGIC {
        return Ok(());
    }
    std::fs::create_dir_all(BPFFS)?;
    let fstype = std::ffi::CString::new("bpf").map_err(io::Error::other)?;
    // SAFETY: valid C strings; no data.
    let rc = unsafe {
        libc::mount(
            fstype.as_ptr(),
            path.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    tracing::info!("mounted bpffs at {BPFFS}");
    Ok(())
}

/// Where the link of `iface` attached in `mode` is pinned.
pub fn link_path(dir: &Path, iface: &str, mode: &str) -> PathBuf {
    dir.join(format!("link-{iface}-{mode}"))
}

/// A pinned link of `iface` left by an earlier daemon, with its mode.
pub fn find_link(dir: &Path, iface: &str) -> Option<(PathBuf, &'static str)> {
    ["native", "generic"]
        .into_iter()
        .map(|m| (link_path(dir, iface, m), m))
        .find(|(p, _)| p.exists())
}

/// Remove every pin in `dir` (maps and links) and the directory.
pub fn remove_all(dir: &Path) -> io::Result<()> {
    match std::fs::read_dir(dir) {
        Ok(entries) => {
            for e in entries.flatten() {
                std::fs::remove_file(e.path())?;
            }
            std::fs::remove_dir(dir)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}
