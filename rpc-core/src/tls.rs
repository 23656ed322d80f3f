//! TLS for channels and servers (cargo feature `tls`): rustls 0.23 with
//! the *ring* crypto backend, TLS 1.2 and 1.3.
//!
//! A server gets a certificate chain and key ([`Identity`]) and, for mutual
//! TLS, the CA certificates its clients' certificates must chain to. A
//! client gets the CA certificates it trusts, the name the server's
//! certificate must carry, and, for mutual TLS, its own identity. Both
//! read PEM through `rustls-pki-types`.
//!
//! ```no_run
//! # async fn run() -> Result<(), rpc_core::RpcError> {
//! use rpc_core::tls::{ClientTlsConfig, Identity, ServerTlsConfig, certificates_from_pem_file};
//! use rpc_core::{Channel, Server};
//!
//! let server = Server::builder()
//!     .tls(ServerTlsConfig::new(Identity::from_pem_files("server.pem", "server.key")?))
//!     .bind("0.0.0.0:4000")
//!     .await?;
//!
//! let roots = certificates_from_pem_file("ca.pem")?;
//! let channel = Channel::builder()
//!     .tls(ClientTlsConfig::new("rpc.example.com").ca_certificates(roots))
//!     .connect("rpc.example.com:4000")
//!     .await?;
//! # drop((server, channel));
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::io;
use std::path::Path;
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
pub use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::{TlsAcceptor, TlsConnector, client, server};

use crate::error::RpcError;
use crate::transport::BoxedStream;

/// A certificate chain (leaf first) and its private key: what a server
/// shows its clients, or a client its server under mutual TLS.
pub struct Identity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The key stays out of logs.
        f.debug_struct("Identity")
            .field("certificates", &self.chain.len())
            .finish_non_exhaustive()
    }
}

