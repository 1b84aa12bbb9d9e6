//! The device identity a client certificate carries: its subject's common
//! name (CN), which must be a valid device id. The certificate has already
//! been verified against the client CA when this runs.
//!
//! The CN, not a subject alternative name: device CAs (and tools like
//! `openssl req -subj /CN=sensor-01`) put the device name there, a device id
//! such as `sensor_01` is not a valid DNS name, and mosquitto's
//! `use_identity_as_username` reads the same field.

use rustls::pki_types::CertificateDer;
use x509_parser::prelude::{FromDer, X509Certificate};

/// Why a verified certificate names no device.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// The certificate does not parse as X.509 (rustls accepted it, so rare).
    #[error("client certificate does not parse: {0}")]
    Parse(String),
    /// The subject has no CN, or more than one.
    #[error("client certificate subject has {0} common names, not exactly one")]
    CommonNames(usize),
    /// The CN is not `[A-Za-z0-9_.-]{{1,64}}`.
    #[error("client certificate common name is not a device id: {0}")]
    NotADeviceId(String),
}

/// The device id named by the subject CN of `cert`.
pub fn device_id(cert: &CertificateDer<'_>) -> Result<String, IdentityError> {
    let (_, parsed) = X509Certificate::from_der(cert.as_ref())
        .map_err(|e| IdentityError::Parse(e.to_string()))?;
    let names: Vec<_> = parsed.subject().iter_common_name().collect();
    let [name] = names.as_slice() else {
        return Err(IdentityError::CommonNames(names.len()));
    };
    let name = name
        .as_str()
        .map_err(|e| IdentityError::NotADeviceId(e.to_string()))?;
    telemetry::validate_device_id(name).map_err(|e| IdentityError::NotADeviceId(e.to_string()))?;
    Ok(name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert_with(names: &[&str]) -> CertificateDer<'static> {
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        for name in names {
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, *name);
        }
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().clone()
    }

    #[test]
    fn the_common_name_is_the_device_id() {
        assert_eq!(device_id(&cert_with(&["sensor_01"])).unwrap(), "sensor_01");
    }

    #[test]
    fn no_common_name_or_a_bad_one_names_no_device() {
        assert_eq!(
            device_id(&cert_with(&[])),
            Err(IdentityError::CommonNames(0))
        );
        assert!(matches!(
            device_id(&cert_with(&["devices/+/x"])),
            Err(IdentityError::NotADeviceId(_))
        ));
        assert!(matches!(
            device_id(&CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x01])),
            Err(IdentityError::Parse(_))
        ));
    }
}
