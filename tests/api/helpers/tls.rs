//! A test CA made with rcgen, the certificates it issues, and a server serving TLS with them.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

use crate::helpers::{Backend, TestApp, spawn_app_with};

/// A throwaway certificate authority.
pub struct Authority {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and its key, PEM.
pub struct Pair {
    pub cert: String,
    pub key: String,
}

impl Authority {
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("ca key");
        Self {
            issuer: CertifiedIssuer::self_signed(params, key).expect("ca"),
        }
    }

    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    pub fn issue(&self, names: &[&str], usage: ExtendedKeyUsagePurpose) -> Pair {
        let names: Vec<String> = names.iter().map(|name| (*name).to_owned()).collect();
        let mut params = CertificateParams::new(names).expect("params");
        params
            .distinguished_name
            .push(DnType::CommonName, "tessera test");
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("signed");
        Pair {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }

    pub fn server(&self) -> Pair {
        self.issue(&["localhost"], ExtendedKeyUsagePurpose::ServerAuth)
    }

    pub fn client(&self) -> Pair {
        self.issue(&["admin-tool"], ExtendedKeyUsagePurpose::ClientAuth)
    }
}

/// Writes `contents` to `path` in one step (a rename), as Kubernetes swaps Secret files.
pub fn replace(path: &Path, contents: &str) {
    let staging = path.with_extension("new");
    std::fs::write(&staging, contents).expect("write");
    std::fs::rename(&staging, path).expect("rename");
}

pub struct TlsFiles {
    pub dir: tempfile::TempDir,
}

impl TlsFiles {
    pub fn new(server: &Pair, client_ca: Option<&Authority>) -> Self {
        let files = Self {
            dir: tempfile::tempdir().expect("dir"),
        };
        replace(&files.cert(), &server.cert);
        replace(&files.key(), &server.key);
        if let Some(ca) = client_ca {
            replace(&files.client_ca(), &ca.pem());
        }
        files
    }

    pub fn cert(&self) -> PathBuf {
        self.dir.path().join("tls.crt")
    }

    pub fn key(&self) -> PathBuf {
        self.dir.path().join("tls.key")
    }

    pub fn client_ca(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }
}

pub async fn tls_app(files: &TlsFiles, mtls: bool, require_client_cert: bool) -> TestApp {
    let (cert, key, client_ca) = (files.cert(), files.key(), files.client_ca());
    spawn_app_with(Backend::Sqlite, move |settings| {
        settings.tls_cert_file = Some(cert);
        settings.tls_key_file = Some(key);
        settings.tls_client_ca_file = mtls.then_some(client_ca);
        settings.tls_require_client_cert = require_client_cert;
        settings.tls_reload_interval_ms = 100;
    })
    .await
}
