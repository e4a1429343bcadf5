//! `server.tls`: one certificate and key for the REST and gRPC listeners; with
//! `client_ca_file`, workers must present a client certificate that CA signed.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::TlsConfig;

/// The PEM files of `server.tls`, read and checked at start.
pub struct Tls {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
    pub client_ca_pem: Option<Vec<u8>>,
    /// For the HTTP listener (HTTP/2 and HTTP/1.1 by ALPN).
    pub acceptor: tokio_rustls::TlsAcceptor,
}

fn read(path: &Path, key: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("{key}: cannot read {}", path.display()))
}

impl Tls {
    /// `None` when TLS is off; an error naming the key when a file is missing or not PEM.
    pub fn load(cfg: &TlsConfig) -> anyhow::Result<Option<Tls>> {
        let (cert_file, key_file) = match (&cfg.cert_file, &cfg.key_file) {
            (None, None) => {
                anyhow::ensure!(cfg.client_ca_file.is_none(), "server.tls.client_ca_file: needs server.tls.cert_file and key_file");
                return Ok(None);
            }
            (Some(c), Some(k)) => (c, k),
            _ => anyhow::bail!("server.tls: cert_file and key_file go together"),
        };
        let cert_pem = read(cert_file, "server.tls.cert_file")?;
        let key_pem = read(key_file, "server.tls.key_file")?;
        let client_ca_pem = cfg.client_ca_file.as_deref().map(|p| read(p, "server.tls.client_ca_file")).transpose()?;
        let certs = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| anyhow::anyhow!("server.tls.cert_file: {} holds no PEM certificate ({e})", cert_file.display()))?;
        anyhow::ensure!(!certs.is_empty(), "server.tls.cert_file: {} holds no PEM certificate", cert_file.display());
        let key = PrivateKeyDer::from_pem_slice(&key_pem)
            .map_err(|e| anyhow::anyhow!("server.tls.key_file: {} holds no PEM private key ({e})", key_file.display()))?;
        if let Some(ca) = &client_ca_pem {
            let n = CertificateDer::pem_slice_iter(ca).filter(Result::is_ok).count();
            anyhow::ensure!(n > 0, "server.tls.client_ca_file: holds no PEM certificate");
        }
        let mut server = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .context("server.tls: the certificate and the key do not make a usable pair")?;
        server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Some(Tls { cert_pem, key_pem, client_ca_pem, acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(server)) }))
    }

    /// The gRPC listener's TLS: the same certificate; the client CA, if any, required.
    pub fn grpc(&self) -> tonic::transport::ServerTlsConfig {
        let mut t = tonic::transport::ServerTlsConfig::new().identity(tonic::transport::Identity::from_pem(&self.cert_pem, &self.key_pem));
        if let Some(ca) = &self.client_ca_pem {
            t = t.client_ca_root(tonic::transport::Certificate::from_pem(ca));
        }
        t
    }
}
