//! # TLS set-up
//!
//! The rustls configurations of both ends: the persister's certificate chain and key
//! (`server.tls_cert` / `server.tls_key`), and the client's trust for `wss://` remotes.
//!
//! A client trusts the Mozilla root program as shipped in `webpki-roots` plus, for private
//! deployments, the PEM certificates of a remote's `ca_file`. The compiled-in roots, rather
//! than the platform's store, because they are the same on every machine (containers and
//! minimal systems often ship no `ca-certificates` at all) and need no file the daemon does
//! not name itself; a private CA goes in `ca_file`. Hostname verification is always on: the
//! certificate must name the remote's `host`, whether a DNS name or an IP address.
//!
//! PEM is read with `rustls-pki-types` ([`PemObject`]). Owns: nothing after start. Calls:
//! rustls only.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Why a TLS configuration could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A PEM file is missing, unreadable or malformed.
    #[error("{path}: {reason}")]
    File { path: PathBuf, reason: String },
    /// A certificate file holds no certificate.
    #[error("{0}: no PEM certificate in the file")]
    NoCertificate(PathBuf),
    /// A key file holds no private key.
    #[error("{0}: no PEM private key in the file")]
    NoKey(PathBuf),
    /// rustls refused the material (e.g. a certificate it cannot parse as a trust anchor).
    #[error("{0}")]
    Rustls(String),
}

fn file_error(path: &Path, e: impl std::fmt::Display) -> TlsError {
    TlsError::File {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Every certificate in the PEM file at `path` (at least one), in file order.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(path, e))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(path.to_path_buf()));
    }
    Ok(certs)
}

/// The first private key (PKCS#8, PKCS#1 or SEC1) in the PEM file at `path`.
pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    match PrivateKeyDer::from_pem_file(path) {
        Ok(k) => Ok(k),
        Err(rustls_pki_types::pem::Error::NoItemsFound) => Err(TlsError::NoKey(path.to_path_buf())),
        Err(e) => Err(file_error(path, e)),
    }
}

/// The persister's configuration: the chain in `cert` (leaf first) and the key in `key`.
pub fn server_config(cert: &Path, key: &Path) -> Result<rustls::ServerConfig, TlsError> {
    let certs = read_certs(cert)?;
    let key = read_key(key)?;
    rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Rustls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Rustls(e.to_string()))
}

/// A client configuration trusting the `webpki-roots` and, if given, every certificate in
/// `ca_file`. No ALPN: the websocket upgrade is HTTP/1.1.
pub fn client_config(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = ca_file {
        for cert in read_certs(path)? {
            roots
                .add(cert)
                .map_err(|e| TlsError::Rustls(format!("{}: {e}", path.display())))?;
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Rustls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The configuration of a `wss://` connection given no other: the public roots only.
pub fn default_client_config() -> Arc<rustls::ClientConfig> {
    static DEFAULT: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    DEFAULT
        .get_or_init(|| client_config(None).expect("the compiled-in roots are valid"))
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_files_are_checked_with_the_path_in_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let e = client_config(Some(&missing)).unwrap_err();
        assert!(
            matches!(&e, TlsError::File { path, .. } if *path == missing),
            "{e}"
        );
        assert!(e.to_string().contains("missing.pem"), "{e}");

        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not pem at all\n").unwrap();
        assert_eq!(
            client_config(Some(&empty)).unwrap_err(),
            TlsError::NoCertificate(empty.clone())
        );
        assert_eq!(
            read_key(&empty).unwrap_err(),
            TlsError::NoKey(empty.clone())
        );

        let broken = dir.path().join("broken.pem");
        std::fs::write(
            &broken,
            "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        assert!(matches!(read_certs(&broken), Err(TlsError::File { .. })));
    }

    #[test]
    fn the_default_trusts_the_public_roots() {
        let c = default_client_config();
        assert!(Arc::ptr_eq(&c, &default_client_config()), "built once");
        assert!(c.alpn_protocols.is_empty());
        assert!(webpki_roots::TLS_SERVER_ROOTS.len() > 50);
    }
}
