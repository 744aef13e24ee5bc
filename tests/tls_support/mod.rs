//! A private certificate authority for the TLS tests, made fresh by each test with rcgen
//! (ECDSA P-256: instant, unlike RSA): a CA certificate, and a server certificate it signed
//! for `127.0.0.1` and `localhost`, written as PEM files the way an operator would keep
//! them (`ca.pem` for a remote's `ca_file`, `cert.pem` / `key.pem` for the persister's
//! `server.tls_cert` / `server.tls_key`). Shared by `remote_tls.rs` and `persister_server.rs`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};

/// The PEM files of one private CA and the server certificate it issued.
pub struct TestPki {
    /// The CA's certificate (what a client trusts).
    pub ca: PathBuf,
    /// The server's certificate chain (leaf only: the CA is the client's trust anchor).
    pub cert: PathBuf,
    /// The server's private key (PKCS#8).
    pub key: PathBuf,
}

impl TestPki {
    /// Makes a CA and a server certificate for `127.0.0.1` and `localhost` in `dir`.
    pub fn new(dir: &Path) -> TestPki {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "Hypergolix test CA");
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();

        let mut server_params =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
        server_params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        let server_key = KeyPair::generate().unwrap();
        let server = server_params.signed_by(&server_key, &ca).unwrap();

        let pki = TestPki {
            ca: dir.join("ca.pem"),
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
        };
        std::fs::write(&pki.ca, ca.pem()).unwrap();
        std::fs::write(&pki.cert, server.pem()).unwrap();
        std::fs::write(&pki.key, server_key.serialize_pem()).unwrap();
        pki
    }

    /// The `server:` lines (two-space indent) that make a persister serve this certificate.
    pub fn server_lines(&self) -> String {
        format!(
            "  tls_cert: {}\n  tls_key: {}\n",
            self.cert.display(),
            self.key.display()
        )
    }

    /// A client configuration trusting this CA (and the public roots), as a daemon with
    /// `ca_file: <ca.pem>` has.
    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        hypergolix::persist::tls::client_config(Some(&self.ca)).expect("the test CA loads")
    }
}
