//! Fetching a feed: `file:///path`, or `https://host[:port]/path` with one HTTP/1.1 GET
//! (RFC 9112) over rustls, bounded in size and time. The HTTP client is this small one on
//! `tokio-rustls` and `httparse` (both in the tree already: the TLS transport and the
//! WebSocket handshake) rather than a client crate with its own stack, for one GET a few
//! times an hour. No redirects are followed: a feed's URL is what the operator wrote.

use std::{path::PathBuf, sync::Arc, time::Duration};

use rustls::{ClientConfig, RootCertStore, pki_types::ServerName};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWriteExt as _};

use super::config::FeedConfig;

/// The largest document taken (a full feed of `MAX_ENTRIES` prefixes is a few MB).
pub const MAX_BODY: usize = 16 << 20;
/// The longest a fetch may take, connection to last byte.
pub const TIMEOUT: Duration = Duration::from_secs(30);
/// The largest response head (status line and headers).
const MAX_HEAD: usize = 16 << 10;

/// Why a fetch failed (the feed's last good entries stay).
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("cannot read {path}: {source}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("larger than {MAX_BODY} bytes")]
    TooLarge,
    #[error("no answer within {TIMEOUT:?}")]
    Timeout,
    #[error("bad URL {0:?}: give https://host[:port]/path")]
    Url(String),
    #[error("CA {path}: {message}")]
    Ca { path: PathBuf, message: String },
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("HTTP: {0}")]
    Http(String),
}

/// How to reach a feed: its TLS client (for https), built once.
pub struct Fetcher {
    url: String,
    tls: Option<Arc<ClientConfig>>,
}

impl Fetcher {
    /// For `cfg`: an error when its CA file cannot be used.
    pub fn new(cfg: &FeedConfig) -> Result<Fetcher, FetchError> {
        let tls = if cfg.url.starts_with("https://") {
            Some(Arc::new(client_config(cfg.ca.as_ref())?))
        } else {
            None
        };
        Ok(Fetcher {
            url: cfg.url.clone(),
            tls,
        })
    }

    /// The document, within [`TIMEOUT`] and [`MAX_BODY`].
    pub async fn fetch(&self) -> Result<Vec<u8>, FetchError> {
        tokio::time::timeout(TIMEOUT, self.fetch_unbounded())
            .await
            .map_err(|_| FetchError::Timeout)?
    }

    async fn fetch_unbounded(&self) -> Result<Vec<u8>, FetchError> {
        if let Some(path) = self.url.strip_prefix("file://") {
            let path = PathBuf::from(path);
            // A local file: read off the event loop (no async file API in this build).
            return tokio::task::spawn_blocking(move || read_file(&path))
                .await
                .map_err(|e| FetchError::Http(format!("reading the file: {e}")))?;
        }
        let tls = self
            .tls
            .clone()
            .ok_or_else(|| FetchError::Url(self.url.clone()))?;
        let (host, port, path) = split_url(&self.url)?;
        let name =
            ServerName::try_from(host.clone()).map_err(|_| FetchError::Url(self.url.clone()))?;
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
        let mut tls = tokio_rustls::TlsConnector::from(tls)
            .connect(name, tcp)
            .await?;
        let host_header = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: sip-firewall\r\n\
             Accept-Encoding: identity\r\nConnection: close\r\n\r\n"
        );
        tls.write_all(request.as_bytes()).await?;
        let raw = read_bounded(tls, MAX_HEAD + MAX_BODY).await?;
        body_of(&raw)
    }
}

/// The client config: `ca`'s certificates, or the web's roots.
fn client_config(ca: Option<&PathBuf>) -> Result<ClientConfig, FetchError> {
    let roots = match ca {
        Some(path) => {
            let ca_err = |message: String| FetchError::Ca {
                path: path.clone(),
                message,
            };
            let mut roots = RootCertStore::empty();
            for c in crate::server::tls::read_certs(path).map_err(|e| ca_err(format!("{e:#}")))? {
                roots.add(c).map_err(|e| ca_err(e.to_string()))?;
            }
            roots
        }
        None => RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        },
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| FetchError::Http(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// `https://host[:port]/path` to (host, port, path); an IPv6 host in brackets.
fn split_url(url: &str) -> Result<(String, u16, String), FetchError> {
    let bad = || FetchError::Url(url.to_string());
    let rest = url.strip_prefix("https://").ok_or_else(bad)?;
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, "/"),
    };
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, after) = v6.split_once(']').ok_or_else(bad)?;
        (h, after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    let port = match port {
        Some(p) => p.parse().map_err(|_| bad())?,
        None => 443,
    };
    if host.is_empty() || authority.contains('@') {
        return Err(bad());
    }
    Ok((host.to_string(), port, path.to_string()))
}

