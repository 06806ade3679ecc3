//! TLS for the stream connectors: a test CA and certificates made on the spot (rcgen), a
//! client connector trusting that CA (with a client certificate when given), and a server
//! acceptor holding a certificate (a next hop the edge connects to).

use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::{
    ClientConfig, RootCertStore, ServerConfig,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _},
};
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// A certificate and its private key, PEM.
pub type Pem = (String, String);

/// A CA named `name`: its certificate (PEM) and what signs with it.
pub fn ca(name: &str) -> (String, Issuer<'static, KeyPair>) {
    let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name
        .push(rcgen::DnType::CommonName, name.to_string());
    let key = KeyPair::generate().expect("key");
    let cert = p.self_signed(&key).expect("CA");
    (cert.pem(), Issuer::new(p, key))
}

/// A leaf for `san` (a name or an address) signed by `issuer`.
pub fn leaf(san: &str, issuer: &Issuer<'static, KeyPair>) -> Pem {
    let p = CertificateParams::new(vec![san.to_string()]).expect("params");
    let key = KeyPair::generate().expect("key");
    let cert = p.signed_by(&key, issuer).expect("leaf");
    (cert.pem(), key.serialize_pem())
}

fn certs(pem: &str) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .expect("certificate PEM")
}

/// A TLS client trusting `ca_pem`, presenting `client` when given.
pub fn connector(ca_pem: &str, client: Option<&Pem>) -> TlsConnector {
    let mut roots = RootCertStore::empty();
    for c in certs(ca_pem) {
        roots.add(c).expect("root");
    }
    let b = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots);
    let cfg = match client {
        Some((cert, key)) => b
            .with_client_auth_cert(
                certs(cert),
                PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("key"),
            )
            .expect("client cert"),
        None => b.with_no_client_auth(),
    };
    TlsConnector::from(Arc::new(cfg))
}

/// A TLS server holding `cert` (asking no client certificate).
pub fn acceptor(cert: &Pem) -> TlsAcceptor {
    let cfg =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(
                certs(&cert.0),
                PrivateKeyDer::from_pem_slice(cert.1.as_bytes()).expect("key"),
            )
            .expect("server config");
    TlsAcceptor::from(Arc::new(cfg))
}
