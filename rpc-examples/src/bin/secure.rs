//! Mutual TLS, bearer tokens and a principal, in one process: makes a
//! throwaway CA with a server and a client certificate, serves the
//! calculator and an admin service behind both, and shows the
//! "authenticate once, read the principal in the handler" flow: an
//! interceptor turns the token into a `User`, and a handler reads it from
//! its `CallContext` and refuses what that user may not do.
//!
//! A real deployment reads its certificates from PEM files instead
//! (`Identity::from_pem_files`, `certificates_from_pem_file`).

use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use rpc_core::tls::{ClientTlsConfig, Identity, ServerTlsConfig, certificates_from_pem};
use rpc_core::{CallContext, CallInfo, Channel, Rejection, RpcError, Server};
use rpc_core::{Code, rpc_service};
use rpc_examples::{Calc, CalculatorClient, CalculatorServer};

/// The users' tokens; in real life from a secret store, never the source.
const TOKENS: [(&str, User); 2] = [
    (
        "correct-horse-battery-staple",
        User {
            name: "ana",
            admin: true,
        },
    ),
    (
        "hunter2",
        User {
            name: "bo",
            admin: false,
        },
    ),
];

/// Who a call is from, as the interceptor found from its token.
#[derive(Debug, Clone, Copy)]
struct User {
    name: &'static str,
    admin: bool,
}

/// Administration of the calculator.
#[rpc_service]
pub trait Admin {
    /// Who the server thinks the caller is.
    async fn whoami(&self) -> String;
    /// Resets the calculator's running total, returning what it was; for
    /// admins only.
    async fn reset_total(&self) -> Result<i64, Rejection>;
}

struct Console {
    calc: Arc<Calc>,
}

/// The user the interceptor attached to the current call.
fn caller() -> User {
    let cx = CallContext::current().expect("called over RPC");
    *cx.extensions()
        .get::<User>()
        .expect("the interceptor lets no call through without a user")
}

impl Admin for Console {
    async fn whoami(&self) -> String {
        caller().name.to_owned()
    }

    async fn reset_total(&self) -> Result<i64, Rejection> {
        let user = caller();
        if !user.admin {
            return Err(Rejection::permission_denied(format!(
                "{} is not an admin",
                user.name
            )));
        }
        Ok(self.calc.take_total())
    }
}

/// Lets through calls whose bearer token belongs to a user, and attaches
/// that user for the handlers.
fn authenticate(call: &CallInfo<'_>) -> Result<(), Rejection> {
    let token = call
        .metadata()
        .get("authorization")
        .and_then(|value| value.strip_prefix(b"Bearer "))
        .ok_or_else(|| Rejection::unauthenticated("send `authorization: Bearer <token>`"))?;
    let user = TOKENS
        .iter()
        .find(|(known, _)| known.as_bytes() == token)
        .map(|(_, user)| *user)
        .ok_or_else(|| Rejection::unauthenticated("the bearer token is not valid"))?;
    call.attach(user);
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    rpc_examples::init_logging();
    let pki = Pki::new()?;

    let calc = Arc::new(Calc::default());
    let server = Server::builder()
        .add_service(CalculatorServer::from_arc(calc.clone()))
        .add_service(AdminServer::new(Console { calc }))
        .tls(ServerTlsConfig::new(pki.server).client_ca_certificates(pki.ca.clone()))
        .interceptor(authenticate)
        .bind("127.0.0.1:0")
        .await?;
    let addr = server.local_addr();
    println!("calculator and admin services with mutual TLS and bearer tokens on {addr}");
    tokio::spawn(server.serve());

    let channel = Channel::builder()
        .tls(
            ClientTlsConfig::new("localhost")
                .ca_certificates(pki.ca)
                .identity(pki.client),
        )
        .connect(addr)
        .await?;
    let anonymous = CalculatorClient::new(channel.clone());
    match anonymous.add(2, 3).await {
        Err(RpcError::Status(s)) if s.code() == Code::Unauthenticated => {
            let message = s.message();
            println!("without a token: unauthenticated ({message})");
        }
        other => println!("without a token, unexpectedly: {other:?}"),
    }
    let bearer = |token: &str| format!("Bearer {token}");
    let ana = channel.with_metadata("authorization", bearer(TOKENS[0].0));
    let bo = channel.with_metadata("authorization", bearer(TOKENS[1].0));
    let calculator = CalculatorClient::new(bo.clone());
    println!("bo: add(2, 3) = {}", calculator.add(2, 3).await?);
    let (ana, bo) = (AdminClient::new(ana), AdminClient::new(bo));
    println!("bo is {:?} to the server", bo.whoami().await?);
    match bo.reset_total().await {
        Err(RpcError::Status(s)) if s.code() == Code::PermissionDenied => {
            println!("bo: reset_total refused ({})", s.message());
        }
        other => println!("bo: reset_total, unexpectedly: {other:?}"),
    }
    println!(
        "{}: reset_total = {}",
        ana.whoami().await?,
        ana.reset_total().await?
    );
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
