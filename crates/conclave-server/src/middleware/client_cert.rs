//! Machine clients over mutual TLS: the listener verifies the client certificate during the
//! handshake (it must chain to the configured client CA and be valid now) and hands the
//! verified identity to every request of that connection as a [`ClientCertificate`] extension.
//! With `CONCLAVE_MTLS_REQUIRED_FOR_API_KEYS`, API keys are refused without one.

use sha2::{Digest as _, Sha256};
use x509_parser::extensions::GeneralName;

/// The identity of a client certificate the TLS handshake verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertificate {
    /// The subject's common name, if any.
    pub common_name: Option<String>,
    /// Subject alternative names: DNS names, e-mail addresses, URIs and IP addresses, as text.
    pub subject_alt_names: Vec<String>,
    /// SHA-256 of the DER certificate, lowercase hex.
    pub sha256: String,
}

impl ClientCertificate {
    /// Reads the identity of an end-entity certificate (DER) that was already verified.
    pub fn from_der(der: &[u8]) -> ClientCertificate {
        let sha256 = conclave_core::records::hex(&Sha256::digest(der));
        let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
            return ClientCertificate { common_name: None, subject_alt_names: Vec::new(), sha256 };
        };
        let common_name = cert.subject().iter_common_name().next().and_then(|cn| cn.as_str().ok()).map(str::to_owned);
        let mut subject_alt_names = Vec::new();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    GeneralName::DNSName(n) | GeneralName::RFC822Name(n) | GeneralName::URI(n) => {
                        subject_alt_names.push((*n).to_owned());
                    }
                    GeneralName::IPAddress(ip) => {
                        if let Ok(v4) = <[u8; 4]>::try_from(*ip) {
                            subject_alt_names.push(std::net::Ipv4Addr::from(v4).to_string());
                        } else if let Ok(v6) = <[u8; 16]>::try_from(*ip) {
                            subject_alt_names.push(std::net::Ipv6Addr::from(v6).to_string());
                        }
                    }
                    _ => {}
                }
            }
        }
        ClientCertificate { common_name, subject_alt_names, sha256 }
    }
}

#[cfg(test)]
mod tests {
    use super::ClientCertificate;
    use rcgen::{CertificateParams, DnType, KeyPair};
    use sha2::{Digest as _, Sha256};

    #[test]
    fn the_identity_names_the_subject_and_the_fingerprint() {
        let mut params = CertificateParams::new(vec!["agent.example.test".to_owned(), "192.0.2.7".to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, "build-agent");
        let cert = params.self_signed(&KeyPair::generate().unwrap()).unwrap();
        let id = ClientCertificate::from_der(cert.der());
        assert_eq!(id.common_name.as_deref(), Some("build-agent"));
        assert_eq!(id.subject_alt_names, ["agent.example.test", "192.0.2.7"]);
        let expected = conclave_core::records::hex(&Sha256::digest(cert.der()));
        assert_eq!(id.sha256, expected);
        assert_eq!(id.sha256.len(), 64);
    }
}
