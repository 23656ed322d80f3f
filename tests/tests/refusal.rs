//! A handler that refuses a call with a status of its own
//! (`Result<T, Rejection>`), apart from its typed application error.

use futures::StreamExt;
use rpc_core::{
    CallContext, CallInfo, Channel, Code, Rejection, RpcError, Server, Streaming, rpc_service,
};
use rpc_tests::serve;
use serde::{Deserialize, Serialize};

/// The method's own error, which a refusal is not.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Missing(String);

/// Who a call is from, as the interceptor read it from the metadata.
#[derive(Debug, Clone)]
struct User(String);

/// A store that only its admin may read.
#[rpc_service]
pub trait Vault {
    /// The secret, to the admin.
    async fn secret(&self) -> Result<String, Rejection>;
    /// A value by key: refused to anyone but the admin, `Err` if missing.
    async fn lookup(&self, key: String) -> Result<Result<u32, Missing>, Rejection>;
    /// `n` bytes, to the admin.
    async fn blob(&self, n: usize) -> Result<Vec<u8>, Rejection>;
    /// `0..n`, refused when `n` is 0.
    async fn feed(&self, n: u32) -> Result<Streaming<u32>, Rejection>;
    /// The sum of what is sent, refused before reading when `limit` is 0.
    async fn sum(&self, limit: u32, values: Streaming<u32>) -> Result<u64, Rejection>;
    /// Refuses with whatever code is asked for, OK included.
    async fn refuse_with(&self, code: u8) -> Result<(), Rejection>;
}

struct Store;

/// Refuses anyone the interceptor did not recognise as the admin.
fn admin_only() -> Result<(), Rejection> {
    let cx = CallContext::current().expect("called over RPC");
    match cx.extensions().get::<User>() {
        Some(User(name)) if name == "admin" => Ok(()),
        Some(User(name)) => Err(Rejection::permission_denied(format!(
            "{name} may not call {}",
            cx.method()
        ))),
        None => Err(Rejection::unauthenticated("who are you?")),
    }
}

impl Vault for Store {
    async fn secret(&self) -> Result<String, Rejection> {
        admin_only()?;
        Ok("swordfish".to_owned())
    }

    async fn lookup(&self, key: String) -> Result<Result<u32, Missing>, Rejection> {
        admin_only()?;
        Ok(if key == "answer" {
            Ok(42)
        } else {
            Err(Missing(key))
        })
    }

    async fn blob(&self, n: usize) -> Result<Vec<u8>, Rejection> {
        admin_only()?;
        Ok(vec![7; n])
    }

    async fn feed(&self, n: u32) -> Result<Streaming<u32>, Rejection> {
        if n == 0 {
            return Err(Rejection::new(Code::ResourceExhausted, "nothing to feed"));
        }
        Ok(Streaming::from_iter(0..n))
    }

    async fn sum(&self, limit: u32, mut values: Streaming<u32>) -> Result<u64, Rejection> {
        if limit == 0 {
            return Err(Rejection::permission_denied("no uploads today"));
        }
        let mut sum = 0;
        while let Some(value) = values.next().await {
            sum += u64::from(value.map_err(|e| Rejection::new(Code::Internal, e.to_string()))?);
        }
        Ok(sum)
    }

    async fn refuse_with(&self, code: u8) -> Result<(), Rejection> {
        let code = Code::from_wire(code).expect("a known code");
        Err(Rejection::new(code, "as asked"))
    }
}

/// A server whose interceptor attaches the user named in the `user` metadata.
async fn vault() -> std::net::SocketAddr {
    serve(
        Server::builder()
            .interceptor(|call: &CallInfo<'_>| {
                if let Some(name) = call.metadata().get("user") {
                    call.attach(User(String::from_utf8_lossy(name).into_owned()));
                }
                Ok(())
            })
            .add_service(VaultServer::new(Store)),
    )
    .await
}

/// A client that calls as `user`.
async fn client_as(addr: std::net::SocketAddr, user: &str) -> VaultClient {
    let channel = Channel::connect(addr).await.unwrap();
    VaultClient::new(channel.with_metadata("user", user))
}

/// The code and message of a refused call.
fn refusal<T: std::fmt::Debug>(result: Result<T, RpcError>) -> (Code, String) {
    match result {
        Err(RpcError::Status(status)) => (status.code(), status.message().to_owned()),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn a_refusal_is_the_calls_status_and_the_connection_stays_usable() {
    let addr = vault().await;
    let guest = client_as(addr, "guest").await;
    assert_eq!(
        refusal(guest.secret().await),
        (
            Code::PermissionDenied,
            "guest may not call secret".to_owned()
        )
    );
    let admin = client_as(addr, "admin").await;
    assert_eq!(admin.secret().await.unwrap(), "swordfish");
    let nobody = VaultClient::new(Channel::connect(addr).await.unwrap());
    assert_eq!(refusal(nobody.secret().await).0, Code::Unauthenticated);
    // The same connection answers the next call.
    assert_eq!(
        refusal(guest.blob(3).await).0,
        Code::PermissionDenied,
        "a refused call does not end the connection"
    );
    assert_eq!(admin.blob(3).await.unwrap(), vec![7, 7, 7]);
}

#[tokio::test]
async fn a_refusal_is_apart_from_the_methods_own_error() {
    let addr = vault().await;
    let admin = client_as(addr, "admin").await;
    assert_eq!(admin.lookup("answer".into()).await.unwrap(), Ok(42));
    assert_eq!(
        admin.lookup("question".into()).await.unwrap(),
        Err(Missing("question".into()))
    );
    let guest = client_as(addr, "guest").await;
    assert_eq!(
        refusal(guest.lookup("answer".into()).await).0,
        Code::PermissionDenied
    );
}

#[tokio::test]
async fn a_stream_call_can_be_refused_before_it_starts() {
    let addr = vault().await;
    let client = client_as(addr, "guest").await;
    assert_eq!(
        refusal(client.feed(0).await),
        (Code::ResourceExhausted, "nothing to feed".to_owned())
    );
    let items: Vec<u32> = client
        .feed(3)
        .await
        .unwrap()
        .map(|item| item.unwrap())
        .collect()
        .await;
    assert_eq!(items, [0, 1, 2]);

    assert_eq!(
        refusal(client.sum(0, Streaming::from_iter(0..1_000_000)).await),
        (Code::PermissionDenied, "no uploads today".to_owned())
    );
    assert_eq!(
        client.sum(1, Streaming::from_iter(1..=100)).await.unwrap(),
        5050
    );
}

#[tokio::test]
async fn a_refusal_with_status_ok_reaches_the_client_as_internal() {
    let addr = vault().await;
    let client = client_as(addr, "guest").await;
    assert_eq!(
        refusal(client.refuse_with(0).await),
        (
            Code::Internal,
            "refused with status OK: as asked".to_owned()
        )
    );
    assert_eq!(refusal(client.refuse_with(10).await).0, Code::Cancelled);
}
