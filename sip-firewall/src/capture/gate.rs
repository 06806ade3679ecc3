//! The gate layer of a capture, the CLI's side: it asks the running daemon over its admin
//! socket for copies of what the user-space gate refused and what the message layer
//! answered itself (`crate::tap` filters and copies them in the daemon), and hands them on
//! as they arrive. It needs no pinned map: a daemon without XDP is captured all the same.
//! A listener bound to a wildcard address knows no local address of its own: the copy's
//! local side is then the address the kernel routes from toward the remote one (looked up
//! here, in the CLI, once per remote address), as the edge's answer leaves from it.

use std::{
    collections::HashMap,
    io::BufRead as _,
    net::Shutdown,
    net::{IpAddr, SocketAddr},
    os::unix::net::UnixStream,
    path::Path,
    sync::mpsc,
    time::{Duration, Instant},
};

use crate::{
    admin::{client::ClientError, protocol::Request},
    tap::{
        TapFilter,
        record::{TapLine, TapRecord},
    },
};

/// A gate capture could not start.
#[derive(Debug, thiserror::Error)]
pub enum GateError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("the daemon refused the gate capture: {0}")]
    Refused(String),
    #[error("the gate capture's connection: {0}")]
    Io(#[from] std::io::Error),
}

/// Most remote addresses whose routed source is remembered.
const MAX_SIDES: usize = 4096;
/// How long a stopping capture waits for the daemon's last lines.
const LAST_LINES: Duration = Duration::from_secs(2);

/// A running gate capture.
pub struct GateFeed {
    stream: UnixStream,
    lines: mpsc::Receiver<TapLine>,
    /// Copies the daemon dropped because this capture read too slowly (its last line).
    pub dropped: u64,
    /// The daemon ended the capture (its count, duration, or its own stop).
    pub ended: bool,
    /// Remote address to our address the kernel routes from toward it.
    sides: HashMap<IpAddr, Option<IpAddr>>,
}

impl GateFeed {
    /// Ask the daemon at `socket` for the copies `filter` wants.
    pub fn open(socket: &Path, filter: TapFilter) -> Result<GateFeed, GateError> {
        let (reader, response) = crate::admin::client::open(socket, &Request::Capture { filter })?;
        if !response.ok {
            return Err(GateError::Refused(response.error.unwrap_or_default()));
        }
        reader.get_ref().set_read_timeout(None)?;
        let stream = reader.get_ref().try_clone()?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in reader.lines() {
                let Ok(line) = line else { return };
                match serde_json::from_str::<TapLine>(&line) {
                    Ok(l) => {
                        if tx.send(l).is_err() {
                            return;
                        }
                    }
                    Err(e) => tracing::warn!("an unreadable line from the daemon: {e}"),
                }
            }
        });
        Ok(GateFeed {
            stream,
            lines,
            dropped: 0,
            ended: false,
            sides: HashMap::new(),
        })
    }

    /// The next copy, waiting at most `wait` for it; `None` when none came or the capture
    /// ended.
    pub fn next(&mut self, wait: Duration) -> Option<TapRecord> {
        if self.ended {
            return None;
        }
        match self.lines.recv_timeout(wait) {
            Ok(TapLine::Record(r)) => Some(self.located(r)),
            Ok(TapLine::End { dropped }) => {
                self.dropped = dropped;
                self.ended = true;
                None
            }
            Err(mpsc::RecvTimeoutError::Timeout) => None,
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                self.ended = true;
                None
            }
        }
    }

    /// `r` with a wildcard local side replaced by the routed source toward its remote side.
    fn located(&mut self, mut r: TapRecord) -> TapRecord {
        let (local, remote) = if r.sent {
            (&mut r.src, r.dst)
        } else {
            (&mut r.dst, r.src)
        };
        if local.ip().is_unspecified() {
            // Bounded whatever the sources: a capture of a spoofed flood starts it again.
            if self.sides.len() >= MAX_SIDES {
                self.sides.clear();
            }
            let side = *self
                .sides
                .entry(remote.ip())
                .or_insert_with(|| crate::server::sides::route_source(remote.ip().to_canonical()));
            if let Some(ip) = side {
                *local = SocketAddr::new(ip, local.port());
            }
        }
        r
    }

    /// Stop: the daemon is told (our side of the connection shut), and `take` gets what it
    /// still sends before its last line (for at most [`LAST_LINES`]).
    pub fn stop(&mut self, mut take: impl FnMut(TapRecord)) {
        let _ = self.stream.shutdown(Shutdown::Write);
        let t0 = Instant::now();
        while !self.ended {
            let left = LAST_LINES.saturating_sub(t0.elapsed());
            if left.is_zero() {
                break;
            }
            if let Some(r) = self.next(left) {
                take(r);
            }
        }
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}
