//! SIP over TLS (RFC 3261 26.2, RFC 5630): a TLS handshake, bounded in time, in front of the
//! TCP connection handling ([`super::tcp::serve_connection`]): the same framer, gate, idle
//! timeout, and the same connection slots in total and per source. rustls with the ring
//! provider (no OpenSSL; ring builds from the crate alone).

use std::{io::BufReader, net::SocketAddr, path::Path, sync::Arc, time::Duration};

use anyhow::Context as _;
use rustls::{
    ClientConfig, RootCertStore, ServerConfig,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _},
    server::WebPkiClientVerifier,
};
use sip_firewall_sip::Transport;
use tokio::{
    net::TcpListener,
    sync::{mpsc, watch},
};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tracing::debug;

use super::{
    Shared,
    accept::{Accepted, accept_loop, opened},
    tcp::Conn,
};
use crate::{metrics, server::config::TlsConfig};

/// The server and client sides built from `[tls]`.
pub(crate) struct Tls {
    pub acceptor: TlsAcceptor,
    pub connector: TlsConnector,
    pub handshake_timeout: Duration,
    /// The bytes of the certificate, key and CA files they were built from.
    files: Vec<u8>,
    trusted_peers: Arc<Vec<String>>,
}

/// The TLS material in use, replaced by a reload ([`reload_certificates`]): each new
/// handshake (accepted or opened) takes the current one; connections already up keep theirs.
pub(crate) struct LiveTls {
    current: std::sync::RwLock<(TlsAcceptor, TlsConnector, Vec<u8>)>,
    /// `[tls] trusted_peers`.
    trusted_peers: Arc<Vec<String>>,
}

impl LiveTls {
    fn new(t: Tls) -> Arc<LiveTls> {
        Arc::new(LiveTls {
            current: std::sync::RwLock::new((t.acceptor, t.connector, t.files)),
            trusted_peers: t.trusted_peers.clone(),
        })
    }

    pub(crate) fn acceptor(&self) -> TlsAcceptor {
        match self.current.read() {
            Ok(g) => g.0.clone(),
            Err(p) => p.into_inner().0.clone(),
        }
    }

    pub(crate) fn connector(&self) -> TlsConnector {
        match self.current.read() {
            Ok(g) => g.1.clone(),
            Err(p) => p.into_inner().1.clone(),
        }
    }
}

/// The first `trusted` name the client certificate `cert` is valid for (its chain to `ca`
/// was verified in the handshake).
fn trusted_name(cert: &CertificateDer<'_>, trusted: &[String]) -> Option<String> {
    let ee = webpki::EndEntityCert::try_from(cert).ok()?;
    trusted
        .iter()
        .find(|n| {
            rustls::pki_types::ServerName::try_from(n.as_str())
                .is_ok_and(|sn| ee.verify_is_valid_for_subject_name(&sn).is_ok())
        })
        .cloned()
}

/// The daemon's TLS material, for [`reload_certificates`] (the latest server bound with TLS).
static LIVE: std::sync::Mutex<Option<std::sync::Weak<LiveTls>>> = std::sync::Mutex::new(None);

/// Make `t` the live TLS material of this process; the handle the listeners and the outbound
/// read it through.
pub(crate) fn go_live(t: Tls) -> Arc<LiveTls> {
    let live = LiveTls::new(t);
    *crate::guard::lock(&LIVE, "live tls") = Some(Arc::downgrade(&live));
    live
}

/// `sip-firewall reload` / SIGHUP: read `[tls] certificate`, `private_key` and `ca` again
/// (renewed in place, or other paths), with the running listeners' other settings. Ok(true)
/// when they changed and new handshakes now use them, Ok(false) when nothing changed or TLS
/// is not running; Err (the running material stays) when a file is unreadable or the key
/// does not match the certificate.
pub fn reload_certificates(cfg: &TlsConfig) -> anyhow::Result<bool> {
    let live = crate::guard::lock(&LIVE, "live tls")
        .as_ref()
        .and_then(std::sync::Weak::upgrade);
    let Some(live) = live else {
        return Ok(false);
    };
    let t = Tls::load(cfg)?;
    let mut g = match live.current.write() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    };
    if g.2 == t.files {
        return Ok(false);
    }
    *g = (t.acceptor, t.connector, t.files);
    tracing::info!("TLS certificate reloaded");
    Ok(true)
}

/// `[tls]` as it is running, but for the certificate files a reload re-reads.
pub fn restart_only(cfg: &TlsConfig) -> String {
    format!(
        "{:?}",
        TlsConfig {
            certificate: None,
            private_key: None,
            ca: None,
            ..cfg.clone()
        }
    )
}

pub(crate) fn read_certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let text = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let certs = CertificateDer::pem_reader_iter(BufReader::new(&text[..]))
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{}: not PEM certificates", path.display()))?;
    anyhow::ensure!(
        !certs.is_empty(),
        "{}: no certificate in it",
        path.display()
    );
    Ok(certs)
}

