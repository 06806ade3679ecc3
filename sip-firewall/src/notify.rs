//! The systemd notification protocol (`sd_notify(3)`): `READY=1` once the listeners are up
//! and XDP is attached, `STATUS=` with a one-line summary, `WATCHDOG=1` from the event loop,
//! `RELOADING=1`/`STOPPING=1`. Written directly to `$NOTIFY_SOCKET` (a datagram socket, path
//! or abstract `@name`); without it (not under systemd) every call does nothing.

use std::{os::unix::net::UnixDatagram, time::Duration};

/// Where to send notifications, if systemd asked for them.
pub struct Notifier {
    target: Option<(UnixDatagram, std::os::unix::net::SocketAddr)>,
}

impl Notifier {
    /// From `$NOTIFY_SOCKET`; nothing when unset or unusable (said once at debug level).
    pub fn from_env() -> Notifier {
        let target = std::env::var_os("NOTIFY_SOCKET").and_then(|path| {
            let addr = address(path.as_encoded_bytes());
            let sock = UnixDatagram::unbound();
            match (sock, addr) {
                (Ok(s), Ok(a)) => Some((s, a)),
                (Err(e), _) | (_, Err(e)) => {
                    tracing::warn!("NOTIFY_SOCKET unusable, no notifications to systemd: {e}");
                    None
                }
            }
        });
        Notifier { target }
    }

    /// Whether systemd listens.
    pub fn enabled(&self) -> bool {
        self.target.is_some()
    }

    /// Send newline-separated `KEY=value` assignments; failures are logged, never fatal.
    pub fn notify(&self, state: &str) {
        if let Some((sock, addr)) = &self.target
            && let Err(e) = sock.send_to_addr(state.as_bytes(), addr)
        {
            tracing::debug!("sd_notify: {e}");
        }
    }

    /// `READY=1` with a status line.
    pub fn ready(&self, status: &str) {
        self.notify(&format!("READY=1\nSTATUS={}", one_line(status)));
    }

    /// A new status line.
    pub fn status(&self, status: &str) {
        self.notify(&format!("STATUS={}", one_line(status)));
    }
}

/// The watchdog interval systemd expects pings within (`WATCHDOG_USEC`, for this process
/// when `WATCHDOG_PID` names one).
pub fn watchdog_interval() -> Option<Duration> {
    if let Some(pid) = std::env::var_os("WATCHDOG_PID")
        && pid.to_str().and_then(|p| p.parse::<u32>().ok()) != Some(std::process::id())
    {
        return None;
    }
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec))
}

/// A status is one line: newlines would start new assignments.
fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

fn address(path: &[u8]) -> std::io::Result<std::os::unix::net::SocketAddr> {
    use std::os::linux::net::SocketAddrExt as _;
    match path.strip_prefix(b"@") {
        Some(name) => std::os::unix::net::SocketAddr::from_abstract_name(name),
        None => {
            use std::os::unix::ffi::OsStrExt as _;
            std::os::unix::net::SocketAddr::from_pathname(std::path::Path::new(
                std::ffi::OsStr::from_bytes(path),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_to_a_path_socket() {
        let dir = std::env::temp_dir().join(format!("sfw-notify-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let rx = UnixDatagram::bind(&path).unwrap();
        let n = Notifier {
            target: Some((
                UnixDatagram::unbound().unwrap(),
                address(path.as_os_str().as_encoded_bytes()).unwrap(),
            )),
        };
        n.ready("xdp on eth0\nsecond line");
        let mut buf = [0u8; 256];
        let len = rx.recv(&mut buf).unwrap();
        assert_eq!(
            std::str::from_utf8(&buf[..len]).unwrap(),
            "READY=1\nSTATUS=xdp on eth0 second line"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