/// A local feed file, at most [`MAX_BODY`] bytes.
fn read_file(path: &std::path::Path) -> Result<Vec<u8>, FetchError> {
    use std::io::Read as _;
    let file_err = |source| FetchError::File {
        path: path.to_path_buf(),
        source,
    };
    let f = std::fs::File::open(path).map_err(file_err)?;
    let mut buf = Vec::new();
    f.take(MAX_BODY as u64 + 1)
        .read_to_end(&mut buf)
        .map_err(file_err)?;
    if buf.len() > MAX_BODY {
        return Err(FetchError::TooLarge);
    }
    Ok(buf)
}

/// Read to the end, at most `max` bytes (more is an error, not a cut document).
async fn read_bounded(r: impl AsyncRead + Unpin, max: usize) -> Result<Vec<u8>, FetchError> {
    let mut buf = Vec::new();
    let mut limited = r.take(max as u64 + 1);
    match limited.read_to_end(&mut buf).await {
        Ok(_) => {}
        // A server that closes without TLS close_notify: the length checks below decide.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !buf.is_empty() => {}
        Err(e) => return Err(e.into()),
    }
    if buf.len() > max {
        return Err(FetchError::TooLarge);
    }
    Ok(buf)
}

/// The body of a whole HTTP/1.1 response: 200 only, framed by Content-Length or chunked
/// (RFC 9112 6.3; a body that only the end of the connection delimits is refused, as a
/// connection cut short would pass for a shorter feed).
fn body_of(raw: &[u8]) -> Result<Vec<u8>, FetchError> {
    let http = |m: &str| FetchError::Http(m.to_string());
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut headers);
    let head = match resp.parse(raw).map_err(|e| http(&e.to_string()))? {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => return Err(http("response cut short in its head")),
    };
    if resp.code != Some(200) {
        return Err(FetchError::Http(format!(
            "status {} (200 wanted; redirects are not followed)",
            resp.code.unwrap_or(0)
        )));
    }
    let value = |name: &str| {
        resp.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).trim().to_ascii_lowercase())
    };
    let rest = raw.get(head..).unwrap_or_default();
    if value("transfer-encoding").is_some_and(|te| te.ends_with("chunked")) {
        return dechunk(rest);
    }
    let len: usize = value("content-length")
        .ok_or_else(|| http("no Content-Length and not chunked"))?
        .parse()
        .map_err(|_| http("bad Content-Length"))?;
    rest.get(..len)
        .map(<[u8]>::to_vec)
        .ok_or_else(|| http("body shorter than its Content-Length"))
}

/// A chunked body (RFC 9112 7.1) to its bytes; the last chunk must be there.
fn dechunk(mut rest: &[u8]) -> Result<Vec<u8>, FetchError> {
    let http = |m: &str| FetchError::Http(m.to_string());
    let mut out = Vec::new();
    loop {
        let line_end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| http("chunk size line cut short"))?;
        let line = std::str::from_utf8(rest.get(..line_end).unwrap_or_default())
            .map_err(|_| http("bad chunk size"))?;
        let size_text = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| http("bad chunk size"))?;
        rest = rest.get(line_end + 2..).unwrap_or_default();
        if size == 0 {
            return Ok(out);
        }
        if out.len().saturating_add(size) > MAX_BODY {
            return Err(FetchError::TooLarge);
        }
        let chunk = rest.get(..size).ok_or_else(|| http("chunk cut short"))?;
        out.extend_from_slice(chunk);
        rest = rest
            .get(size..)
            .and_then(|r| r.strip_prefix(b"\r\n"))
            .ok_or_else(|| http("chunk not followed by CRLF"))?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let s = |u: &str| split_url(u).ok();
        assert_eq!(
            s("https://feeds.example/x/list.txt"),
            Some(("feeds.example".into(), 443, "/x/list.txt".into()))
        );
        assert_eq!(
            s("https://127.0.0.1:8443"),
            Some(("127.0.0.1".into(), 8443, "/".into()))
        );
        assert_eq!(
            s("https://[2001:db8::1]:8443/f"),
            Some(("2001:db8::1".into(), 8443, "/f".into()))
        );
        for bad in [
            "http://x/",
            "https://",
            "https://u@h/",
            "https://h:99999/",
            "https://[::1/",
        ] {
            assert!(s(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn bodies_by_length_and_chunks() {
        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello-and-more";
        assert_eq!(body_of(ok).unwrap(), b"hello");
        let chunked =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n2;x=y\r\nef\r\n0\r\n\r\n";
        assert_eq!(body_of(chunked).unwrap(), b"abcdef");
        for bad in [
            &b"HTTP/1.1 302 Found\r\nLocation: x\r\nContent-Length: 0\r\n\r\n"[..],
            &b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort"[..],
            &b"HTTP/1.1 200 OK\r\n\r\nunframed"[..],
            &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nab"[..],
            &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"[..],
            &b"HTTP/1.1 200 OK\r\nContent-Le"[..],
        ] {
            assert!(body_of(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }
}
