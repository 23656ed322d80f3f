//! Two services on one server and one channel; unknown services and methods
//! answer the call with an error and leave the connection up.

use rpc_core::Code;
use rpc_core::{Channel, RpcError, Server};
use rpc_tests::{
    ControlClient, ControlImpl, ControlServer, ShapesClient, ShapesImpl, ShapesServer, serve,
};

#[tokio::test]
async fn two_services_share_one_channel() {
    let (control, _started) = ControlImpl::new();
    let addr = serve(
        Server::builder()
            .add_service(ShapesServer::new(ShapesImpl))
            .add_service(ControlServer::from_arc(control)),
    )
    .await;
    let channel = Channel::connect(addr).await.unwrap();
    let shapes = ShapesClient::new(channel.clone());
    let control = ControlClient::new(channel);
    assert_eq!(shapes.echo_text("x".to_owned()).await.unwrap(), "x");
    assert_eq!(control.fast(7).await.unwrap(), 7);
    assert_eq!(shapes.option(None).await.unwrap(), None);
}

#[tokio::test]
async fn unknown_service_is_an_error_for_that_call_only() {
    let addr = serve(Server::builder().add_service(ShapesServer::new(ShapesImpl))).await;
    let channel = Channel::connect(addr).await.unwrap();
    // A Control client against a server that only serves Shapes.
    let control = ControlClient::new(channel.clone());
    match control.fast(1).await {
        Err(RpcError::Status(s)) if s.code() == Code::UnknownService => {
            assert!(s.message().contains("`Control`"), "{s}");
        }
        other => panic!("expected UnknownService, got {other:?}"),
    }
    let shapes = ShapesClient::new(channel.clone());
    assert_eq!(
        shapes.echo_text("still up".to_owned()).await.unwrap(),
        "still up"
    );
    assert!(!channel.is_closed());
}

#[tokio::test]
async fn unknown_method_is_an_error_for_that_call_only() {
    let addr = serve(Server::builder().add_service(ShapesServer::new(ShapesImpl))).await;
    let channel = Channel::connect(addr).await.unwrap();
    let err = channel
        .call::<_, u32>("Shapes", "no_such_method", (1u32,))
        .await
        .unwrap_err();
    match &err {
        RpcError::Status(s) if s.code() == Code::UnknownMethod => {
            assert_eq!(
                s.message(),
                "service `Shapes` has no method `no_such_method`"
            );
        }
        other => panic!("expected UnknownMethod, got {other:?}"),
    }
    assert_eq!(
        err.to_string(),
        "UNKNOWN_METHOD: service `Shapes` has no method `no_such_method`"
    );
    let shapes = ShapesClient::new(channel);
    assert_eq!(
        shapes.echo_text("still up".to_owned()).await.unwrap(),
        "still up"
    );
}

#[tokio::test]
async fn arguments_of_the_wrong_type_are_a_bad_request() {
    let addr = serve(Server::builder().add_service(ShapesServer::new(ShapesImpl))).await;
    let channel = Channel::connect(addr).await.unwrap();
    // `echo_text` takes a String; send a u8 whose value is not a valid length.
    let err = channel
        .call::<_, String>("Shapes", "echo_text", (200u8,))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(Code::BadRequest), "{err:?}");
    // In words another language can show, not bincode's debug output.
    assert!(
        err.to_string().contains(
            "could not decode the arguments: the value ends early: 200 more byte(s) needed"
        ),
        "{err}"
    );
    let err = channel
        .call::<_, String>("Shapes", "echo_text", (true,))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("ends early"), "{err}");
    let err = channel
        .call::<_, Option<usize>>("Shapes", "option", (7u8,))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("could not decode the arguments: ")
            && !err.to_string().contains('{'),
        "{err}"
    );
    // Trailing bytes after valid arguments are refused too.
    let err = channel
        .call::<_, String>("Shapes", "echo_text", ("ok".to_owned(), 1u8))
        .await
        .unwrap_err();
    assert!(
        err.code() == Some(Code::BadRequest) && err.to_string().contains("trailing"),
        "{err:?}"
    );
    let shapes = ShapesClient::new(channel);
    assert_eq!(
        shapes.echo_text("still up".to_owned()).await.unwrap(),
        "still up"
    );
}

