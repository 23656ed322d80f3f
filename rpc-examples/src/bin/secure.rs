//! Mutual TLS and a bearer token, in one process: makes a throwaway CA
//! with a server and a client certificate, serves the calculator behind
//! both, and shows what a caller with and without the token gets.
//!
//! A real deployment reads its certificates from PEM files instead
//! (`Identity::from_pem_files`, `certificates_from_pem_file`).

use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use rpc_core::Code;
use rpc_core::tls::{ClientTlsConfig, Identity, ServerTlsConfig, certificates_from_pem};
use rpc_core::{BearerToken, Channel, RpcClient, RpcError, Server};
use rpc_examples::{Calc, CalculatorClient, CalculatorServer};

/// The shared secret; in real life from a secret store, never the source.
const TOKEN: &str = "correct-horse-battery-staple";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    rpc_examples::init_logging();
    let pki = Pki::new()?;

    let server = Server::builder()
        .add_service(CalculatorServer::new(Calc::default()))
        .tls(ServerTlsConfig::new(pki.server).client_ca_certificates(pki.ca.clone()))
        .interceptor(BearerToken::new(TOKEN))
        .bind("127.0.0.1:0")
        .await?;
    let addr = server.local_addr();
    println!("calculator server with mutual TLS and a bearer token on {addr}");
    tokio::spawn(server.serve());

    let channel = Channel::builder()
        .tls(
            ClientTlsConfig::new("localhost")
                .ca_certificates(pki.ca)
                .identity(pki.client),
        )
        .connect(addr)
        .await?;
    let anonymous = CalculatorClient::new(channel);
    match anonymous.add(2, 3).await {
        Err(RpcError::Status(s)) if s.code() == Code::Unauthenticated => {
            let message = s.message();
            println!("without a token: unauthenticated ({message})");
        }
        other => println!("without a token, unexpectedly: {other:?}"),
    }
    let client = anonymous.with_metadata("authorization", format!("Bearer {TOKEN}"));
    println!("with the token: add(2, 3) = {}", client.add(2, 3).await?);
    Ok(())
}

/// A CA, a server identity for `localhost` and a client identity.
struct Pki {
    ca: Vec<rpc_core::tls::CertificateDer<'static>>,
    server: Identity,
    client: Identity,
}

impl Pki {
    fn new() -> Result<Pki, Box<dyn std::error::Error>> {
        let ca_key = KeyPair::generate()?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "example CA");
        let ca = ca_params.self_signed(&ca_key)?;
        let leaf = |names: Vec<String>, usage| -> Result<Identity, Box<dyn std::error::Error>> {
            let key = KeyPair::generate()?;
            let mut params = CertificateParams::new(names)?;
            params.extended_key_usages = vec![usage];
            let certificate = params.signed_by(&key, &ca, &ca_key)?;
            // Through PEM, as certificates from files would come.
            Ok(Identity::from_pem(
                certificate.pem().as_bytes(),
                key.serialize_pem().as_bytes(),
            )?)
        };
        Ok(Pki {
            ca: certificates_from_pem(ca.pem().as_bytes())?,
            server: leaf(
                vec!["localhost".to_owned()],
                ExtendedKeyUsagePurpose::ServerAuth,
            )?,
            client: leaf(Vec::new(), ExtendedKeyUsagePurpose::ClientAuth)?,
        })
    }
}
