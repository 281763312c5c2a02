//! TLS termination with rustls: TLS 1.2 and 1.3 only, the ring provider's default suites (all
//! forward-secret AEAD), ALPN `h2` and `http/1.1`. The certificate and key are read from PEM
//! files and read again when either file changes or on SIGHUP, so a rotated certificate is
//! served without a restart (a bad new pair is logged and the current one kept). With a client
//! CA bundle, client certificates are verified during the handshake (mutual TLS), required or
//! optional.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context as _};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};

use crate::config::{ClientAuth, HttpConfig};

/// How often the certificate files are checked for a change.
const WATCH_EVERY: Duration = Duration::from_secs(5);

/// What `serve` needs to terminate TLS.
pub struct Tls {
    pub acceptor: tokio_rustls::TlsAcceptor,
    /// Whether client certificates are verified (a client CA is configured).
    pub client_auth: Option<ClientAuth>,
    cert: Arc<ReloadingCert>,
}

/// The certificate served now, replaced on reload.
#[derive(Debug)]
struct ReloadingCert {
    cert_file: PathBuf,
    key_file: PathBuf,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().unwrap_or_else(|e| e.into_inner()).clone())
    }
}

/// The certificate chain and matching key, with the variable to blame in every error.
fn load_pair(cert_file: &Path, key_file: &Path, provider: &CryptoProvider) -> anyhow::Result<CertifiedKey> {
    let chain = CertificateDer::pem_file_iter(cert_file)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            anyhow::anyhow!(
                "CONCLAVE_TLS_CERT_FILE ({}): cannot read a PEM certificate chain: {e}",
                cert_file.display()
            )
        })?;
    if chain.is_empty() {
        bail!("CONCLAVE_TLS_CERT_FILE ({}): no PEM certificate in it", cert_file.display());
    }
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| {
        anyhow::anyhow!("CONCLAVE_TLS_KEY_FILE ({}): cannot read a PEM private key: {e}", key_file.display())
    })?;
    CertifiedKey::from_der(chain, key, provider).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => anyhow::anyhow!(
            "CONCLAVE_TLS_KEY_FILE ({}) is not the key of the certificate in CONCLAVE_TLS_CERT_FILE ({})",
            key_file.display(),
            cert_file.display()
        ),
        other => anyhow::anyhow!("CONCLAVE_TLS_KEY_FILE ({}): unusable private key: {other}", key_file.display()),
    })
}

fn client_verifier(
    ca_file: &Path,
    auth: ClientAuth,
    provider: &Arc<CryptoProvider>,
) -> anyhow::Result<Arc<dyn rustls::server::danger::ClientCertVerifier>> {
    let mut roots = RootCertStore::empty();
    let certs =
        CertificateDer::pem_file_iter(ca_file).and_then(|certs| certs.collect::<Result<Vec<_>, _>>()).map_err(|e| {
            anyhow::anyhow!("CONCLAVE_TLS_CLIENT_CA_FILE ({}): cannot read PEM certificates: {e}", ca_file.display())
        })?;
    for cert in certs {
        roots.add(cert).with_context(|| {
            format!("CONCLAVE_TLS_CLIENT_CA_FILE ({}): not a usable CA certificate", ca_file.display())
        })?;
    }
    if roots.is_empty() {
        bail!("CONCLAVE_TLS_CLIENT_CA_FILE ({}): no PEM certificate in it", ca_file.display());
    }
    let builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
    let builder = match auth {
        ClientAuth::Required => builder,
        ClientAuth::Optional => builder.allow_unauthenticated(),
    };
    builder.build().with_context(|| format!("CONCLAVE_TLS_CLIENT_CA_FILE ({})", ca_file.display()))
}

/// The TLS set-up, if the configuration asks for TLS.
pub fn setup(http: &HttpConfig) -> anyhow::Result<Option<Tls>> {
    let (Some(cert_file), Some(key_file)) = (&http.tls_cert_file, &http.tls_key_file) else {
        return Ok(None);
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let pair = load_pair(cert_file, key_file, &provider)?;
    let cert = Arc::new(ReloadingCert {
        cert_file: cert_file.clone(),
        key_file: key_file.clone(),
        provider: provider.clone(),
        current: RwLock::new(Arc::new(pair)),
    });
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .context("TLS protocol versions")?;
    let client_auth = http.tls_client_ca_file.as_ref().map(|_| http.tls_client_auth.unwrap_or(ClientAuth::Optional));
    let builder = match (&http.tls_client_ca_file, client_auth) {
        (Some(ca_file), Some(auth)) => builder.with_client_cert_verifier(client_verifier(ca_file, auth, &provider)?),
        _ => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(cert.clone());
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Some(Tls { acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)), client_auth, cert }))
}

/// When the files were last changed (modification time and length of each).
fn stamp(cert: &ReloadingCert) -> Option<[(SystemTime, u64); 2]> {
    let of = |p: &Path| std::fs::metadata(p).ok().and_then(|m| Some((m.modified().ok()?, m.len())));
    Some([of(&cert.cert_file)?, of(&cert.key_file)?])
}

impl Tls {
    /// Watches the certificate files and SIGHUP for the life of the process. The SIGHUP handler
    /// is installed before this returns, so a signal sent once the server listens reloads.
    pub fn watch(&self) -> anyhow::Result<()> {
        let cert = self.cert.clone();
        #[cfg(unix)]
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .context("installing the SIGHUP handler")?;
        tokio::spawn(async move {
            let mut seen = stamp(&cert);
            loop {
                #[cfg(unix)]
                let reason = tokio::select! {
                    _ = hup.recv() => "SIGHUP",
                    () = tokio::time::sleep(WATCH_EVERY) => "",
                };
                #[cfg(not(unix))]
                let reason = {
                    tokio::time::sleep(WATCH_EVERY).await;
                    ""
                };
                let now = stamp(&cert);
                if reason.is_empty() && (now == seen || now.is_none()) {
                    continue;
                }
                seen = now;
                let reason = if reason.is_empty() { "the files changed" } else { reason };
                match load_pair(&cert.cert_file, &cert.key_file, &cert.provider) {
                    Ok(pair) => {
                        *cert.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(pair);
                        tracing::info!(reason, "TLS certificate reloaded");
                    }
                    Err(e) => {
                        tracing::error!(reason, error = %format!("{e:#}"), "TLS certificate not reloaded; still serving the previous one");
                    }
                }
            }
        });
        Ok(())
    }
}
