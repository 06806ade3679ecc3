//! The CLI side of the admin API.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    os::unix::net::UnixStream,
    path::Path,
    time::Duration,
};

use super::protocol::{Request, Response};

/// The daemon could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "sip-firewall is not running (no daemon at {0}); start it with `sip-firewall run` (or `cargo xtask run`)"
    )]
    NotRunning(String),
    #[error("permission denied on {0}: the admin socket is root's; run this as root")]
    Permission(String),
    #[error("talking to the daemon at {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("the daemon at {path} answered something unreadable: {message}")]
    Protocol { path: String, message: String },
}

/// Send one request, wait for its response.
pub fn call(socket: &Path, req: &Request) -> Result<Response, ClientError> {
    open(socket, req).map(|(_, response)| response)
}

/// Send one request and read its response line; the connection stays open for what the
/// daemon streams after it (a capture's lines).
pub fn open(
    socket: &Path,
    req: &Request,
) -> Result<(BufReader<UnixStream>, Response), ClientError> {
    let path = socket.display().to_string();
    let io = |source| ClientError::Io {
        path: path.clone(),
        source,
    };
    let mut stream = UnixStream::connect(socket).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
            ClientError::NotRunning(path.clone())
        }
        std::io::ErrorKind::PermissionDenied => ClientError::Permission(path.clone()),
        _ => io(e),
    })?;
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .map_err(io)?;
    let mut line = serde_json::to_vec(req).map_err(|e| ClientError::Protocol {
        path: path.clone(),
        message: e.to_string(),
    })?;
    line.push(b'\n');
    stream.write_all(&line).map_err(io)?;
    let mut reader = BufReader::new(stream);
    let mut answer = String::new();
    reader.read_line(&mut answer).map_err(io)?;
    let response = serde_json::from_str(answer.trim()).map_err(|e| ClientError::Protocol {
        path,
        message: e.to_string(),
    })?;
    Ok((reader, response))
}
