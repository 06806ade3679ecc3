//! The gate layer of a capture, the CLI's side: it asks the running daemon over its admin
//! socket for copies of what the user-space gate refused and what the message layer
//! answered itself (`crate::tap` filters and copies them in the daemon), and hands them on
//! as they arrive. It needs no pinned map: a daemon without XDP is captured all the same.

use std::{
    io::BufRead as _,
    net::Shutdown,
    os::unix::net::UnixStream,
    path::Path,
    sync::mpsc,
    time::{Duration, Instant},
};

use crate::{
    admin::{client::ClientError, protocol::Request},
    tap::{TapFilter, TapLine, TapRecord},
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
        })
    }

    /// The next copy, waiting at most `wait` for it; `None` when none came or the capture
    /// ended.
    pub fn next(&mut self, wait: Duration) -> Option<TapRecord> {
        if self.ended {
            return None;
        }
        match self.lines.recv_timeout(wait) {
            Ok(TapLine::Record(r)) => Some(r),
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