#[tokio::test]
async fn the_same_service_twice_is_an_error_at_startup_not_a_panic() {
    let twice = || {
        Server::builder()
            .add_service(ShapesServer::new(ShapesImpl))
            .add_service(ShapesServer::new(ShapesImpl))
    };
    for made in [twice().bind("127.0.0.1:0").await, twice().build()] {
        match made {
            Err(e @ RpcError::DuplicateService { .. }) => {
                assert!(
                    e.to_string().contains("two services are named `Shapes`"),
                    "{e}"
                );
            }
            Err(other) => panic!("another error: {other}"),
            Ok(_) => panic!("a server with two services of one name"),
        }
    }
}

/// Two traits called `Admin`, in two modules: one keeps its name on the
/// wire, the other takes another with `name = "..."`.
pub mod users {
    /// Administers users.
    #[rpc_core::rpc_service]
    pub trait Admin {
        /// Which admin this is.
        async fn which(&self) -> String;
    }
}

/// The second `Admin`.
pub mod billing {
    /// Administers billing.
    #[rpc_core::rpc_service(name = "BillingAdmin")]
    pub trait Admin {
        /// Which admin this is.
        async fn which(&self) -> String;
    }
}

struct Users;

impl users::Admin for Users {
    async fn which(&self) -> String {
        "users".to_owned()
    }
}

struct Billing;

impl billing::Admin for Billing {
    async fn which(&self) -> String {
        "billing".to_owned()
    }
}

#[tokio::test]
async fn a_service_can_take_a_wire_name_of_its_own() {
    use rpc_core::Service;
    assert_eq!(billing::AdminServer::new(Billing).name(), "BillingAdmin");
    let addr = rpc_tests::serve(
        Server::builder()
            .add_service(users::AdminServer::new(Users))
            .add_service(billing::AdminServer::new(Billing)),
    )
    .await;
    let channel = Channel::connect(addr).await.unwrap();
    let users = users::AdminClient::new(channel.clone());
    let billing = billing::AdminClient::new(channel);
    assert_eq!(users.which().await.unwrap(), "users");
    assert_eq!(billing.which().await.unwrap(), "billing");
}

/// Methods whose wire names Rust would not allow, or the client takes.
#[rpc_core::rpc_service]
pub trait Factory {
    /// Called `new` on the wire, which the client's constructor takes in Rust.
    #[rpc(name = "new")]
    async fn create(&self, label: String) -> String;
    /// Called `Make-Thing` on the wire.
    #[rpc(name = "Make-Thing")]
    async fn make_thing(&self) -> u32;
    /// Called by its own name.
    async fn plain(&self) -> u32;
}

struct Plant;

impl Factory for Plant {
    async fn create(&self, label: String) -> String {
        format!("made {label}")
    }
    async fn make_thing(&self) -> u32 {
        7
    }
    async fn plain(&self) -> u32 {
        8
    }
}

#[tokio::test]
async fn a_method_can_take_a_wire_name_of_its_own() {
    let addr = serve(Server::builder().add_service(FactoryServer::new(Plant))).await;
    let channel = Channel::connect(addr).await.unwrap();
    let client = FactoryClient::new(channel.clone());
    assert_eq!(client.create("a".into()).await.unwrap(), "made a");
    assert_eq!(client.make_thing().await.unwrap(), 7);
    assert_eq!(client.plain().await.unwrap(), 8);
    // On the wire, only the given names answer.
    let by_wire: String = channel
        .call("Factory", "new", ("b".to_owned(),))
        .await
        .unwrap();
    assert_eq!(by_wire, "made b");
    assert_eq!(
        channel
            .call::<_, u32>("Factory", "Make-Thing", ())
            .await
            .unwrap(),
        7
    );
    let by_rust_name = channel
        .call::<_, String>("Factory", "create", ("c".to_owned(),))
        .await;
    assert_eq!(
        by_rust_name.unwrap_err().code(),
        Some(Code::UnknownMethod),
        "the Rust name is not the wire name"
    );
    // The trait keeps its Rust names, callable as plain methods.
    assert_eq!(Plant.create("d".into()).await, "made d");
}
