//! TLS for endpoint connections (feature `tls`): rustls with the *ring* provider.
//!
//! Every endpoint connection is verified against the configured roots and one server name: the
//! one set with [`TlsConfig::server_name`], else the target's host name (`dns:///api.example.com`
//! verifies `api.example.com`; `kubernetes:///api.prod` verifies `api.prod.svc`), else the
//! endpoint's IP address. HTTP/2 is negotiated with ALPN.

use std::net::SocketAddr;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;

use crate::error::{Error, ErrorKind};

/// TLS settings of a client.
#[derive(Clone)]
pub struct TlsConfig {
    config: Arc<rustls::ClientConfig>,
    server_name: Option<String>,
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConfig")
            .field("server_name", &self.server_name)
            .finish()
    }
}

impl TlsConfig {
    /// Trusts the CA certificates in `pem` (one or more `CERTIFICATE` blocks).
    pub fn with_root_certificates_pem(pem: &[u8]) -> Result<Self, Error> {
        let mut roots = rustls::RootCertStore::empty();
        let mut found = 0;
        for certificate in CertificateDer::pem_slice_iter(pem) {
            let certificate = certificate.map_err(|error| {
                Error::new(ErrorKind::Tls, "the root certificate PEM cannot be read")
                    .with_source(error)
            })?;
            roots.add(certificate).map_err(|error| {
                Error::new(ErrorKind::Tls, "a root certificate is not valid").with_source(error)
            })?;
            found += 1;
        }
        if found == 0 {
            return Err(Error::new(
                ErrorKind::Tls,
                "the root certificate PEM holds no CERTIFICATE block",
            ));
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|error| Error::new(ErrorKind::Tls, "TLS setup failed").with_source(error))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        Ok(TlsConfig::from_client_config(config))
    }

    /// Uses a rustls client configuration as it is (client certificates, custom verifiers);
    /// its ALPN protocols are set per client.
    pub fn from_client_config(config: rustls::ClientConfig) -> Self {
        TlsConfig {
            config: Arc::new(config),
            server_name: None,
        }
    }

    /// Verifies endpoints against `name` instead of the target's host name.
    pub fn server_name(mut self, name: impl Into<String>) -> Self {
        self.server_name = Some(name.into());
        self
    }
}

/// A TLS connector for one client.
#[derive(Clone)]
#[cfg_attr(not(any(feature = "tonic", feature = "hyper")), allow(dead_code))]
pub(crate) struct TlsConnector {
    connector: tokio_rustls::TlsConnector,
    server_name: Option<ServerName<'static>>,
}

#[cfg_attr(not(any(feature = "tonic", feature = "hyper")), allow(dead_code))]
impl TlsConnector {
    /// A connector offering `alpn`, verifying the configured name, else `default_name`, else
    /// each endpoint's IP address.
    pub(crate) fn new(
        config: &TlsConfig,
        default_name: Option<&str>,
        alpn: &[&[u8]],
    ) -> Result<Self, Error> {
        let mut client = rustls::ClientConfig::clone(&config.config);
        client.alpn_protocols = alpn.iter().map(|protocol| protocol.to_vec()).collect();
        let name = config.server_name.as_deref().or(default_name);
        let server_name = match name {
            None => None,
            Some(name) => Some(ServerName::try_from(name.to_owned()).map_err(|error| {
                Error::new(
                    ErrorKind::Tls,
                    format!("`{name}` is not a valid TLS server name"),
                )
                .with_source(error)
            })?),
        };
        Ok(TlsConnector {
            connector: tokio_rustls::TlsConnector::from(Arc::new(client)),
            server_name,
        })
    }

    pub(crate) async fn connect(
        &self,
        address: SocketAddr,
        tcp: TcpStream,
    ) -> Result<tokio_rustls::client::TlsStream<TcpStream>, Error> {
        let name = self
            .server_name
            .clone()
            .unwrap_or_else(|| ServerName::IpAddress(address.ip().into()));
        self.connector.connect(name, tcp).await.map_err(|error| {
            Error::new(ErrorKind::Tls, "the TLS handshake failed")
                .with_endpoint(address)
                .with_source(error)
        })
    }
}