fn read_key(path: &Path) -> anyhow::Result<PrivateKeyDer<'static>> {
    let text = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    PrivateKeyDer::from_pem_reader(BufReader::new(&text[..]))
        .with_context(|| format!("{}: no PEM private key in it", path.display()))
}

impl Tls {
    /// Load the certificate, key and CA named in `cfg` (validated: certificate and key set).
    pub(crate) fn load(cfg: &TlsConfig) -> anyhow::Result<Tls> {
        let (Some(cert), Some(key)) = (&cfg.certificate, &cfg.private_key) else {
            anyhow::bail!("[tls] needs certificate and private_key");
        };
        let mut files = std::fs::read(cert).unwrap_or_default();
        files.extend(std::fs::read(key).unwrap_or_default());
        if let Some(ca) = &cfg.ca {
            files.extend(std::fs::read(ca).unwrap_or_default());
        }
        let certs = read_certs(cert)?;
        let key = read_key(key)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let ca = match &cfg.ca {
            Some(path) => {
                let mut roots = RootCertStore::empty();
                for c in read_certs(path)? {
                    roots
                        .add(c)
                        .with_context(|| format!("{}: a CA certificate", path.display()))?;
                }
                Some(Arc::new(roots))
            }
            None => None,
        };
        let server = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?;
        let server = match &ca {
            // A client that presents a certificate must chain to `ca` (else the handshake
            // fails); one that presents none passes unless it is required.
            Some(roots) => {
                let v =
                    WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone());
                let v = if cfg.require_client_certificate {
                    v
                } else {
                    v.allow_unauthenticated()
                };
                server.with_client_cert_verifier(v.build().context("client verifier")?)
            }
            None => server.with_no_client_auth(),
        };
        let server = server
            .with_single_cert(certs.clone(), key.clone_key())
            .context("TLS certificate and key do not match")?;
        // Next hops: verified against `ca` when set, else the built-in web roots.
        let roots = match ca {
            Some(r) => Arc::unwrap_or_clone(r),
            None => RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            },
        };
        let client = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?
            .with_root_certificates(roots)
            .with_client_auth_cert(certs, key)
            .context("TLS client certificate")?;
        Ok(Tls {
            acceptor: TlsAcceptor::from(Arc::new(server)),
            connector: TlsConnector::from(Arc::new(client)),
            handshake_timeout: cfg.handshake_timeout,
            files,
            trusted_peers: Arc::new(
                cfg.trusted_peers
                    .iter()
                    .map(|n| n.trim_end_matches('.').to_ascii_lowercase())
                    .collect(),
            ),
        })
    }
}

/// Accept TLS connections until shutdown. A connection takes a slot of the shared TCP
/// bounds before its handshake (a handshake flood is bounded like a connection flood), and
/// the handshake must finish within `handshake_timeout`.
pub(super) async fn serve(
    listener: TcpListener,
    live: Arc<LiveTls>,
    handshake_timeout: Duration,
    shared: Arc<Shared>,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let (owner, rx) = (shared.clone(), shutdown.clone());
    accept_loop(listener, Transport::Tls, "tls", owner, shutdown, |a| {
        // The certificate in force at accept (a reload changes it for the next ones).
        let handshake = Handshake {
            acceptor: live.acceptor(),
            trusted_peers: live.trusted_peers.clone(),
            timeout: handshake_timeout,
        };
        tokio::spawn(handshake.then_serve(a, shared.clone(), rx.clone()));
    })
    .await
}

/// What the TLS handshake of one accepted connection needs.
struct Handshake {
    acceptor: TlsAcceptor,
    trusted_peers: Arc<Vec<String>>,
    timeout: Duration,
}

impl Handshake {
    /// The TLS handshake within its timeout, then the TCP connection handling over it,
    /// holding the connection's slot throughout.
    async fn then_serve(self, a: Accepted, shared: Arc<Shared>, rx: watch::Receiver<bool>) {
        let Accepted { stream, peer, slot } = a;
        let _slot = slot;
        let Ok(local) = stream.local_addr() else {
            return;
        };
        let handshake = tokio::time::timeout(self.timeout, self.acceptor.accept(stream)).await;
        let Some(tls) = opened(handshake, "TLS handshake", peer, metrics::tls_handshake) else {
            return;
        };
        // A client certificate (verified against `ca`) naming a trusted peer.
        let trusted = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .and_then(|c| trusted_name(c, &self.trusted_peers));
        if let Some(name) = &trusted {
            crate::metrics::tls_handshake("trusted_peer");
            debug!(%peer, name, "TLS client certificate of a trusted peer");
        }
        let (tx, out_rx) = mpsc::channel(super::tcp::TCP_QUEUE);
        shared.outbound.register(peer, Transport::Tls, tx);
        let conn = Conn {
            peer,
            local,
            transport: Transport::Tls,
            trusted_peer: trusted.map(Arc::from),
        };
        super::tcp::serve_connection(tls, conn, shared, rx, out_rx).await;
    }
}

/// The addresses `listeners` are bound to.
pub(super) fn addrs(listeners: &[TcpListener]) -> Vec<SocketAddr> {
    listeners
        .iter()
        .filter_map(|l| l.local_addr().ok())
        .collect()
}
