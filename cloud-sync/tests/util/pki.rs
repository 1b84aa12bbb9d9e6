//! A throw-away certificate authority and a collector certificate for
//! 127.0.0.1 and localhost, made with rcgen in a temp dir (never committed).

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

/// PEM files of one test PKI.
pub struct Pki {
    /// The CA certificate a client must trust.
    pub ca_pem: String,
    pub ca_file: PathBuf,
    /// The collector's certificate (signed by the CA) and key.
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

pub fn pki(dir: &Path) -> Pki {
    let mut ca_params = CertificateParams::default();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "test collector CA");
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);

    let mut params =
        CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "collector");
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();

    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    Pki {
        ca_pem: ca_cert.pem(),
        ca_file: write("ca.pem", &ca_cert.pem()),
        cert_file: write("collector.pem", &cert.pem()),
        key_file: write("collector.key", &key.serialize_pem()),
    }
}
