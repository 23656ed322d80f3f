//! Calls whose schemas agree take the plain path: a client claims its
//! schema on the first call of a method on a connection only, and nothing
//! is read through the resolver. Alone in its binary: the counters are the
//! process's.

use rpc_core::__private::schema_counts;
use rpc_core::Server;
use rpc_tests::evolving::{v1, v2};
use rpc_tests::serve;

#[tokio::test]
async fn agreeing_schemas_are_claimed_once_and_never_resolved() {
    let addr = serve(Server::builder().add_service(v2::ProfilesServer::new(v2::Impl))).await;
    let client = v2::ProfilesClient::connect(addr).await.unwrap();
    let (claims, resolved) = schema_counts();
    for i in 0..20 {
        assert_eq!(client.add(i, 1).await.unwrap(), i + 1);
    }
    client.score().await.unwrap();
    let (claims_after, resolved_after) = schema_counts();
    assert_eq!(
        claims_after - claims,
        2,
        "one claim per method on the connection"
    );
    assert_eq!(resolved_after, resolved, "nothing resolved");

    // Against the old server, every call of a changed method is resolved
    // (and claims the client's schema, which the server reads it with).
    let addr = serve(Server::builder().add_service(v1::ProfilesServer::new(v1::Impl))).await;
    let client = v2::ProfilesClient::connect(addr).await.unwrap();
    let (claims, resolved) = schema_counts();
    for _ in 0..3 {
        client.lookup("e".into()).await.unwrap();
    }
    let (claims_after, resolved_after) = schema_counts();
    assert_eq!(claims_after - claims, 3);
    // Each reply is read with the server's schema, and each request's
    // arguments with the client's.
    assert_eq!(resolved_after - resolved, 6);
}