impl Clone for Identity {
    fn clone(&self) -> Self {
        Identity {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl Identity {
    /// An identity from DER: the certificate chain, leaf first, and the
    /// leaf's private key.
    pub fn new(chain: Vec<CertificateDer<'static>>, key: PrivateKeyDer<'static>) -> Self {
        Identity { chain, key }
    }

    /// Reads the chain from PEM `CERTIFICATE` blocks (leaf first) and the
    /// key from the first PEM private key block (PKCS#8, PKCS#1 or SEC1).
    pub fn from_pem(certificates: &[u8], key: &[u8]) -> Result<Self, RpcError> {
        let chain = certificates_from_pem(certificates)?;
        let key = PrivateKeyDer::from_pem_slice(key)
            .map_err(|e| tls_error(format!("reading the private key: {e}")))?;
        Ok(Identity { chain, key })
    }

    /// [`Identity::from_pem`] from two files.
    pub fn from_pem_files(
        certificates: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> Result<Self, RpcError> {
        let chain = certificates_from_pem_file(certificates)?;
        let key = key.as_ref();
        let key = PrivateKeyDer::from_pem_file(key)
            .map_err(|e| tls_error(format!("reading a private key from {}: {e}", key.display())))?;
        Ok(Identity { chain, key })
    }
}

/// Every PEM `CERTIFICATE` block in `pem`; an error if there is none.
pub fn certificates_from_pem(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, RpcError> {
    let certificates = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_error(format!("reading PEM certificates: {e}")))?;
    non_empty(certificates, "the PEM data")
}

/// Every PEM `CERTIFICATE` block in the file at `path`; an error if there
/// is none.
pub fn certificates_from_pem_file(
    path: impl AsRef<Path>,
) -> Result<Vec<CertificateDer<'static>>, RpcError> {
    let path = path.as_ref();
    let certificates = CertificateDer::pem_file_iter(path)
        .and_then(|blocks| blocks.collect::<Result<Vec<_>, _>>())
        .map_err(|e| tls_error(format!("reading certificates from {}: {e}", path.display())))?;
    non_empty(certificates, &path.display().to_string())
}

fn non_empty(
    certificates: Vec<CertificateDer<'static>>,
    source: &str,
) -> Result<Vec<CertificateDer<'static>>, RpcError> {
    if certificates.is_empty() {
        return Err(tls_error(format!(
            "{source} holds no PEM CERTIFICATE block"
        )));
    }
    Ok(certificates)
}

/// TLS settings of a server; given to
/// [`ServerBuilder::tls`](crate::ServerBuilder::tls).
///
/// Clients must then speak TLS; the server's handshake timeout bounds the
/// TLS handshake and the protocol's together.
#[derive(Debug, Clone)]
pub struct ServerTlsConfig {
    identity: Identity,
    client_roots: Vec<CertificateDer<'static>>,
    client_certificate_optional: bool,
}

impl ServerTlsConfig {
    /// Shows `identity` to clients; asks none of them for a certificate.
    pub fn new(identity: Identity) -> Self {
        ServerTlsConfig {
            identity,
            client_roots: Vec::new(),
            client_certificate_optional: false,
        }
    }

    /// Mutual TLS: every client must present a certificate that chains to
    /// one of `roots`, or its handshake fails. The chain it presented is
    /// shown to the server's [`Interceptor`](crate::Interceptor) in
    /// [`Peer::certificates`](crate::Peer::certificates).
    pub fn client_ca_certificates(mut self, roots: Vec<CertificateDer<'static>>) -> Self {
        self.client_roots = roots;
        self
    }

    /// With [`client_ca_certificates`](Self::client_ca_certificates): let
    /// clients without a certificate in too (default `false`), leaving
    /// the decision to the interceptor. A certificate that is presented
    /// must still chain to the roots.
    pub fn client_certificate_optional(mut self, optional: bool) -> Self {
        self.client_certificate_optional = optional;
        self
    }

    pub(crate) fn acceptor(&self) -> Result<Acceptor, RpcError> {
        let provider = provider();
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(config_error)?;
        let builder = if self.client_roots.is_empty() {
            builder.with_no_client_auth()
        } else {
            let roots = root_store(&self.client_roots, "client CA")?;
            let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider);
            let verifier = if self.client_certificate_optional {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            builder.with_client_cert_verifier(
                verifier
                    .build()
                    .map_err(|e| tls_error(format!("client certificate verifier: {e}")))?,
            )
        };
        let identity = self.identity.clone();
        let config = builder
            .with_single_cert(identity.chain, identity.key)
            .map_err(config_error)?;
        Ok(Acceptor(TlsAcceptor::from(Arc::new(config))))
    }
}

/// TLS settings of a client; given to
/// [`ChannelBuilder::tls`](crate::ChannelBuilder::tls).
#[derive(Debug, Clone)]
pub struct ClientTlsConfig {
    server_name: String,
    roots: Vec<CertificateDer<'static>>,
    identity: Option<Identity>,
}

impl ClientTlsConfig {
    /// Expects the server's certificate to be valid for `server_name` (a
    /// DNS name or an IP address), whatever address the channel dials.
    pub fn new(server_name: impl Into<String>) -> Self {
        ClientTlsConfig {
            server_name: server_name.into(),
            roots: Vec::new(),
            identity: None,
        }
    }

    /// The CA certificates the server's certificate must chain to. Without
    /// any, no server can be trusted and connecting fails.
    pub fn ca_certificates(mut self, roots: Vec<CertificateDer<'static>>) -> Self {
        self.roots = roots;
        self
    }

    /// The certificate and key this client shows a server that asks for
    /// one (mutual TLS).
    pub fn identity(mut self, identity: Identity) -> Self {
        self.identity = Some(identity);
        self
    }

    pub(crate) fn connector(&self) -> Result<Connector, RpcError> {
        let name = ServerName::try_from(self.server_name.clone()).map_err(|e| {
            tls_error(format!(
                "`{}` is not a DNS name or IP address: {e}",
                self.server_name
            ))
        })?;
        if self.roots.is_empty() {
            return Err(tls_error(
                "no CA certificates to check the server's certificate against; \
                 give some with ClientTlsConfig::ca_certificates"
                    .to_owned(),
            ));
        }
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(config_error)?
            .with_root_certificates(root_store(&self.roots, "CA")?);
        let config = match self.identity.clone() {
            Some(identity) => builder
                .with_client_auth_cert(identity.chain, identity.key)
                .map_err(config_error)?,
            None => builder.with_no_client_auth(),
        };
        Ok(Connector {
            connector: TlsConnector::from(Arc::new(config)),
            name,
        })
    }
}

/// A server's ready-made TLS configuration.
#[derive(Clone)]
pub(crate) struct Acceptor(TlsAcceptor);

impl Acceptor {
    pub(crate) async fn accept(
        &self,
        stream: BoxedStream,
    ) -> io::Result<server::TlsStream<BoxedStream>> {
        self.0.accept(stream).await
    }
}

/// A client's ready-made TLS configuration and the name it checks.
#[derive(Clone)]
pub(crate) struct Connector {
    connector: TlsConnector,
    name: ServerName<'static>,
}

impl Connector {
    pub(crate) async fn connect(
        &self,
        stream: BoxedStream,
    ) -> io::Result<client::TlsStream<BoxedStream>> {
        self.connector.connect(self.name.clone(), stream).await
    }
}

/// The chain a client presented, if it presented one.
pub(crate) fn peer_certificates(
    stream: &server::TlsStream<BoxedStream>,
) -> Option<Arc<[CertificateDer<'static>]>> {
    let (_, connection) = stream.get_ref();
    connection.peer_certificates().map(Arc::from)
}

/// One backend, chosen explicitly rather than by whichever rustls features
/// the dependency graph happens to enable.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn root_store(
    certificates: &[CertificateDer<'static>],
    what: &str,
) -> Result<Arc<RootCertStore>, RpcError> {
    let mut store = RootCertStore::empty();
    for certificate in certificates {
        store
            .add(certificate.clone())
            .map_err(|e| tls_error(format!("a {what} certificate is not usable: {e}")))?;
    }
    Ok(Arc::new(store))
}

fn config_error(e: rustls::Error) -> RpcError {
    tls_error(e.to_string())
}

fn tls_error(message: String) -> RpcError {
    RpcError::Tls { message }
}
